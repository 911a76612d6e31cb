//! `billing-app dead-letters list` and `billing-app dead-letters replay (--all | ID...)`: what
//! waits in `<RABBITMQ_QUEUE>.dead-letter` and why, and moving it back to the order queue once
//! an operator has fixed the cause. Both read the same `RABBITMQ_*` variables as the service.
//!
//! **Why a message was refused is derived again, not carried along.** A consumer dead-letters
//! with `basic.nack` (no requeue), which cannot add a header: the broker moves the message as
//! it is and adds only its own `x-death` record (when, how often, and `rejected` or
//! `delivery_limit`). Carrying billing-app's reason would mean publishing a copy to the
//! dead-letter queue and acknowledging the original, replacing the broker's at-least-once
//! dead-lettering with plumbing of our own on the consumer's path. Instead `list` runs the
//! consumer's own [`crate::consumer::decode`] (parsing and every order rule) on the body, which
//! gives the reason word for word; a body that passes was refused by the database as data
//! (SQLSTATE classes 22 and 23, the only other reason billing-app dead-letters), and the list
//! says so, with the log line to look for; `x-death` tells a message the broker gave up on
//! (`delivery_limit`) from one billing-app refused.
//!
//! **Browsing loses and reorders nothing.** The messages are taken with `basic.get` and held
//! unacknowledged while the list is made; those not replayed are then returned with
//! `basic.nack` and requeue, one at a time in the order they came, which puts them back at the
//! head of the queue in that order (a quorum queue delivers returned messages first). If the
//! command dies meanwhile, closing its channel returns them all the same.
//!
//! **Browsing cannot push a message over the delivery limit.** A return counts as a failed
//! delivery on RabbitMQ 3.x to 4.2 (and, on every version, when a channel closes while holding
//! the message), and the dead-letter queue, with a delivery limit of its own and no
//! dead-letter exchange, would drop a message past [`amqp::DELIVERY_LIMIT`]. So a message whose
//! `x-delivery-count` has reached half the limit is renewed instead of returned: a copy (same
//! body and properties, without the broker's count) is published to the dead-letter queue, and
//! the original acknowledged once the broker has confirmed the copy. That message moves to the
//! end of the queue; nothing is lost, and a crash between confirm and ack leaves two copies.
//!
//! **Replay never loses a message.** Each chosen message is published to the order queue
//! (same body and properties, persistent, `mandatory`) and acknowledged from the dead-letter
//! queue only after the broker confirmed the publish. A crash in between leaves it in both
//! queues: billing-app stores an order id once, so the worst case is a duplicate delivery.

use std::collections::BTreeSet;
use std::process::ExitCode;

use comfy_table::{Table, presets};
use common::amqp::{self, BrokerSettings, DELIVERY_LIMIT, Topology};
use common::cli::Command;
use common::config::Env;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

/// `billing-app dead-letters ...`, for [`common::cli::Service::commands`].
pub const COMMAND: Command = Command {
    name: "dead-letters",
    summary: "list | replay (--all | MESSAGE_ID...): show the dead-lettered orders and why; \
              move them back to the order queue",
    run,
};

const USAGE: &str = "usage: billing-app dead-letters list\n       \
                     billing-app dead-letters replay (--all | MESSAGE_ID...)";

/// Exit code: the command line was wrong.
const USAGE_ERROR: u8 = 2;
/// Exit code: some of the message ids named for replay are not in the dead-letter queue (the
/// others were replayed).
const NOT_FOUND: u8 = 3;

/// The broker header counting a message's failed deliveries (quorum queues).
const DELIVERY_COUNT: &str = "x-delivery-count";

/// What the operator asked for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    List,
    Replay(Selection),
}

/// Which dead letters to replay.
#[derive(Debug, PartialEq, Eq)]
enum Selection {
    All,
    Ids(BTreeSet<String>),
}

impl Selection {
    fn includes(&self, message_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Ids(ids) => ids.contains(message_id),
        }
    }
}

fn parse(args: &[String]) -> Result<Action, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["list"] => Ok(Action::List),
        ["list", extra, ..] => Err(format!("list takes no arguments, got {extra:?}")),
        ["replay"] => Err("name the message ids to replay, or --all".to_owned()),
        ["replay", "--all"] => Ok(Action::Replay(Selection::All)),
        ["replay", ids @ ..] => {
            if let Some(option) = ids.iter().find(|id| id.starts_with('-')) {
                return Err(format!(
                    "{option:?} is not a message id; --all stands alone"
                ));
            }
            Ok(Action::Replay(Selection::Ids(
                ids.iter().map(|id| (*id).to_owned()).collect(),
            )))
        }
        [other, ..] => Err(format!("unknown subcommand {other:?}")),
        [] => Err("give a subcommand".to_owned()),
    }
}

