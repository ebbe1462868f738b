// `/ops`: the operators' dashboard. Every live sale at a glance (viewers,
// orders a second, GMV, late shipments, open claims, refunds), each from its
// own `GET /sales/{id}/dashboard` stream (SSE, read with fetch because
// EventSource cannot send the Authorization header), with an alert when a
// sale's late or open-claim count rises; for the chosen sale, the figures
// charted with uPlot, the stock per SKU, and the CSV export.

import {
  $, h, t, text, api, describe, tokenStore, tokenCard, money, number, followEvents, downloadCsv,
} from './common.js';

const store = tokenStore('ops');
/** Points kept per chart: five minutes at one a second. */
const WINDOW = 300;
const CHART_HEIGHT = 170;
/** A user may hold 5 dashboard streams per node (the server's cap). */
const MAX_STREAMS = 5;
const ALERTS_KEPT = 20;

const state = {
  token: null,
  saleId: new URLSearchParams(location.search).get('sale'),
  sale: null,
  stop: null,
  charts: null,
  series: null, // { x: [], orders: [], ... } parallel arrays
  stockRows: new Map(),
  sales: [], // the live sales
  streams: new Map(), // sale id -> stop()
  latest: new Map(), // sale id -> last figures
  rows: new Map(), // sale id -> overview row elements
  card: null,
};

let errorTimer;
function fail(err) {
  text($('#error'), typeof err === 'string' ? err : describe(err));
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => text($('#error'), ''), 10000);
}

const currency = () => state.sale?.products?.[0]?.currency || 'CNY';
const int = (v) => String(Math.round(v));
const compact = new Intl.NumberFormat(document.documentElement.lang, { notation: 'compact', maximumFractionDigits: 1 });
/** Whole-number tick steps, so a chart of counts never labels 0.5. */
const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8, 1e9];
const ms = (v) => (v >= 100 ? int(v) : v.toFixed(1));

// ---------------------------------------------------------------- charts

const CHARTS = {
  orders: {
    el: '#chart-orders',
    lines: [
      { key: 'orders', label: t('ops.series_orders'), stroke: '#c2274a', fill: 'rgba(194,39,74,0.10)' },
      { key: 'attempts', label: t('ops.series_attempts'), stroke: '#a65d00' },
    ],
    fmt: int,
    whole: true,
  },
  viewers: { el: '#chart-viewers', lines: [{ key: 'viewers', label: t('ops.col_viewers'), stroke: '#2f7d4f', fill: 'rgba(47,125,79,0.10)' }], fmt: int, whole: true },
  chat: { el: '#chart-chat', lines: [{ key: 'chat', label: t('ops.series_chat'), stroke: '#3b5bdb' }], fmt: int, whole: true },
  gmv: { el: '#chart-gmv', lines: [{ key: 'gmv', label: t('ops.series_gmv'), stroke: '#9c1c3a', fill: 'rgba(156,28,58,0.08)' }], fmt: (v) => compact.format(v) },
  latency: {
    el: '#chart-latency',
    lines: [
      { key: 'p50', label: 'p50 ms', stroke: '#2f7d4f' },
      { key: 'p99', label: 'p99 ms', stroke: '#c2274a' },
    ],
    fmt: ms,
  },
};

function emptySeries() {
  const s = { x: [] };
  for (const c of Object.values(CHARTS)) for (const l of c.lines) s[l.key] = [];
  return s;
}

function makeCharts() {
  const charts = {};
  for (const [name, c] of Object.entries(CHARTS)) {
    const el = $(c.el);
    const plot = new uPlot({
      width: Math.max(260, el.clientWidth),
      height: CHART_HEIGHT,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      series: [{}, ...c.lines.map((l) => ({ label: l.label, stroke: l.stroke, fill: l.fill, width: 2 }))],
      axes: [{}, { size: 56, values: (u, ticks) => ticks.map(c.fmt), incrs: c.whole ? WHOLE : undefined }],
      // Labels only: values under a cursor mean little on a chart that moves every second.
      legend: { live: false },
    }, [[], ...c.lines.map(() => [])], el);
    // The cards reflow with the window (and a phone's rotation).
    new ResizeObserver(() => plot.setSize({ width: Math.max(260, el.clientWidth), height: CHART_HEIGHT })).observe(el);
    charts[name] = plot;
  }
  return charts;
}

function drawCharts() {
  const s = state.series;
  for (const [name, c] of Object.entries(CHARTS)) {
    state.charts[name].setData([s.x, ...c.lines.map((l) => s[l.key])]);
    // Read by the end-to-end tests (and handy when inspecting the page).
    $(c.el).dataset.points = s.x.length;
  }
}

// ---------------------------------------------------------------- figures

