//! The order: what `POST /api/billing` accepts, the message on `billing_queue`, and the rules
//! both the gateway (before publishing) and billing-app (before storing) enforce.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Largest `total_amount`: what the `NUMERIC(12, 2)` column holds.
pub const MAX_TOTAL_AMOUNT: &str = "9999999999.99";

/// A validated order: the JSON body of a message on `billing_queue`.
///
/// `total_amount` travels as a string (`"250.00"`) so no float ever touches money.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: Uuid,
    pub user_id: i64,
    pub number_of_items: i32,
    #[serde(with = "rust_decimal::serde::str")]
    pub total_amount: Decimal,
}

/// A field that breaks a rule. Its `Display` is the message returned to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct InvalidOrder {
    pub field: &'static str,
    pub problem: String,
}

impl InvalidOrder {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

impl Order {
    /// Builds an order from a request body as users send it: each field a JSON number or a
    /// string holding one (`{"user_id": "20", "number_of_items": "99", "total_amount": "250"}`).
    /// Unknown fields are ignored.
    pub fn from_request(order_id: Uuid, body: &Value) -> Result<Self, InvalidOrder> {
        let Value::Object(fields) = body else {
            return Err(InvalidOrder::new("body", "must be a JSON object"));
        };
        let order = Self {
            order_id,
            user_id: whole_number(fields.get("user_id"), "user_id")?,
            number_of_items: whole_number(fields.get("number_of_items"), "number_of_items")?,
            total_amount: amount(fields.get("total_amount"), "total_amount")?,
        };
        order.validate()?;
        Ok(order)
    }

    /// Checks the ranges: `user_id` >= 1, `number_of_items` >= 1, `total_amount` between 0 and
    /// [`MAX_TOTAL_AMOUNT`] with at most 2 decimals. billing-app re-checks every message,
    /// since anything can be published to a queue.
    pub fn validate(&self) -> Result<(), InvalidOrder> {
        if self.user_id < 1 {
            return Err(InvalidOrder::new("user_id", "must be at least 1"));
        }
        if self.number_of_items < 1 {
            return Err(InvalidOrder::new("number_of_items", "must be at least 1"));
        }
        let amount = self.total_amount;
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(InvalidOrder::new("total_amount", "must not be negative"));
        }
        if amount.normalize().scale() > 2 {
            return Err(InvalidOrder::new(
                "total_amount",
                "must have at most 2 decimals",
            ));
        }
        if amount > max_total_amount() {
            return Err(InvalidOrder::new(
                "total_amount",
                format!("must be at most {MAX_TOTAL_AMOUNT}"),
            ));
        }
        Ok(())
    }
}

fn max_total_amount() -> Decimal {
    Decimal::from_str(MAX_TOTAL_AMOUNT).unwrap_or(Decimal::MAX)
}

