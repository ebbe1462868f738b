// `/host`: start a sale or pick one. `/host/{id}`: the host's console.
//
// Products, going live and ending go through REST (their answers carry the
// new state); announcing and moderating exist only on the WebSocket, whose
// events also give the live counts. The API has no list of a sale's orders
// except the CSV exports, so the console polls `orders.csv` and reads each
// new order once (`GET /orders/{id}`) for its fulfilment and refunds.
// Fulfilment (packing list, slips, the courier's waybill sheet, delivered),
// the claims queue and refunds are made for a phone in an orchard: large
// buttons, one column at 360 px.

import {
  $, h, t, text, api, apiText, apiBlob, describe, ApiError, tokenStore, tokenCard, claims, idFromPath,
  money, time, dateTime, badge, LiveRoom, csvRecords, downloadCsv, randomId,
} from './common.js';

const saleId = idFromPath();
const store = tokenStore('host');
const ORDERS_EVERY_MS = 5000;

const state = {
  token: null,
  room: null,
  sale: null,
  products: new Map(), // sku -> Product
  vers: new Map(), // sku -> last stock `ver`
  rows: new Map(), // sku -> table row elements
  ordersTimer: null,
  csvRows: [], // orders.csv, newest first
  details: new Map(), // order id -> Order
  claimEls: new Map(), // claim id -> { el, status }
  photoUrls: new Map(), // upload url -> blob: URL
  card: null, // the sign-in card, told when the server refuses the token
};

const sale = (path = '') => `/sales/${encodeURIComponent(saleId)}${path}`;

let flashTimer;
function flash(message) {
  text($('#flash'), message);
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => text($('#flash'), ''), 4000);
}

let errorTimer;
function fail(err) {
  text($('#error'), typeof err === 'string' ? err : describe(err));
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => text($('#error'), ''), 10000);
}

/** Runs a REST action with the host's token, reporting its failure. */
async function act(path, body, method = 'POST') {
  if (!state.token) {
    fail(t('host.sign_in_first'));
    return null;
  }
  try {
    return await api(path, { method, token: state.token, body });
  } catch (err) {
    if (err.status === 401) state.card?.expired();
    fail(err);
    return null;
  }
}

// ---------------------------------------------------------------- lobby (/host)

async function loadLobby() {
  try {
    const [live, scheduled] = await Promise.all([api('/sales?status=live'), api('/sales?status=scheduled')]);
    const me = state.token ? claims(state.token)?.sub : null;
    const items = [...live.sales, ...scheduled.sales].map((s) =>
      h('li', { class: 'sale-item' },
        h('div', { class: 'row' }, badge(s.status), s.host_id === me ? h('span', { class: 'badge ok' }, t('host.yours')) : null),
        h('a', { href: `/host/${encodeURIComponent(s.id)}` }, s.title)));
    $('#sale-list').replaceChildren(...items);
    if (!items.length) $('#sale-list').append(h('li', { class: 'muted' }, t('host.no_sales')));
  } catch (err) {
    fail(err);
  }
}

$('#sale-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = {
    title: f.get('title').trim(),
    checkout: f.get('checkout'),
    reservation_ttl_secs: Number(f.get('reservation_ttl_secs')) || undefined,
  };
  const description = f.get('description').trim();
  if (description) body.description = description;
  const stream = f.get('stream_url').trim();
  if (stream) body.stream_url = stream;
  const created = await act('/sales', body);
  if (created) location.assign(`/host/${encodeURIComponent(created.id)}`);
});

// ---------------------------------------------------------------- the sale

function renderSale(s) {
  state.sale = s;
  document.title = `${s.title} · ${t('host.page_title')}`;
  text($('#title'), s.title);
  $('#status').replaceChildren(badge(s.status));
  $('#start').hidden = s.status !== 'scheduled';
  $('#end').hidden = s.status !== 'live';
  for (const p of s.products || []) upsertProduct(p);
  for (const sku of state.products.keys()) renderProduct(sku);
}

