//! The user entity, the request and response types, and their validation rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, SchemaFormat, Type};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use platform::db::{DbError, Row};
use platform::validation::{Int, Text, no_control_characters};

pub use crate::password::Password;

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
    pub role: UserRole,
    pub created_by: Option<String>,
    pub updated_by: Option<String>,
}

impl User {
    /// The columns [`User::from_row`] reads, for `SELECT` and `RETURNING`: every
    /// column but `password_hash`, which only the login reads.
    pub const COLUMNS: &str = "id, email, name, age, active, created_at, updated_at, deleted_at, \
                               role, created_by, updated_by";

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
            role: UserRole::from_column(&row.get::<String>("role")?)?,
            created_by: row.get("created_by")?,
            updated_by: row.get("updated_by")?,
        })
    }
}

impl User {
    /// The resource an event about this user names.
    pub fn resource(&self) -> (&'static str, String) {
        ("user", self.id.to_string())
    }

    /// What events say about a user: what the API shows (never the hash).
    pub fn event_payload(&self) -> serde_json::Value {
        serde_json::to_value(UserResponse::from(self.clone())).unwrap_or_default()
    }
}

/// What a user may do: `user` acts on its own data, `admin` on everyone's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    #[default]
    User,
    Admin,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }

    /// # Errors
    /// When the column holds another value (the CHECK constraint forbids it).
    pub fn from_column(value: &str) -> Result<Self, DbError> {
        match value {
            "user" => Ok(Self::User),
            "admin" => Ok(Self::Admin),
            other => Err(DbError::Other(format!(
                "unknown role {other:?} in users.role"
            ))),
        }
    }

    /// The platform role a token of this user carries.
    pub fn token_role(self) -> platform::auth::Role {
        match self {
            Self::User => platform::auth::Role::User,
            Self::Admin => platform::auth::Role::Admin,
        }
    }
}

/// A user's name: 2..100 characters, no control characters, no surrounding whitespace.
pub type UserName = Text<2, 100>;

/// A user's age in years.
pub type Age = Int<1, 150>;

/// A valid email address of at most 254 bytes, held lower-case: emails are
/// compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// # Errors
    /// When `address` is not a valid email address.
    pub fn parse(address: &str) -> Result<Self, &'static str> {
        if address.len() <= 254 && validator::ValidateEmail::validate_email(&address) {
            Ok(Self(address.to_lowercase()))
        } else {
            Err("must be a valid email address")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Read-only access; `&String` binds as an SQL parameter on both backends.
impl std::ops::Deref for Email {
    type Target = String;

    fn deref(&self) -> &String {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let address = String::deserialize(deserializer)?;
        Self::parse(&address).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Email {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Email,
            )))
            .max_length(Some(254))
            .description(Some(
                "Unique among live users, compared case-insensitively (stored lower-case)",
            ))
            .examples([serde_json::json!("user@example.com")])
            .into()
    }
}

impl ToSchema for Email {}

/// `POST /api/v1/users`
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    // The rules and their schemas are the field types'.
    #[schema(inline)]
    pub email: Email,
    #[schema(inline)]
    pub name: UserName,
    #[schema(inline)]
    pub age: Age,
    /// Required for self-registration (no token); optional for an admin (a user
    /// without one cannot log in until one is set).
    #[schema(inline)]
    pub password: Option<Password>,
    /// `user` (default) or `admin`; only an admin may set it.
    pub role: Option<UserRole>,
}

/// `PUT /api/v1/users/{id}`: every field optional; absent (or null) means unchanged.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[schema(inline)]
    pub name: Option<UserName>,
    #[schema(inline)]
    pub age: Option<Age>,
    /// Only an admin may change it.
    pub active: Option<bool>,
    /// A new password; a user changing its own also sends `current_password`.
    #[schema(inline)]
    pub password: Option<Password>,
    /// The password being replaced (required when users change their own).
    #[schema(inline)]
    pub current_password: Option<Password>,
    /// Only an admin may change it.
    pub role: Option<UserRole>,
}

impl UpdateUserRequest {
    /// The names of the fields this request changes (never their values for
    /// the password), for the `user.updated` event.
    pub fn field_names(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("age", self.age.is_some()),
            ("active", self.active.is_some()),
            ("password", self.password.is_some()),
            ("role", self.role.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.age.is_none()
            && self.active.is_none()
            && self.password.is_none()
            && self.role.is_none()
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
    #[serde(serialize_with = "platform::timestamp::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "platform::timestamp::rfc3339")]
    pub updated_at: DateTime<Utc>,
    pub role: UserRole,
    /// Who created the user (a token's subject); null when self-registered.
    pub created_by: Option<String>,
    /// Who changed the user last (a token's subject).
    pub updated_by: Option<String>,
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
            role: user.role,
            created_by: user.created_by,
            updated_by: user.updated_by,
        }
    }
}

/// The filters of `GET /api/v1/users` (the page is read beside them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Validate, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Case-insensitive literal substring of name or email; no control characters
    // Longer terms cannot match a 100-char name anyway, and 254 still covers
    // every email. PostgreSQL refuses a NUL in a text parameter, and names and
    // emails hold no control characters, so none can match.
    #[validate(
        length(max = 254, message = "must be at most 254 characters"),
        custom(function = no_control_characters)
    )]
    #[param(max_length = 254, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub search: Option<String>,
    /// Only active (true) or inactive (false) users
    pub active: Option<bool>,
}

impl UserFilter {
    /// The search term without surrounding spaces, which never matter to a
    /// substring search; blank means no search.
    pub fn search_term(&self) -> Option<&str> {
        self.search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The list and filters a cursor is bound to: the same search (as
    /// searched, trimmed) and `active`.
    pub fn scope(&self) -> String {
        format!(
            "users|active={:?}|search={:?}",
            self.active,
            self.search_term()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(email: &str, name: &str, age: i64) -> Result<CreateUserRequest, platform::ApiError> {
        let body = serde_json::json!({ "email": email, "name": name, "age": age });
        platform::body::parse_json(body.to_string().as_bytes())
    }

    fn invalid_fields(err: platform::ApiError) -> Vec<String> {
        match err {
            platform::ApiError::Validation { details, .. } => {
                details.into_iter().map(|d| d.field).collect()
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn valid_requests_pass_and_names_count_characters_not_bytes() {
        for (name, age) in [
            ("Jo", 1),
            (&"x".repeat(100), 150),
            ("Zoë", 30),
            (&"é".repeat(100), 30),
        ] {
            assert!(create("a@example.com", name, age).is_ok(), "{name}");
        }
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
        for (result, field) in cases {
            assert_eq!(invalid_fields(result.unwrap_err()), [field]);
        }
    }

    #[test]
    fn every_broken_rule_is_named_at_once() {
        let err = create("not-an-email", "J", 0).unwrap_err();
        assert_eq!(invalid_fields(err), ["age", "email", "name"]);
    }

    #[test]
    fn emails_compare_case_insensitively() {
        assert_eq!(
            Email::parse("John.Doe@Example.COM").unwrap().as_str(),
            "john.doe@example.com"
        );
    }

    #[test]
    fn search_is_trimmed_and_blank_means_none() {
        let filter = |search: &str| UserFilter {
            search: Some(search.to_owned()),
            active: None,
        };
        assert_eq!(filter("  jo ").search_term(), Some("jo"));
        assert_eq!(filter("   ").search_term(), None);
    }
}
