//! The browser pages: live sales, the viewer's page, the host's console and
//! the operators' dashboard. Plain HTML, CSS and JavaScript compiled into the
//! binary, so a node needs no other files and the pages fetch nothing from
//! the internet; they only talk to the public API (`/api/v1`).
//!
//! Every word on the pages comes from a catalogue per language
//! (`i18n/zh-CN.json`, `i18n/en.json`; see docs/pages.md). Chinese is the
//! default; a page is served with `<html lang="en">` when the browser's
//! `Accept-Language` prefers English, and a switch on the page (kept in the
//! browser) overrides both.
//!
//! Every response carries a strict Content-Security-Policy: scripts and
//! styles only from these files (no inline code at all), so a user's text
//! that some day reached the page as markup still could not run. The scripts
//! put user data in the page with `textContent`, never as HTML.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use sha2::{Digest, Sha256};

use crate::catalog::validate::StreamHosts;
use crate::http::error::ApiError;

/// The Content-Security-Policy sent with every page and asset, built once
/// at start-up: its `frame-src` names exactly the streaming hosts a sale's
/// broadcast may come from (`--stream-hosts`; a platform's player page is
/// shown in a sandboxed iframe), so no other page can be framed in ours even
/// if a URL got past validation. The same hosts may serve an HLS playlist or
/// an MP4 to the page's own player: `media-src` for the video element and
/// `connect-src` for hls.js, which fetches the segments itself and hands
/// them to the element as a `blob:` MediaSource. `connect-src 'self'` covers
/// the API, the WebSocket and the SSE stream; `img-src blob:` shows a
/// claim's photos, fetched with the Authorization header a plain `<img>`
/// cannot send.
#[derive(Clone)]
pub struct Policy(HeaderValue);

impl Policy {
    pub fn new(hosts: &StreamHosts) -> Self {
        let sources = hosts.csp_sources();
        let frames = if sources.is_empty() {
            "'none'".to_owned()
        } else {
            sources.join(" ")
        };
        let streams: String = sources.iter().map(|s| format!(" {s}")).collect();
        let policy = format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
             media-src 'self' blob:{streams}; connect-src 'self'{streams}; frame-src {frames}; \
             worker-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'"
        );
        // StreamHosts holds DNS names only, so this is a valid header; were
        // it not, the pages would frame nothing rather than anything.
        Policy(HeaderValue::from_str(&policy).unwrap_or_else(|_| {
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; \
                 img-src 'self' data:; connect-src 'self'; frame-src 'none'; \
                 object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            )
        }))
    }

    pub fn header(&self) -> &HeaderValue {
        &self.0
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(&StreamHosts::default())
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const M3U8: &str = "application/vnd.apple.mpegurl";
const MPEG_TS: &str = "video/mp2t";

/// One embedded file.
struct File {
    /// Its path under `src/web/`, and under `/` in URLs for assets.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Computed on first use: a hash of the body, so browsers revalidate
    /// cheaply and never keep a file of an older binary.
    etag: OnceLock<Option<HeaderValue>>,
    /// A page's English variant (`<html lang="en">`), made on first use.
    english: OnceLock<Variant>,
}

struct Variant {
    body: Vec<u8>,
    etag: Option<HeaderValue>,
}

macro_rules! file {
    ($name:literal, $type:expr) => {
        File {
            name: $name,
            content_type: $type,
            body: include_bytes!($name),
            etag: OnceLock::new(),
            english: OnceLock::new(),
        }
    };
}

static INDEX: File = file!("pages/index.html", HTML);
static VIEWER: File = file!("pages/viewer.html", HTML);
static HOST: File = file!("pages/host.html", HTML);
static OPS: File = file!("pages/ops.html", HTML);
static SIGNIN: File = file!("pages/signin.html", HTML);
static SLIPS: File = file!("pages/slips.html", HTML);

/// Every page, for the tests of their markup.
#[cfg(test)]
static PAGES: [&File; 6] = [&INDEX, &VIEWER, &HOST, &OPS, &SIGNIN, &SLIPS];

/// What a page's `<html>` says before a browser's language changes it.
const DEFAULT_LANG_TAG: &str = "<html lang=\"zh-CN\">";

/// Served at `/<name>`.
static ASSETS: [File; 25] = [
    file!("assets/app.css", CSS),
    file!("assets/i18n.js", JS),
    file!("assets/common.js", JS),
    file!("assets/home.js", JS),
    file!("assets/viewer.js", JS),
    file!("assets/player.js", JS),
    file!("assets/host.js", JS),
    file!("assets/slips.js", JS),
    file!("assets/ops.js", JS),
    file!("assets/signin.js", JS),
    file!("assets/icon.svg", SVG),
    file!("assets/poster.svg", SVG),
    file!("i18n/zh-CN.json", JSON),
    file!("i18n/en.json", JSON),
    file!("vendor/uplot/uPlot.iife.min.js", JS),
    file!("vendor/uplot/uPlot.min.css", CSS),
    file!("vendor/uplot/LICENSE", TEXT),
    file!("vendor/hls/hls.light.min.mjs", JS),
    file!("vendor/hls/LICENSE", TEXT),
    file!("vendor/qrcode/qrcode.mjs", JS),
    file!("vendor/qrcode/LICENSE", TEXT),
    file!("vendor/README.md", TEXT),
    // The embedded demo's test broadcast (scripts/make-test-stream).
    file!("demo/index.m3u8", M3U8),
    file!("demo/seg0.ts", MPEG_TS),
    file!("demo/seg1.ts", MPEG_TS),
];

/// The embedded demo sale's `stream_url`: the test broadcast above, on the
/// node itself (a path, not an https URL: only the demo, which is seeded
/// without the API, has one).
pub const DEMO_STREAM: &str = "/demo/index.m3u8";

/// The pages and their assets; merged into the API's router by `http::app`.
/// Every response of theirs, a 404 included, carries the security headers.
pub fn router<S: Clone + Send + Sync + 'static>(policy: Policy) -> Router<S> {
    Router::new()
        .route("/", page(&INDEX))
        .route("/sales/{id}", page(&VIEWER))
        .route("/host", page(&HOST))
        .route("/host/{id}", page(&HOST))
        .route("/ops", page(&OPS))
        .route("/signin", page(&SIGNIN))
        .route("/host/{id}/slips", page(&SLIPS))
        .route("/assets/{*path}", get(asset))
        .route("/vendor/{*path}", get(vendor))
        .route("/i18n/{*path}", get(catalogue))
        .route("/demo/{*path}", get(demo))
        .layer(axum::middleware::map_response(move |mut res: Response| {
            secure(res.headers_mut(), &policy);
            std::future::ready(res)
        }))
}

