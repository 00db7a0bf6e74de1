//! The circuit breaker around user-service calls, configured as the original's
//! gobreaker, and the gauge that shows its state.

use prometheus::IntGauge;
use tower_resilience_circuitbreaker::{CircuitBreakerLayer, CircuitState};

use crate::config::BreakerSettings;

/// The breaker's state as the contract's gauge encodes it.
pub fn state_code(state: CircuitState) -> i64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::HalfOpen => 1,
        CircuitState::Open => 2,
    }
}

pub fn state_name(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::HalfOpen => "half-open",
        CircuitState::Open => "open",
    }
}

/// Builds the breaker layer from the settings; each state change sets the gauge
/// and is logged as a structured event.
pub fn breaker_layer(settings: &BreakerSettings, state_gauge: IntGauge) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("user-service")
        .failure_rate_threshold(0.5)
        .minimum_number_of_calls(3)
        .sliding_window_type(tower_resilience_circuitbreaker::SlidingWindowType::TimeBased)
        .sliding_window_duration(settings.interval)
        .wait_duration_in_open(settings.timeout)
        .permitted_calls_in_half_open(settings.max_requests)
        .on_state_transition(move |from, to| {
            state_gauge.set(state_code(to));
            tracing::warn!(
                event = "circuit_breaker_state_change",
                breaker = "user-service",
                from = state_name(from),
                to = state_name(to),
                "circuit breaker changed state"
            );
        })
        .build()
        .expect("breaker settings are validated by the config")
}

#[cfg(test)]
mod tests {
    //! The breaker's contract, proven on a stand-in for user-service whose answers
    //! the test scripts, so nothing here depends on timing except the open wait.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tower::{Service, ServiceExt};
    use tower_resilience_circuitbreaker::{CircuitBreaker, CircuitBreakerError, DefaultClassifier};

    use super::*;
    use crate::user_client::{LookupRequest, LookupService, UserLookup, UserServiceError};

    /// A scripted user-service: answers with `outcome` and counts calls.
    #[derive(Clone)]
    struct Scripted {
        calls: Arc<AtomicUsize>,
        outcome: Arc<Mutex<Result<UserLookup, UserServiceError>>>,
        delay: Duration,
    }

