//! Values that can only hold what their rule allows, each with its OpenAPI schema,
//! and the conversion of `validator` errors into our field list.
//!
//! A request type whose fields are these types is valid once it deserializes:
//! the rule runs in `Deserialize`, so its error names the field (through the
//! body and query extractors) and no handler can forget to check.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use validator::{ValidationError, ValidationErrors};

use crate::error::{ApiError, FieldError};

/// The OpenAPI `pattern` of [`Text`]: no control characters, no leading or
/// trailing whitespace (the same rule as [`check_text`]).
pub const TEXT_PATTERN: &str =
    r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$";

/// How much of a client's input an error message may quote.
pub const MAX_ECHO_CHARS: usize = 200;

/// Echoed input is cut short so an error message never grows with the attack.
pub fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// The rule for free-text identifiers (names, product ids): `min..=max`
/// characters, no control characters, no leading or trailing whitespace.
///
/// # Errors
/// The message of the first rule `value` breaks.
pub fn check_text(value: &str, min: usize, max: usize) -> Result<(), String> {
    let chars = value.chars().count();
    if !(min..=max).contains(&chars) {
        return Err(format!("must be between {min} and {max} characters"));
    }
    no_control_characters(value).map_err(|e| e.to_string())?;
    if value.trim() != value {
        return Err("must not start or end with whitespace".to_owned());
    }
    Ok(())
}

/// The one control-character rule, as a `validator` custom function.
///
/// # Errors
/// When `value` holds a control character.
pub fn no_control_characters(value: &str) -> Result<(), ValidationError> {
    if value.chars().any(char::is_control) {
        Err(ValidationError::new("control_characters")
            .with_message("must not contain control characters".into()))
    } else {
        Ok(())
    }
}

/// Text of `MIN..=MAX` characters with no control characters and no surrounding
/// whitespace (see [`check_text`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Text<const MIN: usize, const MAX: usize>(String);

impl<const MIN: usize, const MAX: usize> Text<MIN, MAX> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Read-only access to the text; `&String` binds as an SQL parameter on both backends.
impl<const MIN: usize, const MAX: usize> std::ops::Deref for Text<MIN, MAX> {
    type Target = String;

    fn deref(&self) -> &String {
        &self.0
    }
}

impl<const MIN: usize, const MAX: usize> FromStr for Text<MIN, MAX> {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        check_text(value, MIN, MAX).map(|()| Self(value.to_owned()))
    }
}

impl<'de, const MIN: usize, const MAX: usize> Deserialize<'de> for Text<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        check_text(&value, MIN, MAX)
            .map(|()| Self(value))
            .map_err(de::Error::custom)
    }
}

impl<const MIN: usize, const MAX: usize> utoipa::PartialSchema for Text<MIN, MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(MIN))
            .max_length(Some(MAX))
            .pattern(Some(TEXT_PATTERN))
            .description(Some(format!(
                "{MIN} to {MAX} characters; no control characters, no leading or trailing whitespace"
            )))
            .into()
    }
}

impl<const MIN: usize, const MAX: usize> utoipa::ToSchema for Text<MIN, MAX> {}

/// An integer in `MIN..=MAX`. From JSON it also accepts an integral float such
/// as `92.0` (JSON Schema counts it as an integer, and Python's `json.dumps`
/// writes floats so); from a query string, the decimal digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Int<const MIN: i64, const MAX: i64>(i64);