/// The text of a number given as a JSON number or as a string.
fn number_text(value: Option<&Value>, field: &'static str) -> Result<String, InvalidOrder> {
    match value {
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(InvalidOrder::new(field, "is required")),
        Some(_) => Err(InvalidOrder::new(
            field,
            "must be a number, or a string holding one",
        )),
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Digits with an optional fraction: no exponent, sign or spaces, so the value is exact.
fn is_plain_decimal(s: &str) -> bool {
    match s.split_once('.') {
        Some((whole, fraction)) => is_digits(whole) && is_digits(fraction),
        None => is_digits(s),
    }
}

fn whole_number<T: TryFrom<i64>>(
    value: Option<&Value>,
    field: &'static str,
) -> Result<T, InvalidOrder> {
    let text = number_text(value, field)?;
    // Plain digits only: "1e3", "20.0" and " 20" are not what a client means by a count or id.
    if !is_digits(text.strip_prefix('-').unwrap_or(&text)) {
        return Err(InvalidOrder::new(
            field,
            format!("must be a whole number, got {text:?}"),
        ));
    }
    text.parse::<i64>()
        .ok()
        .and_then(|wide| T::try_from(wide).ok())
        .ok_or_else(|| InvalidOrder::new(field, "is too large"))
}

fn amount(value: Option<&Value>, field: &'static str) -> Result<Decimal, InvalidOrder> {
    let text = number_text(value, field)?;
    if text.strip_prefix('-').is_some_and(is_plain_decimal) {
        return Err(InvalidOrder::new(field, "must not be negative"));
    }
    if !is_plain_decimal(&text) {
        return Err(InvalidOrder::new(
            field,
            format!("must be a decimal number such as 250 or 19.99, got {text:?}"),
        ));
    }
    // Counted as written: "1.000" has three decimals. Beyond the rule itself, this keeps a
    // long run of trailing zeros from failing the exact parse below under another name.
    if text
        .split_once('.')
        .is_some_and(|(_, fraction)| fraction.len() > 2)
    {
        return Err(InvalidOrder::new(field, "must have at most 2 decimals"));
    }
    // Only absurdly long numbers fail here; `validate` reports every other range problem.
    Decimal::from_str_exact(&text)
        .map_err(|_| InvalidOrder::new(field, format!("must be at most {MAX_TOTAL_AMOUNT}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<Order, InvalidOrder> {
        Order::from_request(Uuid::nil(), &body)
    }

    #[test]
    fn strings_and_numbers_are_both_accepted() {
        let from_strings =
            parse(json!({"user_id": "20", "number_of_items": "99", "total_amount": "250"}));
        let from_numbers =
            parse(json!({"user_id": 20, "number_of_items": 99, "total_amount": 250}));
        assert_eq!(from_strings, from_numbers);
        let order = from_strings.unwrap();
        assert_eq!((order.user_id, order.number_of_items), (20, 99));
        assert_eq!(order.total_amount, Decimal::from(250));
        assert_eq!(
            parse(json!({"user_id": 1, "number_of_items": 1, "total_amount": 19.99}))
                .unwrap()
                .total_amount,
            Decimal::from_str("19.99").unwrap()
        );
    }

    #[test]
    fn the_message_carries_the_amount_as_an_exact_string() {
        let order =
            parse(json!({"user_id": "20", "number_of_items": "99", "total_amount": "250.50"}))
                .unwrap();
        let message = serde_json::to_value(&order).unwrap();
        assert_eq!(message["total_amount"], "250.50");
        assert_eq!(serde_json::from_value::<Order>(message).unwrap(), order);
    }

    #[test]
    fn every_rule_names_its_field() {
        let cases = [
            (json!([]), "body"),
            (json!({"number_of_items": 1, "total_amount": 1}), "user_id"),
            (
                json!({"user_id": 0, "number_of_items": 1, "total_amount": 1}),
                "user_id",
            ),
            (
                json!({"user_id": -3, "number_of_items": 1, "total_amount": 1}),
                "user_id",
            ),
            (
                json!({"user_id": "abc", "number_of_items": 1, "total_amount": 1}),
                "user_id",
            ),
            (
                json!({"user_id": 1.5, "number_of_items": 1, "total_amount": 1}),
                "user_id",
            ),
            (
                json!({"user_id": true, "number_of_items": 1, "total_amount": 1}),
                "user_id",
            ),
            (
                json!({"user_id": "1e3", "number_of_items": 1, "total_amount": 1}),
                "user_id",
            ),
            (
                json!({"user_id": "99999999999999999999", "number_of_items": 1, "total_amount": 1}),
                "user_id",
            ),
            (
                json!({"user_id": 1, "number_of_items": 0, "total_amount": 1}),
                "number_of_items",
            ),
            (
                json!({"user_id": 1, "number_of_items": 3000000000u64, "total_amount": 1}),
                "number_of_items",
            ),
            (
                json!({"user_id": 1, "number_of_items": null, "total_amount": 1}),
                "number_of_items",
            ),
            (json!({"user_id": 1, "number_of_items": 1}), "total_amount"),
            (
                json!({"user_id": 1, "number_of_items": 1, "total_amount": "-1"}),
                "total_amount",
            ),
            (
                json!({"user_id": 1, "number_of_items": 1, "total_amount": -0.5}),
                "total_amount",
            ),
            (
                json!({"user_id": 1, "number_of_items": 1, "total_amount": "1.234"}),
                "total_amount",
            ),
            (
                json!({"user_id": 1, "number_of_items": 1, "total_amount": "1e2"}),
                "total_amount",
            ),
            (
                json!({"user_id": 1, "number_of_items": 1, "total_amount": "NaN"}),
                "total_amount",
            ),
            (
                json!({"user_id": 1, "number_of_items": 1, "total_amount": ""}),
                "total_amount",
            ),
            (
                json!({"user_id": 1, "number_of_items": 1, "total_amount": "5."}),
                "total_amount",
            ),
            (
                json!({"user_id": 1, "number_of_items": 1, "total_amount": "10000000000"}),
                "total_amount",
            ),
            (
                json!({"user_id": 1, "number_of_items": 1, "total_amount": {}}),
                "total_amount",
            ),
        ];
        for (body, field) in cases {
            let err = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.field, field, "{body}: {err}");
        }
    }

    #[test]
    fn bounds_are_inclusive() {
        let order = parse(json!({
            "user_id": i64::MAX.to_string(),
            "number_of_items": i32::MAX,
            "total_amount": MAX_TOTAL_AMOUNT,
        }))
        .unwrap();
        assert_eq!(order.total_amount.to_string(), MAX_TOTAL_AMOUNT);
        assert!(parse(json!({"user_id": 1, "number_of_items": 1, "total_amount": "0"})).is_ok());
        assert!(parse(json!({"user_id": 1, "number_of_items": 1, "total_amount": "1.50"})).is_ok());
    }

    #[test]
    fn more_than_two_written_decimals_are_refused_as_such() {
        for text in ["1.000", "250.500", "1.0000000000000000000000000000000000"] {
            let body = json!({"user_id": 1, "number_of_items": 1, "total_amount": text});
            let err = parse(body).expect_err(text);
            assert_eq!(err.to_string(), "total_amount must have at most 2 decimals");
        }
    }

    #[test]
    fn a_message_breaking_a_rule_fails_validation() {
        let mut order =
            parse(json!({"user_id": 1, "number_of_items": 1, "total_amount": 1})).unwrap();
        order.number_of_items = -5;
        assert_eq!(order.validate().unwrap_err().field, "number_of_items");
    }
}
