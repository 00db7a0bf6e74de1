//! The user entity, the request and response types, and their validation rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::{Validate, ValidationError};

use platform::db::{DbError, Row};
use platform::{ApiError, FieldError, PageRequest, QueryParams};

/// A row of the `users` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub age: i32,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl User {
    /// The columns [`User::from_row`] reads, for `SELECT` and `RETURNING`.
    pub const COLUMNS: &str = "id, email, name, age, active, created_at, updated_at, deleted_at";

    /// # Errors
    /// When a column is missing or of another type (a schema bug).
    pub fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.get("id")?,
            email: row.get("email")?,
            name: row.get("name")?,
            age: row.get("age")?,
            active: row.get("active")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
            deleted_at: row.get("deleted_at")?,
        })
    }
}

/// `POST /api/v1/users`
#[derive(Debug, Clone, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Unique among live users, compared case-insensitively (stored lower-case).
    #[validate(custom(function = "valid_email"))]
    #[schema(format = Email, max_length = 254, example = "user@example.com")]
    pub email: String,
    /// No control characters, no surrounding whitespace.
    #[validate(custom(function = "valid_name"))]
    #[schema(
        min_length = 2,
        max_length = 100,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        example = "John Doe"
    )]
    pub name: String,
    #[serde(deserialize_with = "platform::extract::integer")]
    #[validate(range(min = 1, max = 150, message = "must be between 1 and 150"))]
    #[schema(minimum = 1, maximum = 150, example = 30)]
    pub age: i64,
}

/// `PUT /api/v1/users/{id}`: every field optional; absent (or null) means unchanged.
#[derive(Debug, Clone, Default, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[validate(custom(function = "valid_name"))]
    #[schema(
        min_length = 2,
        max_length = 100,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        example = "Jane Doe"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "platform::extract::optional_integer")]
    #[validate(range(min = 1, max = 150, message = "must be between 1 and 150"))]
    #[schema(minimum = 1, maximum = 150, example = 31)]
    pub age: Option<i64>,
    pub active: Option<bool>,
}

impl UpdateUserRequest {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.age.is_none() && self.active.is_none()
    }
}

/// A user as the API shows it (no soft-delete marker).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct UserResponse {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub age: i32,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            age: user.age,
            active: user.active,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// `GET /api/v1/users?page&page_size&search&active`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFilter {
    pub page: PageRequest,
    /// Matched case-insensitively and literally (no wildcards) in name or email.
    pub search: Option<String>,
    pub active: Option<bool>,
}

/// Longest accepted search term; longer ones cannot match a 100-char name anyway
/// (emails are at most 254, so this still covers every email).
const MAX_SEARCH_CHARS: usize = 254;

impl UserFilter {
    /// # Errors
    /// A 400 VALIDATION_ERROR naming each bad parameter.
    pub fn from_query(query: &QueryParams) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let page = PageRequest::from_query(query, &mut errors);
        let raw_search = query.text("search");
        if raw_search.is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS) {
            errors.push(FieldError::new(
                "search",
                format!("must be at most {MAX_SEARCH_CHARS} characters"),
            ));
        }
        // PostgreSQL refuses a NUL in a text parameter (the query would fail as a
        // 500), and names and emails hold no control characters, so none can match.
        if raw_search.is_some_and(|s| s.chars().any(char::is_control)) {
            errors.push(FieldError::new(
                "search",
                "must not contain control characters",
            ));
        }
        let active = query
            .parse::<bool>("active", "true or false")
            .unwrap_or_else(|e| {
                errors.push(e);
                None
            });
        // Surrounding spaces never matter to a substring search; blank means no filter.
        let search = raw_search
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        if errors.is_empty() {
            Ok(Self {
                page,
                search,
                active,
            })
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

/// Emails are compared case-insensitively: stored lower-case.
pub fn normalize_email(email: &str) -> String {
    email.to_lowercase()
}

fn valid_email(email: &str) -> Result<(), ValidationError> {
    if email.len() <= 254 && validator::ValidateEmail::validate_email(&email) {
        Ok(())
    } else {
        Err(ValidationError::new("email").with_message("must be a valid email address".into()))
    }
}

fn valid_name(name: &str) -> Result<(), ValidationError> {
    platform::extract::validate_text(name, 2, 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(email: &str, name: &str, age: i64) -> CreateUserRequest {
        CreateUserRequest {
            email: email.into(),
            name: name.into(),
            age,
        }
    }

    #[test]
    fn valid_request_passes() {
        assert!(create("a@example.com", "Jo", 1).validate().is_ok());
        assert!(
            create("a@example.com", &"x".repeat(100), 150)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (create("not-an-email", "John", 30), "email"),
            (create("a@example.com", "J", 30), "name"),
            (create("a@example.com", &"x".repeat(101), 30), "name"),
            (create("a@example.com", "Jo\u{0007}hn", 30), "name"),
            (create("a@example.com", " John", 30), "name"),
            (create(" a@example.com", "John", 30), "email"),
            (create("a@example.com", "John", 0), "age"),
            (create("a@example.com", "John", 151), "age"),
        ];
        for (request, field) in cases {
            let errors = request.validate().unwrap_err();
            assert!(
                errors.field_errors().contains_key(field),
                "{field}: {errors:?}"
            );
        }
    }

    #[test]
    fn name_length_counts_characters_not_bytes() {
        assert!(create("a@example.com", "Zoë", 30).validate().is_ok());
        assert!(
            create("a@example.com", &"é".repeat(100), 30)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn emails_compare_case_insensitively() {
        assert_eq!(
            normalize_email("John.Doe@Example.COM"),
            "john.doe@example.com"
        );
    }
}
