// `/`: the live sales, each linking to its viewer page and its host console.

import { $, h, t, api, describe, badge, money, number, text } from './common.js';

function item(sale) {
  const products = sale.products || [];
  const left = products.reduce((n, p) => n + (p.remaining || 0), 0);
  const prices = products.map((p) => p.price_cents);
  const from = prices.length ? money(Math.min(...prices), products[0].currency) : null;
  return h('li', { class: 'card sale-item', 'data-sale': sale.id },
    h('div', { class: 'row' }, badge(sale.status), h('span', { class: 'muted small' },
      t('home.summary', { products: products.length, left: number(left) }), from ? ` · ${t('home.from', { price: from })}` : '')),
    h('h2', {}, sale.title),
    sale.description ? h('p', { class: 'desc' }, sale.description) : null,
    h('div', { class: 'row' },
      h('a', { class: 'btn primary', href: `/sales/${encodeURIComponent(sale.id)}`, 'data-link': 'viewer' }, t('home.watch')),
      h('a', { class: 'btn small', href: `/host/${encodeURIComponent(sale.id)}`, 'data-link': 'host' }, t('home.host_console'))));
}

async function refresh() {
  try {
    const { sales } = await api('/sales?status=live');
    $('#sales').replaceChildren(...sales.map(item));
    $('#empty').hidden = sales.length > 0;
    text($('#error'), '');
  } catch (err) {
    text($('#error'), t('home.load_failed', { why: describe(err) }));
  }
}

refresh();
// A new sale appears without a reload; the list is public and cheap.
setInterval(() => document.visibilityState === 'visible' && refresh(), 15000);
