//! order-service: orders over PostgreSQL or embedded SQLite, validating users
//! against user-service through a circuit breaker, degrading to "accept and
//! verify later" when user-service is away.

pub mod breaker;
pub mod config;
pub mod error;
pub mod model;
pub mod routes;
pub mod service;
pub mod service_token;
pub mod store;
pub mod user_cache;
pub mod user_client;
pub mod verify;

use std::sync::Arc;

use serde_json::json;

use breaker::state_name;
use config::OrderSettings;
use platform::app::{BackgroundTask, Composition, Service};
use platform::auth::{Verifier as TokenVerifier, failure_counter};
use platform::config::{ConfigError, Env};
use platform::db::{Database, Migrations};
use platform::events::broadcast::{self, Liveness};
use platform::events::relay::{self, OutboxMetrics};
use platform::events::{Handler, consumer};
use platform::server::Platform;
use routes::AppState;
use service_token::ServiceToken;
use user_cache::UserCache;
use user_client::UserClient;
use verify::Verifier;

/// The order service: its API, the user-service client behind a circuit
/// breaker, and the background re-verification of unverified orders.
#[derive(Debug, Clone)]
pub struct OrderService;

impl Service for OrderService {
    /// `ORDER_SERVICE_*`, the contract's `CIRCUIT_BREAKER_*` and the shared `AUTH_*`.
    type Settings = OrderSettings;
    type ApiDoc = routes::ApiDoc;
    const NAME: &'static str = "order-service";
    const ABOUT: &'static str =
        "Order management: orders checked against user-service through a circuit breaker.";
    const ENV_PREFIX: &'static str = "ORDER_SERVICE";
    const DEFAULT_PORT: u16 = 8082;
    const DEFAULT_DATABASE: &'static str = "orderdb";
    /// Versioned SQL, embedded in the binary: its own files and the platform's
    /// outbox and idempotency tables. A new file is listed here too (a test
    /// compares the list with the folders).
    const MIGRATIONS: Migrations = platform::embed_migrations![
        "20261124000001_create_orders.sql",
        "20261203000001_identity.sql",
        OUTBOX,
        "20261205000001_list_indexes.sql",
        IDEMPOTENCY_KEYS,
        OUTBOX_TRACE_CONTEXT,
    ];

    fn settings(env: &Env<'_>) -> Result<OrderSettings, ConfigError> {
        OrderSettings::from_env(env)
    }

    fn compose(config: OrderSettings, db: Database, platform: &Platform) -> Composition {
        let token = Arc::new(ServiceToken::new(
            &config.user_service_url,
            config.auth.service.clone(),
        ));
        let (cache, follow_users) = user_cache(&config, platform);
        let users = UserClient::new(
            &config.user_service_url,
            config.user_service_timeout,
            &config.breaker,
            Arc::clone(&token),
            &platform.metrics,
        )
        .with_cache(cache);
        let tokens = Arc::new(TokenVerifier::with_jwks(
            config.auth.verifier.clone(),
            config.auth.jwks.url.clone(),
            user_client::http_client(config.user_service_timeout),
            failure_counter(&platform.metrics, Self::NAME),
        ));
        tracing::info!(user_service = %config.user_service_url, jwks = %config.auth.jwks.url, "order-service configured");
        let mut background = background_work(&config, &db, &users, &tokens, platform);
        background.extend(follow_users);
        let breaker = users.clone();
        let idempotency =
            platform::idempotency::Guard::new(db.clone(), &config.auth.service.secret);
        Composition {
            api: routes::router(AppState {
                db,
                users,
                idempotency,
            })
            .layer(tokens.layer()),
            // Informational only: order-service stays healthy while user-service is down.
            health_info: Some(Arc::new(move || {
                json!({
                    "user_service_circuit": state_name(breaker.state()),
                    "user_service_credentials": token.status(),
                })
            })),
            background,
        }
    }
}

/// The user cache, and the subscription to user events that keeps it honest
/// (every replica its own). Off with a zero TTL, and without an event bus.
fn user_cache(
    config: &OrderSettings,
    platform: &Platform,
) -> (Arc<UserCache>, Option<BackgroundTask>) {
    let settings = &config.user_cache;
    let has_bus = config.events.nats_url.is_some() || config.events.in_process.is_some();
    if !settings.enabled() || !has_bus {
        if settings.enabled() {
            tracing::info!("user cache off: no event bus (NATS_URL) to invalidate it");
        }
        return (Arc::new(UserCache::disabled()), None);
    }
    let liveness = Liveness::default();
    let cache = Arc::new(UserCache::new(
        settings,
        liveness.clone(),
        &platform.metrics,
    ));
    let listener = Arc::clone(&cache);
    let follow = broadcast::subscribe_all(
        &config.events,
        "events.users.*",
        liveness,
        Arc::new(move |event| listener.on_event(event)),
    );
    tracing::info!(
        ttl_ms = settings.ttl.as_millis() as u64,
        capacity = settings.capacity,
        "user cache on"
    );
    (cache, follow)
}

/// What runs beside the API: the re-verification of unverified orders, the
/// JWKS refresh, the outbox relay, and the consumer of user events (a user
/// deleted or deactivated has its pending orders cancelled).
fn background_work(
    config: &OrderSettings,
    db: &Database,
    users: &UserClient,
    tokens: &Arc<TokenVerifier>,
    platform: &Platform,
) -> Vec<BackgroundTask> {
    let verifier = Verifier::new(
        db.clone(),
        users.clone(),
        config.verifier.clone(),
        &platform.metrics,
    );
    let refresher = Arc::clone(tokens);
    let refresh_every = config.auth.jwks.refresh_interval;
    let outbox = OutboxMetrics::register(&platform.metrics, OrderService::NAME);
    let mut work: Vec<BackgroundTask> = vec![
        platform::idempotency::prune_task(db.clone()),
        Box::new(move |shutdown| verifier.spawn(shutdown)),
        Box::new(move |shutdown| refresher.spawn_refresh(refresh_every, shutdown)),
        relay::task(
            db.clone(),
            config.events.clone(),
            outbox,
            OrderService::NAME,
        ),
    ];
    let orders = db.clone();
    let on_user: Handler = Arc::new(move |event| {
        let db = orders.clone();
        Box::pin(async move { service::on_user_event(&db, event).await })
    });
    work.extend(consumer::subscribe(
        &config.events,
        "order-service",
        "events.users.*",
        on_user,
    ));
    work
}
/// Everything order-service reads at start.
pub type Config = platform::app::Config<OrderService>;

/// A bound, ready-to-run order-service.
pub type Application = platform::app::Application<OrderService>;

#[cfg(test)]
platform::service_tests!(crate::OrderService);
