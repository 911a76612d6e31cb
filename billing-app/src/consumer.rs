//! From deliveries to rows: the consumer of `billing_queue`.
//!
//! - A delivery is acknowledged only after its order is committed.
//! - An order id that is already stored is skipped, so a redelivered message (after a crash
//!   between commit and ack, or a lost connection) is absorbed, never stored twice.
//! - A message that can never be stored is dead-lettered at once, with the reason logged and
//!   counted: only what is wrong with the message itself: not JSON, not an order, a field
//!   breaking an order rule, or values the database refuses as data (SQLSTATE classes 22 and
//!   23, but never a duplicate order id).
//! - Every other failure to store (the database unreachable, read-only, full, cancelling the
//!   statement, refusing a privilege, missing the table...) keeps the deliveries
//!   unacknowledged (the broker keeps them, and hands them to another consumer if this one
//!   dies) and retries the insert with capped backoff; `/ready` is false meanwhile, and each
//!   retry is logged with its SQLSTATE and counted by kind.
//! - Deliveries that arrive together (up to half the prefetch window) are stored in one
//!   statement and acknowledged with one ack.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::amqp::{self, BrokerSettings, Topology};
use common::backoff::Backoff;
use common::db::{Database, Failure};
use common::health::Check;
use common::metrics::Metrics;
use common::order::Order;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ErrorKind};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};
use tokio_util::sync::CancellationToken;

use crate::db;

/// The consumer's counters and timings, on the service's `/metrics`.
#[derive(Clone)]
pub struct ConsumerMetrics {
    /// Deliveries by outcome: `acked`, `dead_lettered`, `requeued`.
    messages: IntCounterVec,
    /// Orders that became new rows.
    stored: IntCounter,
    /// Redelivered orders that were already stored.
    duplicates: IntCounter,
    /// Inserts retried, by the kind of failure ([`Failure::label`]).
    database_retries: IntCounterVec,
    /// From a batch's arrival to its acknowledgement.
    batch_seconds: Histogram,
    batch_size: Histogram,
}

impl ConsumerMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let counter = |name: &str, help: &str| {
            metrics.register(IntCounter::new(name, help).expect("valid metric definition"))
        };
        Self {
            messages: metrics.register(
                IntCounterVec::new(
                    Opts::new("billing_messages_total", "Deliveries settled, by outcome"),
                    &["outcome"],
                )
                .expect("valid metric definition"),
            ),
            stored: counter("billing_orders_stored_total", "Orders stored as new rows"),
            duplicates: counter(
                "billing_duplicates_total",
                "Redelivered orders that were already stored",
            ),
            database_retries: {
                let retries = metrics.register(
                    IntCounterVec::new(
                        Opts::new(
                            "billing_database_retries_total",
                            "Inserts retried because the database could not store the orders, \
                             by kind of failure",
                        ),
                        &["reason"],
                    )
                    .expect("valid metric definition"),
                );
                for failure in Failure::ALL {
                    retries.with_label_values(&[failure.label()]);
                }
                retries
            },
            batch_seconds: metrics.register(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "billing_processing_seconds",
                        "Time from a batch's arrival to its acknowledgement",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                    ]),
                )
                .expect("valid metric definition"),
            ),
            batch_size: metrics.register(
                Histogram::with_opts(
                    HistogramOpts::new("billing_batch_size", "Deliveries stored per statement")
                        .buckets(vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0]),
                )
                .expect("valid metric definition"),
            ),
        }
    }

    fn settled(&self, outcome: &str, count: usize) {
        self.messages
            .with_label_values(&[outcome])
            .inc_by(count as u64);
    }
}

/// What happened to an insert.
enum Stored {
    /// Committed; this many rows were new.
    Committed(u64),
    /// The database refused the orders' values themselves: retrying cannot help.
    Rejected(sqlx::Error),
    /// Shutdown came while waiting to retry.
    Interrupted,
}

pub struct Consumer {
    pub database: Database,
    pub topology: Topology,
    pub prefetch: u16,
    pub metrics: ConsumerMetrics,
    /// True while a consumer is registered with the broker; read by `/ready`.
    pub consuming: Arc<AtomicBool>,
    /// Why inserts are failing, while they are; read by `/ready`.
    pub storing: Storing,
    pub shutdown: CancellationToken,
}

