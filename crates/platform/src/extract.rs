//! Extractors whose rejections speak our envelope instead of axum's plain text.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;
use validator::{Validate, ValidationError, ValidationErrors};

use crate::error::{ApiError, FieldError};

/// Largest accepted request body. Our bodies are a few hundred bytes; anything
/// near this is abuse, and refusing it early keeps memory per request bounded.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body, deserialized and then validated with its `validator` rules.
///
/// Written by hand rather than `axum::Json` because the client must learn *which*
/// field is wrong: serde's error path is kept (via `serde_path_to_error`) and
/// becomes a `VALIDATION_ERROR` naming the field, while broken JSON is a
/// `BAD_REQUEST`, a missing or foreign content type a 415 and an oversized body a 413.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(&req)?;
        refuse_declared_oversize(&req)?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        require_object(&bytes)?;
        let value: T = parse_json(&bytes)?;
        value.validate().map_err(validation_error)?;
        Ok(Self(value))
    }
}

fn require_json_content_type(req: &Request) -> Result<(), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "expected Content-Type: application/json".to_owned(),
        ))
    }
}

/// A `Content-Length` over the limit is refused before a byte is read: otherwise
/// a client declaring a terabyte and sending nothing would hold the request open
/// until the request timeout, for a body we would refuse anyway.
fn refuse_declared_oversize(req: &Request) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_BODY_BYTES as u64 => Err(ApiError::PayloadTooLarge {
            limit_bytes: MAX_BODY_BYTES,
        }),
        _ => Ok(()),
    }
}

/// serde would accept `["a@b.c","Jo",3]` as a struct (tuple form); our bodies are
/// objects with named fields and nothing else.
fn require_object(bytes: &[u8]) -> Result<(), ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(ApiError::BadRequest("request body is empty".to_owned())),
        Some(b'{') => Ok(()),
        Some(_) => Err(ApiError::invalid_field("body", "must be a JSON object")),
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge {
            limit_bytes: MAX_BODY_BYTES,
        }
    } else {
        ApiError::BadRequest(format!("could not read request body: {rejection}"))
    }
}

/// Parses JSON, telling apart broken syntax (400 BAD_REQUEST) from a value of
/// the wrong shape (400 VALIDATION_ERROR naming the field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        // serde_json files some errors about well-formed JSON under syntax: a
        // number beyond f64 (`1e400`), an enum given a non-string (`"status": null`
        // is "expected value"). When the whole document parses, the field is wrong.
        if inner.is_data() || is_well_formed(bytes) {
            let message = match strip_position(&inner) {
                m if m == "expected value" => "has the wrong type".to_owned(),
                m => m,
            };
            // serde quotes the offending input (an unknown key, a wrong-typed
            // string), which may be as long as the body: echo only the start.
            let field = truncate(&field_of(&path, &message), MAX_ECHO_CHARS);
            ApiError::invalid_field(field, truncate(&message, MAX_ECHO_CHARS))
        } else {
            ApiError::BadRequest(format!("malformed JSON: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|err| ApiError::BadRequest(format!("malformed JSON: {err}")))?;
    Ok(value)
}

/// Whether `bytes` is one JSON document, whatever its shape. serde_json skips
/// ignored values iteratively, so this is safe on deeply nested input; it does
/// not check the UTF-8 of skipped strings, hence the explicit check.
fn is_well_formed(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

/// The field a data error is about. serde reports a missing or duplicate field at
/// its parent's path and names it only in the message (`missing field `age``,
/// `duplicate field `email``); an unknown field is already the last segment of the path.
fn field_of(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        (_, Some(name)) if path == name || path.ends_with(&format!(".{name}")) => path.to_owned(),
        (".", Some(name)) => name.to_owned(),
        (_, Some(name)) => format!("{path}.{name}"),
        (".", None) => "body".to_owned(),
        (_, None) => path.to_owned(),
    }
}

/// serde_json appends " at line 1 column 42"; the field name says more.
fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// The rule for free-text identifiers (names, product ids): `min..=max` characters,
/// no control characters, no leading or trailing whitespace. The OpenAPI schemas
/// state the same rule as a `pattern`.
pub fn validate_text(value: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    let chars = value.chars().count();
    if !(min..=max).contains(&chars) {
        return Err(ValidationError::new("length")
            .with_message(format!("must be between {min} and {max} characters").into()));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new("control_characters")
            .with_message("must not contain control characters".into()));
    }
    if value.trim() != value {
        return Err(ValidationError::new("whitespace")
            .with_message("must not start or end with whitespace".into()));
    }
    Ok(())
}

/// Turns `validator` errors into our field list, sorted so answers are stable.
pub fn validation_error(errors: ValidationErrors) -> ApiError {
    let mut details: Vec<FieldError> = errors
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
        .collect();
    details.sort_by(|a, b| a.field.cmp(&b.field));
    ApiError::validation(details)
}

/// Deserializes a JSON integer, also accepting an integral float such as `92.0`:
/// JSON Schema counts it as an integer, and Python's `json.dumps` writes floats so.
/// Use as `#[serde(deserialize_with = "platform::extract::integer")]`.
pub fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(IntegerVisitor)
}

