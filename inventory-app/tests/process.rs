//! The real `inventory-app` binary: configured only through environment variables, serving
//! the audit's requests, and stopping cleanly on SIGTERM.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{FaultProxy, ServiceProcess, TestDatabase, run_to_exit};

const BINARY: &str = env!("CARGO_BIN_EXE_inventory-app");

#[tokio::test]
async fn the_binary_serves_the_audit_and_exits_0_on_sigterm() {
    let db = TestDatabase::create().await;
    let mut env = db.env("INVENTORY");
    env.push(("INVENTORY_APP_PORT".into(), "0".into()));
    let service = ServiceProcess::start(BINARY, &env).await;
    let http = reqwest::Client::new();

    let mut created = None;
    for _ in 0..50 {
        let response = http
            .post(format!("{}/api/movies/", service.url()))
            .json(&json!({"title": "A new movie", "description": "Very short description"}))
            .send()
            .await
            .unwrap();
        // 503 until the migrations have run.
        if response.status() == 200 {
            created = Some(response.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(response.status(), 503);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let created = created.expect("the service became ready");
    assert_eq!(created["title"], "A new movie");

    let listed: Value = http
        .get(format!("{}/api/movies/", service.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([created]));

    let port = service.addr().port().to_string();
    let (status, output) = run_to_exit(
        BINARY,
        &["healthcheck"],
        &[("INVENTORY_APP_PORT".into(), port.clone())],
    )
    .await;
    assert!(
        status.success(),
        "healthcheck of a serving instance: {output}"
    );

    let status = service.terminate().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test]
async fn a_malformed_variable_stops_the_start_with_one_line_naming_it() {
    let env = [("INVENTORY_APP_PORT".to_owned(), "http".to_owned())];
    let (status, output) = run_to_exit(BINARY, &[], &env).await;
    assert!(!status.success());
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {output}");
    assert!(
        lines[0].contains("INVENTORY_APP_PORT=\"http\" is not valid"),
        "{output}"
    );
}

#[tokio::test]
async fn healthcheck_fails_when_nothing_serves() {
    let env = [("INVENTORY_APP_PORT".to_owned(), "1".to_owned())];
    let (status, output) = run_to_exit(BINARY, &["healthcheck"], &env).await;
    assert!(!status.success());
    assert!(output.contains("unhealthy"), "{output}");
}

#[tokio::test]
async fn config_lists_every_variable_read_with_passwords_hidden() {
    let env = [
        ("INVENTORY_DB_HOST".to_owned(), "inventory-db".to_owned()),
        ("INVENTORY_DB_PASSWORD".to_owned(), "s3cret".to_owned()),
    ];
    let (status, output) = run_to_exit(BINARY, &["config"], &env).await;
    assert!(status.success(), "{output}");
    let lines: Vec<&str> = output.lines().collect();
    for expected in [
        "INVENTORY_DB_HOST=inventory-db",
        "INVENTORY_DB_PASSWORD=<hidden>",
        "# INVENTORY_APP_PORT=8080",
        "# INVENTORY_DB_NAME=movies",
        "# RUST_LOG=",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected} missing from:\n{output}"
        );
    }
    assert!(!output.contains("s3cret"));
}

#[tokio::test]
async fn a_database_outage_in_the_middle_of_a_list_breaks_the_response_and_is_logged() {
    let db = TestDatabase::create().await;
    let server = db.settings();
    let proxy = FaultProxy::start(
        format!("{}:{}", server.host, server.port)
            .parse()
            .expect("a socket address"),
    )
    .await;
    let mut env: Vec<(String, String)> = db
        .env("INVENTORY")
        .into_iter()
        .filter(|(name, _)| name != "INVENTORY_DB_PORT")
        .collect();
    env.push(("INVENTORY_DB_PORT".into(), proxy.port().to_string()));
    env.push(("INVENTORY_DB_ACQUIRE_TIMEOUT_SECONDS".into(), "1".into()));
    env.push(("INVENTORY_APP_PORT".into(), "0".into()));
    let service = ServiceProcess::start(BINARY, &env).await;
    let http = reqwest::Client::new();
    testkit::wait_for_ready(&service.url(), 200).await;
    // ~80 MB of JSON: far more than the socket buffers between the service and this client can
    // hold, so the service is still reading pages from the database when it is cut off.
    db.insert_large_movies(20_000).await;

    let mut response = http
        .get(format!("{}/api/movies", service.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = response
        .chunk()
        .await
        .expect("the first page")
        .expect("a first chunk")
        .to_vec();
    proxy.cut();
    let ended = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break Ok(()),
            Err(err) => break Err(err),
        }
    };

    assert!(
        ended.is_err(),
        "the client must see a broken transfer, not a complete one ({} bytes received)",
        received.len()
    );
    assert!(
        serde_json::from_slice::<Value>(&received).is_err(),
        "what arrived must not be a valid JSON document"
    );
    assert!(received.starts_with(b"[{\"id\":"), "it was the list");
    testkit::eventually(Duration::from_secs(5), "the cut is logged", || {
        let logged = service.output().contains("GET /api/movies cut");
        async move { logged }
    })
    .await;
}
