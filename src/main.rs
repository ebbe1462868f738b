//! The `lychee-live` binary: parses the command line and calls the library.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use lychee_live::catalog::validate::StreamHosts;
use lychee_live::config::{resolve_secret, Cli, Command, Mode, ServeArgs};
use lychee_live::hub::chat::ChatRate;
use lychee_live::identity::{Identity, TokenKeys};
use lychee_live::{demo, Backends, Node, Settings};

/// glibc's allocator spent a quarter of the node's CPU in a rush (arena lock
/// contention and consolidation); mimalloc does not (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .init();
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.workers() {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lychee-live: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lychee-live: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn dispatch(cli: Cli) -> Result<(), Error> {
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Migrate(store)) => {
            // Migrating needs only the database, not Redis.
            match &store.database_url {
                Some(url) => {
                    lychee_live::connect_postgres(url).await?;
                }
                None => {
                    lychee_live::open_sqlite(&store.data_dir).await?;
                }
            }
            println!("migrations applied");
            Ok(())
        }
        Some(Command::Token(args)) => {
            let ttl: std::time::Duration = args.ttl.into();
            if ttl > lychee_live::config::MAX_TOKEN_TTL && !args.force {
                return Err(
                    "--ttl over 30 days: tokens cannot be revoked; add --force if you mean it"
                        .into(),
                );
            }
            let mode = args.store.mode()?;
            let secret = resolve_secret(&mode, args.secret.jwt_secret)?;
            let who = Identity {
                user_id: args.sub,
                name: args.name,
                role: args.role.parse()?,
            };
            let minted = TokenKeys::new(&secret)?.mint(&who, ttl, chrono::Utc::now())?;
            println!("{}", minted.token);
            Ok(())
        }
        Some(Command::Reconcile(args)) => {
            let mode = args.store.mode()?;
            if matches!(mode, Mode::Embedded { .. }) {
                println!("embedded mode: live state is rebuilt at every start; nothing to do");
                return Ok(());
            }
            let settings = Settings::new(mode, Default::default(), args.store.redis_prefix);
            let shutdown = CancellationToken::new();
            let backends = Backends::open(&settings, &shutdown).await?;
            let n = backends.rebuilder().reconcile(args.force).await?;
            shutdown.cancel();
            println!("rebuilt {n} sale(s)");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), Error> {
    let mode = args.store.mode()?;
    let secret = resolve_secret(&mode, args.secret.jwt_secret)?;
    let data_dir = match &mode {
        Mode::Embedded { data_dir } => Some(data_dir.clone()),
        Mode::Production { .. } => None,
    };
    if !(args.chat_rate > 0.0 && args.chat_rate <= 100.0) || args.chat_burst == 0 {
        return Err("--chat-rate must be in (0, 100] and --chat-burst at least 1".into());
    }
    if [
        args.header_timeout,
        args.request_timeout,
        args.write_timeout,
        args.heartbeat,
    ]
    .iter()
    .any(|d| d.is_zero())
    {
        return Err("--header-timeout, --request-timeout, --write-timeout and --heartbeat must be above zero".into());
    }
    if [
        args.max_connections,
        args.max_connections_per_ip,
        args.max_sockets_per_ip,
        args.max_guest_sockets_per_ip,
    ]
    .contains(&0)
    {
        return Err("--max-connections, --max-connections-per-ip, --max-sockets-per-ip and --max-guest-sockets-per-ip must be at least 1".into());
    }
    let mut settings = Settings::new(mode, secret, args.store.redis_prefix);
    let embedded = data_dir.is_some();
    settings.guests = args.guests.unwrap_or(embedded);
    settings.chat_rate = ChatRate {
        per_sec: args.chat_rate,
        burst: args.chat_burst,
    };
    settings.blocked_words = args.blocked_words;
    settings.limits = lychee_live::http::limits::LimitSettings {
        buy_per_user: args.buy_rate,
        buy_per_ip: args.ip_rate,
        chat_per_ip: args.chat_ip_rate,
        max_sockets: args.max_sockets,
        max_sockets_per_user: args.max_sockets_per_user,
        max_sockets_per_ip: args.max_sockets_per_ip,
        max_guest_sockets_per_ip: args.max_guest_sockets_per_ip,
        header_timeout: args.header_timeout.into(),
        request_timeout: args.request_timeout.into(),
        max_connections: args.max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        write_timeout: args.write_timeout.into(),
        heartbeat: args.heartbeat.into(),
        trusted_proxies: args.trusted_proxies,
        ..Default::default()
    };
    settings.cors_origins = args.cors_origins;
    settings.payments = args.payments.clone();
    settings.stream_hosts = Arc::new(
        StreamHosts::parse(&args.stream_hosts).map_err(|e| format!("--stream-hosts: {e}"))?,
    );
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let clock = Arc::new(lychee_live::clock::Clock::default());
    let node = Node::start(settings, clock, shutdown.clone()).await?;
    if let Some(dir) = &data_dir {
        let demo = demo::seed(&node.state, dir).await?;
        println!("{}", demo::banner(&node.state, &demo, addr)?);
    }
    tracing::info!(
        mode = if embedded { "embedded" } else { "production" },
        %addr,
        "lychee-live ready"
    );
    tokio::spawn(wait_for_signal(shutdown));
    node.serve(listener).await?;
    Ok(())
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
