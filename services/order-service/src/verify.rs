//! Re-verification of orders created while user-service could not answer.
//!
//! A background loop sweeps the unverified orders (the flag lives in the database,
//! so nothing is lost across restarts), groups them by user, and looks each user up
//! with bounded concurrency. Found and active: the orders are verified. Not found
//! or inactive: the orders are cancelled with the reason. Still unavailable: they
//! wait for the next sweep. While the circuit is open the lookups are rejected
//! without a call, and the first sweep after the open period is what probes
//! user-service again (half-open), so recovery needs no traffic from clients.

use std::collections::BTreeMap;

use futures::StreamExt;
use platform::db::{Database, DbError};
use prometheus::IntCounterVec;
use tokio_util::sync::CancellationToken;

use crate::config::OrderVerifierSettings;
use crate::store;
use crate::user_client::{UserClient, UserLookup};
use platform::metrics::Metrics;

/// Counts outcomes per order: `verified`, `cancelled`, `deferred`.
#[derive(Clone)]
pub struct Verifier {
    db: Database,
    users: UserClient,
    settings: OrderVerifierSettings,
    results: IntCounterVec,
}

/// What one sweep did, by number of orders.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub verified: u64,
    pub cancelled: u64,
    pub deferred: u64,
}

impl Verifier {
    /// Registers `order_service_order_verifications_total{result}` in `metrics`.
    pub fn new(
        db: Database,
        users: UserClient,
        settings: OrderVerifierSettings,
        metrics: &Metrics,
    ) -> Self {
        let results = metrics.labelled_counter(
            "order_service_order_verifications_total",
            "Re-verification results of orders created while user-service was unavailable",
            "result",
            &["verified", "cancelled", "deferred"],
        );
        Self {
            db,
            users,
            settings,
            results,
        }
    }

    /// Sweeps every `interval` until `shutdown`.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.settings.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = shutdown.cancelled() => break,
                }
                // A sweep is cancelled with the service; each batch of writes is
                // one transaction, so stopping between them leaves nothing half done.
                tokio::select! {
                    result = self.sweep() => match result {
                        Ok(report) if report != SweepReport::default() => {
                            tracing::info!(?report, "order verification sweep");
                        }
                        Ok(_) => {}
                        Err(err) => tracing::warn!(error = %err, "order verification sweep failed"),
                    },
                    () = shutdown.cancelled() => break,
                }
            }
        })
    }

    /// One pass over (at most a batch of) the unverified orders.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub async fn sweep(&self) -> Result<SweepReport, DbError> {
        let orders = store::unverified(&self.db, self.settings.batch_size).await?;
        let mut by_user: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for order in orders {
            by_user.entry(order.user_id).or_default().push(order.id);
        }
        let reports = futures::stream::iter(by_user)
            .map(|(user_id, ids)| self.settle(user_id, ids))
            .buffer_unordered(self.settings.workers)
            .collect::<Vec<_>>()
            .await;
        let mut total = SweepReport::default();
        for report in reports {
            let report = report?;
            total.verified += report.verified;
            total.cancelled += report.cancelled;
            total.deferred += report.deferred;
        }
        Ok(total)
    }

    async fn settle(&self, user_id: i64, ids: Vec<i64>) -> Result<SweepReport, DbError> {
        let mut report = SweepReport::default();
        match self.users.get_user(user_id, None).await {
            Ok(UserLookup::Found(user)) if user.active => {
                report.verified = store::mark_verified(&self.db, &ids).await?;
            }
            Ok(UserLookup::Found(_)) => {
                report.cancelled =
                    store::reject_unverified(&self.db, &ids, "user is not active").await?;
            }
            Ok(UserLookup::NotFound) => {
                report.cancelled =
                    store::reject_unverified(&self.db, &ids, "user not found").await?;
            }
            Err(_) => report.deferred = ids.len() as u64,
        }
        self.results
            .with_label_values(&["verified"])
            .inc_by(report.verified);
        self.results
            .with_label_values(&["cancelled"])
            .inc_by(report.cancelled);
        self.results
            .with_label_values(&["deferred"])
            .inc_by(report.deferred);
        Ok(report)
    }
}
