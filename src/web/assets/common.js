// Helpers shared by the lychee-live pages.
//
// Rule of every page: data from users or the API goes into the document as
// text (text nodes, textContent, attributes set one by one), never as HTML.
// The Content-Security-Policy would stop an injected script anyway; this
// keeps injected markup from even appearing. Words come from the
// catalogues (i18n.js), never from strings here.

import { t, has, money, number, time, dateTime, day, lang } from './i18n.js';

export { t, money, number, time, dateTime, day, lang };

export const API = '/api/v1';

/** Creates an element. Strings and numbers among the children become text nodes. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (typeof value === 'function') el.addEventListener(name.replace(/^on/, ''), value);
    else if (name === 'class') el.className = value;
    else if (name === 'value') el.value = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) add(el, child);
    else if (child instanceof Node) el.append(child);
    else el.append(document.createTextNode(String(child)));
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** Sets an element's text (and nothing else). */
export function text(el, value) {
  el.textContent = value == null ? '' : String(value);
  return el;
}

/** The path segment after a page's prefix: `/sales/<id>` -> `<id>`. */
export function idFromPath() {
  const parts = location.pathname.split('/').filter(Boolean);
  return parts.length >= 2 ? decodeURIComponent(parts[1]) : null;
}

// ---------------------------------------------------------------- REST

export class ApiError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.extra = extra;
  }
}

// Local clock minus the server's, from the `Date` header. Only a clearly wrong
// phone clock (off by more than 2 s; the header has 1 s precision) is
// corrected, so reservation countdowns end when the server says.
let skewMs = 0;

function noteServerDate(res) {
  const date = Date.parse(res.headers.get('Date') || '');
  if (Number.isNaN(date)) return;
  const diff = date - Date.now();
  skewMs = Math.abs(diff) > 2000 ? diff : 0;
}

/** The server's idea of now, in ms. */
export const serverNow = () => Date.now() + skewMs;

async function send(path, { method = 'GET', token, body, raw, contentType, idempotencyKey, accept } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (raw !== undefined && contentType) headers['Content-Type'] = contentType;
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  if (accept) headers.Accept = accept;
  let res;
  try {
    res = await fetch(path.startsWith('/api/') ? path : API + path, {
      method,
      headers,
      body: raw !== undefined ? raw : body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'network', '');
  }
  noteServerDate(res);
  if (!res.ok) {
    let error = {};
    try {
      error = (await res.json()).error || {};
    } catch {
      // Not the API's JSON (a proxy's page): the status says enough.
    }
    const retry = res.headers.get('Retry-After');
    if (retry) error.retry_after = Number(retry);
    throw new ApiError(res.status, error.code || `http_${res.status}`, error.message || res.statusText, error);
  }
  return res;
}

/** Calls the API; resolves to the JSON body, rejects with an ApiError. */
export async function api(path, options) {
  const res = await send(path, options);
  const body = await res.text();
  return body ? JSON.parse(body) : null;
}

/** Calls the API for text (the CSV export). */
export async function apiText(path, options) {
  return (await send(path, options)).text();
}

/** Calls the API for bytes (an upload's photo). */
export async function apiBlob(path, options) {
  return (await send(path, options)).blob();
}

/**
 * A sentence for an error in the page's language, with its code (for
 * whoever helps the user). Every code of the API has its message in each
 * catalogue (`error.<code>`; a Rust test checks it); an unknown one shows
 * the server's words.
 */
export function describe(err) {
  if (!(err instanceof ApiError)) return t('error.unknown', { message: String(err && err.message ? err.message : err) });
  const e = err.extra || {};
  const values = { limit: e.limit ?? '?', bought: e.bought ?? '?', secs: e.retry_after ?? 1, message: err.message || '' };
  const key = `error.${err.code}`;
  const words = has(key) ? t(key, values) : t('error.unknown', values);
  return `${words} (${err.code})`;
}

// ---------------------------------------------------------------- identity

/** A token kept in localStorage, one per role of page. */
export function tokenStore(kind) {
  const key = `lychee-live.${kind}.token`;
  return {
    get: () => localStorage.getItem(key),
    set: (t) => localStorage.setItem(key, t.trim()),
    clear: () => localStorage.removeItem(key),
  };
}

/** The claims of a JWT, read (not verified: the server does that) to show who is signed in. */
export function claims(token) {
  try {
    const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const c = JSON.parse(new TextDecoder().decode(bytes));
    return c && typeof c === 'object' ? c : null;
  } catch {
    return null;
  }
}

/** Whether a token is well-formed and not yet expired. */
export function usable(token) {
  const c = token && claims(token);
  return !!c && typeof c.exp === 'number' && c.exp * 1000 > Date.now();
}

/** The store a token of `role` belongs in: one per kind of page. */
export function storeFor(role) {
  return tokenStore(role === 'operator' ? 'ops' : role === 'host' ? 'host' : 'viewer');
}

/**
 * Calls `onExpired` when `token` expires (at once if it has), so a page
 * asks for a new sign-in instead of failing call after call. Returns a
 * function that cancels the watch.
 */
export function whenExpired(token, onExpired) {
  const c = claims(token);
  const left = c && typeof c.exp === 'number' ? c.exp * 1000 - Date.now() : 0;
  // setTimeout overflows past 2^31 ms (24.8 days): check again then.
  const timer = setTimeout(() => (usable(token) ? whenExpired(token, onExpired) : onExpired()), Math.min(Math.max(0, left), 2 ** 31 - 1));
  return () => clearTimeout(timer);
}

/**
 * Wires a page's sign-in card: `#token-form`, `#token`, `#who`,
 * `#sign-out`, `#token-error`. Calls `onChange(token|null)` at start and on
 * every change; when the token expires (or the server refuses it: call the
 * returned `expired()`), the card asks for a sign-in again.
 */
export function tokenCard(store, onChange, { roles } = {}) {
  const form = $('#token-form');
  const who = $('#who');
  let unwatch = () => {};
  const show = (why = '') => {
    const token = store.get();
    const ok = usable(token);
    if (token && !ok) store.clear();
    form.hidden = ok;
    who.hidden = !ok;
    text($('#token-error'), why || (token && !ok ? t('signin.expired') : ''));
    unwatch();
    if (ok) {
      const c = claims(token);
      text($('#who-name'), c.name || c.sub);
      text($('#who-role'), t(`role.${c.role}`));
      const wrong = roles && !roles.includes(c.role);
      text($('#who-warning'), wrong ? t('signin.wrong_role', { roles: roles.map((r) => t(`role.${r}`)).join(' / ') }) : '');
      unwatch = whenExpired(token, () => expired());
    }
    onChange(ok ? token : null);
  };
  const expired = () => {
    store.clear();
    show(t('signin.expired'));
    $('#token')?.focus();
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const value = $('#token').value.trim();
    if (!usable(value)) {
      text($('#token-error'), t('signin.invalid_token'));
      return;
    }
    $('#token').value = '';
    store.set(value);
    show();
  });
  $('#sign-out').addEventListener('click', () => {
    store.clear();
    show();
  });
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get('signin') || fragment.get('token')) {
    signInFromFragment(fragment).then((r) => show(r.error || ''));
  } else show();
  return { expired };
}

