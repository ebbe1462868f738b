// `/ops`: the operators' dashboard. Live sales; for the chosen one, the
// per-second figures of `GET /sales/{id}/dashboard` (SSE, read with fetch
// because EventSource cannot send the Authorization header), charted with
// uPlot, the stock per SKU, and the CSV export.

import {
  $, h, text, api, describe, tokenStore, tokenCard, money, followEvents, downloadCsv,
} from './common.js';

const store = tokenStore('ops');
/** Points kept per chart: five minutes at one a second. */
const WINDOW = 300;
const CHART_HEIGHT = 170;

const state = {
  token: null,
  saleId: new URLSearchParams(location.search).get('sale'),
  sale: null,
  stop: null,
  charts: null,
  series: null, // { x: [], orders: [], ... } parallel arrays
  stockRows: new Map(),
};

let errorTimer;
function fail(err) {
  text($('#error'), typeof err === 'string' ? err : describe(err));
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => text($('#error'), ''), 10000);
}

const currency = () => state.sale?.products?.[0]?.currency || 'CNY';
const int = (v) => String(Math.round(v));
const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
/** Whole-number tick steps, so a chart of counts never labels 0.5. */
const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8, 1e9];
const ms = (v) => (v >= 100 ? int(v) : v.toFixed(1));

// ---------------------------------------------------------------- charts

const CHARTS = {
  orders: {
    el: '#chart-orders',
    lines: [
      { key: 'orders', label: 'completed/s', stroke: '#c2274a', fill: 'rgba(194,39,74,0.10)' },
      { key: 'attempts', label: 'buy attempts/s', stroke: '#a65d00' },
    ],
    fmt: int,
    whole: true,
  },
  viewers: { el: '#chart-viewers', lines: [{ key: 'viewers', label: 'viewers', stroke: '#2f7d4f', fill: 'rgba(47,125,79,0.10)' }], fmt: int, whole: true },
  chat: { el: '#chart-chat', lines: [{ key: 'chat', label: 'messages/s', stroke: '#3b5bdb' }], fmt: int, whole: true },
  gmv: { el: '#chart-gmv', lines: [{ key: 'gmv', label: 'GMV (currency units)', stroke: '#9c1c3a', fill: 'rgba(156,28,58,0.08)' }], fmt: (v) => compact.format(v) },
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
        meter: h('meter', { min: 0, 'aria-label': `${p.sku} left of stock` }),
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

// ---------------------------------------------------------------- sales

async function loadSales() {
  try {
    const { sales } = await api('/sales?status=live');
    $('#sales').replaceChildren(...sales.map((s) =>
      h('button', { class: 'btn small', type: 'button', 'data-sale': s.id, 'aria-pressed': String(s.id === state.saleId), onclick: () => choose(s.id) }, s.title)));
    $('#no-sales').hidden = sales.length > 0;
  } catch (err) {
    fail(err);
  }
}

async function loadSale() {
  if (!state.saleId) return;
  try {
    state.sale = await api(`/sales/${encodeURIComponent(state.saleId)}`);
    text($('#title'), state.sale.title);
    document.title = `${state.sale.title} · operators`;
  } catch (err) {
    fail(err);
  }
}

function onStream(s, err) {
  const conn = $('#conn');
  conn.hidden = false;
  conn.className = `conn ${s === 'open' ? 'open' : s === 'connecting' ? 'connecting' : 'failed'}`;
  text(conn, { open: 'streaming', connecting: 'connecting…', closed: 'reconnecting…', failed: 'refused' }[s] || s);
  if (err) fail(err);
}

async function choose(id) {
  state.stop?.();
  state.stop = null;
  state.saleId = id;
  history.replaceState(null, '', `/ops?sale=${encodeURIComponent(id)}`);
  for (const b of $('#sales').children) b.setAttribute('aria-pressed', String(b.dataset.sale === id));
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
  state.stop = followEvents(`/sales/${encodeURIComponent(id)}/dashboard`, state.token, onSecond, onStream);
}

$('#csv').addEventListener('click', async () => {
  try {
    await downloadCsv(state.saleId, state.token);
  } catch (err) {
    fail(err);
  }
});

tokenCard(store, (token) => {
  state.token = token;
  state.stop?.();
  state.stop = null;
  $('#board').hidden = true;
  loadSales();
  if (token && state.saleId) choose(state.saleId);
}, { roles: ['operator', 'host'] });
setInterval(() => document.visibilityState === 'visible' && loadSales(), 15000);