function upsertProduct(p) {
  state.products.set(p.sku, { ...state.products.get(p.sku), ...p });
  renderProduct(p.sku);
}

function renderTotals() {
  let reserved = 0;
  let sold = 0;
  for (const p of state.products.values()) {
    reserved += p.reserved || 0;
    sold += p.sold || 0;
  }
  text($('#reserved'), reserved);
  text($('#sold'), sold);
}

function productRow(sku) {
  const r = {
    name: h('b'),
    price: h('span', { class: 'muted small' }),
    // The labels head each figure when a phone shows the rows as cards.
    status: h('td'),
    left: h('td', { class: 'num', 'data-label': t('host.col_left') }),
    reserved: h('td', { class: 'num', 'data-label': t('host.col_reserved') }),
    sold: h('td', { class: 'num', 'data-label': t('host.col_sold') }),
    open: h('button', { class: 'btn small leaf', type: 'button', 'data-action': 'open', onclick: () => productAction(sku, 'open') }, t('host.open')),
    close: h('button', { class: 'btn small', type: 'button', 'data-action': 'close', onclick: () => productAction(sku, 'close') }, t('host.close')),
    pin: h('button', { class: 'btn small', type: 'button', 'data-action': 'pin', onclick: () => pin(sku) }, t('host.pin')),
    add: h('input', { class: 'qty', type: 'number', min: 1, max: 10000000, value: 50, inputmode: 'numeric', 'aria-label': t('host.units_to_add', { sku }) }),
  };
  const restock = h('form', { class: 'actions', onsubmit: (ev) => { ev.preventDefault(); restockProduct(sku, Number(r.add.value)); } },
    r.open, r.close, r.pin, r.add, h('button', { class: 'btn small', type: 'submit', 'data-action': 'restock' }, t('host.restock')));
  r.root = h('tr', { 'data-sku': sku },
    h('td', {}, r.name, h('br'), h('span', { class: 'mono' }, sku), ' ', r.price),
    r.status, r.left, r.reserved, r.sold, h('td', {}, restock));
  return r;
}

function renderProduct(sku) {
  const p = state.products.get(sku);
  let r = state.rows.get(sku);
  if (!r) {
    r = productRow(sku);
    state.rows.set(sku, r);
    $('#products').append(r.root);
  }
  text(r.name, p.name);
  text(r.price, money(p.price_cents, p.currency));
  r.status.replaceChildren(badge(p.status));
  text(r.left, `${p.remaining} / ${p.stock}`);
  text(r.reserved, p.reserved);
  text(r.sold, p.sold);
  r.root.dataset.status = p.status;
  r.root.dataset.remaining = p.remaining;
  const live = state.sale?.status === 'live';
  const pinned = state.sale?.pinned_sku === sku;
  r.open.hidden = !(p.status === 'scheduled' || p.status === 'closed');
  r.open.disabled = !live;
  r.close.hidden = !(p.status === 'on_sale' || p.status === 'sold_out');
  text(r.pin, pinned ? t('host.pinned') : t('host.pin'));
  r.pin.disabled = pinned;
  renderTotals();
}

async function productAction(sku, action) {
  const p = await act(sale(`/products/${encodeURIComponent(sku)}/${action}`));
  if (p) {
    upsertProduct(p);
    flash(t(action === 'open' ? 'host.flash_opened' : 'host.flash_closed', { name: p.name }));
  }
}

async function restockProduct(sku, add) {
  if (!Number.isInteger(add) || add < 1) {
    fail(t('host.restock_invalid'));
    return;
  }
  const p = await act(sale(`/products/${encodeURIComponent(sku)}/restock`), { add });
  if (p) {
    upsertProduct(p);
    flash(t('host.flash_restocked', { name: p.name, add }));
  }
}

async function pin(sku) {
  const s = await act(sale('/pin'), { sku });
  if (s) renderSale(s);
}

