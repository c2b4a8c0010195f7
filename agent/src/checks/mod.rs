//! The health-check runner: probes this node's checks and writes their results to the catalog,
//! only when something changed, in batches; deregisters instances that stayed critical too long.
//!
//! ```text
//! CatalogLink::node_catalog(index) ──views (watch)──▶ run: one task per check, by check ID
//!   (blocking read; error: retry in 1 s)              │   new/changed definition ─▶ (re)start
//!                                                     │   gone ─▶ stop
//!      probe_loop: HTTP/TCP/exec every interval ─▶ Counters (status.rs) ─┐
//!      ttl_loop: timer, reset by every renewal ─▶ "TTL expired" ─────────┤ outcomes
//!                                                                        ▼
//!   Outbox (outbox.rs): newest per check, dropped when equal to the view, batch window ~20 ms,
//!   output-only changes at most every 5 min ─▶ CatalogLink::write([UpdateChecks, Deregister…])
//!   critical since (from the views) ─▶ reap::expired_on_node every 30 s ─▶ Deregister
//! ```
//! Which checks run here: every check of this node's instances whose source the agent owns
//! (`Source::agent_owned`) and every node-level check, of the kinds the agent runs: HTTP, TCP and
//! exec are probed, TTL checks are timed. Docker checks (the registrator's) and manual ones are
//! left alone. Consul's semantics are in `../shared/reference/discovery.md` §2.5.

mod outbox;
pub mod probe;
pub mod status;
mod task;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_model::CommandResult;
use shoal_model::catalog::reap::expired_on_node;
use shoal_model::catalog::{CatalogCommand, Check, CheckDef, CheckKind, Health, Instance};
use shoal_registry::control::catalog::NodeCatalog;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::link::CatalogLink;
use outbox::{Batch, Outbox};
pub use probe::ContainerExec;
use task::{Outcome, Outcomes, Probes, Spec, Stored};

/// The clock the reaper reads, in milliseconds; it must not go backwards. Tests pass one they
/// move forward instead of waiting out Consul's one-minute minimum.
pub trait Clock: Send + Sync {
    /// Now, in ms from any fixed start.
    fn now_ms(&self) -> u64;
}

/// The process's monotonic clock, in ms since it was made.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// The runner's timings; [`Timing::default`] is Consul's, tests shorten them.
#[derive(Clone)]
pub struct Timing {
    /// How long results are collected after the first change before one write (20 ms).
    pub batch_window: Duration,
    /// How often an output-only change of one check is written (Consul's `check_update_interval`, 5 min).
    pub output_update_every: Duration,
    /// How often instances critical for too long are looked for (Consul's `check_reap_interval`, 30 s).
    pub reap_every: Duration,
    /// How long one blocking read of the node's catalog waits (60 s).
    pub catalog_wait: Duration,
    /// The reaper's clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            batch_window: Duration::from_millis(20),
            output_update_every: Duration::from_secs(300),
            reap_every: Duration::from_secs(30),
            catalog_wait: Duration::from_secs(60),
            clock: Arc::new(MonotonicClock::default()),
        }
    }
}

/// Runs this node's checks until aborted, with Consul's timings. `exec` runs exec checks (the
/// Docker runtime); without one they are critical.
///
/// A result is written only when the check's status or output differs from what the catalog
/// holds. A change of output alone (a probe whose output carries a timestamp or a counter) is
/// written at most once per 5 minutes per check, as Consul's `check_update_interval`, so such a
/// check does not cost a Raft entry on every probe; a status change is written at once.
pub async fn run(link: Arc<dyn CatalogLink>, exec: Option<Arc<dyn ContainerExec>>) {
    run_with(link, exec, Timing::default()).await
}

