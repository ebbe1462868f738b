//! The embedded mode's demo: a live sale to try at once, and how to reach it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use uuid::Uuid;

use crate::catalog::validate::{CreateProduct, CreateSale};
use crate::catalog::ProductStatus;
use crate::http::AppState;
use crate::identity::{Identity, Role};
use crate::StartError;

pub const TITLE: &str = "Conghua lychee harvest";
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

pub struct Demo {
    pub sale_id: Uuid,
    pub host_token: String,
    pub operator_token: String,
}

fn seed_err(e: impl std::fmt::Display) -> StartError {
    StartError::Seed(e.to_string())
}

fn host() -> Identity {
    Identity {
        user_id: "demo-host".into(),
        name: Some("Farmer Chen".into()),
        role: Role::Host,
    }
}

/// Creates the demo sale once (live, three products on sale) and mints tokens.
pub async fn seed(state: &AppState) -> Result<Demo, StartError> {
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
            let new = CreateSale {
                title: TITLE.into(),
                description: Some(
                    "Fresh from the orchards of Conghua, picked this morning.".into(),
                ),
                scheduled_at: None,
                checkout: None,
                reservation_ttl_secs: None,
                stream_url: None,
            }
            .validate(&state.stream_hosts)
            .map_err(seed_err)?;
            let sale = catalog.create_sale(&host, new).await.map_err(seed_err)?;
            let id = sale.record.id;
            catalog.start(&host, id).await.map_err(seed_err)?;
            let products = [
                ("FZX-5KG", "Feizixiao lychee 5 kg box", 16800, 300, None),
                ("NMC-2_5KG", "Nuomici lychee 2.5 kg box", 12800, 200, None),
                (
                    "HONEY-500G",
                    "Lychee honey 500 g",
                    6800,
                    500,
                    Some("2027-07-15"),
                ),
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
    let now = state.clock.now();
    let host_token = state
        .keys
        .mint(&host, TOKEN_TTL, now)
        .map_err(seed_err)?
        .token;
    let operator = Identity {
        user_id: "demo-operator".into(),
        name: Some("Operator".into()),
        role: Role::Operator,
    };
    let operator_token = state
        .keys
        .mint(&operator, TOKEN_TTL, now)
        .map_err(seed_err)?
        .token;
    Ok(Demo {
        sale_id,
        host_token,
        operator_token,
    })
}

/// What to paste to try the demo sale.
pub fn banner(_state: &AppState, demo: &Demo, addr: SocketAddr) -> Result<String, StartError> {
    let base = format!("http://{addr}");
    let id = demo.sale_id;
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
    w(&mut s, format!("  host token:     {}", demo.host_token))?;
    w(&mut s, format!("  operator token: {}", demo.operator_token))?;
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
            "  curl -s -X POST {base}/api/v1/sales/{id}/orders -H \"Authorization: Bearer $TOKEN\" \
             -H 'Content-Type: application/json' -H \"Idempotency-Key: $(date +%s%N)\" \
             -d '{{\"sku\":\"FZX-5KG\",\"qty\":1}}'"
        ),
    )?;
    w(
        &mut s,
        format!("  curl -s {base}/api/v1/me/orders -H \"Authorization: Bearer $TOKEN\""),
    )?;
    w(
        &mut s,
        format!(
            "  curl -s {base}/api/v1/sales/{id}/orders.csv -H 'Authorization: Bearer {}'",
            demo.host_token
        ),
    )?;
    Ok(s)
}