$('#start').addEventListener('click', async () => {
  const s = await act(sale('/start'));
  if (s) renderSale(s);
});

$('#end').addEventListener('click', async () => {
  if (!window.confirm(t('host.confirm_end'))) return;
  const s = await act(sale('/end'));
  if (s) renderSale(s);
});

$('#product-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const f = new FormData(form);
  const body = {
    sku: f.get('sku').trim(),
    name: f.get('name').trim(),
    // Prices are typed in units; the API counts cents.
    price_cents: Math.round(Number(f.get('price')) * 100),
    currency: f.get('currency').trim() || undefined,
    stock: Number(f.get('stock')),
    per_user_limit: Number(f.get('per_user_limit')) || undefined,
    ships_by: f.get('ships_by') || undefined,
  };
  const p = await act(sale('/products'), body);
  if (!p) return;
  upsertProduct(p);
  flash(t('host.flash_added', { name: p.name }));
  form.reset();
  if (f.get('open_now') && state.sale?.status === 'live') await productAction(p.sku, 'open');
});

// ---------------------------------------------------------------- on air and chat

function sendOrWarn(message) {
  if (state.room && state.room.send(message)) return true;
  fail(t('chat.not_connected'));
  return false;
}

$('#announce-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('#announce-text');
  const message = input.value.trim();
  if (message && sendOrWarn({ type: 'announce', text: message })) {
    input.value = '';
    flash(t('host.flash_announced'));
  }
});

$('#slow-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sendOrWarn({ type: 'slow_mode', secs: Number($('#slow-secs').value) || 0 });
});

$('#chat-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('#chat-text');
  const message = input.value.trim();
  if (message && sendOrWarn({ type: 'chat', text: message })) input.value = '';
});

function chatItem(m) {
  const mine = state.token && claims(state.token)?.sub === m.user_id;
  const who = m.name || m.user_id;
  const mod = mine ? null : h('span', { class: 'mod' },
    h('button', { class: 'btn small', type: 'button', 'data-action': 'delete', title: t('host.delete_title'), onclick: () => sendOrWarn({ type: 'delete_chat', seq: m.seq }) }, t('host.delete')),
    h('button', { class: 'btn small', type: 'button', 'data-action': 'mute', title: t('host.mute_title'), onclick: () => mute(m.user_id, who) }, t('host.mute')),
    h('button', { class: 'btn small danger', type: 'button', 'data-action': 'ban', title: t('host.ban_title'), onclick: () => ban(m.user_id, who) }, t('host.ban')));
  return h('li', { 'data-seq': m.seq, 'data-user': m.user_id },
    h('span', { class: 'name', title: m.user_id }, who), h('span', { class: 'text' }, m.text), mod);
}

function mute(userId, who) {
  const secs = Number($('#mute-secs').value);
  if (!Number.isInteger(secs) || secs < 1) {
    fail(t('host.mute_invalid'));
    return;
  }
  if (sendOrWarn({ type: 'mute', user_id: userId, secs })) flash(t('host.flash_muted', { who, secs }));
}

function ban(userId, who) {
  if (!window.confirm(t('host.confirm_ban', { who }))) return;
  if (sendOrWarn({ type: 'ban', user_id: userId })) flash(t('host.flash_banned', { who }));
}

function addChat(messages, replace = false) {
  const list = $('#chat');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  if (replace) list.replaceChildren();
  const have = new Set([...list.children].map((li) => li.dataset.seq));
  for (const m of messages) if (!have.has(String(m.seq))) list.append(chatItem(m));
  while (list.children.length > 300) list.firstElementChild.remove();
  if (atBottom || replace) list.scrollTop = list.scrollHeight;
}

let welcomed = false;

