//! Unit tests of the envelope: statuses, field names, hidden causes, headers and page meta.

use super::*;

async fn body_json(response: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn validation_error_names_each_field_in_message_and_details() {
    let err = ApiError::validation(vec![
        FieldError::new("email", "must be a valid email address"),
        FieldError::new("age", "must be between 1 and 150"),
    ]);
    let response = err.into_response();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = body_json(response).await;
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("email") && message.contains("age"),
        "{message}"
    );
    assert_eq!(body["error"]["details"][1]["field"], "age");
}

#[tokio::test]
async fn internal_error_hides_its_cause_from_the_client() {
    let err = ApiError::Internal(anyhow::anyhow!("SELECT secret FROM users failed"));
    let response = err.into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = body_json(response).await;
    assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
    assert!(!body.to_string().contains("SELECT"));
}

#[tokio::test]
async fn database_errors_are_503_when_unavailable_and_500_otherwise_without_details() {
    let down = ApiError::from(DbError::Unavailable("connection refused".to_owned()));
    let response = down.into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_json(response).await;
    assert_eq!(
        body["error"]["message"],
        "database is unavailable, retry later"
    );
    let unmapped = ApiError::from(DbError::UniqueViolation {
        constraint: "users_email_live_key".to_owned(),
        message: "duplicate key".to_owned(),
    });
    let response = unmapped.into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !body_json(response)
            .await
            .to_string()
            .contains("users_email")
    );
}

#[tokio::test]
async fn answers_end_with_a_newline() {
    let response = ApiResponse::ok(1).into_response();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"{\"success\":true,\"data\":1}\n");
}

#[tokio::test]
async fn rate_limited_sets_retry_after() {
    let response = ApiError::RateLimited {
        retry_after_secs: 3,
    }
    .into_response();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "3");
}

#[tokio::test]
async fn unauthorized_carries_a_bearer_challenge_with_invalid_token_only_for_a_bad_token() {
    let missing = ApiError::Unauthorized {
        message: "missing bearer token".to_owned(),
        invalid_token: false,
    }
    .into_response();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let bad = ApiError::Unauthorized {
        message: "token expired".to_owned(),
        invalid_token: true,
    }
    .into_response();
    assert_eq!(
        bad.headers()[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(body_json(bad).await["error"]["code"], "UNAUTHORIZED");
}

#[tokio::test]
async fn page_response_carries_meta() {
    let meta = PageMeta::numbered(2, 10, 25, true);
    let body = body_json(ApiResponse::page(vec![1, 2], meta).into_response()).await;
    assert_eq!(body["success"], true);
    assert_eq!(body["meta"]["total_pages"], 3);
    assert_eq!(body["data"], serde_json::json!([1, 2]));
    assert!(body.get("error").is_none());
}

#[tokio::test]
async fn cursor_page_names_the_next_cursor_only_when_there_is_one() {
    let more = CursorMeta {
        page_size: 2,
        next_cursor: Some("abc".to_owned()),
    };
    let body = body_json(ApiResponse::cursor_page(vec![1, 2], more).into_response()).await;
    assert_eq!(
        body["meta"],
        serde_json::json!({"page_size": 2, "next_cursor": "abc"})
    );
    let last = CursorMeta {
        page_size: 2,
        next_cursor: None,
    };
    let body = body_json(ApiResponse::cursor_page(vec![3], last).into_response()).await;
    assert_eq!(body["meta"], serde_json::json!({"page_size": 2}));
}
