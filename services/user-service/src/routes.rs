//! HTTP handlers: extract, validate, call the store, answer in the envelope.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};

use crate::model::{CreateUserRequest, UpdateUserRequest, UserFilter, UserResponse};
use crate::store;
use platform::{ApiError, ApiJson, ApiResponse, PathId, QueryParams};

/// The user API routes, without the platform's middleware.
pub fn router(db: DatabaseConnection) -> Router {
    Router::new()
        .route("/api/v1/users", post(create_user).get(list_users))
        .route(
            "/api/v1/users/{id}",
            get(get_user).put(update_user).delete(delete_user),
        )
        .with_state(db)
}

type Answer<T> = Result<ApiResponse<T>, ApiError>;

async fn create_user(
    State(db): State<DatabaseConnection>,
    ApiJson(request): ApiJson<CreateUserRequest>,
) -> Answer<UserResponse> {
    // The range rule has already held age to 1..=150.
    let age =
        i32::try_from(request.age).map_err(|_| ApiError::invalid_field("age", "out of range"))?;
    let user = store::insert(&db, &request.email, &request.name, age).await?;
    tracing::info!(user_id = user.id, "user created");
    Ok(ApiResponse::created(user.into()))
}

async fn get_user(
    State(db): State<DatabaseConnection>,
    PathId(id): PathId,
) -> Answer<UserResponse> {
    Ok(ApiResponse::ok(store::find(&db, id).await?.into()))
}

async fn list_users(
    State(db): State<DatabaseConnection>,
    query: QueryParams,
) -> Answer<Vec<UserResponse>> {
    let filter = UserFilter::from_query(&query)?;
    let (users, total) = store::list(&db, &filter).await?;
    let users = users.into_iter().map(UserResponse::from).collect();
    Ok(ApiResponse::page(users, filter.page.meta(total)))
}

async fn update_user(
    State(db): State<DatabaseConnection>,
    PathId(id): PathId,
    ApiJson(changes): ApiJson<UpdateUserRequest>,
) -> Answer<UserResponse> {
    let user = store::update(&db, id, &changes).await?;
    tracing::info!(user_id = id, "user updated");
    Ok(ApiResponse::ok(user.into()))
}

async fn delete_user(State(db): State<DatabaseConnection>, PathId(id): PathId) -> Answer<Value> {
    store::soft_delete(&db, id).await?;
    tracing::info!(user_id = id, "user deleted");
    Ok(ApiResponse::ok(
        json!({ "id": id, "message": "user deleted" }),
    ))
}
