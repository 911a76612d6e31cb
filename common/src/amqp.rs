//! RabbitMQ: broker settings (one node or a cluster's), the queue topology that both the
//! gateway (publisher) and billing-app (consumer) declare, and a connection loop that moves to
//! the next node when one fails and backs off when all do.

use std::fmt;
use std::future::Future;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{ConfigError, Env};
use crate::order::Order;

/// Seconds between heartbeats: a silently dead broker or network is noticed within ~2x this.
const HEARTBEAT_SECONDS: u16 = 10;

/// How long opening a connection may take, TCP and AMQP handshakes together. A frozen node's
/// kernel still accepts TCP connections, and no heartbeat runs before the AMQP handshake is
/// over, so without this limit connecting to it would wait until it resumes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One RabbitMQ node: `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub host: String,
    pub port: u16,
}

impl Node {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where the broker is (one node, or the nodes of a cluster) and which queue carries orders.
#[derive(Clone)]
pub struct BrokerSettings {
    /// Tried in turn: a service connects to one, and to the next when it fails.
    pub nodes: Vec<Node>,
    pub user: String,
    pub password: String,
    /// `RABBITMQ_QUEUE`, `billing_queue` by default.
    pub queue: String,
}

impl BrokerSettings {
    /// A broker on one node, with the given account.
    pub fn single(node: Node, user: &str, password: &str, queue: &str) -> Self {
        Self {
            nodes: vec![node],
            user: user.to_owned(),
            password: password.to_owned(),
            queue: queue.to_owned(),
        }
    }

    /// Reads `RABBITMQ_HOSTS` (the nodes of a cluster, comma-separated, each `host` or
    /// `host:port`) or else `RABBITMQ_HOST`, with `RABBITMQ_PORT` as the port of any node that
    /// names none; and `RABBITMQ_USER`, `RABBITMQ_PASSWORD`, `RABBITMQ_QUEUE`. The defaults
    /// reach a local RabbitMQ with its built-in `guest` account, which RabbitMQ only accepts
    /// from the same machine.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let port = env.port_or("RABBITMQ_PORT", 5672)?;
        let host = env.string_or("RABBITMQ_HOST", "127.0.0.1");
        let nodes = match env.get("RABBITMQ_HOSTS") {
            Some(list) => parse_nodes(list, port)
                .ok_or_else(|| ConfigError::invalid("RABBITMQ_HOSTS", list, NODES_EXPECTED))?,
            None => vec![Node::new(host, port)],
        };
        Ok(Self {
            nodes,
            user: env.string_or("RABBITMQ_USER", "guest"),
            password: env.string_or("RABBITMQ_PASSWORD", "guest"),
            queue: env.string_or("RABBITMQ_QUEUE", "billing_queue"),
        })
    }

    /// The queue names derived from [`Self::queue`].
    pub fn topology(&self) -> Topology {
        Topology {
            queue: self.queue.clone(),
        }
    }

    /// Built field by field, so credentials need no URL-escaping.
    fn uri(&self, node: &Node) -> AMQPUri {
        AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: self.user.clone(),
                    password: self.password.clone(),
                },
                host: node.host.clone(),
                port: node.port,
            },
            vhost: "/".to_owned(),
            // No `connection_timeout`: lapin's asynchronous connect ignores it (lapin 4.12,
            // amq-protocol-tcp 10.6), so `connect_to` sets its own limit.
            query: AMQPQueryString {
                heartbeat: Some(HEARTBEAT_SECONDS),
                ..AMQPQueryString::default()
            },
        }
    }
}

const NODES_EXPECTED: &str =
    "comma-separated host or host:port entries, such as rabbitmq-0,rabbitmq-1:5672";

/// `a,b:5673` into nodes, `default_port` where none is given; `None` if an entry is empty or
/// its port is not a number.
fn parse_nodes(list: &str, default_port: u16) -> Option<Vec<Node>> {
    list.split(',')
        .map(|entry| {
            let entry = entry.trim();
            let (host, port) = match entry.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().ok()?),
                None => (entry, default_port),
            };
            (!host.is_empty()).then(|| Node::new(host, port))
        })
        .collect()
}

impl fmt::Debug for BrokerSettings {
    /// Everything but the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(Node::to_string).collect();
        write!(
            f,
            "amqp://{}@{} (queue {})",
            self.user,
            nodes.join(","),
            self.queue
        )
    }
}

/// The queues and exchange around the order queue.
///
/// `billing_queue` is a durable quorum queue whose rejected messages go through the exchange
/// `billing_queue.dlx` to the durable queue `billing_queue.dead-letter`, where they wait for a
/// human. Publishers use the default exchange with the queue's name as routing key.
///
/// Dead-lettering is *at-least-once*: the order queue keeps a dead-lettered message until the
/// dead-letter queue has confirmed it, so a message dead-lettered while that queue is missing
/// or unavailable waits (the broker retries every few minutes) instead of being dropped, as
/// the default at-most-once strategy would. RabbitMQ requires `x-overflow: reject-publish`
/// for it (no length limit is set, so nothing is ever rejected for length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub queue: String,
}

