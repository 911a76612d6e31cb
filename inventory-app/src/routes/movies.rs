//! `/api/movies` and `/api/movies/{id}`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use common::db::Database;
use common::http::{Json, Query};
use serde::{Deserialize, Serialize};

use crate::db;
use crate::error::ApiError;
use crate::model::{self, Movie};
use crate::movie_list::MovieList;

/// `GET /api/movies?title=...` query parameters.
#[derive(Deserialize)]
pub struct ListParams {
    /// Case-insensitive substring of the title; empty means no filter.
    title: Option<String>,
}

/// `POST /api/movies` body. Unknown fields are ignored.
#[derive(Deserialize)]
pub struct NewMovie {
    title: Option<String>,
    description: Option<String>,
}

/// `PUT /api/movies/{id}` body: the fields present replace the stored ones.
#[derive(Deserialize)]
pub struct MovieChanges {
    title: Option<String>,
    description: Option<String>,
}

/// What the DELETE routes answer.
#[derive(Serialize)]
pub struct Deleted {
    message: String,
    deleted: u64,
}

/// The `{id}` path segment, validated by [`model::movie_id`].
pub struct MovieId(i64);

impl<S: Send + Sync> FromRequestParts<S> for MovieId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::InvalidId(rejection.body_text()))?;
        model::movie_id(&raw).map(Self)
    }
}

/// The JSON array of movies in id order, streamed page by page (see [`MovieList`]): memory
/// per request stays at a page however large the table is.
pub async fn list(
    State(database): State<Database>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let filter = params.title.filter(|t| !t.is_empty());
    if let Some(part) = &filter {
        model::no_nul("title", part)?;
    }
    let list = MovieList::start(database.pool()?.clone(), filter).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        list.into_body(),
    )
        .into_response())
}

/// Answers 200 (not 201) with the created movie, as the API contract says.
pub async fn create(
    State(database): State<Database>,
    Json(body): Json<NewMovie>,
) -> Result<Json<Movie>, ApiError> {
    let title = model::title(
        body.title
            .as_deref()
            .ok_or_else(|| ApiError::Invalid("title is required".into()))?,
    )?;
    let description = model::description(body.description.unwrap_or_default())?;
    let movie = db::insert(database.pool()?, &title, &description).await?;
    tracing::info!(id = movie.id, "movie created");
    Ok(Json(movie))
}

pub async fn delete_all(State(database): State<Database>) -> Result<Json<Deleted>, ApiError> {
    let deleted = db::delete_all(database.pool()?).await?;
    tracing::info!(deleted, "all movies deleted");
    Ok(Json(Deleted {
        message: format!("{deleted} movies deleted"),
        deleted,
    }))
}

pub async fn show(
    State(database): State<Database>,
    MovieId(id): MovieId,
) -> Result<Json<Movie>, ApiError> {
    db::find(database.pool()?, id)
        .await?
        .map(Json)
        .ok_or(ApiError::MovieNotFound(id))
}

pub async fn update(
    State(database): State<Database>,
    MovieId(id): MovieId,
    Json(changes): Json<MovieChanges>,
) -> Result<Json<Movie>, ApiError> {
    if changes.title.is_none() && changes.description.is_none() {
        return Err(ApiError::Invalid(
            "nothing to update: give a title, a description, or both".into(),
        ));
    }
    let title = changes.title.as_deref().map(model::title).transpose()?;
    let description = changes.description.map(model::description).transpose()?;
    db::update(
        database.pool()?,
        id,
        title.as_deref(),
        description.as_deref(),
    )
    .await?
    .map(Json)
    .ok_or(ApiError::MovieNotFound(id))
}

pub async fn delete(
    State(database): State<Database>,
    MovieId(id): MovieId,
) -> Result<Json<Deleted>, ApiError> {
    if !db::delete(database.pool()?, id).await? {
        return Err(ApiError::MovieNotFound(id));
    }
    tracing::info!(id, "movie deleted");
    Ok(Json(Deleted {
        message: format!("movie {id} deleted"),
        deleted: 1,
    }))
}
