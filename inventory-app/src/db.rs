//! Every SQL statement of inventory-app. Statements are checked at run time (no database is
//! needed to build); the tests run each of them against a real PostgreSQL.

use sqlx::PgPool;

use crate::model::Movie;

/// One page of `GET /api/movies`: up to `limit` movies with an id of at least `from`, in id
/// order, optionally only those whose title contains `title_part`, ignoring case.
///
/// Keyset pagination: the next page starts after the last id of this one, so every page is an
/// index range scan of its own (no OFFSET re-reading the rows before it), each statement runs
/// on its own pooled connection and in its own implicit transaction, and rows added or deleted
/// between pages never shift a page boundary.
///
/// `strpos` matches the text literally, so `%`, `_` and `\` in the filter need no escaping.
pub async fn list_page(
    pool: &PgPool,
    title_part: Option<&str>,
    from: i64,
    limit: i64,
) -> sqlx::Result<Vec<Movie>> {
    sqlx::query_as(
        "SELECT id, title, description FROM movies \
         WHERE id >= $2 AND ($1::text IS NULL OR strpos(lower(title), lower($1)) > 0) \
         ORDER BY id LIMIT $3",
    )
    .bind(title_part)
    .bind(from)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn insert(pool: &PgPool, title: &str, description: &str) -> sqlx::Result<Movie> {
    sqlx::query_as(
        "INSERT INTO movies (title, description) VALUES ($1, $2) \
         RETURNING id, title, description",
    )
    .bind(title)
    .bind(description)
    .fetch_one(pool)
    .await
}

pub async fn find(pool: &PgPool, id: i64) -> sqlx::Result<Option<Movie>> {
    sqlx::query_as("SELECT id, title, description FROM movies WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Replaces the fields given (`None` keeps the stored value); `None` when the movie is absent.
pub async fn update(
    pool: &PgPool,
    id: i64,
    title: Option<&str>,
    description: Option<&str>,
) -> sqlx::Result<Option<Movie>> {
    sqlx::query_as(
        "UPDATE movies SET title = COALESCE($2, title), description = COALESCE($3, description) \
         WHERE id = $1 RETURNING id, title, description",
    )
    .bind(id)
    .bind(title)
    .bind(description)
    .fetch_optional(pool)
    .await
}

/// Whether a movie was deleted.
pub async fn delete(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let result = sqlx::query("DELETE FROM movies WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// How many movies were deleted.
pub async fn delete_all(pool: &PgPool) -> sqlx::Result<u64> {
    let result = sqlx::query("DELETE FROM movies").execute(pool).await?;
    Ok(result.rows_affected())
}