/// `x-delivery-limit` of both queues: how many failed deliveries of a message the broker
/// tolerates before it dead-letters the message (from the order queue, to the dead-letter
/// queue) or drops it (from the dead-letter queue, which has no dead-letter exchange).
///
/// Why 1000 and not RabbitMQ 4's default of 20. What counts as a failed delivery (RabbitMQ
/// 4.3's quorum queues; checked in its `rabbit_fifo` and on 3.10 with `x-delivery-count`):
/// every delivery still unacknowledged when its consumer's channel closes, cleanly or not
/// (billing-app's SIGTERM returns what it prefetched that way, a crash, SIGKILL, OOM or lost
/// connection likewise), and a `basic.reject` with requeue. A `basic.nack` with requeue counts
/// on RabbitMQ 3.x and 4.0 to 4.2 (which limited the acquired count), not on 4.3, nor does a
/// consumer timeout on 4.3. billing-app never needs the broker to give up on a message: it
/// dead-letters what can never be stored itself, and holds deliveries unacknowledged while
/// the database cannot store them, so a count only grows when billing-app stops or crashes
/// while holding the message, up to `BILLING_PREFETCH` (1000) messages at a time. With 20,
/// twenty restarts during a database outage, or twenty rounds of a crash loop (minutes under
/// Compose's restart back-off, about an hour under Kubernetes'), would dead-letter valid
/// orders. With 1000 it takes days of an unattended crash loop (at Kubernetes' 5-minute cap,
/// three and a half), while the limit still stops a message that crashes every consumer from
/// looping for ever; and thanks to at-least-once such a message goes to the dead-letter queue,
/// never away. Unlimited (`-1` on RabbitMQ 4) is not an option: RabbitMQ 3.x reads `-1` as
/// "dead-letter at the first return" (verified on 3.10.8).
///
/// The dead-letter queue gets the same limit so that people browsing it and requeueing (the
/// management UI's "reject, requeue" counts) cannot make RabbitMQ 4 drop a message after 20.
pub const DELIVERY_LIMIT: i64 = 1000;

impl Topology {
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.queue)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letter", self.queue)
    }

    /// Declares everything; idempotent, so both services call it on every (re)connection and
    /// whichever starts first creates the topology.
    ///
    /// A queue that exists with other arguments (declared by an older version) makes the
    /// broker refuse with PRECONDITION_FAILED; that is logged as an error saying what to do
    /// (docs/delivery-guarantees.md, "Upgrading the queues") and returned, so the caller keeps
    /// retrying.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let quorum = |extra: &[(&str, AMQPValue)]| {
            let mut args = FieldTable::default();
            args.insert("x-queue-type".into(), string("quorum"));
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            for (key, value) in extra {
                args.insert((*key).into(), value.clone());
            }
            args
        };

        let dlx = self.dead_letter_exchange();
        let dlq = self.dead_letter_queue();
        channel
            .exchange_declare(
                dlx.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        declare_queue(channel, &dlq, quorum(&[])).await?;
        channel
            .queue_bind(
                dlq.as_str().into(),
                dlx.as_str().into(),
                self.queue.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let queue_args = quorum(&[
            ("x-dead-letter-exchange", string(&dlx)),
            ("x-dead-letter-routing-key", string(&self.queue)),
            ("x-dead-letter-strategy", string("at-least-once")),
            ("x-overflow", string("reject-publish")),
        ]);
        declare_queue(channel, &self.queue, queue_args).await
    }
}

/// Declares a durable queue; see [`Topology::declare`] for a refusal.
async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel.queue_declare(name.into(), durable, args).await;
    if let Err(err) = &declared
        && let lapin::ErrorKind::ProtocolError(refusal) = err.kind()
        && matches!(
            refusal.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
        )
    {
        tracing::error!(
            queue = name,
            "queue {name} exists with other arguments than this version declares ({}): it was \
             declared by an older version; drain it, delete it and restart \
             (docs/delivery-guarantees.md, \"Upgrading the queues\")",
            refusal.get_message()
        );
    }
    declared.map(drop)
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

/// Opens a connection named `name` (shown in the RabbitMQ management UI) to the first node
/// that accepts one.
pub async fn connect(settings: &BrokerSettings, name: &str) -> lapin::Result<Connection> {
    let mut last_error = None;
    for node in &settings.nodes {
        match connect_to(settings, node, name).await {
            Ok(connection) => return Ok(connection),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into()
    }))
}

async fn connect_to(
    settings: &BrokerSettings,
    node: &Node,
    name: &str,
) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connecting = Connection::connect_uri(settings.uri(node), properties);
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .unwrap_or_else(|_elapsed| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no AMQP handshake within {CONNECT_TIMEOUT:?} (is the node frozen or cut off?)"
                ),
            )
            .into())
        })
}

