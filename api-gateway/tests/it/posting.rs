//! Clients posting orders through the gateway while a test breaks something, and the check
//! of what they were told against what billing-app stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{TestDatabase, TestQueue, eventually};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::json_of;

/// One answer to `POST /api/billing`.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status, or 0 when the request itself failed (no answer at all).
    pub status: u16,
    pub order_id: Option<Uuid>,
    pub sent: Instant,
    pub took: Duration,
}

/// Clients posting orders one after another until stopped, counting the 200s as they come.
pub struct Posting {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    task: JoinHandle<Vec<Answer>>,
}

impl Posting {
    pub fn start(gateway_url: &str, clients: usize) -> Self {
        let url = format!("{gateway_url}/api/billing");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let posters: Vec<_> = (0..clients).map(|client| {
            let (url, stop) = (url.clone(), stop.clone());
            let (accepted, refused) = (accepted.clone(), refused.clone());
            async move {
                // A generous client timeout: a hung request shows as status 0, not a hung test.
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let body = json!({
                    "user_id": (client + 1).to_string(), "number_of_items": "1", "total_amount": "4.20"
                });
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let answer = match http.post(&url).json(&body).send().await {
                        Ok(response) => {
                            let (status, body) = json_of(response).await;
                            let order_id = body["order_id"].as_str().map(|id| id.parse().unwrap());
                            Answer {
                                status,
                                order_id,
                                sent,
                                took: sent.elapsed(),
                            }
                        }
                        Err(_) => Answer {
                            status: 0,
                            order_id: None,
                            sent,
                            took: sent.elapsed(),
                        },
                    };
                    if answer.status == 200 {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        // A 503 for "disconnected" comes back at once: pause rather than
                        // spin, so that four clients do not starve a 2-core machine.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    answers.push(answer);
                }
                answers
            }
        }).collect();
        let task =
            tokio::spawn(async move { futures_util::future::join_all(posters).await.concat() });
        Self {
            stop,
            accepted,
            refused,
            task,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// Waits until `count` orders in all have been answered 200.
    pub async fn wait_accepted(&self, count: usize, limit: Duration) {
        eventually(limit, &format!("{count} orders accepted"), || async {
            self.accepted() >= count
        })
        .await;
    }

    /// Waits until `count` orders in all have been refused.
    pub async fn wait_refused(&self, count: usize, limit: Duration) {
        eventually(limit, &format!("{count} orders refused"), || async {
            self.refused() >= count
        })
        .await;
    }

    pub async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// How many rows each order id has.
pub async fn rows_per_order(db: &TestDatabase) -> HashMap<Uuid, i64> {
    let pool = db.pool().await;
    let rows: Vec<(Uuid, i64)> = sqlx::query_as("SELECT id, count(*) FROM orders GROUP BY id")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    pool.close().await;
    rows.into_iter().collect()
}

/// Checks the answers against the stored orders, once billing-app has drained the queue:
/// only 200 (with its order id) and 503 were answered; every 200 is stored exactly once;
/// nothing is stored twice; nothing is stored unless its client was given its id (a 503
/// names the order when the broker may have it); nothing was dead-lettered.
pub async fn assert_stored_as_answered(db: &TestDatabase, queue: &TestQueue, answers: &[Answer]) {
    for answer in answers {
        match answer.status {
            200 => assert!(answer.order_id.is_some(), "a 200 carries its order id"),
            503 => {}
            other => panic!("only 200 or 503, got {other}: {answer:?}"),
        }
    }
    let accepted: Vec<Uuid> = answers
        .iter()
        .filter(|answer| answer.status == 200)
        .filter_map(|answer| answer.order_id)
        .collect();
    let named: Vec<Uuid> = answers
        .iter()
        .filter_map(|answer| answer.order_id)
        .collect();
    eventually(
        Duration::from_secs(60),
        &format!("all {} accepted orders stored", accepted.len()),
        || async {
            let stored = rows_per_order(db).await;
            accepted.iter().all(|id| stored.contains_key(id))
        },
    )
    .await;
    eventually(Duration::from_secs(30), "the queue drained", || async {
        queue.depth().await == 0
    })
    .await;
    let stored = rows_per_order(db).await;
    for id in &accepted {
        assert_eq!(stored.get(id), Some(&1), "order {id} stored exactly once");
    }
    for (id, rows) in &stored {
        assert_eq!(*rows, 1, "order {id} stored once");
        assert!(
            named.contains(id),
            "order {id} was stored although its client was told neither 200 nor its id"
        );
    }
    assert_eq!(queue.dead_letter_depth().await, 0, "nothing dead-lettered");
    eprintln!(
        "{} orders accepted, {} refused ({} of them naming an order id), {} stored",
        accepted.len(),
        answers.len() - accepted.len(),
        named.len() - accepted.len(),
        stored.len()
    );
}
