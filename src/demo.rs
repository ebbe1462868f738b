//! The embedded mode's demo: a live sale to try at once, and how to reach it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::validate::{CreateProduct, CreateSale};
use crate::catalog::ProductStatus;
use crate::http::AppState;
use crate::identity::{signin, Identity, Minted, Role, TokenKeys};
use crate::StartError;

/// Chinese first, as the farmers who run such sales write them.
pub const TITLE: &str = "从化荔枝开摘 · Conghua lychee harvest";
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
/// The demo's tokens, in the data dir.
pub const TOKENS_FILE: &str = "tokens.json";
/// A kept token with less than this left is renewed at start, so a sign-in
/// link never hands out one about to expire.
const RENEW_WITHIN: chrono::TimeDelta = chrono::TimeDelta::hours(1);

pub struct Demo {
    pub sale_id: Uuid,
    /// Where the tokens are kept (0600).
    pub tokens_path: PathBuf,
    pub tokens: DemoTokens,
    /// One-time codes of the banner's sign-in links.
    pub host_code: String,
    pub operator_code: String,
}

/// What `tokens.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoTokens {
    pub host: Minted,
    pub operator: Minted,
}

fn seed_err(e: impl std::fmt::Display) -> StartError {
    StartError::Seed(e.to_string())
}

fn host() -> Identity {
    Identity {
        user_id: "demo-host".into(),
        name: Some("陈伯 Farmer Chen".into()),
        role: Role::Host,
    }
}

fn operator() -> Identity {
    Identity {
        user_id: "demo-operator".into(),
        name: Some("运营 Operator".into()),
        role: Role::Operator,
    }
}

/// Creates the demo sale once (live, three products on sale), keeps the
/// host's and the operator's tokens in the data dir, and issues a sign-in
/// code for each.
pub async fn seed(state: &AppState, data_dir: &Path) -> Result<Demo, StartError> {
    let host = host();
    let catalog = &state.catalog;
    let existing = catalog
        .list(None)
        .await
        .map_err(seed_err)?
        .sales
        .iter()
        .find(|s| s.record.title == TITLE && s.record.host_id == host.user_id)
        .map(|s| s.record.id);
    let sale_id = match existing {
        Some(id) => id,
        None => {
            let mut new = CreateSale {
                title: TITLE.into(),
                description: Some(
                    "从化果园今早现摘，当天发货。Fresh from the orchards of Conghua, picked this morning.".into(),
                ),
                scheduled_at: None,
                checkout: None,
                reservation_ttl_secs: None,
                stream_url: None,
            }
            .validate(&state.stream_hosts)
            .map_err(seed_err)?;
            // The node's own short test broadcast, so the viewer page's
            // player has something to play without any network. Set after
            // validation, which admits only https URLs on streaming hosts:
            // a sale made through the API never has a path here.
            new.stream_url = Some(crate::web::DEMO_STREAM.into());
            let sale = catalog.create_sale(&host, new).await.map_err(seed_err)?;
            let id = sale.record.id;
            catalog.start(&host, id).await.map_err(seed_err)?;
            let products = [
                ("FZX-5KG", "妃子笑荔枝 5 kg 装", 16800, 300, None),
                ("NMC-2_5KG", "糯米糍荔枝 2.5 kg 装", 12800, 200, None),
                ("HONEY-500G", "荔枝蜜 500 g", 6800, 500, Some("2027-07-15")),
            ];
            for (sku, name, price, stock, ships_by) in products {
                let p = CreateProduct {
                    sku: sku.into(),
                    name: name.into(),
                    price_cents: price,
                    currency: None,
                    stock,
                    per_user_limit: Some(2),
                    ships_by: ships_by.map(str::to_owned),
                    ships_to: None,
                    claim_window_hours: None,
                }
                .validate()
                .map_err(seed_err)?;
                catalog.add_product(&host, id, p).await.map_err(seed_err)?;
                catalog
                    .set_status(&host, id, sku, ProductStatus::OnSale)
                    .await
                    .map_err(seed_err)?;
            }
            id
        }
    };
    let tokens_path = data_dir.join(TOKENS_FILE);
    let tokens = kept_tokens(&state.keys, &tokens_path, state.clock.now())?;
    let now = std::time::Instant::now();
    Ok(Demo {
        sale_id,
        host_code: state.signin.issue(tokens.host.clone(), now),
        operator_code: state.signin.issue(tokens.operator.clone(), now),
        tokens_path: std::fs::canonicalize(&tokens_path).unwrap_or(tokens_path),
        tokens,
    })
}

/// The host's and the operator's tokens: those kept in `path` while they
/// are this node's (signed with its secret, for the demo's users) and have
/// an hour left, else new ones written there, readable by this user alone.
/// Kept rather than minted at every start, so a start prints nothing new
/// worth stealing and a token in use keeps working.
pub fn kept_tokens(
    keys: &TokenKeys,
    path: &Path,
    now: DateTime<Utc>,
) -> Result<DemoTokens, StartError> {
    let good = |m: &Minted, who: &Identity| {
        keys.verify(&m.token).is_ok_and(|v| &v == who) && m.expires_at - now >= RENEW_WITHIN
    };
    let kept = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str::<DemoTokens>(&s).ok())
        .filter(|t| good(&t.host, &host()) && good(&t.operator, &operator()));
    if let Some(tokens) = kept {
        crate::config::make_private(path)?;
        return Ok(tokens);
    }
    let tokens = DemoTokens {
        host: keys.mint(&host(), TOKEN_TTL, now).map_err(seed_err)?,
        operator: keys.mint(&operator(), TOKEN_TTL, now).map_err(seed_err)?,
    };
    let json = serde_json::to_string_pretty(&tokens).map_err(seed_err)?;
    crate::config::write_private(path, &json)?;
    Ok(tokens)
}

