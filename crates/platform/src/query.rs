//! Query strings decoded strictly into typed, validated structs.
//!
//! A list query is one `#[derive(Deserialize, Validate, IntoParams)]` struct: serde
//! reads it, its field types and `validator` rules check it, and utoipa documents
//! it, so parsing and documentation cannot drift. axum's `Query`
//! (serde_urlencoded) is not used underneath because it turns invalid UTF-8 into
//! U+FFFD and lets the last of two equal names win, so a filter would silently run
//! on something the client did not send; here both are a 400 naming the parameter.

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::value::{Error as ValueError, MapDeserializer};
use serde::de::{self, DeserializeOwned, Expected, IntoDeserializer, Visitor};
use validator::Validate;

use crate::error::{ApiError, FieldError};
use crate::pagination::{PageQuery, PageRequest};
use crate::validation::{MAX_ECHO_CHARS, field_errors, truncate};

/// A list endpoint's query: the page and the endpoint's filter `F`, read from one
/// query string. Every bad parameter is named at once, in the order the client
/// gave them.
#[derive(Debug, Clone)]
pub struct ListQuery<F>(pub PageRequest, pub F);

impl<F: DeserializeOwned + Validate> ListQuery<F> {
    /// Reads a raw query string (without the `?`).
    ///
    /// # Errors
    /// 400 naming every bad parameter.
    pub fn from_query(query: &str) -> Result<Self, ApiError> {
        QueryPairs::read(query, |pairs, errors| {
            let page = pairs.decode::<PageQuery>(errors);
            if let Some(PageQuery {
                page: Some(_),
                cursor: Some(_),
                ..
            }) = &page
            {
                errors.push(FieldError::new("cursor", "cannot be combined with page"));
            }
            let filter = pairs.decode::<F>(errors);
            Some(Self(page?.into(), filter?))
        })
    }
}

/// A query without page numbers (a keyset listing, say): the struct `F` alone,
/// read as strictly as [`ListQuery`] reads its filter.
#[derive(Debug, Clone)]
pub struct StrictQuery<F>(pub F);

impl<F: DeserializeOwned + Validate> StrictQuery<F> {
    /// Reads a raw query string (without the `?`).
    ///
    /// # Errors
    /// 400 naming every bad parameter.
    pub fn from_query(query: &str) -> Result<Self, ApiError> {
        QueryPairs::read(query, |pairs, errors| pairs.decode(errors)).map(Self)
    }
}

/// Makes an extractor of a type with a `from_query`: one `FromRequestParts` impl
/// per query type (the orphan rule allows no blanket impl over a local trait).
macro_rules! extract_from_query_string {
    ($query:ident) => {
        impl<S, F> FromRequestParts<S> for $query<F>
        where
            S: Send + Sync,
            F: DeserializeOwned + Validate,
        {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
                Self::from_query(parts.uri.query().unwrap_or(""))
            }
        }
    };
}

extract_from_query_string!(ListQuery);
extract_from_query_string!(StrictQuery);

/// The decoded `name=value` pairs of a query string, each name at most once.
#[derive(Debug, Clone, Default)]
struct QueryPairs(Vec<(String, String)>);

impl QueryPairs {
    fn parse(query: &str) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode_component(raw_name).ok_or_else(|| {
                ApiError::BadRequest("query parameter names must be valid UTF-8".to_owned())
            })?;
            let echoed = truncate(&name, MAX_ECHO_CHARS);
            let value = decode_component(raw_value)
                .ok_or_else(|| ApiError::invalid_field(&echoed, "must be valid UTF-8"))?;
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(ApiError::invalid_field(echoed, "must be given only once"));
            }
            pairs.push((name, value));
        }
        Ok(Self(pairs))
    }

    /// Parses `query` and reads a value out of it with `decode`, which adds an
    /// error per bad parameter: the value only when there was none, otherwise
    /// one 400 naming them all in query order.
    fn read<T>(
        query: &str,
        decode: impl FnOnce(&Self, &mut Vec<FieldError>) -> Option<T>,
    ) -> Result<T, ApiError> {
        let pairs = Self::parse(query)?;
        let mut errors = Vec::new();
        match decode(&pairs, &mut errors) {
            Some(value) if errors.is_empty() => Ok(value),
            _ => Err(pairs.in_query_order(errors)),
        }
    }

    /// Decodes `T`, adding an error per bad field to `errors`. A field that fails
    /// to parse is left out and the rest decoded again, so that one bad value
    /// does not hide the next; `None` when any field was bad.
    fn decode<T: DeserializeOwned + Validate>(&self, errors: &mut Vec<FieldError>) -> Option<T> {
        let mut skipped: Vec<String> = Vec::new();
        loop {
            let remaining = self
                .0
                .iter()
                .filter(|(name, _)| !skipped.contains(name))
                .map(|(name, value)| (name.as_str(), QueryValue(value)));
            let deserializer = MapDeserializer::<_, ValueError>::new(remaining);
            match serde_path_to_error::deserialize::<_, T>(deserializer) {
                Ok(value) => {
                    // The fields that parsed are held to their rules too.
                    if let Err(invalid) = value.validate() {
                        errors.extend(field_errors(&invalid));
                        return None;
                    }
                    return skipped.is_empty().then_some(value);
                }
                Err(err) => {
                    let field = err.path().to_string();
                    errors.push(FieldError::new(&field, err.into_inner().to_string()));
                    if skipped.contains(&field) || !self.0.iter().any(|(n, _)| *n == field) {
                        return None;
                    }
                    skipped.push(field);
                }
            }
        }
    }

    /// One VALIDATION_ERROR naming the fields in the order of the query string.
    fn in_query_order(&self, mut errors: Vec<FieldError>) -> ApiError {
        let position = |field: &str| self.0.iter().position(|(name, _)| name == field);
        errors.sort_by_key(|e| position(&e.field).unwrap_or(usize::MAX));
        ApiError::validation(errors)
    }
}

