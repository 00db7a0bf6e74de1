//! Token verification against a key set: the service's own keys, or a JWKS
//! fetched from an issuer (user-service, or an external OIDC provider).
//!
//! Verified tokens are remembered until their `exp`, keyed by the whole token,
//! so a client that sends the same token on every request pays for one
//! signature check, not one per request.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Extension;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Validation, decode, decode_header};
use prometheus::IntCounterVec;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::caller::{Caller, Role};
use super::keys::KeySet;
use super::settings::VerifierSettings;
use crate::error::ApiError;

/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;
/// An unknown `kid` refetches the JWKS at most this often.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
const CACHE_CAPACITY: u64 = 10_000;

/// Why a token was refused; the label of `*_auth_failures_total{reason}`.
pub const FAILURE_REASONS: [&str; 6] = [
    "missing",
    "malformed",
    "unknown_key",
    "bad_signature",
    "expired",
    "claims",
];

/// Verifies bearer tokens. Shared by every request through an extension.
pub struct Verifier {
    settings: VerifierSettings,
    keys: RwLock<Arc<KeySet>>,
    jwks: Option<RemoteJwks>,
    verified: moka::sync::Cache<String, (Caller, u64)>,
    failures: IntCounterVec,
}

struct RemoteJwks {
    url: String,
    http: reqwest::Client,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Verifier {
    /// A verifier over fixed keys (user-service verifies its own).
    pub fn with_keys(settings: VerifierSettings, keys: KeySet, failures: IntCounterVec) -> Self {
        Self {
            settings,
            keys: RwLock::new(Arc::new(keys)),
            jwks: None,
            verified: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            failures,
        }
    }

    /// A verifier whose keys come from the JWKS at `url`, fetched on first need
    /// and refreshed by [`Verifier::spawn_refresh`].
    pub fn with_jwks(
        settings: VerifierSettings,
        url: String,
        http: reqwest::Client,
        failures: IntCounterVec,
    ) -> Self {
        let mut verifier = Self::with_keys(settings, KeySet::default(), failures);
        verifier.jwks = Some(RemoteJwks {
            url,
            http,
            last_fetch: tokio::sync::Mutex::new(None),
        });
        verifier
    }

    /// The layer that makes this verifier available to [`Caller`] extractors.
    pub fn layer(self: &Arc<Self>) -> Extension<Arc<Self>> {
        Extension(Arc::clone(self))
    }

    pub(super) fn count_failure(&self, reason: &str) {
        self.failures.with_label_values(&[reason]).inc();
    }

    /// The caller a token proves, or 401.
    ///
    /// # Errors
    /// 401 UNAUTHORIZED (`invalid_token`) for any token that does not verify.
    pub async fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let now = unix_now();
        if let Some((caller, exp)) = self.verified.get(token)
            && now < exp
        {
            return Ok(caller);
        }
        match self.verify_uncached(token).await {
            Ok((caller, exp)) => {
                self.verified
                    .insert(token.to_owned(), (caller.clone(), exp));
                Ok(caller)
            }
            Err((reason, message)) => {
                self.count_failure(reason);
                tracing::info!(reason, detail = message, "token refused");
                Err(ApiError::Unauthorized {
                    message: format!("invalid token: {message}"),
                    invalid_token: true,
                })
            }
        }
    }

