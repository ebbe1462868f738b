// The pages' languages: Simplified Chinese first, English by a switch.
//
// Every word a page shows comes from a catalogue, /i18n/<lang>.json, one
// flat object of keys to strings (`{name}` marks a value filled in at run
// time). The markup names keys (`data-i18n="viewer.join"`, and
// `data-i18n-placeholder`, `-aria-label`, `-title`, `-alt` for attributes);
// scripts call `t(key, values)`. See docs/pages.md to add a string.
//
// Which language: the one the switch kept in this browser, else the page's
// `<html lang>` (the server picks it from Accept-Language), else Chinese.

const KEEP = 'lychee-live.lang';
export const LANGS = ['zh-CN', 'en'];
/** Where dates and times are shown unless the browser names its own zone. */
export const HOME_ZONE = 'Asia/Shanghai';

function chosen() {
  const kept = localStorage.getItem(KEEP);
  if (LANGS.includes(kept)) return kept;
  const page = document.documentElement.lang;
  return page && page.toLowerCase().startsWith('en') ? 'en' : 'zh-CN';
}

export const lang = chosen();
document.documentElement.lang = lang;

let strings = {};
let fallback = null;

async function load(l) {
  const res = await fetch(`/i18n/${l}.json`, { cache: 'no-cache' });
  if (!res.ok) throw new Error(`catalogue ${l}: ${res.status}`);
  return res.json();
}

try {
  strings = await load(lang);
} catch {
  // Without a catalogue the page shows its keys; better than nothing.
  strings = {};
}

/** The string of `key` with `{name}`s filled from `values` (as text). */
export function t(key, values = {}) {
  let s = strings[key];
  if (s == null) {
    console.warn(`i18n: no "${key}" in ${lang}`);
    s = fallback?.[key] ?? key;
  }
  return s.replace(/\{(\w+)\}/g, (m, name) => (values[name] == null ? m : String(values[name])));
}

/** Whether the catalogue has `key` (for codes that come from the server). */
export const has = (key) => Object.prototype.hasOwnProperty.call(strings, key);

const ATTRS = ['placeholder', 'aria-label', 'title', 'alt'];

/** Fills every element of `root` that names a key. */
export function translate(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const attr of ATTRS) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`)));
  }
}

/** The header's language switch (`#lang`): keeps the choice and reloads. */
function wireSwitch() {
  const button = document.getElementById('lang');
  if (!button) return;
  const other = lang === 'en' ? 'zh-CN' : 'en';
  button.textContent = t(`lang.switch_to.${other}`);
  button.setAttribute('lang', other);
  button.addEventListener('click', () => {
    localStorage.setItem(KEEP, other);
    location.reload();
  });
}

// ---------------------------------------------------------------- formats

/** The browser's time zone when it names one, else China's. */
export const zone = (() => {
  try {
    const z = Intl.DateTimeFormat().resolvedOptions().timeZone;
    // An unconfigured machine reports UTC: not a buyer's zone, show China's.
    return z && !/^(Etc\/)?(UTC|GMT|Universal|Zulu)$/i.test(z) ? z : HOME_ZONE;
  } catch {
    return HOME_ZONE;
  }
})();

const locale = lang === 'en' ? 'en-GB' : 'zh-CN';

/** `¥168.00`: the narrow symbol in both languages. */
export function money(cents, currency = 'CNY') {
  const n = Number(cents) / 100;
  try {
    return new Intl.NumberFormat(locale, { style: 'currency', currency, currencyDisplay: 'narrowSymbol' }).format(n);
  } catch {
    return `${n.toFixed(2)} ${currency}`;
  }
}

export function number(n) {
  return new Intl.NumberFormat(locale).format(n);
}

function format(value, options) {
  const d = new Date(value);
  if (value == null || Number.isNaN(d.getTime())) return '';
  return new Intl.DateTimeFormat(locale, { timeZone: zone, ...options }).format(d);
}

export const time = (v) => format(v, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
export const dateTime = (v) => format(v, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hour12: false });
/** A calendar date (`2027-07-15`, as `ships_by` is) shown as such, in no zone. */
export function day(isoDate) {
  if (!isoDate) return '';
  const d = new Date(`${isoDate}T00:00:00Z`);
  if (Number.isNaN(d.getTime())) return isoDate;
  return new Intl.DateTimeFormat(locale, { timeZone: 'UTC', year: 'numeric', month: 'long', day: 'numeric' }).format(d);
}

translate();
wireSwitch();
if (lang !== 'zh-CN') {
  // Only for strings missing in English: the default language's words.
  load('zh-CN').then((c) => { fallback = c; }, () => {});
}
