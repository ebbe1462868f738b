//! lychee-live: live-stream commerce. Flash drops during a broadcast, every
//! box sold exactly once. See `docs/architecture.md` for the map.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod claims;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod fulfilment;
pub mod http;
pub mod hub;
pub mod identity;
pub mod inventory;
pub mod kv;
pub mod orders;
pub mod payments;
pub mod sql;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod text;
pub mod uploads;
pub mod web;
pub mod ws;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::catalog::sql::SqlCatalog;
use crate::catalog::validate::StreamHosts;
use crate::catalog::{Catalog, CatalogStore};
use crate::clock::Clock;
use crate::config::{ConfigError, Mode, RedisTarget, Secret};
use crate::dashboard::feed::{Feeds, LiveSource, MAX_STREAMS_PER_USER};
use crate::dashboard::{FiguresStore, MemoryFigures, RedisFigures, Stats};
use crate::fulfilment::address::cache::{AddressCache, Peers};
use crate::fulfilment::address::sql::SqlAddresses;
use crate::fulfilment::address::{AddressBook, AddressStore};
use crate::http::ratelimit::RateLimiter;
use crate::http::AppState;
use crate::hub::chat::{ChatRate, ChatStore, MemoryChat, RedisChat};
use crate::hub::live::Live;
use crate::hub::presence::{LocalPresence, Presence, RedisPresence};
use crate::hub::{EventBus, Hub, LocalBus, RedisBus, StockPublisher};
use crate::identity::TokenKeys;
use crate::inventory::memory::MemoryInventory;
use crate::inventory::redis::RedisInventory;
use crate::inventory::sold_out::SoldOut;
use crate::inventory::Inventory;
use crate::orders::batch::BatchWriter;
use crate::orders::confirm::Confirmer;
use crate::orders::rebuild::{RebuildError, Rebuilder};
use crate::orders::sql::SqlOrders;
use crate::orders::{OrderStore, Orders};
use crate::payments::alipay::Alipay;
use crate::payments::sandbox::Sandbox;
use crate::payments::sql::SqlPayments;
use crate::payments::store::{PaymentStore, SandboxLedger};
use crate::payments::wechatpay::WechatPay;
use crate::payments::{Payments, Provider};
use crate::uploads::sql::SqlUploads;
use crate::uploads::{UploadStore, Uploads};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("rebuilding live state: {0}")]
    Rebuild(#[from] RebuildError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("another lychee-live process uses the data dir {0}")]
    DataDirBusy(String),
    #[error("seeding the demo sale: {0}")]
    Seed(String),
    #[error("payments: {0}")]
    Payments(String),
}

/// Everything a node needs to start, already validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub secret: Secret,
    pub redis_prefix: String,
    pub guests: bool,
    /// Per-user chat pace, across nodes.
    pub chat_rate: ChatRate,
    /// Words a chat message may not contain (matched lower-cased).
    pub blocked_words: Vec<String>,
    /// Abuse limits of one node.
    pub limits: http::limits::LimitSettings,
    /// Browser origins allowed by CORS; empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Hosts a sale's `stream_url` may point at (`--stream-hosts`).
    pub stream_hosts: Arc<StreamHosts>,
    /// Payment providers and their merchant settings.
    pub payments: payments::PaymentArgs,
}

impl Settings {
    /// Defaults for everything but where state lives and the secret.
    pub fn new(mode: Mode, secret: Secret, redis_prefix: String) -> Self {
        let guests = matches!(mode, Mode::Embedded { .. });
        Settings {
            mode,
            secret,
            redis_prefix,
            guests,
            chat_rate: ChatRate::default(),
            blocked_words: Vec::new(),
            limits: http::limits::LimitSettings::default(),
            cors_origins: Vec::new(),
            stream_hosts: Arc::new(StreamHosts::default()),
            payments: payments::PaymentArgs::default(),
        }
    }
}

