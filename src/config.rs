//! Command line and environment: one place where flags are read and checked.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// lychee-live: flash drops during live broadcasts, sold exactly once.
#[derive(Debug, Parser)]
#[command(name = "lychee-live", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `serve`, also accepted without the subcommand (it is the default).
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start-up: the size of `Serve` costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP, WebSocket and SSE (the default).
    Serve(ServeArgs),
    /// Apply database migrations, then exit.
    Migrate(StoreArgs),
    /// Print a signed token.
    Token(TokenArgs),
    /// Rebuild the Redis state of every sale from PostgreSQL where it is missing.
    Reconcile(ReconcileArgs),
}

/// Where state lives; shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// PostgreSQL URL; with a Redis (--redis-url or --redis-cluster-nodes),
    /// production mode. Unset: embedded mode.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Redis URL of one node; with --database-url, production mode.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster, comma-separated `host:port` (or
    /// `redis://` URLs, for a password or TLS), instead of --redis-url.
    #[arg(
        long,
        env = "LIVE_REDIS_CLUSTER_NODES",
        hide_env_values = true,
        value_delimiter = ',',
        conflicts_with = "redis_url"
    )]
    pub redis_cluster_nodes: Vec<String>,
    /// Prefix of every Redis key and channel, so deployments (and tests) can share one Redis.
    #[arg(long, env = "LIVE_REDIS_PREFIX", default_value = "ll")]
    pub redis_prefix: String,
    /// Embedded mode's SQLite file and secret.
    #[arg(long, env = "LIVE_DATA_DIR", default_value = "./lychee-data")]
    pub data_dir: PathBuf,
}

/// The HS256 secret, kept out of `Debug` so it never reaches a log line.
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// HS256 secret, at least 32 bytes. Embedded mode: made once and kept in the data dir.
    #[arg(long, env = "LIVE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve HTTP, WebSocket and SSE on.
    #[arg(long, env = "LIVE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Allow `POST /api/v1/guests` (default: on in embedded mode, off in production).
    #[arg(long, env = "LIVE_GUESTS")]
    pub guests: Option<bool>,
    /// Chat messages a second per user, on average, across nodes.
    #[arg(long, env = "LIVE_CHAT_RATE", default_value_t = 1.0)]
    pub chat_rate: f64,
    /// Chat messages a user may send at once.
    #[arg(long, env = "LIVE_CHAT_BURST", default_value_t = 3)]
    pub chat_burst: u32,
    /// Comma-separated words refused in chat (`invalid_message`).
    #[arg(long, env = "LIVE_BLOCKED_WORDS", value_delimiter = ',')]
    pub blocked_words: Vec<String>,
    /// Buy attempts a second per user on this node (twice that at once); 0: no limit.
    #[arg(long, env = "LIVE_BUY_RATE", default_value_t = 20.0)]
    pub buy_rate: f64,
    /// Buy attempts a second per client IP on this node; 0: no limit (behind
    /// a proxy every client has the proxy's address).
    #[arg(long, env = "LIVE_IP_RATE", default_value_t = 1000.0)]
    pub ip_rate: f64,
    /// Chat messages a second per client IP on this node, over all its
    /// sockets; 0: no limit. Generous: mobile carriers put many viewers
    /// behind one address.
    #[arg(long, env = "LIVE_CHAT_IP_RATE", default_value_t = 100.0)]
    pub chat_ip_rate: f64,
    /// A request head must arrive within this of connecting or of the
    /// previous response (slow and idle clients are dropped).
    #[arg(long, env = "LIVE_HEADER_TIMEOUT", default_value = "15s")]
    pub header_timeout: humantime::Duration,
    /// A request body must arrive whole within this of its head (408 and the
    /// connection closed otherwise). Responses, WebSockets and event streams
    /// are not timed by it.
    #[arg(long, env = "LIVE_REQUEST_TIMEOUT", default_value = "30s")]
    pub request_timeout: humantime::Duration,
    /// A connection whose writes make no progress for this long is dropped.
    #[arg(long, env = "LIVE_WRITE_TIMEOUT", default_value = "30s")]
    pub write_timeout: humantime::Duration,
    /// WebSockets are pinged this often; two unanswered pings close them.
    #[arg(long, env = "LIVE_HEARTBEAT", default_value = "30s")]
    pub heartbeat: humantime::Duration,
    /// Connections this node keeps open at most, WebSockets included; over
    /// it, new ones are closed at once. Keep it under the process's open-file
    /// limit (`ulimit -n`) with room for the database and Redis pools.
    #[arg(long, env = "LIVE_MAX_CONNECTIONS", default_value_t = 16_000)]
    pub max_connections: usize,
    /// Connections one peer address may keep open (trusted proxies are not
    /// capped: they carry everyone).
    #[arg(long, env = "LIVE_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// WebSockets this node accepts at most.
    #[arg(long, env = "LIVE_MAX_SOCKETS", default_value_t = 50_000)]
    pub max_sockets: usize,
    /// WebSockets one user may hold on this node.
    #[arg(long, env = "LIVE_MAX_SOCKETS_PER_USER", default_value_t = 10)]
    pub max_sockets_per_user: usize,
    /// WebSockets one client IP may hold on this node (a carrier NAT hides
    /// many viewers).
    #[arg(long, env = "LIVE_MAX_SOCKETS_PER_IP", default_value_t = 200)]
    pub max_sockets_per_ip: usize,
    /// Of those, guests' (anyone can mint guest tokens).
    #[arg(long, env = "LIVE_MAX_GUEST_SOCKETS_PER_IP", default_value_t = 20)]
    pub max_guest_sockets_per_ip: usize,
    /// Comma-separated CIDRs (or addresses) of the load balancers in front of
    /// the node. From one of them, the client is the right-most untrusted
    /// hop of `Forwarded` or `X-Forwarded-For`; from anyone else those
    /// headers are ignored. Every per-IP limit uses that address.
    #[arg(
        long,
        env = "LIVE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR",
        value_parser = crate::http::proxy::parse_cidr
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Comma-separated origins allowed to call the API from a browser (CORS);
    /// none by default (the pages are served from the same origin).
    #[arg(long, env = "LIVE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Comma-separated hosts a sale's `stream_url` may point at (the
    /// streaming platforms' players, HLS or MP4 hosts); `*.domain` admits
    /// its subdomains. Also the pages' CSP `frame-src`. Empty: no stream.
    #[arg(
        long,
        env = "LIVE_STREAM_HOSTS",
        value_delimiter = ',',
        default_value = crate::catalog::validate::DEFAULT_STREAM_HOSTS
    )]
    pub stream_hosts: Vec<String>,
    #[command(flatten)]
    pub payments: crate::payments::PaymentArgs,
    /// Runtime worker threads; default one per core. Nodes sharing a machine
    /// should split its cores between them rather than each taking all.
    #[arg(long, env = "LIVE_WORKERS")]
    pub workers: Option<std::num::NonZeroUsize>,
}

