//! The body of `GET /api/movies`: one JSON array, written page by page as the client reads it.
//!
//! The whole table never sits in memory: each page is a statement of its own
//! ([`db::list_page`]), fetched only when hyper asks for more of the body, which it does while
//! less than ~400 KB waits in its write buffer for the client. So a response holds a page being
//! encoded and what hyper buffers, no pool connection while the client reads, and no
//! transaction across pages: each page is read committed on its own, so a movie added or
//! deleted during a long response may or may not be in it (never twice, never out of order).
//!
//! Errors: the first page is read before the status line, so a database that cannot answer is
//! still a JSON error with its status code. A later page that fails can only cut the
//! response: the stream ends with an error, hyper closes the connection without the chunked
//! encoding's final chunk, and the client sees a broken transfer. The text it did receive
//! is never a valid document either, because the closing `]` is written only after the last
//! page.

use axum::body::{Body, Bytes};
use futures_util::stream;
use sqlx::PgPool;
use tracing::Instrument;

use crate::db;
use crate::model::Movie;

/// Movies per statement. Every page costs a round trip or two to PostgreSQL (the pool checks a
/// connection before lending it), so pages must not be too small: with 256 per page,
/// `bench/list-memory.sh` counted half as many 100,000-movie lists served as with the old
/// single query, with 1000 as many. A page of typical movies (~100 bytes of JSON each) is
/// ~100 KB; even with every description at its 4000-character limit it stays a few MB,
/// whatever the size of the table.
pub const PAGE_ROWS: i64 = 1000;

/// Why the list stopped in the middle.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("could not encode a movie: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// A `GET /api/movies` answer in progress.
pub struct MovieList {
    pool: PgPool,
    title_part: Option<String>,
    /// The page read before the status line, sent first.
    first_page: Option<Vec<Movie>>,
    /// Where the next page starts: one past the last id sent.
    next_from: i64,
    /// Whether the opening `[` is written.
    opened: bool,
    /// Movies written so far: a comma goes before every one but the first.
    sent: u64,
}

impl MovieList {
    /// Reads the first page; an error here is still the handler's to answer.
    pub async fn start(pool: PgPool, title_part: Option<String>) -> sqlx::Result<Self> {
        let first_page = db::list_page(&pool, title_part.as_deref(), i64::MIN, PAGE_ROWS).await?;
        Ok(Self {
            pool,
            title_part,
            first_page: Some(first_page),
            next_from: i64::MIN,
            opened: false,
            sent: 0,
        })
    }

    /// The response body. Its log lines belong to the request that is current when this is
    /// called, although the body is written after the handler has returned.
    pub fn into_body(self) -> Body {
        let span = tracing::Span::current();
        let chunks = stream::unfold(Some(self), move |list| {
            let span = span.clone();
            async move {
                let mut list = list?;
                match list.next_chunk().instrument(span.clone()).await {
                    Ok((chunk, more)) => Some((Ok(chunk), more.then_some(list))),
                    Err(err) => {
                        span.in_scope(|| {
                            tracing::error!(
                                movies_sent = list.sent,
                                "GET /api/movies cut after {} movies, the client gets a broken \
                                 response: {err}",
                                list.sent
                            );
                        });
                        Some((Err(err), None))
                    }
                }
            }
        });
        Body::from_stream(chunks)
    }

    /// The next piece of the array, and whether more follows.
    async fn next_chunk(&mut self) -> Result<(Bytes, bool), ListError> {
        let page = match self.first_page.take() {
            Some(page) => page,
            None => {
                db::list_page(
                    &self.pool,
                    self.title_part.as_deref(),
                    self.next_from,
                    PAGE_ROWS,
                )
                .await?
            }
        };
        let mut chunk = Vec::with_capacity(128 * page.len() + 2);
        if !self.opened {
            chunk.push(b'[');
            self.opened = true;
        }
        for movie in &page {
            if self.sent > 0 {
                chunk.push(b',');
            }
            serde_json::to_writer(&mut chunk, movie)?;
            self.sent += 1;
        }
        // A short page is the last one; so is a full one ending at the largest possible id.
        let next_from = match page.last() {
            Some(last) if page.len() as i64 == PAGE_ROWS => last.id.checked_add(1),
            _ => None,
        };
        match next_from {
            Some(from) => self.next_from = from,
            None => chunk.push(b']'),
        }
        Ok((Bytes::from(chunk), next_from.is_some()))
    }
}
