//! `GET /api/openapi.json`: the API's OpenAPI 3 description, kept in `api-gateway/openapi.json`.

use axum::http::header;
use axum::response::IntoResponse;

const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
