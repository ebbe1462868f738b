// `/sales/{id}`: the viewer's page. Watch, chat, see the stock fall, buy,
// pick where it ships, pay through the provider, follow the box, claim.
//
// State comes from the sale's WebSocket (the `welcome` frame, then events);
// before signing in, from the public `GET /sales/{id}`. Buys go over the
// socket with a `ref`, or over REST with the same value as `Idempotency-Key`
// when the socket is down or slow: the two share one key space, so a buy
// retried the other way is still one order.

import {
  $, h, t, text, api, apiBlob, describe, ApiError, tokenStore, claims, usable, idFromPath, randomId,
  money, clock, time, dateTime, day, lang, badge, serverNow, LiveRoom, statusLabel, whenExpired,
} from './common.js';
import { Player } from './player.js';

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
  addresses: [], // the buyer's address book, default first
  shipTo: null, // the address id new buys carry
  provinces: new Map(), // code -> { zh, en }
  photoUrls: new Map(), // upload url -> object URL
  unwatch: () => {},
};
const player = new Player($('#player'));

// ---------------------------------------------------------------- the sale

function renderSale(sale) {
  state.sale = sale;
  document.title = `${sale.title} · lychee-live`;
  text($('#title'), sale.title);
  text($('#description'), sale.description || '');
  renderStatus();
  player.show(sale);
  for (const p of sale.products || []) upsertProduct(p);
  renderPinned();
}

function renderStatus() {
  const status = state.sale.status;
  $('#status').replaceChildren(badge(status));
  if (status === 'ended') showError(t('viewer.sale_ended'));
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
    meter: h('meter', { min: 0, 'aria-label': t('product.stock_left') }),
    status: h('span'),
    left: h('span', { class: 'left' }),
    qty: h('input', { class: 'qty', type: 'number', min: 1, value: 1, inputmode: 'numeric', 'aria-label': t('product.quantity') }),
    buy: h('button', { class: 'btn primary', type: 'submit' }, t('product.buy')),
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
  text(c.ships, p.ships_by ? t('product.ships_by', { date: day(p.ships_by) }) : '');
  c.ships.hidden = !p.ships_by;
  c.meter.max = Math.max(1, p.stock);
  c.meter.value = p.remaining;
  c.meter.low = p.stock * 0.2;
  c.meter.high = p.stock * 0.5;
  c.meter.optimum = p.stock;
  text(c.left, t('product.left', { remaining: p.remaining, stock: p.stock }));
  c.status.replaceChildren(badge(p.status));
  c.qty.max = p.per_user_limit;
  c.root.dataset.remaining = p.remaining;
  c.root.dataset.status = p.status;
  c.root.classList.toggle('pinned', state.sale?.pinned_sku === sku);
  c.buy.disabled = c.busy || !canBuy(p);
  c.buy.title = state.token ? statusLabel(p.status) : t('product.join_to_buy');
}

function renderPinned() {
  const sku = state.sale?.pinned_sku;
  const p = sku && state.products.get(sku);
  $('#pinned').hidden = !p;
  for (const [s, c] of state.cards) c.root.classList.toggle('pinned', s === sku);
  if (!p) return;
  text($('#pinned-name'), p.name);
  text($('#pinned-price'), money(p.price_cents, p.currency));
  text($('#pinned-left'), `${t('product.left', { remaining: p.remaining, stock: p.stock })} · ${statusLabel(p.status)}`);
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
    note(sku, 'error', t('product.choose_qty', { max: p.per_user_limit }));
    return;
  }
  // A new key per click: a second click is a second order, a retry of this one is not.
  const ref = randomId();
  setBusy(sku, true);
  note(sku, '', '');
  // The chosen address goes with the buy, so an area the product does not
  // ship to is refused before any stock is taken (`undeliverable`).
  const addressId = state.shipTo || undefined;
  const sent = state.room && state.room.send({ type: 'buy', sku, qty, ref, address_id: addressId });
  state.pending.set(ref, { sku, qty, addressId, timer: sent ? setTimeout(() => buyOverRest(ref), BUY_WAIT_MS) : null });
  if (!sent) buyOverRest(ref);
}