impl<const MIN: i64, const MAX: i64> Int<MIN, MAX> {
    /// # Errors
    /// When `value` is outside `MIN..=MAX`.
    pub fn new(value: i64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&value) {
            Ok(Self(value))
        } else if MAX == i64::MAX {
            Err(format!("must be at least {MIN}"))
        } else {
            Err(format!("must be between {MIN} and {MAX}"))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// The value as an `i32` column. Exact: using it on a type whose bounds do
    /// not fit an `i32` fails to compile.
    pub fn as_i32(self) -> i32 {
        const {
            assert!(MIN >= i32::MIN as i64 && MAX <= i32::MAX as i64);
        }
        self.0 as i32
    }
}

struct IntVisitor<const MIN: i64, const MAX: i64>;

impl<const MIN: i64, const MAX: i64> Visitor<'_> for IntVisitor<MIN, MAX> {
    type Value = Int<MIN, MAX>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer from {MIN} to {MAX}")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Int::new(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v)
            .map_err(|_| E::custom(format!("must be at most {MAX}")))
            .and_then(|v| self.visit_i64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // 2^63 as f64: every integral float below it fits an i64 exactly.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v) {
            self.visit_i64(v as i64)
        } else {
            Err(E::invalid_type(de::Unexpected::Float(v), &self))
        }
    }
}

impl<'de, const MIN: i64, const MAX: i64> Deserialize<'de> for Int<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // serde_json visits whichever number it finds (u64, i64 or f64).
        deserializer.deserialize_i64(IntVisitor)
    }
}

impl<const MIN: i64, const MAX: i64> utoipa::PartialSchema for Int<MIN, MAX> {
    fn schema() -> RefOr<Schema> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(MIN));
        match MAX {
            i64::MAX => schema,
            max => schema.maximum(Some(max)),
        }
        .into()
    }
}

impl<const MIN: i64, const MAX: i64> utoipa::ToSchema for Int<MIN, MAX> {}

/// Turns `validator` errors into our field list, sorted so answers are stable.
pub fn validation_error(errors: &ValidationErrors) -> ApiError {
    let mut details = field_errors(errors);
    details.sort_by(|a, b| a.field.cmp(&b.field));
    ApiError::validation(details)
}

/// One [`FieldError`] per broken rule, in `validator`'s order.
pub fn field_errors(errors: &ValidationErrors) -> Vec<FieldError> {
    errors
        .field_errors()
        .into_iter()
        .flat_map(|(field, errs)| {
            errs.iter().map(move |e| {
                let message = e
                    .message
                    .as_ref()
                    .map_or_else(|| e.code.to_string(), ToString::to_string);
                FieldError::new(field.to_string(), message)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Name = Text<2, 100>;
    type Age = Int<1, 150>;

    #[test]
    fn text_holds_only_what_its_rule_allows() {
        assert!("Jo".parse::<Name>().is_ok());
        assert!("Zoë".parse::<Name>().is_ok());
        assert!("é".repeat(100).parse::<Name>().is_ok(), "counts characters");
        for bad in ["J", " John", "John ", "Jo\u{7}hn", "Jo\u{85}hn"] {
            assert!(bad.parse::<Name>().is_err(), "{bad:?}");
        }
        assert!("x".repeat(101).parse::<Name>().is_err());
    }

    #[test]
    fn ints_accept_integral_floats_and_keep_their_bounds() {
        let age: Age = serde_json::from_str("92.0").unwrap();
        assert_eq!(age.get(), 92);
        assert_eq!(age.as_i32(), 92);
        for bad in [
            "92.5",
            "1e30",
            "\"9\"",
            "0",
            "151",
            "9223372036854775808",
            "null",
        ] {
            assert!(serde_json::from_str::<Age>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<Age>("0").unwrap_err().to_string();
        assert!(err.starts_with("must be between 1 and 150"), "{err}");
        let err = Int::<1, { i64::MAX }>::new(0).unwrap_err();
        assert_eq!(err, "must be at least 1");
    }

    #[test]
    fn schemas_state_the_rules() {
        let schema = serde_json::to_value(<Name as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["minLength"], 2);
        assert_eq!(schema["maxLength"], 100);
        assert_eq!(schema["pattern"], TEXT_PATTERN);
        let schema = serde_json::to_value(<Age as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(
            (schema["minimum"].clone(), schema["maximum"].clone()),
            (1.into(), 150.into())
        );
    }
}
