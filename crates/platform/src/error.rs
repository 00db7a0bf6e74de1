//! The response envelope and the one error type every handler returns.
//!
//! Success: `{"success":true,"data":…,"meta":…}`; failure:
//! `{"success":false,"error":{"code":"…","message":"…","details":[…]}}`.
//! The mapping from error to status code lives here and nowhere else.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::db::DbError;
use crate::pagination::{CursorMeta, PageMeta};

/// One invalid field of a request, named as the client sent it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    details: &'a [FieldError],
}

#[derive(Debug, Serialize)]
struct Envelope<'a, T> {
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a Meta>,
}

/// The `meta` of a list: numbered pages, or keyset pages that go on from a cursor.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Meta {
    Page(PageMeta),
    Cursor(CursorMeta),
}

/// A successful answer: status, `data` and, for lists, `meta`.
#[derive(Debug)]
pub struct ApiResponse<T> {
    status: StatusCode,
    data: T,
    meta: Option<Meta>,
}

impl<T: Serialize> ApiResponse<T> {
    /// 200 with `data`.
    pub fn ok(data: T) -> Self {
        Self {
            status: StatusCode::OK,
            data,
            meta: None,
        }
    }

    /// 201 with `data`.
    pub fn created(data: T) -> Self {
        Self {
            status: StatusCode::CREATED,
            data,
            meta: None,
        }
    }

    /// 200 with one page of `data` and its `meta`.
    pub fn page(data: T, meta: PageMeta) -> Self {
        Self {
            status: StatusCode::OK,
            data,
            meta: Some(Meta::Page(meta)),
        }
    }

    /// 200 with one keyset page of `data` and the cursor of the next, if any.
    pub fn cursor_page(data: T, meta: CursorMeta) -> Self {
        Self {
            status: StatusCode::OK,
            data,
            meta: Some(Meta::Cursor(meta)),
        }
    }
}

impl<T: Serialize> ApiResponse<T> {
    /// The status and the exact bytes [`IntoResponse`] sends (an idempotency
    /// key keeps them for replay).
    pub fn to_bytes(&self) -> (StatusCode, Vec<u8>) {
        (
            self.status,
            json_bytes(&self.envelope()).unwrap_or_default(),
        )
    }

    fn envelope(&self) -> Envelope<'_, T> {
        Envelope {
            success: true,
            data: Some(&self.data),
            error: None,
            meta: self.meta.as_ref(),
        }
    }
}

impl<T: Serialize> IntoResponse for ApiResponse<T> {
    fn into_response(self) -> Response {
        json_response(self.status, &self.envelope())
    }
}

/// What a handler returns: a successful answer or an error, both in the envelope.
pub type ApiResult<T> = Result<ApiResponse<T>, ApiError>;

