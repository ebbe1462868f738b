//! The buyer's address book (contract section 10), in both modes: bounds,
//! hostile input, the cap of 20 under racing creates, defaults, other
//! users' books, and a trace-level log that never carries a phone number.

use std::collections::HashSet;
use std::io::BufRead;
use std::time::Duration;

use lychee_live::identity::Role;
use serde_json::{json, Value};

use crate::helpers::{Reply, TestApp, TestEnv};

fn valid() -> Value {
    json!({
        "name": "李梅",
        "phone": "13812345678",
        "province": "440000",
        "city": "广州市",
        "district": "天河区",
        "line": "体育西路 191 号 12 楼",
        "postcode": "510620",
    })
}

fn with(field: &str, value: Value) -> Value {
    let mut v = valid();
    v[field] = value;
    v
}

fn without(field: &str) -> Value {
    let mut v = valid();
    v.as_object_mut().unwrap().remove(field);
    v
}

async fn create(app: &TestApp, token: &str, body: Value) -> Reply {
    app.post("/me/addresses", Some(token), body).await
}

async fn list(app: &TestApp, token: &str) -> Vec<Value> {
    app.get("/me/addresses", Some(token))
        .await
        .expect(200)
        .json()["addresses"]
        .as_array()
        .expect("addresses")
        .clone()
}