/// [`integer`] for optional fields (`null` or absent is `None`; pair with `#[serde(default)]`).
pub fn optional_integer<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    deserializer.deserialize_option(OptionalIntegerVisitor)
}

struct IntegerVisitor;

impl serde::de::Visitor<'_> for IntegerVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom("must be at most 9223372036854775807"))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
        // 2^63 as f64: every integral float below it fits an i64 exactly.
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if v.fract() == 0.0 && (-LIMIT..LIMIT).contains(&v) {
            Ok(v as i64)
        } else {
            Err(E::invalid_type(serde::de::Unexpected::Float(v), &self))
        }
    }
}

struct OptionalIntegerVisitor;

impl<'de> serde::de::Visitor<'de> for OptionalIntegerVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        integer(d).map(Some)
    }
}

/// A positive 64-bit id from the `{id}` path segment; anything else is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))?;
        match raw.parse::<i64>() {
            Ok(id) if id > 0 => Ok(Self(id)),
            _ => Err(ApiError::BadRequest(format!(
                "invalid id {:?}: must be a positive integer up to {}",
                truncate(&raw, 32),
                i64::MAX
            ))),
        }
    }
}

/// The raw query string as name -> value, for handlers that validate each
/// parameter themselves so that errors can name it.
#[derive(Debug, Clone, Default)]
pub struct QueryParams(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or("")).map(Self)
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs strictly. axum's `Query`
/// (serde_urlencoded) turns invalid UTF-8 into U+FFFD and lets the last of two
/// equal names win, so a filter would silently run on something the client did
/// not send; here both are a 400 naming the parameter.
fn parse_query(query: &str) -> Result<HashMap<String, String>, ApiError> {
    let mut params = HashMap::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode_query_component(raw_name).ok_or_else(|| {
            ApiError::BadRequest("query parameter names must be valid UTF-8".to_owned())
        })?;
        let echoed = truncate(&name, MAX_ECHO_CHARS);
        let value = decode_query_component(raw_value)
            .ok_or_else(|| ApiError::invalid_field(&echoed, "must be valid UTF-8"))?;
        if params.insert(name, value).is_some() {
            return Err(ApiError::invalid_field(echoed, "must be given only once"));
        }
    }
    Ok(params)
}

/// `+` is a space, then percent-decoding; `None` when the bytes are not UTF-8.
fn decode_query_component(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(Into::into)
}

impl QueryParams {
    /// The parameter parsed as `T`, `None` when absent, a 400 naming it otherwise
    /// (an empty value is not a number either).
    pub fn parse<T: std::str::FromStr>(
        &self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, FieldError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(raw) => raw.parse().map(Some).map_err(|_| {
                FieldError::new(
                    name,
                    format!("must be {expected}, got {:?}", truncate(raw, 32)),
                )
            }),
        }
    }

    /// The parameter's raw text, `None` when absent.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The request's `X-Request-ID` (set by the middleware when the client sent none),
/// for propagating to calls the request makes.
#[derive(Debug, Clone, Default)]
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

/// How much of a client's input an error message may quote.
const MAX_ECHO_CHARS: usize = 200;

/// Echoed input is cut short so an error message never grows with the attack.
fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Page number and size as the contract has them: page >= 1, page_size 1..=100,
/// defaults 1 and 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u64,
    pub page_size: u64,
}

impl PageRequest {
    pub const MAX_PAGE_SIZE: u64 = 100;

