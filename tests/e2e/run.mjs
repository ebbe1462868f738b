// End-to-end test of the pages, in Debian's headless Chromium driven by
// playwright-core. Run by scripts/e2e, which starts an embedded node and
// passes its address, demo sale and tokens in the environment.
//
// The scenario, in Chinese (the pages' default), host -> viewer -> operator:
// the host and the operator sign in through the banner's links; the viewer
// joins on a phone and the test broadcast plays; the host adds a product,
// the viewer buys it before having an address (payment is refused:
// address_required), adds one, attaches it, pays in the sandbox's checkout;
// a product that ships elsewhere is refused (undeliverable); the host (on a
// 360 px phone) downloads the packing list, prints slips with QR codes,
// uploads the courier's waybill CSV (a bad row shows its error), marks the
// box delivered; the viewer follows it and claims with a photo; the
// operator's overview raises an alert; the host refunds through the claim
// and directly; the operator sees refunds and claims. Then: the languages
// (the switch, Accept-Language), axe-core on every page in both, a dropped
// socket resumes with `since` and shows it is reconnecting, an expired
// token's socket (4001) asks for a sign-in instead of retrying, and user
// text that looks like HTML stays text in every field while the CSP blocks
// inline code.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { readFile, copyFile } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run scripts/e2e`);
  return v;
};
const BASE = env('E2E_BASE');
const SALE = env('E2E_SALE_ID');
const HOST_TOKEN = env('E2E_HOST_TOKEN');
const OPS_TOKEN = env('E2E_OPS_TOKEN');
const OUT = env('E2E_OUT');
const HOST_LINK = env('E2E_HOST_LINK');
const OPS_LINK = env('E2E_OPS_LINK');
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
/** Set (scripts/e2e --docs) to copy the screenshots into docs/img for the README. */
const DOCS_IMG = process.env.E2E_DOCS_IMG ? path.join(ROOT, 'docs/img') : null;
const WAIT = 15000;
const EXPECTED_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: https://stream.example.invalid; connect-src 'self' https://stream.example.invalid; frame-src https://stream.example.invalid; worker-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/** The catalogues, so the test reads the pages' words as a user does. */
const ZH = JSON.parse(await readFile(path.join(ROOT, 'src/web/i18n/zh-CN.json'), 'utf8'));
const EN = JSON.parse(await readFile(path.join(ROOT, 'src/web/i18n/en.json'), 'utf8'));
/** A catalogue string as a pattern: its `{value}`s match anything. */
function words(catalogue, key) {
  const s = catalogue[key];
  if (s == null) throw new Error(`no ${key} in the catalogue`);
  return new RegExp(s.split(/\{\w+\}/).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*'));
}
const zh = (key) => words(ZH, key);
const en = (key) => words(EN, key);
const AXE = await readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
// A real PNG (1x1), as a phone's camera would hand over a JPEG.
const PHOTO = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
const XSS = '<img src=x onerror="window.__xss=1">';
const XSS_CHAT = '<img src=x onerror="window.__xss=1">';
const XSS_TITLE = '<script>window.__xss=1</script>Night market';
// Nothing answers there (the machine has no network): the frame stays empty.
const STREAM = 'https://stream.example.invalid/live/1';
const XSS_PRODUCT = '<script>window.__xss=1</script> honey jar';

const started = Date.now();
const since = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
async function step(name, fn) {
  process.stdout.write(`  ${name} ... `);
  const t0 = Date.now();
  await fn();
  console.log(`ok (${Date.now() - t0} ms)`);
}

// ---------------------------------------------------------------- REST, as other actors

async function rest(method, url, { token, body, key, lang } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (key) headers['Idempotency-Key'] = key;
  if (lang) headers['Accept-Language'] = lang;
  const res = await fetch(BASE + url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // CSV, HTML
  }
  return { status: res.status, headers: res.headers, json, text };
}

async function guest(name) {
  const r = await rest('POST', '/api/v1/guests', { body: { name } });
  assert.equal(r.status, 201, `guest sign-up: ${r.text}`);
  return r.json.token;
}

// ---------------------------------------------------------------- page helpers

/** Every page is watched: an uncaught error, a console error or a CSP violation fails the test. */
const problems = [];
function watch(page, name) {
  page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`${name}: console error: ${m.text()}`);
  });
  // Runs before the page's scripts; the page's CSP does not apply to it.
  page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  return page;
}

function takeProblems() {
  return problems.splice(0, problems.length);
}

async function waitText(page, selector, pattern, what = selector) {
  try {
    await page.waitForFunction(
      ([sel, src, flags]) => [...document.querySelectorAll(sel)].some((el) => new RegExp(src, flags).test(el.textContent)),
      [selector, pattern.source, pattern.flags],
      { timeout: WAIT },
    );
  } catch (e) {
    const seen = await page.locator(selector).allTextContents().catch(() => []);
    throw new Error(`${what}: no ${selector} matched ${pattern} within ${WAIT} ms; saw ${JSON.stringify(seen).slice(0, 400)}`);
  }
}

async function waitFor(page, selector, what = selector) {
  try {
    await page.locator(selector).first().waitFor({ state: 'attached', timeout: WAIT });
  } catch {
    throw new Error(`${what}: ${selector} did not appear within ${WAIT} ms`);
  }
}

/** A phone page must never scroll sideways (a long name or title once did). */
async function fitsWidth(page, name) {
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scroll <= inner, `${name}: the page is ${scroll}px wide in a ${inner}px viewport`);
}

/** axe-core on the page as it stands: serious or critical violations fail. */
async function accessible(page, name) {
  // Evaluated through the DevTools protocol: the page's CSP does not apply.
  if (!(await page.evaluate(() => !!window.axe))) await page.evaluate(AXE);
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.filter((v) => ['serious', 'critical'].includes(v.impact))
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
  });
  assert.deepEqual(result, [], `${name}: accessibility violations`);
}

async function shot(page, file) {
  await page.evaluate(() => window.scrollTo(0, 0));
  const out = path.join(OUT, file);
  await page.screenshot({ path: out, fullPage: true });
  if (DOCS_IMG) await copyFile(out, path.join(DOCS_IMG, file));
}

async function noScriptRan(page, name) {
  assert.equal(await page.evaluate(() => window.__xss), undefined, `${name}: an injected script ran`);
  assert.deepEqual(await page.evaluate(() => window.__violations), [], `${name}: CSP violations`);
}

// ---------------------------------------------------------------- the run

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // launch() gives every run a fresh, temporary user-data-dir of its own.
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-quic', '--no-first-run', '--autoplay-policy=no-user-gesture-required'],
});