fn run(env: &Env, args: &[String]) -> ExitCode {
    let action = match parse(args) {
        Ok(action) => action,
        Err(problem) => {
            eprintln!("billing-app dead-letters: {problem}\n{USAGE}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let broker = match BrokerSettings::from_env(env) {
        Ok(broker) => broker,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("billing-app dead-letters: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let session = Session::open(&broker).await?;
        let outcome = match action {
            Action::List => list(&session).await,
            Action::Replay(selection) => replay(&session, &selection).await,
        };
        session.close().await;
        outcome
    });
    match outcome {
        Ok(code) => code,
        Err(problem) => {
            eprintln!("billing-app dead-letters: {problem}");
            ExitCode::FAILURE
        }
    }
}

/// Shows every message in the dead-letter queue, and puts each back where it was.
async fn list(session: &Session) -> Result<ExitCode, String> {
    let dead_letter_queue = session.topology.dead_letter_queue();
    let held = session.take_all().await?;
    let mut table = table([
        "#",
        "MESSAGE ID",
        "DEAD-LETTERED (UTC)",
        "TIMES",
        "ORDER",
        "REASON",
    ]);
    for (position, delivery) in held.iter().enumerate() {
        let deaths = Deaths::of(&delivery.properties);
        let (order, reason) = explain(&delivery.data, &deaths);
        table.add_row([
            (position + 1).to_string(),
            message_id(delivery).unwrap_or("(none)").to_owned(),
            deaths.last_time().unwrap_or_else(|| "-".to_owned()),
            deaths.total().to_string(),
            order,
            reason,
        ]);
    }
    let count = held.len();
    session.give_back(held).await?;
    if count == 0 {
        println!("{dead_letter_queue} is empty");
    } else {
        println!("{table}");
        println!(
            "{count} message(s) in {dead_letter_queue}; after fixing the cause: \
             billing-app dead-letters replay (--all | MESSAGE_ID...)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Moves the selected messages to the order queue, each acknowledged from the dead-letter
/// queue only after the broker confirmed its copy; everything else goes back, in order.
async fn replay(session: &Session, selection: &Selection) -> Result<ExitCode, String> {
    let queue = session.topology.queue.clone();
    let dead_letter_queue = session.topology.dead_letter_queue();
    let held = session.take_all().await?;
    let (chosen, mut kept): (Vec<_>, Vec<_>) = held
        .into_iter()
        .enumerate()
        .partition(|(_, delivery)| selection.includes(message_id(delivery).unwrap_or("")));

    let mut confirms = Vec::with_capacity(chosen.len());
    for (_, delivery) in &chosen {
        confirms.push(
            session
                .publish(&queue, &delivery.data, delivery.properties.clone())
                .await,
        );
    }
    let mut table = table(["MESSAGE ID", "RESULT"]);
    let (mut replayed, mut failed) = (0, 0);
    let mut found = BTreeSet::new();
    for ((position, delivery), confirm) in chosen.into_iter().zip(confirms) {
        let id = message_id(&delivery).unwrap_or("(none)").to_owned();
        found.insert(id.clone());
        match confirmed(confirm).await {
            Ok(()) => {
                settled(delivery.acker.ack(BasicAckOptions::default()).await).map_err(|err| {
                    format!(
                        "{id} was replayed to {queue} but could not be removed from \
                         {dead_letter_queue} ({err}): it is in both now, which stores it once"
                    )
                })?;
                replayed += 1;
                table.add_row([id, format!("replayed to {queue}")]);
            }
            Err(problem) => {
                failed += 1;
                table.add_row([id, format!("kept in {dead_letter_queue}: {problem}")]);
                kept.push((position, delivery));
            }
        }
    }
    kept.sort_by_key(|(position, _)| *position);
    let left = kept.len();
    session
        .give_back(kept.into_iter().map(|(_, delivery)| delivery).collect())
        .await?;

    if replayed + failed > 0 {
        println!("{table}");
    }
    println!("{replayed} message(s) replayed to {queue}; {left} left in {dead_letter_queue}");
    let missing: Vec<&String> = match selection {
        Selection::All => Vec::new(),
        Selection::Ids(ids) => ids.iter().filter(|id| !found.contains(*id)).collect(),
    };
    if failed > 0 {
        return Ok(ExitCode::FAILURE);
    }
    if !missing.is_empty() {
        let missing: Vec<&str> = missing.iter().map(|id| id.as_str()).collect();
        eprintln!("not in {dead_letter_queue}: {}", missing.join(", "));
        return Ok(ExitCode::from(NOT_FOUND));
    }
    Ok(ExitCode::SUCCESS)
}

/// A table in Markdown layout: readable in a terminal, and pasted as it is into a ticket.
fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::ASCII_MARKDOWN).set_header(header);
    table
}

fn message_id(delivery: &Delivery) -> Option<&str> {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map(ShortString::as_str)
}

/// The order a body holds, if it is one, and why billing-app refused it.
fn explain(body: &[u8], deaths: &Deaths) -> (String, String) {
    match crate::consumer::decode(body) {
        Err(reason) => ("-".to_owned(), reason),
        Ok(order) => {
            let summary = format!(
                "user {}, {} item(s), {}",
                order.user_id, order.number_of_items, order.total_amount
            );
            let reason = match deaths.last_reason() {
                Some("rejected") => "a valid order that the database refused as data \
                                     (SQLSTATE class 22 or 23); billing-app's log line \
                                     \"dead-lettering a message that can never be stored\" \
                                     with this message id names the error"
                    .to_owned(),
                Some("delivery_limit") => format!(
                    "a valid order that RabbitMQ gave up on after {DELIVERY_LIMIT} failed \
                     deliveries: consumers stopped or crashed while holding it"
                ),
                Some(other) => format!("a valid order, dead-lettered by RabbitMQ ({other})"),
                None => "a valid order, published straight to the dead-letter queue \
                         (no x-death header)"
                    .to_owned(),
            };
            (summary, reason)
        }
    }
}

/// A message's `x-death` records, newest first (as RabbitMQ keeps them).
struct Deaths(Vec<Death>);

struct Death {
    reason: String,
    count: u64,
    time: Option<u64>,
}

impl Deaths {
    fn of(properties: &BasicProperties) -> Self {
        let records = header(properties, "x-death").and_then(|value| match value {
            AMQPValue::FieldArray(records) => Some(records.as_slice()),
            _ => None,
        });
        let deaths = records
            .unwrap_or_default()
            .iter()
            .filter_map(|record| match record {
                AMQPValue::FieldTable(record) => Some(Death {
                    reason: text(record.inner().get("reason")).unwrap_or_default(),
                    count: number(record.inner().get("count")).unwrap_or(1),
                    time: match record.inner().get("time") {
                        Some(AMQPValue::Timestamp(time)) => Some(*time),
                        other => number(other),
                    },
                }),
                _ => None,
            })
            .collect();
        Self(deaths)
    }

    /// How often the message was dead-lettered, all queues and reasons together.
    fn total(&self) -> u64 {
        self.0.iter().map(|death| death.count).sum()
    }

    fn last_reason(&self) -> Option<&str> {
        self.0.first().map(|death| death.reason.as_str())
    }

    fn last_time(&self) -> Option<String> {
        let seconds = self.0.iter().filter_map(|death| death.time).max()?;
        let time = chrono::DateTime::from_timestamp(i64::try_from(seconds).ok()?, 0)?;
        Some(time.format("%Y-%m-%d %H:%M:%S").to_string())
    }
}

fn header<'a>(properties: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(key)
}

fn text(value: Option<&AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

fn number(value: Option<&AMQPValue>) -> Option<u64> {
    match *value? {
        AMQPValue::ShortShortUInt(n) => Some(n.into()),
        AMQPValue::ShortUInt(n) => Some(n.into()),
        AMQPValue::LongUInt(n) => Some(n.into()),
        AMQPValue::ShortShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

/// A connection with one confirm-mode channel.
struct Session {
    connection: Connection,
    channel: Channel,
    topology: Topology,
}

impl Session {
    async fn open(broker: &BrokerSettings) -> Result<Self, String> {
        let unreachable = |err: lapin::Error| format!("cannot use RabbitMQ ({broker:?}): {err}");
        let connection = amqp::connect(broker, "billing-app dead-letters")
            .await
            .map_err(unreachable)?;
        let channel = connection.create_channel().await.map_err(unreachable)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unreachable)?;
        Ok(Self {
            connection,
            channel,
            topology: broker.topology(),
        })
    }

    async fn close(self) {
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connection.close(200, "done".into()).await;
    }

    /// Takes every message ready in the dead-letter queue now, in order, holding each
    /// unacknowledged. Messages dead-lettered meanwhile are left for the next run, so the
    /// command ends however fast new ones arrive.
    async fn take_all(&self) -> Result<Vec<Delivery>, String> {
        let queue = self.topology.dead_letter_queue();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let ready = self
            .channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
            .map_err(|err| {
                format!(
                    "no queue {queue} ({err}); billing-app and api-gateway declare it when \
                     they first connect to RabbitMQ"
                )
            })?
            .message_count();
        let mut held = Vec::with_capacity(ready as usize);
        while held.len() < ready as usize {
            let message = self
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(|err| format!("cannot read {queue}: {err}"))?;
            match message {
                Some(message) => held.push(message.delivery),
                None => break,
            }
        }
        Ok(held)
    }

    /// Puts `held` back at the head of the dead-letter queue in their order, renewing those
    /// near the delivery limit (see the module's documentation).
    async fn give_back(&self, held: Vec<Delivery>) -> Result<(), String> {
        let queue = self.topology.dead_letter_queue();
        let returned = |err| format!("cannot return a message to {queue}: {err}");
        for delivery in held {
            let failed_deliveries = number(header(&delivery.properties, DELIVERY_COUNT));
            if failed_deliveries.is_some_and(|count| count >= DELIVERY_LIMIT as u64 / 2)
                && self.renew(&delivery).await.is_ok()
            {
                continue;
            }
            let back = BasicNackOptions {
                requeue: true,
                multiple: false,
            };
            settled(delivery.acker.nack(back).await).map_err(returned)?;
        }
        Ok(())
    }

    /// Replaces a message by a fresh copy at the end of the dead-letter queue.
    async fn renew(&self, delivery: &Delivery) -> Result<(), String> {
        let queue = self.topology.dead_letter_queue();
        let mut headers = delivery
            .properties
            .headers()
            .as_ref()
            .map(|headers| headers.inner().clone())
            .unwrap_or_default();
        headers.remove(DELIVERY_COUNT);
        let properties = delivery
            .properties
            .clone()
            .with_headers(FieldTable::from(headers));
        confirmed(self.publish(&queue, &delivery.data, properties).await).await?;
        settled(delivery.acker.ack(BasicAckOptions::default()).await)
    }

    /// Publishes to a queue through the default exchange, as the gateway does; the confirm
    /// is awaited by [`confirmed`].
    async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> lapin::Result<lapin::PublisherConfirm> {
        let options = BasicPublishOptions {
            // An unroutable message (the queue is gone) comes back instead of vanishing.
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        self.channel
            .basic_publish("".into(), queue.into(), options, body, properties)
            .await
    }
}

/// Whether the broker took responsibility for a publish: acknowledged, and not returned.
async fn confirmed(published: lapin::Result<lapin::PublisherConfirm>) -> Result<(), String> {
    match published.map_err(|err| err.to_string())?.await {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(Confirmation::Ack(Some(_))) => Err("the queue does not exist".to_owned()),
        Ok(Confirmation::Nack(_) | Confirmation::NotRequested) => {
            Err("the broker refused it".to_owned())
        }
        Err(err) => Err(err.to_string()),
    }
}

/// An ack or nack that lapin did not send means the channel is gone.
fn settled(sent: lapin::Result<bool>) -> Result<(), String> {
    match sent {
        Ok(true) => Ok(()),
        Ok(false) => Err("the channel is closed".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_command_line_names_what_to_do() {
        assert_eq!(parse(&args("list")), Ok(Action::List));
        assert_eq!(
            parse(&args("replay --all")),
            Ok(Action::Replay(Selection::All))
        );
        assert_eq!(
            parse(&args("replay a b a")),
            Ok(Action::Replay(Selection::Ids(
                ["a".to_owned(), "b".to_owned()].into()
            )))
        );
        for wrong in [
            "",
            "replay",
            "replay a --all",
            "replay --all a",
            "list x",
            "show",
        ] {
            assert!(parse(&args(wrong)).is_err(), "{wrong:?}");
        }
    }
}
