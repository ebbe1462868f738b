// `/sales/{id}`: the viewer's page. Watch, chat, see the stock fall, buy, pay.
//
// State comes from the sale's WebSocket (the `welcome` frame, then events);
// before signing in, from the public `GET /sales/{id}`. Buys go over the
// socket with a `ref`, or over REST with the same value as `Idempotency-Key`
// when the socket is down or slow: the two share one key space, so a buy
// retried the other way is still one order.

import {
  $, h, text, api, describe, ApiError, tokenStore, claims, usable, idFromPath, randomId,
  money, clock, time, badge, serverNow, showVideo, LiveRoom, STATUS_LABEL,
} from './common.js';

const saleId = idFromPath();
const store = tokenStore('viewer');
/** How long a socket buy may wait for its answer before it is retried over REST. */
const BUY_WAIT_MS = 8000;
const CHAT_KEEP = 300;

const state = {
  token: null,
  room: null,
  sale: null,
  welcomed: false,
  products: new Map(), // sku -> Product
  vers: new Map(), // sku -> `ver` of the last stock event applied
  cards: new Map(), // sku -> the product's elements
  orders: new Map(), // id -> { order, elements }
  pending: new Map(), // buy ref -> { sku, qty, timer, rest }
  banned: false,
};

// ---------------------------------------------------------------- the sale

function renderSale(sale) {
  state.sale = sale;
  document.title = `${sale.title} · lychee-live`;
  text($('#title'), sale.title);
  text($('#description'), sale.description || '');
  renderStatus();
  showVideo($('#video'), sale.stream_url);
  for (const p of sale.products || []) upsertProduct(p);
  renderPinned();
}

function renderStatus() {
  const status = state.sale.status;
  $('#status').replaceChildren(badge(status));
  if (status === 'ended') showError('This sale has ended. Reservations stay payable until their countdown ends.');
  for (const sku of state.products.keys()) renderProduct(sku);
}

function upsertProduct(p) {
  const known = state.products.get(p.sku);
  state.products.set(p.sku, { ...known, ...p });
  renderProduct(p.sku);
  if (state.sale && state.sale.pinned_sku === p.sku) renderPinned();
}

/** A `stock` event: the live counts of one SKU. Older levels (lower `ver`) are dropped. */
function applyStock(ev) {
  const p = state.products.get(ev.sku);
  if (!p) return;
  if (ev.ver != null) {
    if (ev.ver < (state.vers.get(ev.sku) ?? -1)) return;
    state.vers.set(ev.sku, ev.ver);
  }
  for (const k of ['stock', 'remaining', 'reserved', 'sold', 'status']) if (ev[k] != null) p[k] = ev[k];
  renderProduct(ev.sku);
  if (state.sale.pinned_sku === ev.sku) renderPinned();
}

function canBuy(p) {
  return !!state.token && !state.banned && state.sale?.status === 'live' && p.status === 'on_sale';
}

function productCard(sku) {
  const c = {
    name: h('h3'),
    price: h('span', { class: 'price' }),
    ships: h('p', { class: 'muted small' }),
    meter: h('meter', { min: 0, 'aria-label': 'Stock left' }),
    status: h('span'),
    left: h('span', { class: 'left' }),
    qty: h('input', { class: 'qty', type: 'number', min: 1, value: 1, inputmode: 'numeric', 'aria-label': 'Quantity' }),
    buy: h('button', { class: 'btn primary', type: 'submit' }, 'Buy'),
    note: h('p', { class: 'notice', role: 'status' }),
    busy: false,
  };
  const form = h('form', { class: 'buy-form', onsubmit: (ev) => { ev.preventDefault(); buy(sku); } }, c.qty, c.buy);
  c.root = h('li', { class: 'product', id: `p-${sku}`, 'data-sku': sku },
    h('div', { class: 'product-head' }, c.name, c.price), c.ships, c.meter,
    h('div', { class: 'buy-row' }, h('p', { class: 'stock-line' }, c.status, c.left), form), c.note);
  return c;
}

function renderProduct(sku) {
  const p = state.products.get(sku);
  let c = state.cards.get(sku);
  if (!c) {
    c = productCard(sku);
    state.cards.set(sku, c);
    $('#products').append(c.root);
  }
  text(c.name, p.name);
  text(c.price, money(p.price_cents, p.currency));
  text(c.ships, p.ships_by ? `Ships by ${p.ships_by}` : '');
  c.ships.hidden = !p.ships_by;
  c.meter.max = Math.max(1, p.stock);
  c.meter.value = p.remaining;
  c.meter.low = p.stock * 0.2;
  c.meter.high = p.stock * 0.5;
  c.meter.optimum = p.stock;
  text(c.left, `${p.remaining} of ${p.stock} left`);
  c.status.replaceChildren(badge(p.status));
  c.qty.max = p.per_user_limit;
  c.root.dataset.remaining = p.remaining;
  c.root.dataset.status = p.status;
  c.root.classList.toggle('pinned', state.sale?.pinned_sku === sku);
  c.buy.disabled = c.busy || !canBuy(p);
  c.buy.title = state.token ? STATUS_LABEL[p.status] || '' : 'Join the sale to buy';
}

