//! Order ids, and what the `Idempotency-Key` header makes of them.
//!
//! An order id is a UUIDv8 (RFC 9562's custom layout) in two halves: the first half stands for
//! the key the client sent (a fresh random one when it sent none), the second half is a
//! fingerprint of the order itself (user, number of items, amount). billing-app stores an id
//! once, so:
//!
//! - the same key with the same order is the same id: a retry is stored once;
//! - the same key with a different order is a different id: both orders are stored, neither
//!   silently dropped, and no key can overwrite or hide an order with other content;
//! - an order id sent back as the key, with the same order, is that same id: so a client told
//!   "may still be stored" can retry with `Idempotency-Key: <order_id>`.
//!
//! This scopes the key to the order's content instead of refusing a reused key with 422, as
//! the IETF idempotency-key draft suggests: refusing needs to know, when the request comes in,
//! which bodies a key was used with, and the gateway only publishes: the first order may still
//! be waiting in the queue.

use common::order::Order;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The id of `order`, given the client's `Idempotency-Key` (or none).
pub fn for_order(key: Option<Uuid>, order: &Order) -> Uuid {
    let key = key.unwrap_or_else(Uuid::new_v4);
    let fingerprint = half(&[
        b"order",
        order.user_id.to_string().as_bytes(),
        order.number_of_items.to_string().as_bytes(),
        // 250 and 250.00 are the same amount.
        order.total_amount.normalize().to_string().as_bytes(),
    ]);
    let as_given = id(half_of(&key, 0), fingerprint);
    if as_given == key {
        // The key is this order's own id: a retry after a 503.
        return as_given;
    }
    id(half(&[b"key", key.as_bytes()]), fingerprint)
}

fn id(first: [u8; 8], second: [u8; 8]) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&first);
    bytes[8..].copy_from_slice(&second);
    Uuid::new_v8(bytes)
}

fn half_of(uuid: &Uuid, start: usize) -> [u8; 8] {
    let mut half = [0u8; 8];
    half.copy_from_slice(&uuid.as_bytes()[start..start + 8]);
    half
}

/// The first 8 bytes of the SHA-256 of `parts`, each ended by a NUL so that no two lists of
/// parts hash alike.
fn half(parts: &[&[u8]]) -> [u8; 8] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
        hasher.update([0]);
    }
    let digest = hasher.finalize();
    let mut half = [0u8; 8];
    half.copy_from_slice(&digest[..8]);
    half
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;

    fn order(user_id: i64, total_amount: Decimal) -> Order {
        Order {
            order_id: Uuid::nil(),
            user_id,
            number_of_items: 2,
            total_amount,
        }
    }

    #[test]
    fn a_key_is_scoped_to_the_order_it_comes_with() {
        let key = Some(Uuid::new_v4());
        let twenty = order(20, Decimal::new(250, 0));
        assert_eq!(for_order(key, &twenty), for_order(key, &twenty));
        assert_eq!(
            for_order(key, &twenty),
            for_order(key, &order(20, Decimal::new(25000, 2))),
            "250 and 250.00 are one amount"
        );
        assert_ne!(
            for_order(key, &twenty),
            for_order(key, &order(21, Decimal::new(250, 0)))
        );
        assert_ne!(
            for_order(key, &twenty),
            for_order(Some(Uuid::new_v4()), &twenty)
        );
        assert_ne!(for_order(None, &twenty), for_order(None, &twenty));
    }

    #[test]
    fn an_order_id_is_its_own_key() {
        let twenty = order(20, Decimal::new(250, 0));
        let id = for_order(None, &twenty);
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(for_order(Some(id), &twenty), id);
        let other = for_order(Some(id), &order(20, Decimal::new(251, 0)));
        assert_ne!(
            other, id,
            "another order under an existing id gets an id of its own"
        );
    }
}