impl Consumer {
    /// The readiness check for the broker side.
    pub fn readiness(consuming: Arc<AtomicBool>) -> Check {
        Check::new("broker", move || {
            let consuming = consuming.load(Ordering::Acquire);
            async move {
                if consuming {
                    Ok(())
                } else {
                    Err("not consuming from RabbitMQ".to_owned())
                }
            }
        })
    }

    /// Consumes until shutdown, reconnecting to the broker whenever the connection fails.
    pub async fn run(&self, broker: &BrokerSettings) {
        amqp::run_connected(broker, "billing-app", &self.shutdown, |connection| {
            self.session(connection)
        })
        .await;
    }

    /// One connection's worth of consuming. Returns `Ok` after a clean shutdown: the batch in
    /// hand is settled, and closing the channel returns any prefetched, unprocessed deliveries
    /// to the queue.
    async fn session(&self, connection: Connection) -> lapin::Result<()> {
        let channel = connection.create_channel().await?;
        self.topology.declare(&channel).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let mut deliveries = channel
            .basic_consume(
                self.topology.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let _consuming = Raised::new(&self.consuming);
        tracing::info!(queue = %self.topology.queue, prefetch = self.prefetch, "consuming");

        loop {
            let batch = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                batch = next_batch(&mut deliveries, self.batch_size()) => batch?,
            };
            if !self.process(batch).await? {
                break;
            }
        }
        tracing::info!("stopped consuming");
        let _ = channel.close(200, "billing-app shutting down".into()).await;
        let _ = connection
            .close(200, "billing-app shutting down".into())
            .await;
        Ok(())
    }

    /// At most half the prefetch window: while one batch is being stored, the broker has room
    /// to deliver the next, so the consumer never waits for the network between batches.
    fn batch_size(&self) -> usize {
        usize::from(self.prefetch / 2).max(1)
    }

    /// Settles one batch. Returns `false` when shutdown interrupted a database retry (the
    /// batch went back to the queue).
    async fn process(&self, batch: Vec<Delivery>) -> lapin::Result<bool> {
        let arrived = Instant::now();
        self.metrics.batch_size.observe(batch.len() as f64);
        let mut orders = Vec::with_capacity(batch.len());
        let mut accepted = Vec::with_capacity(batch.len());
        for delivery in batch {
            match decode(&delivery.data) {
                Ok(order) => {
                    orders.push(order);
                    accepted.push(delivery);
                }
                Err(reason) => self.dead_letter(&delivery, &reason).await?,
            }
        }
        let Some(last) = accepted.last() else {
            return Ok(true);
        };

        match self.store(&orders).await {
            Stored::Committed(new) => {
                // One ack covers every delivery of the batch: those dead-lettered above are
                // already settled, and later deliveries have higher tags.
                settle(last.acker.ack(BasicAckOptions { multiple: true }).await)?;
                self.record_stored(orders.len(), new);
            }
            Stored::Rejected(err) => {
                tracing::warn!("a batch was refused ({err}); storing its orders one by one");
                for (order, delivery) in orders.iter().zip(&accepted) {
                    match self.store(std::slice::from_ref(order)).await {
                        Stored::Committed(new) => {
                            settle(delivery.acker.ack(BasicAckOptions::default()).await)?;
                            self.record_stored(1, new);
                        }
                        Stored::Rejected(err) => {
                            self.dead_letter(delivery, &format!("refused by the database: {err}"))
                                .await?;
                        }
                        Stored::Interrupted => return self.requeue(&accepted).await,
                    }
                }
            }
            Stored::Interrupted => return self.requeue(&accepted).await,
        }
        self.metrics
            .batch_seconds
            .observe(arrived.elapsed().as_secs_f64());
        Ok(true)
    }

