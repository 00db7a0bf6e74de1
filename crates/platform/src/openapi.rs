//! OpenAPI 3.1 support: the envelope's schemas, the responses and headers every
//! operation shares (added in one place so no handler can forget them), and the
//! `/openapi.json` and `/docs` routes. Swagger UI is vendored into the binary.

use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Required, Type};
use utoipa_swagger_ui::SwaggerUi;

use crate::error::FieldError;
use crate::pagination::{CursorMeta, PageMeta};

/// Every error answer: `{"success":false,"error":{…}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// Human-readable; names the field for validation errors.
    pub message: String,
    /// Present for `VALIDATION_ERROR`: one entry per invalid field.
    #[schema(nullable = false)]
    pub details: Option<Vec<FieldError>>,
}

/// The machine-readable error codes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationError,
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnprocessableEntity,
    RateLimitExceeded,
    ServiceUnavailable,
    InternalError,
}

/// A successful single-item answer: `{"success":true,"data":…}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DataEnvelope<T: ToSchema> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
}

/// A successful page: `{"success":true,"data":[…],"meta":{…}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageEnvelope<T: ToSchema> {
    /// Always `true`.
    pub success: bool,
    pub data: Vec<T>,
    pub meta: PageMeta,
}

/// A successful keyset page: `{"success":true,"data":[…],"meta":{"page_size","next_cursor"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CursorPageEnvelope<T: ToSchema> {
    /// Always `true`.
    pub success: bool,
    pub data: Vec<T>,
    pub meta: CursorMeta,
}

/// The answer of `DELETE`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deleted {
    pub id: i64,
    pub message: String,
}

/// Links each `POST <collection>` 201 answer to the `GET`/`PUT`/`DELETE` operations
/// of `<collection>/{id}`, with `id` taken from `data.id`: clients (and stateful
/// fuzzers) can follow a created resource without guessing ids.
pub fn add_links(spec: &mut OpenApi) {
    let targets: Vec<(String, Vec<(&'static str, String)>)> = spec
        .paths
        .paths
        .iter()
        .filter_map(|(path, item)| {
            let collection = path.strip_suffix("/{id}")?;
            let operations = [
                ("Get", &item.get),
                ("Update", &item.put),
                ("Delete", &item.delete),
            ]
            .into_iter()
            .filter_map(|(verb, op)| Some((verb, op.as_ref()?.operation_id.clone()?)))
            .collect();
            Some((collection.to_owned(), operations))
        })
        .collect();
    for (collection, operations) in targets {
        let Some(created) = spec
            .paths
            .paths
            .get_mut(&collection)
            .and_then(|item| item.post.as_mut())
            .and_then(|post| post.responses.responses.get_mut("201"))
        else {
            continue;
        };
        if let RefOr::T(response) = created {
            for (verb, operation_id) in operations {
                let link = LinkBuilder::new()
                    .operation_id(operation_id)
                    .parameter("id", "$response.body#/data/id")
                    .description(format!("{verb} the created resource"))
                    .build();
                response.links.insert(format!("{verb}Created"), link.into());
            }
        }
    }
}

/// A service's generated document with what every operation shares: the common
/// responses and headers, and the links from each create to its resource.
pub fn finish(mut spec: OpenApi) -> OpenApi {
    add_bearer_security(&mut spec);
    add_common_responses(&mut spec);
    add_links(&mut spec);
    spec
}

/// Declares the `bearer` scheme (a JWT from user-service) and adds 401 (with
/// its `WWW-Authenticate` challenge) and 403 to every operation that declares
/// security, so the handlers only say *that* they need a token.
pub fn add_bearer_security(spec: &mut OpenApi) {
    let scheme = SecurityScheme::Http(
        HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "A token from POST /api/v1/auth/token (clients) or /api/v1/auth/login (users) of user-service",
            ))
            .build(),
    );
    spec.components
        .get_or_insert_with(Default::default)
        .security_schemes
        .insert("bearer".to_owned(), scheme.into());
    for item in spec.paths.paths.values_mut() {
        for operation in
            operations(item).filter(|op| op.security.as_ref().is_some_and(|s| !s.is_empty()))
        {
            let challenge = HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some("`Bearer`, with `error=\"invalid_token\"` when a token was sent but is not valid (RFC 6750)"))
                .build();
            let unauthorized = ResponseBuilder::new()
                .description(
                    "No bearer token, or one that is expired, forged or not for this service",
                )
                .content("application/json", error_content())
                .header("WWW-Authenticate", challenge)
                .build();
            operation
                .responses
                .responses
                .entry("401".to_owned())
                .or_insert_with(|| unauthorized.into());
            add_error(
                operation,
                403,
                "The token is valid but does not grant this operation",
                false,
            );
        }
    }
}

/// The operations of one path (the methods our services use).
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}

fn error_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
        .build()
}

/// Adds what every operation shares: the optional `X-Request-ID` request header,
/// the `X-Request-ID` response header, 429 (with `Retry-After`) and 503 on every
/// API operation, and 413/415 wherever there is a request body.
pub fn add_common_responses(spec: &mut OpenApi) {
    for (path, item) in &mut spec.paths.paths {
        let api = path.starts_with("/api/");
        for operation in operations(item) {
            add_request_id(operation);
            if api {
                add_error(
                    operation,
                    429,
                    "Rate limit exceeded for this client IP",
                    true,
                );
                add_error(
                    operation,
                    503,
                    "Database unavailable, or the request timed out",
                    false,
                );
            }
            if operation.request_body.is_some() {
                add_error(operation, 413, "Request body larger than 64 KiB", false);
                add_error(
                    operation,
                    415,
                    "Content-Type is not application/json",
                    false,
                );
            }
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response.headers.insert(
                        "X-Request-ID".to_owned(),
                        HeaderBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                            .description(Some("The request's id, echoed or generated"))
                            .build()
                            .into(),
                    );
                }
            }
        }
    }
}

fn add_request_id(operation: &mut Operation) {
    let parameter = ParameterBuilder::new()
        .name("X-Request-ID")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Correlates logs across services; generated when absent",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(parameter.into());
}

fn add_error(operation: &mut Operation, status: u16, description: &str, retry_after: bool) {
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", error_content());
    if retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                ))
                .description(Some("Seconds until the client's bucket has a token again"))
                .build(),
        );
    }
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| response.build().into());
}

/// `GET /openapi.json` and the interactive docs at `/docs` (Swagger UI, served
/// from assets compiled into the binary: no CDN, works offline).
pub fn routes(spec: OpenApi) -> Router {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", spec))
}
