//! user-service as the identity provider: client credentials and password
//! logins in, signed tokens out, and the JWKS every service verifies them with.

pub mod config;
pub mod issuer;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use ipnet::IpNet;
use jsonwebtoken::jwk::JwkSet;
use platform::auth::{ClientCredentials, Role, Secret};
use platform::events::{Actor, Origin, outbox};
use platform::openapi::{DataEnvelope, ErrorEnvelope};
use platform::{ApiError, ApiJson, ApiResponse, ApiResult, RequestId};
use prometheus::IntCounterVec;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::AppState;
use crate::model::{Email, Password};
use crate::store;
use config::AuthConfig;
use issuer::{TokenIssuer, TokenResponse};
use throttle::LoginThrottle;

/// Outcomes of `POST /auth/login` and `/auth/token`, the label of `*_login_attempts_total`.
pub const LOGIN_OUTCOMES: [&str; 3] = ["success", "failure", "throttled"];

/// What the token endpoints need, shared by every request.
pub struct IdentityProvider {
    pub issuer: TokenIssuer,
    operator: ClientCredentials,
    operator_roles: Vec<Role>,
    service: ClientCredentials,
    throttle: LoginThrottle,
    trusted_proxies: Vec<IpNet>,
    pub open_registration: bool,
    attempts: IntCounterVec,
}

impl IdentityProvider {
    pub fn new(config: &AuthConfig, trusted_proxies: Vec<IpNet>, attempts: IntCounterVec) -> Self {
        Self {
            issuer: TokenIssuer::new(config),
            operator: config.operator.clone(),
            operator_roles: config.operator_roles.clone(),
            service: config.service.clone(),
            throttle: LoginThrottle::new(config.login_max_failures, config.login_failure_window),
            trusted_proxies,
            open_registration: config.open_registration,
            attempts,
        }
    }

    /// The roles `client_id`/`secret` may hold, when they are a configured client.
    /// Both secrets are compared every time, in constant time, so the answer's
    /// timing tells nothing about which part was wrong.
    fn client_roles(&self, client_id: &str, secret: &Secret) -> Option<&[Role]> {
        let operator = self.operator.secret.matches(secret.expose());
        let service = self.service.secret.matches(secret.expose());
        if operator && client_id == self.operator.id {
            Some(&self.operator_roles)
        } else if service && client_id == self.service.id {
            Some(&[Role::Service])
        } else {
            None
        }
    }

    fn count(&self, outcome: &str) {
        self.attempts.with_label_values(&[outcome]).inc();
    }

    /// Runs `attempt` unless `keys` are throttled; counts its outcome. The
    /// attempt is counted as a failure before it runs (and forgiven unless it
    /// fails), so concurrent guesses cannot all pass the check together.
    pub(crate) async fn throttled<T>(
        &self,
        keys: &[&str],
        attempt: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let reserved = match self.throttle.reserve(keys) {
            Ok(at) => at,
            Err(throttled) => {
                self.count("throttled");
                return Err(throttled);
            }
        };
        match attempt.await {
            Ok(value) => {
                self.count("success");
                self.throttle.release(keys, reserved);
                Ok(value)
            }
            Err(err @ ApiError::Unauthorized { .. }) => {
                self.count("failure");
                Err(err)
            }
            Err(other) => {
                self.throttle.release(keys, reserved);
                Err(other)
            }
        }
    }
}

/// `POST /api/v1/auth/token`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(min_length = 1, max_length = 128)]
    pub client_id: String,
    #[schema(inline)]
    pub client_secret: Secret,
    /// A subset of the client's roles; all of them when absent.
    pub roles: Option<Vec<Role>>,
}

/// `POST /api/v1/auth/login`
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(inline)]
    pub email: Email,
    #[schema(inline)]
    pub password: Password,
}

fn client_ip(auth: &IdentityProvider, peer: SocketAddr, headers: &HeaderMap) -> String {
    platform::rate_limit::client_ip(peer.ip(), headers, &auth.trusted_proxies).to_string()
}

fn refused(message: &str) -> ApiError {
    ApiError::Unauthorized {
        message: message.to_owned(),
        invalid_token: false,
    }
}

/// Get a token for a client (client credentials).
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth", request_body = TokenRequest,
    responses(
        (status = 200, description = "A signed token", body = DataEnvelope<TokenResponse>),
        (status = 400, description = "Malformed JSON or a field breaks a rule", body = ErrorEnvelope),
        (status = 401, description = "Unknown client or wrong secret", body = ErrorEnvelope),
        (status = 403, description = "A role was asked for that the client does not hold", body = ErrorEnvelope),
    ))]
