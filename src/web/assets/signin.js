// `/signin`: where sign-in links land, and where a token is pasted.
//
// A link carries its secret after `#`, which the browser never sends to the
// server: `#token=<jwt>` (made in production, e.g. from `lychee-live token`)
// or `#signin=<code>` (the embedded node's banner: a one-time code, which
// this page exchanges for its token with `POST /api/v1/signin`). An optional
// `next=<path>` says where to go after; without it, the page of the token's
// role. The token is kept in this browser (localStorage, per kind of page)
// and the fragment is wiped from the address bar and history at once.

import { $, t, text, usable, claims, storeFor, signInFromFragment } from './common.js';

const fragment = new URLSearchParams(location.hash.slice(1));
// `next` is no secret: the banner puts it in the query, a hand-made link may
// put it in the fragment.
const next = safeNext(new URLSearchParams(location.search).get('next') || fragment.get('next'));

/** Only a path of this site: a link must not send the user elsewhere. */
function safeNext(path) {
  if (!path || !path.startsWith('/') || path.startsWith('//') || path.startsWith('/\\')) return null;
  try {
    const u = new URL(path, location.origin);
    return u.origin === location.origin ? u.pathname + u.search : null;
  } catch {
    return null;
  }
}

const home = (role) => next || (role === 'operator' ? '/ops' : role === 'host' ? '/host' : '/');

function done(token) {
  const c = claims(token);
  text($('#status'), t('signin.done', { name: c.name || c.sub, role: t(`role.${c.role}`) }));
  $('#token-form').hidden = true;
  $('#done').hidden = false;
  $('#go').href = home(c.role);
  document.body.dataset.signedIn = c.role;
  // A link is meant to open the page: go there, the history keeps no secret.
  location.replace(home(c.role));
}

function ask(why = '') {
  text($('#status'), t('signin.ask'));
  text($('#error'), why);
  $('#token-form').hidden = false;
  $('#token').focus();
}

$('#token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const token = $('#token').value.trim();
  if (!usable(token)) {
    text($('#error'), t('signin.invalid_token'));
    return;
  }
  $('#token').value = '';
  storeFor(claims(token).role).set(token);
  done(token);
});

if (fragment.get('token') || fragment.get('signin')) {
  const r = await signInFromFragment(fragment);
  if (r.token) done(r.token);
  else ask(r.error);
} else {
  ask(fragment.get('expired') ? t('signin.expired') : '');
}