/// What to open or paste to try the demo sale. No token: the links open the
/// sign-in page with a one-time code after `#` (never sent to the server;
/// the page exchanges it for the token) and where to go after in the query
/// (a path, no secret), and the tokens stay in their file. The same page
/// takes `#token=<jwt>` for links made in production.
pub fn banner(_state: &AppState, demo: &Demo, addr: SocketAddr) -> Result<String, StartError> {
    let base = format!("http://{addr}");
    let id = demo.sale_id;
    let file = demo.tokens_path.display();
    let until = demo
        .tokens
        .host
        .expires_at
        .min(demo.tokens.operator.expires_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let minutes = signin::CODE_TTL.as_secs() / 60;
    let mut s = String::new();
    let w = |s: &mut String, line: String| writeln!(s, "{line}").map_err(seed_err);
    w(&mut s, format!("\nlychee-live (embedded mode) at {base}"))?;
    w(
        &mut s,
        format!("  demo sale:      {base}/api/v1/sales/{id}"),
    )?;
    w(
        &mut s,
        format!("  live sales:     {base}/api/v1/sales?status=live"),
    )?;
    w(
        &mut s,
        format!(
            "  host console:   {base}/signin?next=/host/{id}#signin={}",
            demo.host_code
        ),
    )?;
    w(
        &mut s,
        format!(
            "  dashboard:      {base}/signin?next=/ops%3Fsale%3D{id}#signin={}",
            demo.operator_code
        ),
    )?;
    w(
        &mut s,
        format!(
            "  Each link signs one browser in, once, within {minutes} minutes. The host's and the\n  \
             operator's tokens (valid until {until}) are in {file}, readable by you alone."
        ),
    )?;
    w(&mut s, "\nTry it:".into())?;
    w(
        &mut s,
        format!(
            "  TOKEN=$(curl -s -X POST {base}/api/v1/guests -H 'Content-Type: application/json' \
             -d '{{\"name\":\"Mei\"}}' | sed 's/.*\"token\":\"\\([^\"]*\\)\".*/\\1/')"
        ),
    )?;
    w(
        &mut s,
        format!(
            "  ORDER=$(curl -s -X POST {base}/api/v1/sales/{id}/orders -H \"Authorization: Bearer $TOKEN\" \
             -H 'Content-Type: application/json' -H \"Idempotency-Key: $(date +%s%N)\" \
             -d '{{\"sku\":\"FZX-5KG\",\"qty\":1}}' | sed 's/^{{\"id\":\"\\([^\"]*\\)\".*/\\1/')"
        ),
    )?;
    w(
        &mut s,
        format!(
            "  # pay through the sandbox: open the checkout.url it answers and press Pay\n  \
             curl -s -X POST {base}/api/v1/orders/$ORDER/payments -H \"Authorization: Bearer $TOKEN\" \
             -H 'Content-Type: application/json' -d '{{\"provider\":\"sandbox\"}}'"
        ),
    )?;
    w(
        &mut s,
        format!("  curl -s {base}/api/v1/me/orders -H \"Authorization: Bearer $TOKEN\""),
    )?;
    w(&mut s, format!("  HOST=$(jq -r .host.token '{file}')"))?;
    w(
        &mut s,
        format!("  curl -s {base}/api/v1/sales/{id}/orders.csv -H \"Authorization: Bearer $HOST\""),
    )?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(&Secret(secret.repeat(32))).unwrap()
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("lychee-demo-{}", Uuid::new_v4().simple()));
        crate::config::private_dir(&d).unwrap();
        d
    }

    #[test]
    fn tokens_are_written_once_and_kept_while_good() {
        let d = dir();
        let path = d.join(TOKENS_FILE);
        let k = keys("a");
        let now = Utc::now();
        let first = kept_tokens(&k, &path, now).unwrap();
        assert_eq!(k.verify(&first.host.token).unwrap(), host());
        assert_eq!(k.verify(&first.operator.token).unwrap(), operator());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let on_disk: DemoTokens =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(on_disk, first);
        // The next start keeps them.
        let later = now + chrono::TimeDelta::hours(2);
        assert_eq!(kept_tokens(&k, &path, later).unwrap(), first);
        // Within the last hour they are renewed.
        let late = now + chrono::TimeDelta::minutes(11 * 60 + 30);
        assert_ne!(kept_tokens(&k, &path, late).unwrap(), first);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tokens_of_another_secret_or_a_broken_file_are_replaced() {
        let d = dir();
        let path = d.join(TOKENS_FILE);
        let now = Utc::now();
        let old = kept_tokens(&keys("a"), &path, now).unwrap();
        let k = keys("b");
        let new = kept_tokens(&k, &path, now).unwrap();
        assert_ne!(new, old);
        assert!(k.verify(&new.host.token).is_ok());
        std::fs::write(&path, "{not json").unwrap();
        let again = kept_tokens(&k, &path, now).unwrap();
        assert!(k.verify(&again.operator.token).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