/// Every way a request can fail. The doc comment of each variant states its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 VALIDATION_ERROR: the request is well-formed but a field breaks a rule.
    #[error("{message}")]
    Validation {
        message: String,
        details: Vec<FieldError>,
    },
    /// 400 BAD_REQUEST: the request cannot be read (malformed JSON, bad id, …).
    #[error("{0}")]
    BadRequest(String),
    /// 401 UNAUTHORIZED with `WWW-Authenticate: Bearer` (RFC 6750): no token, or
    /// one that is not valid (then with `error="invalid_token"`).
    #[error("{message}")]
    Unauthorized {
        message: String,
        invalid_token: bool,
    },
    /// 403 FORBIDDEN: a valid token without the right for this operation.
    #[error("{0}")]
    Forbidden(String),
    /// 404 NOT_FOUND
    #[error("{0}")]
    NotFound(String),
    /// 405 METHOD_NOT_ALLOWED
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409 CONFLICT
    #[error("{0}")]
    Conflict(String),
    /// 413 PAYLOAD_TOO_LARGE
    #[error("request body is larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    /// 415 UNSUPPORTED_MEDIA_TYPE
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 UNPROCESSABLE_ENTITY: well-formed, but cannot be done as asked (an
    /// `Idempotency-Key` reused for a different request).
    #[error("{0}")]
    UnprocessableEntity(String),
    /// 429 RATE_LIMIT_EXCEEDED, with a `Retry-After` header.
    #[error("rate limit exceeded, retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// 503 SERVICE_UNAVAILABLE: a dependency (timeout budget, another service) cannot serve now.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// 503 SERVICE_UNAVAILABLE when the database cannot serve now; 500 INTERNAL_ERROR
    /// for any other database error a store did not map (a bug).
    #[error(transparent)]
    Database(#[from] DbError),
    /// 500 INTERNAL_ERROR: a bug or an unexpected failure; the details go to the log only.
    #[error("internal error: {0}")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 400 VALIDATION_ERROR naming every invalid field.
    pub fn validation(details: Vec<FieldError>) -> Self {
        let message = details
            .iter()
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self::Validation {
            message: format!("invalid request: {message}"),
            details,
        }
    }

    /// A 400 VALIDATION_ERROR for a single field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Validation { .. } | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UnprocessableEntity(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ServiceUnavailable(_) | Self::Database(DbError::Unavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) | Self::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code of the envelope.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "VALIDATION_ERROR",
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::Unauthorized { .. } => "UNAUTHORIZED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::Conflict(_) => "CONFLICT",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            Self::UnprocessableEntity(_) => "UNPROCESSABLE_ENTITY",
            Self::RateLimited { .. } => "RATE_LIMIT_EXCEEDED",
            Self::ServiceUnavailable(_) | Self::Database(DbError::Unavailable(_)) => {
                "SERVICE_UNAVAILABLE"
            }
            Self::Internal(_) | Self::Database(_) => "INTERNAL_ERROR",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        // The client gets a safe message; the log gets the cause, once.
        let message = match &self {
            Self::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                "internal server error".to_owned()
            }
            Self::Database(cause @ DbError::Unavailable(_)) => {
                tracing::warn!(error = %cause, "service unavailable: database");
                "database is unavailable, retry later".to_owned()
            }
            Self::Database(cause) => {
                tracing::error!(error = %cause, "internal error: database");
                "internal server error".to_owned()
            }
            Self::ServiceUnavailable(reason) => {
                tracing::warn!(reason, "service unavailable");
                reason.clone()
            }
            other => other.to_string(),
        };
        let details = match &self {
            Self::Validation { details, .. } => details.as_slice(),
            _ => &[],
        };
        let envelope: Envelope<'_, ()> = Envelope {
            success: false,
            data: None,
            error: Some(ErrorBody {
                code: self.code(),
                message: &message,
                details,
            }),
            meta: None,
        };
        let mut response = json_response(status, &envelope);
        match self {
            Self::RateLimited { retry_after_secs } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::Unauthorized { invalid_token, .. } => {
                // RFC 6750 section 3.1: no error code when the request had no token.
                let challenge = if invalid_token {
                    "Bearer error=\"invalid_token\""
                } else {
                    "Bearer"
                };
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            // The body was not (all) read: the connection cannot carry another request.
            Self::PayloadTooLarge { .. } => {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// The JSON document, with a newline at the end as shells and line-based tools expect.
fn json_bytes<T: Serialize>(body: &T) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(128);
    if let Err(err) = serde_json::to_writer(&mut bytes, body) {
        tracing::error!(error = %err, "response serialization failed");
        return None;
    }
    bytes.push(b'\n');
    Some(bytes)
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let Some(bytes) = json_bytes(body) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    // Room for what the layers add on the way out (length, request id, CORS'
    // `vary`, `traceparent`, rate-limit headers) in one allocation: built by
    // axum's tuple, the map started with room for one header and grew as the
    // layers added theirs, on every answer (counted with callgrind).
    headers.reserve(RESPONSE_HEADERS);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// How many headers an answer's map has room for from the start.
const RESPONSE_HEADERS: usize = 8;

#[cfg(test)]
mod tests;
