//! Every SQL statement of billing-app.

use chrono::{DateTime, Utc};
use common::db::Failure;
use common::order::Order;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// A stored order, as the read API returns it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct StoredOrder {
    pub order_id: Uuid,
    pub user_id: i64,
    pub number_of_items: i32,
    #[serde(serialize_with = "two_decimals")]
    pub total_amount: Decimal,
    pub created_at: DateTime<Utc>,
}

/// An amount as the `NUMERIC(12,2)` column holds it, always with two decimals: PostgreSQL
/// sends a zero without its scale, which would otherwise read back as `"0"` beside `"250.00"`.
fn two_decimals<S: serde::Serializer>(amount: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    let mut amount = *amount;
    amount.rescale(2);
    serializer.collect_str(&amount)
}

/// Stores `orders` in one statement; an order whose id is already stored is skipped, which is
/// what makes redelivery harmless. Returns how many rows were new.
pub async fn insert_orders(pool: &PgPool, orders: &[Order]) -> sqlx::Result<u64> {
    let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
    let users: Vec<i64> = orders.iter().map(|o| o.user_id).collect();
    let items: Vec<i32> = orders.iter().map(|o| o.number_of_items).collect();
    let amounts: Vec<Decimal> = orders.iter().map(|o| o.total_amount).collect();
    let result = sqlx::query(
        "INSERT INTO orders (id, user_id, number_of_items, total_amount) \
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::integer[], $4::numeric[]) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(ids)
    .bind(users)
    .bind(items)
    .bind(amounts)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Whether the database refused the orders' values themselves (SQLSTATE classes 22 and 23), so
/// that storing the same orders again can never succeed. A duplicate order id is the
/// exception: it is a redelivery racing its twin, which the next attempt's `ON CONFLICT`
/// skips.
pub fn refuses_values(err: &sqlx::Error) -> bool {
    let duplicate_id = matches!(err, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23505") && db.constraint() == Some("orders_pkey"));
    Failure::of(err) == Failure::Data && !duplicate_id
}

/// The newest orders first, optionally of one user.
pub async fn list_orders(
    pool: &PgPool,
    user_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<StoredOrder>> {
    sqlx::query_as(
        "SELECT id AS order_id, user_id, number_of_items, total_amount, created_at FROM orders \
         WHERE $1::bigint IS NULL OR user_id = $1 \
         ORDER BY created_at DESC, id LIMIT $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn find_order(pool: &PgPool, order_id: Uuid) -> sqlx::Result<Option<StoredOrder>> {
    sqlx::query_as(
        "SELECT id AS order_id, user_id, number_of_items, total_amount, created_at FROM orders \
         WHERE id = $1",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::TestDatabase;

    async fn insert(pool: &PgPool, id: Uuid, user_id: i64) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO orders (id, user_id, number_of_items, total_amount) VALUES ($1, $2, 1, 1)",
        )
        .bind(id)
        .bind(user_id)
        .execute(pool)
        .await
        .map(drop)
    }

    #[tokio::test]
    async fn only_values_the_schema_refuses_are_refused_values() {
        let db = TestDatabase::create().await;
        let pool = db.pool().await;
        sqlx::migrate!().run(&pool).await.expect("migrate");
        let id = Uuid::new_v4();
        insert(&pool, id, 1).await.expect("a first insert");

        let broken_check = insert(&pool, Uuid::new_v4(), 0).await.unwrap_err();
        assert!(refuses_values(&broken_check), "{broken_check}");
        let duplicate_id = insert(&pool, id, 1).await.unwrap_err();
        assert!(!refuses_values(&duplicate_id), "{duplicate_id}");

        sqlx::query("ALTER TABLE orders RENAME TO gone")
            .execute(&pool)
            .await
            .unwrap();
        let missing_table = insert(&pool, Uuid::new_v4(), 1).await.unwrap_err();
        assert!(!refuses_values(&missing_table), "{missing_table}");
        pool.close().await;
    }
}
