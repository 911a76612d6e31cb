//! The movie API served by the real application (`startup::app`: routes, limits, request ids,
//! metrics), driven in-process without a socket, against a fresh PostgreSQL database per test.
//! The server's own handling of connections is tested in `hostile.rs` and `process.rs`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::db::{Database, DatabaseSettings};
use common::server::ServerSettings;
use inventory_app::startup;
use serde_json::{Value, json};
use testkit::{AppClient, AppResponse, TestDatabase};
use tokio_util::sync::{CancellationToken, DropGuard};

/// inventory-app's application over `database`, with the database prepared in the background
/// as `serve` does; the preparing stops when the guard is dropped.
fn start(database: DatabaseSettings) -> (AppClient, DropGuard) {
    let db = Database::new(&database);
    let app = AppClient::new(startup::app(&db, &ServerSettings::default()));
    let preparing = CancellationToken::new();
    tokio::spawn({
        let preparing = preparing.clone();
        async move { startup::prepare_database(&db, &preparing).await }
    });
    (app, preparing.drop_guard())
}

struct TestApp {
    client: AppClient,
    db: TestDatabase,
    _preparing: DropGuard,
}

/// inventory-app with a fresh database, once `/ready` says so.
async fn spawn_app() -> TestApp {
    let db = TestDatabase::create().await;
    let app = TestApp::start(db.settings(), db);
    app.client.wait_for_ready(200).await;
    app
}

