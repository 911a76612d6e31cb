//! The real `inventory-app` binary: configured only through environment variables, serving
//! the audit's requests, and stopping cleanly on SIGTERM.

use serde_json::{Value, json};
use testkit::{ServiceProcess, TestDatabase, run_to_exit};

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
