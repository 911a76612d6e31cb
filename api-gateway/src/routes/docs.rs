//! `GET /api/docs`: a page for people, rendering `/api/openapi.json` with Swagger UI. Every file
//! it needs comes from the binary (the `utoipa-swagger-ui` crate embeds Swagger UI from its
//! vendored copy at build time), so the page loads no CDN and works without the Internet.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use common::http::JsonError;
use utoipa_swagger_ui::Config;

/// The page. Swagger UI's own `index.html` links its files relatively (`./swagger-ui.css`),
/// which a browser resolves against `/api/` for the path `/api/docs` (the server treats
/// `/api/docs/` the same, so a redirect to it would loop); this one links them absolutely.
const PAGE: &str = include_str!("docs.html");

/// What `swagger-initializer.js` starts Swagger UI with: the document this gateway serves,
/// and no online validator (Swagger UI would otherwise send the document to
/// validator.swagger.io for its badge).
static CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::from("/api/openapi.json")
            .validator_url("none")
            .try_it_out_enabled(true)
            .display_request_duration(true),
    )
});

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `/api/docs/{file}`: Swagger UI's scripts, styles and icons.
pub async fn file(Path(file): Path<String>) -> Response {
    match utoipa_swagger_ui::serve(&file, CONFIG.clone()) {
        Ok(Some(found)) => {
            let content_type = HeaderValue::from_str(&found.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (
                [(header::CONTENT_TYPE, content_type)],
                found.bytes.into_owned(),
            )
                .into_response()
        }
        Ok(None) => {
            JsonError::new(StatusCode::NOT_FOUND, "no such file of the docs page").into_response()
        }
        Err(err) => {
            tracing::error!("cannot serve {file} of the docs page: {err}");
            JsonError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}