function renderPinned() {
  const sku = state.sale?.pinned_sku;
  const p = sku && state.products.get(sku);
  $('#pinned').hidden = !p;
  for (const [s, c] of state.cards) c.root.classList.toggle('pinned', s === sku);
  if (!p) return;
  text($('#pinned-name'), p.name);
  text($('#pinned-price'), money(p.price_cents, p.currency));
  text($('#pinned-left'), `${p.remaining} of ${p.stock} left · ${STATUS_LABEL[p.status] || p.status}`);
  $('#pinned').dataset.sku = sku;
}

$('#pinned-go').addEventListener('click', (ev) => {
  ev.preventDefault();
  const c = state.cards.get(state.sale?.pinned_sku);
  if (!c) return;
  c.root.scrollIntoView({ behavior: 'smooth', block: 'center' });
  c.qty.focus({ preventScroll: true });
});

function showError(message) {
  text($('#error'), message);
}

// ---------------------------------------------------------------- buying

function note(sku, kind, message) {
  const c = state.cards.get(sku);
  if (!c) return;
  c.note.className = `notice ${kind}`;
  text(c.note, message);
}

function setBusy(sku, busy) {
  const c = state.cards.get(sku);
  if (!c) return;
  c.busy = busy;
  renderProduct(sku);
}

function buy(sku) {
  const p = state.products.get(sku);
  const qty = Number(state.cards.get(sku).qty.value);
  if (!Number.isInteger(qty) || qty < 1 || qty > p.per_user_limit) {
    note(sku, 'error', `Choose 1 to ${p.per_user_limit}.`);
    return;
  }
  // A new key per click: a second click is a second order, a retry of this one is not.
  const ref = randomId();
  setBusy(sku, true);
  note(sku, '', '');
  const sent = state.room && state.room.send({ type: 'buy', sku, qty, ref });
  state.pending.set(ref, { sku, qty, timer: sent ? setTimeout(() => buyOverRest(ref), BUY_WAIT_MS) : null });
  if (!sent) buyOverRest(ref);
}

async function buyOverRest(ref) {
  const p = state.pending.get(ref);
  if (!p || p.rest) return;
  p.rest = true;
  clearTimeout(p.timer);
  try {
    const order = await api(`/sales/${encodeURIComponent(saleId)}/orders`, {
      method: 'POST', token: state.token, body: { sku: p.sku, qty: p.qty }, idempotencyKey: ref,
    });
    bought(ref, order);
  } catch (err) {
    refused(ref, describe(err));
  }
}

function bought(ref, order) {
  upsertOrder(order);
  const p = state.pending.get(ref);
  if (!p) return;
  state.pending.delete(ref);
  clearTimeout(p.timer);
  setBusy(p.sku, false);
  const what = `${order.qty} × ${state.products.get(order.sku)?.name || order.sku}`;
  note(p.sku, 'ok', order.status === 'reserved' ? `Reserved ${what}: pay in "My orders" before the countdown ends.` : `Bought ${what}.`);
}

function refused(ref, message) {
  const p = state.pending.get(ref);
  if (!p) return;
  state.pending.delete(ref);
  clearTimeout(p.timer);
  setBusy(p.sku, false);
  note(p.sku, 'error', message);
}

// ---------------------------------------------------------------- my orders

function upsertOrder(order) {
  if (order.sale_id !== saleId) return;
  let entry = state.orders.get(order.id);
  if (entry && entry.order.status === order.status) {
    entry.order = order;
    return;
  }
  if (!entry) entry = { order };
  entry.order = order;
  entry.el = orderItem(entry);
  state.orders.set(order.id, entry);
  renderOrders();
}

function orderItem(entry) {
  const o = entry.order;
  const name = state.products.get(o.sku)?.name || o.sku;
  const error = h('p', { class: 'notice error', role: 'alert' });
  entry.countdown = o.status === 'reserved' ? h('span', { class: 'countdown' }) : null;
  entry.pay = o.status === 'reserved' ? h('button', { class: 'btn leaf', type: 'button', onclick: () => pay(entry, error) }, `Pay ${money(o.total_cents, o.currency)}`) : null;
  const cancel = o.status === 'reserved' ? h('button', { class: 'btn small', type: 'button', onclick: () => cancelOrder(entry, error) }, 'Cancel') : null;
  const li = h('li', { class: 'order', 'data-order': o.id, 'data-status': o.status },
    h('div', { class: 'row spread' }, h('b', { class: 'grow' }, `${o.qty} × ${name}`), badge(o.status)),
    h('div', { class: 'row spread muted small' },
      h('span', {}, money(o.total_cents, o.currency), ' · ', time(o.created_at)),
      entry.countdown,
      o.status === 'completed' && o.payment_ref ? h('span', { class: 'mono' }, `payment ${o.payment_ref}`) : null),
    entry.pay || cancel ? h('div', { class: 'row' }, entry.pay, cancel) : null,
    error);
  return li;
}