function onEvent(ev) {
  switch (ev.type) {
    case 'welcome':
      state.vers.clear();
      renderSale(ev.sale);
      text($('#viewers'), ev.viewers);
      addChat(ev.chat || [], !welcomed);
      welcomed = true;
      $('#slow-secs').value = ev.slow_mode_secs;
      text($('#slow-note'), ev.slow_mode_secs ? t('host.slow_on', { secs: ev.slow_mode_secs }) : t('host.slow_off'));
      if (!['host', 'operator'].includes(ev.you.role)) fail(t('host.viewer_token'));
      break;
    case 'chat':
      addChat([ev]);
      break;
    case 'chat_deleted':
      $(`#chat li[data-seq="${Number(ev.seq)}"]`)?.remove();
      break;
    case 'stock': {
      const p = state.products.get(ev.sku);
      if (!p || (ev.ver != null && ev.ver < (state.vers.get(ev.sku) ?? -1))) break;
      if (ev.ver != null) state.vers.set(ev.sku, ev.ver);
      for (const k of ['stock', 'remaining', 'reserved', 'sold', 'status']) if (ev[k] != null) p[k] = ev[k];
      renderProduct(ev.sku);
      break;
    }
    case 'product':
      upsertProduct(ev.product);
      break;
    case 'pinned':
      state.sale.pinned_sku = ev.sku;
      for (const sku of state.products.keys()) renderProduct(sku);
      break;
    case 'viewers':
      text($('#viewers'), ev.count);
      break;
    case 'sale':
      renderSale({ ...state.sale, status: ev.status, products: [] });
      break;
    case 'slow_mode':
      $('#slow-secs').value = ev.secs;
      text($('#slow-note'), ev.secs ? t('host.slow_on', { secs: ev.secs }) : t('host.slow_off'));
      break;
    case 'error':
      fail(describe(new ApiError(0, ev.code, ev.message, ev)));
      break;
    case 'lagged':
      loadSale();
      break;
    default:
      // `announcement` (shown by `flash` when sent), `order`, `pong`, later types.
      break;
  }
}

function onState(s, attempt) {
  const conn = $('#conn');
  conn.hidden = false;
  conn.className = `conn ${s === 'open' ? 'open' : s === 'connecting' ? 'connecting' : 'failed'}`;
  conn.dataset.state = s;
  text(conn, s === 'closed' ? t('conn.closed', { attempt: attempt || 1 }) : t(`conn.${s}`));
  // Expired (4001) or refused: sign in again, not a retry loop.
  if (s === 'unauthorized') state.card?.expired();
}

// ---------------------------------------------------------------- fulfilment

/** Orders whose details (fulfilment, shipment, refunds) the console keeps. */
const DETAILS_MAX = 200;

function yuanToCents(v) {
  const n = Number(String(v).trim());
  return Number.isFinite(n) && n > 0 ? Math.round(n * 100) : null;
}

async function loadOrders() {
  if (!state.token) return;
  try {
    const rows = csvRecords(await apiText(sale('/orders.csv'), { token: state.token, accept: 'text/csv' }));
    rows.reverse(); // newest first
    state.csvRows = rows.slice(0, DETAILS_MAX);
    const total = rows.reduce((n, o) => n + Number(o.total_cents), 0);
    const currency = rows[0]?.currency || 'CNY';
    text($('#paid-total'), rows.length ? `${rows.length} (${money(total, currency)})` : '0');
    // Details of orders not seen yet; the others change through this console.
    const fresh = state.csvRows.filter((o) => !state.details.has(o.order_id));
    await refreshDetails(fresh.map((o) => o.order_id));
    renderOrders();
  } catch (err) {
    if (err.status === 401 || err.status === 403) stopOrders();
    fail(err);
  }
}

