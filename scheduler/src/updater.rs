//! The updater: when a service's task template changed, replace its tasks slot by slot.
//!
//! Per tick (pure, like the orchestrator): tasks made from an older spec version are *dirty*. At
//! most `parallelism` replacements are in flight (a new task not yet running, or running for less
//! than `monitor`); a new batch starts `delay` after the previous one. stop-first shuts the old
//! task down as the new one is created; start-first waits until the new one runs. New tasks that
//! fail beyond `max_failure_ratio` trigger the failure action: pause, continue, or rollback (to the
//! previous spec, with the rollback config). `UpdateStatus` follows Docker's states.
//!
//! ```text
//! tick: release_replaced (start-first) ─▶ nothing dirty? finish : paused? stop
//!       ─▶ mark_running ─▶ failure_action (pause | rollback ends the tick) ─▶ start_batch
//! ```

use std::collections::BTreeMap;

use shoal_model::services::{
    NewTask, ServiceCommand, ServiceRecord, TaskRecord, TaskState, UpdateStatus, rfc3339, unix_ms,
};
use shoal_model::spec::{FailureAction, ServiceSpec, UpdateConfig};

use crate::orchestrator::{IdSource, Reconciliation, live};

fn status(state: &str, started_at: &str, completed: Option<String>, message: &str) -> Option<UpdateStatus> {
    Some(UpdateStatus {
        state: state.into(),
        started_at: started_at.into(),
        completed_at: completed,
        message: message.into(),
    })
}

/// Reconcile again at `at` (Unix ms) at the latest.
fn wake(out: &mut Reconciliation, at: u64) {
    out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
}

/// The `UpdateStatus` states and messages of an update, or of a rollback.
struct Phase {
    running: &'static str,
    done: &'static str,
    paused: &'static str,
    in_progress: &'static str,
    completed: &'static str,
}

static UPDATE: Phase = Phase {
    running: "updating",
    done: "completed",
    paused: "paused",
    in_progress: "update in progress",
    completed: "update completed",
};

static ROLLBACK: Phase = Phase {
    running: "rollback_started",
    done: "rollback_completed",
    paused: "rollback_paused",
    in_progress: "rollback in progress",
    completed: "rollback completed",
};

/// Advances a rolling update (or rollback) of a replicated service by one tick.
pub fn tick(
    service: &ServiceRecord,
    spec: &ServiceSpec,
    slots: &BTreeMap<u64, Vec<&TaskRecord>>,
    replicas: u64,
    now_ms: u64,
    ids: &mut dyn IdSource,
    out: &mut Reconciliation,
) {
    let u = Update::new(service, spec, slots, replicas, now_ms);
    u.release_replaced(out);
    let in_flight = u.in_flight();
    if u.dirty.is_empty() {
        u.finish(in_flight, out);
        return;
    }
    if u.current == u.phase.paused {
        return;
    }
    u.mark_running(out);
    if u.failure_action(out) {
        return;
    }
    u.start_batch(in_flight, ids, out);
}

/// One tick's view of a service's update.
struct Update<'a> {
    service: &'a ServiceRecord,
    spec: &'a ServiceSpec,
    slots: &'a BTreeMap<u64, Vec<&'a TaskRecord>>,
    cfg: UpdateConfig,
    phase: &'static Phase,
    now_ms: u64,
    now: String,
    /// The update's state as recorded ("" when none).
    current: &'a str,
    started_at: String,
    /// When the update started (Unix ms): failures and batches before it do not count.
    since: u64,
    /// The monitor period, in ms.
    monitor: u64,
    /// Live tasks of an older spec version, with their slot (in range).
    dirty: Vec<(u64, &'a TaskRecord)>,
    /// Tasks of the current spec version (in range, any state).
    fresh: Vec<&'a TaskRecord>,
}

