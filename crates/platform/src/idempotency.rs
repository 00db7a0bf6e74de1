//! Idempotency keys on writes (the IETF draft "The Idempotency-Key HTTP Header
//! Field", as Stripe does it): a client that sends `Idempotency-Key` may repeat
//! the request, after a timeout say, without writing twice.
//!
//! The database decides, so it holds across replicas and on both backends:
//! [`enforce`] claims the key (scoped by the token's subject) with one upsert
//! before the handler runs; the handler's write records its answer in its own
//! transaction ([`Recorder`]); a repeat with the same method, path and body gets
//! that answer again with `Idempotent-Replayed: true`; a different request under
//! the same key is 422; a repeat while the first is running is 409. Only
//! successes are kept: after an error the claim is released and a repeat runs
//! anew. A claim left by a request that never finished (the process died) can be
//! taken over after [`CLAIM_LEASE`]. Keys expire after [`KEY_TTL`] and are pruned.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::app::BackgroundTask;
use crate::auth::{Caller, Secret};
use crate::body::MAX_BODY_BYTES;
use crate::db::{Database, DbError, SqlParam, Transaction, now};
use crate::error::{ApiError, ApiResponse};

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The header of a replayed answer.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// How long a key (and its answer) is kept.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a claim without an answer blocks repeats: longer than any request may run.
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);
/// Longest key accepted.
const MAX_KEY_LEN: usize = 255;
const PRUNE_EVERY: Duration = Duration::from_secs(600);

const CLAIM: &str = "INSERT INTO idempotency_keys \
     (subject, idempotency_key, fingerprint, claim, claimed_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (subject, idempotency_key) DO UPDATE SET \
     fingerprint = excluded.fingerprint, claim = excluded.claim, response_status = NULL, \
     response_body = NULL, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at \
     WHERE idempotency_keys.expires_at <= $5 \
     OR (idempotency_keys.response_status IS NULL AND idempotency_keys.claimed_at <= $7) \
     RETURNING claim";
const FIND: &str = "SELECT fingerprint, response_status, response_body FROM idempotency_keys \
     WHERE subject = $1 AND idempotency_key = $2";
const COMPLETE: &str = "UPDATE idempotency_keys SET response_status = $4, response_body = $5 \
     WHERE subject = $1 AND idempotency_key = $2 AND claim = $3 AND response_status IS NULL";
const RELEASE: &str = "DELETE FROM idempotency_keys \
     WHERE subject = $1 AND idempotency_key = $2 AND claim = $3 AND response_status IS NULL";
const PRUNE: &str = "DELETE FROM idempotency_keys WHERE expires_at <= $1";

/// A request's claim on its key: the handler's write completes it.
#[derive(Debug, Clone)]
pub struct Pending {
    subject: String,
    key: String,
    claim: String,
}

/// An answer kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: String,
}

impl StoredAnswer {
    /// What `response` will send.
    pub fn of<T: Serialize>(response: &ApiResponse<T>) -> Self {
        let (status, bytes) = response.to_bytes();
        Self {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

impl IntoResponse for StoredAnswer {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")),
        ];
        (status, headers, self.body).into_response()
    }
}

/// The `Idempotency-Key` request header, for the OpenAPI document of an idempotent operation.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// A key the client chooses per operation (a UUID, say; 1 to 255 visible ASCII
    /// characters). A repeat with the same key and request within 24 h gets the
    /// first answer again, with `Idempotent-Replayed: true`, instead of writing twice.
    #[serde(rename = "Idempotency-Key")]
    #[param(pattern = "^[!-~]{1,255}$", min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
}

/// What a handler sees: the claim of its request, if it came with a key.
#[derive(Debug, Clone, Default)]
pub struct Idempotency(pub Option<Pending>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<Pending>().cloned()))
    }
}

impl Idempotency {
    /// How the write records its answer, built by `answer` from what it wrote.
    pub fn recorder<'a, T>(
        &'a self,
        answer: &'a (dyn Fn(&T) -> StoredAnswer + Send + Sync),
    ) -> Option<Recorder<'a, T>> {
        self.0.as_ref().map(|pending| Recorder { pending, answer })
    }
}