/// [`run`] with the timings given. Aborting it stops every check task with it.
pub async fn run_with(link: Arc<dyn CatalogLink>, exec: Option<Arc<dyn ContainerExec>>, timing: Timing) {
    let mut tasks = JoinSet::new();
    let (views_tx, mut views) = watch::channel(None);
    tasks.spawn(watch_catalog(link.clone(), timing.catalog_wait, views_tx));
    let (outcomes, mut results) = mpsc::unbounded_channel();
    let mut r = Runner {
        probes: Arc::new(Probes { http: probe::HttpClients::new(), exec }),
        outbox: Outbox::new(timing.batch_window, timing.output_update_every),
        clock: timing.clock.clone(),
        outcomes,
        node: String::new(),
        checks: HashMap::new(),
        instances: Vec::new(),
        critical_since: BTreeMap::new(),
        reaped: HashSet::new(),
        generation: 0,
    };
    let mut backoff = MIN_BACKOFF;
    let mut next_reap = Instant::now() + timing.reap_every;
    loop {
        let wake = r.outbox.due(Instant::now()).map_or(next_reap, |d| d.min(next_reap));
        tokio::select! {
            changed = views.changed() => {
                if changed.is_err() {
                    return;
                }
                let view = views.borrow_and_update().clone();
                if let Some(view) = view {
                    r.on_view(view, &mut tasks);
                }
            }
            Some(o) = results.recv() => r.on_outcome(o),
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        while tasks.try_join_next().is_some() {}
        let now = Instant::now();
        if now >= next_reap {
            r.reap();
            next_reap = now + timing.reap_every;
        }
        if r.outbox.due(now).is_some_and(|d| d <= now) {
            let batch = r.outbox.take(now);
            if !batch.is_empty() {
                r.write(link.as_ref(), batch, &mut backoff).await;
            }
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps the newest view of this node's catalog in `tx`; waits 1 s after a failed read.
async fn watch_catalog(link: Arc<dyn CatalogLink>, wait: Duration, tx: watch::Sender<Option<NodeCatalog>>) {
    let mut index = 0;
    loop {
        match link.node_catalog(index, wait).await {
            Ok(view) => {
                index = view.index;
                tx.send_if_modified(|cur| {
                    let changed = cur.as_ref() != Some(&view);
                    if changed {
                        *cur = Some(view);
                    }
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this node's catalog entries; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// A check's running task.
struct Running {
    spec: Spec,
    generation: u64,
    task: AbortHandle,
    /// The stored check, for a TTL timer.
    ttl: Option<watch::Sender<Stored>>,
}

struct Runner {
    probes: Arc<Probes>,
    outbox: Outbox,
    clock: Arc<dyn Clock>,
    outcomes: Outcomes,
    /// This node's name in the catalog (from the views).
    node: String,
    checks: HashMap<String, Running>,
    /// The agent-owned instances of the latest view (what the reaper looks at).
    instances: Vec<Instance>,
    /// When (reaper clock) each agent-owned instance check was first seen critical, since it last was not.
    critical_since: BTreeMap<String, u64>,
    /// Instances already sent for deregistration (until the views drop them).
    reaped: HashSet<String>,
    generation: u64,
}

impl Runner {
    fn on_view(&mut self, view: NodeCatalog, tasks: &mut JoinSet<()>) {
        self.node = view.node;
        let mut seen = HashSet::new();
        let mut newly_critical = false;
        let now_ms = self.clock.now_ms();
        let instances: Vec<Instance> = view.instances.into_iter().filter(|i| i.source.agent_owned()).collect();
        for inst in &instances {
            for c in inst.checks.values() {
                if c.status == Health::Critical {
                    if !self.critical_since.contains_key(c.id.as_str()) {
                        self.critical_since.insert(c.id.to_string(), now_ms);
                        newly_critical = true;
                    }
                } else {
                    self.critical_since.remove(c.id.as_str());
                }
                self.consider(c, inst.container_id.as_deref(), &mut seen, tasks);
            }
        }
        let instance_checks: HashSet<&str> =
            instances.iter().flat_map(|i| i.checks.keys()).map(|k| k.as_str()).collect();
        self.critical_since.retain(|id, _| instance_checks.contains(id.as_str()));
        for c in &view.node_checks {
            self.consider(c, None, &mut seen, tasks);
        }
        self.checks.retain(|id, r| {
            let keep = seen.contains(id);
            if !keep {
                tracing::debug!(check_id = %id, "check gone; stopping it");
                r.task.abort();
            }
            keep
        });
        self.outbox.retain(&seen);
        self.reaped.retain(|id| instances.iter().any(|i| i.id == *id));
        self.instances = instances;
        if newly_critical {
            self.reap();
        }
    }

    /// Notes a check of the view; starts its task if it has none or its definition changed.
    fn consider(
        &mut self,
        c: &Check,
        instance_container: Option<&str>,
        seen: &mut HashSet<String>,
        tasks: &mut JoinSet<()>,
    ) {
        let container = match &c.def.kind {
            CheckKind::Http { .. } | CheckKind::Tcp { .. } | CheckKind::Ttl { .. } => None,
            CheckKind::Exec { container, .. } if container.is_empty() => instance_container.map(str::to_string),
            CheckKind::Exec { container, .. } => Some(container.clone()),
            // Set by the registrator (Docker) or by clients (manual): not run here.
            CheckKind::Docker { .. } | CheckKind::Manual => return,
        };
        seen.insert(c.id.to_string());
        self.outbox.stored(&c.id, c.status, &c.output);
        let spec = Spec { def: CheckDef::clone(&c.def), container };
        if let Some(r) = self.checks.get(c.id.as_str())
            && r.spec == spec
        {
            if let Some(tx) = &r.ttl {
                let now = Stored::of(c);
                tx.send_if_modified(|s| std::mem::replace(s, now.clone()) != now);
            }
            return;
        }
        if let Some(old) = self.checks.remove(c.id.as_str()) {
            tracing::debug!(check_id = %c.id, "check definition changed; restarting it");
            old.task.abort();
            self.outbox.restarted(&c.id);
        }
        self.generation += 1;
        let generation = self.generation;
        let (id, out) = (c.id.clone(), self.outcomes.clone());
        let (task, ttl) = match c.def.kind {
            CheckKind::Ttl { ttl_ms } => {
                let (tx, rx) = watch::channel(Stored::of(c));
                (
                    tasks.spawn(task::ttl_loop(id.to_string(), generation, Duration::from_millis(ttl_ms), rx, out)),
                    Some(tx),
                )
            }
            _ => (
                tasks.spawn(task::probe_loop(id.to_string(), generation, spec.clone(), self.probes.clone(), out)),
                None,
            ),
        };
        self.checks.insert(c.id.to_string(), Running { spec, generation, task, ttl });
    }

    fn on_outcome(&mut self, o: Outcome) {
        if self.checks.get(&o.check_id).is_some_and(|r| r.generation == o.generation) {
            self.outbox.push(&o.check_id, o.status, o.output);
        }
    }

    /// Queues the deregistration of instances whose checks stayed critical too long.
    fn reap(&mut self) {
        for id in expired_on_node(&self.instances, &self.critical_since, self.clock.now_ms()) {
            if self.reaped.insert(id.to_string()) {
                tracing::info!(service_id = %id, "deregistering a service whose check stayed critical too long");
                self.outbox.deregister(&id);
            }
        }
    }

    async fn write(&mut self, link: &dyn CatalogLink, batch: Batch, backoff: &mut Duration) {
        let mut cmds = Vec::new();
        if !batch.updates.is_empty() {
            cmds.push(CatalogCommand::UpdateChecks { node: self.node.clone(), updates: batch.updates.clone() });
        }
        cmds.extend(
            batch.deregister.iter().map(|id| CatalogCommand::Deregister { node: self.node.clone(), id: id.clone() }),
        );
        match link.write(cmds).await {
            Ok(results) => {
                for r in results {
                    if let CommandResult::Refused(why) = r {
                        tracing::warn!(error = %why, "check results refused");
                    }
                }
                for u in &batch.updates {
                    tracing::debug!(check_id = %u.check_id, status = u.status.as_str(), "check result written");
                }
                self.outbox.written(&batch, Instant::now());
                *backoff = MIN_BACKOFF;
            }
            Err(e) => {
                tracing::warn!(error = %e, checks = batch.updates.len(), retry_in = ?*backoff, "cannot write check results; retrying");
                self.outbox.failed(batch, Instant::now() + *backoff);
                *backoff = (*backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