function onSecond(f) {
  const s = state.series;
  const point = {
    x: f.ts / 1000,
    orders: f.orders_per_sec,
    attempts: f.buy_attempts_per_sec,
    viewers: f.viewers,
    chat: f.chat_per_sec,
    gmv: f.gmv_cents / 100,
    p50: f.buy_latency_ms?.p50 ?? 0,
    p99: f.buy_latency_ms?.p99 ?? 0,
  };
  for (const [k, v] of Object.entries(point)) s[k].push(v);
  if (s.x.length > WINDOW) for (const k of Object.keys(s)) s[k].splice(0, s.x.length - WINDOW);
  drawCharts();

  text($('#fig-viewers'), f.viewers);
  text($('#fig-orders'), f.orders_per_sec);
  text($('#fig-attempts'), f.buy_attempts_per_sec);
  text($('#fig-chat'), f.chat_per_sec);
  text($('#fig-gmv'), money(f.gmv_cents, currency()));
  text($('#fig-p99'), `${ms(point.p99)} / ${ms(point.p50)}`);
  text($('#fig-late'), f.late ?? 0);
  text($('#fig-claims'), f.claims_open ?? 0);
  text($('#fig-refunds'), money(f.refunds_cents ?? 0, currency()));
  renderStock(f.products || []);
}

function renderStock(products) {
  const names = new Map((state.sale?.products || []).map((p) => [p.sku, p.name]));
  // A SKU added since the sale was read: read it again for the name.
  if (products.some((p) => !names.has(p.sku))) loadSale();
  for (const p of products) {
    let r = state.stockRows.get(p.sku);
    if (!r) {
      r = {
        name: h('td'), left: h('td', { class: 'num' }), reserved: h('td', { class: 'num' }), sold: h('td', { class: 'num' }),
        meter: h('meter', { min: 0, 'aria-label': t('ops.left_of_stock_of', { sku: p.sku }) }),
      };
      r.root = h('tr', { 'data-sku': p.sku }, h('td', { class: 'mono' }, p.sku), r.name, r.left, r.reserved, r.sold, h('td', {}, r.meter));
      state.stockRows.set(p.sku, r);
      $('#stock').append(r.root);
    }
    const stock = p.remaining + p.reserved + p.sold;
    text(r.name, names.get(p.sku) || '');
    text(r.left, p.remaining);
    text(r.reserved, p.reserved);
    text(r.sold, p.sold);
    r.meter.max = Math.max(1, stock);
    r.meter.value = p.remaining;
    r.meter.low = stock * 0.2;
    r.meter.high = stock * 0.5;
    r.meter.optimum = stock;
    r.root.dataset.remaining = p.remaining;
  }
}

// ---------------------------------------------------------------- every live sale

function overviewRow(s) {
  let r = state.rows.get(s.id);
  if (!r) {
    r = {
      title: h('button', { class: 'link', type: 'button', onclick: () => choose(s.id) }),
      viewers: h('td', { class: 'num' }, '–'), orders: h('td', { class: 'num' }, '–'), gmv: h('td', { class: 'num' }, '–'),
      late: h('td', { class: 'num late-count' }, '–'), claims: h('td', { class: 'num claims-count' }, '–'), refunds: h('td', { class: 'num' }, '–'),
      failures: h('td', { class: 'num' }, '–'),
    };
    r.root = h('tr', { 'data-sale': s.id }, h('td', {}, r.title), r.viewers, r.orders, r.gmv, r.late, r.claims, r.refunds, r.failures);
    state.rows.set(s.id, r);
  }
  text(r.title, s.title);
  r.root.setAttribute('aria-current', s.id === state.saleId ? 'true' : 'false');
  return r.root;
}

function onFigures(saleId, f) {
  const before = state.latest.get(saleId);
  state.latest.set(saleId, f);
  const r = state.rows.get(saleId);
  const sale = state.sales.find((s) => s.id === saleId);
  const cur = sale?.products?.[0]?.currency || 'CNY';
  if (r) {
    text(r.viewers, number(f.viewers));
    text(r.orders, number(f.orders_per_sec));
    text(r.gmv, money(f.gmv_cents, cur));
    text(r.late, number(f.late ?? 0));
    text(r.claims, number(f.claims_open ?? 0));
    text(r.refunds, money(f.refunds_cents ?? 0, cur));
    // Not in the dashboard's figures yet (docs/pages.md): shown once the
    // stream sends it, a dash until then rather than a made-up zero.
    text(r.failures, f.payment_failures == null ? '–' : number(f.payment_failures));
    r.root.dataset.late = f.late ?? 0;
    r.root.dataset.claims = f.claims_open ?? 0;
  }
  // A rise since the last second is news: the farmer's boxes are waiting or spoiling.
  if (before) {
    for (const [key, field] of [['late', 'late'], ['claims', 'claims_open']]) {
      const was = before[field] ?? 0;
      const now = f[field] ?? 0;
      if (now > was) alert(saleId, key, now - was, now);
      // Back down (shipped, answered): the cell calms down too.
      else if (now < was) r?.[key].classList.remove('rising');
    }
  }
  if (saleId === state.saleId) onSecond(f);
}

