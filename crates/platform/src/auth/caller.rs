//! Who is calling: the verified subject and roles of a bearer token, as an
//! axum extractor. Handlers that take [`Caller`] answer 401 without a valid
//! token; handlers that take `Option<Caller>` also serve anonymous callers but
//! still refuse a bad token.

use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::verifier::Verifier;
use crate::error::ApiError;
use crate::rate_limit::{Bucket, SubjectCharged, SubjectLimit};

/// The roles this system gives rights to; others in a token are ignored.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
            Self::Service => "service",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "user" => Some(Self::User),
            "admin" => Some(Self::Admin),
            "service" => Some(Self::Service),
            _ => None,
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    subject: String,
    roles: Vec<Role>,
}

impl Caller {
    pub fn new(subject: impl Into<String>, roles: Vec<Role>) -> Self {
        Self {
            subject: subject.into(),
            roles,
        }
    }

    /// The token's `sub`: a user id for users, the client id for clients.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    pub fn is_admin(&self) -> bool {
        self.has(Role::Admin)
    }

    /// The user this caller is, when it is one: `sub` is a positive id.
    pub fn user_id(&self) -> Option<i64> {
        self.subject.parse().ok().filter(|id| *id > 0)
    }

    /// Admins may act on anything; a user on what it owns.
    pub fn may_act_for(&self, owner: i64) -> bool {
        self.is_admin() || (self.has(Role::User) && self.user_id() == Some(owner))
    }

    /// Fails with 403 unless the caller is an admin.
    ///
    /// # Errors
    /// 403 FORBIDDEN naming what was refused.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{what} requires the admin role"
            )))
        }
    }
}

/// The bearer token of a request: `None` without an `Authorization` header.
fn bearer_token(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || ApiError::Unauthorized {
        message: "the Authorization header must be `Bearer <token>`".to_owned(),
        invalid_token: true,
    };
    // UTF-8 rather than `HeaderValue::to_str`'s visible-ASCII check, which costs
    // a branch per byte of a token hundreds of bytes long (a few thousand
    // instructions per request); any byte a token may not hold fails its decoding.
    let value = std::str::from_utf8(value.as_bytes()).map_err(|_| invalid())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(invalid)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(invalid());
    }
    Ok(Some(token))
}

fn verifier(parts: &Parts) -> Result<Arc<Verifier>, ApiError> {
    parts
        .extensions
        .get::<Arc<Verifier>>()
        .cloned()
        .ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "no token verifier on this route (Verifier::layer missing)"
            ))
        })
}

async fn authenticate(parts: &mut Parts) -> Result<Option<Caller>, ApiError> {
    let token = match bearer_token(parts) {
        Ok(Some(token)) => token,
        Ok(None) => return Ok(None),
        Err(err) => {
            if let Ok(verifier) = verifier(parts) {
                verifier.count_failure("malformed");
            }
            return Err(err);
        }
    };
    let caller = verifier(parts)?.verify(token).await?;
    // The request's log line names who asked (never the token).
    crate::telemetry::record_subject(caller.subject());
    charge_subject(parts, &caller).await?;
    Ok(Some(caller))
}

/// Takes a token from the caller's own bucket, once per request, when the
/// service limits per subject.
async fn charge_subject(parts: &mut Parts, caller: &Caller) -> Result<(), ApiError> {
    let Some(SubjectLimit(limiter)) = parts.extensions.get::<SubjectLimit>().cloned() else {
        return Ok(());
    };
    if parts.extensions.insert(SubjectCharged).is_some() {
        return Ok(());
    }
    limiter.admit(Bucket::Subject, caller.subject()).await
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match authenticate(parts).await {
            Ok(Some(caller)) => Ok(caller),
            Ok(None) => {
                if let Ok(verifier) = verifier(parts) {
                    verifier.count_failure("missing");
                }
                Err(ApiError::Unauthorized {
                    message: "this operation needs a bearer token".to_owned(),
                    invalid_token: false,
                })
            }
            Err(err) => Err(err),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, ApiError> {
        authenticate(parts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admins_and_the_owning_user_may_act_for_a_user() {
        let owner = Caller::new("7", vec![Role::User]);
        assert!(owner.may_act_for(7));
        assert!(!owner.may_act_for(8));
        assert!(Caller::new("client", vec![Role::Admin]).may_act_for(8));
        // A service (or a client whose id looks like a number) owns nothing.
        assert!(!Caller::new("7", vec![Role::Service]).may_act_for(7));
        assert_eq!(Caller::new("0", vec![Role::User]).user_id(), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_anything_else_is_invalid() {
        let parts = |value: &str| {
            axum::http::Request::builder()
                .header(AUTHORIZATION, value)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        assert_eq!(bearer_token(&parts("bearer abc")).unwrap(), Some("abc"));
        assert_eq!(bearer_token(&parts("Bearer  abc ")).unwrap(), Some("abc"));
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc", "Token abc"] {
            assert!(
                matches!(
                    bearer_token(&parts(bad)),
                    Err(ApiError::Unauthorized {
                        invalid_token: true,
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
