//! What the scenarios share: latency histograms, tokens, API calls.

use std::collections::HashMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use lychee_live::identity::{Identity, Role, TokenKeys};
use serde_json::{json, Value};

pub fn histogram() -> Histogram<u64> {
    // Microseconds up to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[derive(Default)]
pub struct Phase {
    latency: Option<Histogram<u64>>,
    outcomes: HashMap<String, u64>,
}

impl Phase {
    pub fn record(&mut self, micros: u64, outcome: &str) {
        let h = self.latency.get_or_insert_with(histogram);
        let _ = h.record(micros.max(1));
        *self.outcomes.entry(outcome.to_owned()).or_default() += 1;
    }

    pub fn merge(&mut self, other: Phase) {
        if let Some(o) = other.latency {
            let h = self.latency.get_or_insert_with(histogram);
            let _ = h.add(o);
        }
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }

    pub fn summary(&self, secs: f64) -> Value {
        let total: u64 = self.outcomes.values().sum();
        let ms = |q: f64| {
            self.latency
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        json!({
            "requests": total,
            "secs": secs,
            "per_sec": if secs > 0.0 { total as f64 / secs } else { 0.0 },
            "outcomes": self.outcomes,
            "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": ms(1.0) },
        })
    }
}

pub fn token(keys: &TokenKeys, role: Role, sub: &str) -> String {
    let who = Identity {
        user_id: sub.into(),
        name: None,
        role,
    };
    keys.mint(&who, Duration::from_secs(3600), chrono::Utc::now())
        .expect("mint a token")
        .token
}

pub fn token_for_late(keys: &TokenKeys, i: usize) -> String {
    token(keys, Role::Viewer, &format!("late-{i}"))
}

pub async fn call(req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// A live sale with one product on sale; returns its id.
pub async fn live_sale(
    http: &reqwest::Client,
    node: &str,
    host: &str,
    checkout: &str,
    stock: i64,
) -> Result<String, String> {
    let (s, sale) = call(
        http.post(format!("{node}/api/v1/sales"))
            .bearer_auth(host)
            .json(&json!({ "title": "Load test", "checkout": checkout })),
    )
    .await?;
    if s != 201 {
        return Err(format!("create sale: {s} {sale}"));
    }
    let id = sale["id"].as_str().ok_or("sale without id")?.to_owned();
    let steps = [
        (
            format!("{node}/api/v1/sales/{id}/products"),
            json!({ "sku": "RUSH", "name": "Feizixiao 5 kg", "price_cents": 16800,
                    "stock": stock, "per_user_limit": 1000 }),
        ),
        (format!("{node}/api/v1/sales/{id}/start"), json!({})),
        (
            format!("{node}/api/v1/sales/{id}/products/RUSH/open"),
            json!({}),
        ),
    ];
    for (url, body) in steps {
        let (s, v) = call(http.post(&url).bearer_auth(host).json(&body)).await?;
        if !(200..300).contains(&s) {
            return Err(format!("{url}: {s} {v}"));
        }
    }
    Ok(id)
}
