//! JSON request bodies, parsed by axum's `Json`, with rejections in our envelope.
//!
//! axum parses (through `serde_path_to_error`) and tells broken syntax from a
//! wrong shape. What it does not do, and this file adds: refuse a declared
//! oversize `Content-Length` before reading, name the offending field (and every
//! offending field, not just the first), and count a well-formed document whose
//! value serde_json files under "syntax" (a number beyond f64, an enum given
//! `null`) as the field's fault. That last check needs the bytes after a failed
//! parse, which `Json`'s own extractor drops, so the body is read here and handed
//! to `Json::from_bytes`; the content-type rule is axum's, restated.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use futures::StreamExt;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::value::RawValue;

use crate::error::{ApiError, FieldError};
use crate::validation::{MAX_ECHO_CHARS, truncate};

/// Largest accepted request body. Our bodies are a few hundred bytes; anything
/// near this is abuse, and refusing it early keeps memory per request bounded.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON object body whose fields hold their own rules (see `validation`).
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(&req)?;
        if let Err(too_large) = refuse_declared_oversize(&req) {
            drain_in_background(req.into_body());
            return Err(too_large);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(Self)
    }
}

/// Parses a JSON object body as the extractor does.
///
/// # Errors
/// 400 BAD_REQUEST for broken JSON, 400 VALIDATION_ERROR naming each wrong field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would accept `["a@b.c","Jo",3]` as a struct (tuple form); our bodies
    // are objects with named fields and nothing else.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::BadRequest("request body is empty".to_owned())),
        Some(b'{') => {}
        Some(_) => return Err(ApiError::invalid_field("body", "must be a JSON object")),
    }
    match decode::<T>(bytes) {
        Ok(value) => Ok(value),
        Err(Rejected::Field(first)) => Err(every_field_error::<T>(bytes, first)),
        Err(Rejected::Syntax(rejection)) => Err(rejection.into()),
    }
}

/// `application/json` or `application/*+json`, as axum's `Json` requires.
fn require_json_content_type(req: &Request) -> Result<(), ApiError> {
    let mime = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(JsonRejection::from(axum::extract::rejection::MissingJsonContentType::default()).into())
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    JsonRejection::from(rejection).into()
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

/// How much of a refused body is still read, for how long in all, and how long
/// a pause in it may be, so that a client that writes its whole body before
/// reading gets the 413 instead of a reset (nginx: `lingering_time`,
/// `lingering_timeout`).
const LINGER_BYTES: usize = 4 * 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_IDLE: Duration = Duration::from_millis(500);

/// A lingering close, as nginx does: closing a connection whose client is still
/// sending makes the kernel answer with a reset, which can destroy our 413 before
/// the client reads it. So the rest of the body is read and discarded, up to
/// [`LINGER_BYTES`] and [`LINGER_TIME`], and while the client keeps sending,
/// while the answer (which says `Connection: close`) goes out; then the
/// connection closes.
fn drain_in_background(body: Body) {
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut read = 0;
        let _ = tokio::time::timeout(LINGER_TIME, async {
            while let Ok(Some(Ok(chunk))) = tokio::time::timeout(LINGER_IDLE, stream.next()).await {
                read += chunk.len();
                if read > LINGER_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMediaType("expected Content-Type: application/json".to_owned())
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge {
                    limit_bytes: MAX_BODY_BYTES,
                }
            }
            JsonRejection::BytesRejection(e) => {
                Self::BadRequest(format!("could not read request body: {e}"))
            }
            other => match serde_error(&other) {
                Some((_, inner)) => Self::BadRequest(format!("malformed JSON: {inner}")),
                None => Self::BadRequest(format!("malformed JSON: {other}")),
            },
        }
    }
}

/// The serde_json error behind a rejection, with the path to the value it is about.
fn serde_error(rejection: &JsonRejection) -> Option<(String, &serde_json::Error)> {
    let mut source = std::error::Error::source(rejection);
    while let Some(cause) = source {
        if let Some(e) = cause.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            return Some((e.path().to_string(), e.inner()));
        }
        if let Some(e) = cause.downcast_ref::<serde_json::Error>() {
            return Some((".".to_owned(), e));
        }
        source = cause.source();
    }
    None
}

