//! `GET /api/orders` and `GET /api/orders/{order_id}`: what has been stored.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use common::db::Database;
use common::http::{Json, Query};
use serde::Deserialize;
use uuid::Uuid;

use crate::db::{self, StoredOrder};
use crate::error::ApiError;

/// How many orders a list returns when `limit` is not given, and at most.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

/// Query parameters, kept as text so that a bad value gets our own message.
#[derive(Deserialize)]
pub struct ListParams {
    user_id: Option<String>,
    limit: Option<String>,
}

fn positive(name: &str, raw: &str, max: i64) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(value) if (1..=max).contains(&value) => Ok(value),
        _ => Err(ApiError::BadRequest(format!(
            "{name} must be a whole number between 1 and {max}, got {raw:?}"
        ))),
    }
}

/// The newest orders first (`?user_id=` keeps one user's, `?limit=` up to 1000, default 100).
pub async fn list(
    State(database): State<Database>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<StoredOrder>>, ApiError> {
    let user_id = params
        .user_id
        .filter(|raw| !raw.is_empty())
        .map(|raw| positive("user_id", &raw, i64::MAX))
        .transpose()?;
    let limit = params
        .limit
        .filter(|raw| !raw.is_empty())
        .map(|raw| positive("limit", &raw, MAX_LIMIT))
        .transpose()?
        .unwrap_or(DEFAULT_LIMIT);
    let orders = db::list_orders(database.pool()?, user_id, limit).await?;
    Ok(Json(orders))
}

/// One order. The id is taken as text (a segment that is not even UTF-8 once decoded, like
/// `%FF`, gets our JSON 400 rather than axum's plain-text one) and parsed here.
pub async fn show(
    State(database): State<Database>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<StoredOrder>, ApiError> {
    let Path(raw) = path.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "order_id must be a UUID: {}",
            rejection.body_text()
        ))
    })?;
    let order_id = Uuid::parse_str(&raw)
        .map_err(|_| ApiError::BadRequest(format!("order_id must be a UUID, got {raw:?}")))?;
    db::find_order(database.pool()?, order_id)
        .await?
        .map(Json)
        .ok_or(ApiError::OrderNotFound(order_id))
}
