//! The servers a test owns behave like the real thing: data survives a kill or an immediate
//! stop, a frozen server answers nothing until resumed, and nothing is left behind.

use std::time::{Duration, Instant};

use sqlx::Executor;
use testkit::{PrivateBroker, PrivatePostgres};

#[tokio::test]
async fn a_private_broker_keeps_durable_messages_across_a_kill_and_restart() {
    let started = Instant::now();
    let mut broker = PrivateBroker::start().await;
    eprintln!("the node booted in {:.1?}", started.elapsed());
    assert_ne!(broker.port(), 5672);
    let pid = broker.pid().expect("running");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "beam.smp"
    );

    let queue = broker.queue();
    queue.declare().await;
    queue.publish_raw(b"{}", "kept").await;
    let listed = broker
        .rabbitmqctl(&["list_queues", "name", "messages", "--quiet"])
        .await
        .expect("rabbitmqctl list_queues");
    assert!(listed.contains(queue.name()), "{listed}");

    broker.sync_metadata().await;
    broker.kill().await;
    assert!(!broker.answers().await, "a killed node answers nothing");
    assert!(broker.pid().is_none());
    let restarted = Instant::now();
    broker.restart().await;
    eprintln!("the node restarted in {:.1?}", restarted.elapsed());
    // The queue elects its leader moments after the node answers; until then it reads empty.
    testkit::eventually(
        Duration::from_secs(10),
        "the confirmed message is back",
        || async { queue.depth().await == 1 },
    )
    .await;

    broker.freeze();
    let probe = tokio::time::timeout(Duration::from_secs(2), broker.answers()).await;
    assert!(
        !matches!(probe, Ok(true)),
        "a frozen node completes no handshake"
    );
    broker.resume();
    broker.wait_until_answering(Duration::from_secs(10)).await;
    let taken = queue.take_all().await;
    assert_eq!(taken.len(), 1);
    assert_eq!(
        taken[0].properties.message_id().as_ref().unwrap().as_str(),
        "kept"
    );

    let (dir, pid) = (broker.dir().to_owned(), broker.pid().expect("running"));
    drop(queue);
    drop(broker);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the node is killed and reaped"
    );
    assert!(
        std::env::var_os("TESTKIT_KEEP_DIRS").is_some() || !dir.exists(),
        "the node's directory is removed"
    );
}

#[tokio::test]
async fn a_private_postgres_keeps_committed_rows_across_an_immediate_stop() {
    let started = Instant::now();
    let mut postgres = PrivatePostgres::start().await;
    eprintln!("the cluster started in {:.1?}", started.elapsed());
    assert_ne!(postgres.port(), 5432);
    let pool = postgres.pool().await;
    pool.execute("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1), (2)")
        .await
        .unwrap();
    pool.close().await;

    postgres.stop_immediate().await;
    assert!(
        !postgres.answers().await,
        "a stopped server answers nothing"
    );
    postgres.restart().await;
    let pool = postgres.pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM kept")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 2, "committed rows survive crash recovery");

    postgres.freeze();
    let frozen = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query("SELECT 1").execute(&pool),
    )
    .await;
    assert!(frozen.is_err(), "a frozen server answers nothing");
    postgres.resume();
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    pool.close().await;

    let settings = postgres.settings();
    assert_eq!(settings.port, postgres.port());
    assert_eq!(settings.name, postgres.database());
    let dir = postgres.dir().to_owned();
    drop(postgres);
    assert!(!dir.exists(), "the cluster's directory is removed");
}