/// Pool bounds: a node never waits long for a connection, it answers 503.
const PG_MAX_CONNECTIONS: u32 = 16;
/// Kept open from the start: a node that joins during a rush must not open
/// its connections (a few ms each) while its first buyers wait.
const PG_MIN_CONNECTIONS: u32 = 4;
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node trusts a buyer's address book it read when a change's
/// notice was lost on the way (notices clear it at once): see
/// `fulfilment::address::cache`.
const ADDRESS_BOOK_TTL: Duration = Duration::from_secs(60);
/// Guest sign-ups (and sign-in codes): a burst of 20 per IP, then one every 3 s.
const GUEST_BURST: u32 = 20;
const GUEST_PER_SEC: f64 = 1.0 / 3.0;

pub mod migrations {
    pub static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
    pub static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
}

/// The storage of one mode, chosen once.
pub struct Backends {
    pub catalog: Arc<dyn CatalogStore>,
    pub orders: Arc<dyn OrderStore>,
    pub inventory: Arc<dyn Inventory>,
    pub bus: Arc<dyn EventBus>,
    pub chat: Arc<dyn ChatStore>,
    pub presence: Arc<dyn Presence>,
    pub figures: Arc<dyn FiguresStore>,
    pub payments: Arc<dyn PaymentStore>,
    /// The sandbox provider's books, beside the payments.
    pub sandbox_ledger: Arc<dyn SandboxLedger>,
    /// The buyers' address books.
    pub addresses: Arc<dyn AddressStore>,
    /// Claims' photos, bytes and all.
    pub uploads: Arc<dyn UploadStore>,
    /// After-sales claims.
    pub claims: Arc<dyn claims::ClaimStore>,
    /// Holds the embedded data dir's lock for the life of the process.
    _lock: Option<std::fs::File>,
}

pub async fn connect_postgres(url: &str) -> Result<sqlx::PgPool, StartError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(PG_MAX_CONNECTIONS)
        .min_connections(PG_MIN_CONNECTIONS)
        .acquire_timeout(PG_ACQUIRE_TIMEOUT)
        .connect(url)
        .await?;
    migrations::POSTGRES.run(&pool).await?;
    Ok(pool)
}

pub async fn connect_redis(target: &RedisTarget) -> Result<kv::Redis, StartError> {
    Ok(kv::Redis::connect(target).await?)
}

/// Opens the embedded data dir: one process at a time, readable by this
/// user alone (the dir 0700, its files 0600; an older version's modes are
/// tightened), as it holds every order and the secret.
pub async fn open_sqlite(data_dir: &Path) -> Result<(sqlx::SqlitePool, std::fs::File), StartError> {
    config::private_dir(data_dir)?;
    let lock_path = data_dir.join("lock");
    config::private_file(&lock_path)?;
    let lock = std::fs::OpenOptions::new()
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    if lock.try_lock().is_err() {
        return Err(StartError::DataDirBusy(data_dir.display().to_string()));
    }
    // Created here rather than by SQLite, which would use 0644; SQLite gives
    // the -wal and -shm files it creates the database's mode.
    let db = data_dir.join("lychee.db");
    config::private_file(&db)?;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    migrations::SQLITE.run(&pool).await?;
    for side in ["lychee.db-wal", "lychee.db-shm"] {
        let path = data_dir.join(side);
        if path.exists() {
            config::make_private(&path)?;
        }
    }
    Ok((pool, lock))
}