pub async fn issue_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    ApiJson(request): ApiJson<TokenRequest>,
) -> ApiResult<TokenResponse> {
    let auth = &state.auth;
    let ip_key = format!("ip:{}", client_ip(auth, peer, &headers));
    let allowed = auth
        .throttled(&[&ip_key], async {
            auth.client_roles(&request.client_id, &request.client_secret)
                .ok_or_else(|| refused("invalid client credentials"))
        })
        .await;
    if matches!(allowed, Err(ApiError::Unauthorized { .. })) {
        let payload = json!({"grant": "client_credentials", "client_id": request.client_id});
        record_failure(&state, request_id.clone(), payload).await;
    }
    let allowed = allowed?;
    let roles = match request.roles {
        None => allowed.to_vec(),
        Some(asked) if asked.is_empty() => {
            return Err(ApiError::invalid_field(
                "roles",
                "must name at least one role",
            ));
        }
        Some(asked) => {
            if let Some(role) = asked.iter().find(|r| !allowed.contains(r)) {
                return Err(ApiError::Forbidden(format!(
                    "role {} is not granted to this client",
                    role.as_str()
                )));
            }
            asked
        }
    };
    let token = auth.issuer.issue(&request.client_id, &roles)?;
    record_issued(
        &state,
        request_id,
        ("client", request.client_id.clone()),
        "client_credentials",
        &token,
    )
    .await?;
    tracing::info!(client_id = request.client_id, roles = ?token.roles, "token issued");
    Ok(ApiResponse::ok(token))
}

/// Log in with email and password; the token's subject is the user's id.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "A signed token for the user", body = DataEnvelope<TokenResponse>),
        (status = 400, description = "Malformed JSON or a field breaks a rule", body = ErrorEnvelope),
        (status = 401, description = "Unknown email, wrong password, or an inactive user (one answer for all)", body = ErrorEnvelope),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    ApiJson(request): ApiJson<LoginRequest>,
) -> ApiResult<TokenResponse> {
    let auth = &state.auth;
    let email_key = format!("email:{}", request.email.as_str());
    let ip_key = format!("ip:{}", client_ip(auth, peer, &headers));
    let user = auth
        .throttled(&[&email_key, &ip_key], async {
            let user = store::find_credentials(&state.db, &request.email).await?;
            let (stored, active) = match &user {
                Some(user) => (user.password_hash.clone(), user.active),
                None => (None, false),
            };
            // Verified even for an unknown email (against a dummy hash), so both
            // answers take the same time.
            let matches = request.password.verify(stored).await;
            match user {
                Some(user) if matches && active => Ok(user),
                _ => Err(refused("invalid email or password")),
            }
        })
        .await;
    if matches!(user, Err(ApiError::Unauthorized { .. })) {
        let payload = json!({"grant": "password", "email": request.email.as_str()});
        record_failure(&state, request_id.clone(), payload).await;
    }
    let user = user?;
    auth.throttle.reset(&email_key);
    let token = auth
        .issuer
        .issue(&user.id.to_string(), &[user.role.token_role()])?;
    record_issued(
        &state,
        request_id,
        ("user", user.id.to_string()),
        "password",
        &token,
    )
    .await?;
    tracing::info!(user_id = user.id, "user logged in");
    Ok(ApiResponse::ok(token))
}

/// `auth.token_issued`: who got a token, how, with which roles, until when
/// (never the token itself). Its actor is the token's own subject (the id of
/// `resource`, a client or a user) with the token's roles.
async fn record_issued(
    state: &AppState,
    request_id: Option<String>,
    resource: (&str, String),
    grant: &str,
    token: &TokenResponse,
) -> Result<(), ApiError> {
    let origin = Origin {
        actor: Actor {
            sub: resource.1.clone(),
            roles: token.roles.clone(),
        },
        request_id,
    };
    let payload = json!({"grant": grant, "roles": token.roles, "expires_at": token.expires_at});
    let event = origin.event("auth.token_issued", resource, payload);
    outbox::record_alone(&state.db, &event).await?;
    Ok(())
}

/// `auth.login_failed`, by an anonymous actor. A failure to record it is
/// logged and does not change the 401.
async fn record_failure(state: &AppState, request_id: Option<String>, payload: serde_json::Value) {
    let origin = Origin::request(None, request_id);
    let event = origin.event("auth.login_failed", ("auth", "login".to_owned()), payload);
    if let Err(err) = outbox::record_alone(&state.db, &event).await {
        tracing::warn!(error = %err, "auth.login_failed event not recorded");
    }
}

/// The public keys tokens are signed with (RFC 7517), for every service to verify them.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "The JSON Web Key Set (not in the envelope: a standard document)", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let keys: &JwkSet = state.auth.issuer.jwks();
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        Json(keys.clone()),
    )
}

/// Registers `user_service_login_attempts_total{outcome}`.
pub fn attempts_counter(metrics: &platform::metrics::Metrics) -> IntCounterVec {
    metrics.labelled_counter(
        "user_service_login_attempts_total",
        "Logins and client-credential token requests, by outcome",
        "outcome",
        &LOGIN_OUTCOMES,
    )
}

/// Used by [`crate::UserService`] so the whole provider is built in one place.
pub fn provider(
    config: &AuthConfig,
    trusted_proxies: Vec<IpNet>,
    metrics: &platform::metrics::Metrics,
) -> Arc<IdentityProvider> {
    Arc::new(IdentityProvider::new(
        config,
        trusted_proxies,
        attempts_counter(metrics),
    ))
}