/**
 * A sign-in link: `#token=<jwt>` (a link made in production) or
 * `#signin=<code>` (the embedded banner's one-time code, exchanged for its
 * token). Either leaves the address bar at once: a fragment never reaches
 * the server, and should not stay in the history either. The token goes in
 * the store of its role. Resolves to `{ token, role }` or `{ error }`.
 */
export async function signInFromFragment(fragment) {
  history.replaceState(null, '', location.pathname + location.search);
  let token = fragment.get('token');
  const code = fragment.get('signin');
  if (!token && code) {
    try {
      token = (await api('/signin', { method: 'POST', body: { code } })).token;
    } catch (err) {
      return { error: t('signin.link_failed', { why: describe(err) }) };
    }
  }
  if (!usable(token)) return { error: t('signin.invalid_token') };
  const role = claims(token).role;
  storeFor(role).set(token);
  return { token, role };
}

// ---------------------------------------------------------------- formatting

export function randomId() {
  // getRandomValues works on plain-http deployments too (randomUUID needs a secure context).
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** `m:ss` (or `h:mm:ss`) of a duration in ms, floored at zero. */
export function clock(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return hh ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

/** The words of a sale's, product's or order's status. */
export const statusLabel = (status) => (has(`status.${status}`) ? t(`status.${status}`) : status);

export function badge(status, prefix = 'status') {
  const key = `${prefix}.${status}`;
  return h('span', { class: `badge ${status}`, 'data-status': status }, has(key) ? t(key) : status);
}

// ---------------------------------------------------------------- live room

/**
 * The sale's WebSocket, reconnecting by itself and resuming chat with
 * `since=<last seq>`. `onEvent` gets every event, batches unpacked;
 * `onState` gets 'connecting' | 'open' | 'closed' (will reconnect) |
 * 'banned' | 'unauthorized' | 'stopped' (the last three: for good).
 */
export class LiveRoom {
  constructor(saleId, token, onEvent, onState = () => {}) {
    Object.assign(this, { saleId, token, onEvent, onState });
    this.lastSeq = 0;
    this.failures = 0;
    this.stopped = false;
    this.ws = null;
    this.connect();
    // Keeps idle sockets alive through load balancers' idle timeouts.
    this.pinger = setInterval(() => this.send({ type: 'ping' }), 25000);
  }

  get open() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const params = new URLSearchParams({ access_token: this.token });
    if (this.lastSeq) params.set('since', String(this.lastSeq));
    const ws = new WebSocket(`${proto}://${location.host}${API}/sales/${encodeURIComponent(this.saleId)}/live?${params}`);
    this.ws = ws;
    this.onState('connecting');
    ws.onmessage = (msg) => {
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      for (const ev of frame.type === 'batch' ? frame.events || [] : [frame]) this.dispatch(ev);
    };
    ws.onclose = (ev) => this.closed(ws, ev.code);
  }

  dispatch(ev) {
    if (ev.type === 'welcome') {
      this.failures = 0;
      this.onState('open');
      for (const c of ev.chat || []) this.lastSeq = Math.max(this.lastSeq, c.seq);
    } else if (ev.type === 'chat') {
      this.lastSeq = Math.max(this.lastSeq, ev.seq);
    }
    this.onEvent(ev);
  }

  async closed(ws, code) {
    if (ws !== this.ws || this.stopped) return;
    this.ws = null;
    if (code === 4003) {
      this.stop('banned');
      return;
    }
    // The token expired: reconnecting with it would be refused; sign in again.
    if (code === 4001) {
      this.stop('unauthorized');
      return;
    }
    this.failures += 1;
    // A refusal before the upgrade (401, 403, 404) reaches a browser only as
    // close code 1006; after repeated failures ask REST whether the token is
    // still good, so a bad one stops the loop instead of retrying forever.
    if (this.failures >= 2 && code === 1006) {
      try {
        await api('/me/orders', { token: this.token });
      } catch (err) {
        if (err.status === 401) {
          this.stop('unauthorized');
          return;
        }
      }
    }
    if (this.stopped) return;
    this.onState('closed', this.failures);
    // 1001: the node is going away, another one is ready at once.
    const base = code === 1001 ? 250 : Math.min(30000, 1000 * 2 ** Math.min(this.failures - 1, 5));
    setTimeout(() => !this.stopped && this.connect(), base + Math.random() * base);
  }

  /** Sends a message; false when the socket is not open. */
  send(message) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  stop(state = 'stopped') {
    this.stopped = true;
    clearInterval(this.pinger);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.onState(state);
  }
}

// ---------------------------------------------------------------- SSE over fetch

/**
 * Reads a Server-Sent Events stream with fetch, because EventSource cannot
 * send the Authorization header the API requires. Calls `onData(json)` per
 * `data:` event; reconnects after a drop, backing off; stops on a 401/403/404 (reported
 * through `onState('failed', error)`). Returns a function that stops it.
 */
export function followEvents(path, token, onData, onState = () => {}) {
  const abort = new AbortController();
  (async () => {
    let failures = 0;
    while (!abort.signal.aborted) {
      onState('connecting');
      try {
        const res = await fetch(API + path, {
          headers: { Authorization: `Bearer ${token}`, Accept: 'text/event-stream' },
          cache: 'no-store',
          signal: abort.signal,
        });
        if (!res.ok) {
          let error = {};
          try {
            error = (await res.json()).error || {};
          } catch {
            // Keep the status alone.
          }
          const err = new ApiError(res.status, error.code || `http_${res.status}`, error.message || res.statusText, error);
          if ([401, 403, 404].includes(res.status)) {
            onState('failed', err);
            return;
          }
          throw err;
        }
        onState('open');
        failures = 0;
        await readEvents(res.body, (event, data) => {
          if (event !== 'message') return;
          try {
            onData(JSON.parse(data));
          } catch {
            // A malformed line is one lost second, not the end of the stream.
          }
        });
      } catch (err) {
        if (abort.signal.aborted) return;
        onState('closed', err);
      }
      // Back off (1 s, 2 s, 4 s … 30 s, with jitter) so a node coming back
      // is not met by every dashboard at once.
      failures += 1;
      const wait = Math.min(30000, 1000 * 2 ** Math.min(failures - 1, 5));
      if (!abort.signal.aborted) await new Promise((r) => setTimeout(r, wait / 2 + Math.random() * wait / 2));
    }
  })();
  return () => abort.abort();
}

/** Parses an SSE body (https://html.spec.whatwg.org/#event-stream-interpretation). */
async function readEvents(body, dispatch) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let data = [];
  let event = 'message';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (;;) {
      const end = buffer.search(/\r\n|\r|\n/);
      // A lone CR at the end may be the first half of a CRLF: wait for more.
      if (end < 0 || (buffer[end] === '\r' && end === buffer.length - 1)) break;
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
      if (line === '') {
        if (data.length) dispatch(event, data.join('\n'));
        data = [];
        event = 'message';
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? '' : line.slice(colon + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'data') data.push(val);
      else if (field === 'event') event = val;
    }
  }
}

// ---------------------------------------------------------------- CSV

/** Parses RFC 4180 CSV into rows of strings. */
export function parseCsv(input) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < input.length; i++) {
    const c = input[i];
    if (quoted) {
      if (c === '"' && input[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && input[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (field !== '' || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

/** CSV rows as objects keyed by the header row. */
export function csvRecords(input) {
  const [head, ...rows] = parseCsv(input);
  if (!head) return [];
  return rows.map((r) => Object.fromEntries(head.map((k, i) => [k, r[i] ?? ''])));
}

/**
 * Fetches the sale's completed orders as CSV (with the Authorization header,
 * which a plain link cannot send) and offers it as a file download.
 */
export async function downloadCsv(saleId, token, list = 'orders') {
  const body = await apiText(`/sales/${encodeURIComponent(saleId)}/${list}.csv`, { token, accept: 'text/csv' });
  const url = URL.createObjectURL(new Blob([body], { type: 'text/csv' }));
  const a = h('a', { href: url, download: `sale-${saleId}-${list}.csv`, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return body;
}