impl Backends {
    pub async fn open(
        settings: &Settings,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartError> {
        match &settings.mode {
            Mode::Production {
                database_url,
                redis: target,
            } => {
                let pool = connect_postgres(database_url).await?;
                let redis = connect_redis(target).await?;
                let conn = redis.conn.clone();
                let prefix = &settings.redis_prefix;
                let payments = Arc::new(SqlPayments::new(pool.clone()));
                Ok(Backends {
                    payments: payments.clone(),
                    sandbox_ledger: payments,
                    addresses: AddressCache::start(
                        Arc::new(SqlAddresses::new(pool.clone())),
                        ADDRESS_BOOK_TTL,
                        Peers::Redis {
                            redis: redis.clone(),
                            prefix: prefix.clone(),
                        },
                        shutdown.clone(),
                    ),
                    uploads: Arc::new(SqlUploads::new(pool.clone())),
                    claims: Arc::new(claims::sql::SqlClaims::new(pool.clone())),
                    catalog: Arc::new(SqlCatalog::new(pool.clone())),
                    orders: Arc::new(SqlOrders::new(pool)),
                    inventory: Arc::new(RedisInventory::new(conn.clone(), prefix)),
                    bus: RedisBus::start(&redis, prefix, shutdown.clone()),
                    chat: Arc::new(RedisChat::new(conn.clone(), prefix, settings.chat_rate)),
                    presence: Arc::new(RedisPresence::new(conn.clone(), prefix, Uuid::new_v4())),
                    figures: Arc::new(RedisFigures::new(conn, prefix)),
                    _lock: None,
                })
            }
            Mode::Embedded { data_dir } => {
                let (pool, lock) = open_sqlite(data_dir).await?;
                let bus: Arc<dyn EventBus> = Arc::new(LocalBus::new());
                let inventory = Arc::new(MemoryInventory::new());
                let payments = Arc::new(SqlPayments::new(pool.clone()));
                Ok(Backends {
                    payments: payments.clone(),
                    sandbox_ledger: payments,
                    addresses: AddressCache::start(
                        Arc::new(SqlAddresses::new(pool.clone())),
                        ADDRESS_BOOK_TTL,
                        Peers::Alone,
                        shutdown.clone(),
                    ),
                    uploads: Arc::new(SqlUploads::new(pool.clone())),
                    claims: Arc::new(claims::sql::SqlClaims::new(pool.clone())),
                    catalog: Arc::new(SqlCatalog::new(pool.clone())),
                    orders: Arc::new(SqlOrders::new(pool)),
                    inventory: inventory.clone(),
                    chat: Arc::new(MemoryChat::new(bus.clone(), settings.chat_rate, inventory)),
                    presence: Arc::new(LocalPresence::default()),
                    figures: Arc::new(MemoryFigures::default()),
                    bus,
                    _lock: Some(lock),
                })
            }
        }
    }

    pub fn rebuilder(&self) -> Arc<Rebuilder> {
        Arc::new(Rebuilder::new(
            self.catalog.clone(),
            self.orders.clone(),
            self.inventory.clone(),
        ))
    }
}

/// The payment providers of `LIVE_PAYMENTS`, each with its settings loaded.
struct PaymentProviders {
    enabled: Vec<Arc<dyn Provider>>,
    sandbox: Option<Arc<Sandbox>>,
    http: reqwest::Client,
}

fn payment_providers(
    settings: &Settings,
    backends: &Backends,
    public_url: Arc<std::sync::OnceLock<String>>,
) -> Result<PaymentProviders, StartError> {
    let args = &settings.payments;
    let names: Vec<String> = match &args.providers {
        Some(list) => list
            .iter()
            .map(|n| n.trim().to_lowercase())
            .filter(|n| !n.is_empty())
            .collect(),
        None if matches!(settings.mode, Mode::Embedded { .. }) => vec!["sandbox".into()],
        None => Vec::new(),
    };
    let http = payments::http_client().map_err(|e| StartError::Payments(e.to_string()))?;
    let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
    let mut sandbox = None;
    for name in &names {
        let provider: Arc<dyn Provider> = match name.as_str() {
            "sandbox" => {
                if let Some(s) = &args.sandbox_secret {
                    if s.0.len() < config::MIN_SECRET_BYTES {
                        return Err(StartError::Payments(
                            "LIVE_SANDBOX_SECRET must be at least 32 bytes".into(),
                        ));
                    }
                }
                let s = Arc::new(Sandbox::new(
                    payments::sandbox::key(args.sandbox_secret.as_ref(), &settings.secret),
                    backends.sandbox_ledger.clone(),
                    public_url.clone(),
                ));
                sandbox = Some(s.clone());
                s
            }
            "wechatpay" => Arc::new(
                // Its messages name the provider already.
                WechatPay::from_args(&args.wechatpay, http.clone())
                    .map_err(|e| StartError::Payments(e.to_string()))?,
            ),
            "alipay" => Arc::new(
                Alipay::from_args(&args.alipay, http.clone())
                    .map_err(|e| StartError::Payments(format!("alipay: {e}")))?,
            ),
            other => {
                return Err(StartError::Payments(format!(
                    "unknown provider {other:?} in LIVE_PAYMENTS (sandbox, wechatpay, alipay)"
                )))
            }
        };
        if providers.iter().any(|p| p.name() == provider.name()) {
            continue;
        }
        providers.push(provider);
    }
    let real = providers.iter().any(|p| p.name() != "sandbox");
    if real && args.public_url.is_none() {
        tracing::warn!(
            "LIVE_PUBLIC_URL is not set: payment providers are told to call back \
             this node's listen address, which they cannot reach from outside"
        );
    }
    Ok(PaymentProviders {
        enabled: providers,
        sandbox,
        http,
    })
}

/// The node's public URL, shared by the providers: set from
/// `--public-url` now, or from the listener when the node starts serving.
fn payments_public_url(settings: &Settings) -> Arc<std::sync::OnceLock<String>> {
    let cell = Arc::new(std::sync::OnceLock::new());
    if let Some(url) = &settings.payments.public_url {
        let _ = cell.set(url.as_str().trim_end_matches('/').to_owned());
    }
    cell
}

/// A started node: its state and background workers, not yet listening.
pub struct Node {
    pub state: AppState,
    /// The base URL providers and buyers reach this node at, once known.
    public_url: Arc<std::sync::OnceLock<String>>,
    pub rebuilder: Arc<Rebuilder>,
    shutdown: CancellationToken,
    workers: tokio_util::task::TaskTracker,
    timeouts: http::server::Timeouts,
    caps: http::server::Caps,
    _backends: Backends,
}

impl Node {
    /// Connects, migrates, rebuilds missing live state and starts the workers.
    pub async fn start(
        settings: Settings,
        clock: Arc<Clock>,
        shutdown: CancellationToken,
    ) -> Result<Node, StartError> {
        // The process's metrics recorder, before anything records.
        dashboard::metrics::handle();
        let backends = Backends::open(&settings, &shutdown).await?;
        // Before any worker starts: bad payment settings stop the start cleanly.
        let public_url = payments_public_url(&settings);
        let providers = payment_providers(&settings, &backends, public_url.clone())?;
        let rebuilder = backends.rebuilder();
        let rebuilt = rebuilder.reconcile(false).await?;
        if rebuilt > 0 {
            tracing::info!(rebuilt, "rebuilt live state of sales from the database");
        }
        let workers = tokio_util::task::TaskTracker::new();
        let stock = StockPublisher::new(backends.bus.clone());
        workers.spawn(stock.clone().run(shutdown.clone()));
        let sold_out = Arc::new(SoldOut::default());
        let catalog = Arc::new(Catalog::new(
            backends.catalog.clone(),
            backends.inventory.clone(),
            rebuilder.clone(),
            backends.bus.clone(),
            stock.clone(),
            clock.clone(),
            sold_out.clone(),
        ));
        let writer = BatchWriter::start(backends.orders.clone(), shutdown.clone());
        let confirmer = Confirmer::start(backends.inventory.clone(), shutdown.clone());
        let stats = Stats::new(clock.clone(), backends.figures.clone());
        workers.spawn(stats.clone().run(shutdown.clone()));
        let orders = Arc::new(Orders::new(
            backends.inventory.clone(),
            backends.addresses.clone(),
            backends.orders.clone(),
            catalog.clone(),
            writer,
            confirmer,
            rebuilder.clone(),
            backends.bus.clone(),
            stock,
            stats.clone(),
            clock.clone(),
            sold_out,
        ));
        workers.spawn(orders.clone().follow_events(shutdown.clone()));
        let payments = Arc::new(Payments::new(
            backends.payments.clone(),
            orders.clone(),
            providers.enabled,
            providers.sandbox,
            clock.clone(),
            public_url.clone(),
            settings.payments.reconcile_after.into(),
            settings.payments.reconcile_every.into(),
            providers.http,
        ));
        workers.spawn(payments::reconcile::run(
            payments.clone(),
            settings.payments.reconcile_every.into(),
            shutdown.clone(),
        ));
        workers.spawn(orders::reaper::run(orders.clone(), shutdown.clone()));
        let hub = Hub::new(
            backends.bus.clone(),
            backends.presence.clone(),
            backends.chat.clone(),
            catalog.clone(),
            clock.clone(),
            settings.limits.room_queue,
            shutdown.clone(),
        );
        workers.spawn(hub.clone().run());
        let live = Arc::new(Live {
            hub,
            chat: backends.chat.clone(),
            blocked_words: settings
                .blocked_words
                .iter()
                .map(|w| w.trim().to_lowercase())
                .filter(|w| !w.is_empty())
                .collect(),
            shutdown: shutdown.clone(),
            sockets: workers.clone(),
            stats,
            presence: backends.presence.clone(),
            rebuild: rebuilder.clone(),
            moderation: Arc::new(hub::moderation::Moderation {
                catalog: catalog.clone(),
                chat: backends.chat.clone(),
                inventory: backends.inventory.clone(),
                orders: orders.clone(),
                bus: backends.bus.clone(),
            }),
            catalog: catalog.clone(),
            orders: orders.clone(),
            clock: clock.clone(),
        });
        let dashboards = Feeds::new(
            Arc::new(LiveSource {
                catalog: catalog.clone(),
                orders: backends.orders.clone(),
                claims: backends.claims.clone(),
                payments: backends.payments.clone(),
                figures: backends.figures.clone(),
                presence: backends.presence.clone(),
                clock: clock.clone(),
            }),
            clock.clone(),
            MAX_STREAMS_PER_USER,
            workers.clone(),
            shutdown.clone(),
        );
        let addresses = Arc::new(AddressBook::new(backends.addresses.clone(), clock.clone()));
        let uploads = Arc::new(Uploads::new(
            backends.uploads.clone(),
            orders.clone(),
            clock.clone(),
        ));
        let state = AppState::new(http::Shared {
            live,
            keys: Arc::new(
                TokenKeys::new(&settings.secret).map_err(|e| StartError::Seed(e.to_string()))?,
            ),
            catalog,
            uploads: uploads.clone(),
            claims: Arc::new(claims::Claims::new(
                backends.claims.clone(),
                orders.clone(),
                backends.catalog.clone(),
                payments.clone(),
                uploads,
                clock.clone(),
            )),
            orders: orders.clone(),
            guests: settings.guests,
            guest_limiter: Arc::new(RateLimiter::new(GUEST_PER_SEC, GUEST_BURST)),
            signin: Arc::default(),
            signin_limiter: Arc::new(RateLimiter::new(GUEST_PER_SEC, GUEST_BURST)),
            limits: Arc::new(http::limits::Limits::new(&settings.limits)),
            cors_origins: settings.cors_origins.clone(),
            stream_hosts: settings.stream_hosts.clone(),
            clock: clock.clone(),
            dashboards,
            payments: payments.clone(),
            shipping: Arc::new(fulfilment::service::Shipping::new(
                orders.clone(),
                backends.orders.clone(),
                clock.clone(),
            )),
            addresses,
        });
        Ok(Node {
            public_url,
            state,
            rebuilder,
            shutdown,
            workers,
            timeouts: http::server::Timeouts {
                header: settings.limits.header_timeout,
                request: settings.limits.request_timeout,
                write: settings.limits.write_timeout,
            },
            caps: http::server::Caps {
                max_connections: settings.limits.max_connections,
                max_connections_per_ip: settings.limits.max_connections_per_ip,
                trusted_proxies: http::proxy::TrustedProxies::new(
                    settings.limits.trusted_proxies.iter().copied(),
                ),
            },
            _backends: backends,
        })
    }

    /// Serves until `shutdown`, then lets in-flight requests and workers finish.
    pub async fn serve(self, listener: TcpListener) -> Result<(), StartError> {
        // Without --public-url, callbacks and the sandbox page use the
        // address this node listens on (the embedded mode, tests).
        let _ = self
            .public_url
            .set(format!("http://{}", listener.local_addr()?));
        let app = http::app(self.state.clone());
        http::server::serve(
            listener,
            app,
            self.timeouts,
            self.caps,
            self.shutdown.clone(),
        )
        .await;
        self.workers.close();
        self.workers.wait().await;
        Ok(())
    }
}

/// Starts a node on `listener` and serves until `shutdown`.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let node = Node::start(settings, Arc::new(Clock::default()), shutdown).await?;
    node.serve(listener).await
}