/// Records an idempotent request's answer in the transaction of its write.
pub struct Recorder<'a, T> {
    pending: &'a Pending,
    answer: &'a (dyn Fn(&T) -> StoredAnswer + Send + Sync),
}

impl<T> Recorder<'_, T> {
    /// Stores the answer to `written` with the key, before the write commits.
    ///
    /// # Errors
    /// [`DbError`]; `Unavailable` when the claim was taken over meanwhile (the
    /// request outlived [`CLAIM_LEASE`]), so the write must not commit.
    pub async fn record(&self, transaction: &mut Transaction, written: &T) -> Result<(), DbError> {
        let answer = (self.answer)(written);
        let status = i32::from(answer.status);
        let p = self.pending;
        let params: [&dyn SqlParam; 5] = [&p.subject, &p.key, &p.claim, &status, &answer.body];
        match transaction.execute(COMPLETE, &params).await? {
            0 => Err(DbError::Unavailable(
                "the idempotency key's claim expired before the write".to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

/// The key of a request: 1 to 255 visible ASCII characters, one header.
fn key_of(parts: &Parts) -> Result<Option<String>, ApiError> {
    let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let usable = values.next().is_none()
        && (1..=MAX_KEY_LEN).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_graphic());
    if !usable {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            "must be one header of 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// What [`enforce`] works with: the database that decides, and the key of the
/// requests' fingerprints.
#[derive(Clone)]
pub struct Guard {
    db: Database,
    fingerprint_key: Arc<[u8; 32]>,
}

impl Guard {
    /// The key is derived from `secret`, one every replica of the service shares
    /// (a client secret): a body may hold a password (`POST /api/v1/users`), and
    /// a plain hash of it kept for a day could be guessed offline by whoever reads
    /// the table. Changing the secret only makes keys in flight unrecognised (a
    /// repeat is then 422), never replays a wrong answer.
    pub fn new(db: Database, secret: &Secret) -> Self {
        Self {
            db,
            fingerprint_key: Arc::new(fingerprint_key(secret)),
        }
    }
}

fn fingerprint_key(secret: &Secret) -> [u8; 32] {
    let mut derive = Sha256::new();
    derive.update(b"idempotency-key fingerprint\0");
    derive.update(secret.expose().as_bytes());
    derive.finalize().into()
}

/// HMAC-SHA-256 of method, path and body: what "the same request" means.
fn fingerprint(key: &[u8; 32], parts: &Parts, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(parts.method.as_str().as_bytes());
    mac.update(b"\n");
    mac.update(parts.uri.path().as_bytes());
    mac.update(b"\n");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What became of a claim.
enum Claimed {
    Fresh(Pending),
    Replay(StoredAnswer),
}

/// Middleware on idempotent routes: claims the key, replays, or refuses; releases
/// the claim when the handler did not succeed. Requests without the header pass.
pub async fn enforce(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let db = &guard.db;
    let (mut parts, body) = request.into_parts();
    let key = match key_of(&parts) {
        Ok(Some(key)) => key,
        Ok(None) => return next.run(Request::from_parts(parts, body)).await,
        Err(err) => return err.into_response(),
    };
    let subject =
        match <Caller as OptionalFromRequestParts<()>>::from_request_parts(&mut parts, &()).await {
            Ok(caller) => caller.map_or_else(|| "anonymous".to_owned(), |c| c.subject().to_owned()),
            Err(err) => return err.into_response(),
        };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::PayloadTooLarge {
            limit_bytes: MAX_BODY_BYTES,
        }
        .into_response();
    };
    let fingerprint = fingerprint(&guard.fingerprint_key, &parts, &bytes);
    let pending = match claim(db, subject, key, &fingerprint).await {
        Ok(Claimed::Fresh(pending)) => pending,
        Ok(Claimed::Replay(answer)) => return answer.into_response(),
        Err(err) => return err.into_response(),
    };
    parts.extensions.insert(pending.clone());
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // After a recorded answer this finds nothing to delete; after anything else
    // (an error, a no-op that wrote nothing) the key is free again.
    release(db, &pending).await;
    response
}

/// Claims `key` for `subject`, or says why not.
async fn claim(
    db: &Database,
    subject: String,
    key: String,
    fingerprint: &str,
) -> Result<Claimed, ApiError> {
    let claim = uuid::Uuid::new_v4().to_string();
    let at = now();
    let expires = at + KEY_TTL;
    let stale = at - CLAIM_LEASE;
    let fingerprint = fingerprint.to_owned();
    let params: [&dyn SqlParam; 7] = [&subject, &key, &fingerprint, &claim, &at, &expires, &stale];
    if db.query_opt(CLAIM, &params).await?.is_some() {
        return Ok(Claimed::Fresh(Pending {
            subject,
            key,
            claim,
        }));
    }
    let Some(row) = db.query_opt(FIND, &[&subject, &key]).await? else {
        // Released between the two statements: the first request failed just now.
        return Err(in_progress());
    };
    if row.get::<String>("fingerprint")? != fingerprint {
        return Err(ApiError::UnprocessableEntity(
            "this Idempotency-Key was used for a different request".to_owned(),
        ));
    }
    match (
        row.get::<Option<i32>>("response_status")?,
        row.get::<Option<String>>("response_body")?,
    ) {
        (Some(status), Some(body)) => Ok(Claimed::Replay(StoredAnswer {
            status: u16::try_from(status).unwrap_or(200),
            body,
        })),
        _ => Err(in_progress()),
    }
}

fn in_progress() -> ApiError {
    ApiError::Conflict(
        "a request with this Idempotency-Key is still being processed; retry later".to_owned(),
    )
}

/// Gives the key back when the handler did not record an answer.
async fn release(db: &Database, pending: &Pending) {
    let params: [&dyn SqlParam; 3] = [&pending.subject, &pending.key, &pending.claim];
    if let Err(err) = db.execute(RELEASE, &params).await {
        // The claim then blocks repeats until its lease ends.
        tracing::warn!(error = %err, "idempotency key not released");
    }
}

/// Deletes expired keys now and every ten minutes until shutdown.
pub fn prune_task(db: Database) -> BackgroundTask {
    Box::new(move |shutdown: CancellationToken| {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                match prune(&db).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "expired idempotency keys pruned"),
                    Err(err) => tracing::warn!(error = %err, "idempotency keys not pruned"),
                }
            }
        })
    })
}

