//! Keeps a [`SnapshotHandle`] current with one blocking watch: read at index N, block until the
//! catalog moves past N (or the wait ends), swap the copy in, repeat.
//!
//! When the source fails (no manager reachable), the server keeps answering from the last copy:
//! stale answers beat no answers for discovery (Consul's `allow_stale`). The outage is logged once
//! when it starts and once when it ends, not on every retry.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shoal_model::catalog::snapshot::Snapshot;
#[cfg(feature = "registry")]
use shoal_registry::{Manager, node::worker::Worker};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::server::SnapshotHandle;

/// Where snapshots come from: a blocking read of the catalog as discovery sees it.
#[async_trait]
pub trait SnapshotSource: Send + Sync {
    /// The catalog once its index moved past `index`, or as it is when `wait` passed (shared: a
    /// manager hands out the copy it keeps for its next partial rebuild).
    async fn snapshot(&self, index: u64, wait: Duration) -> Result<Arc<Snapshot>, String>;
}

/// A manager reads its own replica.
#[cfg(feature = "registry")]
#[async_trait]
impl SnapshotSource for Manager {
    async fn snapshot(&self, index: u64, wait: Duration) -> Result<Arc<Snapshot>, String> {
        Ok(self.catalog_snapshot(index, wait).await)
    }
}

/// A worker asks the managers over the cluster port.
#[cfg(feature = "registry")]
#[async_trait]
impl SnapshotSource for Worker {
    async fn snapshot(&self, index: u64, wait: Duration) -> Result<Arc<Snapshot>, String> {
        self.catalog_snapshot(index, wait).await.map(Arc::new).map_err(|e| e.to_string())
    }
}

#[async_trait]
impl<S: SnapshotSource + ?Sized> SnapshotSource for Arc<S> {
    async fn snapshot(&self, index: u64, wait: Duration) -> Result<Arc<Snapshot>, String> {
        (**self).snapshot(index, wait).await
    }
}

/// The loop that feeds a [`SnapshotHandle`] from a [`SnapshotSource`].
pub struct Feed<S> {
    source: S,
    handle: SnapshotHandle,
    wait: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl<S: SnapshotSource> Feed<S> {
    /// How long one blocking read waits for a change.
    pub const WAIT: Duration = Duration::from_secs(60);
    /// The first pause after a failed read; it doubles on every failure in a row …
    pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
    /// … up to this.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

    /// A feed of `handle` from `source` with the default timings.
    pub fn new(source: S, handle: SnapshotHandle) -> Feed<S> {
        Feed { source, handle, wait: Self::WAIT, min_backoff: Self::MIN_BACKOFF, max_backoff: Self::MAX_BACKOFF }
    }

    /// Another blocking wait (tests).
    pub fn with_wait(mut self, wait: Duration) -> Feed<S> {
        self.wait = wait;
        self
    }

    /// Other retry pauses (tests).
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Feed<S> {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }

    /// Runs until `shutdown` completes. Never fails: errors are retried with backoff while the
    /// handle keeps the last snapshot.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = self.min_backoff;
        // Since when the source has been failing, and how often.
        let mut outage: Option<(Instant, u32)> = None;
        loop {
            let index = self.handle.index();
            let result = tokio::select! {
                r = self.source.snapshot(index, self.wait) => r,
                () = &mut shutdown => return,
            };
            match result {
                Ok(snap) => {
                    if let Some((since, failures)) = outage.take() {
                        info!(index = snap.index, failures, down_for = ?since.elapsed(), "catalog feed recovered: a manager answered");
                    }
                    backoff = self.min_backoff;
                    // An index going backwards (a rebuilt cluster, a manager restored from an
                    // older snapshot) is taken as the new truth, as Consul's blocking clients reset.
                    if snap.index != index || index == 0 {
                        debug!(from = index, to = snap.index, "catalog snapshot swapped in");
                        self.handle.set(snap);
                    }
                }
                Err(error) => {
                    match &mut outage {
                        None => {
                            warn!(index, %error, "serving the last copy of the catalog (index {index}) until a manager answers");
                            outage = Some((Instant::now(), 1));
                        }
                        Some((_, failures)) => {
                            *failures += 1;
                            debug!(index, %error, failures = *failures, "catalog feed still failing");
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => return,
                    }
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }
}

/// The CLI spawns the feed on a multi-threaded runtime: the futures must be `Send`.
#[cfg(all(test, feature = "registry"))]
#[allow(dead_code)]
fn feeds_of_the_registry_are_send(manager: Arc<Manager>, worker: Arc<Worker>, handle: SnapshotHandle) {
    fn spawnable<T: Send + 'static>(_: T) {}
    spawnable(Feed::new(manager, handle.clone()).run(std::future::pending()));
    spawnable(Feed::new(worker, handle).run(std::future::pending()));
}
