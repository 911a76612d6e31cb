//! `bench-tool`: what `bench/run.sh` measures the services against, using the same message,
//! the same queue topology and the same table as the services do.
//!
//! - `bench-tool publish QUEUE COUNT WINDOW`: publishes COUNT orders to QUEUE with publisher
//!   confirms, keeping up to WINDOW unconfirmed: the broker's ceiling for confirmed publishing
//!   (also how the drain benchmark fills the queue).
//! - `bench-tool insert DATABASE COUNT BATCH`: inserts COUNT orders into DATABASE's `orders`
//!   table, BATCH rows per statement: the database's ceiling for storing orders.
//! - `bench-tool consume QUEUE COUNT PREFETCH`: takes COUNT messages off QUEUE, acknowledging
//!   them in batches as billing-app does, but storing nothing: the broker's delivery ceiling.
//! - `bench-tool wait-stored DATABASE COUNT`: waits until DATABASE's `orders` table holds COUNT
//!   rows, polling every 10 ms: how long billing-app takes to drain a backlog.
//! - `bench-tool delete-queue QUEUE`: removes QUEUE with its dead-letter queue and exchange.
//!
//! Each prints one line: `<count> <seconds> <per second>`. The broker and the database are the
//! local ones (`RABBITMQ_*` and `BILLING_DB_*` variables, as for the services).

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Instant;