    /// Inserts `orders`, retrying with capped backoff until shutdown unless the database
    /// refuses their values.
    async fn store(&self, orders: &[Order]) -> Stored {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let (failure, sqlstate, detail) = match self.database.pool() {
                Ok(pool) => match db::insert_orders(pool, orders).await {
                    Ok(new) => {
                        self.storing.works();
                        return Stored::Committed(new);
                    }
                    Err(err) if db::refuses_values(&err) => {
                        self.storing.works();
                        return Stored::Rejected(err);
                    }
                    Err(err) => (
                        Failure::of(&err),
                        common::db::sqlstate(&err),
                        err.to_string(),
                    ),
                },
                Err(not_ready) => (Failure::Unavailable, None, not_ready.to_string()),
            };
            let cause = match &sqlstate {
                Some(code) => format!("SQLSTATE {code}, {}: {detail}", failure.label()),
                None => format!("{}: {detail}", failure.label()),
            };
            self.storing.fails(&cause);
            self.metrics
                .database_retries
                .with_label_values(&[failure.label()])
                .inc();
            let delay = backoff.next_delay();
            tracing::warn!(
                orders = orders.len(),
                reason = failure.label(),
                sqlstate = sqlstate.as_deref().unwrap_or(""),
                "cannot store orders ({cause}); they stay unacknowledged, retrying in {delay:.1?}"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return Stored::Interrupted,
            }
        }
    }

    fn record_stored(&self, orders: usize, new: u64) {
        let duplicates = orders as u64 - new;
        self.metrics.settled("acked", orders);
        self.metrics.stored.inc_by(new);
        self.metrics.duplicates.inc_by(duplicates);
        tracing::info!(stored = new, duplicates, "orders stored");
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> lapin::Result<()> {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::warn!(%message_id, "dead-lettering a message that can never be stored: {reason}");
        let reject = BasicNackOptions {
            requeue: false,
            multiple: false,
        };
        settle(delivery.acker.nack(reject).await)?;
        self.metrics.settled("dead_lettered", 1);
        Ok(())
    }

    /// Returns unstored deliveries to the queue, for another consumer or the next start.
    async fn requeue(&self, deliveries: &[Delivery]) -> lapin::Result<bool> {
        tracing::info!(
            count = deliveries.len(),
            "shutting down during a database outage; returning orders to the queue"
        );
        let requeue = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        for delivery in deliveries {
            settle(delivery.acker.nack(requeue).await)?;
        }
        self.metrics.settled("requeued", deliveries.len());
        Ok(false)
    }
}

/// Whether the consumer's inserts are failing, and why; `/ready` is false meanwhile, since
/// `SELECT 1` may well succeed on a database that cannot store (read-only, a revoked grant).
#[derive(Clone, Default)]
pub struct Storing(Arc<Mutex<Option<String>>>);

impl Storing {
    /// The readiness check for storing orders.
    pub fn readiness(&self) -> Check {
        let state = self.clone();
        Check::new("storage", move || {
            let failing = state.failing();
            async move {
                match failing {
                    Some(cause) => Err(format!("cannot store orders: {cause}")),
                    None => Ok(()),
                }
            }
        })
    }

    fn fails(&self, cause: &str) {
        *self.0.lock().expect("storing lock") = Some(cause.to_owned());
    }

    fn works(&self) {
        *self.0.lock().expect("storing lock") = None;
    }

    fn failing(&self) -> Option<String> {
        self.0.lock().expect("storing lock").clone()
    }
}

/// Waits for a delivery, then takes every delivery already received, up to `max`.
async fn next_batch(deliveries: &mut lapin::Consumer, max: usize) -> lapin::Result<Vec<Delivery>> {
    let first = match deliveries.next().await {
        Some(delivery) => delivery?,
        None => return Err(channel_gone("the consumer was cancelled")),
    };
    let mut batch = vec![first];
    while batch.len() < max {
        match deliveries.next().now_or_never() {
            Some(Some(Ok(delivery))) => batch.push(delivery),
            // Nothing more waiting. An error ends the stream, so it shows on the next call.
            _ => break,
        }
    }
    Ok(batch)
}

/// An order from a message body, or why it can never be stored. `dead-letters list` runs the
/// same function on what is in the dead-letter queue, so that the reason it shows is the one
/// the consumer had.
pub(crate) fn decode(body: &[u8]) -> Result<Order, String> {
    let order: Order =
        serde_json::from_slice(body).map_err(|err| format!("not an order: {err}"))?;
    order
        .validate()
        .map_err(|err| format!("invalid order: {err}"))?;
    Ok(order)
}

/// An ack or nack that lapin did not send (its channel is gone) is a lost connection: the
/// broker will redeliver, and the session must reconnect.
fn settle(sent: lapin::Result<bool>) -> lapin::Result<()> {
    match sent? {
        true => Ok(()),
        false => Err(channel_gone("acknowledgement not sent")),
    }
}

fn channel_gone(reason: &'static str) -> lapin::Error {
    ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, reason).into()
}

/// Sets a flag for as long as this value lives.
struct Raised(Arc<AtomicBool>);

impl Raised {
    fn new(flag: &Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag.clone())
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