/// The same HTML for every id: the page's script reads the id from its URL
/// and asks the API, which answers 404 for a sale that does not exist.
fn page<S: Clone + Send + Sync + 'static>(file: &'static File) -> MethodRouter<S> {
    get(move |headers: HeaderMap| async move {
        let mut res = if prefers_english(&headers) {
            let v = english(file);
            respond(file.content_type, &v.body, v.etag.as_ref(), &headers)
        } else {
            serve(file, &headers)
        };
        // Caches must keep one copy per language.
        res.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept-Language"));
        res
    })
}

/// The page with `<html lang="en">`: its script then loads the English
/// catalogue (unless the browser kept another choice).
fn english(file: &'static File) -> &'static Variant {
    file.english.get_or_init(|| {
        let html =
            String::from_utf8_lossy(file.body).replacen(DEFAULT_LANG_TAG, "<html lang=\"en\">", 1);
        let body = html.into_bytes();
        let etag = etag_of(&body, "-en");
        Variant { body, etag }
    })
}

/// Whether `Accept-Language` ranks English above Chinese. Chinese, the
/// pages' default, wins ties and an absent or unreadable header.
fn prefers_english(headers: &HeaderMap) -> bool {
    let (mut en, mut zh) = (0.0f32, 0.0f32);
    let values = headers
        .get_all(header::ACCEPT_LANGUAGE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    for range in values.flat_map(|v| v.split(',')) {
        let mut parts = range.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        let primary = tag.split('-').next().unwrap_or("");
        match primary {
            "en" => en = en.max(q),
            "zh" => zh = zh.max(q),
            _ => {}
        }
    }
    en > zh
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    lookup(&format!("assets/{path}"), &headers)
}

async fn vendor(Path(path): Path<String>, headers: HeaderMap) -> Response {
    lookup(&format!("vendor/{path}"), &headers)
}

async fn catalogue(Path(path): Path<String>, headers: HeaderMap) -> Response {
    lookup(&format!("i18n/{path}"), &headers)
}

async fn demo(Path(path): Path<String>, headers: HeaderMap) -> Response {
    lookup(&format!("demo/{path}"), &headers)
}

fn lookup(name: &str, headers: &HeaderMap) -> Response {
    match ASSETS.iter().find(|f| f.name == name) {
        Some(file) => serve(file, headers),
        None => ApiError::NotFound("no such file".into()).into_response(),
    }
}

fn serve(file: &File, request: &HeaderMap) -> Response {
    let etag = file.etag.get_or_init(|| etag_of(file.body, ""));
    respond(file.content_type, file.body, etag.as_ref(), request)
}

/// Quoted hex digits are always a valid header value; were one not, the
/// file would go without an ETag rather than take the node down.
fn etag_of(body: &[u8], suffix: &str) -> Option<HeaderValue> {
    let digest = Sha256::digest(body);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}{suffix}\"")).ok()
}