async function buyOverRest(ref) {
  const p = state.pending.get(ref);
  if (!p || p.rest) return;
  p.rest = true;
  clearTimeout(p.timer);
  try {
    const order = await api(`/sales/${encodeURIComponent(saleId)}/orders`, {
      method: 'POST', token: state.token, body: { sku: p.sku, qty: p.qty, address_id: p.addressId }, idempotencyKey: ref,
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
  const key = order.status === 'reserved' ? (order.ship_to ? 'buy.reserved' : 'buy.reserved_no_address') : 'buy.bought';
  note(p.sku, 'ok', t(key, { what }));
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

/** What the buyer sees of a box's journey, in order. */
const JOURNEY = ['paid', 'packed', 'shipped', 'delivered'];
const CLAIMABLE = ['shipped', 'delivered', 'lost'];
const MAX_PHOTOS = 3;

function upsertOrder(order) {
  if (order.sale_id !== saleId) return;
  const entry = state.orders.get(order.id) || {};
  entry.order = order;
  // Keep a claim form being filled in: only its order's facts are redrawn.
  const keepClaim = entry.claimForm && !entry.claimForm.hidden && order.claims?.every((c) => c.status !== 'open');
  const form = keepClaim ? entry.claimForm : null;
  entry.el = orderItem(entry, form);
  state.orders.set(order.id, entry);
  renderOrders();
}

function addressLine(a) {
  if (!a) return '';
  const province = state.provinces.get(a.province);
  const provinceName = province ? (lang === 'en' ? province.en : province.zh) : a.province;
  return [a.name, a.phone, provinceName, a.city, a.district, a.line, a.postcode].filter(Boolean).join(' ');
}

/** paid -> packed -> shipped -> delivered, the steps reached marked. */
function journey(o) {
  const f = o.fulfilment || 'unfulfilled';
  const reached = o.status !== 'completed' ? -1 : { unfulfilled: 0, packed: 1, shipped: 2, delivered: 3, returned: 3, lost: 2 }[f] ?? 0;
  const steps = JOURNEY.map((step, i) =>
    h('li', { class: i <= reached ? 'done' : '', 'data-step': step, 'aria-current': i === reached ? 'step' : null }, t(`journey.${step}`)));
  const list = h('ol', { class: 'journey', 'aria-label': t('journey.label') }, steps);
  const s = o.shipment;
  const facts = [];
  if (s) {
    facts.push(h('p', { class: 'small shipment' }, t('journey.courier', { courier: s.courier }), ' · ',
      h('span', { class: 'mono waybill' }, s.waybill), s.shipped_at ? ` · ${t('journey.shipped_at', { when: dateTime(s.shipped_at) })}` : ''));
    if (s.delivered_at) facts.push(h('p', { class: 'small' }, t('journey.delivered_at', { when: dateTime(s.delivered_at) })));
  }
  if (f === 'returned' || f === 'lost') facts.push(h('p', { class: 'notice info' }, t(`fulfilment.${f}`)));
  return [list, ...facts];
}

function orderItem(entry, keptClaimForm) {
  const o = entry.order;
  const name = state.products.get(o.sku)?.name || o.sku;
  const error = h('p', { class: 'notice error', role: 'alert' });
  const reserved = o.status === 'reserved';
  entry.countdown = reserved ? h('span', { class: 'countdown' }) : null;
  entry.pay = reserved ? h('button', { class: 'btn leaf pay', type: 'button', onclick: () => pay(entry, error) }, t('orders.pay', { amount: money(o.total_cents, o.currency) })) : null;
  const cancel = reserved ? h('button', { class: 'btn small', type: 'button', onclick: () => cancelOrder(entry, error) }, t('orders.cancel')) : null;
  const editable = (reserved || o.status === 'completed') && (o.fulfilment || 'unfulfilled') === 'unfulfilled';
  const shipTo = h('div', { class: 'ship-to small' },
    o.ship_to ? [h('span', { class: 'muted' }, t('address.ship_to'), ' '), h('span', { class: 'addr' }, addressLine(o.ship_to))]
      : h('span', { class: 'notice warn' }, t('orders.no_address')),
    editable ? addressPicker(entry, error) : null);
  const claimsList = (o.claims || []).map(claimItem);
  const open = (o.claims || []).some((c) => c.status === 'open');
  const claimable = o.status === 'completed' && CLAIMABLE.includes(o.fulfilment) && !open;
  entry.claimForm = claimable ? keptClaimForm || claimForm(entry) : null;
  const claimButton = claimable ? h('button', { class: 'btn small', type: 'button', 'data-action': 'claim',
    onclick: () => { entry.claimForm.hidden = !entry.claimForm.hidden; entry.claimForm.querySelector('select')?.focus(); } }, t('claim.open_form')) : null;
  return h('li', { class: 'order', 'data-order': o.id, 'data-status': o.status, 'data-fulfilment': o.fulfilment || 'unfulfilled' },
    h('div', { class: 'row spread' }, h('b', { class: 'grow' }, `${o.qty} × ${name}`), badge(o.status)),
    h('div', { class: 'row spread muted small' },
      h('span', {}, money(o.total_cents, o.currency), ' · ', time(o.created_at)),
      entry.countdown,
      o.status === 'completed' && o.payment_ref ? h('span', { class: 'mono' }, t('orders.payment_ref', { ref: o.payment_ref })) : null),
    o.status === 'completed' ? journey(o) : null,
    shipTo,
    entry.pay || cancel ? h('div', { class: 'row' }, entry.pay, cancel) : null,
    claimsList.length ? h('ul', { class: 'claims' }, claimsList) : null,
    claimButton, entry.claimForm,
    error);
}

/** A select of the address book that attaches the chosen address to the order. */
function addressPicker(entry, error) {
  if (!state.addresses.length) {
    return h('a', { href: '#addresses', class: 'small', onclick: () => { $('#address-add').open = true; } }, t('address.add_first'));
  }
  const select = h('select', { 'aria-label': t('address.choose_for_order'), class: 'address-pick' },
    h('option', { value: '' }, t('address.choose')),
    state.addresses.map((a) => h('option', { value: a.id }, addressLine(a))));
  select.addEventListener('change', async () => {
    if (!select.value) return;
    text(error, '');
    try {
      upsertOrder(await api(`/orders/${encodeURIComponent(entry.order.id)}/address`, {
        method: 'PUT', token: state.token, body: { address_id: select.value },
      }));
    } catch (err) {
      text(error, describe(err));
      select.value = '';
    }
  });
  return select;
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
    text(e.countdown, left > 0 ? t('orders.pay_within', { left: clock(left) }) : t('orders.expired'));
    if (left <= 0 && e.pay) e.pay.disabled = true;
  }
}
setInterval(tick, 1000);

async function pay(entry, error) {
  const id = entry.order.id;
  entry.pay.disabled = true;
  text(error, '');
  try {
    if (!entry.order.ship_to) throw new ApiError(409, 'address_required', '');
    // The provider's checkout takes the buyer's money; the order completes
    // when the provider tells the server, never on this page's word.
    const { providers } = await api('/payments/providers');
    if (!providers.length) throw new ApiError(409, 'invalid_state', t('orders.no_provider'));
    const payment = await api(`/orders/${encodeURIComponent(id)}/payments`, {
      method: 'POST', token: state.token, body: { provider: providers[0] },
    });
    if (payment.checkout && payment.checkout.url) {
      window.location.assign(payment.checkout.url);
      return;
    }
    throw new ApiError(0, 'unavailable', t('orders.no_checkout'));
  } catch (err) {
    text(error, describe(err));
    entry.pay.disabled = false;
    if (err instanceof ApiError && err.code === 'address_required') entry.el.querySelector('.address-pick, .ship-to a')?.focus();
    else if (err instanceof ApiError && err.status === 409) loadOrders();
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
    if (err.status === 401) signOut(t('signin.expired'));
  }
}

// ---------------------------------------------------------------- claims

function claimItem(c) {
  const res = c.resolution;
  let outcome = null;
  if (res) {
    const words = res.action === 'refund' ? t('claim.outcome.refund', { amount: money(res.refund_cents || 0) })
      : res.action === 'reship' ? t('claim.outcome.reship') : t('claim.outcome.reject');
    outcome = h('p', { class: 'outcome' }, words, res.note ? h('span', { class: 'muted' }, ` · ${res.note}`) : null);
  }
  const photos = h('div', { class: 'photos' });
  for (const url of c.photos || []) showPhoto(photos, url);
  return h('li', { class: 'claim', 'data-claim': c.id, 'data-status': c.status },
    h('div', { class: 'row spread' }, h('b', {}, t(`claim.kind.${c.kind}`), ` × ${c.qty_affected}`), badge(c.status, 'claim.status')),
    h('p', { class: 'pre-line small' }, c.description),
    photos, outcome);
}

/** Photos need the Authorization header: fetched, then shown from a blob: URL. */
async function showPhoto(container, url) {
  if (!url.startsWith('/api/v1/uploads/')) return;
  let src = state.photoUrls.get(url);
  if (!src) {
    try {
      src = URL.createObjectURL(await apiBlob(url, { token: state.token }));
      state.photoUrls.set(url, src);
    } catch {
      return;
    }
  }
  container.append(h('img', { src, alt: t('claim.photo'), class: 'photo', loading: 'lazy' }));
}

function claimForm(entry) {
  const o = entry.order;
  const error = h('p', { class: 'notice error', role: 'alert' });
  const previews = h('div', { class: 'photos' });
  const id = `claim-${o.id}`;
  const files = h('input', { type: 'file', accept: 'image/*', capture: 'environment', multiple: true, id: `${id}-photos`, name: 'photos' });
  files.addEventListener('change', () => {
    previews.replaceChildren();
    const chosen = [...files.files];
    if (chosen.length > MAX_PHOTOS) text(error, t('claim.too_many_photos', { max: MAX_PHOTOS }));
    else text(error, '');
    for (const f of chosen.slice(0, MAX_PHOTOS)) previews.append(h('img', { src: URL.createObjectURL(f), alt: t('claim.photo'), class: 'photo' }));
  });
  const submit = h('button', { class: 'btn primary', type: 'submit' }, t('claim.submit'));
  const form = h('form', { class: 'form-grid claim-form', hidden: true },
    h('label', {}, t('claim.kind_label'),
      h('select', { name: 'kind', required: true },
        ['spoiled', 'damaged', 'short_weight', 'wrong_item', 'not_received'].map((k) => h('option', { value: k }, t(`claim.kind.${k}`))))),
    h('label', {}, t('claim.qty_label'), h('input', { name: 'qty_affected', type: 'number', min: 1, max: o.qty, value: 1, inputmode: 'numeric', required: true })),
    h('label', { class: 'wide' }, t('claim.description_label'), h('textarea', { name: 'description', maxlength: 1000, required: true })),
    h('label', { class: 'wide', for: `${id}-photos` }, t('claim.photos_label', { max: MAX_PHOTOS }), files),
    previews,
    h('div', { class: 'wide' }, submit),
    error);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const chosen = [...files.files];
    if (chosen.length > MAX_PHOTOS) {
      text(error, t('claim.too_many_photos', { max: MAX_PHOTOS }));
      return;
    }
    submit.disabled = true;
    text(error, '');
    try {
      // Each photo is uploaded as it is; the server reads its type from the bytes.
      const photos = [];
      for (const file of chosen) {
        const up = await api('/uploads', { method: 'POST', token: state.token, raw: file, contentType: file.type || 'application/octet-stream' });
        photos.push(up.id);
      }
      await api(`/orders/${encodeURIComponent(o.id)}/claims`, {
        method: 'POST', token: state.token,
        body: { kind: f.get('kind'), qty_affected: Number(f.get('qty_affected')), description: String(f.get('description')).trim(), photos },
      });
      entry.claimForm = null;
      loadOrders();
    } catch (err) {
      text(error, describe(err));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

// ---------------------------------------------------------------- address book

async function loadProvinces() {
  try {
    const { provinces } = await api('/provinces');
    for (const p of provinces) state.provinces.set(p.code, p);
    const select = $('#address-form [name=province]');
    select.replaceChildren(h('option', { value: '' }, t('address.choose_province')),
      ...provinces.map((p) => h('option', { value: p.code }, lang === 'en' ? p.en : p.zh)));
    // Conghua's own province first in mind: Guangdong is the usual answer.
    select.value = '440000';
  } catch {
    // The form still takes a code typed by the server's list later.
  }
}

async function loadAddresses() {
  if (!state.token) return;
  try {
    const { addresses } = await api('/me/addresses', { token: state.token });
    state.addresses = addresses;
    const def = addresses.find((a) => a.is_default);
    if (!addresses.some((a) => a.id === state.shipTo)) state.shipTo = def?.id || null;
    renderAddresses();
    // The orders' pickers list the book.
    for (const e of state.orders.values()) upsertOrder(e.order);
  } catch (err) {
    if (err.status === 401) signOut(t('signin.expired'));
    else text($('#address-error'), describe(err));
  }
}

function renderAddresses() {
  const list = $('#address-list');
  list.replaceChildren(...state.addresses.map((a) => {
    const radio = h('input', { type: 'radio', name: 'ship-to', value: a.id, checked: a.id === state.shipTo, 'aria-label': t('address.use_for_buys') });
    radio.addEventListener('change', () => { state.shipTo = a.id; renderShipTo(); });
    return h('li', { class: 'address', 'data-address': a.id, 'data-default': String(!!a.is_default) },
      h('label', { class: 'pick' }, radio, h('span', { class: 'addr' }, addressLine(a))),
      h('div', { class: 'row' },
        a.is_default ? h('span', { class: 'badge ok' }, t('address.default'))
          : h('button', { class: 'btn small', type: 'button', 'data-action': 'default', onclick: () => makeDefault(a) }, t('address.set_default')),
        h('button', { class: 'btn small', type: 'button', 'data-action': 'delete', onclick: () => removeAddress(a) }, t('address.delete'))));
  }));
  $('#address-empty').hidden = state.addresses.length > 0;
  renderShipTo();
}

function renderShipTo() {
  const a = state.addresses.find((x) => x.id === state.shipTo);
  $('#ship-to-line').hidden = !a;
  text($('#ship-to-name'), a ? addressLine(a) : '');
}

/**
 * The API moves the default only when an address is added (`is_default`):
 * a copy is added as the default, then the old one deleted. Orders keep
 * their own copy of an address, so none of them changes.
 */
async function makeDefault(a) {
  text($('#address-error'), '');
  try {
    const { id, is_default: wasDefault, ...fields } = a;
    void wasDefault;
    const copy = await api('/me/addresses', { method: 'POST', token: state.token, body: { ...fields, is_default: true } });
    await api(`/me/addresses/${encodeURIComponent(id)}`, { method: 'DELETE', token: state.token });
    // The new default is where the next buys ship.
    state.shipTo = copy.id;
  } catch (err) {
    text($('#address-error'), describe(err));
  }
  loadAddresses();
}

async function removeAddress(a) {
  text($('#address-error'), '');
  try {
    await api(`/me/addresses/${encodeURIComponent(a.id)}`, { method: 'DELETE', token: state.token });
  } catch (err) {
    text($('#address-error'), describe(err));
  }
  loadAddresses();
}

$('#address-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const f = new FormData(form);
  const body = {};
  for (const k of ['name', 'phone', 'province', 'city', 'district', 'line', 'postcode']) {
    const v = String(f.get(k) || '').trim();
    if (v) body[k] = v;
  }
  body.is_default = !!f.get('is_default');
  text($('#address-error'), '');
  try {
    const added = await api('/me/addresses', { method: 'POST', token: state.token, body });
    form.reset();
    $('#address-form [name=province]').value = '440000';
    $('#address-add').open = false;
    if (added.is_default || !state.shipTo) state.shipTo = added.id;
    await loadAddresses();
  } catch (err) {
    text($('#address-error'), describe(err));
  }
});

// ---------------------------------------------------------------- chat

function chatItem(m) {
  const host = state.sale && m.user_id === state.sale.host_id;
  return h('li', { 'data-seq': m.seq },
    h('span', { class: host ? 'name host' : 'name' }, m.name || m.user_id, host ? ` (${t('role.host')})` : ''),
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
  text($('#chat-note'), secs > 0 ? t('chat.slow_mode', { secs }) : '');
}

$('#chat-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('#chat-text');
  const message = input.value.trim();
  if (!message) return;
  if (!state.room || !state.room.send({ type: 'chat', text: message })) {
    chatError(t('chat.not_connected'));
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
      chatError(t('viewer.lagged', { skipped: ev.skipped }));
      loadSale();
      break;
    default:
      // `pong`, and event types added later.
      break;
  }
}

function onState(s, attempt) {
  const conn = $('#conn');
  conn.className = `conn ${s === 'open' ? 'open' : s === 'connecting' ? 'connecting' : 'failed'}`;
  conn.dataset.state = s;
  text(conn, s === 'closed' ? t('conn.closed', { attempt: attempt || 1 }) : t(`conn.${s}`));
  if (s !== 'open') enableChat(false);
  if (s === 'closed') {
    // Buys sent on the socket that died: the same key over REST gets their answer.
    for (const ref of state.pending.keys()) buyOverRest(ref);
  }
  if (s === 'banned') {
    state.banned = true;
    for (const ref of [...state.pending.keys()]) refused(ref, describe(new ApiError(403, 'banned', '')));
    showError(t('viewer.banned'));
    for (const sku of state.products.keys()) renderProduct(sku);
  }
  if (s === 'unauthorized') signOut(t('signin.expired'));
}

async function loadSale() {
  try {
    const sale = await api(`/sales/${encodeURIComponent(saleId)}`);
    renderSale(sale);
  } catch (err) {
    if (err.status === 404) {
      text($('#title'), t('viewer.not_found_title'));
      showError(t('viewer.not_found'));
    } else showError(t('viewer.load_failed', { why: describe(err) }));
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
  $('#addresses').hidden = false;
  state.room?.stop();
  state.room = new LiveRoom(saleId, token, onEvent, onState);
  for (const sku of state.products.keys()) renderProduct(sku);
  state.unwatch();
  // A guest's token expires too: ask to join again rather than fail each call.
  state.unwatch = whenExpired(token, () => signOut(t('signin.expired')));
  loadAddresses();
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
  $('#addresses').hidden = true;
  state.unwatch();
  state.addresses = [];
  state.shipTo = null;
  renderAddresses();
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
    text($('#signin-error'), t('signin.invalid_token'));
    return;
  }
  $('#paste-token').value = '';
  text($('#signin-error'), '');
  signIn(token);
});

$('#sign-out').addEventListener('click', () => signOut());

await Promise.all([loadSale(), loadProvinces()]);
const saved = store.get();
if (usable(saved)) signIn(saved);
else if (saved) signOut(t('signin.expired'));
// Signed out there is no socket; keep the public picture of the sale fresh.
setInterval(() => !state.token && document.visibilityState === 'visible' && loadSale(), 10000);
