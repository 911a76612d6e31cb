//! Publishing orders to `billing_queue` with publisher confirms.
//!
//! One long-lived connection with one channel in confirm mode, shared by all requests:
//! each request publishes and awaits its own confirm, so concurrent requests keep many
//! messages in flight instead of waiting for each other. An order counts as accepted only
//! when the broker has confirmed it, which for a persistent message on a durable quorum queue
//! means it is safely stored. A background task keeps the connection up, reconnecting with
//! backoff; while it is down, publishing fails at once and `/ready` is false.
//!
//! Under broker pressure nothing piles up: while the broker blocks publishers (a memory or
//! disk alarm) orders fail at once, and at most `PUBLISH_MAX_UNCONFIRMED` messages may be
//! published and unconfirmed; beyond that, orders fail at once too.
//!
//! A node that stops answering without closing its connections (frozen, cut off) is left
//! after the first missed confirm rather than after two missed heartbeats, and the next node
//! of `RABBITMQ_HOSTS` is tried: on a cluster, the others usually are fine.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::amqp::{self, BrokerSettings, Topology};
use common::health::Check;
use common::metrics::Metrics;
use common::order::Order;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection, ConnectionStatus};
use prometheus::{HistogramOpts, HistogramVec};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Why an order was not accepted: the client gets 503 in every case.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Not handed to the broker: the order is certainly not stored.
    #[error("the message broker is unavailable")]
    Disconnected,
    /// The broker blocks publishers during a memory or disk alarm: not handed to it either.
    #[error("the message broker is refusing new messages for now (a memory or disk alarm)")]
    Blocked,
    /// As many orders as allowed are awaiting their confirms: not handed to the broker.
    #[error("too many orders are awaiting the message broker's confirm")]
    Busy,
    /// Handed to the broker, not confirmed in time: it may still be stored.
    #[error("the message broker did not confirm the order in time")]
    NoConfirm,
    /// Handed to the broker, which refused it (a nack, or no queue to route it to).
    #[error("the message broker refused the order")]
    Refused,
    /// Handed to the broker, then the connection failed.
    #[error("the message broker failed while taking the order")]
    Broker(#[from] lapin::Error),
}

impl PublishError {
    /// Whether the order reached the broker, so that it may be stored although the client is
    /// told 503: then the client is given the order id to retry with.
    pub fn may_be_stored(&self) -> bool {
        matches!(self, Self::NoConfirm | Self::Refused | Self::Broker(_))
    }

    fn outcome(&self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Blocked => "blocked",
            Self::Busy => "busy",
            Self::NoConfirm => "timeout",
            Self::Refused => "refused",
            Self::Broker(_) => "error",
        }
    }
}

/// How long a connection being given up may take to say goodbye.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long declaring the queues may hold up publishing on a new connection: declaring queues
/// that exist takes milliseconds.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    topology: Topology,
    confirm_timeout: Duration,
    /// The confirm-mode channel and its connection's state, while connected.
    link: RwLock<Option<Link>>,
    /// One per message published and not yet confirmed, including those whose client already
    /// got 503 when the confirm was late, until its connection is given up: this bounds what
    /// the broker connection buffers.
    unconfirmed: Arc<Semaphore>,
    /// Time from publish to confirm, by outcome.
    latency: HistogramVec,
}

#[derive(Clone)]
struct Link {
    channel: Channel,
    connection: ConnectionStatus,
    /// Cancelled when this connection is given up: by a publish that found it unusable (the
    /// session then reconnects, to the next node), or by the session ending. One per
    /// connection, so a late verdict on an old connection never ends its successor.
    retired: CancellationToken,
}

impl Publisher {
    /// `max_unconfirmed` bounds the messages published and not yet confirmed.
    pub fn new(
        topology: Topology,
        confirm_timeout: Duration,
        max_unconfirmed: usize,
        metrics: &Metrics,
    ) -> Self {
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
                link: RwLock::new(None),
                unconfirmed: Arc::new(Semaphore::new(max_unconfirmed)),
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
        self.declare_topology(&connection).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let retired = CancellationToken::new();
        self.set_link(Some(Link {
            channel: channel.clone(),
            connection: connection.status().clone(),
            retired: retired.clone(),
        }));
        tracing::info!(queue = %self.inner.topology.queue, "ready to publish");

        let outcome = tokio::select! {
            err = amqp::connection_lost(&connection) => Err(err),
            () = retired.cancelled() => Err(lapin::ErrorKind::InvalidChannelState(
                lapin::ChannelState::Error,
                "publishing failed on this connection",
            ).into()),
            () = shutdown.cancelled() => Ok(()),
        };
        self.set_link(None);
        retired.cancel();
        if connection.status().connected() {
            let goodbye = async move {
                let _ = channel.close(200, "api-gateway closing".into()).await;
                let _ = connection.close(200, "api-gateway closing".into()).await;
            };
            // Bounded, since a frozen node never answers; and when leaving a node that failed,
            // in the background, since the next node is waiting.
            let goodbye = tokio::time::timeout(CLOSE_TIMEOUT, goodbye);
            if outcome.is_ok() {
                let _ = goodbye.await;
            } else {
                tokio::spawn(goodbye);
            }
        }
        outcome
    }