    /// Reads `page` and `page_size`, collecting a field error for each bad one.
    pub fn from_query(query: &QueryParams, errors: &mut Vec<FieldError>) -> Self {
        // i64: pages are counted in SQL BIGINT like everything else.
        let page = match query.parse::<i64>("page", "an integer from 1 to 9223372036854775807") {
            Ok(Some(page)) if page < 1 => {
                errors.push(FieldError::new("page", "must be at least 1"));
                1
            }
            Ok(page) => page.unwrap_or(1) as u64,
            Err(e) => {
                errors.push(e);
                1
            }
        };
        let page_size = match query.parse::<u64>("page_size", "an integer from 1 to 100") {
            Ok(Some(size)) if !(1..=Self::MAX_PAGE_SIZE).contains(&size) => {
                errors.push(FieldError::new("page_size", "must be between 1 and 100"));
                10
            }
            Ok(size) => size.unwrap_or(10),
            Err(e) => {
                errors.push(e);
                10
            }
        };
        Self { page, page_size }
    }

    /// Rows to skip; capped at the largest SQL BIGINT so an absurd page number
    /// is just an empty page, not a database error.
    pub fn offset(&self) -> u64 {
        (self.page - 1)
            .saturating_mul(self.page_size)
            .min(i64::MAX as u64)
    }