/// `+` is a space, then percent-decoding; `None` when the bytes are not UTF-8.
fn decode_component(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(Into::into)
}

/// One query value: text that becomes whatever type the field asks for. Numbers
/// and booleans are parsed here, so the message says what was expected and
/// quotes (the start of) what came.
struct QueryValue<'a>(&'a str);

impl<'de> IntoDeserializer<'de, ValueError> for QueryValue<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl QueryValue<'_> {
    fn invalid(&self, expected: &dyn fmt::Display) -> ValueError {
        de::Error::custom(format!(
            "must be {expected}, got {:?}",
            truncate(self.0, 32)
        ))
    }
}

struct ExpectedOf<'a>(&'a dyn Expected);

impl fmt::Display for ExpectedOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> de::Deserializer<'de> for QueryValue<'de> {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_borrowed_str(self.0)
    }

    /// A parameter that is present has a value, even an empty one (which then
    /// fails as a number, or is a blank search).
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            _ => Err(self.invalid(&"true or false")),
        }
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0.parse::<i64>() {
            Ok(number) => visitor.visit_i64(number),
            Err(_) => Err(self.invalid(&ExpectedOf(&visitor))),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor
            .visit_enum(self.0.into_deserializer())
            .map_err(|_: ValueError| self.invalid(&format!("one of {}", variants.join(", "))))
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Validate)]
    struct Filter {
        #[validate(length(max = 3, message = "must be at most 3 characters"))]
        search: Option<String>,
        active: Option<bool>,
        #[serde(rename = "n")]
        number: Option<crate::validation::Int<1, 9>>,
    }

    fn list(query: &str) -> Result<ListQuery<Filter>, ApiError> {
        ListQuery::from_query(query)
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::Validation { details, .. } => details.into_iter().map(|d| d.field).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn query_is_decoded_strictly() {
        let ListQuery(page, filter) = list("search=a+%25&page=2&&n=3&active=false").unwrap();
        assert_eq!((page.page, page.page_size), (2, 10));
        assert_eq!(filter.search.as_deref(), Some("a %"));
        assert_eq!(
            (filter.active, filter.number.map(|n| n.get())),
            (Some(false), Some(3))
        );
        let err = list("search=%FF%FE").unwrap_err();
        assert_eq!(fields(err), ["search"]);
        assert_eq!(list("%FF=1").unwrap_err().code(), "BAD_REQUEST");
        let err = list("page=2&cursor=abc").unwrap_err();
        assert_eq!(fields(err), ["cursor"]);
        let err = list("page=1&page=2").unwrap_err();
        assert!(err.to_string().contains("page"), "{err}");
    }

    #[test]
    fn page_defaults_and_bounds() {
        let ListQuery(page, _) = list("").unwrap();
        assert_eq!((page.page, page.page_size), (1, 10));
        assert_eq!(
            fields(list("page=0&page_size=101").unwrap_err()),
            ["page", "page_size"]
        );
    }

    #[test]
    fn every_bad_parameter_is_named_in_query_order() {
        let err = list("active=maybe&n=10&page=x&search=abcd&page_size=").unwrap_err();
        assert_eq!(fields(err), ["active", "n", "page", "search", "page_size"]);
    }

    #[test]
    fn messages_say_what_was_expected_and_echo_briefly() {
        let err = list("page=abc").unwrap_err().to_string();
        assert!(
            err.contains(r#"page: must be an integer from 1 to 9223372036854775807, got "abc""#),
            "{err}"
        );
        let err = list("active=yes").unwrap_err().to_string();
        assert!(
            err.contains(r#"active: must be true or false, got "yes""#),
            "{err}"
        );
        let err = list(&format!("n={}", "9".repeat(1000)))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn a_strict_query_has_no_page_parameters_of_its_own() {
        let StrictQuery(filter) = StrictQuery::<Filter>::from_query("page=x&n=2").unwrap();
        assert_eq!(filter.number.map(|n| n.get()), Some(2));
        let err = StrictQuery::<Filter>::from_query("n=0&active=1&n=2").unwrap_err();
        assert!(
            err.to_string().contains("n: must be given only once"),
            "{err}"
        );
        let err = StrictQuery::<Filter>::from_query("active=1&n=0").unwrap_err();
        assert_eq!(fields(err), ["active", "n"]);
    }

    #[test]
    fn empty_typed_values_are_errors_and_empty_text_is_kept() {
        assert_eq!(fields(list("page=").unwrap_err()), ["page"]);
        assert_eq!(fields(list("active=").unwrap_err()), ["active"]);
        let ListQuery(_, filter) = list("search=").unwrap();
        assert_eq!(filter.search.as_deref(), Some(""));
    }
}
