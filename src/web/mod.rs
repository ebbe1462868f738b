//! The browser pages: live sales, the viewer's page, the host's console and
//! the operators' dashboard. Plain HTML, CSS and JavaScript compiled into the
//! binary, so a node needs no other files and the pages fetch nothing from
//! the internet; they only talk to the public API (`/api/v1`).
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
/// broadcast may come from (`--stream-hosts`; the `stream_url` is shown in a
/// sandboxed iframe), so no other page can be framed in ours even if a URL
/// got past validation. `connect-src 'self'` covers the API, the WebSocket
/// and the SSE stream.
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
        let policy = format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-src {frames}; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'"
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

/// One embedded file.
struct File {
    /// Its path under `src/web/`, and under `/` in URLs for assets.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Computed on first use: a hash of the body, so browsers revalidate
    /// cheaply and never keep a file of an older binary.
    etag: OnceLock<Option<HeaderValue>>,
}

macro_rules! file {
    ($name:literal, $type:expr) => {
        File {
            name: $name,
            content_type: $type,
            body: include_bytes!($name),
            etag: OnceLock::new(),
        }
    };
}

static INDEX: File = file!("pages/index.html", HTML);
static VIEWER: File = file!("pages/viewer.html", HTML);
static HOST: File = file!("pages/host.html", HTML);
static OPS: File = file!("pages/ops.html", HTML);

/// Served at `/<name>`.
static ASSETS: [File; 11] = [
    file!("assets/app.css", CSS),
    file!("assets/common.js", JS),
    file!("assets/home.js", JS),
    file!("assets/viewer.js", JS),
    file!("assets/host.js", JS),
    file!("assets/ops.js", JS),
    file!("assets/icon.svg", SVG),
    file!("vendor/uplot/uPlot.iife.min.js", JS),
    file!("vendor/uplot/uPlot.min.css", CSS),
    file!("vendor/uplot/LICENSE", TEXT),
    file!("vendor/README.md", TEXT),
];

/// The pages and their assets; merged into the API's router by `http::app`.
/// Every response of theirs, a 404 included, carries the security headers.
pub fn router<S: Clone + Send + Sync + 'static>(policy: Policy) -> Router<S> {
    Router::new()
        .route("/", page(&INDEX))
        .route("/sales/{id}", page(&VIEWER))
        .route("/host", page(&HOST))
        .route("/host/{id}", page(&HOST))
        .route("/ops", page(&OPS))
        .route("/assets/{*path}", get(asset))
        .route("/vendor/{*path}", get(vendor))
        .layer(axum::middleware::map_response(move |mut res: Response| {
            secure(res.headers_mut(), &policy);
            std::future::ready(res)
        }))
}

/// The same HTML for every id: the page's script reads the id from its URL
/// and asks the API, which answers 404 for a sale that does not exist.
fn page<S: Clone + Send + Sync + 'static>(file: &'static File) -> MethodRouter<S> {
    get(move |headers: HeaderMap| async move { serve(file, &headers) })
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    lookup(&format!("assets/{path}"), &headers)
}

async fn vendor(Path(path): Path<String>, headers: HeaderMap) -> Response {
    lookup(&format!("vendor/{path}"), &headers)
}

fn lookup(name: &str, headers: &HeaderMap) -> Response {
    match ASSETS.iter().find(|f| f.name == name) {
        Some(file) => serve(file, headers),
        None => ApiError::NotFound("no such file".into()).into_response(),
    }
}

fn serve(file: &File, request: &HeaderMap) -> Response {
    // Quoted hex digits are always a valid header value; were one not, the
    // file would go without an ETag rather than take the node down.
    let etag = file.etag.get_or_init(|| {
        let digest = Sha256::digest(file.body);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        HeaderValue::from_str(&format!("\"{hex}\"")).ok()
    });
    let fresh = etag.as_ref().is_some_and(|etag| {
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
        file.body.into_response()
    };
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
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

    /// The policy forbids inline code; a page that had some would break.
    #[test]
    fn pages_have_no_inline_scripts_styles_or_handlers() {
        for file in [&INDEX, &VIEWER, &HOST, &OPS] {
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