try {
  // Chinese pages for people in China: the browser's language and zone say so.
  const china = { locale: 'zh-CN', timezoneId: 'Asia/Shanghai' };
  const desktop = { ...china, viewport: { width: 1280, height: 900 }, acceptDownloads: true };
  const phone = {
    ...china,
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36',
  };
  // The farmer's phone: the narrowest the console is made for.
  const farmerPhone = { ...phone, viewport: { width: 360, height: 780 }, acceptDownloads: true };
  const hostContext = await browser.newContext(farmerPhone);
  const host = watch(await hostContext.newPage(), 'host');
  const opsContext = await browser.newContext({ ...desktop, viewport: { width: 1280, height: 1100 } });
  const ops = watch(await opsContext.newPage(), 'ops');
  const viewerContext = await browser.newContext(phone);
  const viewer = watch(await viewerContext.newPage(), 'viewer');

  // Tokens must never ride in a URL the server sees (the socket's
  // access_token, contract section 1, is the one exception).
  const urls = [];
  for (const context of [hostContext, opsContext, viewerContext]) context.on('request', (r) => urls.push(r.url()));

  // The live sockets go through a route, so the test can drop or expire them.
  const viewerSockets = [];
  await viewer.routeWebSocket(/\/live\?/, (ws) => {
    const server = ws.connectToServer();
    viewerSockets.push({ ws, server, url: ws.url() });
  });
  const hostSockets = [];
  await host.routeWebSocket(/\/live\?/, (ws) => {
    const server = ws.connectToServer();
    hostSockets.push({ ws, server, url: ws.url() });
  });

  const sku = 'GW-1KG';
  const productName = '桂味荔枝 1 kg 装';
  let orderId;
  let viewerToken;

  console.log(`e2e against ${BASE}, demo sale ${SALE}`);

  await step('pages and assets have their type and the CSP', async () => {
    const checks = [['/', 'text/html'], [`/sales/${SALE}`, 'text/html'], ['/host', 'text/html'], [`/host/${SALE}`, 'text/html'], ['/ops', 'text/html'],
      ['/signin', 'text/html'], [`/host/${SALE}/slips`, 'text/html'],
      ['/assets/app.css', 'text/css'], ['/assets/viewer.js', 'text/javascript'], ['/assets/i18n.js', 'text/javascript'],
      ['/i18n/zh-CN.json', 'application/json'], ['/i18n/en.json', 'application/json'],
      ['/vendor/uplot/uPlot.iife.min.js', 'text/javascript'], ['/vendor/hls/hls.light.min.mjs', 'text/javascript'],
      ['/vendor/qrcode/qrcode.mjs', 'text/javascript'], ['/vendor/hls/LICENSE', 'text/plain'], ['/vendor/qrcode/LICENSE', 'text/plain'],
      ['/vendor/uplot/uPlot.min.css', 'text/css'], ['/assets/icon.svg', 'image/svg+xml'], ['/assets/poster.svg', 'image/svg+xml'],
      ['/demo/index.m3u8', 'application/vnd.apple.mpegurl'], ['/demo/seg0.ts', 'video/mp2t']];
    for (const [url, type] of checks) {
      const r = await rest('GET', url);
      assert.equal(r.status, 200, url);
      assert.ok(r.headers.get('content-type').startsWith(type), `${url}: ${r.headers.get('content-type')}`);
      assert.equal(r.headers.get('content-security-policy'), EXPECTED_CSP, `${url}: CSP`);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff', url);
    }
  });

  await step('Chinese by default; English for a browser that prefers it', async () => {
    assert.match((await rest('GET', `/sales/${SALE}`)).text, /<html lang="zh-CN">/);
    assert.match((await rest('GET', `/sales/${SALE}`, { lang: 'zh-CN,zh;q=0.9,en;q=0.8' })).text, /<html lang="zh-CN">/);
    const english = await rest('GET', `/sales/${SALE}`, { lang: 'en-US,en;q=0.9' });
    assert.match(english.text, /<html lang="en">/);
    assert.equal(english.headers.get('vary'), 'Accept-Language');
  });

  await step('times in Asia/Shanghai unless the browser names its own zone; prices as ¥168.00', async () => {
    for (const [timezoneId, expected] of [['UTC', 'Asia/Shanghai'], ['Asia/Shanghai', 'Asia/Shanghai'], ['Europe/Berlin', 'Europe/Berlin']]) {
      const context = await browser.newContext({ locale: 'zh-CN', timezoneId });
      const page = await context.newPage();
      await page.goto(`${BASE}/signin`);
      const got = await page.evaluate(async () => {
        const i = await import('/assets/i18n.js');
        return { zone: i.zone, time: i.time('2026-07-01T04:05:06Z'), money: i.money(16800) };
      });
      assert.equal(got.zone, expected, timezoneId);
      assert.equal(got.money, '¥168.00');
      if (expected === 'Asia/Shanghai') assert.equal(got.time, '12:05:06');
      await context.close();
    }
  });

  await step('host and operator sign in through the banner\'s links', async () => {
    // The code after `#` never reaches the server; `next` is only a path.
    assert.match(HOST_LINK, /\/signin\?next=\/host\/[0-9a-f-]+#signin=[0-9a-f]{32}$/);
    assert.match(OPS_LINK, /\/signin\?next=\/ops%3Fsale%3D[0-9a-f-]+#signin=[0-9a-f]{32}$/);
    await host.goto(HOST_LINK);
    await host.waitForURL(`**/host/${SALE}`);
    assert.equal(new URL(host.url()).hash, '', 'the fragment left the address bar');
    await waitText(host, '#conn', zh('conn.open'), 'host live room');
    await waitText(host, '#who-name', /Farmer Chen/);
    assert.equal(await host.evaluate(() => document.documentElement.lang), 'zh-CN');
    await ops.goto(OPS_LINK);
    await ops.waitForURL(`**/ops?sale=${SALE}`);
    await waitText(ops, '#conn', zh('conn.sse_open'), 'SSE stream');
    await ops.waitForFunction(() => Number(document.querySelector('#chart-orders')?.dataset.points) >= 2, null, { timeout: WAIT });
    await waitText(ops, '#fig-gmv', /^¥0\.00$/, 'GMV at zero, as ¥0.00');
    await waitFor(ops, `#overview tr[data-sale="${SALE}"]`, 'the demo sale in the overview');
    // A production link carries the token itself after `#`: kept, wiped from the address bar.
    const linked = watch(await (await browser.newContext(desktop)).newPage(), 'token link');
    await linked.goto(`${BASE}/signin#token=${OPS_TOKEN}`);
    await linked.waitForURL(`${BASE}/ops`);
    await waitText(linked, '#who-name', /Operator/);
    assert.equal(await linked.evaluate(() => localStorage.getItem('lychee-live.ops.token')), OPS_TOKEN);
    assert.ok(!(await linked.evaluate(() => history.length > 1 && location.href.includes('token='))));
    await linked.context().close();
    // A used link is spent: opening it again asks for a sign-in.
    const again = watch(await (await browser.newContext(desktop)).newPage(), 'reused link');
    await again.goto(HOST_LINK);
    await waitText(again, '#error', zh('signin.link_failed'), 'a spent code');
    assert.equal(await again.isVisible('#token-form'), true);
    await again.context().close();
    takeProblems(); // the spent code's 401 is logged by the browser, on purpose
  });

  await step('viewer joins as a guest on a phone; the test broadcast plays', async () => {
    await viewer.goto(`${BASE}/`);
    await waitText(viewer, `li[data-sale="${SALE}"] h2`, /从化荔枝开摘/);
    await viewer.click(`li[data-sale="${SALE}"] a[data-link="viewer"]`);
    await viewer.waitForURL(`**/sales/${SALE}`);
    await viewer.fill('#guest-name', '梅 Mei');
    await viewer.click('#guest-form button');
    await waitText(viewer, '#conn', zh('conn.open'), 'viewer live room');
    await waitFor(viewer, '[data-sku="FZX-5KG"][data-status="on_sale"]', 'a demo product');
    await waitText(viewer, '[data-sku="FZX-5KG"] .price', /^¥168\.00$/, 'a price as ¥168.00');
    assert.match(viewerSockets[0].url, /access_token=/);
    await waitFor(viewer, '#player[data-state="playing"]', 'the broadcast playing');
    const playing = await viewer.evaluate(() => {
      const v = document.querySelector('#player video');
      return { engine: document.querySelector('#player').dataset.engine, t: v.currentTime, ready: v.readyState, w: v.videoWidth };
    });
    assert.equal(playing.engine, 'hls.js', 'HLS through the vendored hls.js');
    assert.ok(playing.w === 160 && playing.ready >= 2, `the picture decoded: ${JSON.stringify(playing)}`);
    await viewer.waitForFunction(() => document.querySelector('#player video').currentTime > 0.5, null, { timeout: WAIT });
    viewerToken = await viewer.evaluate(() => localStorage.getItem('lychee-live.viewer.token'));
  });

  await step('host adds and opens a product; the viewer sees it appear', async () => {
    await host.fill('#product-form [name=sku]', sku);
    await host.fill('#product-form [name=name]', productName);
    await host.fill('#product-form [name=price]', '58');
    await host.fill('#product-form [name=stock]', '20');
    await host.fill('#product-form [name=per_user_limit]', '3');
    await host.click('#product-form button[type=submit]');
    await waitFor(host, `tr[data-sku="${sku}"][data-status="on_sale"]`, 'host product row');
    await waitFor(viewer, `[data-sku="${sku}"][data-status="on_sale"][data-remaining="20"]`, 'viewer product card');
    await waitText(viewer, `[data-sku="${sku}"] .left`, /剩 20 \/ 20 件/);
  });

  await step('another guest buys over REST; the viewer sees the stock fall', async () => {
    const li = await guest('Li');
    const r = await rest('POST', `/api/v1/sales/${SALE}/orders`, { token: li, key: `li-${Date.now()}`, body: { sku, qty: 3 } });
    assert.equal(r.status, 201, r.text);
    await waitFor(viewer, `[data-sku="${sku}"][data-remaining="17"]`, 'stock 17 on the viewer page');
    await waitFor(host, `tr[data-sku="${sku}"][data-remaining="17"]`, 'stock 17 on the console');
  });

  await step('host announces and pins; chat reaches the host', async () => {
    await host.fill('#announce-text', '桂味刚开卖！');
    await host.click('#announce-form button');
    await waitText(viewer, '#announcement', /桂味刚开卖！/);
    await host.click(`tr[data-sku="${sku}"] button[data-action="pin"]`);
    await waitText(viewer, '#pinned-name', new RegExp(productName));
    await viewer.fill('#chat-text', '甜不甜？');
    await viewer.click('#chat-form button');
    await waitText(host, '#chat li .text', /^甜不甜？$/, 'chat on the console');
  });

  await step('viewer buys 2 without an address: paying asks for one (address_required)', async () => {
    const card = `[data-sku="${sku}"]`;
    await viewer.fill(`${card} input.qty`, '2');
    await viewer.click(`${card} button[type=submit]`);
    await waitText(viewer, `${card} .notice`, zh('buy.reserved_no_address'), 'reservation note');
    await waitFor(viewer, '#orders li[data-status="reserved"]', 'reserved order');
    await waitText(viewer, '#orders .countdown', /[0-4]:\d\d/, 'countdown');
    orderId = await viewer.getAttribute('#orders li[data-status="reserved"]', 'data-order');
    await waitText(viewer, `#orders li[data-order="${orderId}"] .ship-to`, zh('orders.no_address'));
    await viewer.fill(`${card} input.qty`, '2');
    await viewer.click(`${card} button[type=submit]`);
    await waitText(viewer, `${card} .notice.error`, zh('error.limit_exceeded'), 'limit error, in words');
    await viewer.click(`#orders li[data-order="${orderId}"] button.pay`);
    await waitText(viewer, `#orders li[data-order="${orderId}"] .notice.error`, zh('error.address_required'), 'address_required explained');
  });

  await step('viewer adds addresses (one with markup); a product that ships elsewhere is refused (undeliverable)', async () => {
    // The host sells one product to Guangdong only.
    const p = await rest('POST', `/api/v1/sales/${SALE}/products`, { token: HOST_TOKEN,
      body: { sku: 'GD-ONLY', name: '增城挂绿（仅限广东）', price_cents: 8800, stock: 10, ships_to: { include: ['440000'] } } });
    assert.equal(p.status, 201, p.text);
    assert.equal((await rest('POST', `/api/v1/sales/${SALE}/products/GD-ONLY/open`, { token: HOST_TOKEN })).status, 200);
    await waitFor(viewer, '[data-sku="GD-ONLY"][data-status="on_sale"]');
    // First a Beijing address, made the default, whose fields are markup.
    await viewer.click('#address-add summary');
    await viewer.fill('#address-form [name=name]', XSS);
    await viewer.fill('#address-form [name=phone]', '13912345678');
    await viewer.selectOption('#address-form [name=province]', '110000');
    await viewer.fill('#address-form [name=city]', '<b>北京</b>');
    await viewer.fill('#address-form [name=line]', '<script>window.__xss=1</script>朝阳路 1 号');
    await viewer.click('#address-form button[type=submit]');
    await waitFor(viewer, '#address-list li[data-default="true"]', 'the first address, the default');
    await waitText(viewer, '#address-list .addr', /^<img src=x onerror="window.__xss=1"> 13912345678 北京市 <b>北京<\/b> <script>/, 'address text, literally');
    await viewer.click('[data-sku="GD-ONLY"] button[type=submit]');
    await waitText(viewer, '[data-sku="GD-ONLY"] .notice.error', zh('error.undeliverable'), 'undeliverable explained');
    await waitFor(viewer, '[data-sku="GD-ONLY"][data-remaining="10"]', 'no stock taken');
    // Then a Guangdong one, made the default: the ship-to line follows it.
    await viewer.click('#address-add summary');
    await viewer.fill('#address-form [name=name]', '陈梅');
    await viewer.fill('#address-form [name=phone]', '13812345678');
    await viewer.selectOption('#address-form [name=province]', '440000');
    await viewer.fill('#address-form [name=city]', '广州');
    await viewer.fill('#address-form [name=district]', '从化区');
    await viewer.fill('#address-form [name=line]', '荔枝路 1 号');
    await viewer.fill('#address-form [name=postcode]', '510900');
    await viewer.click('#address-form button[type=submit]');
    await waitText(viewer, '#address-list li[data-default="true"] .addr', /^陈梅 13812345678 广东省 广州 从化区 荔枝路 1 号 510900$/);
    await waitText(viewer, '#ship-to-name', /陈梅/);
    // Picking the Beijing one as default again moves the default (a copy is made).
    await viewer.click('#address-list li[data-default="false"] button[data-action="default"]');
    await waitText(viewer, '#address-list li[data-default="true"] .addr', /^<img/);
    await viewer.click('#address-list li[data-default="false"] button[data-action="default"]');
    await waitText(viewer, '#address-list li[data-default="true"] .addr', /^陈梅/);
    assert.equal(await viewer.locator('#address-list li').count(), 2);
  });

  await step('viewer attaches the address to the order and pays in the sandbox checkout', async () => {
    const item = `#orders li[data-order="${orderId}"]`;
    const choice = await viewer.getAttribute('#address-list li[data-default="true"]', 'data-address');
    await viewer.selectOption(`${item} select.address-pick`, choice);
    await waitText(viewer, `${item} .ship-to .addr`, /^陈梅 13812345678 广东省/);
    await viewer.click(`${item} button.pay`);
    await waitFor(viewer, 'button[value="pay"]', 'the sandbox checkout page');
    assert.match(viewer.url(), /\/sandbox\/pay\//);
    await viewer.click('button[value="pay"]');
    await waitText(viewer, 'body', /支付成功/, 'the sandbox took the payment');
    await viewer.click('a[href^="/sales/"]');
    await waitFor(viewer, `${item}[data-status="completed"]`, 'paid order');
    await waitFor(viewer, `${item} .journey li.done[data-step="paid"]`, 'the journey starts at paid');
    await waitText(viewer, `${item} .journey li[aria-current="step"]`, /^已付款$/);
    // One more, left unpaid: the screenshot shows a reservation's countdown.
    await viewer.click('[data-sku="NMC-2_5KG"] button[type=submit]');
    await waitFor(viewer, '#orders li[data-status="reserved"]', 'a second reservation');
  });

  await step('host downloads the packing list and prints slips with a QR code per order', async () => {
    await host.click('#orders-refresh');
    await waitFor(host, `#orders li[data-order="${orderId}"]`, 'the paid order on the console');
    await waitText(host, '#paid-total', /^1 \(¥116\.00\)$/, 'the one paid order');
    const [download] = await Promise.all([host.waitForEvent('download', { timeout: WAIT }), host.click('#packing-download')]);
    const csv = await readFile(await download.path(), 'utf8');
    assert.match(csv, /^order_id,completed_at,recipient,phone,province/);
    assert.ok(csv.includes(orderId) && csv.includes('13812345678'), 'the packing list holds the order and the full phone');
    const slips = watch(await hostContext.newPage(), 'slips');
    await slips.goto(`${BASE}/host/${SALE}/slips`);
    await waitFor(slips, `body[data-ready="true"] .slip[data-order="${orderId}"] svg.qr`, 'a slip with its QR code');
    await waitText(slips, `.slip[data-order="${orderId}"] .recipient`, /陈梅 13812345678/);
    const modules = Number(await slips.getAttribute(`.slip[data-order="${orderId}"] svg.qr`, 'data-modules'));
    assert.ok(modules >= 21, `a QR code of ${modules} modules`);
    await fitsWidth(slips, 'slips');
    await accessible(slips, 'slips');
    await shot(slips, 'slips.zh-CN.png');
    await slips.emulateMedia({ media: 'print' });
    assert.equal(await slips.isVisible('#print'), false, 'the buttons do not print');
    await slips.close();
    // A browser that prefers English gets the slips in English (Accept-Language).
    const english = await browser.newContext({ ...farmerPhone, locale: 'en-US' });
    await english.addInitScript((token) => localStorage.setItem('lychee-live.host.token', token), HOST_TOKEN);
    const enSlips = watch(await english.newPage(), 'slips (en)');
    await enSlips.goto(`${BASE}/host/${SALE}/slips`);
    await waitFor(enSlips, `body[data-ready="true"][data-lang="en"] .slip[data-order="${orderId}"]`, 'English slips');
    await waitText(enSlips, '#count', /^1 slips$/);
    await accessible(enSlips, 'slips (en)');
    await shot(enSlips, 'slips.en.png');
    await english.close();
  });

  await step('host marks the box packed, uploads the waybill CSV: shipped, and a bad row shows its error', async () => {
    // Packed first (the box is taped, the courier not here yet): the buyer sees it.
    await host.click(`#orders li[data-order="${orderId}"] button[data-action="packed"]`);
    await waitFor(host, `#orders li[data-order="${orderId}"][data-fulfilment="packed"]`, 'packed on the console');
    await waitText(viewer, `#orders li[data-order="${orderId}"] .journey li[aria-current="step"]`, /^已打包$/, 'packed on the viewer page');
    const sheet = `order_id,courier,waybill\n${orderId},顺丰速运,SF1234567890\n<script>window.__xss=1</script>,<b>EMS</b>,EMS-1\n`;
    await host.setInputFiles('#waybill-file', { name: 'waybills.csv', mimeType: 'text/csv', buffer: Buffer.from(sheet) });
    await host.click('#waybill-form button[type=submit]');
    await waitText(host, '#waybill-summary', /已发货 1 单，未变 0 单，有问题 1 行/);
    await waitText(host, '#waybill-errors tr[data-row="2"] td', /^<script>window\.__xss=1<\/script>$/, 'the bad row, literally');
    await waitText(host, '#waybill-errors tr[data-row="2"]', /\((bad_request|not_found)\)/);
    await waitFor(host, `#orders li[data-order="${orderId}"][data-fulfilment="shipped"]`, 'shipped on the console');
    await waitText(viewer, `#orders li[data-order="${orderId}"] .shipment`, /快递：顺丰速运.*SF1234567890/, 'the viewer sees courier and waybill');
    await waitText(viewer, `#orders li[data-order="${orderId}"] .journey li[aria-current="step"]`, /^已发货$/);
    await fitsWidth(host, 'host console at 360 px');
    // Thumbs in an orchard: every button and button-like link at least 40 px tall.
    const small = await host.evaluate(() => [...document.querySelectorAll('main button, main a.btn, main summary.btn')]
      .filter((b) => b.offsetParent !== null && !b.closest('[hidden]'))
      .map((b) => [b.textContent.trim(), Math.round(b.getBoundingClientRect().height)])
      .filter(([, height]) => height < 40));
    assert.deepEqual(small, [], 'touch targets under 40 px on the console');
    const bar = await host.evaluate(() => { const n = document.querySelector('.top nav'); return [n.scrollWidth, n.clientWidth]; });
    assert.ok(bar[0] <= bar[1], `the top bar fits at 360 px: ${bar}`);
  });

  await step('host marks it delivered; the viewer sees it', async () => {
    await host.click(`#orders li[data-order="${orderId}"] button[data-action="delivered"]`);
    await waitFor(host, `#orders li[data-order="${orderId}"][data-fulfilment="delivered"]`);
    await waitText(viewer, `#orders li[data-order="${orderId}"] .journey li[aria-current="step"]`, /^已送达$/, 'delivered on the viewer page');
  });

  await step('viewer claims with a photo; the operator is alerted', async () => {
    const item = `#orders li[data-order="${orderId}"]`;
    await viewer.click(`${item} button[data-action="claim"]`);
    const form = `${item} form.claim-form`;
    assert.equal(await viewer.getAttribute(`${form} input[type=file]`, 'accept'), 'image/*');
    assert.equal(await viewer.getAttribute(`${form} input[type=file]`, 'capture'), 'environment');
    await viewer.selectOption(`${form} [name=kind]`, 'spoiled');
    await viewer.fill(`${form} [name=description]`, `一箱有几颗软了 ${XSS}`);
    await viewer.setInputFiles(`${form} input[type=file]`, { name: 'box.png', mimeType: 'image/png', buffer: PHOTO });
    await waitFor(viewer, `${form} .photos img`, 'the photo preview');
    await viewer.click(`${form} button[type=submit]`);
    await waitFor(viewer, `${item} .claim[data-status="open"]`, 'the open claim');
    await waitText(viewer, `${item} .claim .pre-line`, /^一箱有几颗软了 <img src=x onerror="window\.__xss=1">$/);
    await viewer.waitForFunction((sel) => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth === 1; }, `${item} .claim .photos img`, { timeout: WAIT });
    await waitFor(ops, `#alerts li[data-kind="claims"][data-sale="${SALE}"]`, 'an alert for the rising claims');
    await waitFor(ops, `#overview tr[data-sale="${SALE}"][data-claims="1"]`, 'one open claim at a glance');
    await waitText(ops, '#fig-claims', /^1$/);
  });

  await step('a paid box past its ships_by is late: the operator is alerted', async () => {
    // Pre-sale produce promised for a day already past, bought and paid by
    // another buyer through the API and the sandbox's own form.
    const p = await rest('POST', `/api/v1/sales/${SALE}/products`, { token: HOST_TOKEN,
      body: { sku: 'LATE-1', name: '早熟三月红', price_cents: 3000, stock: 5, ships_by: '2026-01-01' } });
    assert.equal(p.status, 201, p.text);
    assert.equal((await rest('POST', `/api/v1/sales/${SALE}/products/LATE-1/open`, { token: HOST_TOKEN })).status, 200);
    const wu = await guest('Wu');
    const a = await rest('POST', '/api/v1/me/addresses', { token: wu,
      body: { name: '吴', phone: '13712345678', province: '440000', city: '广州', line: '果园路 2 号' } });
    assert.equal(a.status, 201, a.text);
    const o = await rest('POST', `/api/v1/sales/${SALE}/orders`, { token: wu, key: `wu-${Date.now()}`, body: { sku: 'LATE-1', qty: 1 } });
    assert.equal(o.status, 201, o.text);
    const pay = await rest('POST', `/api/v1/orders/${o.json.id}/payments`, { token: wu, body: { provider: 'sandbox' } });
    assert.equal(pay.status, 201, pay.text);
    const done = await fetch(new URL(pay.json.checkout.url, BASE), { method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'action=pay' });
    assert.equal(done.status, 200, await done.text());
    await waitFor(ops, `#alerts li[data-kind="late"][data-sale="${SALE}"]`, 'an alert for the late shipment');
    await waitFor(ops, `#overview tr[data-sale="${SALE}"][data-late="1"]`, 'one late shipment at a glance');
    await waitText(ops, '#fig-late', /^1$/);
  });

  await step('host sees the claim with its photo and refunds through it; the viewer sees the outcome', async () => {
    await host.click('#claims-refresh');
    const claim = '#claims .claim[data-status="open"]';
    await waitFor(host, claim, 'the claim in the queue');
    await host.waitForFunction((sel) => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth === 1; }, `${claim} .photos img`, { timeout: WAIT });
    await host.fill(`${claim} [name=refund]`, '58');
    await host.fill(`${claim} [name=note]`, '<i>抱歉</i>');
    await host.click(`${claim} button[data-action="refund"]`);
    await waitFor(host, '#claims .claim[data-status="settled"], #claims .claim[data-status="approved"]', 'the claim answered');
    await waitText(viewer, `#orders li[data-order="${orderId}"] .claim .outcome`, /处理结果：退款 ¥58\.00 · <i>抱歉<\/i>/, 'the outcome on the viewer page');
  });

  await step('host refunds part of an order directly; the operator sees refunds and claims', async () => {
    const row = `#orders li[data-order="${orderId}"]`;
    await host.click(`${row} button[data-action="refund"]`);
    await host.fill(`${row} .refund-form [name=amount]`, '1');
    await host.fill(`${row} .refund-form [name=reason]`, XSS);
    await host.click(`${row} .refund-form button[type=submit]`);
    await waitText(host, '#flash', /退款 ¥1\.00/);
    await waitText(host, `${row} .refunded`, /已退 ¥59\.00/, 'refunds on the order');
    await waitText(ops, '#fig-refunds', /^¥59\.00$/, 'refunds on the dashboard');
    await waitFor(ops, `#overview tr[data-sale="${SALE}"][data-claims="0"]`, 'no claim left open');
    await waitText(ops, `#overview tr[data-sale="${SALE}"] td`, /^¥59\.00$/);
  });

  await step('two more claims on the box: the host rejects one (with a note) and reships the other', async () => {
    const item = `#orders li[data-order="${orderId}"]`;
    const claimAgain = async (kind, words) => {
      await viewer.click(`${item} button[data-action="claim"]`);
      await viewer.selectOption(`${item} form.claim-form [name=kind]`, kind);
      await viewer.fill(`${item} form.claim-form [name=description]`, words);
      await viewer.click(`${item} form.claim-form button[type=submit]`);
      await waitFor(viewer, `${item} .claim[data-status="open"]`, `the ${kind} claim`);
      await host.click('#claims-refresh');
      await waitFor(host, '#claims .claim[data-status="open"]', 'the new claim in the queue');
    };
    await claimAgain('short_weight', '好像少了 200 克');
    const open = '#claims .claim[data-status="open"]';
    // Rejecting needs a reason.
    await host.click(`${open} button[data-action="reject"]`);
    await waitText(host, `${open} .notice.error`, zh('host.claim_reject_needs_note'));
    await host.fill(`${open} [name=note]`, '<b>称重视频显示足重</b>');
    await host.click(`${open} button[data-action="reject"]`);
    await waitText(viewer, `${item} .claim[data-status="rejected"] .outcome`, /^处理结果：不予受理 · <b>称重视频显示足重<\/b>$/);
    await claimAgain('damaged', '箱子压扁了');
    await host.click(`${open} button[data-action="reship"]`);
    await waitFor(host, '#claims .claim[data-status="settled"] .outcome', 'the reship');
    await waitText(viewer, `${item} .claim .outcome`, /处理结果：补发/);
    await waitFor(viewer, `[data-sku="${sku}"][data-remaining="14"]`, 'the new box takes stock');
  });

  await step('operator charts move; stock per SKU; CSV export', async () => {
    await waitText(ops, '#fig-gmv', /^¥146\.00$/, 'GMV after the payments (116 + 30)');
    await waitFor(ops, `#stock tr[data-sku="${sku}"][data-remaining="14"]`, 'stock row');
    const [download] = await Promise.all([ops.waitForEvent('download', { timeout: WAIT }), ops.click('#csv')]);
    const csv = await readFile(await download.path(), 'utf8');
    assert.match(csv, /^order_id,created_at,completed_at,user_id,sku,qty/);
    assert.ok(csv.includes(orderId), 'the CSV holds the paid order');
  });

  await step('host deletes a message and mutes the viewer', async () => {
    await host.click('#chat li:has(.text:text-is("甜不甜？")) button[data-action="delete"]');
    await viewer.waitForFunction(() => ![...document.querySelectorAll('#chat li .text')].some((x) => x.textContent === '甜不甜？'), null, { timeout: WAIT });
    await host.fill('#mute-secs', '60');
    await viewer.fill('#chat-text', '有优惠吗？');
    await viewer.click('#chat-form button');
    await waitText(host, '#chat li .text', /^有优惠吗？$/);
    await host.click('#chat li:has(.text:text-is("有优惠吗？")) button[data-action="mute"]');
    await waitText(host, '#flash', /已禁言 60 秒/);
    await viewer.waitForTimeout(300);
    await viewer.fill('#chat-text', '在吗？');
    await viewer.click('#chat-form button');
    await waitText(viewer, '#chat-error', zh('error.muted'), 'muted, in words');
  });

  await step('host restocks, closes, sets slow mode; the viewer follows', async () => {
    await host.fill(`tr[data-sku="${sku}"] input.qty`, '10');
    await host.click(`tr[data-sku="${sku}"] button[data-action="restock"]`);
    await waitText(viewer, `[data-sku="${sku}"] .left`, /^剩 24 \/ 30 件$/, 'restocked');
    await host.click(`tr[data-sku="${sku}"] button[data-action="close"]`);
    await waitFor(viewer, `[data-sku="${sku}"][data-status="closed"]`, 'closed product');
    assert.ok(await viewer.isDisabled(`[data-sku="${sku}"] button[type=submit]`), 'no buying a closed product');
    await host.click(`tr[data-sku="${sku}"] button[data-action="open"]`);
    await waitFor(viewer, `[data-sku="${sku}"][data-status="on_sale"]`, 'open again');
    await host.fill('#slow-secs', '10');
    await host.click('#slow-form button');
    await waitText(viewer, '#chat-note', /每 10 秒只能发一条/, 'slow mode note');
  });

  await step('screenshots in Chinese; every page passes axe-core', async () => {
    await fitsWidth(viewer, 'viewer');
    await fitsWidth(host, 'host');
    await shot(viewer, 'viewer.zh-CN.png');
    await shot(host, 'host.zh-CN.png');
    await shot(ops, 'ops.zh-CN.png');
    for (const [page, name] of [[viewer, 'viewer'], [host, 'host'], [ops, 'ops']]) await accessible(page, name);
    const home = watch(await viewerContext.newPage(), 'home');
    await home.goto(`${BASE}/`);
    await waitFor(home, `li[data-sale="${SALE}"]`);
    await accessible(home, 'home');
    await shot(home, 'home.zh-CN.png');
    await home.goto(`${BASE}/signin`);
    await waitFor(home, '#token-form:not([hidden])');
    await accessible(home, 'signin');
    await home.close();
  });

  await step('the language switch: English, kept in the browser', async () => {
    await viewer.click('#lang');
    await viewer.waitForLoadState('load');
    await waitText(viewer, '#conn', en('conn.open'), 'the page again, in English');
    assert.equal(await viewer.evaluate(() => document.documentElement.lang), 'en');
    await waitText(viewer, '#orders-card h2', /^My orders$/);
    await waitText(viewer, `#orders li[data-order="${orderId}"] .journey li[aria-current="step"]`, /^Delivered$/);
    await waitText(viewer, '[data-sku="FZX-5KG"] .price', /^¥168\.00$/, 'still ¥168.00 in English');
    await viewer.reload();
    await waitText(viewer, '#orders-card h2', /^My orders$/, 'kept after a reload');
    await accessible(viewer, 'viewer (en)');
    await shot(viewer, 'viewer.en.png');
    for (const [page, name] of [[host, 'host'], [ops, 'ops']]) {
      await page.click('#lang');
      await page.waitForLoadState('load');
      await waitText(page, '#conn', name === 'host' ? en('conn.open') : en('conn.sse_open'));
      // A few seconds of the charts, so the picture shows lines, not a dot.
      if (name === 'ops') await ops.waitForFunction(() => Number(document.querySelector('#chart-orders')?.dataset.points) >= 8, null, { timeout: WAIT });
      assert.equal(await page.evaluate(() => document.documentElement.lang), 'en');
      await accessible(page, `${name} (en)`);
      await shot(page, `${name}.en.png`);
    }
    await waitFor(host, `#orders li[data-order="${orderId}"]`);
    await waitText(host, '#fulfilment h2', /^Shipping$/);
    // Back to Chinese for the rest, by the same switch.
    await viewer.click('#lang');
    await viewer.waitForLoadState('load');
    await waitText(viewer, '#orders-card h2', /^我的订单$/);
  });

  await step('a dropped socket shows it is reconnecting and resumes with since=<last seq>', async () => {
    await waitText(viewer, '#conn', zh('conn.open'));
    // Every state the indicator shows, recorded as it changes.
    await viewer.evaluate(() => {
      window.__conn = [];
      new MutationObserver(() => window.__conn.push(document.querySelector('#conn').dataset.state))
        .observe(document.querySelector('#conn'), { attributes: true, attributeFilter: ['data-state'] });
    });
    const lastSeq = await viewer.evaluate(() => Math.max(...[...document.querySelectorAll('#chat li')].map((li) => Number(li.dataset.seq)), 0));
    assert.ok(lastSeq >= 1, 'chat has a seq');
    const before = viewerSockets.length;
    const { ws, server } = viewerSockets[before - 1];
    await ws.close({ code: 1001, reason: 'going away' });
    await server.close();
    const deadline = Date.now() + WAIT;
    while (viewerSockets.length === before && Date.now() < deadline) await viewer.waitForTimeout(50);
    assert.ok(viewerSockets.length > before, 'the page reconnected');
    assert.match(viewerSockets.at(-1).url, new RegExp(`[?&]since=${lastSeq}(&|$)`));
    await waitText(viewer, '#conn', zh('conn.open'), 'live again');
    const seen = await viewer.evaluate(() => window.__conn);
    assert.ok(seen.includes('closed'), `the page said it was reconnecting: ${seen}`);
    await host.fill('#chat-text', '欢迎回来');
    await host.click('#chat-form button');
    await waitText(viewer, '#chat li .text', /^欢迎回来$/, 'chat after the reconnect');
  });

  await step('host creates a sale in the lobby and goes live from the phone', async () => {
    await host.goto(`${BASE}/host`);
    await waitFor(host, '#lobby:not([hidden])');
    await host.fill('#sale-form [name=title]', '<b>晚市</b> 荔枝专场');
    await host.fill('#sale-form [name=description]', XSS);
    await host.fill('#sale-form [name=stream_url]', STREAM);
    await host.click('#sale-form button[type=submit]');
    await host.waitForURL(/\/host\/[0-9a-f-]{36}$/);
    await waitText(host, '#title', /^<b>晚市<\/b> 荔枝专场$/);
    await waitFor(host, '#status [data-status="scheduled"]');
    await host.click('#start');
    await waitFor(host, '#status [data-status="live"]', 'live');
    assert.equal(await host.isVisible('#end'), true);
    await accessible(host, 'host console of a new sale');
    await noScriptRan(host, 'host lobby');
    await host.goto(`${BASE}/host/${SALE}`);
    await waitFor(host, `#orders li[data-order="${orderId}"]`);
  });

  await step('the player: "not live yet" with a poster, and a stream that fails leaves the shop usable', async () => {
    const later = await rest('POST', '/api/v1/sales', { token: HOST_TOKEN,
      body: { title: '明早开摘', stream_url: STREAM, scheduled_at: new Date(Date.now() + 86400000).toISOString() } });
    assert.equal(later.status, 201, later.text);
    const page = watch(await viewerContext.newPage(), 'player states');
    await page.goto(`${BASE}/sales/${later.json.id}`);
    await waitFor(page, '#player[data-state="not_live"]', 'not live yet');
    await waitText(page, '#player .player-note', zh('player.not_live_at'));
    assert.equal(await page.getAttribute('#player video', 'poster'), '/assets/poster.svg');
    // A live sale whose HLS playlist cannot be fetched (nothing answers there).
    const broken = await rest('POST', '/api/v1/sales', { token: HOST_TOKEN,
      body: { title: '信号不好的直播', stream_url: 'https://stream.example.invalid/live/index.m3u8' } });
    assert.equal(broken.status, 201, broken.text);
    assert.equal((await rest('POST', `/api/v1/sales/${broken.json.id}/start`, { token: HOST_TOKEN })).status, 200);
    const pr = await rest('POST', `/api/v1/sales/${broken.json.id}/products`, { token: HOST_TOKEN, body: { sku: 'S-1', name: '桂味', price_cents: 5800, stock: 5 } });
    assert.equal(pr.status, 201, pr.text);
    assert.equal((await rest('POST', `/api/v1/sales/${broken.json.id}/products/S-1/open`, { token: HOST_TOKEN })).status, 200);
    await page.goto(`${BASE}/sales/${broken.json.id}`);
    await page.locator('#player[data-state="failed"]').waitFor({ state: 'attached', timeout: 30000 });
    await waitText(page, '#player .player-note', zh('player.failed'));
    await waitText(page, '#conn', zh('conn.open'));
    await page.click('[data-sku="S-1"] button[type=submit]');
    await waitFor(page, '#orders li[data-status="reserved"]', 'bought while the stream is down');
    // How each kind of URL is played: HLS, MP4, a platform's page; nothing else.
    const kinds = await page.evaluate(async () => {
      const { kindOf } = await import('/assets/player.js');
      return ['https://cdn.example/live/a.m3u8', 'https://cdn.example/v/a.MP4?x=1', 'https://live.douyin.com/123',
        '/demo/index.m3u8', 'http://cdn.example/a.m3u8', '/sales/1', 'javascript:alert(1)'].map(kindOf);
    });
    assert.deepEqual(kinds, ['hls', 'mp4', 'embed', 'hls', null, null, null]);
    await page.close();
    // The unreachable stream's requests are logged by the browser: those alone are expected.
    const left = takeProblems().filter((p) => !/ERR_NAME_NOT_RESOLVED|Failed to load resource/.test(p));
    assert.deepEqual(left, [], 'no other problem');
  });

  assert.deepEqual(takeProblems(), [], 'no page error, console error or CSP violation');

  await step('a socket closed for an expired token asks for a sign-in instead of retrying', async () => {
    const before = hostSockets.length;
    const { ws, server } = hostSockets.at(-1);
    await ws.close({ code: 4001, reason: 'token expired' });
    await server.close();
    await waitFor(host, '#token-form:not([hidden])', 'the host is asked to sign in');
    await waitText(host, '#token-error', en('signin.expired'));
    await host.waitForTimeout(3000);
    assert.equal(hostSockets.length, before, 'no reconnect with an expired token');
    // The viewer's too: back to the join card, with the reason.
    const vBefore = viewerSockets.length;
    const v = viewerSockets.at(-1);
    await v.ws.close({ code: 4001, reason: 'token expired' });
    await v.server.close();
    await waitFor(viewer, '#signin:not([hidden])', 'the viewer is asked to join again');
    await waitText(viewer, '#signin-error', zh('signin.expired'));
    await viewer.waitForTimeout(3000);
    assert.equal(viewerSockets.length, vBefore, 'no reconnect with an expired token');
    // A pasted token works again (the host's, kept in its file).
    await host.fill('#token', HOST_TOKEN);
    await host.click('#token-form button');
    await waitText(host, '#conn', en('conn.open'));
  });

  await step('a token that expires while the page is open asks for a sign-in again', async () => {
    // Another operator than the one whose page is open: a user's pages share
    // one cap of 5 streams, and that page already follows every live sale.
    const short = execFileSync(env('E2E_BIN'), ['token', '--role', 'operator', '--sub', 'short-operator', '--name', 'Short', '--ttl', '6s',
      '--data-dir', env('E2E_DATA_DIR')], { encoding: 'utf8' }).trim();
    const context = await browser.newContext(desktop);
    const streams = [];
    context.on('request', (r) => { if (r.url().includes('/dashboard')) streams.push(Date.now()); });
    const page = watch(await context.newPage(), 'expiring operator');
    await page.goto(`${BASE}/ops?sale=${SALE}`);
    await page.fill('#token', short);
    await page.click('#token-form button');
    await waitText(page, '#conn', zh('conn.sse_open'));
    await page.locator('#token-form:not([hidden])').waitFor({ state: 'attached', timeout: 20000 });
    await waitText(page, '#token-error', zh('signin.expired'), 'asked to sign in again');
    const asked = Date.now();
    await page.waitForTimeout(4000);
    assert.ok(streams.every((t) => t < asked + 500), 'no stream opened again with the expired token');
    await context.close();
    takeProblems(); // a refused stream, if the server answered 401 first, is logged by the browser
  });

  await step('no token ever rode in a URL the server saw, but the socket\'s access_token', async () => {
    for (const url of urls) {
      if (/\/live\?/.test(url)) continue;
      for (const token of [HOST_TOKEN, OPS_TOKEN, viewerToken]) assert.ok(!url.includes(token.split('.')[2]), `a token in ${url}`);
      assert.ok(!/[?&](token|signin|access_token)=/.test(url), `a secret in ${url}`);
    }
  });

  assert.deepEqual(takeProblems(), [], 'no page error, console error or CSP violation');

  await step('user text that looks like HTML stays text; no script runs', async () => {
    // A sale, product and guest whose names are markup, made over REST.
    const s = await rest('POST', '/api/v1/sales', { token: HOST_TOKEN, body: { title: XSS_TITLE, description: XSS_CHAT, stream_url: STREAM } });
    assert.equal(s.status, 201, s.text);
    const xss = s.json.id;
    assert.equal((await rest('POST', `/api/v1/sales/${xss}/start`, { token: HOST_TOKEN })).status, 200);
    const p = await rest('POST', `/api/v1/sales/${xss}/products`, { token: HOST_TOKEN, body: { sku: 'XSS-1', name: XSS_PRODUCT, price_cents: 100, stock: 5 } });
    assert.equal(p.status, 201, p.text);
    assert.equal((await rest('POST', `/api/v1/sales/${xss}/products/XSS-1/open`, { token: HOST_TOKEN })).status, 200);

    const eve = watch(await viewerContext.newPage(), 'eve');
    await eve.goto(`${BASE}/`);
    await waitText(eve, `li[data-sale="${xss}"] h2`, /^<script>window\.__xss=1<\/script>Night market$/, 'title on the home page');
    await eve.goto(`${BASE}/sales/${xss}`);
    await eve.evaluate(() => localStorage.clear());
    await eve.reload();
    await eve.fill('#guest-name', '<b onmouseover="window.__xss=1">Eve</b>');
    await eve.click('#guest-form button');
    await waitText(eve, '#conn', zh('conn.open'));
    await eve.fill('#chat-text', XSS_CHAT);
    await eve.click('#chat-form button');
    await waitText(eve, '#chat li .text', /^<img src=x onerror="window.__xss=1">$/, 'chat text, literally');
    await waitText(eve, '#chat li .name', /^<b onmouseover="window.__xss=1">Eve<\/b>$/, 'name, literally');
    await waitText(eve, '#title', /^<script>window\.__xss=1<\/script>Night market$/);
    await waitText(eve, '#description', /^<img src=x onerror/);
    await waitText(eve, '[data-sku="XSS-1"] h3', /^<script>window\.__xss=1<\/script> honey jar$/);
    assert.equal(await eve.locator('#chat img, main script, #title script, #products script').count(), 0, 'no element was made from user text');
    await fitsWidth(eve, 'viewer with markup names');
    // The broadcast: a sandboxed frame, and only for an https URL of another site.
    const frame = eve.locator('#player iframe');
    assert.equal(await eve.getAttribute('#player', 'data-kind'), 'embed');
    assert.equal(await frame.getAttribute('src'), STREAM);
    assert.equal(await frame.getAttribute('sandbox'), 'allow-scripts allow-same-origin allow-presentation');
    assert.ok(await eve.locator('#chat').getByText(XSS_CHAT, { exact: true }).isVisible(), 'the literal chat text is visible');

    await host.goto(`${BASE}/host/${xss}`);
    await waitText(host, '#conn', en('conn.open'));
    await waitText(host, '#chat li .text', /^<img src=x onerror="window.__xss=1">$/);
    await waitText(host, `tr[data-sku="XSS-1"] b`, /^<script>/);
    await ops.goto(`${BASE}/ops?sale=${xss}`);
    await waitText(ops, '#title', /^<script>window\.__xss=1<\/script>Night market$/);
    await waitText(ops, '#stock tr[data-sku="XSS-1"] td', /^<script>/);
    for (const [page, name] of [[eve, 'viewer'], [viewer, 'viewer (addresses, claims)'], [host, 'host'], [ops, 'ops']]) await noScriptRan(page, name);

    // Ban Eve from the console: her socket closes with 4003 and the page says so.
    host.once('dialog', (d) => d.accept());
    await host.click('#chat li:has(.text:text-is(\'<img src=x onerror="window.__xss=1">\')) button[data-action="ban"]');
    await waitText(eve, '#conn', zh('conn.banned'), 'banned viewer');
    await waitText(eve, '#error', zh('viewer.banned'));

    assert.deepEqual(takeProblems(), [], 'no page error, console error or CSP violation');
    // The policy is enforced, not only sent: an inline script added by hand is refused.
    const ran = await eve.evaluate(() => {
      const s = document.createElement('script');
      s.textContent = 'window.__inline = 1';
      document.body.append(s);
      return window.__inline;
    });
    assert.equal(ran, undefined, 'an inline script ran despite the CSP');
    await eve.waitForFunction(() => window.__violations.some((v) => v.startsWith('script-src')), null, { timeout: WAIT });
    // The refusal logs one console error, on purpose.
    const logged = takeProblems();
    assert.ok(logged.length === 1 && /Content Security Policy/.test(logged[0]), `expected one CSP refusal, got ${JSON.stringify(logged)}`);
  });

  assert.deepEqual(takeProblems(), [], 'no page error, console error or CSP violation');
  console.log(`e2e passed in ${since()}`);
} catch (err) {
  // What each page looked like when it failed, for whoever reads the CI log.
  console.log('FAILED');
  for (const context of browser.contexts()) {
    for (const [i, page] of context.pages().entries()) {
      const file = path.join(OUT, `failure-${browser.contexts().indexOf(context)}-${i}.png`);
      await page.screenshot({ path: file, fullPage: true }).then(() => console.log(`  screenshot ${file} (${page.url()})`), () => {});
    }
  }
  throw err;
} finally {
  await browser.close();
}