/** Reads orders four at a time: a phone on a farm's mobile data is slow. */
async function refreshDetails(ids) {
  const queue = [...ids];
  const worker = async () => {
    while (queue.length) {
      const id = queue.shift();
      try {
        state.details.set(id, await api(`/orders/${encodeURIComponent(id)}`, { token: state.token }));
      } catch {
        // Shown from its CSV row until the next refresh.
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

function renderOrders() {
  const items = state.csvRows.map((row) => orderRow(row, state.details.get(row.order_id)));
  $('#orders').replaceChildren(...items);
  $('#orders-empty').hidden = items.length > 0;
}

function orderRow(row, o) {
  const f = o?.fulfilment || 'unfulfilled';
  const name = state.products.get(row.sku)?.name || row.sku;
  const error = h('p', { class: 'notice error', role: 'alert' });
  const actions = h('div', { class: 'row' });
  if (o && f === 'unfulfilled' && o.ship_to) actions.append(h('button', { class: 'btn big', type: 'button', 'data-action': 'packed', onclick: () => moveOrder(o, 'packed', error) }, t('host.mark_packed')));
  if (o && f === 'shipped') actions.append(h('button', { class: 'btn leaf big', type: 'button', 'data-action': 'delivered', onclick: () => moveOrder(o, 'delivered', error) }, t('host.mark_delivered')));
  const paid = o?.payment?.paid_cents ?? Number(row.total_cents);
  const refunded = o?.payment?.refunded_cents ?? 0;
  let refundForm = null;
  if (o && paid - refunded > 0) {
    const amount = h('input', { name: 'amount', type: 'number', min: 0.01, step: 0.01, inputmode: 'decimal', value: ((paid - refunded) / 100).toFixed(2), required: true });
    const reason = h('input', { name: 'reason', maxlength: 200, required: true });
    refundForm = h('form', { class: 'form-grid refund-form', hidden: true },
      h('label', {}, t('host.refund_amount'), amount),
      h('label', {}, t('host.refund_reason'), reason),
      h('div', { class: 'wide' }, h('button', { class: 'btn danger big', type: 'submit' }, t('host.refund_submit'))));
    refundForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      refund(o, yuanToCents(amount.value), reason.value.trim(), error);
    });
    actions.append(h('button', { class: 'btn big', type: 'button', 'data-action': 'refund', onclick: () => { refundForm.hidden = !refundForm.hidden; amount.focus(); } }, t('host.refund')));
  }
  const s = o?.shipment;
  return h('li', { class: 'order', 'data-order': row.order_id, 'data-fulfilment': f },
    h('div', { class: 'row spread' }, h('b', { class: 'grow' }, `${row.qty} × ${name}`), badge(f, 'fulfilment')),
    h('div', { class: 'row muted small' },
      h('span', {}, time(row.completed_at)), h('span', {}, money(Number(row.total_cents), row.currency)),
      refunded ? h('span', { class: 'refunded' }, t('host.refunded', { amount: money(refunded, row.currency) })) : null,
      h('span', { class: 'mono' }, row.order_id.slice(0, 8))),
    o?.ship_to ? h('p', { class: 'small addr' }, [o.ship_to.name, o.ship_to.phone, o.ship_to.city, o.ship_to.line].filter(Boolean).join(' ')) : h('p', { class: 'small notice warn' }, t('orders.no_address')),
    s ? h('p', { class: 'small' }, t('journey.courier', { courier: s.courier }), ' · ', h('span', { class: 'mono' }, s.waybill)) : null,
    actions, refundForm, error);
}

async function moveOrder(o, status, error) {
  text(error, '');
  try {
    const moved = await api(`/orders/${encodeURIComponent(o.id)}/fulfilment`, { method: 'POST', token: state.token, body: { status } });
    state.details.set(o.id, moved);
    renderOrders();
    flash(t(`host.moved.${status}`));
  } catch (err) {
    text(error, describe(err));
  }
}

async function refund(o, cents, reason, error) {
  text(error, '');
  if (!cents || !reason) {
    text(error, t('host.refund_invalid'));
    return;
  }
  try {
    const r = await api(`/orders/${encodeURIComponent(o.id)}/refunds`, {
      method: 'POST', token: state.token, body: { amount_cents: cents, reason }, idempotencyKey: randomId(),
    });
    flash(t('host.refund_done', { amount: money(r.amount_cents, r.currency), status: t(`refund.${r.status}`) }));
    await refreshDetails([o.id]);
    renderOrders();
  } catch (err) {
    text(error, describe(err));
  }
}

$('#waybill-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const file = $('#waybill-file').files[0];
  if (!file) return;
  const button = ev.submitter;
  if (button) button.disabled = true;
  try {
    const res = await api(sale('/shipments'), { method: 'POST', token: state.token, raw: await file.text(), contentType: 'text/csv' });
    $('#waybill-result').hidden = false;
    text($('#waybill-summary'), t('host.waybill_summary', { shipped: res.shipped, unchanged: res.unchanged, errors: res.errors.length }));
    $('#waybill-summary').className = `notice ${res.errors.length ? 'warn' : 'ok'}`;
    const table = $('#waybill-errors');
    table.hidden = res.errors.length === 0;
    table.tBodies[0].replaceChildren(...res.errors.map((e) =>
      h('tr', { 'data-row': e.row },
        h('td', { class: 'num' }, e.row),
        h('td', { class: 'mono' }, e.order_id || ''),
        h('td', {}, describe(new ApiError(0, e.code, e.message))))));
    $('#waybill-file').value = '';
    await refreshDetails(state.csvRows.map((o) => o.order_id));
    renderOrders();
  } catch (err) {
    fail(err);
  } finally {
    if (button) button.disabled = false;
  }
});

$('#packing-download').addEventListener('click', async () => {
  try {
    await downloadCsv(saleId, state.token, 'packing');
  } catch (err) {
    fail(err);
  }
});

// ---------------------------------------------------------------- claims

async function loadClaims() {
  if (!state.token) return;
  try {
    const { claims: list } = await api(sale('/claims'), { token: state.token });
    // Open ones first: they are the farmer's to do.
    list.sort((a, b) => (a.status === 'open') === (b.status === 'open') ? 0 : a.status === 'open' ? -1 : 1);
    const known = new Set(list.map((c) => c.id));
    for (const id of state.claimEls.keys()) if (!known.has(id)) state.claimEls.delete(id);
    $('#claims').replaceChildren(...list.map(claimRow));
    $('#claims-empty').hidden = list.length > 0;
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) fail(err);
  }
}