impl<'a> Update<'a> {
    fn new(
        service: &'a ServiceRecord,
        spec: &'a ServiceSpec,
        slots: &'a BTreeMap<u64, Vec<&'a TaskRecord>>,
        replicas: u64,
        now_ms: u64,
    ) -> Self {
        let now = rfc3339(now_ms);
        let cfg = config(service, spec);
        let current = service.update_status.as_ref().map(|u| u.state.as_str()).unwrap_or("");
        let started_at = service.update_status.as_ref().map_or(now.clone(), |u| u.started_at.clone());
        let in_range = |slot: &u64| *slot >= 1 && *slot <= replicas;
        let dirty = slots
            .iter()
            .filter(|(slot, _)| in_range(slot))
            .flat_map(|(slot, ts)| {
                ts.iter().filter(|t| live(t) && t.spec_version != service.spec_version).map(|t| (*slot, *t))
            })
            .collect();
        let fresh = slots
            .iter()
            .filter(|(slot, _)| in_range(slot))
            .flat_map(|(_, ts)| ts.iter().copied())
            .filter(|t| t.spec_version == service.spec_version)
            .collect();
        Self {
            service,
            spec,
            slots,
            cfg,
            phase: if service.rolling_back { &ROLLBACK } else { &UPDATE },
            now_ms,
            now,
            current,
            since: unix_ms(&started_at).unwrap_or(0),
            started_at,
            monitor: cfg.monitor.as_millis() as u64,
            dirty,
            fresh,
        }
    }

    /// start-first: a slot whose new task runs lets its old one go.
    fn release_replaced(&self, out: &mut Reconciliation) {
        for (slot, old) in &self.dirty {
            let replaced = self.slots[slot].iter().any(|t| {
                t.spec_version == self.service.spec_version
                    && t.status.state == TaskState::Running
                    && t.desired == TaskState::Running
            });
            if replaced {
                out.commands.push(ServiceCommand::SetDesired { id: old.id.clone(), desired: TaskState::Shutdown });
            }
        }
    }

    /// New tasks not yet through their monitor period (not running yet, or running for less).
    fn in_flight(&self) -> u64 {
        self.fresh
            .iter()
            .filter(|t| live(t))
            .filter(|t| {
                t.status.state < TaskState::Running
                    || unix_ms(&t.status.timestamp).is_some_and(|at| at + self.monitor > self.now_ms)
            })
            .count() as u64
    }

    /// When the monitor period of the newest replacement ends.
    fn monitor_end(&self) -> Option<u64> {
        self.fresh.iter().filter_map(|t| unix_ms(&t.status.timestamp)).max().map(|t| t + self.monitor)
    }

    /// Whether the slot already has a live task of the current version (one replacement at a time).
    fn has_replacement(&self, slot: u64) -> bool {
        self.slots[&slot].iter().any(|t| t.spec_version == self.service.spec_version && live(t))
    }

    /// Nothing old is left: done once the last batch has run through its monitor period.
    fn finish(&self, in_flight: u64, out: &mut Reconciliation) {
        if in_flight > 0 {
            if let Some(at) = self.monitor_end() {
                wake(out, at);
            }
            return;
        }
        if self.current == self.phase.running {
            out.commands.push(ServiceCommand::SetUpdateStatus {
                id: self.service.id.clone(),
                status: status(self.phase.done, &self.started_at, Some(self.now.clone()), self.phase.completed),
            });
        }
    }

    /// Records that the update (or rollback) is under way, unless it already is.
    fn mark_running(&self, out: &mut Reconciliation) {
        if self.current != self.phase.running {
            out.commands.push(ServiceCommand::SetUpdateStatus {
                id: self.service.id.clone(),
                status: status(self.phase.running, &self.now, None, self.phase.in_progress),
            });
        }
    }

