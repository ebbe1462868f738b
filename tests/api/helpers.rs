//! `TestEnv`: a fresh PostgreSQL database and a unique Redis prefix (or an
//! embedded data dir), removed when the test ends, pass or fail. `TestApp`:
//! one node of it on 127.0.0.1:0, with a method per endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lychee_live::clock::Clock;
use lychee_live::config::{Mode, RedisTarget, Secret};
use lychee_live::identity::{Identity, Role, TokenKeys};
use lychee_live::{Node, Settings};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The single Redis node; also there in a cluster run, for the tests of one
/// node's failures (a proxy cut, a killed connection).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// The Redis the suite runs on: `TEST_REDIS_CLUSTER_NODES` (seed URLs,
/// comma-separated) when set, the single node otherwise.
pub fn redis_target() -> RedisTarget {
    match std::env::var("TEST_REDIS_CLUSTER_NODES") {
        Ok(seeds) if !seeds.trim().is_empty() => RedisTarget::Cluster(
            seeds
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        ),
        _ => RedisTarget::Node(redis_url()),
    }
}

pub fn on_cluster() -> bool {
    matches!(redis_target(), RedisTarget::Cluster(_))
}

/// A command connection to the suite's Redis, as a node makes it.
pub async fn kv() -> lychee_live::kv::Kv {
    lychee_live::kv::Redis::connect(&redis_target())
        .await
        .expect("redis")
        .conn
}

/// Every node's URL: the single one, or each node of the cluster (`primaries`
/// only: the ones holding keys).
pub async fn redis_nodes(primaries: bool) -> Vec<String> {
    let seeds = match redis_target() {
        RedisTarget::Node(url) => return vec![url],
        RedisTarget::Cluster(seeds) => seeds,
    };
    let client = redis::Client::open(seeds[0].as_str()).expect("seed url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("seed");
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .expect("cluster nodes");
    // `<id> <ip:port@cport[,host]> <flags> ...`
    nodes
        .lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let (_, addr, flags) = (f.next()?, f.next()?, f.next()?);
            let wanted = !flags.contains("fail") && (!primaries || flags.contains("master"));
            let addr = addr.split('@').next()?;
            wanted.then(|| format!("redis://{addr}/"))
        })
        .collect()
}

