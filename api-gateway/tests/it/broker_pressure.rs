//! The broker under pressure, on a private RabbitMQ node: a memory alarm blocks publishers
//! for 60 s while clients keep posting through the real gateway binary. The gateway must
//! answer 503 at once while blocked, keep its memory flat, and bill nobody twice: every 200
//! stored once, nothing stored unless its client was given its id.

use std::time::{Duration, Instant};

use testkit::{PrivateBroker, ServiceProcess, TestDatabase, eventually};

use super::posting::{Posting, assert_stored_as_answered};
use super::*;

const GATEWAY: &str = env!("CARGO_BIN_EXE_api-gateway");
/// How long the alarm lasts: the figure, long enough for anything that piles up per
/// request to show in the resident memory.
const ALARM: Duration = Duration::from_secs(60);
/// What "at once" means for an order refused during the alarm: far below the confirm timeout.
const QUICK: Duration = Duration::from_millis(500);
/// What the gateway's resident memory may grow by through the alarm under load.
const MEMORY_GROWTH_KIB: u64 = 16 * 1024;

/// The gateway binary publishing to `queue` on `broker`, with a 2 s confirm timeout.
async fn gateway_process(broker: &PrivateBroker, queue: &str) -> ServiceProcess {
    let nowhere = dead_url().await;
    let mut env = broker.env(queue);
    env.extend([
        ("API_GATEWAY_PORT".to_owned(), "0".to_owned()),
        ("INVENTORY_APP_URL".to_owned(), nowhere.clone()),
        ("BILLING_APP_URL".to_owned(), nowhere),
        ("PUBLISH_CONFIRM_TIMEOUT_SECONDS".to_owned(), "2".to_owned()),
        // Quiet under load, but the address line the harness waits for is kept.
        ("RUST_LOG".to_owned(), "warn,common::cli=info".to_owned()),
    ]);
    let gateway = ServiceProcess::start(GATEWAY, &env).await;
    wait_for_ready(&gateway.url(), 200).await;
    gateway
}

async fn broker_check(url: &str) -> String {
    let ready: Value = reqwest::get(format!("{url}/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["checks"]["broker"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_memory_alarm_under_load_gets_quick_503s_flat_memory_and_bills_nobody_twice() {
    let broker = PrivateBroker::start().await;
    let (queue, orders_db) = (broker.queue(), TestDatabase::create().await);
    let _billing = start_billing(orders_db.settings(), queue.settings()).await;
    let gateway = gateway_process(&broker, queue.name()).await;
    let posting = Posting::start(&gateway.url(), 16);
    posting.wait_accepted(500, Duration::from_secs(60)).await;
    let resident_before = gateway.resident_kib().unwrap();

    broker
        .rabbitmqctl(&["set_vm_memory_high_watermark", "0.000001"])
        .await
        .unwrap();
    let alarm_set = Instant::now();
    eventually(
        Duration::from_secs(30),
        "/ready reports the blocked broker",
        || async {
            broker_check(&gateway.url())
                .await
                .contains("blocking publishers")
        },
    )
    .await;
    let blocked = Instant::now();
    let mut resident_peak = resident_before;
    while alarm_set.elapsed() < ALARM {
        tokio::time::sleep(Duration::from_millis(500)).await;
        resident_peak = resident_peak.max(gateway.resident_kib().unwrap());
    }
    let accepted_during_alarm = posting.accepted();
    // Taken before the command: the broker lifts the alarm before rabbitmqctl returns.
    let clearing = Instant::now();
    broker
        .rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"])
        .await
        .unwrap();
    posting
        .wait_accepted(accepted_during_alarm + 500, Duration::from_secs(60))
        .await;
    let answers = posting.finish().await;

    let while_blocked: Vec<_> = answers
        .iter()
        .filter(|a| a.sent >= blocked && a.sent + a.took <= clearing)
        .collect();
    assert!(
        while_blocked.len() > 100,
        "clients kept posting through the alarm: {}",
        while_blocked.len()
    );
    for answer in &while_blocked {
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(
            answer.took < QUICK,
            "a blocked order waited {:?}",
            answer.took
        );
        assert!(
            answer.order_id.is_none(),
            "an order refused while blocked never reached the broker"
        );
    }
    let growth = resident_peak.saturating_sub(resident_before);
    eprintln!(
        "resident memory {resident_before} KiB before the alarm, at most {resident_peak} KiB \
         through {ALARM:?} of it; {} orders refused at once while blocked",
        while_blocked.len()
    );
    assert!(
        growth < MEMORY_GROWTH_KIB,
        "the gateway grew by {growth} KiB through the alarm"
    );
    assert_stored_as_answered(&orders_db, &queue, &answers).await;
}
