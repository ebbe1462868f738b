//! Payments over REST: start, read, the providers' callbacks, refunds, and
//! the sandbox's checkout page.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{parse_id, AppJson, AppPath, Auth};
use super::AppState;
use crate::payments::service::{SandboxAction, StartPayment};
use crate::payments::Scene;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/payments/providers", get(providers))
        .route("/orders/{id}/payments", post(start))
        .route("/orders/{id}/refunds", post(refund))
        .route("/payments/{id}", get(get_payment))
        .route("/payments/{provider}/notify", post(notify))
}

/// Outside `/api/v1`: a page the buyer's browser opens, as a gateway's is.
pub fn sandbox_router() -> Router<AppState> {
    Router::new().route("/sandbox/pay/{id}", get(sandbox_page).post(sandbox_act))
}

async fn providers(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({ "providers": state.payments.providers() }))
}

#[derive(Deserialize)]
struct StartBody {
    provider: String,
    /// `mobile` (default), `desktop`, or `wechat` with `openid`.
    scene: Option<String>,
    openid: Option<String>,
}

async fn start(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<StartBody>,
) -> Result<Response, ApiError> {
    let order_id = parse_id(&id, "order")?;
    let scene = match (body.scene.as_deref(), body.openid) {
        (None | Some("mobile"), None) => Scene::Mobile,
        (Some("desktop"), None) => Scene::Desktop,
        (None | Some("wechat"), Some(openid))
            if (1..=128).contains(&openid.len())
                && crate::text::check_ascii_ref(&openid).is_ok() =>
        {
            Scene::WeChat { openid }
        }
        (Some("wechat"), None) => {
            return Err(ApiError::BadRequest(
                "scene wechat needs the buyer's openid".into(),
            ))
        }
        _ => {
            return Err(ApiError::BadRequest(
                "scene must be mobile, desktop or wechat (with openid)".into(),
            ))
        }
    };
    let (created, payment) = state
        .payments
        .start(
            &who,
            order_id,
            StartPayment {
                provider: body.provider,
                scene,
            },
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(payment)).into_response())
}

async fn get_payment(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "payment")?;
    Ok(Json(state.payments.get(&who, id).await?))
}

/// The provider's own format in and out: no JSON error envelope here.
async fn notify(
    State(state): State<AppState>,
    AppPath(provider): AppPath<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|_| ApiError::PayloadTooLarge)?;
    let reply = state
        .payments
        .notify(&provider, &headers, &body)
        .await
        .ok_or_else(|| ApiError::NotFound("no such payment provider here".into()))?;
    Ok((
        reply.status,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response())
}

#[derive(Deserialize)]
struct RefundBody {
    amount_cents: i64,
    reason: String,
}

async fn refund(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    headers: HeaderMap,
    AppJson(body): AppJson<RefundBody>,
) -> Result<Response, ApiError> {
    let order_id = parse_id(&id, "order")?;
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| ApiError::BadRequest("the Idempotency-Key header is required".into()))?
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
    let refund = state
        .payments
        .refund(&who, order_id, key, body.amount_cents, &body.reason)
        .await?;
    Ok((StatusCode::CREATED, Json(refund)).into_response())
}

/// The page has no script and posts only to itself.
const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

fn page(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(body),
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn frame(title: &str, inner: &str) -> String {
    format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>\
         body{{font:16px system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         .amount{{font-size:2.2rem;font-weight:700;margin:.5rem 0}}\
         button{{font-size:1.1rem;padding:.8rem 1rem;margin:.3rem 0;width:100%;border-radius:.5rem;border:1px solid #999}}\
         .pay{{background:#07c160;color:#fff;border-color:#07c160}}\
         .note{{color:#666;font-size:.85rem}}\
         </style></head><body><p class=\"note\">沙箱支付 · Sandbox payment (no real money)</p>{inner}</body></html>",
        title = escape(title)
    )
}

async fn sandbox_page(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "payment")?;
    let (p, charge) = state.payments.sandbox_payment(id).await?;
    let amount = format!("¥{}", crate::payments::provider::yuan(p.amount_cents));
    let now = state.clock.now();
    let inner = if let Some(c) = charge {
        format!(
            "<p class=\"amount\">{amount}</p><p>已处理 · Done: <b>{}</b></p>\
             <p><a href=\"/sales/{}\">返回直播间 · Back to the sale</a></p>",
            c.state.as_str(),
            p.sale_id
        )
    } else if now >= p.expires_at {
        format!("<p class=\"amount\">{amount}</p><p>已过期 · This payment has expired.</p>")
    } else {
        format!(
            "<p class=\"amount\">{amount}</p><p>订单 · Order <code>{}</code></p>\
             <p class=\"note\">请在 {} 前支付 · Pay before {} (UTC)</p>\
             <form method=\"post\">\
             <button class=\"pay\" name=\"action\" value=\"pay\">支付 · Pay</button>\
             <button name=\"action\" value=\"fail\">支付失败 · Fail</button>\
             <details><summary class=\"note\">演练 · Rehearsals</summary>\
             <button name=\"action\" value=\"pay_lost\">支付，回调丢失 · Pay, lose the callback</button>\
             <button name=\"action\" value=\"pay_refunds_fail\">支付，退款会失败 · Pay, refunds will fail</button>\
             </details></form>",
            p.order_id,
            p.expires_at.format("%H:%M:%S"),
            p.expires_at.format("%H:%M:%S"),
        )
    };
    Ok(page(StatusCode::OK, frame("沙箱支付 · Sandbox", &inner)))
}

async fn sandbox_act(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "payment")?;
    let body = body.map_err(|_| ApiError::PayloadTooLarge)?;
    let action = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "action")
        .map(|(_, v)| v.into_owned());
    let action = match action.as_deref() {
        Some("pay") => SandboxAction::Pay,
        Some("pay_lost") => SandboxAction::PayLost,
        Some("pay_refunds_fail") => SandboxAction::PayRefundsFail,
        Some("fail") => SandboxAction::Fail,
        _ => {
            return Err(ApiError::BadRequest(
                "action must be pay, fail, pay_lost or pay_refunds_fail".into(),
            ))
        }
    };
    let (p, _) = state.payments.sandbox_payment(id).await?;
    let answer = state.payments.sandbox_act(id, action).await;
    let (status, text) = match answer {
        Ok(Some(code)) if (200..300).contains(&code) => (
            StatusCode::OK,
            if action == SandboxAction::Fail {
                "支付失败 · The payment failed.".to_owned()
            } else {
                "支付成功 · Paid.".to_owned()
            },
        ),
        Ok(Some(code)) => (
            StatusCode::OK,
            format!("网关已记录，回调被拒绝 · Recorded; the callback was refused ({code})."),
        ),
        Ok(None) => (
            StatusCode::OK,
            "已支付，回调已丢弃 · Paid; the callback was dropped (reconciliation will find it)."
                .to_owned(),
        ),
        Err(e) => {
            let e = ApiError::from(e);
            (e.status_code(), escape(&e.to_string()))
        }
    };
    let inner = format!(
        "<p>{text}</p><p><a href=\"/sales/{}\">返回直播间 · Back to the sale</a></p>",
        p.sale_id
    );
    Ok(page(status, frame("沙箱支付 · Sandbox", &inner)))
}