/// Why a document did not decode as `T`.
enum Rejected {
    /// A value is wrong; the document may be fine otherwise.
    Field(FieldError),
    /// The document is not JSON.
    Syntax(JsonRejection),
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejected> {
    let rejection = match Json::<T>::from_bytes(bytes) {
        Ok(Json(value)) => return Ok(value),
        Err(rejection) => rejection,
    };
    // serde_json files some errors about well-formed JSON under syntax: a
    // number beyond f64 (`1e400`), an enum given a non-string (`"status": null`
    // is "expected value"). When the whole document parses, the field is wrong.
    let is_data = matches!(rejection, JsonRejection::JsonDataError(_))
        || Json::<IgnoredAny>::from_bytes(bytes).is_ok() && std::str::from_utf8(bytes).is_ok();
    match serde_error(&rejection) {
        Some((path, inner)) if is_data => Err(Rejected::Field(field_error(&path, inner))),
        _ => Err(Rejected::Syntax(rejection)),
    }
}

/// To name every wrong field, not just the first, a failing field is set aside
/// and the rest decoded again, until the remaining fields decode or fail only
/// for fields already named. Only on the error path, and only for documents
/// that are well-formed objects.
fn every_field_error<T: DeserializeOwned>(bytes: &[u8], first: FieldError) -> ApiError {
    let mut details = vec![first];
    if let Ok(mut fields) = serde_json::from_slice::<BTreeMap<String, Box<RawValue>>>(bytes) {
        while let Some(failed) = details.last().map(|d| d.field.clone()) {
            if fields.remove(&failed).is_none() {
                break;
            }
            let rest = serde_json::to_vec(&fields).unwrap_or_default();
            match decode::<T>(&rest) {
                Err(Rejected::Field(next)) if !details.iter().any(|d| d.field == next.field) => {
                    details.push(next);
                }
                _ => break,
            }
        }
    }
    details.sort_by(|a, b| a.field.cmp(&b.field));
    ApiError::validation(details)
}

fn field_error(path: &str, inner: &serde_json::Error) -> FieldError {
    let message = match strip_position(inner) {
        m if m == "expected value" => "has the wrong type".to_owned(),
        m => m,
    };
    // serde quotes the offending input (an unknown key, a wrong-typed string),
    // which may be as long as the body: echo only the start.
    let field = truncate(&field_of(path, &message), MAX_ECHO_CHARS);
    FieldError::new(field, truncate(&message, MAX_ECHO_CHARS))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::Int;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        age: u8,
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::Validation { details, .. } => details.into_iter().map(|d| d.field).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[derive(Debug, Deserialize)]
    struct Numbers {
        n: Int<{ i64::MIN }, { i64::MAX }>,
        m: Option<Int<{ i64::MIN }, { i64::MAX }>>,
    }

    #[test]
    fn integers_accept_integral_floats_only() {
        let parsed: Numbers = parse_json(br#"{"n": 92.0, "m": 3}"#).unwrap();
        assert_eq!((parsed.n.get(), parsed.m.map(Int::get)), (92, Some(3)));
        let parsed: Numbers = parse_json(br#"{"n": -7, "m": null}"#).unwrap();
        assert_eq!((parsed.n.get(), parsed.m), (-7, None));
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
        assert_eq!(fields(err), ["age"]);
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
            assert_eq!(fields(parse_json::<Sample>(body).unwrap_err()), [field]);
        }
    }

    #[test]
    fn every_wrong_field_is_named_at_once() {
        let err = parse_json::<Sample>(br#"{"name":1,"age":"x","y":2}"#).unwrap_err();
        assert_eq!(fields(err), ["age", "name", "y"]);
    }

    #[test]
    fn only_objects_are_accepted_as_bodies() {
        assert!(parse_json::<serde_json::Value>(b"  {}").is_ok());
        assert_eq!(
            parse_json::<Sample>(br#"["a",1]"#).unwrap_err().code(),
            "VALIDATION_ERROR"
        );
        assert_eq!(
            parse_json::<Sample>(b"  ").unwrap_err().code(),
            "BAD_REQUEST"
        );
        let empty = parse_json::<Sample>(b"").unwrap_err();
        assert_eq!(empty.to_string(), "request body is empty");
    }

    #[test]
    fn broken_syntax_and_trailing_garbage_are_bad_requests() {
        for body in [
            &br#"{"name":"#[..],
            br#"{"name":"a","age":1} x"#,
            b"{\xff\xfe}",
            b"{\"name\":\"\xff\",\"age\":1}",
        ] {
            let err = parse_json::<Sample>(body).unwrap_err();
            assert_eq!(err.code(), "BAD_REQUEST", "{body:?}");
        }
    }

    #[test]
    fn duplicate_keys_are_rejected_naming_the_field() {
        let err = parse_json::<Sample>(br#"{"name":"a","age":1,"name":"b"}"#).unwrap_err();
        assert_eq!(fields(err), ["name"]);
    }

    #[test]
    fn numbers_beyond_f64_name_the_field() {
        let err = parse_json::<Sample>(br#"{"name":"a","age":1e400}"#).unwrap_err();
        assert_eq!(fields(err), ["age"]);
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
            assert_eq!(fields(parse_json::<Paint>(body).unwrap_err()), ["color"]);
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
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_json::<serde_json::Value>(deep.as_bytes()).is_err());
        let at_limit = format!("{{\"a\":{}{}}}", "[".repeat(126), "]".repeat(126));
        assert!(parse_json::<serde_json::Value>(at_limit.as_bytes()).is_ok());
        let over_limit = format!("{{\"a\":{}{}}}", "[".repeat(129), "]".repeat(129));
        let err = parse_json::<serde_json::Value>(over_limit.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    #[test]
    fn echoed_input_is_truncated() {
        let body = format!(r#"{{"name":"a","age":"{}"}}"#, "x".repeat(10_000));
        let err = parse_json::<Sample>(body.as_bytes()).unwrap_err();
        assert!(err.to_string().len() < 2 * MAX_ECHO_CHARS, "{err}");
        let body = format!(r#"{{"{}":1}}"#, "k".repeat(10_000));
        let names = fields(parse_json::<Sample>(body.as_bytes()).unwrap_err());
        assert!(
            names.iter().any(|f| f.chars().count() == MAX_ECHO_CHARS),
            "{names:?}"
        );
    }
}