/// Deletes expired keys; returns how many.
///
/// # Errors
/// See [`DbError`].
pub async fn prune(db: &Database) -> Result<u64, DbError> {
    db.execute(PRUNE, &[&now()]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(keys: &[&str], path: &str) -> Parts {
        let mut request = axum::http::Request::post(path);
        for key in keys {
            request = request.header(IDEMPOTENCY_KEY, *key);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_key_is_one_header_of_visible_ascii() {
        assert_eq!(key_of(&parts(&[], "/")).unwrap(), None);
        assert_eq!(
            key_of(&parts(&["order-7f3a"], "/")).unwrap().as_deref(),
            Some("order-7f3a")
        );
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for bad in [vec!["a b"], vec!["a", "b"], vec![long.as_str()]] {
            let err = key_of(&parts(&bad, "/")).unwrap_err();
            assert_eq!(err.code(), "VALIDATION_ERROR");
            assert!(err.to_string().contains("Idempotency-Key"), "{err}");
        }
    }

    #[test]
    fn the_fingerprint_covers_path_and_body_and_depends_on_the_secret() {
        let key = fingerprint_key(&Secret::generate());
        let a = fingerprint(&key, &parts(&[], "/api/v1/orders/1"), b"{}");
        assert_eq!(a, fingerprint(&key, &parts(&[], "/api/v1/orders/1"), b"{}"));
        assert_ne!(a, fingerprint(&key, &parts(&[], "/api/v1/orders/2"), b"{}"));
        assert_ne!(
            a,
            fingerprint(&key, &parts(&[], "/api/v1/orders/1"), b"{ }")
        );
        assert_eq!(a.len(), 64);
        let other = fingerprint_key(&Secret::generate());
        assert_ne!(
            a,
            fingerprint(&other, &parts(&[], "/api/v1/orders/1"), b"{}")
        );
        let plain: String = Sha256::digest(b"POST\n/api/v1/orders/1\n{}")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(a, plain, "a keyed hash, not a plain one");
    }
}
