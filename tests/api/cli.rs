//! The binary's subcommands and start-up checks.

use std::process::Command;

use lychee_live::config::Secret;
use lychee_live::identity::{Role, TokenKeys};

use crate::helpers::SECRET;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lychee-live"));
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "LIVE_JWT_SECRET",
        "LIVE_LISTEN",
        "LIVE_DATA_DIR",
    ] {
        c.env_remove(var);
    }
    c
}

#[test]
fn token_prints_a_verifiable_token() {
    let out = bin()
        .args([
            "token", "--role", "host", "--sub", "alice", "--name", "Alice", "--ttl", "12h",
        ])
        .env("LIVE_JWT_SECRET", SECRET)
        .env("DATABASE_URL", "postgres://unused")
        .env("REDIS_URL", "redis://unused")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let who = TokenKeys::new(&Secret(SECRET.into()))
        .unwrap()
        .verify(token.trim())
        .unwrap();
    assert_eq!((who.user_id.as_str(), who.role), ("alice", Role::Host));
    assert_eq!(who.name.as_deref(), Some("Alice"));
}

#[test]
fn token_refuses_a_ttl_over_30_days_unless_forced() {
    let mint = |extra: &[&str]| {
        bin()
            .args([
                "token", "--role", "operator", "--sub", "ops", "--ttl", "31d",
            ])
            .args(extra)
            .env("LIVE_JWT_SECRET", SECRET)
            .env("DATABASE_URL", "postgres://unused")
            .env("REDIS_URL", "redis://unused")
            .output()
            .unwrap()
    };
    let refused = mint(&[]);
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "no token printed");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    let forced = mint(&["--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
}

#[test]
fn one_url_alone_refuses_to_start() {
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", "postgres://127.0.0.1/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("REDIS_URL"), "{err}");
}

#[test]
fn production_refuses_a_short_secret() {
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", "postgres://127.0.0.1/x")
        .env("REDIS_URL", "redis://127.0.0.1/")
        .env("LIVE_JWT_SECRET", "too-short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 32 bytes"), "{err}");
    assert!(!err.contains("too-short"), "the secret leaked: {err}");
}