    async fn verify_uncached(&self, token: &str) -> Result<(Caller, u64), (&'static str, String)> {
        let header = decode_header(token).map_err(|e| ("malformed", e.to_string()))?;
        let kid = header
            .kid
            .ok_or(("malformed", "the header has no kid".to_owned()))?;
        let keys = match self.current_keys().find(&kid) {
            Some(_) => self.current_keys(),
            None if self.refetch_for_unknown_kid(&kid).await => self.current_keys(),
            None => return Err(("unknown_key", "unknown signing key".to_owned())),
        };
        let (key, algorithm) = keys
            .find(&kid)
            .ok_or(("unknown_key", "unknown signing key".to_owned()))?;
        if header.alg != algorithm {
            return Err((
                "bad_signature",
                "the algorithm does not match the key".to_owned(),
            ));
        }
        let claims = decode::<Map<String, Value>>(token, key, &self.validation(algorithm))
            .map_err(|e| {
                let reason = match e.kind() {
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => "bad_signature",
                    ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => "expired",
                    ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) => {
                        "malformed"
                    }
                    _ => "claims",
                };
                (reason, describe(e.kind()))
            })?
            .claims;
        self.caller_from(&claims)
    }

    fn validation(&self, algorithm: jsonwebtoken::Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation
    }

    fn caller_from(
        &self,
        claims: &Map<String, Value>,
    ) -> Result<(Caller, u64), (&'static str, String)> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(("claims", "sub must be a non-empty string".to_owned()))?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(("claims", "exp must be a number".to_owned()))?;
        let roles = roles_at(claims, &self.settings.roles_claim);
        Ok((Caller::new(subject, roles), exp))
    }

    fn current_keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().expect("key set lock"))
    }

    /// Fetches the JWKS again unless that happened less than 30 s ago; true when
    /// `kid` is known afterwards. Concurrent callers wait for the one fetch.
    async fn refetch_for_unknown_kid(&self, kid: &str) -> bool {
        let Some(jwks) = &self.jwks else {
            return false;
        };
        let mut last = jwks.last_fetch.lock().await;
        // Another request may have fetched it while this one waited.
        if self.current_keys().find(kid).is_some() {
            return true;
        }
        // With no key at all (the issuer was not up when we started) a token
        // cannot verify anyway: try again sooner, still at most once a second.
        let interval = if self.current_keys().is_empty() {
            Duration::from_secs(1)
        } else {
            MIN_REFETCH_INTERVAL
        };
        if last.is_some_and(|at| at.elapsed() < interval) {
            return false;
        }
        *last = Some(Instant::now());
        self.fetch(jwks).await && self.current_keys().find(kid).is_some()
    }

    /// Replaces the key set with the JWKS's; keeps the old one when the issuer
    /// cannot be reached, so tokens already trusted keep working.
    async fn fetch(&self, jwks: &RemoteJwks) -> bool {
        let fetched = async {
            let response = jwks.http.get(&jwks.url).send().await?.error_for_status()?;
            response.json::<JwkSet>().await
        }
        .await;
        match fetched {
            Ok(set) => {
                self.replace_keys(KeySet::from_jwks(&set));
                true
            }
            Err(err) => {
                tracing::warn!(url = jwks.url, error = %err, "JWKS fetch failed; keeping the keys already known");
                false
            }
        }
    }

    fn replace_keys(&self, fresh: KeySet) {
        let mut keys = self.keys.write().expect("key set lock");
        let removed = keys.kids().any(|kid| fresh.find(kid).is_none());
        if removed {
            // A key that left the set no longer vouches for tokens already seen.
            self.verified.invalidate_all();
        }
        tracing::info!(keys = fresh.len(), "signing keys loaded");
        *keys = Arc::new(fresh);
    }

    /// Refreshes the JWKS every `interval` (first at once) until shutdown, so a
    /// key removed by the issuer stops working without a restart.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::clone(self);
        tokio::spawn(async move {
            if verifier.jwks.is_none() {
                return;
            }
            let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(100)));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {
                        if let Some(jwks) = &verifier.jwks {
                            verifier.fetch(jwks).await;
                        }
                    }
                }
            }
        })
    }
}

/// The roles at a dotted claim path (`roles`, `realm_access.roles`): an array of
/// strings or one space-separated string. Unknown role names are ignored.
fn roles_at(claims: &Map<String, Value>, path: &str) -> Vec<Role> {
    let mut segments = path.split('.');
    let first = segments.next().and_then(|s| claims.get(s));
    let value = segments.fold(first, |value, segment| value?.get(segment));
    let names: Vec<&str> = match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(names)) => names.split_whitespace().collect(),
        _ => Vec::new(),
    };
    let mut roles: Vec<Role> = names.into_iter().filter_map(Role::parse).collect();
    roles.dedup();
    roles
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "expired".to_owned(),
        ErrorKind::ImmatureSignature => "not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience".to_owned(),
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim {claim}"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim {claim}"),
        _ => "malformed token".to_owned(),
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
