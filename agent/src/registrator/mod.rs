//! The registrator: turns this node's containers into catalog instances (Shoal's tasks and, when
//! enabled, containers that name a service the Registrator way) and never leaves a stale one.
//!
//! ```text
//! ContainerSource::events() ──(subscribed first)──────────────┐
//! ContainerSource::list() ─▶ conventions::derive ─▶ Sync{Task}, Sync{Registrator} (one write,
//!        ▲ at start, after the stream breaks,                     skipped when the catalog
//!        │ every 60 s, after a failed write                       already holds exactly that)
//!        │                                                        │
//! event: start/rename/health ─▶ inspect ─▶ Register its instances, Deregister those it lost
//!        die/destroy (or gone)  ─▶ inspect ─▶ Deregister its instances
//! ```
//!
//! Why it cannot leave a stale entry (`discovery.md` §1.7): a resync sends the *full* list per
//! source, and `Sync` removes every instance of that source on the node that is not in it, so
//! whatever was missed — a dropped event, a container that died while the agent was away, an
//! engine restart — is gone by the next resync. Ownership is the node (its catalog name) and the
//! source, never a hostname or a pattern in the ID. Events are applied one at a time in order
//! (Registrator's are not), and a broken event stream is resubscribed and followed by a resync.

pub mod conventions;
mod reconcile;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use shoal_model::CommandResult;
use shoal_model::catalog::{CatalogCommand, Source};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use conventions::{
    ContainerFacts, Derivation, DockerHealth, HostBinding, NodeFacts, PortKey, Proto, derive, instances,
};

use crate::link::CatalogLink;
use reconcile::{SOURCES, Tracked, Wanted, container_commands, resync_commands, tracked};

/// What happened to a container, as far as the registrator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerAction {
    /// It started (or restarted, or was unpaused).
    Started,
    /// It was renamed (its instance IDs change).
    Renamed,
    /// Its Docker health changed.
    Health,
    /// Its process ended.
    Died,
    /// It was removed.
    Destroyed,
}

impl ContainerAction {
    /// Whether the container is no longer running after it: its instances go even when the engine
    /// cannot be asked about it.
    pub fn is_gone(self) -> bool {
        matches!(self, ContainerAction::Died | ContainerAction::Destroyed)
    }
}

/// A container event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The container's ID.
    pub id: String,
    /// What happened.
    pub action: ContainerAction,
}

/// Where the registrator learns about containers (the Docker engine; a fake in tests).
#[async_trait]
pub trait ContainerSource: Send + Sync {
    /// Every running container.
    async fn list(&self) -> Result<Vec<ContainerFacts>, String>;
    /// One container; `None` when it does not exist (any more).
    async fn inspect(&self, id: &str) -> Result<Option<ContainerFacts>, String>;
    /// Container events from now on. The stream ends, or yields an error, when the connection to
    /// the engine breaks; it is subscribed again then.
    fn events(&self) -> BoxStream<'static, Result<ContainerEvent, String>>;
}

/// The registrator's timings.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How often a full resync runs when nothing else asks for one.
    pub resync_every: Duration,
    /// The first wait after a failure (doubling up to `backoff_max`).
    pub backoff_min: Duration,
    /// The longest wait after a failure.
    pub backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            resync_every: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Registers this node's containers until the process ends (or the task is aborted).
pub async fn run(link: Arc<dyn CatalogLink>, source: Arc<dyn ContainerSource>, node: NodeFacts) {
    run_with(link, source, node, Timing::default()).await
}

/// [`run`] with other timings (tests).
pub async fn run_with(link: Arc<dyn CatalogLink>, source: Arc<dyn ContainerSource>, node: NodeFacts, timing: Timing) {
    let mut r = Registrator { link, source, node, tracked: Tracked::new() };
    let mut backoff = timing.backoff_min;
    loop {
        // Subscribe first, so that nothing that happens during the resync is missed: a forwarder
        // polls the stream (which is what opens it) while the resync runs.
        let (tx, rx) = mpsc::unbounded_channel();
        let forwarder = tokio::spawn(forward(r.source.events(), tx));
        let began = Instant::now();
        let why = r.follow(rx, &timing).await;
        forwarder.abort();
        if began.elapsed() > timing.backoff_max {
            backoff = timing.backoff_min;
        }
        tracing::warn!(error = %why, retry_in = ?backoff, "container event stream ended; resubscribing and resyncing");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(timing.backoff_max);
    }
}

type Events = mpsc::UnboundedReceiver<Result<ContainerEvent, String>>;

/// Moves events into the channel until the stream ends or fails (the end closes the channel).
async fn forward(
    mut events: BoxStream<'static, Result<ContainerEvent, String>>,
    tx: mpsc::UnboundedSender<Result<ContainerEvent, String>>,
) {
    while let Some(e) = events.next().await {
        let failed = e.is_err();
        if tx.send(e).is_err() || failed {
            return;
        }
    }
}

struct Registrator {
    link: Arc<dyn CatalogLink>,
    source: Arc<dyn ContainerSource>,
    node: NodeFacts,
    /// Container ID → its instance IDs: rebuilt by every resync from the containers and the catalog.
    tracked: Tracked,
}