    impl Scripted {
        /// The scripted answer, after the delay; counts the call.
        fn respond(&self) -> impl Future<Output = Result<UserLookup, UserServiceError>> + use<> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let outcome = self.outcome.lock().unwrap().clone();
            let delay = self.delay;
            async move {
                tokio::time::sleep(delay).await;
                outcome
            }
        }
    }

    struct Harness {
        breaker: CircuitBreaker<LookupService, DefaultClassifier>,
        scripted: Scripted,
        gauge: IntGauge,
    }

    impl Harness {
        fn new(max_requests: usize, open_for: Duration, delay: Duration) -> Self {
            let scripted = Scripted {
                calls: Arc::default(),
                outcome: Arc::new(Mutex::new(Ok(UserLookup::NotFound))),
                delay,
            };
            let gauge = IntGauge::new("state", "state").unwrap();
            let settings = BreakerSettings {
                max_requests,
                interval: Duration::from_secs(60),
                timeout: open_for,
            };
            let answering = scripted.clone();
            let service = LookupService::new(tower::service_fn(move |_: LookupRequest| {
                answering.respond()
            }));
            let breaker = breaker_layer(&settings, gauge.clone()).layer_fn(service);
            Self {
                breaker,
                scripted,
                gauge,
            }
        }

        fn answer(&self, outcome: Result<UserLookup, UserServiceError>) {
            *self.scripted.outcome.lock().unwrap() = outcome;
        }

        async fn call(&self) -> Result<UserLookup, CircuitBreakerError<UserServiceError>> {
            let mut breaker = self.breaker.clone();
            breaker
                .ready()
                .await?
                .call(LookupRequest {
                    user_id: 1,
                    request_id: None,
                })
                .await
        }

        fn calls(&self) -> usize {
            self.scripted.calls.load(Ordering::SeqCst)
        }
    }

    fn failure() -> Result<UserLookup, UserServiceError> {
        Err(UserServiceError::Status(503))
    }

    #[tokio::test]
    async fn trips_at_three_failed_calls_and_not_before() {
        let h = Harness::new(3, Duration::from_secs(60), Duration::ZERO);
        h.answer(failure());
        h.call().await.unwrap_err();
        h.call().await.unwrap_err();
        assert_eq!(
            h.breaker.state_sync(),
            CircuitState::Closed,
            "2 calls are below the minimum"
        );
        h.call().await.unwrap_err();
        assert_eq!(h.breaker.state_sync(), CircuitState::Open);
        assert_eq!(h.gauge.get(), 2);
    }

    #[tokio::test]
    async fn a_failure_rate_below_half_keeps_it_closed() {
        let h = Harness::new(3, Duration::from_secs(60), Duration::ZERO);
        for _ in 0..3 {
            h.answer(Ok(UserLookup::NotFound));
            h.call().await.unwrap();
            h.call().await.unwrap();
            h.answer(failure());
            h.call().await.unwrap_err();
        }
        assert_eq!(
            h.breaker.state_sync(),
            CircuitState::Closed,
            "1 in 3 failed"
        );
    }

    #[tokio::test]
    async fn not_found_answers_never_open_it() {
        let h = Harness::new(3, Duration::from_secs(60), Duration::ZERO);
        h.answer(Ok(UserLookup::NotFound));
        for _ in 0..50 {
            assert_eq!(h.call().await.unwrap(), UserLookup::NotFound);
        }
        assert_eq!(h.breaker.state_sync(), CircuitState::Closed);
    }

    #[tokio::test]
    async fn open_rejects_without_calling() {
        let h = Harness::new(3, Duration::from_secs(60), Duration::ZERO);
        h.answer(failure());
        for _ in 0..3 {
            h.call().await.unwrap_err();
        }
        let before = h.calls();
        for _ in 0..10 {
            assert!(h.call().await.unwrap_err().is_circuit_open());
        }
        assert_eq!(h.calls(), before, "no call reached user-service while open");
    }

    async fn opened(max_requests: usize, delay: Duration) -> Harness {
        let h = Harness::new(max_requests, Duration::from_millis(50), delay);
        h.answer(failure());
        for _ in 0..3 {
            h.call().await.unwrap_err();
        }
        assert_eq!(h.breaker.state_sync(), CircuitState::Open);
        tokio::time::sleep(Duration::from_millis(80)).await;
        h
    }

    #[tokio::test]
    async fn half_open_admits_exactly_max_requests_concurrent_calls() {
        let h = opened(3, Duration::from_millis(200)).await;
        h.answer(Ok(UserLookup::NotFound));
        let before = h.calls();
        let results = futures::future::join_all((0..6).map(|_| h.call())).await;
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        let rejected = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.is_circuit_open()))
            .count();
        assert_eq!((admitted, rejected), (3, 3));
        assert_eq!(h.calls() - before, 3);
        assert_eq!(
            h.breaker.state_sync(),
            CircuitState::Closed,
            "3 successes close it"
        );
        assert_eq!(h.gauge.get(), 0);
    }

    #[tokio::test]
    async fn one_half_open_failure_reopens() {
        let h = opened(3, Duration::ZERO).await;
        h.call().await.unwrap_err();
        assert_eq!(h.breaker.state_sync(), CircuitState::Open);
        assert_eq!(h.gauge.get(), 2);
        assert!(h.call().await.unwrap_err().is_circuit_open());
    }

    #[tokio::test]
    async fn half_open_closes_after_max_requests_successes() {
        let h = opened(2, Duration::ZERO).await;
        h.answer(Ok(UserLookup::NotFound));
        h.call().await.unwrap();
        assert_eq!(h.breaker.state_sync(), CircuitState::HalfOpen);
        assert_eq!(h.gauge.get(), 1);
        h.call().await.unwrap();
        assert_eq!(h.breaker.state_sync(), CircuitState::Closed);
    }
}