    pub fn meta(&self, total_count: u64) -> crate::error::PageMeta {
        crate::error::PageMeta {
            page: self.page,
            page_size: self.page_size,
            total_pages: total_count.div_ceil(self.page_size),
            total_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        age: u8,
    }

    fn params(pairs: &[(&str, &str)]) -> QueryParams {
        QueryParams(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[derive(Debug, Deserialize)]
    struct Numbers {
        #[serde(deserialize_with = "integer")]
        n: i64,
        #[serde(default, deserialize_with = "optional_integer")]
        m: Option<i64>,
    }

    #[test]
    fn integers_accept_integral_floats_only() {
        let parsed: Numbers = parse_json(br#"{"n": 92.0, "m": 3}"#).unwrap();
        assert_eq!((parsed.n, parsed.m), (92, Some(3)));
        let parsed: Numbers = parse_json(br#"{"n": -7, "m": null}"#).unwrap();
        assert_eq!((parsed.n, parsed.m), (-7, None));
        assert!(parse_json::<Numbers>(br#"{"n": 92}"#).unwrap().m.is_none());
        for bad in [
            &br#"{"n": 92.5}"#[..],
            br#"{"n": 1e30}"#,
            br#"{"n": "9"}"#,
            br#"{"n": 9223372036854775808}"#,
        ] {
            assert_eq!(
                parse_json::<Numbers>(bad).unwrap_err().code(),
                "VALIDATION_ERROR"
            );
        }
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_json::<Sample>(br#"{"name":"a","age":"x"}"#).unwrap_err();
        match err {
            ApiError::Validation { details, .. } => assert_eq!(details[0].field, "age"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_field_is_a_validation_error() {
        let err = parse_json::<Sample>(br#"{"name":"a"}"#).unwrap_err();
        assert_eq!(err.code(), "VALIDATION_ERROR");
        assert!(err.to_string().contains("age"), "{err}");
    }

    #[test]
    fn missing_and_unknown_fields_are_named_in_details() {
        for (body, field) in [
            (&br#"{"name":"a"}"#[..], "age"),
            (br#"{"name":"a","age":1,"x":2}"#, "x"),
        ] {
            match parse_json::<Sample>(body).unwrap_err() {
                ApiError::Validation { details, .. } => assert_eq!(details[0].field, field),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn only_objects_are_accepted_as_bodies() {
        assert!(require_object(b"  {}").is_ok());
        assert_eq!(
            require_object(br#"["a",1]"#).unwrap_err().code(),
            "VALIDATION_ERROR"
        );
        assert_eq!(require_object(b"  ").unwrap_err().code(), "BAD_REQUEST");
    }

    #[test]
    fn broken_syntax_and_trailing_garbage_are_bad_requests() {
        for body in [
            &br#"{"name":"#[..],
            br#"{"name":"a","age":1} x"#,
            b"\xff\xfe",
        ] {
            let err = parse_json::<Sample>(body).unwrap_err();
            assert_eq!(err.code(), "BAD_REQUEST", "{body:?}");
        }
    }

    #[test]
    fn duplicate_keys_are_rejected_naming_the_field() {
        let err = parse_json::<Sample>(br#"{"name":"a","age":1,"name":"b"}"#).unwrap_err();
        match err {
            ApiError::Validation { details, .. } => assert_eq!(details[0].field, "name"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn numbers_beyond_f64_name_the_field() {
        let err = parse_json::<Sample>(br#"{"name":"a","age":1e400}"#).unwrap_err();
        match err {
            ApiError::Validation { details, .. } => assert_eq!(details[0].field, "age"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Color {
        Red,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Paint {
        color: Color,
    }

    #[test]
    fn an_enum_given_a_non_string_names_the_field() {
        for body in [
            &br#"{"color":null}"#[..],
            br#"{"color":1}"#,
            br#"{"color":["red"]}"#,
        ] {
            match parse_json::<Paint>(body).unwrap_err() {
                ApiError::Validation { details, .. } => assert_eq!(details[0].field, "color"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(parse_json::<Paint>(br#"{"color":"red"}"#).is_ok());
        assert_eq!(
            parse_json::<Paint>(br#"{"color":nul"#).unwrap_err().code(),
            "BAD_REQUEST"
        );
    }

    #[test]
    fn nesting_beyond_the_recursion_limit_is_a_400_not_a_crash() {
        // serde_json stops at 128 levels for types that recurse (here `Value`).
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_json::<serde_json::Value>(deep.as_bytes()).is_err());
        let at_limit = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(parse_json::<serde_json::Value>(at_limit.as_bytes()).is_ok());
        let over_limit = format!("{}{}", "[".repeat(129), "]".repeat(129));
        let err = parse_json::<serde_json::Value>(over_limit.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    #[test]
    fn echoed_input_is_truncated() {
        let body = format!(r#"{{"name":"a","age":"{}"}}"#, "x".repeat(10_000));
        let err = parse_json::<Sample>(body.as_bytes()).unwrap_err();
        assert!(err.to_string().len() < 2 * MAX_ECHO_CHARS, "{err}");
        let body = format!(r#"{{"{}":1}}"#, "k".repeat(10_000));
        match parse_json::<Sample>(body.as_bytes()).unwrap_err() {
            ApiError::Validation { details, .. } => {
                assert_eq!(details[0].field.chars().count(), MAX_ECHO_CHARS)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn query_is_decoded_strictly() {
        let params = parse_query("search=a+b%25c&page=2&&flag").unwrap();
        assert_eq!(params["search"], "a b%c");
        assert_eq!(params["page"], "2");
        assert_eq!(params["flag"], "");
        let err = parse_query("search=%FF%FE").unwrap_err();
        assert_eq!(err.code(), "VALIDATION_ERROR");
        assert!(err.to_string().contains("search"), "{err}");
        assert_eq!(parse_query("%FF=1").unwrap_err().code(), "BAD_REQUEST");
        let err = parse_query("page=1&page=2").unwrap_err();
        assert!(err.to_string().contains("page"), "{err}");
    }

    #[test]
    fn page_defaults_and_bounds() {
        let mut errors = Vec::new();
        let page = PageRequest::from_query(&params(&[]), &mut errors);
        assert_eq!((page.page, page.page_size), (1, 10));
        let page =
            PageRequest::from_query(&params(&[("page", "0"), ("page_size", "101")]), &mut errors);
        assert_eq!(errors.len(), 2);
        assert_eq!((page.page, page.page_size), (1, 10));
    }

    #[test]
    fn non_numeric_page_is_named() {
        let mut errors = Vec::new();
        PageRequest::from_query(&params(&[("page", "abc")]), &mut errors);
        assert_eq!(errors[0].field, "page");
    }

    #[test]
    fn meta_rounds_total_pages_up_and_offset_saturates() {
        let page = PageRequest {
            page: 3,
            page_size: 10,
        };
        assert_eq!(page.meta(21).total_pages, 3);
        assert_eq!(page.meta(0).total_pages, 0);
        assert_eq!(page.offset(), 20);
        let huge = PageRequest {
            page: u64::MAX,
            page_size: 100,
        };
        assert_eq!(huge.offset(), i64::MAX as u64);
    }
}
