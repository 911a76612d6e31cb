//! Publishing orders to `billing_queue` with publisher confirms.
//!
//! One long-lived connection with one channel in confirm mode, shared by all requests:
//! each request publishes and awaits its own confirm, so concurrent requests keep many
//! messages in flight instead of waiting for each other. An order counts as accepted only
//! when the broker has confirmed it, which for a persistent message on a durable quorum queue
//! means it is safely stored. A background task keeps the connection up, reconnecting with
//! backoff; while it is down, publishing fails at once and `/ready` is false.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::amqp::{self, BrokerSettings, Topology};
use common::health::Check;
use common::metrics::Metrics;
use common::order::Order;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection};
use prometheus::{HistogramOpts, HistogramVec};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Why an order was not accepted. In every case the client gets 503 and no order id.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the message broker is unavailable")]
    Disconnected,
    #[error("the message broker did not confirm the order in time")]
    NoConfirm,
    #[error("the message broker refused the order")]
    Refused,
    #[error("the message broker failed while taking the order")]
    Broker(#[from] lapin::Error),
}

#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    topology: Topology,
    confirm_timeout: Duration,
    /// The confirm-mode channel while connected.
    channel: RwLock<Option<Channel>>,
    /// Woken when publishing finds the channel unusable, to reconnect at once.
    broken: Notify,
    /// Time from publish to confirm, by outcome.
    latency: HistogramVec,
}

impl Publisher {
    pub fn new(topology: Topology, confirm_timeout: Duration, metrics: &Metrics) -> Self {
        let latency = metrics.register(
            HistogramVec::new(
                HistogramOpts::new(
                    "gateway_publish_seconds",
                    "Time from publishing an order to the broker's confirm",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                ]),
                &["outcome"],
            )
            .expect("valid metric definition"),
        );
        Self {
            inner: Arc::new(Inner {
                topology,
                confirm_timeout,
                channel: RwLock::new(None),
                broken: Notify::new(),
                latency,
            }),
        }
    }

    /// Keeps a connection open until `shutdown` is cancelled. Cancel it only after the HTTP
    /// server has drained, so that in-flight orders still get their confirms.
    pub async fn maintain(&self, broker: BrokerSettings, shutdown: CancellationToken) {
        amqp::run_connected(&broker, "api-gateway", &shutdown, |connection| {
            self.session(connection, &shutdown)
        })
        .await;
    }

    async fn session(
        &self,
        connection: Connection,
        shutdown: &CancellationToken,
    ) -> lapin::Result<()> {
        let channel = connection.create_channel().await?;
        self.inner.topology.declare(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.set_channel(Some(channel.clone()));
        tracing::info!(queue = %self.inner.topology.queue, "ready to publish");

        let outcome = tokio::select! {
            err = amqp::connection_lost(&connection) => Err(err),
            () = self.inner.broken.notified() => Err(lapin::ErrorKind::InvalidChannelState(
                lapin::ChannelState::Error,
                "publishing failed on this channel",
            ).into()),
            () = shutdown.cancelled() => Ok(()),
        };
        self.set_channel(None);
        if connection.status().connected() {
            let _ = channel.close(200, "api-gateway closing".into()).await;
            let _ = connection.close(200, "api-gateway closing".into()).await;
        }
        outcome
    }

    fn set_channel(&self, channel: Option<Channel>) {
        *self
            .inner
            .channel
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = channel;
    }

    fn channel(&self) -> Option<Channel> {
        self.inner
            .channel
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The readiness check: connected to the broker with a confirm channel.
    pub fn readiness(&self) -> Check {
        let publisher = self.clone();
        Check::new("broker", move || {
            let connected = publisher
                .channel()
                .is_some_and(|channel| channel.status().connected());
            async move {
                if connected {
                    Ok(())
                } else {
                    Err("not connected to RabbitMQ".to_owned())
                }
            }
        })
    }

    /// Publishes `order` as a persistent message and waits for the broker's confirm.
    pub async fn publish(&self, order: &Order, request_id: &str) -> Result<(), PublishError> {
        let started = std::time::Instant::now();
        let result = self.publish_confirmed(order, request_id).await;
        let outcome = match &result {
            Ok(()) => "confirmed",
            Err(PublishError::Disconnected) => "disconnected",
            Err(PublishError::NoConfirm) => "timeout",
            Err(PublishError::Refused) => "refused",
            Err(PublishError::Broker(_)) => "error",
        };
        self.inner
            .latency
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn publish_confirmed(&self, order: &Order, request_id: &str) -> Result<(), PublishError> {
        let channel = self.channel().ok_or(PublishError::Disconnected)?;
        let body = serde_json::to_vec(order).expect("an order always serializes");
        let properties =
            amqp::order_properties(order, request_id).with_app_id("api-gateway".into());
        let options = BasicPublishOptions {
            // An unroutable message (the queue was deleted) comes back instead of vanishing.
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let queue = self.inner.topology.queue.as_str();
        let confirmation = tokio::time::timeout(self.inner.confirm_timeout, async {
            channel
                .basic_publish("".into(), queue.into(), options, &body, properties)
                .await?
                .await
        })
        .await;

        match confirmation {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_returned)))) => {
                // The queue is gone: reconnecting declares it again.
                self.inner.broken.notify_waiters();
                Err(PublishError::Refused)
            }
            Ok(Ok(Confirmation::Nack(_) | Confirmation::NotRequested)) => {
                Err(PublishError::Refused)
            }
            Ok(Err(err)) => {
                if !channel.status().connected() {
                    self.inner.broken.notify_waiters();
                }
                Err(PublishError::Broker(err))
            }
            Err(_elapsed) => Err(PublishError::NoConfirm),
        }
    }
}