/// Runs a command on every node (ACL users must exist on each).
pub async fn on_every_node(args: &[&str]) {
    for url in redis_nodes(false).await {
        let client = redis::Client::open(url.as_str()).expect("node url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("node");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async::<redis::Value>(&mut conn)
            .await
            .expect("command on a node");
    }
}

/// The keys matching `pattern` on every primary (a test's look inside).
pub async fn keys_matching(pattern: &str) -> Vec<String> {
    let mut all = Vec::new();
    for url in redis_nodes(true).await {
        let client = redis::Client::open(url.as_str()).expect("node url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("node");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .expect("keys");
        all.extend(keys);
    }
    all
}

enum Backing {
    Production { db: String, prefix: String },
    Embedded { dir: PathBuf },
}

/// `TEST_LOG=<filter>` (e.g. `TEST_LOG=lychee_live=debug`) shows the
/// nodes' logs beside each test's output.
fn show_logs_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

pub struct TestEnv {
    backing: Backing,
    pub clock: Arc<Clock>,
    keys: TokenKeys,
    nodes: Vec<CancellationToken>,
}

impl TestEnv {
    /// Production mode: its own database and Redis prefix.
    pub async fn production() -> TestEnv {
        let id = Uuid::new_v4().simple().to_string();
        let db = format!("lychee_test_{id}");
        let admin = sqlx::PgPool::connect(&admin_url())
            .await
            .expect("admin connection");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        TestEnv::with(Backing::Production {
            db,
            prefix: format!("t{}", &id[..12]),
        })
    }

    /// Embedded mode: its own data dir.
    pub fn embedded() -> TestEnv {
        let dir = std::env::temp_dir().join(format!("lychee-test-{}", Uuid::new_v4().simple()));
        TestEnv::with(Backing::Embedded { dir })
    }

    fn with(backing: Backing) -> TestEnv {
        lychee_live::payments::install_crypto();
        show_logs_if_asked();
        TestEnv {
            backing,
            clock: Arc::new(Clock::default()),
            keys: TokenKeys::new(&Secret(SECRET.into())).expect("keys"),
            nodes: Vec::new(),
        }
    }

    pub fn database_url(&self) -> Option<String> {
        match &self.backing {
            Backing::Production { db, .. } => {
                let mut url = url::Url::parse(&admin_url()).expect("admin url");
                url.set_path(db);
                Some(url.to_string())
            }
            Backing::Embedded { .. } => None,
        }
    }

    pub fn prefix(&self) -> Option<&str> {
        match &self.backing {
            Backing::Production { prefix, .. } => Some(prefix),
            Backing::Embedded { .. } => None,
        }
    }

    pub fn settings(&self) -> Settings {
        let (mode, prefix) = match &self.backing {
            Backing::Production { prefix, .. } => (
                Mode::Production {
                    database_url: self.database_url().expect("url"),
                    redis: redis_target(),
                },
                prefix.clone(),
            ),
            Backing::Embedded { dir } => (
                Mode::Embedded {
                    data_dir: dir.clone(),
                },
                "ll".into(),
            ),
        };
        let mut settings = Settings::new(mode, Secret(SECRET.into()), prefix);
        settings.guests = true;
        settings.blocked_words = vec!["counterfeit".into()];
        // Tests of other things buy and connect fast; the limits' own tests set them.
        settings.limits.buy_per_user = 0.0;
        settings.limits.buy_per_ip = 0.0;
        settings.limits.chat_per_ip = 0.0;
        settings.limits.max_sockets_per_user = 1000;
        settings.limits.max_sockets_per_ip = 100_000;
        settings.limits.max_connections_per_ip = 100_000;
        settings.limits.max_guest_sockets_per_ip = 100_000;
        settings
    }

    /// Starts one more node sharing this environment.
    pub async fn node(&mut self) -> TestApp {
        let settings = self.settings();
        self.node_with(settings).await
    }

    /// A node with adjusted settings (guests off, Redis behind a proxy...).
    pub async fn node_with(&mut self, settings: Settings) -> TestApp {
        let shutdown = CancellationToken::new();
        let node = Node::start(settings, self.clock.clone(), shutdown.clone())
            .await
            .expect("node starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(node.serve(listener));
        self.nodes.push(shutdown.clone());
        TestApp {
            addr,
            base: format!("http://{addr}/api/v1"),
            http: reqwest::Client::new(),
        }
    }

    pub fn token(&self, role: Role, sub: &str) -> String {
        self.token_for(role, sub, Duration::from_secs(3600))
    }

    pub fn token_for(&self, role: Role, sub: &str, ttl: Duration) -> String {
        let who = Identity {
            user_id: sub.into(),
            name: Some(sub.into()),
            role,
        };
        self.keys
            .mint(&who, ttl, chrono::Utc::now())
            .expect("mint")
            .token
    }

    /// Deletes every Redis key of this test's prefix: Redis "lost its data".
    pub async fn wipe_redis(&self) -> usize {
        let Some(prefix) = self.prefix() else {
            return 0;
        };
        delete_prefix(prefix).await
    }

    pub async fn pg(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.database_url().expect("production env"))
            .await
            .expect("pg")
    }
}

/// Deletes the prefix's keys on every primary, and on the single node too in
/// a cluster run (the tests of one node's failures write there). One key per
/// DEL: several could be several slots.
async fn delete_prefix(prefix: &str) -> usize {
    let mut nodes = redis_nodes(true).await;
    if on_cluster() {
        nodes.push(redis_url());
    }
    let mut n = 0;
    for url in nodes {
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("scan");
            if !keys.is_empty() {
                n += keys.len();
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.del(k).ignore();
                }
                pipe.query_async::<()>(&mut conn).await.expect("del");
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    n
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.cancel();
        }
        match &self.backing {
            Backing::Embedded { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Backing::Production { db, prefix } => {
                let (db, prefix) = (db.clone(), prefix.clone());
                // Runs even when the test panicked; a thread of its own because
                // we may be inside the test's runtime.
                let cleanup = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        delete_prefix(&prefix).await;
                        if let Ok(admin) = sqlx::PgPool::connect(&admin_url()).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                            )))
                            .execute(&admin)
                            .await;
                        }
                    });
                });
                let _ = cleanup.join();
            }
        }
    }
}

/// One node, with a method per endpoint.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
}