function renderOrders() {
  const entries = [...state.orders.values()].sort((a, b) => (a.order.created_at < b.order.created_at ? 1 : -1));
  $('#orders').replaceChildren(...entries.map((e) => e.el));
  $('#orders-empty').hidden = entries.length > 0;
  tick();
}

/** Once a second: the reservations' countdowns to `expires_at`. */
function tick() {
  for (const e of state.orders.values()) {
    if (!e.countdown) continue;
    const left = Date.parse(e.order.expires_at) - serverNow();
    text(e.countdown, left > 0 ? `pay within ${clock(left)}` : 'reservation expired');
    if (left <= 0 && e.pay) e.pay.disabled = true;
  }
}
setInterval(tick, 1000);

async function pay(entry, error) {
  const id = entry.order.id;
  entry.pay.disabled = true;
  text(error, '');
  try {
    // The provider's checkout takes the buyer's money; the order completes
    // when the provider tells the server, never on this page's word.
    const { providers } = await api('/payments/providers');
    if (!providers.length) throw new Error('no payment provider is enabled');
    const payment = await api(`/orders/${encodeURIComponent(id)}/payments`, {
      method: 'POST', token: state.token, body: { provider: providers[0] },
    });
    if (payment.checkout && payment.checkout.url) {
      window.location.assign(payment.checkout.url);
      return;
    }
    throw new Error('the provider gave no checkout page');
  } catch (err) {
    text(error, describe(err));
    entry.pay.disabled = false;
    if (err instanceof ApiError && err.status === 409) loadOrders();
  }
}

async function cancelOrder(entry, error) {
  text(error, '');
  try {
    upsertOrder(await api(`/orders/${encodeURIComponent(entry.order.id)}/cancel`, { method: 'POST', token: state.token }));
  } catch (err) {
    text(error, describe(err));
  }
}

async function loadOrders() {
  if (!state.token) return;
  try {
    const { orders } = await api('/me/orders', { token: state.token });
    for (const o of orders) upsertOrder(o);
  } catch (err) {
    if (err.status === 401) signOut('Your sign-in expired: join again.');
  }
}

// ---------------------------------------------------------------- chat

function chatItem(m) {
  const host = state.sale && m.user_id === state.sale.host_id;
  return h('li', { 'data-seq': m.seq },
    h('span', { class: host ? 'name host' : 'name' }, m.name || m.user_id, host ? ' (host)' : ''),
    h('span', { class: 'text' }, m.text));
}

function addChat(messages, replace = false) {
  const list = $('#chat');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  if (replace) list.replaceChildren();
  const have = new Set([...list.children].map((li) => li.dataset.seq));
  for (const m of messages) if (!have.has(String(m.seq))) list.append(chatItem(m));
  while (list.children.length > CHAT_KEEP) list.firstElementChild.remove();
  if (atBottom || replace) list.scrollTop = list.scrollHeight;
}

let chatErrorTimer;
function chatError(message) {
  text($('#chat-error'), message);
  clearTimeout(chatErrorTimer);
  chatErrorTimer = setTimeout(() => text($('#chat-error'), ''), 8000);
}

function slowMode(secs) {
  text($('#chat-note'), secs > 0 ? `Slow mode: one message every ${secs} s.` : '');
}

$('#chat-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('#chat-text');
  const message = input.value.trim();
  if (!message) return;
  if (!state.room || !state.room.send({ type: 'chat', text: message })) {
    chatError('Not connected; wait a moment and send again.');
    return;
  }
  input.value = '';
});

function enableChat(on) {
  for (const el of $('#chat-form').elements) el.disabled = !on;
}

// ---------------------------------------------------------------- the live room

