//! A bounded fuzz pass over every REST parser of untrusted input: bodies of
//! every endpoint, path segments and query strings. No answer is a 500 and
//! every refusal is one of the contract's errors.

use std::sync::OnceLock;

use lychee_live::http::error::ERROR_CODES;
use lychee_live::identity::Role;
use proptest::prelude::*;

use crate::helpers::{TestApp, TestEnv};

struct World {
    rt: tokio::runtime::Runtime,
    app: TestApp,
    host: String,
    sale: String,
    _env: TestEnv,
}

/// One embedded node for the whole pass (its own runtime: proptest is sync).
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut env = TestEnv::embedded();
        let app = rt.block_on(env.node());
        let host = env.token(Role::Host, "alice");
        let sale = rt.block_on(app.live_sale(&host, "reserve", "FZX", 1_000_000, 1000));
        World {
            rt,
            app,
            host,
            sale,
            _env: env,
        }
    })
}

fn check(status: u16, text: &str) -> Result<(), TestCaseError> {
    prop_assert!(status != 500, "500: {text}");
    if status >= 400 && status != 405 {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {status} {text}")))?;
        let code = v["error"]["code"].as_str().unwrap_or("");
        // The contract's codes, the one list the pages' messages follow too;
        // `internal` is a 500, which no input may cause.
        prop_assert!(
            ERROR_CODES.contains(&code) && code != "internal",
            "{status} {text}"
        );
    }
    Ok(())
}

fn json_ish() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,200}",
        "\\{\"(sku|qty|title|name|price_cents|stock|add|payment_ref|checkout)\": ?(-?[0-9]{1,25}|\"[^\"]{0,40}\"|null|true|\\[\\]|\\{\\}|1e999)\\}",
        "\\{\"sku\": ?\"[A-Za-z0-9_ -]{0,70}\", ?\"qty\": ?-?[0-9.e]{1,22}\\}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_body_to_any_endpoint(body in json_ish(), endpoint in 0usize..7, content_type in prop::bool::weighted(0.9)) {
        let w = world();
        let s = &w.sale;
        let path = [
            "/sales".to_owned(),
            format!("/sales/{s}/products"),
            format!("/sales/{s}/products/FZX/restock"),
            format!("/sales/{s}/pin"),
            format!("/sales/{s}/orders"),
            "/guests".to_owned(),
            format!("/orders/{}/pay", uuid::Uuid::new_v4()),
        ][endpoint].clone();
        let (status, text) = w.rt.block_on(async {
            let mut req = w.app.http.post(w.app.url(&path)).bearer_auth(&w.host)
                .header("Idempotency-Key", "fuzz").body(body.clone());
            if content_type {
                req = req.header("content-type", "application/json");
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        });
        check(status, &text)?;
    }

    #[test]
    fn any_path_and_query(segment in "[^/?#]{0,60}", query in "[^#]{0,80}") {
        let w = world();
        let seg = urlencode(&segment);
        for path in [format!("/sales/{seg}?{query}"), format!("/sales?{query}"), format!("/orders/{seg}")] {
            let (status, text) = w.rt.block_on(async {
                let r = w.app.http.get(w.app.url(&path)).bearer_auth(&w.host).send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.text().await.unwrap())
            });
            check(status, &text)?;
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