/// Runs `session` on a fresh connection, again and again, until `shutdown` is cancelled.
///
/// The nodes are tried in turn: after a failed attempt or a lost connection, the next node is
/// tried at once, and only once as many attempts as there are nodes have failed in a row does
/// the loop wait, with
/// exponential backoff capped at about a second ([`Backoff::for_reconnects`]), so that the
/// service is back soon after a node is, however long the outage lasted. Every attempt and
/// loss is logged with the node's address. `session` owns the connection while it lasts: it
/// opens its channels, does its work, and returns when the connection fails (an `Err`) or when
/// it has finished shutting down (`Ok`).
pub async fn run_connected<S, F>(
    settings: &BrokerSettings,
    name: &str,
    shutdown: &CancellationToken,
    mut session: S,
) where
    S: FnMut(Connection) -> F,
    F: Future<Output = lapin::Result<()>>,
{
    let mut backoff = Backoff::for_reconnects();
    let nodes = &settings.nodes;
    let mut next = 0;
    let mut failed_in_a_row = 0;
    while !shutdown.is_cancelled() {
        let Some(node) = nodes.get(next % nodes.len().max(1)) else {
            tracing::error!("no RabbitMQ node configured");
            return;
        };
        next += 1;
        match connect_to(settings, node, name).await {
            Ok(connection) => {
                tracing::info!(%node, queue = %settings.queue, "connected to RabbitMQ node {node}");
                backoff.reset();
                failed_in_a_row = 0;
                match session(connection).await {
                    Ok(()) => return,
                    // Counted as a failure too, so that a session that fails at once (a
                    // refused declaration, say) cannot spin.
                    Err(err) => {
                        tracing::warn!(%node, "connection to RabbitMQ node {node} lost: {err}");
                        failed_in_a_row += 1;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%node, "RabbitMQ node {node} not reachable: {err}");
                failed_in_a_row += 1;
            }
        }
        if failed_in_a_row < nodes.len() {
            continue;
        }
        failed_in_a_row = 0;
        let delay = backoff.next_delay();
        tracing::info!("no RabbitMQ node reachable; trying again in {delay:.1?}");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Waits until `connection` reports an error (broker gone, heartbeat missed, closed by the
/// broker) and returns it. Logs when the broker blocks the connection's publishing (a memory
/// or disk alarm) and unblocks it.
pub async fn connection_lost(connection: &Connection) -> lapin::Error {
    use futures_util::StreamExt;
    let mut events = std::pin::pin!(connection.events_listener());
    while let Some(event) = events.next().await {
        match event {
            lapin::Event::Error(err) => return err,
            lapin::Event::ConnectionBlocked(reason) => {
                tracing::warn!("RabbitMQ is blocking publishers on this connection: {reason}");
            }
            lapin::Event::ConnectionUnblocked => {
                tracing::info!("RabbitMQ takes messages on this connection again");
            }
            _ => {}
        }
    }
    lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed).into()
}

/// The properties of an order message: persistent (`delivery_mode=2`), JSON, identified by
/// the order id (`message_id`), stamped with the time, and carrying the request id that
/// accepted it in the `x-request-id` header.
pub fn order_properties(order: &Order, request_id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-request-id".into(), string(request_id));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(order.order_id.to_string().into())
        .with_timestamp(now)
        .with_headers(headers)
}

/// The text of a header, if present and textual.
pub fn header_text(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    let key = ShortString::from(key);
    match headers?.inner().get(&key)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        AMQPValue::ShortString(value) => Some(value.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_a_list_of_nodes_and_a_single_host_still_works() {
        let env = Env::from_pairs([("RABBITMQ_HOSTS", "rabbitmq-0, rabbitmq-1:5673,rabbitmq-2")]);
        let settings = BrokerSettings::from_env(&env).unwrap();
        assert_eq!(
            settings.nodes,
            [
                Node::new("rabbitmq-0", 5672),
                Node::new("rabbitmq-1", 5673),
                Node::new("rabbitmq-2", 5672)
            ]
        );
        let env = Env::from_pairs([("RABBITMQ_HOST", "rabbitmq"), ("RABBITMQ_PORT", "5673")]);
        let settings = BrokerSettings::from_env(&env).unwrap();
        assert_eq!(settings.nodes, [Node::new("rabbitmq", 5673)]);
        assert!(format!("{settings:?}").contains("rabbitmq:5673"));
        for bad in ["a,,b", "a:port", ":5672"] {
            let env = Env::from_pairs([("RABBITMQ_HOSTS", bad)]);
            let err = BrokerSettings::from_env(&env).unwrap_err().to_string();
            assert!(err.contains("RABBITMQ_HOSTS"), "{bad}: {err}");
        }
    }
}