function onEvent(ev) {
  switch (ev.type) {
    case 'welcome':
      // A fresh picture of the sale: counts in it are newer than any `ver` we kept.
      state.vers.clear();
      renderSale(ev.sale);
      text($('#me-name'), ev.you.name || ev.you.user_id);
      text($('#viewers'), ev.viewers);
      addChat(ev.chat || [], !state.welcomed);
      slowMode(ev.slow_mode_secs);
      state.welcomed = true;
      enableChat(true);
      // Order events sent while the socket was down are lost: read them again.
      loadOrders();
      break;
    case 'chat':
      addChat([ev]);
      break;
    case 'chat_deleted':
      $(`#chat li[data-seq="${Number(ev.seq)}"]`)?.remove();
      break;
    case 'stock':
      applyStock(ev);
      break;
    case 'product':
      upsertProduct(ev.product);
      break;
    case 'pinned':
      state.sale.pinned_sku = ev.sku;
      renderPinned();
      break;
    case 'announcement': {
      text($('#announcement-text'), ev.text);
      $('#announcement').hidden = false;
      break;
    }
    case 'viewers':
      text($('#viewers'), ev.count);
      break;
    case 'sale':
      state.sale.status = ev.status;
      renderStatus();
      break;
    case 'slow_mode':
      slowMode(ev.secs);
      break;
    case 'order':
      if (ev.ref && state.pending.has(ev.ref)) bought(ev.ref, ev.order);
      else upsertOrder(ev.order);
      break;
    case 'error':
      if (ev.ref && state.pending.has(ev.ref)) refused(ev.ref, describe(new ApiError(0, ev.code, ev.message, ev)));
      else chatError(describe(new ApiError(0, ev.code, ev.message, ev)));
      break;
    case 'lagged':
      // Chat was skipped; a `stock` per product follows, but a missed
      // `product` or `pinned` is not replayed: read the sale again.
      chatError(`Your connection fell behind: ${ev.skipped} updates were skipped.`);
      loadSale();
      break;
    default:
      // `pong`, and event types added later.
      break;
  }
}

function onState(s) {
  const conn = $('#conn');
  conn.className = `conn ${s === 'open' ? 'open' : s === 'connecting' ? 'connecting' : 'failed'}`;
  text(conn, { open: 'live', connecting: 'connecting…', closed: 'reconnecting…', banned: 'banned', unauthorized: 'signed out', stopped: 'offline' }[s] || s);
  if (s !== 'open') enableChat(false);
  if (s === 'closed') {
    // Buys sent on the socket that died: the same key over REST gets their answer.
    for (const ref of state.pending.keys()) buyOverRest(ref);
  }
  if (s === 'banned') {
    state.banned = true;
    for (const ref of [...state.pending.keys()]) refused(ref, 'You are banned from this sale. (banned)');
    showError('You were banned from this sale by its host.');
    for (const sku of state.products.keys()) renderProduct(sku);
  }
  if (s === 'unauthorized') signOut('Your sign-in is no longer valid: join again.');
}

async function loadSale() {
  try {
    const sale = await api(`/sales/${encodeURIComponent(saleId)}`);
    renderSale(sale);
  } catch (err) {
    if (err.status === 404) {
      text($('#title'), 'Sale not found');
      showError('There is no such sale. Pick one on the home page.');
    } else showError(`Could not load the sale: ${describe(err)}`);
  }
}

// ---------------------------------------------------------------- signing in

function signIn(token) {
  store.set(token);
  state.token = token;
  const c = claims(token);
  text($('#me-name'), c.name || c.sub);
  $('#signin').hidden = true;
  $('#me').hidden = false;
  $('#orders-card').hidden = false;
  state.room?.stop();
  state.room = new LiveRoom(saleId, token, onEvent, onState);
  for (const sku of state.products.keys()) renderProduct(sku);
  loadOrders();
}

function signOut(reason = '') {
  store.clear();
  state.token = null;
  state.room?.stop();
  state.room = null;
  state.welcomed = false;
  state.orders.clear();
  renderOrders();
  $('#signin').hidden = false;
  $('#me').hidden = true;
  $('#orders-card').hidden = true;
  text($('#signin-error'), reason);
  enableChat(false);
  for (const sku of state.products.keys()) renderProduct(sku);
}

$('#guest-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('#guest-name').value.trim();
  if (!name) return;
  const button = ev.submitter;
  if (button) button.disabled = true;
  try {
    const guest = await api('/guests', { method: 'POST', body: { name } });
    text($('#signin-error'), '');
    signIn(guest.token);
  } catch (err) {
    text($('#signin-error'), describe(err));
  } finally {
    if (button) button.disabled = false;
  }
});

$('#paste-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const token = $('#paste-token').value.trim();
  if (!usable(token)) {
    text($('#signin-error'), 'That is not a valid, unexpired token.');
    return;
  }
  $('#paste-token').value = '';
  text($('#signin-error'), '');
  signIn(token);
});

$('#sign-out').addEventListener('click', () => signOut());

await loadSale();
const saved = store.get();
if (usable(saved)) signIn(saved);
else if (saved) signOut('Your sign-in expired: join again.');
// Signed out there is no socket; keep the public picture of the sale fresh.
setInterval(() => !state.token && document.visibilityState === 'visible' && loadSale(), 10000);
