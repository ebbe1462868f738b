//! Sales, products, guests and sign-in codes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{parse_id, AppJson, AppPath, AppQuery, Auth, ClientIp};
use super::AppState;
use crate::catalog::validate::{CreateProduct, CreateSale, Pin, Restock};
use crate::catalog::{ProductStatus, SaleStatus};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/guests", post(create_guest))
        .route("/signin", post(signin))
        .route("/sales", get(list_sales).post(create_sale))
        .route("/sales/{id}", get(get_sale))
        .route("/sales/{id}/start", post(start_sale))
        .route("/sales/{id}/end", post(end_sale))
        .route("/sales/{id}/pin", post(pin))
        .route("/sales/{id}/products", post(create_product))
        .route("/sales/{id}/products/{sku}/open", post(open_product))
        .route("/sales/{id}/products/{sku}/close", post(close_product))
        .route("/sales/{id}/products/{sku}/restock", post(restock))
}

#[derive(Deserialize)]
struct GuestBody {
    name: String,
}

async fn create_guest(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<GuestBody>,
) -> Result<impl IntoResponse, ApiError> {
    if !state.guests {
        return Err(ApiError::Forbidden(
            "guest sign-up is off on this deployment".into(),
        ));
    }
    state
        .guest_limiter
        .check(&ip)
        .map_err(ApiError::RateLimited)?;
    let minted = state.keys.mint_guest(&body.name, state.clock.now())?;
    Ok((StatusCode::CREATED, Json(minted)))
}

#[derive(Deserialize)]
struct SigninBody {
    code: String,
}

/// `POST /signin`: a one-time code of the embedded banner's links for its
/// token (`identity::signin`).
async fn signin(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(body): AppJson<SigninBody>,
) -> Result<impl IntoResponse, ApiError> {
    state
        .signin_limiter
        .check(&ip)
        .map_err(ApiError::RateLimited)?;
    let minted = state
        .signin
        .redeem(&body.code, std::time::Instant::now())
        .ok_or_else(|| ApiError::Unauthorized("unknown, used or expired sign-in code".into()))?;
    Ok(Json(minted))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_sales(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let status = q
        .status
        .map(|s| {
            s.parse::<SaleStatus>()
                .map_err(|_| ApiError::BadRequest("status must be scheduled, live or ended".into()))
        })
        .transpose()?;
    let list = state.catalog.list(status).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        list.json(),
    ))
}

async fn create_sale(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppJson(body): AppJson<CreateSale>,
) -> Result<impl IntoResponse, ApiError> {
    if !who.may_create_sales() {
        return Err(ApiError::Forbidden(
            "only hosts and operators create sales".into(),
        ));
    }
    let new = body
        .validate(&state.stream_hosts)
        .map_err(|e| ApiError::BadRequest(e.0))?;
    let sale = state.catalog.create_sale(&who, new).await?;
    Ok((StatusCode::CREATED, Json(sale)))
}

async fn get_sale(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "sale")?;
    Ok(Json(state.catalog.sale(id).await?))
}

async fn start_sale(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "sale")?;
    Ok(Json(state.catalog.start(&who, id).await?))
}

async fn end_sale(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "sale")?;
    Ok(Json(state.catalog.end(&who, id).await?))
}

async fn pin(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<Pin>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "sale")?;
    Ok(Json(state.catalog.pin(&who, id, &body.sku).await?))
}

async fn create_product(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<CreateProduct>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "sale")?;
    // Ownership before validation: a stranger learns nothing about the bounds.
    state.catalog.managed(&who, id).await?;
    let new = body.validate().map_err(|e| ApiError::BadRequest(e.0))?;
    let product = state.catalog.add_product(&who, id, new).await?;
    Ok((StatusCode::CREATED, Json(product)))
}

async fn open_product(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath((id, sku)): AppPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "sale")?;
    let p = state
        .catalog
        .set_status(&who, id, &sku, ProductStatus::OnSale)
        .await?;
    Ok(Json(p))
}

async fn close_product(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath((id, sku)): AppPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "sale")?;
    let p = state
        .catalog
        .set_status(&who, id, &sku, ProductStatus::Closed)
        .await?;
    Ok(Json(p))
}

async fn restock(
    State(state): State<AppState>,
    Auth(who): Auth,
    AppPath((id, sku)): AppPath<(String, String)>,
    AppJson(body): AppJson<Restock>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id, "sale")?;
    let add = body.validate().map_err(|e| ApiError::BadRequest(e.0))?;
    Ok(Json(state.catalog.restock(&who, id, &sku, add).await?))
}