    /// Declares the queues on a channel of its own, waiting at most [`DECLARE_TIMEOUT`]. A
    /// declaration can hang on a live node while another node of the cluster is frozen (on
    /// Mnesia, the metadata store of the CI's RabbitMQ 4.0 stand-in, a transaction waits for
    /// every node until the frozen one is declared down, 45-75 s later; Khepri, the Raft-based
    /// store of the 4.3 image, needs only a majority). The queue then nearly always exists
    /// already, declared at an earlier connection, so publishing goes ahead; were it missing,
    /// every order would come back unroutable and be refused, and the next connection
    /// declares again.
    async fn declare_topology(&self, connection: &Connection) -> lapin::Result<()> {
        let channel = connection.create_channel().await?;
        match tokio::time::timeout(DECLARE_TIMEOUT, self.inner.topology.declare(&channel)).await {
            Ok(declared) => {
                declared?;
                let _ = channel.close(200, "declared".into()).await;
            }
            Err(_slow) => tracing::warn!(
                queue = %self.inner.topology.queue,
                "declaring the queues takes longer than {DECLARE_TIMEOUT:?} on this node (is \
                 another node of the cluster unresponsive?); publishing meanwhile"
            ),
        }
        Ok(())
    }

    fn set_link(&self, link: Option<Link>) {
        *self
            .inner
            .link
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = link;
    }

    fn link(&self) -> Option<Link> {
        self.inner
            .link
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The readiness check: connected to the broker with a confirm channel, and not blocked.
    pub fn readiness(&self) -> Check {
        let publisher = self.clone();
        Check::new("broker", move || {
            let state = match publisher.link() {
                Some(link) if link.connection.blocked() => {
                    Err("RabbitMQ is blocking publishers (a memory or disk alarm)".to_owned())
                }
                Some(link) if link.channel.status().connected() => Ok(()),
                _ => Err("not connected to RabbitMQ".to_owned()),
            };
            async move { state }
        })
    }

    /// Publishes `order` as a persistent message and waits for the broker's confirm.
    pub async fn publish(&self, order: &Order, request_id: &str) -> Result<(), PublishError> {
        let started = std::time::Instant::now();
        let result = self.publish_confirmed(order, request_id).await;
        let outcome = result
            .as_ref()
            .map_or_else(PublishError::outcome, |()| "confirmed");
        self.inner
            .latency
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn publish_confirmed(&self, order: &Order, request_id: &str) -> Result<(), PublishError> {
        let Link {
            channel,
            connection,
            retired,
        } = self.link().ok_or(PublishError::Disconnected)?;
        if connection.blocked() {
            return Err(PublishError::Blocked);
        }
        let slot = (self.inner.unconfirmed.clone())
            .try_acquire_owned()
            .map_err(|_| PublishError::Busy)?;
        let body = serde_json::to_vec(order).expect("an order always serializes");
        let properties =
            amqp::order_properties(order, request_id).with_app_id("api-gateway".into());
        let options = BasicPublishOptions {
            // An unroutable message (the queue was deleted) comes back instead of vanishing.
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let queue = self.inner.topology.queue.clone();
        let publishing_channel = channel.clone();
        // Owns everything it needs, so that it can finish after the client has had its 503:
        // lapin sends a publish whose future was dropped all the same, and only its confirm
        // (or the connection's end) frees the slot.
        let mut confirmation = Box::pin(async move {
            let confirmation = publishing_channel
                .basic_publish("".into(), queue.as_str().into(), options, &body, properties)
                .await?
                .await;
            drop(slot);
            confirmation
        });

        match tokio::time::timeout(self.inner.confirm_timeout, &mut confirmation).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_returned)))) => {
                // The queue is gone: reconnecting declares it again.
                retired.cancel();
                Err(PublishError::Refused)
            }
            Ok(Ok(Confirmation::Nack(_) | Confirmation::NotRequested)) => {
                Err(PublishError::Refused)
            }
            Ok(Err(err)) => {
                if !channel.status().connected() {
                    retired.cancel();
                }
                Err(PublishError::Broker(err))
            }
            Err(_elapsed) => {
                // The slot stays taken until the confirm comes or the connection is given up.
                let given_up = retired.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = confirmation => {}
                        () = given_up.cancelled() => {}
                    }
                });
                // Not blocked, and yet no confirm: the node is frozen, cut off or failing.
                // (While the broker blocks us, confirms are late on every node alike.)
                if !connection.blocked() && !retired.is_cancelled() {
                    tracing::warn!("no confirm from RabbitMQ in time; moving to the next node");
                    retired.cancel();
                }
                Err(PublishError::NoConfirm)
            }
        }
    }
}
