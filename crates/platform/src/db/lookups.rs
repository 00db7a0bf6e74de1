//! Lookups pipelined over a few shared PostgreSQL connections.
//!
//! A lookup (one row by its key) costs PostgreSQL a few microseconds; a pool
//! checkout per request, its own round trip and a server process woken for that
//! one statement cost more. tokio-postgres pipelines the statements of every task
//! that shares one client: they go out together, one server process answers them
//! in one pass, and the answers come back together. So lookups run on a few
//! long-lived clients shared by every request (issue 17: one shared client served
//! 1.7 times the GETs of a pool checkout per request, docs/BENCHMARKS.md), while
//! transactions and scans stay on the pool: a server process answers a pipeline
//! in order, and a slow statement there would hold up every lookup behind it.
//!
//! Hand-written because a pool hands a connection to one task at a time; what is
//! added here is keeping a shared client connected. Its statements are prepared
//! once and cached by deadpool's `ClientWrapper`, as the pool's connections are.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::DbError;

/// The shared clients of one database, each connected on first use and again
/// after its connection broke.
pub(super) struct SharedClients {
    config: tokio_postgres::Config,
    /// How long a lookup waits for a connection to be made before it fails.
    connect_timeout: Duration,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    closed: AtomicBool,
}

#[derive(Default)]
struct Slot {
    current: Mutex<Option<Arc<ClientWrapper>>>,
    /// Held while connecting, so that one lookup connects and the others wait for it.
    connecting: tokio::sync::Mutex<()>,
}

impl SharedClients {
    /// `count` shared clients (at least one) on `config`.
    pub(super) fn new(
        config: tokio_postgres::Config,
        count: usize,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            config,
            connect_timeout,
            slots: (0..count.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// The first row of a statement, if any, run on the next shared client.
    /// A lookup that finds its client's connection broken (the server restarted
    /// or ended it, and the client had not noticed yet) runs once more on a new
    /// connection: it only reads, so running it twice changes nothing.
    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let shared = self.client(slot).await?;
        match query_opt(&shared, sql, params).await.map_err(DbError::from) {
            Err(DbError::Unavailable(_)) => {
                slot.discard(&shared);
                let fresh = self.client(slot).await?;
                Ok(query_opt(&fresh, sql, params).await?)
            }
            result => result,
        }
    }

    /// Drops every client (their connections close once the lookups on them
    /// end); later lookups fail as the closed pool's checkouts do.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in &self.slots {
            lock(&slot.current).take();
        }
    }

    async fn client(&self, slot: &Slot) -> Result<Arc<ClientWrapper>, DbError> {
        if let Some(shared) = slot.live() {
            return Ok(shared);
        }
        tokio::time::timeout(self.connect_timeout, self.reconnect(slot))
            .await
            .map_err(|_| DbError::Unavailable("timed out connecting to the database".into()))?
    }

    async fn reconnect(&self, slot: &Slot) -> Result<Arc<ClientWrapper>, DbError> {
        let _connecting = slot.connecting.lock().await;
        // Another lookup may have connected while this one waited.
        if let Some(shared) = slot.live() {
            return Ok(shared);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(DbError::Unavailable(
                "the database's connections are closed".into(),
            ));
        }
        let (client, connection) = self.config.connect(NoTls).await?;
        // The wrapper ends this task when the last lookup on it lets go.
        let task = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %err, "a shared database connection ended");
            }
        });
        let shared = Arc::new(ClientWrapper::new(client, task));
        *lock(&slot.current) = Some(Arc::clone(&shared));
        Ok(shared)
    }
}

impl Slot {
    /// The slot's client, unless it has none or its connection is gone.
    fn live(&self) -> Option<Arc<ClientWrapper>> {
        lock(&self.current)
            .as_ref()
            .filter(|shared| !shared.is_closed())
            .cloned()
    }

    /// Forgets `broken` if it is still the slot's client, so the next lookup connects.
    fn discard(&self, broken: &Arc<ClientWrapper>) {
        let mut current = lock(&self.current);
        if current
            .as_ref()
            .is_some_and(|shared| Arc::ptr_eq(shared, broken))
        {
            current.take();
        }
    }
}

/// The first row of `sql` on `client`, its statement prepared once per client.
async fn query_opt(
    client: &ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_opt(&statement, params).await
}

/// No code here panics while holding this lock; were one to, the slot holds a
/// client or nothing, either of them usable, so it is used on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
