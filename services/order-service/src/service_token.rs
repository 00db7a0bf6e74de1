//! order-service's own token for calling user-service: client credentials
//! (role `service`), never an end user's token. Cached until a minute before it
//! expires; a 401 on a call makes the caller forget it and fetch a new one.
//!
//! Bad credentials are an operator's mistake, not an outage: they are logged as
//! an error (once per change) and shown in `/health` as
//! `user_service_credentials: "rejected"`, while orders degrade as for any
//! user-service failure.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use platform::auth::ClientCredentials;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::user_client::UserServiceError;

/// A token is fetched again this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

pub struct ServiceToken {
    url: String,
    credentials: ClientCredentials,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
    status: AtomicU8,
}

const UNKNOWN: u8 = 0;
const ACCEPTED: u8 = 1;
const REJECTED: u8 = 2;

impl ServiceToken {
    pub fn new(user_service_url: &str, credentials: ClientCredentials) -> Self {
        Self {
            url: format!(
                "{}/api/v1/auth/token",
                user_service_url.trim_end_matches('/')
            ),
            credentials,
            cached: tokio::sync::Mutex::new(None),
            status: AtomicU8::new(UNKNOWN),
        }
    }

    /// `unknown` until the first fetch, then `accepted` or `rejected`.
    pub fn status(&self) -> &'static str {
        match self.status.load(Ordering::Relaxed) {
            ACCEPTED => "accepted",
            REJECTED => "rejected",
            _ => "unknown",
        }
    }

    /// The cached token, or a fresh one. Concurrent callers wait for one fetch.
    ///
    /// # Errors
    /// `CredentialsRejected` when user-service refuses our credentials; the
    /// connection errors of any call otherwise.
    pub async fn get(&self, http: &reqwest::Client) -> Result<String, UserServiceError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, refresh_at)) = cached.as_ref()
            && Instant::now() < *refresh_at
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch(http).await?;
        let refresh_at = Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN).max(lifetime / 2);
        *cached = Some((token.clone(), refresh_at));
        Ok(token)
    }

    /// Drops `stale` (a token user-service just refused) unless it was replaced already.
    pub async fn forget(&self, stale: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|(token, _)| token == stale) {
            *cached = None;
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<(String, Duration), UserServiceError> {
        #[derive(Deserialize)]
        struct Envelope {
            data: Token,
        }
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            expires_in: u64,
        }
        let body = json!({
            "client_id": self.credentials.id,
            "client_secret": self.credentials.secret.expose(),
        });
        let response = http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| UserServiceError::Connection(e.to_string()))?;
        match response.status() {
            StatusCode::OK => {
                let envelope: Envelope = response
                    .json()
                    .await
                    .map_err(|e| UserServiceError::Decode(e.to_string()))?;
                self.set_status(ACCEPTED);
                Ok((
                    envelope.data.access_token,
                    Duration::from_secs(envelope.data.expires_in),
                ))
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.set_status(REJECTED);
                Err(UserServiceError::CredentialsRejected)
            }
            other => Err(UserServiceError::Status(other.as_u16())),
        }
    }

    fn set_status(&self, status: u8) {
        let before = self.status.swap(status, Ordering::Relaxed);
        if before == status {
            return;
        }
        if status == REJECTED {
            tracing::error!(
                client_id = self.credentials.id,
                "user-service rejected order-service's credentials \
                 (AUTH_SERVICE_CLIENT_ID / AUTH_SERVICE_CLIENT_SECRET): orders cannot be verified"
            );
        } else if before == REJECTED {
            tracing::info!("user-service accepts order-service's credentials again");
        }
    }
}
