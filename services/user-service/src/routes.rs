//! HTTP handlers: extract, validate, call the store, answer in the envelope.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use platform::db::Database;

use crate::model::{CreateUserRequest, UpdateUserRequest, UserFilter, UserResponse};
use crate::store;
use platform::openapi::{DataEnvelope, Deleted, ErrorEnvelope, PageEnvelope};
use platform::pagination::PageQuery;
use platform::{ApiJson, ApiResponse, ApiResult, ListQuery, PathId};

/// The OpenAPI document, generated from the handlers and types below.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "user-service", version = "1.0.0", description = "User management. Every answer uses the envelope {success, data|error, meta}."),
    paths(
        create_user, list_users, get_user, update_user, delete_user,
        platform::health::health, platform::health::live, platform::health::ready, platform::metrics::export,
    ),
    components(schemas(ErrorEnvelope)),
    tags((name = "users", description = "User CRUD"), (name = "operations", description = "Health and metrics")),
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of this service, with the shared responses and headers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    platform::openapi::finish(<ApiDoc as utoipa::OpenApi>::openapi())
}

/// The user API routes, without the platform's middleware.
pub fn router(db: Database) -> Router {
    Router::new()
        .route("/api/v1/users", post(create_user).get(list_users))
        .route(
            "/api/v1/users/{id}",
            get(get_user).put(update_user).delete(delete_user),
        )
        .with_state(db)
}

/// Create a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Created", body = DataEnvelope<UserResponse>),
        (status = 400, description = "Malformed JSON or a field breaks a rule (named in the message and details)", body = ErrorEnvelope),
        (status = 409, description = "A live user already has this email", body = ErrorEnvelope),
    ))]
async fn create_user(
    State(db): State<Database>,
    ApiJson(request): ApiJson<CreateUserRequest>,
) -> ApiResult<UserResponse> {
    let user = store::insert(&db, &request).await?;
    tracing::info!(user_id = user.id, "user created");
    Ok(ApiResponse::created(user.into()))
}

/// Get a live user by id.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses(
        (status = 200, description = "The user", body = DataEnvelope<UserResponse>),
        (status = 400, description = "The id is not a positive 64-bit integer", body = ErrorEnvelope),
        (status = 404, description = "No live user has this id", body = ErrorEnvelope),
    ))]
async fn get_user(State(db): State<Database>, PathId(id): PathId) -> ApiResult<UserResponse> {
    Ok(ApiResponse::ok(store::find(&db, id).await?.into()))
}

/// List live users, newest first.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    params(PageQuery, UserFilter),
    responses(
        (status = 200, description = "One page of users", body = PageEnvelope<UserResponse>),
        (status = 400, description = "A query parameter is invalid (named)", body = ErrorEnvelope),
    ))]
async fn list_users(
    State(db): State<Database>,
    ListQuery(page, filter): ListQuery<UserFilter>,
) -> ApiResult<Vec<UserResponse>> {
    let (users, total) = store::list(&db, &page, &filter).await?;
    let users = users.into_iter().map(UserResponse::from).collect();
    Ok(ApiResponse::page(users, page.meta(total)))
}

/// Change a user's name, age or active flag; absent fields stay as they are.
#[utoipa::path(put, path = "/api/v1/users/{id}", tag = "users", request_body = UpdateUserRequest,
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses(
        (status = 200, description = "The updated user", body = DataEnvelope<UserResponse>),
        (status = 400, description = "Bad id, malformed JSON or a field breaks a rule", body = ErrorEnvelope),
        (status = 404, description = "No live user has this id", body = ErrorEnvelope),
    ))]
async fn update_user(
    State(db): State<Database>,
    PathId(id): PathId,
    ApiJson(changes): ApiJson<UpdateUserRequest>,
) -> ApiResult<UserResponse> {
    let user = store::update(&db, id, &changes).await?;
    tracing::info!(user_id = id, "user updated");
    Ok(ApiResponse::ok(user.into()))
}

/// Soft-delete a user: it vanishes from every endpoint and its email is free again.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    responses(
        (status = 200, description = "Deleted", body = DataEnvelope<Deleted>),
        (status = 400, description = "The id is not a positive 64-bit integer", body = ErrorEnvelope),
        (status = 404, description = "No live user has this id", body = ErrorEnvelope),
    ))]
async fn delete_user(State(db): State<Database>, PathId(id): PathId) -> ApiResult<Deleted> {
    store::soft_delete(&db, id).await?;
    tracing::info!(user_id = id, "user deleted");
    Ok(ApiResponse::ok(Deleted {
        id,
        message: "user deleted".to_owned(),
    }))
}
