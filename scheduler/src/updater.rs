//! The updater: when a service's task template changed, replace its tasks slot by slot.
//!
//! Per tick (pure, like the orchestrator): tasks made from an older spec version are *dirty*. At
//! most `parallelism` replacements are in flight (a new task not yet running, or running for less
//! than `monitor`); a new batch starts `delay` after the previous one. stop-first shuts the old
//! task down as the new one is created; start-first waits until the new one runs. New tasks that
//! fail beyond `max_failure_ratio` trigger the failure action: pause, continue, or rollback (to the
//! previous spec, with the rollback config). `UpdateStatus` follows Docker's states.

use std::collections::BTreeMap;

use shoal_model::services::{
    NewTask, ServiceCommand, ServiceRecord, TaskRecord, TaskState, UpdateStatus, rfc3339, unix_ms,
};
use shoal_model::spec::{FailureAction, ServiceSpec};

use crate::orchestrator::{IdSource, Reconciliation, live};

fn status(state: &str, started_at: &str, completed: Option<String>, message: &str) -> Option<UpdateStatus> {
    Some(UpdateStatus {
        state: state.into(),
        started_at: started_at.into(),
        completed_at: completed,
        message: message.into(),
    })
}

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
    let now = rfc3339(now_ms);
    let rolling_back = service.rolling_back;
    // A rollback follows the RollbackConfig of the spec it rolls back from (as Swarm does): that
    // spec is now the previous one.
    let cfg = if rolling_back {
        service
            .previous_spec
            .as_deref()
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|v| ServiceSpec::parse(&v).ok())
            .map_or(spec.rollback, |from| from.rollback)
    } else {
        spec.update
    };
    let current = service.update_status.as_ref().map(|u| u.state.as_str()).unwrap_or("");
    let started_at = service.update_status.as_ref().map_or(now.clone(), |u| u.started_at.clone());
    let (running_state, done_state, paused_state) = if rolling_back {
        ("rollback_started", "rollback_completed", "rollback_paused")
    } else {
        ("updating", "completed", "paused")
    };

    let in_range = |slot: &u64| *slot >= 1 && *slot <= replicas;
    let dirty: Vec<(u64, &TaskRecord)> = slots
        .iter()
        .filter(|(slot, _)| in_range(slot))
        .flat_map(|(slot, ts)| {
            ts.iter().filter(|t| live(t) && t.spec_version != service.spec_version).map(|t| (*slot, *t))
        })
        .collect();
    let fresh: Vec<&TaskRecord> = slots
        .iter()
        .filter(|(slot, _)| in_range(slot))
        .flat_map(|(_, ts)| ts.iter().copied())
        .filter(|t| t.spec_version == service.spec_version)
        .collect();

    // start-first: a slot whose new task runs lets its old one go.
    for (slot, old) in &dirty {
        let replaced = slots[slot].iter().any(|t| {
            t.spec_version == service.spec_version
                && t.status.state == TaskState::Running
                && t.desired == TaskState::Running
        });
        if replaced {
            out.commands.push(ServiceCommand::SetDesired { id: old.id.clone(), desired: TaskState::Shutdown });
        }
    }

    let monitor = cfg.monitor.as_millis() as u64;
    let in_flight = fresh
        .iter()
        .filter(|t| live(t))
        .filter(|t| {
            t.status.state < TaskState::Running || unix_ms(&t.status.timestamp).is_some_and(|at| at + monitor > now_ms)
        })
        .count() as u64;
    if dirty.is_empty() {
        // Done once the last batch has run through its monitor period.
        if in_flight > 0 {
            if let Some(at) = fresh.iter().filter_map(|t| unix_ms(&t.status.timestamp)).max().map(|t| t + monitor) {
                out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
            }
            return;
        }
        if current == running_state {
            out.commands.push(ServiceCommand::SetUpdateStatus {
                id: service.id.clone(),
                status: status(
                    done_state,
                    &started_at,
                    Some(now),
                    if rolling_back { "rollback completed" } else { "update completed" },
                ),
            });
        }
        return;
    }
    if current == paused_state {
        return;
    }
    if current != running_state {
        out.commands.push(ServiceCommand::SetUpdateStatus {
            id: service.id.clone(),
            status: status(
                running_state,
                &now,
                None,
                if rolling_back { "rollback in progress" } else { "update in progress" },
            ),
        });
    }

    // Failures of the new version since the update started.
    let since = unix_ms(&started_at).unwrap_or(0);
    let failed: Vec<&&TaskRecord> = fresh
        .iter()
        .filter(|t| matches!(t.status.state, TaskState::Failed | TaskState::Rejected))
        .filter(|t| unix_ms(&t.created_at).is_some_and(|c| c >= since))
        .collect();
    let total = (dirty.len() + fresh.len()).max(1) as f64;
    if let Some(first) = failed.first()
        && failed.len() as f64 / total > cfg.max_failure_ratio
    {
        let why = format!("update paused due to failure or early termination of task {}", first.id);
        match cfg.failure_action {
            FailureAction::Pause => {
                out.commands.push(ServiceCommand::SetUpdateStatus {
                    id: service.id.clone(),
                    status: status(paused_state, &started_at, None, &why),
                });
                return;
            }
            FailureAction::Rollback if !rolling_back => {
                if let Some(previous) = &service.previous_spec {
                    out.commands.push(ServiceCommand::Update {
                        id: service.id.clone(),
                        version: service.modify_index,
                        name: service.name.clone(),
                        spec: previous.clone(),
                        at: now.clone(),
                        rollback: true,
                    });
                    out.commands.push(ServiceCommand::SetUpdateStatus {
                        id: service.id.clone(),
                        status: status(
                            "rollback_started",
                            &now,
                            None,
                            &format!("update rolled back due to failure or early termination of task {}", first.id),
                        ),
                    });
                    return;
                }
            }
            _ => {}
        }
    }

    // How many replacements may start now.
    let waiting_old = dirty
        .iter()
        .filter(|(slot, _)| !slots[slot].iter().any(|t| t.spec_version == service.spec_version && live(t)))
        .count() as u64;
    let room = if cfg.parallelism == 0 { waiting_old } else { cfg.parallelism.saturating_sub(in_flight) };
    let last_start = fresh.iter().filter_map(|t| unix_ms(&t.created_at)).filter(|c| *c >= since).max();
    let delay = cfg.delay.as_millis() as u64;
    if let Some(last) = last_start
        && in_flight == 0
        && last + delay > now_ms
    {
        let at = last + delay;
        out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
        return;
    }
    if room == 0 {
        // Look again when the monitor period of the newest replacement ends.
        if let Some(at) = fresh.iter().filter_map(|t| unix_ms(&t.status.timestamp)).max().map(|t| t + monitor) {
            out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
        }
        return;
    }
    let mut started = 0;
    for (slot, old) in &dirty {
        if started >= room {
            break;
        }
        // One replacement per slot at a time.
        if slots[slot].iter().any(|t| t.spec_version == service.spec_version && live(t)) {
            continue;
        }
        if !cfg.start_first {
            out.commands.push(ServiceCommand::SetDesired { id: old.id.clone(), desired: TaskState::Shutdown });
        }
        let task = NewTask {
            id: ids.next_id(),
            service_id: service.id.clone(),
            slot: *slot,
            node_id: None,
            spec_version: service.spec_version,
            desired: TaskState::Running,
        };
        out.to_place.push(crate::plan::TaskToPlace {
            task_id: task.id.clone(),
            service_id: service.id.clone(),
            spec: std::sync::Arc::new(spec.clone()),
            node: None,
        });
        out.commands.push(ServiceCommand::CreateTasks { tasks: vec![task], at: now.clone() });
        started += 1;
    }
    // Check again when this batch's monitor period is over.
    let at = now_ms + monitor.max(delay).max(100);
    out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
}
