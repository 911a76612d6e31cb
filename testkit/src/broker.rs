//! A throw-away set of queues per test, on the local RabbitMQ or a [`crate::PrivateBroker`].

use common::amqp::{self, BrokerSettings, Node, Topology};
use common::order::Order;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

/// A uniquely named order queue (with its dead-letter exchange and queue), deleted when
/// this value is dropped.
pub struct TestQueue {
    name: String,
    /// The broker's AMQP port on 127.0.0.1: 5672, or a private node's.
    port: u16,
}

/// A message taken from a queue.
#[derive(Debug)]
pub struct Message {
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl Default for TestQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl TestQueue {
    /// A fresh queue name on the shared local broker.
    pub fn new() -> Self {
        Self::on_port(5672)
    }

    /// A fresh queue name on the broker listening on 127.0.0.1:`port` (a private node).
    pub fn on_port(port: u16) -> Self {
        Self {
            name: format!("test_billing_{}", uuid::Uuid::new_v4().simple()),
            port,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Settings a service under test uses to reach the broker and this queue.
    pub fn settings(&self) -> BrokerSettings {
        self.settings_via(self.port)
    }

    /// The same, but through another port (a [`crate::FaultProxy`]).
    pub fn settings_via(&self, port: u16) -> BrokerSettings {
        BrokerSettings::single(Node::new("127.0.0.1", port), "guest", "guest", &self.name)
    }

    /// The broker's AMQP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// [`Self::settings`] as `RABBITMQ_*` variables, for a service started as a process.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_via(self.port)
    }

    /// The same as `RABBITMQ_*` variables, for a service started as a process.
    pub fn env_via(&self, port: u16) -> Vec<(String, String)> {
        vec![
            ("RABBITMQ_HOST".into(), "127.0.0.1".into()),
            ("RABBITMQ_PORT".into(), port.to_string()),
            ("RABBITMQ_USER".into(), "guest".into()),
            ("RABBITMQ_PASSWORD".into(), "guest".into()),
            ("RABBITMQ_QUEUE".into(), self.name.clone()),
        ]
    }

    pub fn topology(&self) -> Topology {
        self.settings().topology()
    }

    async fn channel(&self) -> (Connection, Channel) {
        let connection = amqp::connect(&self.settings(), "test")
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "tests need RabbitMQ on 127.0.0.1:{} (run Scripts/test.sh): {err}",
                    self.port
                )
            });
        let channel = connection.create_channel().await.expect("open a channel");
        (connection, channel)
    }

    /// Declares the queues as the services do.
    pub async fn declare(&self) {
        let (connection, channel) = self.channel().await;
        self.topology()
            .declare(&channel)
            .await
            .expect("declare the test topology");
        let _ = connection.close(200, "done".into()).await;
    }

    /// Publishes `body`, persistent and confirmed, with `message_id`: anything at all, for
    /// testing what billing-app does with messages that are not orders.
    pub async fn publish_raw(&self, body: &[u8], message_id: &str) {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(message_id.into());
        self.publish_all([(body.to_vec(), properties)]).await;
    }

    /// Publishes a valid order, as the gateway does.
    pub async fn publish_order(&self, order: &Order) {
        self.publish_orders(std::slice::from_ref(order)).await;
    }

    /// Publishes many orders over one channel, all confirmed.
    pub async fn publish_orders(&self, orders: &[Order]) {
        let messages = orders.iter().map(|order| {
            let body = serde_json::to_vec(order).expect("serialize");
            (body, amqp::order_properties(order, "test"))
        });
        self.publish_all(messages).await;
    }

    /// Publishes `body` with exactly `properties` to `queue` (this test's order queue or its
    /// dead-letter queue, say) through the default exchange, confirmed.
    pub async fn publish_to(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        self.publish_all_to(queue, [(body.to_vec(), properties)])
            .await;
    }

    async fn publish_all(&self, messages: impl IntoIterator<Item = (Vec<u8>, BasicProperties)>) {
        self.publish_all_to(&self.name, messages).await;
    }

    async fn publish_all_to(
        &self,
        queue: &str,
        messages: impl IntoIterator<Item = (Vec<u8>, BasicProperties)>,
    ) {
        let (connection, channel) = self.channel().await;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let mut confirms = Vec::new();
        for (body, properties) in messages {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for confirm in confirms {
            let confirmation = confirm.await.expect("confirm");
            assert!(confirmation.is_ack(), "the broker confirmed a test message");
        }
        let _ = connection.close(200, "done".into()).await;
    }

    /// Takes every ready message off the order queue and rejects it without requeue, as
    /// billing-app does with a message it can never store, and waits until the broker has
    /// moved them all to the dead-letter queue (adding its `x-death` record, reason
    /// `rejected`): a dead-letter queue as an earlier fault would have left it. Returns how
    /// many were dead-lettered.
    pub async fn dead_letter_all(&self) -> u32 {
        let (connection, channel) = self.channel().await;
        let before = self.dead_letter_depth().await;
        let mut rejected = 0;
        while let Some(message) = channel
            .basic_get(self.name.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
        {
            let reject = BasicNackOptions {
                requeue: false,
                multiple: false,
            };
            message
                .delivery
                .acker
                .nack(reject)
                .await
                .expect("basic.nack");
            rejected += 1;
        }
        let _ = connection.close(200, "done".into()).await;
        crate::eventually(
            std::time::Duration::from_secs(10),
            "the rejected messages in the dead-letter queue",
            || async { self.dead_letter_depth().await == before + rejected },
        )
        .await;
        rejected
    }

    /// Takes each message of the dead-letter queue and returns it (`basic.nack` with
    /// requeue), `times` times over, as a browsing tool does: on RabbitMQ 3.x to 4.2 every
    /// return counts as a failed delivery, towards the queue's delivery limit.
    pub async fn return_dead_letters(&self, times: u32) {
        let (connection, channel) = self.channel().await;
        let queue = self.topology().dead_letter_queue();
        let back = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        let depth = self.dead_letter_depth().await;
        for _ in 0..times {
            let mut held = Vec::new();
            for _ in 0..depth {
                match channel
                    .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                    .await
                    .expect("basic.get")
                {
                    Some(message) => held.push(message.delivery),
                    None => break,
                }
            }
            for delivery in held {
                delivery.acker.nack(back).await.expect("basic.nack");
            }
        }
        let _ = connection.close(200, "done".into()).await;
    }

    /// Messages ready in the order queue (not those a consumer holds).
    pub async fn depth(&self) -> u32 {
        self.count(&self.name).await
    }

    /// Messages in the dead-letter queue.
    pub async fn dead_letter_depth(&self) -> u32 {
        self.count(&self.topology().dead_letter_queue()).await
    }

    async fn count(&self, queue: &str) -> u32 {
        let (connection, channel) = self.channel().await;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .expect("the queue exists");
        let _ = connection.close(200, "done".into()).await;
        declared.message_count()
    }

    /// Takes every ready message off the order queue.
    pub async fn take_all(&self) -> Vec<Message> {
        self.take_from(&self.name).await
    }

    /// Takes every message off the dead-letter queue.
    pub async fn take_dead_letters(&self) -> Vec<Message> {
        self.take_from(&self.topology().dead_letter_queue()).await
    }

    async fn take_from(&self, queue: &str) -> Vec<Message> {
        let (connection, channel) = self.channel().await;
        let mut messages = Vec::new();
        let options = BasicGetOptions { no_ack: true };
        while let Some(message) = channel
            .basic_get(queue.into(), options)
            .await
            .expect("basic.get")
        {
            messages.push(Message {
                properties: message.delivery.properties.clone(),
                body: message.delivery.data.clone(),
            });
        }
        let _ = connection.close(200, "done".into()).await;
        messages
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let settings = self.settings();
        // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(delete_topology(&settings)).ok()
        })
        .join();
    }
}

/// Deletes the order queue named in `settings`, its dead-letter queue and exchange.
pub async fn delete_topology(settings: &BrokerSettings) -> lapin::Result<()> {
    let topology = settings.topology();
    let connection = amqp::connect(settings, "cleanup").await?;
    let channel = connection.create_channel().await?;
    for queue in [topology.queue.clone(), topology.dead_letter_queue()] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    channel
        .exchange_delete(
            topology.dead_letter_exchange().as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await?;
    connection.close(200, "done".into()).await
}