impl Registrator {
    /// Resyncs, then applies events until the stream ends; what ended it. A failure (listing,
    /// inspecting, writing) asks for a full resync with backoff: the newest state is written, not
    /// the batch that failed.
    async fn follow(&mut self, mut events: Events, timing: &Timing) -> String {
        let mut dirty = true;
        let mut retry = timing.backoff_min;
        let mut retry_at = Instant::now();
        let mut periodic = Instant::now() + timing.resync_every;
        loop {
            if dirty && Instant::now() >= retry_at {
                match self.resync().await {
                    Ok(()) => {
                        dirty = false;
                        retry = timing.backoff_min;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?retry, "registrator resync failed; retrying");
                        retry_at = Instant::now() + retry;
                        retry = (retry * 2).min(timing.backoff_max);
                    }
                }
            }
            tokio::select! {
                msg = events.recv() => match msg {
                    None => return "the stream ended".into(),
                    Some(Err(e)) => return e,
                    // A resync is pending: it covers this event.
                    Some(Ok(_)) if dirty => {}
                    Some(Ok(ev)) => {
                        if let Err(e) = self.on_event(&ev).await {
                            tracing::warn!(container_id = %ev.id, error = %e, "cannot apply a container event; resyncing");
                            dirty = true;
                            retry_at = Instant::now() + retry;
                        }
                    }
                },
                _ = tokio::time::sleep_until(periodic) => {
                    periodic = Instant::now() + timing.resync_every;
                    dirty = true;
                }
                _ = tokio::time::sleep_until(retry_at), if dirty => {}
            }
        }
    }

    /// Lists every container and writes the full list of each source in one entry, unless the
    /// catalog holds exactly that already.
    async fn resync(&mut self) -> Result<(), String> {
        let containers = self.source.list().await.map_err(|e| format!("cannot list containers: {e}"))?;
        let mut wanted: Wanted = SOURCES.iter().map(|s| (*s, Vec::new())).collect();
        let mut ids = BTreeSet::new();
        for c in &containers {
            let d = derive(c, &self.node);
            log_derivation(&c.id, &d);
            for (source, i) in d.instances {
                if !ids.insert(i.id.clone()) {
                    tracing::warn!(container_id = %c.id, service_id = %i.id, "another container has this service ID; not registered");
                    continue;
                }
                wanted.entry(source).or_default().push(i);
            }
        }
        let view = match self.link.node_catalog(0, Duration::ZERO).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read this node's catalog entries; writing the full lists");
                None
            }
        };
        if let Some(cmds) = resync_commands(&self.node.name, &wanted, view.as_ref()) {
            let results =
                self.link.write(cmds.clone()).await.map_err(|e| format!("cannot write to the catalog: {e}"))?;
            for (cmd, r) in cmds.iter().zip(&results) {
                if let CommandResult::Refused(why) = r {
                    if let CatalogCommand::Sync { source, .. } = cmd {
                        return Err(format!("the catalog refused the {} resync: {why}", source.as_str()));
                    }
                    tracing::debug!(error = %why, "catalog refused a health update");
                }
            }
            let count: usize = wanted.values().map(Vec::len).sum();
            tracing::debug!(containers = containers.len(), instances = count, "registrator resynced");
        }
        self.tracked = tracked(&wanted, view.as_ref());
        Ok(())
    }

    /// One container changed: its instances now are registered, the ones it lost removed.
    async fn on_event(&mut self, ev: &ContainerEvent) -> Result<(), String> {
        let facts = match self.source.inspect(&ev.id).await {
            Ok(f) => f,
            // It died or went: its instances go, whatever the engine can tell about it now.
            Err(e) if ev.action.is_gone() => {
                tracing::debug!(container_id = %ev.id, error = %e, "cannot inspect a container that ended");
                None
            }
            Err(e) => return Err(format!("cannot inspect container {}: {e}", ev.id)),
        };
        let d = facts.map(|f| derive(&f, &self.node)).unwrap_or_default();
        log_derivation(&ev.id, &d);
        let now: BTreeSet<String> = d.instances.iter().map(|(_, i)| i.id.clone()).collect();
        // What this container had, less what another container registered since (an ID belongs to
        // the container that has it now: a recreated container keeps its name).
        let others: BTreeSet<&String> =
            self.tracked.iter().filter(|(c, _)| *c != &ev.id).flat_map(|(_, ids)| ids).collect();
        let before: BTreeSet<String> =
            self.tracked.get(&ev.id).into_iter().flatten().filter(|id| !others.contains(id)).cloned().collect();
        let cmds = container_commands(&self.node.name, &d.instances, &before);
        if cmds.is_empty() {
            return Ok(());
        }
        let results = self.link.write(cmds.clone()).await.map_err(|e| format!("cannot write to the catalog: {e}"))?;
        for (cmd, r) in cmds.iter().zip(&results) {
            let CommandResult::Refused(why) = r else { continue };
            match cmd {
                // A task told to go (its instance left with that entry) or not known: expected.
                CatalogCommand::Register { source: Source::Task, instance, .. } => {
                    tracing::debug!(service_id = %instance.id, reason = %why, "task instance not registered");
                }
                CatalogCommand::Register { instance, .. } => {
                    tracing::warn!(service_id = %instance.id, error = %why, "catalog refused an instance");
                }
                _ => tracing::debug!(error = %why, "catalog refused a command"),
            }
        }
        for (c, ids) in self.tracked.iter_mut() {
            if c != &ev.id {
                ids.retain(|id| !now.contains(id));
            }
        }
        self.tracked.retain(|_, ids| !ids.is_empty());
        if now.is_empty() {
            self.tracked.remove(&ev.id);
        } else {
            self.tracked.insert(ev.id.clone(), now);
        }
        tracing::debug!(container_id = %ev.id, action = ?ev.action, instances = d.instances.len(), "container event applied");
        Ok(())
    }
}

fn log_derivation(container_id: &str, d: &Derivation) {
    if let Some(why) = &d.ignored {
        tracing::debug!(container_id = %container_id, reason = %why, "container not registered");
    }
    for why in &d.skipped {
        tracing::debug!(container_id = %container_id, reason = %why, "part of a container not registered");
    }
}

#[cfg(test)]
mod tests;
