//! The orchestrator: desired state → tasks. A pure function of the service and task tables, the
//! nodes and `now`; it returns the commands that make the tables match the specs, and the tasks
//! the scheduler must place. The leader's loop (woken by the registry's watch) calls it, plans,
//! and writes the result back in one batch.
//!
//! Per replicated service: slots `1..=replicas` each want one live task (desired `running`):
//! - a slot with no task gets one (scale up);
//! - a task whose node is down or drained is shut down and replaced at once;
//! - a task that ended is replaced as its restart policy says (condition, delay, max attempts in
//!   a window);
//! - slots above `replicas` are set to desired `remove` (scale down removes the highest slots).
//!
//! Per global service: one live task per node that is available and meets the constraints.
//! Ended tasks are kept as history (5 per slot, as Swarm), older ones and those desired `remove`
//! that have ended are deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use shoal_model::services::{
    NewTask, ServiceCommand, ServiceRecord, ServiceTables, TaskRecord, TaskState, rfc3339, unix_ms,
};
use shoal_model::spec::{Mode, RestartCondition, ServiceSpec};
use shoal_model::{Availability, NodeId};

use crate::filter::{Available, Constraints, Filter};
use crate::plan::TaskToPlace;
use crate::snapshot::{NodeInfo, NodeUsage};

/// Ended tasks kept per slot (or per node for global services), as Swarm's task history limit.
pub const TASK_HISTORY: usize = 5;

/// What one reconciliation decided.
#[derive(Debug, Default)]
pub struct Reconciliation {
    /// Commands to write (in one batch), in order.
    pub commands: Vec<ServiceCommand>,
    /// Tasks (new or still pending) that need a node.
    pub to_place: Vec<TaskToPlace>,
    /// The earliest time (Unix ms) a restart delay ends, if one is running: reconcile again then.
    pub wake_at: Option<u64>,
}

/// Makes new task IDs (the caller's source of randomness; tests use a counter).
pub trait IdSource {
    /// A fresh, unique ID.
    fn next_id(&mut self) -> String;
}

/// Desired running and not ended.
pub(crate) fn live(t: &TaskRecord) -> bool {
    t.desired <= TaskState::Running && !t.status.state.is_terminal()
}

/// Reconciles every service. `nodes` is the node table as the scheduler sees it.
pub fn reconcile(tables: &ServiceTables, nodes: &[NodeInfo], now_ms: u64, ids: &mut dyn IdSource) -> Reconciliation {
    let mut out = Reconciliation::default();
    let by_node: HashMap<NodeId, &NodeInfo> = nodes.iter().map(|n| (n.id, n)).collect();
    let mut tasks_of: HashMap<&str, Vec<&TaskRecord>> = HashMap::new();
    for t in tables.tasks.values() {
        tasks_of.entry(t.service_id.as_str()).or_default().push(t);
    }
    // Tasks of services that no longer exist: the reaper deletes them once ended.
    for t in tables.tasks.values().filter(|t| !tables.services.contains_key(&t.service_id)) {
        if t.status.state.is_terminal() || t.node_id.is_none() || t.status.state < TaskState::Assigned {
            out.commands.push(ServiceCommand::RemoveTask { id: t.id.clone() });
        }
    }
    for service in tables.services.values() {
        let Ok(spec) = ServiceSpec::from_text(&service.spec) else { continue };
        let spec = Arc::new(spec);
        let tasks = tasks_of.remove(service.id.as_str()).unwrap_or_default();
        match spec.mode {
            Mode::Replicated { replicas } => {
                replicated(service, &spec, replicas, &tasks, &by_node, now_ms, ids, &mut out)
            }
            Mode::Global => global(service, &spec, &tasks, nodes, now_ms, ids, &mut out),
        }
    }
    out
}

/// Whether a task on `node` must move (its node is gone, down or drained).
fn node_lost(t: &TaskRecord, by_node: &HashMap<NodeId, &NodeInfo>) -> bool {
    match t.node_id {
        None => false,
        Some(id) => by_node.get(&id).is_none_or(|n| !n.ready || n.availability == Availability::Drain),
    }
}

/// Whether an ended task should be replaced now, later (`Err(at)`), or never (`Ok(false)`).
fn restart_due(spec: &ServiceSpec, ended: &TaskRecord, history: &[&TaskRecord], now_ms: u64) -> Result<bool, u64> {
    let failed = matches!(ended.status.state, TaskState::Failed | TaskState::Rejected);
    let wanted = match spec.restart.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => failed,
        RestartCondition::Any => true,
    };
    if !wanted {
        return Ok(false);
    }
    if spec.restart.max_attempts > 0 {
        let window = spec.restart.window.as_millis() as u64;
        let attempts = history
            .iter()
            .filter(|t| t.status.state.is_terminal())
            .filter(|t| window == 0 || unix_ms(&t.status.timestamp).is_some_and(|at| at + window >= now_ms))
            .count() as u64;
        if attempts > spec.restart.max_attempts {
            return Ok(false);
        }
    }
    let ended_at = unix_ms(&ended.status.timestamp).unwrap_or(0);
    let due = ended_at + spec.restart.delay.as_millis() as u64;
    if due <= now_ms { Ok(true) } else { Err(due) }
}

