//! HTTP handlers: extract, authorize, call the store, answer in the envelope.
//!
//! Who may do what: anonymous callers may register (when open registration is
//! on); a user reads, changes and deletes only itself, and someone else's user
//! is a 404, so ids are not confirmed; a service reads any user; an admin does
//! everything.

use axum::Router;
use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use platform::auth::Role;
use platform::db::Database;

use crate::AppState;
use crate::auth;
use crate::error::UserError;
use crate::model::{
    CreateUserRequest, UpdateUserRequest, User, UserFilter, UserResponse, UserRole,
};
use crate::store;
use platform::events::Origin;
use platform::idempotency::{self, Idempotency, IdempotencyHeader, StoredAnswer};
use platform::openapi::{DataEnvelope, Deleted, ErrorEnvelope, PageEnvelope};
use platform::pagination::PageQuery;
use platform::{ApiError, ApiJson, ApiResponse, ApiResult, Caller, ListQuery, PathId, RequestId};

/// The OpenAPI document, generated from the handlers and types below.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "user-service", version = "1.0.0", description = "User management and identity. Every answer uses the envelope {success, data|error, meta}. Get a token from /api/v1/auth/token or /api/v1/auth/login and send it as `Authorization: Bearer <token>`."),
    paths(
        create_user, list_users, get_user, update_user, delete_user,
        auth::issue_token, auth::login, auth::jwks,
        platform::health::health, platform::health::live, platform::health::ready, platform::metrics::export,
    ),
    components(schemas(ErrorEnvelope)),
    tags((name = "users", description = "User CRUD"), (name = "auth", description = "Tokens and the keys that verify them"), (name = "operations", description = "Health and metrics")),
)]
pub struct ApiDoc;

/// The user and token routes, without the platform's middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/users",
            post(create_user)
                .layer(from_fn_with_state(
                    state.idempotency.clone(),
                    idempotency::enforce,
                ))
                .get(list_users),
        )
        .route(
            "/api/v1/users/{id}",
            get(get_user).put(update_user).delete(delete_user),
        )
        .route("/api/v1/auth/token", post(auth::issue_token))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/.well-known/jwks.json", get(auth::jwks))
        .with_state(state)
}

/// The same answer as for an id nobody has: another user's id is not confirmed.
fn hidden(id: i64) -> ApiError {
    UserError::NotFound(id).into()
}

/// A user acts on itself only; anything else of theirs reads as absent.
fn require_self_or_admin(caller: &Caller, id: i64) -> Result<(), ApiError> {
    if caller.may_act_for(id) {
        Ok(())
    } else if caller.has(Role::User) {
        Err(hidden(id))
    } else {
        Err(ApiError::Forbidden(
            "this operation is for the user itself or an admin".to_owned(),
        ))
    }
}

/// Create a user: without a token, self-registration (password required, role
/// `user`); with an admin token, any user (password optional).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUserRequest,
    params(IdempotencyHeader),
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Created (or, with `Idempotent-Replayed: true`, the answer to the first request with this Idempotency-Key)", body = DataEnvelope<UserResponse>,
            headers(("Idempotent-Replayed" = String, description = "`true` when the answer is a replay"))),
        (status = 400, description = "Malformed JSON, a field breaks a rule (named in the message and details), or a malformed Idempotency-Key", body = ErrorEnvelope),
        (status = 403, description = "A token other than an admin's, or `role` set without one", body = ErrorEnvelope),
        (status = 409, description = "A live user already has this email, or a request with this Idempotency-Key is still running", body = ErrorEnvelope),
        (status = 422, description = "This Idempotency-Key was used for a different request", body = ErrorEnvelope),
    ))]
async fn create_user(
    State(state): State<AppState>,
    caller: Option<Caller>,
    RequestId(request_id): RequestId,
    idempotency: Idempotency,
    ApiJson(request): ApiJson<CreateUserRequest>,
) -> ApiResult<UserResponse> {
    match &caller {
        Some(caller) => caller.require_admin("creating a user")?,
        None if !state.auth.open_registration => {
            return Err(ApiError::Unauthorized {
                message: "registration is closed; this operation needs a bearer token".to_owned(),
                invalid_token: false,
            });
        }
        None if request.password.is_none() => {
            return Err(ApiError::invalid_field(
                "password",
                "is required to register",
            ));
        }
        None if request.role.is_some_and(|role| role != UserRole::User) => {
            return Err(ApiError::Forbidden("only an admin may set role".to_owned()));
        }
        None => {}
    }
    let password_hash = match &request.password {
        Some(password) => Some(password.hash().await.map_err(ApiError::Internal)?),
        None => None,
    };
    let origin = Origin::request(caller.as_ref(), request_id);
    let answer = |user: &User| ApiResponse::created(UserResponse::from(user.clone()));
    let stored = |user: &User| StoredAnswer::of(&answer(user));
    let recorder = idempotency.recorder(&stored);
    let user = store::insert(
        &state.db,
        &request,
        password_hash,
        &origin,
        recorder.as_ref(),
    )
    .await?;
    tracing::info!(user_id = user.id, "user created");
    Ok(answer(&user))
}

