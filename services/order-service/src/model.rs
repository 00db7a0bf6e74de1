//! The order entity, its status state machine, exact money, and the API types.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use crate::user_client::RemoteUser;
use platform::db::{DbError, Row};
use platform::validation::{Int, Text};

/// A product id: 1..64 characters, no control characters, no surrounding whitespace.
pub type ProductId = Text<1, 64>;

/// Items in one order.
pub type Quantity = Int<1, 1_000_000>;

/// A user id of user-service.
pub type UserId = Int<1, { i64::MAX }>;

/// A row of the `orders` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: i64,
    pub user_id: i64,
    pub product_id: String,
    pub quantity: i32,
    /// Money as integer cents: exact on every backend.
    pub total_price_cents: i64,
    pub status: OrderStatus,
    /// False while user-service could not confirm the user; the verifier settles it.
    pub user_verified: bool,
    /// Why the system changed the status on its own (e.g. "user not found").
    pub status_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub updated_by: Option<String>,
}

impl Order {
    /// The columns [`Order::from_row`] reads, for `SELECT` and `RETURNING`.
    pub const COLUMNS: &str = "id, user_id, product_id, quantity, total_price_cents, status, \
        user_verified, status_reason, created_at, updated_at, deleted_at, created_by, updated_by";

    /// # Errors
    /// When a column is missing, of another type, or the status is not one of
    /// the five (the table's CHECK makes that a schema bug).
    pub fn from_row(row: &Row) -> Result<Self, DbError> {
        let status: String = row.get("status")?;
        Ok(Self {
            id: row.get("id")?,
            user_id: row.get("user_id")?,
            product_id: row.get("product_id")?,
            quantity: row.get("quantity")?,
            total_price_cents: row.get("total_price_cents")?,
            status: status
                .parse()
                .map_err(|()| DbError::Other(format!("unknown order status {status:?}")))?,
            user_verified: row.get("user_verified")?,
            status_reason: row.get("status_reason")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
            deleted_at: row.get("deleted_at")?,
            created_by: row.get("created_by")?,
            updated_by: row.get("updated_by")?,
        })
    }
}

impl Order {
    /// The resource an event about this order names.
    pub fn resource(&self) -> (&'static str, String) {
        ("order", self.id.to_string())
    }

    /// What events say about an order: what the API shows.
    pub fn event_payload(&self) -> serde_json::Value {
        serde_json::to_value(OrderResponse::from(self.clone())).unwrap_or_default()
    }
}

/// Where an order is in its life. Stored as lower-case text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Confirmed,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    /// pending -> confirmed | cancelled; confirmed -> shipped | cancelled;
    /// shipped -> delivered; delivered and cancelled are final.
    pub fn can_become(self, next: Self) -> bool {
        use OrderStatus::{Cancelled, Confirmed, Delivered, Pending, Shipped};
        matches!(
            (self, next),
            (Pending, Confirmed | Cancelled)
                | (Confirmed, Shipped | Cancelled)
                | (Shipped, Delivered)
        )
    }

    /// Statuses from which the system may still cancel an order.
    pub fn cancellable() -> [Self; 2] {
        [Self::Pending, Self::Confirmed]
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or(())
    }
}

/// An amount of money in cents, read from and written as a JSON number (`99.99`).
///
/// Read from the number's literal text (never through `f64`), so `0.1`, `0.2` and
/// `0.3` are exactly 10, 20 and 30 cents; more than two decimals is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Money(pub i64);

impl Money {
    /// Large enough for any order, small enough that `cents / 100` as an `f64`
    /// prints back exactly (fewer than 15 significant digits).
    pub const MAX_CENTS: i64 = 100_000_000_000;

    /// Parses a JSON number literal such as `99.99`, `100` or `1e2`.
    pub fn parse(literal: &str) -> Result<Self, &'static str> {
        let decimal = if literal.contains(['e', 'E']) {
            Decimal::from_scientific(literal)
        } else {
            Decimal::from_str(literal)
        }
        // serde_json has already checked that the literal is a JSON number, so
        // the only numbers Decimal refuses are ones beyond its 28 digits: say so
        // rather than "must be a number" for `1e400` or a 30-digit integer.
        .map_err(|_| "must be at most 1000000000.00 with at most 2 decimal places")?
        .normalize();
        if decimal.is_sign_negative() && !decimal.is_zero() {
            return Err("must not be negative");
        }
        if decimal.scale() > 2 {
            return Err("must have at most 2 decimal places");
        }
        let cents = (decimal * Decimal::ONE_HUNDRED)
            .trunc()
            .mantissa()
            .try_into()
            .map_err(|_| "is too large")?;
        if cents > Self::MAX_CENTS {
            return Err("must be at most 1000000000.00");
        }
        Ok(Self(cents))
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <Box<RawValue>>::deserialize(deserializer)?;
        let literal = raw.get().trim();
        if !literal.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return Err(serde::de::Error::custom("must be a number"));
        }
        Money::parse(literal).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(0))
            .maximum(Some(1_000_000_000))
            .multiple_of(Some(0.01))
            .description(Some(
                "Money, exact to the cent: a JSON number with at most 2 decimals",
            ))
            .examples([serde_json::json!(99.99)])
            .into()
    }
}