fn new_task(service: &ServiceRecord, slot: u64, node: Option<NodeId>, ids: &mut dyn IdSource) -> NewTask {
    NewTask {
        id: ids.next_id(),
        service_id: service.id.clone(),
        slot,
        node_id: node,
        spec_version: service.spec_version,
        desired: TaskState::Running,
    }
}

fn place(service: &ServiceRecord, spec: &Arc<ServiceSpec>, id: &str, node: Option<NodeId>) -> TaskToPlace {
    TaskToPlace { task_id: id.to_string(), service_id: service.id.clone(), spec: spec.clone(), node }
}

/// Trims ended history, deletes what was desired `remove` and has ended.
fn reap(group: &[&TaskRecord], out: &mut Reconciliation) {
    let mut ended: Vec<&&TaskRecord> = group.iter().filter(|t| !live(t)).collect();
    for t in &ended {
        if t.desired >= TaskState::Remove && (t.status.state.is_terminal() || t.status.state < TaskState::Assigned) {
            out.commands.push(ServiceCommand::RemoveTask { id: t.id.clone() });
        }
    }
    ended.retain(|t| t.desired < TaskState::Remove && t.status.state.is_terminal());
    ended.sort_by_key(|t| std::cmp::Reverse(t.create_index));
    for t in ended.iter().skip(TASK_HISTORY) {
        out.commands.push(ServiceCommand::RemoveTask { id: t.id.clone() });
    }
}

#[allow(clippy::too_many_arguments)]
fn replicated(
    service: &ServiceRecord,
    spec: &Arc<ServiceSpec>,
    replicas: u64,
    tasks: &[&TaskRecord],
    by_node: &HashMap<NodeId, &NodeInfo>,
    now_ms: u64,
    ids: &mut dyn IdSource,
    out: &mut Reconciliation,
) {
    let start = out.commands.len();
    let mut slots: BTreeMap<u64, Vec<&TaskRecord>> = BTreeMap::new();
    for t in tasks {
        slots.entry(t.slot).or_default().push(t);
    }
    for slot in 1..=replicas {
        slots.entry(slot).or_default();
    }
    for (slot, group) in &slots {
        reap(group, out);
        if *slot > replicas {
            // Scale down: the highest slots go.
            for t in group.iter().filter(|t| t.desired < TaskState::Remove) {
                out.commands.push(ServiceCommand::SetDesired { id: t.id.clone(), desired: TaskState::Remove });
            }
            continue;
        }
        let live_tasks: Vec<&&TaskRecord> = group.iter().filter(|t| live(t)).collect();
        let mut has_live = false;
        for t in &live_tasks {
            if node_lost(t, by_node) {
                // Its node is down or drained: shut it down and replace it at once (no delay).
                out.commands.push(ServiceCommand::SetDesired { id: t.id.clone(), desired: TaskState::Shutdown });
            } else if t.status.state < TaskState::Assigned {
                out.to_place.push(place(service, spec, &t.id, None));
                has_live = true;
            } else {
                has_live = true;
            }
        }
        if has_live {
            continue;
        }
        let newest = group.iter().filter(|t| t.desired <= TaskState::Running).max_by_key(|t| t.create_index);
        let replace = match newest {
            // Never had a task, or its last one was moved off a lost node: replace now.
            None => true,
            Some(t) if live(t) => true,
            Some(t) if t.status.state.is_terminal() => match restart_due(spec, t, group, now_ms) {
                Ok(due) => due,
                Err(at) => {
                    out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
                    false
                }
            },
            Some(_) => true,
        };
        if replace {
            // The ended task it replaces is no longer wanted running (swarmkit's restart
            // supervisor does the same), so it shows as history.
            if let Some(ended) = newest.filter(|t| t.status.state.is_terminal()) {
                out.commands.push(ServiceCommand::SetDesired { id: ended.id.clone(), desired: TaskState::Shutdown });
            }
            let t = new_task(service, *slot, None, ids);
            out.to_place.push(place(service, spec, &t.id, None));
            out.commands.push(ServiceCommand::CreateTasks { tasks: vec![t], at: rfc3339(now_ms) });
        }
    }
    crate::updater::tick(service, spec, &slots, replicas, now_ms, ids, out);
    // Only a service with nothing else to do is rebalanced.
    if spec.rebalance && out.commands.len() == start {
        rebalance(service, spec, &slots, by_node, now_ms, ids, out);
    }
}