impl Cli {
    /// The worker threads asked for, if this run serves.
    pub fn workers(&self) -> Option<usize> {
        match &self.command {
            None => self.serve.workers,
            Some(Command::Serve(args)) => args.workers,
            Some(_) => None,
        }
        .map(std::num::NonZeroUsize::get)
    }
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// viewer, host or operator.
    #[arg(long, default_value = "viewer")]
    pub role: String,
    /// User id (1..=64 characters).
    #[arg(long)]
    pub sub: String,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime, e.g. 30m, 12h, 7d; at most 30 days unless --force.
    #[arg(long, default_value = "12h")]
    pub ttl: humantime::Duration,
    /// Mint a token living longer than 30 days (it cannot be revoked before it expires).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub secret: SecretArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Rebuild every live sale even when its Redis state is present.
    #[arg(long)]
    pub force: bool,
}

/// The two ways to run: all shared state in Redis and PostgreSQL, or one process.
#[derive(Debug, Clone)]
pub enum Mode {
    Production {
        database_url: String,
        redis: RedisTarget,
    },
    Embedded {
        data_dir: PathBuf,
    },
}

/// One Redis node, or the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Node(String),
    Cluster(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("set DATABASE_URL and a Redis (REDIS_URL or LIVE_REDIS_CLUSTER_NODES) for production, or neither for the embedded mode (only {0} is set)")]
    HalfProduction(&'static str),
    #[error("set REDIS_URL or LIVE_REDIS_CLUSTER_NODES, not both")]
    TwoRedises,
    #[error("production mode needs LIVE_JWT_SECRET (or --jwt-secret)")]
    MissingSecret,
    #[error("the JWT secret must be at least 32 bytes (got {0})")]
    ShortSecret(usize),
    #[error("the Redis prefix must be 1..=32 characters of [A-Za-z0-9_-]")]
    BadPrefix,
    #[error("cannot use the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StoreArgs {
    pub fn mode(&self) -> Result<Mode, ConfigError> {
        let valid_prefix = (1..=32).contains(&self.redis_prefix.len())
            && self
                .redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_prefix {
            return Err(ConfigError::BadPrefix);
        }
        let seeds: Vec<String> = self
            .redis_cluster_nodes
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            // The contract names seeds `host:port`; the client wants URLs.
            .map(|n| {
                if n.contains("://") {
                    n.to_owned()
                } else {
                    format!("redis://{n}")
                }
            })
            .collect();
        let redis = match (&self.redis_url, seeds.is_empty()) {
            (Some(_), false) => return Err(ConfigError::TwoRedises),
            (Some(url), true) => Some(RedisTarget::Node(url.clone())),
            (None, false) => Some(RedisTarget::Cluster(seeds)),
            (None, true) => None,
        };
        match (&self.database_url, redis) {
            (Some(d), Some(redis)) => Ok(Mode::Production {
                database_url: d.clone(),
                redis,
            }),
            (None, None) => Ok(Mode::Embedded {
                data_dir: self.data_dir.clone(),
            }),
            (Some(_), None) => Err(ConfigError::HalfProduction("DATABASE_URL")),
            (None, Some(RedisTarget::Node(_))) => Err(ConfigError::HalfProduction("REDIS_URL")),
            (None, Some(RedisTarget::Cluster(_))) => {
                Err(ConfigError::HalfProduction("LIVE_REDIS_CLUSTER_NODES"))
            }
        }
    }
}

