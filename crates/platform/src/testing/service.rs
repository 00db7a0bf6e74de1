//! A service of the workspace run inside a test, configured and started the way
//! `main` does it, on an ephemeral loopback port.

use std::ops::Deref;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::TestClient;
use crate::app::{Application, Config, Service};
use crate::config::ConfigError;
use crate::db::Database;

/// `S`'s configuration for a test: loopback, an ephemeral port, no rate limit,
/// the database at `database_url`, the test process's signing key and client
/// secrets ([`test_auth`](super::test_auth)); then `overrides` (whole variable names).
///
/// # Panics
/// When a variable is invalid.
pub fn test_config<S: Service>(database_url: &str, overrides: &[(&str, &str)]) -> Config<S> {
    let defaults = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("RATE_LIMIT", "0"),
        ("DATABASE_URL", database_url),
    ]
    .map(|(suffix, value)| (format!("{}_{suffix}", S::ENV_PREFIX), value));
    let variables: Vec<(&str, &str)> = defaults
        .iter()
        .map(|(name, value)| (name.as_str(), *value))
        .chain(
            super::test_auth()
                .vars
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .chain(overrides.iter().copied())
        .collect();
    Config::from_lookup(&crate::config::pairs(&variables)).expect("test configuration")
}

/// Asserts that each `(variable, value)` of `invalid`, set alone, makes `read`
/// refuse the configuration naming that variable.
///
/// # Panics
/// When one is accepted, or refused naming another variable.
pub fn assert_each_names_its_variable<T: std::fmt::Debug>(
    read: impl Fn(&[(&str, &str)]) -> Result<T, ConfigError>,
    invalid: &[(&str, &str)],
) {
    for &(name, value) in invalid {
        let err = read(&[(name, value)]).unwrap_err();
        assert_eq!(err.variable, name);
    }
}

/// `S`'s migrated database at `database_url`, behind a pool of one connection so
/// that every statement reuses the connection the one before it had (a
/// transaction left open would show).
///
/// # Panics
/// When the database cannot be reached or migrated.
pub async fn migrated<S: Service>(database_url: &str) -> Database {
    let variables = [
        ("DATABASE_URL", database_url),
        ("DATABASE_MAX_CONNECTIONS", "1"),
    ]
    .map(|(suffix, value)| (format!("{}_{suffix}", S::ENV_PREFIX), value));
    let variables: Vec<(&str, &str)> = variables.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let lookup = crate::config::pairs(&variables);
    let env = crate::config::Env::new(S::ENV_PREFIX, &lookup);
    let settings = crate::db::DatabaseSettings::from_env(&env, S::DEFAULT_DATABASE, S::NAME)
        .expect("database settings");
    crate::db::connect_and_migrate(&settings, S::MIGRATIONS)
        .await
        .expect("migrated database")
}

/// A service running in the background of a test, with a client for it. It
/// stops when this value drops.
pub struct RunningService {
    pub client: TestClient,
    pub db: Database,
    pub shutdown: CancellationToken,
    stopped: Option<oneshot::Receiver<()>>,
}

impl RunningService {
    /// Builds `S` from `config` and runs it.
    ///
    /// # Panics
    /// When it cannot start.
    pub async fn spawn<S: Service>(config: Config<S>) -> Self {
        let shutdown = CancellationToken::new();
        let app = Application::<S>::build(config, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("{} starts: {e:#}", S::NAME));
        Self::start(app, shutdown)
    }

    /// Runs an application built with `shutdown` as its shutdown token.
    pub fn start<S: Service>(app: Application<S>, shutdown: CancellationToken) -> Self {
        let client = TestClient::new(app.address());
        let db = app.db().clone();
        let (done, stopped) = oneshot::channel();
        tokio::spawn(async move {
            let _ = app.run_until_stopped().await;
            let _ = done.send(());
        });
        Self {
            client,
            db,
            shutdown,
            stopped: Some(stopped),
        }
    }

    /// Stops it and waits until it has: its port is closed and its pool too.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }
}

impl Deref for RunningService {
    type Target = TestClient;

    fn deref(&self) -> &TestClient {
        &self.client
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