/// Get a live user by id: the user itself, a service or an admin.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = DataEnvelope<UserResponse>),
        (status = 400, description = "The id is not a positive 64-bit integer", body = ErrorEnvelope),
        (status = 404, description = "No live user has this id (or it is not the caller's)", body = ErrorEnvelope),
    ))]
async fn get_user(
    State(db): State<Database>,
    caller: Caller,
    PathId(id): PathId,
) -> ApiResult<UserResponse> {
    if !caller.has(Role::Service) {
        require_self_or_admin(&caller, id)?;
    }
    Ok(ApiResponse::ok(store::find(&db, id).await?.into()))
}

/// List live users, newest first (admins only).
///
/// Numbered pages (`page`) carry counts, exact up to 1000 matching rows and a lower bound beyond
/// (`meta.total_count_exact`); follow `meta.next_cursor` with `cursor` to page
/// at the cost of one page however deep.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    params(PageQuery, UserFilter),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of users", body = PageEnvelope<UserResponse>),
        (status = 400, description = "A query parameter is invalid (named)", body = ErrorEnvelope),
    ))]
async fn list_users(
    State(db): State<Database>,
    caller: Caller,
    ListQuery(page, filter): ListQuery<UserFilter>,
) -> ApiResult<Vec<UserResponse>> {
    caller.require_admin("listing users")?;
    let page = page.bind(filter.scope())?;
    let (users, meta) = store::list(&db, &page, &filter).await?;
    let users = users.into_iter().map(UserResponse::from).collect();
    Ok(ApiResponse::page(users, meta))
}

/// Change a user; absent fields stay as they are. Users change their own name,
/// age and password (with `current_password`); `active` and `role` are an admin's.
#[utoipa::path(put, path = "/api/v1/users/{id}", tag = "users", request_body = UpdateUserRequest,
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated user", body = DataEnvelope<UserResponse>),
        (status = 400, description = "Bad id, malformed JSON or a field breaks a rule", body = ErrorEnvelope),
        (status = 403, description = "A field only an admin may change, or a wrong current_password", body = ErrorEnvelope),
        (status = 404, description = "No live user has this id (or it is not the caller's)", body = ErrorEnvelope),
    ))]
async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    PathId(id): PathId,
    ApiJson(changes): ApiJson<UpdateUserRequest>,
) -> ApiResult<UserResponse> {
    require_self_or_admin(&caller, id)?;
    let db = &state.db;
    if !caller.is_admin() {
        check_own_changes(&state, id, &changes).await?;
    }
    let password_hash = match &changes.password {
        Some(password) => Some(password.hash().await.map_err(ApiError::Internal)?),
        None => None,
    };
    let origin = Origin::request(Some(&caller), request_id);
    let user = store::update(db, id, &changes, password_hash, &origin).await?;
    tracing::info!(user_id = id, "user updated");
    Ok(ApiResponse::ok(user.into()))
}

/// What a user may change of itself: not `active` or `role`, and a new
/// password only with the current one, whose wrong guesses are throttled like
/// failed logins (a stolen token must not buy unlimited guesses).
async fn check_own_changes(
    state: &AppState,
    id: i64,
    changes: &UpdateUserRequest,
) -> Result<(), ApiError> {
    if changes.active.is_some() || changes.role.is_some() {
        return Err(ApiError::Forbidden(
            "only an admin may change active or role".to_owned(),
        ));
    }
    if changes.password.is_none() {
        return Ok(());
    }
    let Some(current) = &changes.current_password else {
        return Err(ApiError::invalid_field(
            "current_password",
            "is required to change your password",
        ));
    };
    let key = format!("password:{id}");
    let checked = state
        .auth
        .throttled(&[&key], async {
            let stored = store::find_password_hash(&state.db, id).await?;
            if current.verify(stored).await {
                Ok(())
            } else {
                // Counted as a failure by the throttle, answered as 403 below.
                Err(ApiError::Unauthorized {
                    message: String::new(),
                    invalid_token: false,
                })
            }
        })
        .await;
    match checked {
        Err(ApiError::Unauthorized { .. }) => {
            Err(ApiError::Forbidden("current_password is wrong".to_owned()))
        }
        other => other,
    }
}

/// Soft-delete a user (itself, or any as an admin): it vanishes from every
/// endpoint, cannot log in, and its email is free again.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted", body = DataEnvelope<Deleted>),
        (status = 400, description = "The id is not a positive 64-bit integer", body = ErrorEnvelope),
        (status = 404, description = "No live user has this id (or it is not the caller's)", body = ErrorEnvelope),
    ))]
async fn delete_user(
    State(db): State<Database>,
    caller: Caller,
    RequestId(request_id): RequestId,
    PathId(id): PathId,
) -> ApiResult<Deleted> {
    require_self_or_admin(&caller, id)?;
    store::soft_delete(&db, id, &Origin::request(Some(&caller), request_id)).await?;
    tracing::info!(user_id = id, "user deleted");
    Ok(ApiResponse::ok(Deleted {
        id,
        message: "user deleted".to_owned(),
    }))
}
