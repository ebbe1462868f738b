// `/host`: start a sale or pick one. `/host/{id}`: the host's console.
//
// Products, going live and ending go through REST (their answers carry the
// new state); announcing and moderating exist only on the WebSocket, whose
// events also give the live counts. The API has no list of a sale's orders
// except the CSV packing list, so the console polls `orders.csv`.

import {
  $, h, text, api, apiText, describe, ApiError, tokenStore, tokenCard, claims, idFromPath,
  money, time, badge, LiveRoom, csvRecords, downloadCsv,
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
    fail('Sign in with a host token first.');
    return null;
  }
  try {
    return await api(path, { method, token: state.token, body });
  } catch (err) {
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
        h('div', { class: 'row' }, badge(s.status), s.host_id === me ? h('span', { class: 'badge ok' }, 'yours') : null),
        h('a', { href: `/host/${encodeURIComponent(s.id)}` }, s.title)));
    $('#sale-list').replaceChildren(...items);
    if (!items.length) $('#sale-list').append(h('li', { class: 'muted' }, 'No live or scheduled sale.'));
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
  document.title = `${s.title} · host console`;
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
    status: h('td'),
    left: h('td', { class: 'num' }),
    reserved: h('td', { class: 'num' }),
    sold: h('td', { class: 'num' }),
    open: h('button', { class: 'btn small leaf', type: 'button', onclick: () => productAction(sku, 'open') }, 'Open'),
    close: h('button', { class: 'btn small', type: 'button', onclick: () => productAction(sku, 'close') }, 'Close'),
    pin: h('button', { class: 'btn small', type: 'button', onclick: () => pin(sku) }, 'Pin'),
    add: h('input', { class: 'qty', type: 'number', min: 1, max: 10000000, value: 50, 'aria-label': `Units to add to ${sku}` }),
  };
  const restock = h('form', { class: 'actions', onsubmit: (ev) => { ev.preventDefault(); restockProduct(sku, Number(r.add.value)); } },
    r.open, r.close, r.pin, r.add, h('button', { class: 'btn small', type: 'submit' }, 'Restock'));
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
  text(r.pin, pinned ? 'Pinned' : 'Pin');
  r.pin.disabled = pinned;
  renderTotals();
}

async function productAction(sku, action) {
  const p = await act(sale(`/products/${encodeURIComponent(sku)}/${action}`));
  if (p) {
    upsertProduct(p);
    flash(`${p.name}: ${action === 'open' ? 'on sale' : 'closed'}.`);
  }
}

async function restockProduct(sku, add) {
  if (!Number.isInteger(add) || add < 1) {
    fail('Restock adds 1 or more units.');
    return;
  }
  const p = await act(sale(`/products/${encodeURIComponent(sku)}/restock`), { add });
  if (p) {
    upsertProduct(p);
    flash(`${p.name}: +${add} units.`);
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
  if (!window.confirm('End the sale? Every product closes; open reservations stay payable until they expire.')) return;
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
  flash(`${p.name} added.`);
  form.reset();
  if (f.get('open_now') && state.sale?.status === 'live') await productAction(p.sku, 'open');
});

// ---------------------------------------------------------------- on air and chat

function sendOrWarn(message) {
  if (state.room && state.room.send(message)) return true;
  fail('Not connected to the live room; wait a moment and retry.');
  return false;
}

$('#announce-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('#announce-text');
  const message = input.value.trim();
  if (message && sendOrWarn({ type: 'announce', text: message })) {
    input.value = '';
    flash('Announced.');
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
    h('button', { class: 'btn small', type: 'button', title: 'Delete this message', onclick: () => sendOrWarn({ type: 'delete_chat', seq: m.seq }) }, 'Delete'),
    h('button', { class: 'btn small', type: 'button', title: 'Mute this user', onclick: () => mute(m.user_id, who) }, 'Mute'),
    h('button', { class: 'btn small danger', type: 'button', title: 'Ban this user from the sale', onclick: () => ban(m.user_id, who) }, 'Ban'));
  return h('li', { 'data-seq': m.seq, 'data-user': m.user_id },
    h('span', { class: 'name', title: m.user_id }, who), h('span', { class: 'text' }, m.text), mod);
}

function mute(userId, who) {
  const secs = Number($('#mute-secs').value);
  if (!Number.isInteger(secs) || secs < 1) {
    fail('Mute for 1 s or more.');
    return;
  }
  if (sendOrWarn({ type: 'mute', user_id: userId, secs })) flash(`${who} muted for ${secs} s.`);
}

function ban(userId, who) {
  if (!window.confirm(`Ban ${who} from this sale? They can neither chat, rejoin nor buy.`)) return;
  if (sendOrWarn({ type: 'ban', user_id: userId })) flash(`${who} banned.`);
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
      text($('#slow-note'), ev.slow_mode_secs ? `Slow mode on: ${ev.slow_mode_secs} s.` : 'Slow mode off.');
      if (!['host', 'operator'].includes(ev.you.role)) fail('This token is a viewer\'s: it cannot manage the sale.');
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
      text($('#slow-note'), ev.secs ? `Slow mode on: ${ev.secs} s.` : 'Slow mode off.');
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

function onState(s) {
  const conn = $('#conn');
  conn.hidden = false;
  conn.className = `conn ${s === 'open' ? 'open' : s === 'connecting' ? 'connecting' : 'failed'}`;
  text(conn, { open: 'live room', connecting: 'connecting…', closed: 'reconnecting…', banned: 'banned', unauthorized: 'token refused', stopped: 'offline' }[s] || s);
  if (s === 'unauthorized') fail('The live room refused this token: sign in again.');
}

// ---------------------------------------------------------------- orders (CSV)

async function loadOrders() {
  if (!state.token) return;
  try {
    const rows = csvRecords(await apiText(sale('/orders.csv'), { token: state.token, accept: 'text/csv' }));
    rows.reverse(); // newest first
    $('#orders').replaceChildren(...rows.map((o) =>
      h('tr', { 'data-order': o.order_id },
        h('td', {}, time(o.completed_at)),
        h('td', { class: 'mono' }, o.user_id),
        h('td', { class: 'mono' }, o.sku),
        h('td', { class: 'num' }, o.qty),
        h('td', { class: 'num' }, money(Number(o.total_cents), o.currency)),
        h('td', { class: 'mono' }, o.payment_ref))));
    $('#orders-empty').hidden = rows.length > 0;
    const total = rows.reduce((n, o) => n + Number(o.total_cents), 0);
    const currency = rows[0]?.currency || 'CNY';
    text($('#paid-total'), rows.length ? `${rows.length} (${money(total, currency)})` : '0');
  } catch (err) {
    if (err.status === 401 || err.status === 403) stopOrders();
    fail(err);
  }
}

function stopOrders() {
  clearInterval(state.ordersTimer);
  state.ordersTimer = null;
}

$('#orders-refresh').addEventListener('click', loadOrders);
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
    if (err.status === 404) text($('#title'), 'Sale not found');
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
  state.room = new LiveRoom(saleId, token, onEvent, onState);
  loadOrders();
  state.ordersTimer = setInterval(() => document.visibilityState === 'visible' && loadOrders(), ORDERS_EVERY_MS);
}

if (saleId) {
  $('#console').hidden = false;
  $('#viewer-link').href = `/sales/${encodeURIComponent(saleId)}`;
  await loadSale();
} else {
  $('#lobby').hidden = false;
}
tokenCard(store, connect, { roles: ['host', 'operator'] });