    /// Failures of the new version since the update started, beyond the tolerated ratio, trigger the
    /// failure action. `true` when that ends the tick (paused, or rolling back).
    fn failure_action(&self, out: &mut Reconciliation) -> bool {
        let failed: Vec<&&TaskRecord> = self
            .fresh
            .iter()
            .filter(|t| matches!(t.status.state, TaskState::Failed | TaskState::Rejected))
            .filter(|t| unix_ms(&t.created_at).is_some_and(|c| c >= self.since))
            .collect();
        let total = (self.dirty.len() + self.fresh.len()).max(1) as f64;
        let Some(first) = failed.first().filter(|_| failed.len() as f64 / total > self.cfg.max_failure_ratio) else {
            return false;
        };
        match self.cfg.failure_action {
            FailureAction::Pause => {
                let why = format!("update paused due to failure or early termination of task {}", first.id);
                out.commands.push(ServiceCommand::SetUpdateStatus {
                    id: self.service.id.clone(),
                    status: status(self.phase.paused, &self.started_at, None, &why),
                });
                true
            }
            FailureAction::Rollback if !self.service.rolling_back => self.roll_back(&first.id, out),
            _ => false,
        }
    }

    /// Goes back to the previous spec, if there is one; `true` when it did.
    fn roll_back(&self, failed_task: &str, out: &mut Reconciliation) -> bool {
        let Some(previous) = &self.service.previous_spec else { return false };
        out.commands.push(ServiceCommand::Update {
            id: self.service.id.clone(),
            version: self.service.modify_index,
            name: self.service.name.clone(),
            spec: previous.clone(),
            at: self.now.clone(),
            rollback: true,
        });
        out.commands.push(ServiceCommand::SetUpdateStatus {
            id: self.service.id.clone(),
            status: status(
                ROLLBACK.running,
                &self.now,
                None,
                &format!("update rolled back due to failure or early termination of task {failed_task}"),
            ),
        });
        true
    }

    /// Starts as many replacements as there is room for, once the delay after the last batch is over.
    fn start_batch(&self, in_flight: u64, ids: &mut dyn IdSource, out: &mut Reconciliation) {
        let waiting_old = self.dirty.iter().filter(|(slot, _)| !self.has_replacement(*slot)).count() as u64;
        let room = if self.cfg.parallelism == 0 { waiting_old } else { self.cfg.parallelism.saturating_sub(in_flight) };
        let last_start = self.fresh.iter().filter_map(|t| unix_ms(&t.created_at)).filter(|c| *c >= self.since).max();
        let delay = self.cfg.delay.as_millis() as u64;
        if let Some(last) = last_start
            && in_flight == 0
            && last + delay > self.now_ms
        {
            wake(out, last + delay);
            return;
        }
        if room == 0 {
            // Look again when the monitor period of the newest replacement ends.
            if let Some(at) = self.monitor_end() {
                wake(out, at);
            }
            return;
        }
        let mut started = 0;
        for (slot, old) in &self.dirty {
            if started >= room {
                break;
            }
            if self.has_replacement(*slot) {
                continue;
            }
            self.replace(*slot, old, ids, out);
            started += 1;
        }
        // Check again when this batch's monitor period is over.
        wake(out, self.now_ms + self.monitor.max(delay).max(100));
    }

    /// Creates the slot's new task; stop-first also shuts the old one down now.
    fn replace(&self, slot: u64, old: &TaskRecord, ids: &mut dyn IdSource, out: &mut Reconciliation) {
        if !self.cfg.start_first {
            out.commands.push(ServiceCommand::SetDesired { id: old.id.clone(), desired: TaskState::Shutdown });
        }
        let task = NewTask {
            id: ids.next_id(),
            service_id: self.service.id.clone(),
            slot,
            node_id: None,
            spec_version: self.service.spec_version,
            desired: TaskState::Running,
        };
        out.to_place.push(crate::plan::TaskToPlace {
            task_id: task.id.clone(),
            service_id: self.service.id.clone(),
            spec: std::sync::Arc::new(self.spec.clone()),
            node: None,
        });
        out.commands.push(ServiceCommand::CreateTasks { tasks: vec![task], at: self.now.clone() });
    }
}

/// The settings the update follows. A rollback follows the RollbackConfig of the spec it rolls back
/// from (as Swarm does): that spec is now the previous one.
fn config(service: &ServiceRecord, spec: &ServiceSpec) -> UpdateConfig {
    if service.rolling_back {
        service
            .previous_spec
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|v| ServiceSpec::parse(&v).ok())
            .map_or(spec.rollback, |from| from.rollback)
    } else {
        spec.update
    }
}
