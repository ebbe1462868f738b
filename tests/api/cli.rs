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

/// An embedded node started as a user would: stdout piped, lines collected.
struct Embedded {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stdout: String,
}

impl Embedded {
    fn start(dir: &std::path::Path) -> Embedded {
        let mut child = bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut node = Embedded {
            child,
            lines,
            stdout: String::new(),
        };
        // The banner's last line.
        while !node.stdout.contains("orders.csv") {
            let line = node
                .lines
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the banner within 60 s");
            node.stdout.push_str(&line);
            node.stdout.push('\n');
        }
        node
    }

    /// The value after `label` on the banner's line starting with it.
    fn field(&self, label: &str) -> String {
        let line = self
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in {}", self.stdout));
        line.trim_start()[label.len()..].trim().to_owned()
    }

    fn base(&self) -> String {
        let line = self
            .stdout
            .lines()
            .find(|l| l.contains("(embedded mode) at"))
            .unwrap();
        line.rsplit(' ').next().unwrap().to_owned()
    }

    fn code(&self, label: &str) -> String {
        let link = self.field(label);
        link.split_once("#signin=").unwrap().1.to_owned()
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.try_recv() {
            self.stdout.push_str(&line);
            self.stdout.push('\n');
        }
        self.stdout
    }
}

/// `POST /signin` with `code`: the status and the JSON answer.
async fn signin(base: &str, code: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/signin"))
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn embedded_start_keeps_its_files_private_and_prints_sign_in_links_not_tokens() {
    use std::os::unix::fs::PermissionsExt;
    // This test's own HTTP client needs the process's TLS provider.
    lychee_live::payments::install_crypto();
    let dir = std::env::temp_dir().join(format!("lychee-cli-{}", uuid::Uuid::new_v4().simple()));
    // As an older version left it: a dir and a secret others can read.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("jwt-secret"), "ab".repeat(32)).unwrap();
    std::fs::set_permissions(
        dir.join("jwt-secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let node = Embedded::start(&dir);
    assert_eq!(mode(&dir), 0o700);
    for file in ["jwt-secret", "lock", "lychee.db", "tokens.json"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    for file in ["lychee.db-wal", "lychee.db-shm"] {
        let path = dir.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
    let kept = std::fs::read_to_string(dir.join("tokens.json")).unwrap();
    let tokens: serde_json::Value = serde_json::from_str(&kept).unwrap();
    let host_token = tokens["host"]["token"].as_str().unwrap().to_owned();
    let operator_token = tokens["operator"]["token"].as_str().unwrap().to_owned();
    assert!(node.stdout.contains("tokens.json"), "{}", node.stdout);

    // A code works once.
    let base = node.base();
    let host_code = node.code("host console:");
    let (status, body) = signin(&base, &host_code).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token"], host_token.as_str());
    assert_eq!(body["user_id"], "demo-host");
    assert!(body["expires_at"].is_string());
    let (status, body) = signin(&base, &host_code).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = signin(&base, &"0".repeat(32)).await;
    assert_eq!(status, 401);
    let (status, body) = signin(&base, &node.code("dashboard:")).await;
    assert_eq!(
        (status, body["token"].as_str()),
        (200, Some(operator_token.as_str()))
    );
    let first = node.stop();

    // The next start keeps the tokens, prints new codes and no token.
    let node = Embedded::start(&dir);
    assert_eq!(
        std::fs::read_to_string(dir.join("tokens.json")).unwrap(),
        kept
    );
    let (status, _) = signin(&node.base(), &host_code).await;
    assert_eq!(status, 401, "an old start's code");
    assert_ne!(node.code("host console:"), host_code);
    let second = node.stop();
    for printed in [&first, &second] {
        for token in [&host_token, &operator_token] {
            let signature = token.rsplit('.').next().unwrap();
            assert!(
                !printed.contains(signature),
                "a token was printed:\n{printed}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