/// A response read whole: status, headers and JSON (or text) body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub async fn from(r: Response) -> Reply {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        Reply {
            status,
            headers,
            text,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?} {}", self.status, self.text))
    }

    /// The contract's error code, asserting the error shape on the way.
    pub fn code(&self) -> String {
        let v = self.json();
        let code = v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.text));
        assert!(
            v["error"]["message"].is_string(),
            "no message in {}",
            self.text
        );
        code.to_owned()
    }

    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        self
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        Reply::from(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    pub async fn create_sale(&self, token: &str, body: Value) -> Reply {
        self.post("/sales", Some(token), body).await
    }

    pub async fn add_product(&self, token: &str, sale: &str, body: Value) -> Reply {
        self.post(&format!("/sales/{sale}/products"), Some(token), body)
            .await
    }

    pub async fn start(&self, token: &str, sale: &str) -> Reply {
        self.post(&format!("/sales/{sale}/start"), Some(token), json!({}))
            .await
    }

    pub async fn open(&self, token: &str, sale: &str, sku: &str) -> Reply {
        self.post(
            &format!("/sales/{sale}/products/{sku}/open"),
            Some(token),
            json!({}),
        )
        .await
    }

    pub async fn restock(&self, token: &str, sale: &str, sku: &str, add: i64) -> Reply {
        self.post(
            &format!("/sales/{sale}/products/{sku}/restock"),
            Some(token),
            json!({ "add": add }),
        )
        .await
    }

    pub async fn sale(&self, sale: &str) -> Value {
        self.get(&format!("/sales/{sale}"), None)
            .await
            .expect(200)
            .json()
    }

    pub async fn buy(&self, token: &str, sale: &str, key: &str, sku: &str, qty: i64) -> Reply {
        let req = self
            .http
            .post(self.url(&format!("/sales/{sale}/orders")))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({ "sku": sku, "qty": qty }));
        self.send(req).await
    }

    pub async fn pay(&self, token: &str, order: &str, payment_ref: &str) -> Reply {
        self.post(
            &format!("/orders/{order}/pay"),
            Some(token),
            json!({ "payment_ref": payment_ref }),
        )
        .await
    }

    /// An address in the user's book (its default when it is the first).
    pub async fn add_address(&self, token: &str, province: &str) -> Value {
        self.post(
            "/me/addresses",
            Some(token),
            json!({ "name": "Chen Mei", "phone": "13812345678", "province": province,
                    "city": "Guangzhou", "district": "Conghua", "line": "1 Lychee Road",
                    "postcode": "510900" }),
        )
        .await
        .expect(201)
        .json()
    }

    pub async fn cancel(&self, token: &str, order: &str) -> Reply {
        self.post(&format!("/orders/{order}/cancel"), Some(token), json!({}))
            .await
    }

    /// A live sale with one product on sale; returns the sale id.
    pub async fn live_sale(
        &self,
        host: &str,
        checkout: &str,
        sku: &str,
        stock: i64,
        limit: i64,
    ) -> String {
        let sale = self
            .create_sale(host, json!({ "title": "Harvest", "checkout": checkout }))
            .await
            .expect(201)
            .json();
        let id = sale["id"].as_str().expect("id").to_owned();
        self.add_product(
            host,
            &id,
            json!({ "sku": sku, "name": "Feizixiao 5 kg", "price_cents": 12800,
                    "stock": stock, "per_user_limit": limit }),
        )
        .await
        .expect(201);
        self.start(host, &id).await.expect(200);
        self.open(host, &id, sku).await.expect(200);
        id
    }

    /// Polls until `f` holds for the sale, or fails after `secs`.
    pub async fn wait_for_sale(&self, sale: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.sale(sale).await;
            if f(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met in {secs}s: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn product<'a>(sale: &'a Value, sku: &str) -> &'a Value {
    sale["products"]
        .as_array()
        .expect("products")
        .iter()
        .find(|p| p["sku"] == sku)
        .expect("product present")
}

/// A TCP proxy in front of Redis or PostgreSQL that a test can cut (every
/// connection dropped, new ones refused) and restore.
pub struct Switch {
    pub addr: std::net::SocketAddr,
    generation: tokio::sync::watch::Sender<(u64, bool)>,
}

impl Switch {
    pub async fn start(target: String) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (generation, rx) = tokio::sync::watch::channel((0u64, true));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (gen, up) = *rx.borrow();
                if !up {
                    continue;
                }
                let (target, mut rx) = (target.clone(), rx.clone());
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = rx.wait_for(|(g, _)| *g != gen) => {}
                    }
                });
            }
        });
        Switch { addr, generation }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.generation.send_modify(|(g, up)| {
            *g += 1;
            *up = false;
        });
    }

    pub fn restore(&self) {
        self.generation.send_modify(|(g, up)| {
            *g += 1;
            *up = true;
        });
    }
}