pub const MIN_SECRET_BYTES: usize = 32;
/// A token cannot be revoked: one that outlives a month is refused unless forced.
pub const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The secret for this mode: given, or (embedded only) made once and kept.
pub fn resolve_secret(mode: &Mode, given: Option<Secret>) -> Result<Secret, ConfigError> {
    if let Some(secret) = given {
        if secret.0.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::ShortSecret(secret.0.len()));
        }
        return Ok(secret);
    }
    match mode {
        Mode::Production { .. } => Err(ConfigError::MissingSecret),
        Mode::Embedded { data_dir } => embedded_secret(data_dir),
    }
}

fn embedded_secret(data_dir: &std::path::Path) -> Result<Secret, ConfigError> {
    let io = |source| ConfigError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    private_dir(data_dir).map_err(io)?;
    let path = data_dir.join("jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= MIN_SECRET_BYTES => {
            // Made by an older version, or copied in with the wrong mode.
            make_private(&path).map_err(io)?;
            Ok(Secret(s.trim().to_owned()))
        }
        Ok(_) | Err(_) => {
            use rand::RngCore;
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&path, &secret).map_err(io)?;
            Ok(Secret(secret))
        }
    }
}

/// Creates the embedded data dir for this user alone (0700), and tightens
/// one that exists: it holds the secret, the demo's tokens and every order.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Makes a file readable and writable by this user alone (0600).
pub fn make_private(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Creates `path` empty and private if it is missing (so no other process
/// creates it with wider permissions first), and makes it private if not.
pub fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?;
    make_private(path)
}

/// Replaces `path` with `contents`, private (0600) from the first byte: it
/// is written to a private file beside it, then renamed over it, so a
/// crash never leaves half a file and an old file's mode does not carry over.
pub fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(db: Option<&str>, redis: Option<&str>) -> StoreArgs {
        StoreArgs {
            database_url: db.map(str::to_owned),
            redis_url: redis.map(str::to_owned),
            redis_cluster_nodes: Vec::new(),
            redis_prefix: "ll".into(),
            data_dir: "./x".into(),
        }
    }

    #[test]
    fn one_url_alone_is_refused() {
        assert!(matches!(
            store(Some("postgres://x"), None).mode(),
            Err(ConfigError::HalfProduction("DATABASE_URL"))
        ));
        assert!(matches!(
            store(None, Some("redis://x")).mode(),
            Err(ConfigError::HalfProduction("REDIS_URL"))
        ));
        assert!(matches!(
            store(None, None).mode(),
            Ok(Mode::Embedded { .. })
        ));
    }

    #[test]
    fn a_cluster_is_named_by_its_seed_nodes() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "live",
            "--database-url",
            "postgres://x",
            "--redis-cluster-nodes",
            "10.0.0.1:7000, redis://:pw@b:7000,",
        ])
        .unwrap();
        let mode = cli.serve.store.mode().unwrap();
        let Mode::Production { redis, .. } = mode else {
            panic!("{mode:?}");
        };
        assert_eq!(
            redis,
            RedisTarget::Cluster(vec![
                "redis://10.0.0.1:7000".into(),
                "redis://:pw@b:7000".into()
            ])
        );
        // A cluster without PostgreSQL is half a production.
        let mut half = store(None, None);
        half.redis_cluster_nodes = vec!["redis://a:7000".into()];
        assert!(matches!(
            half.mode(),
            Err(ConfigError::HalfProduction("LIVE_REDIS_CLUSTER_NODES"))
        ));
        let mut both = store(Some("postgres://x"), Some("redis://x"));
        both.redis_cluster_nodes = vec!["redis://a:7000".into()];
        assert!(matches!(both.mode(), Err(ConfigError::TwoRedises)));
    }

    #[test]
    fn production_needs_a_long_secret() {
        let mode = store(Some("p"), Some("r")).mode().unwrap();
        assert!(matches!(
            resolve_secret(&mode, None),
            Err(ConfigError::MissingSecret)
        ));
        assert!(matches!(
            resolve_secret(&mode, Some(Secret("short".into()))),
            Err(ConfigError::ShortSecret(5))
        ));
        assert!(resolve_secret(&mode, Some(Secret("x".repeat(32)))).is_ok());
    }

    #[test]
    fn workers_must_be_a_positive_count() {
        use clap::Parser;
        let parse = |args: &[&str]| Cli::try_parse_from(args);
        assert_eq!(
            parse(&["live", "--workers", "1"]).unwrap().workers(),
            Some(1)
        );
        assert_eq!(
            parse(&["live", "serve", "--workers", "3"])
                .unwrap()
                .workers(),
            Some(3)
        );
        assert_eq!(parse(&["live"]).unwrap().workers(), None);
        for bad in ["0", "-1", "many", ""] {
            assert!(parse(&["live", "--workers", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trusted_proxies_are_cidrs_and_bad_ones_stop_the_start() {
        use clap::Parser;
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.serve.trusted_proxies);
        assert_eq!(parse(&["live"]).unwrap(), vec![]);
        let nets = parse(&[
            "live",
            "--trusted-proxies",
            "10.0.0.0/8, 192.168.1.7,fd00::/8",
        ])
        .unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]);
        for bad in ["10.0.0.0/33", "10.0.0/8", "lb.internal", "10.0.0.0/8,,"] {
            let e = parse(&["live", "--trusted-proxies", bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a CIDR"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn stream_hosts_default_to_the_platforms_and_split_on_commas() {
        use clap::Parser;
        let hosts = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Some(Command::Serve(a)) => a.stream_hosts,
            _ => unreachable!(),
        };
        assert_eq!(
            hosts(&["live", "serve"]),
            crate::catalog::validate::DEFAULT_STREAM_HOSTS
                .split(',')
                .collect::<Vec<_>>()
        );
        assert_eq!(
            hosts(&["live", "serve", "--stream-hosts", "a.example,*.b.example"]),
            ["a.example", "*.b.example"]
        );
    }

    #[cfg(unix)]
    fn mode(path: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn the_data_dir_and_secret_are_private_also_when_made_by_an_older_version() {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("lychee-cfg-{}", uuid::Uuid::new_v4().simple()));
        let fresh = dir.join("fresh");
        let mode_of = Mode::Embedded {
            data_dir: fresh.clone(),
        };
        let made = resolve_secret(&mode_of, None).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&fresh.join("jwt-secret")), 0o600);
        assert_eq!(resolve_secret(&mode_of, None).unwrap().0, made.0, "kept");

        let old = dir.join("old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = old.join("jwt-secret");
        std::fs::write(&secret, "s".repeat(40)).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let read = resolve_secret(
            &Mode::Embedded {
                data_dir: old.clone(),
            },
            None,
        )
        .unwrap();
        assert_eq!(read.0, "s".repeat(40));
        assert_eq!(mode(&old), 0o700);
        assert_eq!(mode(&secret), 0o600);

        // A rewrite does not keep an old file's mode.
        let file = old.join("tokens.json");
        std::fs::write(&file, "{}").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&file, "{\"new\":1}").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"new\":1}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn payment_flags_parse_with_their_provider_prefix() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "live",
            "--payments",
            "sandbox,wechatpay,alipay",
            "--wechatpay-private-key-file",
            "/k/wx.pem",
            "--alipay-private-key-file",
            "/k/ali.pem",
            "--alipay-public-key-file",
            "/k/alipay-pub.pem",
            "--public-url",
            "https://live.example.com",
        ])
        .unwrap();
        let p = cli.serve.payments;
        assert_eq!(
            p.providers.as_deref(),
            Some(&["sandbox".to_owned(), "wechatpay".into(), "alipay".into()][..])
        );
        assert_eq!(
            p.wechatpay.private_key_file.unwrap().to_str(),
            Some("/k/wx.pem")
        );
        assert_eq!(
            p.alipay.private_key_file.unwrap().to_str(),
            Some("/k/ali.pem")
        );
        assert_eq!(p.wechatpay.public_key_file, None);
        assert_eq!(p.public_url.unwrap().as_str(), "https://live.example.com/");
    }

    #[test]
    fn secret_is_not_debug_printed() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(..)");
    }
}
