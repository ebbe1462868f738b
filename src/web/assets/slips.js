// `/host/{id}/slips`: the packing slips of a sale, one per order, to print
// and tape on the boxes: the recipient, the full address and phone (this is
// the packing list, the one place they are shown whole), what goes in the
// box, and a QR code of the order id that the courier's or the packing
// house's scanner reads back. From `GET /sales/{id}/packing.csv` with the
// host's token; the QR code is drawn by the vendored qrcode-generator as SVG
// elements (no markup strings).

import { $, h, t, text, api, apiText, csvRecords, tokenStore, usable, idFromPath, describe, day, lang, dateTime } from './common.js';
import qrcode from '/vendor/qrcode/qrcode.mjs';

const SVG = 'http://www.w3.org/2000/svg';
const saleId = idFromPath();
const token = tokenStore('host').get();

/** The order id as a QR code: one SVG path of its dark modules. */
function qr(value) {
  const code = qrcode(0, 'M');
  code.addData(value);
  code.make();
  const n = code.getModuleCount();
  const quiet = 2;
  let d = '';
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) if (code.isDark(r, c)) d += `M${c + quiet} ${r + quiet}h1v1h-1z`;
  }
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${n + 2 * quiet} ${n + 2 * quiet}`);
  svg.setAttribute('class', 'qr');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', t('slips.qr_label', { order: value }));
  svg.dataset.modules = String(n);
  const bg = document.createElementNS(SVG, 'rect');
  bg.setAttribute('width', '100%');
  bg.setAttribute('height', '100%');
  bg.setAttribute('fill', '#fff');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', d);
  path.setAttribute('fill', '#000');
  svg.append(bg, path);
  return svg;
}

function slip(o, products) {
  const name = products.get(o.sku) || o.sku;
  const place = [o.province_name || o.province, o.city, o.district].filter(Boolean).join(' ');
  return h('article', { class: 'slip', 'data-order': o.order_id },
    h('div', { class: 'slip-head' },
      h('div', { class: 'grow' },
        h('p', { class: 'label' }, t('slips.to')),
        o.recipient ? h('p', { class: 'recipient' }, o.recipient, ' ', h('span', { class: 'mono' }, o.phone)) : h('p', { class: 'notice warn' }, t('orders.no_address')),
        h('p', { class: 'address' }, place),
        h('p', { class: 'address' }, o.line, o.postcode ? ` ${o.postcode}` : '')),
      qr(o.order_id)),
    h('table', { class: 'slip-items' },
      h('tbody', {}, h('tr', {}, h('td', {}, name, ' ', h('span', { class: 'mono' }, o.sku)), h('td', { class: 'num' }, `× ${o.qty}`)))),
    h('p', { class: 'small' },
      h('span', { class: 'mono' }, o.order_id), ' · ', t('slips.paid_at', { when: dateTime(o.completed_at) }),
      o.ships_by ? ` · ${t('product.ships_by', { date: day(o.ships_by) })}` : ''),
    o.note ? h('p', { class: 'small notice warn' }, o.note) : null);
}

async function load() {
  $('#back').href = `/host/${encodeURIComponent(saleId)}`;
  if (!usable(token)) {
    $('#signin-needed').hidden = false;
    $('#signin-link').href = `/signin?next=${encodeURIComponent(`/host/${saleId}/slips`)}`;
    return;
  }
  try {
    const [sale, csv] = await Promise.all([
      api(`/sales/${encodeURIComponent(saleId)}`),
      apiText(`/sales/${encodeURIComponent(saleId)}/packing.csv`, { token, accept: 'text/csv' }),
    ]);
    document.title = `${sale.title} · ${t('slips.page_title')}`;
    text($('#title'), `${t('slips.page_title')} · ${sale.title}`);
    const products = new Map((sale.products || []).map((p) => [p.sku, p.name]));
    const rows = csvRecords(csv).filter((o) => o.order_id);
    $('#slips').replaceChildren(...rows.map((o) => slip(o, products)));
    text($('#count'), t('slips.count', { n: rows.length }));
    document.body.dataset.ready = 'true';
    document.body.dataset.lang = lang;
  } catch (err) {
    text($('#error'), describe(err));
  }
}

$('#print').addEventListener('click', () => window.print());
load();