function claimRow(c) {
  // A claim being answered keeps its element (and what was typed in it).
  const kept = state.claimEls.get(c.id);
  if (kept && kept.status === c.status) return kept.el;
  const error = h('p', { class: 'notice error', role: 'alert' });
  const photos = h('div', { class: 'photos' });
  for (const url of c.photos || []) showPhoto(photos, url);
  let answer = null;
  if (c.status === 'open') {
    const o = state.details.get(c.order_id);
    const unit = o ? o.unit_price_cents : 0;
    const amount = h('input', { name: 'refund', type: 'number', min: 0.01, step: 0.01, inputmode: 'decimal', value: unit ? ((unit * c.qty_affected) / 100).toFixed(2) : '' });
    const note = h('input', { name: 'note', maxlength: 500 });
    answer = h('div', { class: 'stack' },
      h('label', {}, t('host.claim_refund_amount'), amount),
      h('label', {}, t('host.claim_note'), note),
      h('div', { class: 'row' },
        h('button', { class: 'btn primary big', type: 'button', 'data-action': 'refund', onclick: () => resolve(c, { action: 'refund', refund_cents: yuanToCents(amount.value), note: note.value.trim() || undefined }, error) }, t('host.claim_refund')),
        h('button', { class: 'btn big', type: 'button', 'data-action': 'reship', onclick: () => resolve(c, { action: 'reship', note: note.value.trim() || undefined }, error) }, t('host.claim_reship')),
        h('button', { class: 'btn danger big', type: 'button', 'data-action': 'reject', onclick: () => {
          if (!note.value.trim()) { text(error, t('host.claim_reject_needs_note')); note.focus(); return; }
          resolve(c, { action: 'reject', note: note.value.trim() }, error);
        } }, t('host.claim_reject'))));
  }
  const res = c.resolution;
  const el = h('li', { class: 'claim', 'data-claim': c.id, 'data-status': c.status, 'data-order': c.order_id },
    h('div', { class: 'row spread' }, h('b', {}, t(`claim.kind.${c.kind}`), ` × ${c.qty_affected}`), badge(c.status, 'claim.status')),
    h('p', { class: 'small muted' }, t('host.claim_order', { order: c.order_id.slice(0, 8) }), ' · ', dateTime(c.created_at)),
    h('p', { class: 'pre-line' }, c.description),
    photos,
    res ? h('p', { class: 'outcome' }, res.action === 'refund' ? t('claim.outcome.refund', { amount: money(res.refund_cents || 0) })
      : res.action === 'reship' ? t('claim.outcome.reship') : t('claim.outcome.reject'), res.note ? ` · ${res.note}` : '') : null,
    answer, error);
  state.claimEls.set(c.id, { el, status: c.status });
  return el;
}