fn respond(
    content_type: &'static str,
    body: &'static [u8],
    etag: Option<&HeaderValue>,
    request: &HeaderMap,
) -> Response {
    let fresh = etag.is_some_and(|etag| {
        request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim() == etag || tag.trim() == "*")
    });
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag.clone());
    }
    // Revalidate every time (a 304 is cheap): a new binary's pages and
    // scripts must never mix with an old one's.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// The security headers of every response of this module.
fn secure(h: &mut HeaderMap, policy: &Policy) {
    h.insert(header::CONTENT_SECURITY_POLICY, policy.header().clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Older browsers ignore `frame-ancestors`.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod i18n_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str, if_none_match: Option<&str>) -> Response {
        let mut req = Request::get(uri);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>(Policy::default())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_page_and_asset_has_its_type_and_the_policy() {
        let pages = [
            ("/", HTML),
            ("/sales/3f0c", HTML),
            ("/host", HTML),
            ("/host/3f0c", HTML),
            ("/ops", HTML),
            ("/signin", HTML),
            ("/host/3f0c/slips", HTML),
        ];
        let assets = ASSETS
            .iter()
            .map(|f| (format!("/{}", f.name), f.content_type));
        let all = pages
            .into_iter()
            .map(|(u, t)| (u.to_owned(), t))
            .chain(assets);
        for (uri, content_type) in all {
            let res = get(&uri, None).await;
            assert_eq!(res.status(), StatusCode::OK, "{uri}");
            let h = res.headers();
            assert_eq!(h[header::CONTENT_TYPE], content_type, "{uri}");
            assert_eq!(
                &h[header::CONTENT_SECURITY_POLICY],
                Policy::default().header(),
                "{uri}"
            );
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        }
    }

    #[tokio::test]
    async fn a_known_etag_answers_304_and_an_unknown_file_404() {
        let first = get("/assets/app.css", None).await;
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = get("/assets/app.css", Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY));
        let missing = get("/assets/nope.js", None).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(missing
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY));
        // The pages' sources are not assets.
        assert_eq!(
            get("/assets/../pages/index.html", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn frames_only_the_listed_stream_hosts() {
        let csp = |entries: &[&str]| {
            let hosts = StreamHosts::parse(entries).unwrap();
            Policy::new(&hosts).header().to_str().unwrap().to_owned()
        };
        let listed = csp(&["live.douyin.com", "*.bilivideo.com"]);
        assert!(
            listed.contains("; frame-src https://live.douyin.com https://*.bilivideo.com; "),
            "{listed}"
        );
        assert!(!listed.contains("https:;"), "{listed}");
        assert!(csp(&[]).contains("; frame-src 'none'; "));
        let default = Policy::default().header().to_str().unwrap().to_owned();
        for host in crate::catalog::validate::DEFAULT_STREAM_HOSTS.split(',') {
            assert!(default.contains(&format!(" https://{host}")), "{default}");
        }
    }

    #[test]
    fn media_and_connections_reach_only_the_node_and_the_stream_hosts() {
        let hosts = StreamHosts::parse(["live.douyin.com"]).unwrap();
        let csp = Policy::new(&hosts).header().to_str().unwrap().to_owned();
        assert!(
            csp.contains("; media-src 'self' blob: https://live.douyin.com; "),
            "{csp}"
        );
        assert!(
            csp.contains("; connect-src 'self' https://live.douyin.com; "),
            "{csp}"
        );
        assert!(csp.contains("; worker-src 'none'; "), "{csp}");
        let none = Policy::new(&StreamHosts::parse::<&str>([]).unwrap());
        let none = none.header().to_str().unwrap();
        assert!(
            none.contains("; media-src 'self' blob:; connect-src 'self'; "),
            "{none}"
        );
    }

    #[tokio::test]
    async fn accept_language_picks_the_pages_language() {
        async fn lang(accept: Option<&str>) -> String {
            let mut req = Request::get("/sales/3f0c");
            if let Some(a) = accept {
                req = req.header(header::ACCEPT_LANGUAGE, a);
            }
            let res = router::<()>(Policy::default())
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.headers()[header::VARY], "Accept-Language");
            let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            let html = String::from_utf8(body.to_vec()).unwrap();
            let start = html.find("<html lang=\"").unwrap() + 12;
            html[start..start + html[start..].find('"').unwrap()].to_owned()
        }
        assert_eq!(lang(None).await, "zh-CN");
        assert_eq!(lang(Some("zh-CN,zh;q=0.9,en;q=0.8")).await, "zh-CN");
        assert_eq!(lang(Some("en-US,en;q=0.9")).await, "en");
        assert_eq!(lang(Some("en-GB;q=0.5, zh-TW;q=0.7")).await, "zh-CN");
        assert_eq!(lang(Some("fr-FR, en;q=0.3")).await, "en");
        assert_eq!(lang(Some("de")).await, "zh-CN");
        assert_eq!(lang(Some("en;q=garbage, zh;q=0.1")).await, "en");
        // The English variant has its own ETag, so a cache never mixes them.
        let zh = get("/ops", None).await.headers()[header::ETAG].clone();
        let mut req = Request::get("/ops");
        req = req.header(header::ACCEPT_LANGUAGE, "en");
        let en = router::<()>(Policy::default())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_ne!(en.headers()[header::ETAG], zh);
    }

    #[test]
    fn every_page_starts_in_chinese_and_every_asset_name_is_unique() {
        for file in PAGES {
            let html = std::str::from_utf8(file.body).unwrap();
            assert!(html.contains(DEFAULT_LANG_TAG), "{}", file.name);
        }
        let mut names: Vec<_> = ASSETS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
    }

    /// What the pages and scripts load is served: a renamed file would
    /// otherwise break a page only in a browser.
    #[tokio::test]
    async fn every_file_a_page_or_script_loads_is_served() {
        let mut wanted = Vec::new();
        let quoted = |text: &str, prefix: &str| -> Vec<String> {
            text.match_indices(prefix)
                .filter_map(|(i, _)| {
                    let rest = &text[i + prefix.len()..];
                    rest.find(['"', '\'']).map(|end| rest[..end].to_owned())
                })
                .collect()
        };
        for file in PAGES {
            let html = std::str::from_utf8(file.body).unwrap();
            for prefix in ["src=\"/", "href=\"/assets/", "href=\"/vendor/"] {
                wanted.extend(quoted(html, prefix).into_iter().map(|p| {
                    let base = prefix
                        .trim_start_matches("src=\"")
                        .trim_start_matches("href=\"");
                    format!("{}{p}", if base.starts_with('/') { base } else { "/" })
                }));
            }
        }
        for file in ASSETS
            .iter()
            .filter(|f| f.content_type == JS && f.name.starts_with("assets/"))
        {
            let js = std::str::from_utf8(file.body).unwrap();
            wanted.extend(
                quoted(js, "from './")
                    .into_iter()
                    .map(|p| format!("/assets/{p}")),
            );
            wanted.extend(quoted(js, "import('/").into_iter().map(|p| format!("/{p}")));
            wanted.extend(quoted(js, "from '/").into_iter().map(|p| format!("/{p}")));
        }
        assert!(wanted.len() > 20, "{wanted:?}");
        for uri in wanted {
            assert_eq!(get(&uri, None).await.status(), StatusCode::OK, "{uri}");
        }
    }

    /// The policy forbids inline code; a page that had some would break.
    #[test]
    fn pages_have_no_inline_scripts_styles_or_handlers() {
        for file in PAGES {
            let html = std::str::from_utf8(file.body).unwrap().to_lowercase();
            for script in html.split("<script").skip(1) {
                let tag = &script[..script.find('>').unwrap()];
                assert!(tag.contains("src="), "{}: inline script", file.name);
            }
            assert!(!html.contains("<style"), "{}: <style>", file.name);
            assert!(!html.contains(" style="), "{}: style=", file.name);
            for handler in ["onclick=", "onload=", "onerror=", "onsubmit=", "oninput="] {
                assert!(!html.contains(handler), "{}: {handler}", file.name);
            }
            assert!(!html.contains("javascript:"), "{}: javascript:", file.name);
        }
    }
}