use common::amqp::{self, BrokerSettings};
use common::config::Env;
use common::db::DatabaseSettings;
use common::order::Order;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use rust_decimal::Decimal;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const USAGE: &str =
    "usage: bench-tool publish QUEUE COUNT WINDOW | bench-tool insert DATABASE COUNT BATCH";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| args.get(i).and_then(|a| a.parse::<usize>().ok());
    let outcome = match (
        args.first().map(String::as_str),
        args.get(1),
        number(2),
        number(3),
    ) {
        (Some("publish"), Some(queue), Some(count), Some(window)) => {
            publish(queue, count, window.max(1)).await
        }
        (Some("consume"), Some(queue), Some(count), Some(prefetch)) => {
            consume(queue, count, prefetch.clamp(1, usize::from(u16::MAX))).await
        }
        (Some("insert"), Some(database), Some(count), Some(batch)) => {
            insert(database, count, batch.max(1)).await
        }
        (Some("wait-stored"), Some(database), Some(count), None) => {
            wait_stored(database, count).await
        }
        (Some("delete-queue"), Some(queue), None, None) => delete_queue(queue).await,
        _ => Err(USAGE.to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench-tool: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The orders both tools write: distinct ids, otherwise like the benchmark's POST body.
fn orders(count: usize) -> impl Iterator<Item = Order> {
    (0..count).map(|i| Order {
        order_id: Uuid::new_v4(),
        user_id: 1 + (i % 1000) as i64,
        number_of_items: 1,
        total_amount: Decimal::new(999, 2),
    })
}

fn report(count: usize, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    println!("{count} {seconds:.3} {:.0}", count as f64 / seconds);
}

/// The local broker (`RABBITMQ_*` variables), with `queue` as the order queue.
fn broker_settings(queue: &str) -> Result<BrokerSettings, String> {
    let mut settings = BrokerSettings::from_env(&Env::from_process()).map_err(|e| e.to_string())?;
    settings.queue = queue.to_owned();
    Ok(settings)
}

/// A connection and channel to the local broker, for `queue`.
async fn open_channel(
    queue: &str,
) -> Result<(BrokerSettings, lapin::Connection, lapin::Channel), String> {
    let settings = broker_settings(queue)?;
    let connection = amqp::connect(&settings, "bench-tool")
        .await
        .map_err(|e| e.to_string())?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    Ok((settings, connection, channel))
}

async fn delete_queue(queue: &str) -> Result<(), String> {
    testkit::delete_topology(&broker_settings(queue)?)
        .await
        .map_err(|e| e.to_string())
}

async fn publish(queue: &str, count: usize, window: usize) -> Result<(), String> {
    let (settings, connection, channel) = open_channel(queue).await?;
    settings
        .topology()
        .declare(&channel)
        .await
        .map_err(|e| e.to_string())?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;

    // Built up front: the measurement is the broker's, not serde's.
    let messages: Vec<(Vec<u8>, BasicProperties)> = orders(count)
        .map(|order| {
            let body = serde_json::to_vec(&order).unwrap_or_default();
            (body, amqp::order_properties(&order, "bench"))
        })
        .collect();
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(window);
    for (body, properties) in messages {
        if in_flight.len() == window {
            confirmed(in_flight.pop_front()).await?;
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .map_err(|e| e.to_string())?;
        in_flight.push_back(confirm);
    }
    while let Some(confirm) = in_flight.pop_front() {
        confirmed(Some(confirm)).await?;
    }
    report(count, started);
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

async fn consume(queue: &str, count: usize, prefetch: usize) -> Result<(), String> {
    use futures_util::{FutureExt, StreamExt};
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    let (_, connection, channel) = open_channel(queue).await?;
    channel
        .basic_qos(prefetch as u16, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    // Like billing-app: take what has arrived (up to half the window), ack it in one go.
    let mut taken = 0;
    while taken < count {
        let mut last = match deliveries.next().await {
            Some(Ok(delivery)) => delivery,
            _ => return Err("the consumer stopped".to_owned()),
        };
        taken += 1;
        let mut batch = 1;
        while batch < prefetch / 2 && taken < count {
            match deliveries.next().now_or_never() {
                Some(Some(Ok(delivery))) => {
                    last = delivery;
                    taken += 1;
                    batch += 1;
                }
                _ => break,
            }
        }
        last.acker
            .ack(BasicAckOptions { multiple: true })
            .await
            .map_err(|e| e.to_string())?;
    }
    report(count, started);
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

async fn confirmed(confirm: Option<lapin::PublisherConfirm>) -> Result<(), String> {
    let Some(confirm) = confirm else {
        return Ok(());
    };
    match confirm.await {
        Ok(confirmation) if confirmation.is_ack() => Ok(()),
        Ok(_) => Err("the broker refused a message".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

/// A one-connection pool on the local PostgreSQL's `database`.
async fn database(name: &str) -> Result<sqlx::PgPool, String> {
    let mut settings = DatabaseSettings::from_env(&Env::from_process(), "BILLING", name)
        .map_err(|e| e.to_string())?;
    settings.name = name.to_owned();
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(settings.connect_options())
        .await
        .map_err(|e| e.to_string())
}

async fn wait_stored(name: &str, count: usize) -> Result<(), String> {
    let pool = database(name).await?;
    let started = Instant::now();
    let deadline = std::time::Duration::from_secs(300);
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&pool)
            .await
            .map_err(|e| e.to_string())?;
        if stored as usize >= count {
            break;
        }
        if started.elapsed() > deadline {
            return Err(format!(
                "only {stored} of {count} orders stored after {deadline:?}"
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    report(count, started);
    Ok(())
}

async fn insert(name: &str, count: usize, batch: usize) -> Result<(), String> {
    let pool = database(name).await?;
    let rows: Vec<Order> = orders(count).collect();
    let started = Instant::now();
    for chunk in rows.chunks(batch) {
        let ids: Vec<Uuid> = chunk.iter().map(|o| o.order_id).collect();
        let users: Vec<i64> = chunk.iter().map(|o| o.user_id).collect();
        let items: Vec<i32> = chunk.iter().map(|o| o.number_of_items).collect();
        let amounts: Vec<Decimal> = chunk.iter().map(|o| o.total_amount).collect();
        sqlx::query(
            "INSERT INTO orders (id, user_id, number_of_items, total_amount) \
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::integer[], $4::numeric[])",
        )
        .bind(ids)
        .bind(users)
        .bind(items)
        .bind(amounts)
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    }
    report(count, started);
    pool.close().await;
    Ok(())
}