/// `path` with `query` appended, encoded as an HTTP client encodes query parameters.
fn with_query(path: &str, query: &[(&str, &str)]) -> String {
    let url = reqwest::Url::parse_with_params("http://inventory", query).expect("a valid URL");
    match url.query() {
        Some(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_owned(),
    }
}

impl TestApp {
    /// inventory-app over `settings`, which reach `db` (directly or not); `db` is kept for the
    /// test's own queries.
    fn start(settings: DatabaseSettings, db: TestDatabase) -> Self {
        let (client, preparing) = start(settings);
        Self {
            client,
            db,
            _preparing: preparing,
        }
    }

    async fn get(&self, path: &str) -> AppResponse {
        self.client.get(path).await
    }

    async fn delete(&self, path: &str) -> AppResponse {
        self.send_raw(Method::DELETE, path, None, "").await
    }

    async fn post_json(&self, path: &str, body: Value) -> AppResponse {
        self.send_raw(
            Method::POST,
            path,
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    async fn put_json(&self, path: &str, body: Value) -> AppResponse {
        self.send_raw(
            Method::PUT,
            path,
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    /// Sends a raw body with the given Content-Type (or none).
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> AppResponse {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        self.client
            .send(request.body(body.into()).expect("a valid request"))
            .await
    }

    async fn create(&self, title: &str, description: &str) -> Value {
        let response = self
            .post_json(
                "/api/movies",
                json!({"title": title, "description": description}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json()
    }

    /// Every stored row, read straight from the database.
    async fn stored(&self) -> Vec<(i64, String, String)> {
        let pool = self.db.pool().await;
        let rows = sqlx::query_as("SELECT id, title, description FROM movies ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    }
}

/// Asserts the status and that the body is a JSON error; returns its message.
fn expect_error(response: AppResponse, status: StatusCode) -> String {
    assert_eq!(response.status(), status, "unexpected status");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "errors are JSON"
    );
    let body = response.json();
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
        .to_owned()
}

fn titles(movies: &Value) -> Vec<&str> {
    movies
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|m| m["title"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn audit_post_then_get_with_trailing_slashes() {
    let app = spawn_app().await;

    let response = app
        .post_json(
            "/api/movies/",
            json!({"title": "A new movie", "description": "Very short description"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let created = response.json();
    assert!(created["id"].as_i64().unwrap() >= 1);
    assert_eq!(created["title"], "A new movie");
    assert_eq!(created["description"], "Very short description");

    let response = app.get("/api/movies/").await;
    assert_eq!(response.status(), StatusCode::OK);
    let movies = response.json();
    assert_eq!(movies, json!([created]));
}

#[tokio::test]
async fn every_route_answers_with_and_without_trailing_slash() {
    let app = spawn_app().await;
    for slash in ["", "/"] {
        let movie = app.create("Alien", "In space").await;
        let id = movie["id"].as_i64().unwrap();
        let one = format!("/api/movies/{id}{slash}");

        assert_eq!(app.get(&format!("/api/movies{slash}")).await.status(), 200);
        let shown = app.get(&one).await.json();
        assert_eq!(shown, movie);

        let response = app.put_json(&one, json!({"title": "Aliens"})).await;
        assert_eq!(response.status(), StatusCode::OK);
        let updated = response.json();
        assert_eq!(updated["title"], "Aliens");

        let response = app.delete(&one).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json()["deleted"], 1);

        app.create("Heat", "").await;
        let response = app.delete(&format!("/api/movies{slash}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(app.stored().await.is_empty());
    }
}

#[tokio::test]
async fn get_put_delete_of_an_absent_movie_are_404() {
    let app = spawn_app().await;
    app.create("Kept", "untouched").await;
    let before = app.stored().await;

    let message = expect_error(app.get("/api/movies/999").await, StatusCode::NOT_FOUND);
    assert_eq!(message, "movie 999 not found");
    expect_error(
        app.put_json("/api/movies/999", json!({"title": "x"})).await,
        StatusCode::NOT_FOUND,
    );
    expect_error(app.delete("/api/movies/999").await, StatusCode::NOT_FOUND);

    assert_eq!(app.stored().await, before);
}

#[tokio::test]
async fn put_replaces_only_the_fields_present() {
    let app = spawn_app().await;
    let id = app.create("Old title", "Old description").await["id"].clone();

    let response = app
        .put_json(
            &format!("/api/movies/{id}"),
            json!({"description": "New description"}),
        )
        .await;
    assert_eq!(
        response.json(),
        json!({"id": id, "title": "Old title", "description": "New description"})
    );

    let response = app
        .put_json(&format!("/api/movies/{id}"), json!({"title": "New title"}))
        .await;
    assert_eq!(
        response.json(),
        json!({"id": id, "title": "New title", "description": "New description"})
    );
}

#[tokio::test]
async fn title_filter_is_a_case_insensitive_literal_substring() {
    let app = spawn_app().await;
    for title in [
        "The Matrix",
        "matrix reloaded",
        "100% Love",
        "1000 Love",
        "snake_case",
        "snakeXcase",
        r"back\slash",
        "Amélie",
    ] {
        app.create(title, "").await;
    }
    let search = |filter: &'static str| {
        let app = &app;
        async move {
            let response = app
                .get(&with_query("/api/movies", &[("title", filter)]))
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            let movies = response.json();
            titles(&movies)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };

    assert_eq!(search("MATRIX").await, ["The Matrix", "matrix reloaded"]);
    assert_eq!(search("0%").await, ["100% Love"]);
    assert_eq!(search("%").await, ["100% Love"]);
    assert_eq!(search("e_c").await, ["snake_case"]);
    assert_eq!(search(r"k\s").await, [r"back\slash"]);
    assert_eq!(search("AMÉLIE").await, ["Amélie"]);
    assert!(search("no such title").await.is_empty());
    assert_eq!(
        search("").await.len(),
        8,
        "an empty filter lists everything"
    );
}

#[tokio::test]
async fn bad_bodies_are_rejected_and_change_nothing() {
    let app = spawn_app().await;
    let id = app.create("Kept", "untouched").await["id"].clone();
    let one = format!("/api/movies/{id}");
    let before = app.stored().await;

    for (method, path) in [(Method::POST, "/api/movies"), (Method::PUT, one.as_str())] {
        let json = Some("application/json");
        let cases: Vec<(Option<&str>, String, StatusCode)> = vec![
            (json, "{\"title\": ".into(), StatusCode::BAD_REQUEST),
            (json, "not json".into(), StatusCode::BAD_REQUEST),
            (
                None,
                r#"{"title":"x"}"#.into(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                Some("text/plain"),
                r#"{"title":"x"}"#.into(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                json,
                r#"{"title": 5}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                json,
                r#"{"title": ["x"]}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                json,
                r#"{"title": "x", "description": false}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (json, "[]".into(), StatusCode::UNPROCESSABLE_ENTITY),
            (
                json,
                r#"{"title": "   "}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                json,
                json!({"title": "x".repeat(256)}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                json,
                json!({"title": "ok", "description": "d".repeat(4001)}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                json,
                json!({"title": "nul\u{0}byte"}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                json,
                json!({"title": "big", "description": "x".repeat(70_000)}).to_string(),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ];
        for (content_type, body, status) in cases {
            let response = app
                .send_raw(method.clone(), path, content_type, body.clone())
                .await;
            let short: String = body.chars().take(40).collect();
            assert_eq!(response.status(), status, "{method} {path} {short:?}");
            expect_error(response, status);
        }
    }
    let message = expect_error(
        app.post_json("/api/movies", json!({"description": "no title"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_eq!(message, "title is required");
    expect_error(
        app.put_json(&one, json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );

    assert_eq!(app.stored().await, before, "no bad request changed a row");
}

#[tokio::test]
async fn bad_ids_are_400_on_every_id_route() {
    let app = spawn_app().await;
    app.create("Kept", "untouched").await;
    let before = app.stored().await;

    for id in ["0", "-1", "abc", "1.5", "9223372036854775808", "%20", "1e3"] {
        let path = format!("/api/movies/{id}");
        expect_error(app.get(&path).await, StatusCode::BAD_REQUEST);
        expect_error(
            app.put_json(&path, json!({"title": "x"})).await,
            StatusCode::BAD_REQUEST,
        );
        expect_error(app.delete(&path).await, StatusCode::BAD_REQUEST);
    }
    // The largest id fits the column: it is simply absent.
    expect_error(
        app.get("/api/movies/9223372036854775807").await,
        StatusCode::NOT_FOUND,
    );

    assert_eq!(app.stored().await, before);
}

#[tokio::test]
async fn unicode_and_sql_metacharacters_are_stored_literally() {
    let app = spawn_app().await;
    let titles_in = [
        "Robert'); DROP TABLE movies;--",
        "\" OR 1=1 --",
        "千と千尋の神隠し",
        "🎬 émoji & <tags>",
        "$1 $2 ::text",
    ];
    for title in titles_in {
        let created = app.create(title, title).await;
        assert_eq!(created["title"], title);
        assert_eq!(created["description"], title);
    }
    let stored: Vec<String> = app.stored().await.into_iter().map(|row| row.1).collect();
    assert_eq!(stored, titles_in);

    let response = app
        .get(&with_query("/api/movies", &[("title", "'); drop")]))
        .await;
    let found = response.json();
    assert_eq!(titles(&found), ["Robert'); DROP TABLE movies;--"]);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    expect_error(app.get("/api/nothing").await, StatusCode::NOT_FOUND);
    let response = app.send_raw(Method::PATCH, "/api/movies", None, "").await;
    assert_eq!(response.headers()["allow"], "GET,HEAD,POST,DELETE");
    expect_error(response, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn probes_metrics_and_request_ids() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    let ready = app.get("/ready").await.json();
    assert_eq!(
        ready,
        json!({"status": "ready", "checks": {"database": "ok"}})
    );

    let response = app.get("/api/movies/12345").await;
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID is generated: {generated}");
    let request = Request::get("/api/movies")
        .header("x-request-id", "trace-me-42")
        .body(Body::empty())
        .unwrap();
    let response = app.client.send(request).await;
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");

    let metrics = app.get("/metrics").await.text();
    assert!(
        metrics.contains(
            r#"http_requests_total{method="GET",route="/api/movies/{id}",status="404"} 1"#
        ),
        "requests are counted by route template:\n{metrics}"
    );
    assert!(metrics.contains("http_request_duration_seconds_bucket"));
    assert!(metrics.contains("http_requests_in_flight"));
}

#[tokio::test]
async fn without_a_database_it_is_alive_but_not_ready_and_answers_503() {
    let mut database = TestDatabase::create().await.settings();
    // Nothing listens on port 1: the database is unreachable.
    database.port = 1;
    let (app, _preparing) = start(database);

    assert_eq!(app.get("/health").await.status(), StatusCode::OK);
    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let message = expect_error(
        app.get("/api/movies").await,
        StatusCode::SERVICE_UNAVAILABLE,
    );
    assert_eq!(message, "the database is not ready yet");
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_quickly_instead_of_hanging() {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    settings.pool_size = 1;
    settings.acquire_timeout = Duration::from_millis(300);
    let app = TestApp::start(settings, db);
    app.client.wait_for_ready(200).await;

    // Another client locks the table, so the first request holds the only pooled connection.
    let pool = app.db.pool().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE movies IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let stuck = tokio::spawn({
        let client = app.client.clone();
        async move { client.get("/api/movies").await.status() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The lock is released only after this answer, so getting one at all proves no hang.
    let response = app.get("/api/movies/1").await;
    assert_eq!(response.headers()["retry-after"], "1");
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE);

    lock.rollback().await.unwrap();
    assert_eq!(stuck.await.unwrap(), StatusCode::OK);
}

/// Inserts `count` movies straight into the database (many pages' worth in one statement);
/// titles are "Fizz N" for every third N and "Plain N" otherwise.
async fn insert_many(app: &TestApp, count: i64) {
    let pool = app.db.pool().await;
    sqlx::query(
        "INSERT INTO movies (title, description) \
         SELECT CASE WHEN i % 3 = 0 THEN 'Fizz ' ELSE 'Plain ' END || i, 'Description ' || i \
         FROM generate_series(1, $1) AS i",
    )
    .bind(count)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// The stored rows as the API shows them.
fn as_json(rows: &[(i64, String, String)]) -> Value {
    rows.iter()
        .map(|(id, title, description)| json!({"id": id, "title": title, "description": description}))
        .collect()
}

/// The body of a 200 `GET`, checked to be a JSON document.
async fn list_body(app: &TestApp, query: &[(&str, &str)]) -> Value {
    // The whole body arrives, or `send` panics.
    let response = app.get(&with_query("/api/movies/", query)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text();
    serde_json::from_str(&text).expect("the body is one valid JSON document")
}

#[tokio::test]
async fn a_list_of_many_pages_comes_back_complete_in_id_order() {
    let app = spawn_app().await;
    insert_many(&app, 10_000).await;
    // Gaps in the ids, and ids out of the identity sequence's range at both ends: a page
    // boundary must follow the ids, not count rows.
    let pool = app.db.pool().await;
    sqlx::query("DELETE FROM movies WHERE id % 7 = 0 OR id BETWEEN 1000 AND 1600")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO movies (id, title) VALUES (-9223372036854775808, 'Lowest'), (0, 'Zero'), \
         (9223372036854775807, 'Highest')",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    // The audit's step: the movie added last is in the list.
    let added = app.create("A new movie", "Very short description").await;

    let listed = list_body(&app, &[]).await;
    let stored = app.stored().await;
    assert!(stored.len() > 7_000, "several pages of movies");
    assert_eq!(listed, as_json(&stored), "every movie, once, in id order");
    assert!(listed.as_array().unwrap().contains(&added));
    assert_eq!(listed[0]["title"], "Lowest");
    assert_eq!(listed[stored.len() - 1]["title"], "Highest");
}

#[tokio::test]
async fn the_title_filter_applies_across_pages() {
    let app = spawn_app().await;
    insert_many(&app, 10_000).await;

    let listed = list_body(&app, &[("title", "fIZZ")]).await;
    let expected: Vec<_> = app
        .stored()
        .await
        .into_iter()
        .filter(|(_, title, _)| title.starts_with("Fizz "))
        .collect();
    assert_eq!(expected.len(), 3_333);
    assert_eq!(listed, as_json(&expected));

    // A filter that matches nothing in any page is still an array.
    assert_eq!(list_body(&app, &[("title", "buzz")]).await, json!([]));
    // And an empty table.
    app.delete("/api/movies").await;
    assert_eq!(list_body(&app, &[]).await, json!([]));
}

#[tokio::test]
async fn lists_ending_on_either_side_of_a_page_boundary_are_complete() {
    // Pages are 1000 movies: a list that fills its last page exactly needs one more, empty,
    // page to end, and one movie more starts a page of its own.
    let app = spawn_app().await;
    let mut stored = 0;
    for length in [999, 1_000, 1_001, 2_000, 2_001] {
        insert_many(&app, length - stored).await;
        stored = length;
        let listed = list_body(&app, &[]).await;
        assert_eq!(listed, as_json(&app.stored().await), "{length} movies");
    }
}

#[tokio::test]
async fn a_database_outage_before_the_first_byte_is_a_json_503() {
    let db = TestDatabase::create().await;
    let mut settings = db.settings();
    let proxy = testkit::FaultProxy::start(
        format!("{}:{}", settings.host, settings.port)
            .parse()
            .unwrap(),
    )
    .await;
    settings.port = proxy.port();
    settings.acquire_timeout = Duration::from_millis(500);
    let app = TestApp::start(settings, db);
    app.client.wait_for_ready(200).await;
    insert_many(&app, 1_000).await;
    assert_eq!(list_body(&app, &[]).await.as_array().unwrap().len(), 1_000);

    proxy.cut();
    let response = app.get("/api/movies").await;
    assert_eq!(response.headers()["retry-after"], "1");
    let message = expect_error(response, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(message, "the database is unavailable; retry later");
}