function alert(saleId, kind, added, now) {
  const sale = state.sales.find((s) => s.id === saleId);
  const r = state.rows.get(saleId);
  r?.[kind === 'late' ? 'late' : 'claims'].classList.add('rising');
  const li = h('li', { class: `alert ${kind}`, 'data-sale': saleId, 'data-kind': kind },
    h('b', {}, t(`ops.alert.${kind}`, { added, now })), ' · ',
    h('button', { class: 'link', type: 'button', onclick: () => choose(saleId) }, sale?.title || saleId), ' · ',
    h('span', { class: 'muted small' }, new Date().toLocaleTimeString(document.documentElement.lang)));
  const list = $('#alerts');
  list.prepend(li);
  while (list.children.length > ALERTS_KEPT) list.lastElementChild.remove();
}

/** One stream per live sale, up to the server's cap (the chosen sale first). */
function follow() {
  if (!state.token) return;
  const live = new Set(state.sales.map((s) => s.id));
  for (const [id, stop] of state.streams) {
    if (!live.has(id) && id !== state.saleId) {
      stop();
      state.streams.delete(id);
    }
  }
  const wanted = [state.saleId, ...state.sales.map((s) => s.id)].filter((id, i, all) => id && all.indexOf(id) === i);
  for (const id of wanted) {
    if (state.streams.has(id)) continue;
    if (state.streams.size >= MAX_STREAMS) break;
    state.streams.set(id, followEvents(`/sales/${encodeURIComponent(id)}/dashboard`, state.token, (f) => onFigures(id, f), (s, err) => onStream(id, s, err)));
  }
}

function stopAll() {
  for (const stop of state.streams.values()) stop();
  state.streams.clear();
}

async function loadSales() {
  try {
    const { sales } = await api('/sales?status=live');
    state.sales = sales;
    $('#sales').replaceChildren(...sales.map(overviewRow));
    $('#no-sales').hidden = sales.length > 0;
    follow();
  } catch (err) {
    fail(err);
  }
}

/** Callbacks this node refused (forged or misrouted), from its Prometheus text: not per sale. */
async function loadPaymentProblems() {
  try {
    // /metrics is public and outside /api/v1.
    const res = await fetch('/metrics', { cache: 'no-store' });
    if (!res.ok) throw new Error(String(res.status));
    const body = await res.text();
    let refused = 0;
    for (const line of body.split('\n')) {
      if (line.startsWith('lychee_payment_callbacks_refused_total')) refused += Number(line.split(' ').pop()) || 0;
    }
    text($('#payment-problems'), number(refused));
  } catch {
    text($('#payment-problems'), '–');
  }
}

async function loadSale() {
  if (!state.saleId) return;
  try {
    state.sale = await api(`/sales/${encodeURIComponent(state.saleId)}`);
    text($('#title'), state.sale.title);
    document.title = `${state.sale.title} · ${t('ops.page_title')}`;
  } catch (err) {
    fail(err);
  }
}

function onStream(id, s, err) {
  if (id !== state.saleId && s !== 'failed') return;
  if (id === state.saleId) {
    const conn = $('#conn');
    conn.hidden = false;
    conn.className = `conn ${s === 'open' ? 'open' : s === 'connecting' ? 'connecting' : 'failed'}`;
    conn.dataset.state = s;
    text(conn, t(`conn.sse_${s}`));
  }
  if (s === 'failed' && err) {
    state.streams.get(id)?.();
    state.streams.delete(id);
    // The stream ends when the token expires: sign in again.
    if (err.status === 401) state.card?.expired();
    else fail(err);
  }
}

async function choose(id) {
  state.saleId = id;
  history.replaceState(null, '', `/ops?sale=${encodeURIComponent(id)}`);
  for (const [sid, r] of state.rows) r.root.setAttribute('aria-current', String(sid === id));
  if (!state.token) return;
  $('#board').hidden = false;
  $('#viewer-link').href = `/sales/${encodeURIComponent(id)}`;
  $('#host-link').href = `/host/${encodeURIComponent(id)}`;
  state.stockRows.clear();
  $('#stock').replaceChildren();
  state.series = emptySeries();
  state.charts ??= makeCharts();
  drawCharts();
  await loadSale();
  if (!state.streams.has(id)) {
    // Make room: the chosen sale's stream matters most.
    if (state.streams.size >= MAX_STREAMS) {
      const [other, stop] = [...state.streams].find(([sid]) => sid !== id) || [];
      if (other) {
        stop();
        state.streams.delete(other);
      }
    }
    follow();
  } else {
    onStream(id, 'open');
  }
}

$('#csv').addEventListener('click', async () => {
  try {
    await downloadCsv(state.saleId, state.token);
  } catch (err) {
    fail(err);
  }
});

state.card = tokenCard(store, (token) => {
  state.token = token;
  stopAll();
  $('#board').hidden = true;
  loadSales();
  if (token && state.saleId) choose(state.saleId);
}, { roles: ['operator', 'host'] });
setInterval(() => document.visibilityState === 'visible' && loadSales(), 15000);
loadPaymentProblems();
setInterval(() => document.visibilityState === 'visible' && loadPaymentProblems(), 15000);