async function resolve(c, body, error) {
  text(error, '');
  if (body.action === 'refund' && !body.refund_cents) {
    text(error, t('host.refund_invalid'));
    return;
  }
  try {
    await api(`/claims/${encodeURIComponent(c.id)}/resolve`, { method: 'POST', token: state.token, body });
    flash(t(`host.claim_done.${body.action}`));
    state.claimEls.delete(c.id);
    await loadClaims();
    await refreshDetails([c.order_id]);
    renderOrders();
  } catch (err) {
    text(error, describe(err));
  }
}

/** A claim's photo, fetched with the host's token, shown from a blob: URL. */
async function showPhoto(container, url) {
  if (!url.startsWith('/api/v1/uploads/')) return;
  try {
    let src = state.photoUrls.get(url);
    if (!src) {
      src = URL.createObjectURL(await apiBlob(url, { token: state.token }));
      state.photoUrls.set(url, src);
    }
    const img = h('img', { src, alt: t('claim.photo'), class: 'photo' });
    container.append(h('a', { href: src, target: '_blank', rel: 'noopener' }, img));
  } catch {
    // A photo that cannot be read leaves the claim readable.
  }
}

function stopOrders() {
  clearInterval(state.ordersTimer);
  state.ordersTimer = null;
}

$('#orders-refresh').addEventListener('click', async () => {
  await refreshDetails(state.csvRows.map((o) => o.order_id));
  await loadOrders();
});
$('#claims-refresh').addEventListener('click', loadClaims);
$('#orders-download').addEventListener('click', async () => {
  try {
    await downloadCsv(saleId, state.token);
  } catch (err) {
    fail(err);
  }
});

// ---------------------------------------------------------------- start

async function loadSale() {
  try {
    renderSale(await api(sale()));
  } catch (err) {
    if (err.status === 404) text($('#title'), t('viewer.not_found_title'));
    fail(err);
  }
}

function connect(token) {
  state.token = token;
  state.room?.stop();
  state.room = null;
  stopOrders();
  if (!saleId) {
    loadLobby();
    return;
  }
  if (!token) return;
  welcomed = false;
  state.details.clear();
  state.room = new LiveRoom(saleId, token, onEvent, onState);
  loadOrders();
  loadClaims();
  state.ordersTimer = setInterval(() => {
    if (document.visibilityState !== 'visible') return;
    loadOrders();
    loadClaims();
  }, ORDERS_EVERY_MS);
}

if (saleId) {
  $('#console').hidden = false;
  $('#viewer-link').href = `/sales/${encodeURIComponent(saleId)}`;
  $('#slips-link').href = `/host/${encodeURIComponent(saleId)}/slips`;
  await loadSale();
} else {
  $('#lobby').hidden = false;
}
state.card = tokenCard(store, connect, { roles: ['host', 'operator'] });