/// `shoal.rebalance=true`: when the service is stable and its tasks are uneven across the nodes
/// that could run them (a node joined, came back or left drain), move one task per tick from the
/// fullest node; the scheduler's spread puts its replacement on the emptiest. Swarm never does this.
fn rebalance(
    service: &ServiceRecord,
    spec: &Arc<ServiceSpec>,
    slots: &BTreeMap<u64, Vec<&TaskRecord>>,
    by_node: &HashMap<NodeId, &NodeInfo>,
    now_ms: u64,
    ids: &mut dyn IdSource,
    out: &mut Reconciliation,
) {
    let live_tasks: Vec<&TaskRecord> = slots.values().flatten().copied().filter(|t| live(t)).collect();
    let stable =
        live_tasks.iter().all(|t| t.status.state == TaskState::Running && t.spec_version == service.spec_version)
            && service.update_status.as_ref().is_none_or(|u| u.state == "completed" || u.state == "rollback_completed");
    if !stable {
        return;
    }
    let empty = NodeUsage::default();
    let mut per_node: BTreeMap<NodeId, Vec<&TaskRecord>> = by_node
        .values()
        .filter(|n| Available.check(spec, &service.id, n, &empty) && Constraints.check(spec, &service.id, n, &empty))
        .map(|n| (n.id, Vec::new()))
        .collect();
    for t in &live_tasks {
        if let Some(v) = t.node_id.and_then(|n| per_node.get_mut(&n)) {
            v.push(t);
        }
    }
    let (Some(max), Some(min)) = (per_node.values().map(Vec::len).max(), per_node.values().map(Vec::len).min()) else {
        return;
    };
    if max <= min + 1 {
        return;
    }
    let fullest = per_node.values().find(|v| v.len() == max).expect("max exists");
    let Some(victim) = fullest.iter().max_by_key(|t| t.slot) else { return };
    out.commands.push(ServiceCommand::SetDesired { id: victim.id.clone(), desired: TaskState::Shutdown });
    let t = new_task(service, victim.slot, None, ids);
    out.to_place.push(place(service, spec, &t.id, None));
    out.commands.push(ServiceCommand::CreateTasks { tasks: vec![t], at: rfc3339(now_ms) });
}

fn global(
    service: &ServiceRecord,
    spec: &Arc<ServiceSpec>,
    tasks: &[&TaskRecord],
    nodes: &[NodeInfo],
    now_ms: u64,
    ids: &mut dyn IdSource,
    out: &mut Reconciliation,
) {
    let mut per_node: BTreeMap<NodeId, Vec<&TaskRecord>> = BTreeMap::new();
    for t in tasks {
        per_node.entry(t.node_id.unwrap_or(0)).or_default().push(t);
    }
    let empty = NodeUsage::default();
    for node in nodes {
        let eligible =
            Available.check(spec, &service.id, node, &empty) && Constraints.check(spec, &service.id, node, &empty);
        let group = per_node.remove(&node.id).unwrap_or_default();
        reap(&group, out);
        let live_tasks: Vec<&&TaskRecord> = group.iter().filter(|t| live(t)).collect();
        if !eligible {
            for t in live_tasks {
                out.commands.push(ServiceCommand::SetDesired { id: t.id.clone(), desired: TaskState::Shutdown });
            }
            continue;
        }
        if let Some(t) = live_tasks.first() {
            if t.status.state < TaskState::Assigned {
                out.to_place.push(place(service, spec, &t.id, Some(node.id)));
            }
            continue;
        }
        let newest = group.iter().filter(|t| t.desired <= TaskState::Running).max_by_key(|t| t.create_index);
        let replace = match newest {
            None => true,
            Some(t) => match restart_due(spec, t, &group, now_ms) {
                Ok(due) => due,
                Err(at) => {
                    out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
                    false
                }
            },
        };
        if replace {
            // The ended task it replaces is no longer wanted running (swarmkit's restart
            // supervisor does the same), so it shows as history.
            if let Some(ended) = newest.filter(|t| t.status.state.is_terminal()) {
                out.commands.push(ServiceCommand::SetDesired { id: ended.id.clone(), desired: TaskState::Shutdown });
            }
            let t = new_task(service, 0, Some(node.id), ids);
            out.to_place.push(place(service, spec, &t.id, Some(node.id)));
            out.commands.push(ServiceCommand::CreateTasks { tasks: vec![t], at: rfc3339(now_ms) });
        }
    }
    // Tasks on nodes that left the cluster.
    for group in per_node.values() {
        reap(group, out);
        for t in group.iter().filter(|t| live(t)) {
            out.commands.push(ServiceCommand::SetDesired { id: t.id.clone(), desired: TaskState::Shutdown });
        }
    }
}
