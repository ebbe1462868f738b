// The viewer page's broadcast: the sale's `stream_url` above the shop.
//
// An HLS playlist (`.m3u8`) plays through the vendored hls.js where the
// browser has Media Source Extensions (most Android phones and desktops),
// natively where it has HLS but no MSE (Safari on older iPhones); an MP4
// plays in the video element directly; anything else is a streaming
// platform's player page, shown in a sandboxed frame (the server admits only
// the platforms it lists, and the CSP's `frame-src` names the same ones).
// The player never holds up the shop: a stream that fails says so, and the
// products below work as before.
//
// `data-state` on the container (read by the tests, styled by app.css):
// none | not_live | ended | loading | playing | failed.

import { h, t, text, dateTime } from './common.js';

const HLS_TYPE = 'application/vnd.apple.mpegurl';
/** How long a stream may take to show its first picture before the page says it failed. */
const START_WITHIN_MS = 20000;

/** How `url` is played: 'hls', 'mp4', 'embed', or null (not playable here). */
export function kindOf(url) {
  let u;
  try {
    u = new URL(url, location.href);
  } catch {
    return null;
  }
  const path = u.pathname.toLowerCase();
  const same = u.origin === location.origin;
  if (u.protocol !== 'https:' && !same) return null;
  if (path.endsWith('.m3u8')) return 'hls';
  if (path.endsWith('.mp4')) return 'mp4';
  // allow-scripts + allow-same-origin would un-sandbox a page of our own origin.
  return same ? null : 'embed';
}

let hlsModule = null;
/** hls.js, fetched from the node only when a sale streams HLS. */
async function loadHls() {
  hlsModule ??= import('/vendor/hls/hls.light.min.mjs').then((m) => m.default);
  return hlsModule;
}

export class Player {
  constructor(root) {
    this.root = root;
    this.url = null;
    this.hls = null;
    this.timer = null;
    this.video = h('video', {
      class: 'video-el',
      playsinline: true,
      muted: true,
      autoplay: true,
      controls: true,
      loop: true,
      preload: 'none',
      poster: '/assets/poster.svg',
      'aria-label': t('player.label'),
    });
    // The attribute alone does not mute in every browser; autoplay needs it.
    this.video.muted = true;
    this.note = h('p', { class: 'player-note', role: 'status' });
    this.frame = null;
    this.retried = false;
    root.replaceChildren(this.video, this.note);
    this.video.addEventListener('playing', () => this.state('playing'));
    this.video.addEventListener('error', () => this.failed());
  }

  state(s, words = '') {
    this.root.dataset.state = s;
    if (s === 'playing') clearTimeout(this.timer);
    text(this.note, words);
    this.note.hidden = !words;
  }

  /** Shows the sale: its broadcast when live, else why there is none. */
  show(sale) {
    const url = sale.stream_url;
    this.root.hidden = false;
    if (!url) {
      this.stop();
      this.root.hidden = true;
      this.state('none');
      return;
    }
    if (sale.status === 'scheduled') {
      this.stop();
      this.state('not_live', sale.scheduled_at ? t('player.not_live_at', { when: dateTime(sale.scheduled_at) }) : t('player.not_live'));
      return;
    }
    if (sale.status === 'ended') {
      this.stop();
      this.state('ended', t('player.ended'));
      return;
    }
    if (url === this.url && this.root.dataset.state !== 'failed') return;
    this.play(url);
  }

  stop() {
    clearTimeout(this.timer);
    this.hls?.destroy();
    this.hls = null;
    this.frame?.remove();
    this.frame = null;
    this.video.hidden = false;
    this.video.removeAttribute('src');
    this.video.load();
    this.url = null;
  }

  async play(url) {
    this.stop();
    this.url = url;
    const kind = kindOf(url);
    this.root.dataset.kind = kind || 'none';
    if (!kind) {
      this.failed();
      return;
    }
    this.retried = false;
    this.state('loading', t('player.loading'));
    this.timer = setTimeout(() => this.failed(), START_WITHIN_MS);
    if (kind === 'embed') {
      this.video.hidden = true;
      this.frame = h('iframe', {
        src: url,
        title: t('player.label'),
        // Enough for a video player; no forms, popups or navigating this page.
        sandbox: 'allow-scripts allow-same-origin allow-presentation',
        allow: 'autoplay; fullscreen; picture-in-picture',
        allowfullscreen: true,
        referrerpolicy: 'no-referrer',
        loading: 'lazy',
      });
      // A frame says nothing of what it shows: loaded is the best we know.
      this.frame.addEventListener('load', () => this.state('playing'));
      this.root.prepend(this.frame);
      return;
    }
    this.video.preload = 'auto';
    if (kind === 'mp4') {
      this.root.dataset.engine = 'native';
      this.video.src = url;
      this.start();
      return;
    }
    const mse = 'MediaSource' in window || 'ManagedMediaSource' in window;
    let Hls = null;
    if (mse) {
      try {
        Hls = await loadHls();
      } catch {
        Hls = null;
      }
    }
    if (this.url !== url) return; // another show() came meanwhile
    if (Hls && Hls.isSupported()) {
      this.root.dataset.engine = 'hls.js';
      // No worker: the CSP allows none (it would need a blob: script).
      const hls = new Hls({ enableWorker: false, lowLatencyMode: true, backBufferLength: 30 });
      this.hls = hls;
      hls.on(Hls.Events.ERROR, (event, data) => {
        if (!data.fatal) return;
        // A network hiccup: ask for the playlist once more; anything else,
        // or a second failure, ends it (the shop below does not wait).
        if (data.type === Hls.ErrorTypes.NETWORK_ERROR && !this.retried) {
          this.retried = true;
          hls.loadSource(url);
        } else {
          this.failed();
        }
      });
      hls.loadSource(url);
      hls.attachMedia(this.video);
      this.start();
    } else if (this.video.canPlayType(HLS_TYPE)) {
      this.root.dataset.engine = 'native';
      this.video.src = url;
      this.start();
    } else {
      this.failed();
    }
  }

  start() {
    const p = this.video.play();
    // A browser that refuses autoplay leaves the controls to the viewer. A
    // stream that failed meanwhile also rejects this promise (AbortError):
    // that is said by failed(), not overwritten here.
    if (p && p.catch) {
      p.catch((err) => {
        if (err && err.name === 'NotAllowedError' && this.root.dataset.state === 'loading') this.state('loading', t('player.tap_to_play'));
      });
    }
  }

  failed() {
    this.hls?.destroy();
    this.hls = null;
    clearTimeout(this.timer);
    this.state('failed', t('player.failed'));
  }
}