async fn delete(app: &TestApp, token: Option<&str>, id: &str) -> Reply {
    let mut req = app.http.delete(app.url(&format!("/me/addresses/{id}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    app.send(req).await
}

fn ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

fn defaults(list: &[Value]) -> usize {
    list.iter().filter(|a| a["is_default"] == true).count()
}

async fn crud_and_defaults(mut env: TestEnv) {
    let app = env.node().await;
    let mei = env.token(Role::Viewer, "mei");
    assert!(list(&app, &mei).await.is_empty());

    let a = create(&app, &mei, valid()).await.expect(201).json();
    let a_id = a["id"].as_str().unwrap().to_owned();
    uuid::Uuid::parse_str(&a_id).expect("a uuid");
    let mut expected = valid();
    expected["id"] = a_id.clone().into();
    expected["is_default"] = true.into();
    assert_eq!(
        a, expected,
        "the first address is the default, stored as sent"
    );

    // Optional fields left out are absent; text is trimmed.
    let b = create(
        &app,
        &mei,
        json!({ "name": "  Mei  ", "phone": "+85291234567", "province": "810000",
                "city": "Hong Kong", "line": "1 Queen's Road", "district": "" }),
    )
    .await
    .expect(201)
    .json();
    let b_id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(b["is_default"], false);
    assert_eq!(b["name"], "Mei");
    assert!(
        b.get("district").is_none() && b.get("postcode").is_none(),
        "{b}"
    );
    assert_eq!(
        ids(&list(&app, &mei).await),
        [a_id.as_str(), b_id.as_str()],
        "default first"
    );

    // A new default takes over in the same step.
    let c = create(&app, &mei, with("is_default", true.into()))
        .await
        .expect(201)
        .json();
    let c_id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["is_default"], true);
    let l = list(&app, &mei).await;
    assert_eq!(
        ids(&l),
        [c_id.as_str(), b_id.as_str(), a_id.as_str()],
        "default, then newest"
    );
    assert_eq!(defaults(&l), 1);
    // The owner sees the phone in full.
    assert_eq!(l[1]["phone"], "+85291234567");

    // Deleting the default makes the newest remaining one the default.
    delete(&app, Some(&mei), &c_id).await.expect(204);
    let l = list(&app, &mei).await;
    assert_eq!(ids(&l), [b_id.as_str(), a_id.as_str()]);
    assert_eq!(l[0]["is_default"], true);
    assert_eq!(defaults(&l), 1);
    // Deleting another leaves the default alone.
    delete(&app, Some(&mei), &a_id).await.expect(204);
    let l = list(&app, &mei).await;
    assert_eq!(ids(&l), [b_id.as_str()]);
    assert_eq!(l[0]["is_default"], true);
    // Gone is gone.
    assert_eq!(
        delete(&app, Some(&mei), &a_id).await.expect(404).code(),
        "not_found"
    );
    delete(&app, Some(&mei), &b_id).await.expect(204);
    assert!(list(&app, &mei).await.is_empty());
    // An emptied book starts over: its next address is the default.
    let d = create(&app, &mei, with("is_default", false.into()))
        .await
        .expect(201)
        .json();
    assert_eq!(d["is_default"], true);
}

#[tokio::test]
async fn addresses_crud_and_defaults_in_production_mode() {
    crud_and_defaults(TestEnv::production().await).await;
}

#[tokio::test]
async fn addresses_crud_and_defaults_in_embedded_mode() {
    crud_and_defaults(TestEnv::embedded()).await;
}

/// Every way the body can be wrong: 400 in our format, nothing stored.
async fn hostile_input(mut env: TestEnv) {
    let app = env.node().await;
    let mei = env.token(Role::Viewer, "mei");
    let li = env.token(Role::Viewer, "li");

    // The bounds themselves are accepted (by another user, to keep count).
    let mut accepted = vec![
        with("name", "梅".repeat(40).into()),
        with("city", "c".repeat(40).into()),
        with("district", "d".repeat(40).into()),
        with("line", "路".repeat(200).into()),
        with("phone", "19912345678".into()),
        with("phone", "+12345678".into()),
        with("phone", "+123456789012345".into()),
        with("postcode", Value::Null),
        with("district", Value::Null),
        with("is_default", Value::Null),
        without("district"),
        without("postcode"),
        without("is_default"),
    ];
    for code in ["110000", "540000", "710000", "820000"] {
        accepted.push(with("province", code.into()));
    }
    for body in accepted {
        create(&app, &li, body.clone()).await.expect(201);
    }

    let mut refused = vec![
        // Bounds, one past.
        with("name", "梅".repeat(41).into()),
        with("city", "c".repeat(41).into()),
        with("district", "d".repeat(41).into()),
        with("line", "路".repeat(201).into()),
        with("name", "".into()),
        with("name", "   ".into()),
        with("name", "\u{200B}".into()),
        with("city", "".into()),
        with("line", "".into()),
        with("line", "\u{3000}".into()),
        // Postcodes.
        with("postcode", "51062".into()),
        with("postcode", "5106200".into()),
        with("postcode", "51062a".into()),
        with("postcode", "abcdef".into()),
        with("postcode", "".into()),
        with("postcode", "５１０６２０".into()),
        with("postcode", 510620.into()),
        // Provinces.
        with("province", "440001".into()),
        with("province", "999999".into()),
        with("province", "44000".into()),
        with("province", "4400000".into()),
        with("province", "".into()),
        with("province", "440000 ".into()),
        with("province", "Guangdong".into()),
        with("province", 440000.into()),
        // NUL and control characters, and a direction override.
        with("name", "Li\0Mei".into()),
        with("line", "Road\u{0}1".into()),
        with("city", "Guang\u{7}zhou".into()),
        with("line", "line one\nline two".into()),
        with("district", "Tian\u{1b}[31mhe".into()),
        with("district", "\u{202E}ehnait".into()),
        with("postcode", "51062\0".into()),
        with("province", "440000\0".into()),
        // Wrong types.
        with("name", 5.into()),
        with("name", Value::Null),
        with("city", json!(["广州"])),
        with("line", json!({ "text": "x" })),
        with("district", 7.into()),
        with("is_default", "yes".into()),
        with("is_default", 1.into()),
        json!([]),
        json!("13812345678"),
        Value::Null,
        json!({}),
    ];
    for field in ["name", "phone", "province", "city", "line"] {
        refused.push(without(field));
    }
    let bad_phones = [
        "1381234567",
        "138123456789",
        "12812345678",
        "23812345678",
        "+0123456789",
        "+1234567",
        "+1234567890123456",
        "+",
        "138abcd5678",
        "1381234567a",
        "138 1234 5678",
        "138-1234-5678",
        " 13812345678",
        "13812345678 ",
        "+86 138 1234 5678",
        "１３８１２３４５６７８",
        "١٣٨١٢٣٤٥٦٧٨",
        "13812345678\0",
        "1381234\u{7}5678",
        "",
    ];
    for p in bad_phones {
        refused.push(with("phone", p.into()));
    }
    refused.push(with("phone", 13812345678u64.into()));
    refused.push(with("phone", Value::Null));

    for body in refused {
        let r = create(&app, &mei, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.code(), "bad_request", "{body}");
    }
    // Two fixed messages (with or without separators): nothing is echoed.
    let mut messages = HashSet::new();
    for p in bad_phones {
        let r = create(&app, &mei, with("phone", p.into())).await;
        messages.insert(r.json()["error"]["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(messages.len(), 2, "{messages:?}");

    // Bodies that are not JSON, or too large.
    let raw = |body: &'static str| {
        app.http
            .post(app.url("/me/addresses"))
            .bearer_auth(&mei)
            .header("Content-Type", "application/json")
            .body(body)
    };
    for body in ["", "{", "{\"name\": \"Mei\",}", "\u{0}", "[1, 2"] {
        let r = app.send(raw(body)).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "bad_request".into()));
    }
    let untyped = app
        .http
        .post(app.url("/me/addresses"))
        .bearer_auth(&mei)
        .body(valid().to_string());
    assert_eq!(
        app.send(untyped).await.expect(415).code(),
        "unsupported_media_type"
    );
    let huge = with("line", "x".repeat(70 * 1024).into());
    assert_eq!(
        create(&app, &mei, huge).await.expect(413).code(),
        "payload_too_large"
    );
    assert!(
        list(&app, &mei).await.is_empty(),
        "nothing refused was stored"
    );

    // No token, a bad token: 401 on every route.
    assert_eq!(
        app.post("/me/addresses", None, valid())
            .await
            .expect(401)
            .code(),
        "unauthorized"
    );
    app.get("/me/addresses", None).await.expect(401);
    app.get("/me/addresses", Some("not-a-token"))
        .await
        .expect(401);
    let some = ids(&list(&app, &li).await)[0].clone();
    delete(&app, None, &some).await.expect(401);
    delete(&app, Some("not-a-token"), &some).await.expect(401);
    // Malformed and unknown ids name nothing.
    for id in ["x", "1", "00000000-0000-0000-0000-00000000000g", "%00"] {
        assert_eq!(
            delete(&app, Some(&mei), id).await.expect(404).code(),
            "not_found"
        );
    }
    delete(&app, Some(&mei), &uuid::Uuid::new_v4().to_string())
        .await
        .expect(404);
    assert_eq!(list(&app, &li).await.len(), 17);
}

#[tokio::test]
async fn hostile_address_input_in_production_mode() {
    hostile_input(TestEnv::production().await).await;
}

#[tokio::test]
async fn hostile_address_input_in_embedded_mode() {
    hostile_input(TestEnv::embedded()).await;
}

/// 25 creates at once (on two nodes in production) for an empty book:
/// exactly 20 are stored, with one default; the next one is refused.
async fn cap_under_racing_creates(mut env: TestEnv, nodes: usize) {
    let mut apps = Vec::new();
    for _ in 0..nodes {
        apps.push(std::sync::Arc::new(env.node().await));
    }
    let bo = env.token(Role::Viewer, "bo");
    let racers: Vec<_> = (0..25)
        .map(|i| {
            let app = apps[i % apps.len()].clone();
            let bo = bo.clone();
            // Half of them ask to be the default, to race the switch too.
            let body = with("is_default", (i % 2 == 0).into());
            tokio::spawn(async move { create(&app, &bo, body).await })
        })
        .collect();
    let mut created = 0;
    for r in racers {
        let r = r.await.unwrap();
        match r.status.as_u16() {
            201 => created += 1,
            409 => assert_eq!(r.code(), "invalid_state"),
            _ => panic!("neither created nor refused: {:?} {}", r.status, r.text),
        }
    }
    assert_eq!(created, 20);
    let app = &apps[0];
    let l = list(app, &bo).await;
    assert_eq!(l.len(), 20);
    assert_eq!(defaults(&l), 1, "exactly one default");
    assert_eq!(l[0]["is_default"], true);
    assert_eq!(ids(&l).into_iter().collect::<HashSet<_>>().len(), 20);

    // The 21st, and on the other node too.
    for app in &apps {
        let r = create(app, &bo, valid()).await.expect(409);
        assert_eq!(r.code(), "invalid_state");
        assert!(r.text.contains("20"), "{}", r.text);
    }
    // A freed slot can be used once.
    delete(app, Some(&bo), &ids(&l)[5]).await.expect(204);
    create(app, &bo, valid()).await.expect(201);
    create(app, &bo, valid()).await.expect(409);
    assert_eq!(list(app, &bo).await.len(), 20);
    // Another user's book is not this one's.
    create(app, &env.token(Role::Viewer, "li"), valid())
        .await
        .expect(201);
}

#[tokio::test]
async fn address_cap_holds_under_racing_creates_in_production_mode() {
    cap_under_racing_creates(TestEnv::production().await, 2).await;
}

#[tokio::test]
async fn address_cap_holds_under_racing_creates_in_embedded_mode() {
    cap_under_racing_creates(TestEnv::embedded(), 1).await;
}

async fn others_books(mut env: TestEnv) {
    let app = env.node().await;
    let mei = env.token(Role::Viewer, "mei");
    let li = env.token(Role::Viewer, "li");
    let host = env.token(Role::Host, "alice");
    let hers = create(&app, &mei, valid()).await.expect(201).json();
    let hers = hers["id"].as_str().unwrap().to_owned();
    let his = create(&app, &li, with("phone", "+8613912345678".into()))
        .await
        .expect(201)
        .json();
    let his = his["id"].as_str().unwrap().to_owned();
    assert_eq!(ids(&list(&app, &mei).await), [hers.as_str()]);
    assert_eq!(ids(&list(&app, &li).await), [his.as_str()]);
    // A host's own book is empty: the list is the caller's, whatever the role.
    assert!(list(&app, &host).await.is_empty());

    // Another's address answers exactly as an unknown one.
    let theirs = delete(&app, Some(&mei), &his).await.expect(404);
    let unknown = delete(&app, Some(&mei), &uuid::Uuid::new_v4().to_string())
        .await
        .expect(404);
    assert_eq!(theirs.text, unknown.text);
    delete(&app, Some(&host), &his).await.expect(404);
    assert_eq!(ids(&list(&app, &li).await), [his.as_str()], "still there");
    delete(&app, Some(&li), &his).await.expect(204);
    assert_eq!(ids(&list(&app, &mei).await), [hers.as_str()]);
}

#[tokio::test]
async fn other_users_addresses_are_invisible_in_production_mode() {
    others_books(TestEnv::production().await).await;
}

#[tokio::test]
async fn other_users_addresses_are_invisible_in_embedded_mode() {
    others_books(TestEnv::embedded()).await;
}

#[tokio::test]
async fn the_province_list_is_public() {
    let mut env = TestEnv::embedded();
    let app = env.node().await;
    let r = app.get("/provinces", None).await.expect(200).json();
    let list = r["provinces"].as_array().unwrap();
    assert_eq!(list.len(), 34);
    assert_eq!(
        list.iter().find(|p| p["code"] == "440000").unwrap(),
        &json!({ "code": "440000", "zh": "广东省", "en": "Guangdong" })
    );
    let codes: HashSet<_> = list.iter().map(|p| p["code"].as_str().unwrap()).collect();
    assert_eq!(codes.len(), 34);
    for p in list {
        assert!(p["zh"].is_string() && p["en"].is_string(), "{p}");
    }
}

/// The real binary, embedded, at trace level: an address goes in and out
/// over HTTP, and no line the process writes carries its phone number.
#[tokio::test]
async fn a_trace_log_never_carries_a_phone_number() {
    const MAINLAND: &str = "13987654321";
    const E164: &str = "+85261234567";
    lychee_live::payments::install_crypto();
    let dir = std::env::temp_dir().join(format!("lychee-addr-{}", uuid::Uuid::new_v4().simple()));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lychee-live"));
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "LIVE_JWT_SECRET",
        "LIVE_LISTEN",
        "LIVE_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|out| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
    })
    .collect();
    drop(tx);
    let mut log = String::new();
    let base = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the banner within 60 s");
        log.push_str(&line);
        log.push('\n');
        if let Some(at) = line.split("(embedded mode) at ").nth(1) {
            break at.trim().to_owned();
        }
    };

    let http = reqwest::Client::new();
    let api = format!("{base}/api/v1");
    let guest: Value = http
        .post(format!("{api}/guests"))
        .json(&json!({ "name": "Mei" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = guest["token"].as_str().expect("a guest token").to_owned();
    for phone in [MAINLAND, E164] {
        let r = http
            .post(format!("{api}/me/addresses"))
            .bearer_auth(&token)
            .json(&with("phone", phone.into()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let listed: Value = http
        .get(format!("{api}/me/addresses"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The owner gets the numbers in full: the test can see them if they leak.
    let phones: HashSet<_> = listed["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["phone"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(phones, HashSet::from([MAINLAND.into(), E164.into()]));
    // A refused phone is not logged either.
    http.post(format!("{api}/me/addresses"))
        .bearer_auth(&token)
        .json(&with("phone", "139-8765-4321".into()))
        .send()
        .await
        .unwrap();

    let _ = child.kill();
    let _ = child.wait();
    for r in readers {
        let _ = r.join();
    }
    log.extend(lines.try_iter().map(|l| l + "\n"));
    let _ = std::fs::remove_dir_all(&dir);

    assert!(log.contains("TRACE"), "no trace output at all:\n{log}");
    assert!(
        log.contains("INSERT INTO addresses"),
        "the insert was not traced, so the test proves nothing"
    );
    for leak in ["13987654321", "85261234567", "98765432", "8765-4321"] {
        if let Some(at) = log.find(leak) {
            let from = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let to = log[at..].find('\n').map_or(log.len(), |i| at + i);
            panic!("a phone number in the log: {}", &log[from..to]);
        }
    }
    // What was logged instead: the address, masked.
    assert!(
        log.contains("139****4321"),
        "the masked address was not logged"
    );
}