impl ToSchema for Money {}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Exact: both operands are exact doubles and IEEE division rounds to the
        // double nearest the true quotient, whose shortest form is the decimal.
        serializer.serialize_f64(self.0 as f64 / 100.0)
    }
}

/// `POST /api/v1/orders`
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    // The rules and their schemas are the field types'. The user must be an
    // existing, active user of user-service.
    /// The buyer; a user may omit it (it is then the caller) and may name only
    /// itself; an admin must name one.
    #[schema(inline)]
    pub user_id: Option<UserId>,
    #[schema(inline)]
    pub product_id: ProductId,
    #[schema(inline)]
    pub quantity: Quantity,
    pub total_price: Money,
}

/// `PUT /api/v1/orders/{id}`
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrderRequest {
    pub status: OrderStatus,
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderResponse {
    pub id: i64,
    pub user_id: i64,
    pub product_id: String,
    pub quantity: i32,
    pub total_price: Money,
    pub status: OrderStatus,
    pub user_verified: bool,
    pub status_reason: Option<String>,
    #[serde(serialize_with = "platform::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "platform::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Who created the order (a token's subject).
    pub created_by: Option<String>,
    /// Who changed it last (a token's subject).
    pub updated_by: Option<String>,
}

impl From<Order> for OrderResponse {
    fn from(order: Order) -> Self {
        Self {
            id: order.id,
            user_id: order.user_id,
            product_id: order.product_id,
            quantity: order.quantity,
            total_price: Money(order.total_price_cents),
            status: order.status,
            user_verified: order.user_verified,
            status_reason: order.status_reason,
            created_at: order.created_at,
            updated_at: order.updated_at,
            created_by: order.created_by,
            updated_by: order.updated_by,
        }
    }
}

/// A single order with its user: `null` when user-service cannot say.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderWithUser {
    #[serde(flatten)]
    pub order: OrderResponse,
    pub user: Option<RemoteUser>,
}

/// The filters of `GET /api/v1/orders` (the page is read beside them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Validate, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    /// Only this user's orders
    #[param(inline)]
    pub user_id: Option<UserId>,
    /// Only orders in this status
    pub status: Option<OrderStatus>,
    /// Only this product (exact match)
    // An exact match on a bound value, with the same rule as on create (no trimming).
    #[param(inline)]
    pub product_id: Option<ProductId>,
}

impl OrderFilter {
    /// The list and filters a cursor is bound to (for a user, its own id,
    /// which the handler sets before this is read).
    pub fn scope(&self) -> String {
        format!(
            "orders|user_id={:?}|status={:?}|product_id={:?}",
            self.user_id.map(platform::validation::Int::get),
            self.status.map(OrderStatus::as_str),
            self.product_id.as_deref().map(String::as_str),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::{Cancelled, Confirmed, Delivered, Pending, Shipped};

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        let allowed = [
            (Pending, Confirmed),
            (Pending, Cancelled),
            (Confirmed, Shipped),
            (Confirmed, Cancelled),
            (Shipped, Delivered),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn money_is_parsed_exactly_from_the_literal() {
        assert_eq!(Money::parse("99.99"), Ok(Money(9999)));
        assert_eq!(Money::parse("0.1"), Ok(Money(10)));
        assert_eq!(Money::parse("0.30"), Ok(Money(30)));
        assert_eq!(Money::parse("100"), Ok(Money(10000)));
        assert_eq!(Money::parse("1e2"), Ok(Money(10000)));
        assert_eq!(Money::parse("1.5E-1"), Ok(Money(15)));
        assert_eq!(Money::parse("0"), Ok(Money(0)));
        assert_eq!(Money::parse("-0.0"), Ok(Money(0)));
        assert!(Money::parse("99.999").is_err());
        assert!(Money::parse("-1").is_err());
        assert!(Money::parse("1e30").is_err());
        assert!(Money::parse("1000000000.01").is_err());
    }

    #[test]
    fn money_prints_back_as_the_same_decimal() {
        for (cents, text) in [
            (9999, "99.99"),
            (10, "0.1"),
            (30, "0.3"),
            (1, "0.01"),
            (10000, "100.0"),
            (Money::MAX_CENTS, "1000000000.0"),
        ] {
            assert_eq!(serde_json::to_string(&Money(cents)).unwrap(), text);
        }
        // Every cent value round-trips through JSON text.
        for cents in (0..100_000).chain(Money::MAX_CENTS - 1000..=Money::MAX_CENTS) {
            let text = serde_json::to_string(&Money(cents)).unwrap();
            assert_eq!(Money::parse(&text), Ok(Money(cents)), "{text}");
        }
    }

    #[test]
    fn money_rejects_strings_and_other_types() {
        assert!(serde_json::from_str::<Money>(r#""9.99""#).is_err());
        assert!(serde_json::from_str::<Money>("true").is_err());
        assert_eq!(serde_json::from_str::<Money>(" 9.99").unwrap(), Money(999));
    }

    #[test]
    fn money_works_through_the_platform_json_parser() {
        let request: CreateOrderRequest = platform::body::parse_json(
            br#"{"user_id":1,"product_id":"P","quantity":2,"total_price":0.3}"#,
        )
        .unwrap();
        assert_eq!(request.total_price, Money(30));
        let err = platform::body::parse_json::<CreateOrderRequest>(
            br#"{"user_id":1,"product_id":"P","quantity":2,"total_price":1.001}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("total_price"), "{err}");
    }
}
