//! The service and task tables (swarmkit's model, Docker's field names).
//!
//! Rules the state machine enforces, whoever proposes the command:
//! - a service's spec is stored verbatim as submitted; updates carry the version (`ModifyIndex`)
//!   they read, and a stale one is refused ("update out of sequence");
//! - a task's spec version never changes; its desired state is written by managers, its observed
//!   state only by the node it is assigned to; neither moves backwards (refused, not applied).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{CommandResult, Refusal};
use crate::node::NodeId;

/// Task states, in swarmkit's order: a state never goes back to an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Created, not yet considered by the scheduler.
    New,
    /// Waiting for a node.
    Pending,
    /// Placed on a node.
    Assigned,
    /// The node took it.
    Accepted,
    /// Image and resources being prepared.
    Preparing,
    /// Prepared, not started.
    Ready,
    /// Starting.
    Starting,
    /// Running.
    Running,
    /// Exited with code 0.
    Complete,
    /// Stopped on request.
    Shutdown,
    /// Exited with an error.
    Failed,
    /// The node could not run it.
    Rejected,
    /// To be deleted (desired state after scale-down or service removal).
    Remove,
    /// Its node is gone.
    Orphaned,
}

impl TaskState {
    /// Docker's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Pending => "pending",
            Self::Assigned => "assigned",
            Self::Accepted => "accepted",
            Self::Preparing => "preparing",
            Self::Ready => "ready",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Shutdown => "shutdown",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Remove => "remove",
            Self::Orphaned => "orphaned",
        }
    }

    /// Whether the task has ended (it will never run again).
    pub fn is_terminal(self) -> bool {
        self >= Self::Complete
    }
}

/// What the node running a task last said about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Observed state.
    pub state: TaskState,
    /// When (RFC 3339), as the writer saw it.
    pub timestamp: String,
    /// Human message ("started", "no suitable node (…)").
    pub message: String,
    /// Error, if it failed.
    pub err: Option<String>,
    /// Container ID, once there is one.
    pub container_id: Option<String>,
    /// Exit code, once it exited.
    pub exit_code: Option<i64>,
}

/// A rolling update's progress, as Docker's `UpdateStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// updating, paused, completed, rollback_started, rollback_paused, rollback_completed.
    pub state: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended, if it did.
    pub completed_at: Option<String>,
    /// Why it is in this state.
    pub message: String,
}

/// A service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// 25 lowercase letters and digits, as Docker's.
    pub id: String,
    /// Its name (unique), from the spec.
    pub name: String,
    /// The spec as submitted (JSON text).
    pub spec: String,
    /// The spec before the last update (for `rollback`).
    pub previous_spec: Option<String>,
    /// Bumped on every spec change; tasks remember the one they were made from.
    pub spec_version: u64,
    /// Specs still referenced by tasks, by spec version (so a task can show the spec it runs).
    pub spec_history: BTreeMap<u64, String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The rolling update's state, if there was one.
    pub update_status: Option<UpdateStatus>,
    /// Whether the last spec change was a rollback.
    #[serde(default)]
    pub rolling_back: bool,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last change: Docker's `Version.Index`.
    pub modify_index: u64,
}

/// A task: one slot (replicated) or one node (global) of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// 25 lowercase letters and digits.
    pub id: String,
    /// Its service.
    pub service_id: String,
    /// Slot number (replicated, from 1); 0 for global tasks.
    pub slot: u64,
    /// The node it is assigned to (global tasks are made for one node).
    pub node_id: Option<NodeId>,
    /// The service spec version it was made from (never changes).
    pub spec_version: u64,
    /// Written by managers only; never moves backwards.
    pub desired: TaskState,
    /// Written by its node only (and by the scheduler up to `assigned`); never moves backwards.
    pub status: TaskStatus,
    /// RFC 3339.
    pub created_at: String,
    /// Raft index of creation.
    pub create_index: u64,
    /// Raft index of the last change.
    pub modify_index: u64,
}

/// A task to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    /// Its ID.
    pub id: String,
    /// Its service.
    pub service_id: String,
    /// Slot (0 for global).
    pub slot: u64,
    /// Node (global tasks).
    pub node_id: Option<NodeId>,
    /// Spec version.
    pub spec_version: u64,
    /// Usually `running`.
    pub desired: TaskState,
}

/// Changes to services and tasks (variants of the one `Command` enum, nested to keep it short).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceCommand {
    /// Create a service; refused if the name is taken.
    Create {
        /// New ID.
        id: String,
        /// Name (from the spec, checked by the proposer).
        name: String,
        /// The spec as submitted.
        spec: String,
        /// RFC 3339 time of the request.
        at: String,
    },
    /// Replace the spec; refused unless `version` is the current `modify_index`.
    Update {
        /// Service ID.
        id: String,
        /// The version the client read.
        version: u64,
        /// New name (renames must not clash).
        name: String,
        /// New spec (for a rollback: the previous one).
        spec: String,
        /// RFC 3339.
        at: String,
        /// A rollback to the previous spec (the updater then uses the rollback config).
        rollback: bool,
    },
    /// Delete a service; its tasks are set to desired `remove`.
    Remove {
        /// Service ID.
        id: String,
    },
    /// Set the rolling update status.
    SetUpdateStatus {
        /// Service ID.
        id: String,
        /// New status.
        status: Option<UpdateStatus>,
    },
    /// Create tasks (state `new`).
    CreateTasks {
        /// The tasks.
        tasks: Vec<NewTask>,
        /// RFC 3339.
        at: String,
    },
    /// Place a task on a node (`new`/`pending` → `assigned`), or leave it pending with a reason.
    Assign {
        /// Task ID.
        id: String,
        /// The node, or `None` to stay pending.
        node_id: Option<NodeId>,
        /// Why ("no suitable node (…)"), or "assigned".
        message: String,
        /// RFC 3339.
        at: String,
    },
    /// Managers: change a task's desired state (forward only).
    SetDesired {
        /// Task ID.
        id: String,
        /// New desired state.
        desired: TaskState,
    },
    /// The node running a task reports its status (forward only; only that node).
    SetStatus {
        /// Task ID.
        id: String,
        /// The reporting node.
        node_id: NodeId,
        /// New status.
        status: TaskStatus,
    },
    /// Delete a task record (the reaper, for tasks desired `remove` that have ended).
    RemoveTask {
        /// Task ID.
        id: String,
    },
}

/// Unix milliseconds as RFC 3339 (UTC), as Docker shows times.
pub fn rfc3339(unix_ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(unix_ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// RFC 3339 to Unix milliseconds; `None` if it does not parse.
pub fn unix_ms(rfc3339: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The two tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTables {
    /// Services by ID.
    pub services: BTreeMap<String, ServiceRecord>,
    /// Tasks by ID.
    pub tasks: BTreeMap<String, TaskRecord>,
    /// Raft index of the last task deletion (so a node's watch on its tasks sees deletions).
    #[serde(default)]
    pub last_task_removal: u64,
}

/// What the tasks of a spec run: its `TaskTemplate` and published ports.
fn task_part(spec: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    let v: serde_json::Value = serde_json::from_str(spec).ok()?;
    Some((v["TaskTemplate"].clone(), v["EndpointSpec"]["Ports"].clone()))
}

fn not_found(msg: impl Into<String>) -> CommandResult {
    CommandResult::Refused(Refusal::not_found(msg))
}

fn conflict(msg: impl Into<String>) -> CommandResult {
    CommandResult::Refused(Refusal::conflict(msg))
}

fn invalid(msg: impl Into<String>) -> CommandResult {
    CommandResult::Refused(Refusal::invalid(msg))
}

impl ServiceTables {
    /// The service named `name`, if any.
    pub fn by_name(&self, name: &str) -> Option<&ServiceRecord> {
        self.services.values().find(|s| s.name == name)
    }

    /// Applies one command at `index`. Deterministic.
    pub fn apply(&mut self, index: u64, cmd: &ServiceCommand) -> CommandResult {
        match cmd {
            ServiceCommand::Create { id, name, spec, at } => {
                if let Some(other) = self.by_name(name) {
                    return conflict(format!(
                        "name conflicts with an existing object: service {name} already exists (ID {})",
                        other.id
                    ));
                }
                if self.services.contains_key(id) {
                    return conflict(format!("service ID {id} is taken"));
                }
                self.services.insert(
                    id.clone(),
                    ServiceRecord {
                        id: id.clone(),
                        name: name.clone(),
                        spec: spec.clone(),
                        previous_spec: None,
                        spec_version: 1,
                        spec_history: BTreeMap::from([(1, spec.clone())]),
                        created_at: at.clone(),
                        updated_at: at.clone(),
                        update_status: None,
                        rolling_back: false,
                        create_index: index,
                        modify_index: index,
                    },
                );
                CommandResult::Done
            }
            ServiceCommand::Update { id, version, name, spec, at, rollback } => {
                if let Some(other) = self.by_name(name).filter(|o| o.id != *id) {
                    return conflict(format!(
                        "name conflicts with an existing object: service {name} already exists (ID {})",
                        other.id
                    ));
                }
                let Some(s) = self.services.get_mut(id) else {
                    return not_found(format!("service {id} not found"));
                };
                if s.modify_index != *version {
                    return conflict(format!(
                        "update out of sequence: service {} is at version {}, the update was made from version {version}; read it again and retry",
                        s.name, s.modify_index
                    ));
                }
                let old = std::mem::replace(&mut s.spec, spec.clone());
                // Only a change to what the tasks run makes them out of date (swarmkit's
                // IsTaskDirty): scaling or renaming keeps the running tasks.
                let dirty = task_part(&old) != task_part(spec);
                s.previous_spec = Some(old);
                s.name = name.clone();
                if dirty {
                    s.spec_version += 1;
                    s.rolling_back = *rollback;
                }
                // As swarmkit: an update starts with no status (the updater sets "updating"); a
                // rollback is "rollback_started" at once, so a client watching sees it begin.
                s.update_status = rollback.then(|| UpdateStatus {
                    state: "rollback_started".into(),
                    started_at: at.clone(),
                    completed_at: None,
                    message: "manually requested rollback".into(),
                });
                s.spec_history.insert(s.spec_version, spec.clone());
                s.updated_at = at.clone();
                s.modify_index = index;
                CommandResult::Done
            }
            ServiceCommand::Remove { id } => {
                if self.services.remove(id).is_none() {
                    return not_found(format!("service {id} not found"));
                }
                for t in self.tasks.values_mut().filter(|t| t.service_id == *id) {
                    if t.desired < TaskState::Remove {
                        t.desired = TaskState::Remove;
                        t.modify_index = index;
                    }
                }
                CommandResult::Done
            }
            ServiceCommand::SetUpdateStatus { id, status } => match self.services.get_mut(id) {
                None => not_found(format!("service {id} not found")),
                Some(s) => {
                    s.update_status = status.clone();
                    s.modify_index = index;
                    CommandResult::Done
                }
            },
            ServiceCommand::CreateTasks { tasks, at } => {
                for t in tasks {
                    if !self.services.contains_key(&t.service_id) {
                        return not_found(format!("service {} not found", t.service_id));
                    }
                    if self.tasks.contains_key(&t.id) {
                        return conflict(format!("task ID {} is taken", t.id));
                    }
                }
                for t in tasks {
                    self.tasks.insert(
                        t.id.clone(),
                        TaskRecord {
                            id: t.id.clone(),
                            service_id: t.service_id.clone(),
                            slot: t.slot,
                            node_id: t.node_id,
                            spec_version: t.spec_version,
                            desired: t.desired,
                            status: TaskStatus {
                                state: TaskState::New,
                                timestamp: at.clone(),
                                message: "created".into(),
                                err: None,
                                container_id: None,
                                exit_code: None,
                            },
                            created_at: at.clone(),
                            create_index: index,
                            modify_index: index,
                        },
                    );
                }
                CommandResult::Done
            }
            ServiceCommand::Assign { id, node_id, message, at } => match self.tasks.get_mut(id) {
                None => not_found(format!("task {id} not found")),
                Some(t) if t.status.state > TaskState::Pending => {
                    conflict(format!("task {id} is already {}", t.status.state.as_str()))
                }
                Some(t) => {
                    let state = if node_id.is_some() { TaskState::Assigned } else { TaskState::Pending };
                    if t.status.state == state && t.status.message == *message {
                        return CommandResult::Applied(false);
                    }
                    t.node_id = node_id.or(t.node_id);
                    t.status =
                        TaskStatus { state, timestamp: at.clone(), message: message.clone(), ..t.status.clone() };
                    t.modify_index = index;
                    CommandResult::Applied(true)
                }
            },
            ServiceCommand::SetDesired { id, desired } => match self.tasks.get_mut(id) {
                None => not_found(format!("task {id} not found")),
                Some(t) if *desired < t.desired => invalid(format!(
                    "task {id}: desired state cannot go back from {} to {}",
                    t.desired.as_str(),
                    desired.as_str()
                )),
                Some(t) if *desired == t.desired => CommandResult::Applied(false),
                Some(t) => {
                    t.desired = *desired;
                    t.modify_index = index;
                    CommandResult::Applied(true)
                }
            },
            ServiceCommand::SetStatus { id, node_id, status } => match self.tasks.get_mut(id) {
                None => not_found(format!("task {id} not found")),
                Some(t) if t.node_id != Some(*node_id) => {
                    invalid(format!("task {id} is not assigned to node {node_id:016x}"))
                }
                Some(t) if status.state < t.status.state => invalid(format!(
                    "task {id}: observed state cannot go back from {} to {}",
                    t.status.state.as_str(),
                    status.state.as_str()
                )),
                Some(t) if *status == t.status => CommandResult::Applied(false),
                Some(t) => {
                    t.status = status.clone();
                    t.modify_index = index;
                    CommandResult::Applied(true)
                }
            },
            ServiceCommand::RemoveTask { id } => {
                let Some(t) = self.tasks.remove(id) else {
                    return CommandResult::Applied(false);
                };
                self.last_task_removal = index;
                // Forget specs no task refers to any more (keep the current one).
                if let Some(s) = self.services.get_mut(&t.service_id) {
                    let used: std::collections::BTreeSet<u64> = self
                        .tasks
                        .values()
                        .filter(|o| o.service_id == t.service_id)
                        .map(|o| o.spec_version)
                        .chain([s.spec_version])
                        .collect();
                    s.spec_history.retain(|v, _| used.contains(v));
                }
                CommandResult::Applied(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(t: &mut ServiceTables, index: u64, id: &str, name: &str) -> CommandResult {
        let cmd = ServiceCommand::Create {
            id: id.into(),
            name: name.into(),
            spec: format!("{{\"Name\":\"{name}\"}}"),
            at: "t".into(),
        };
        t.apply(index, &cmd)
    }

    fn status(state: TaskState) -> TaskStatus {
        TaskStatus {
            state,
            timestamp: "t".into(),
            message: String::new(),
            err: None,
            container_id: None,
            exit_code: None,
        }
    }

    #[test]
    fn names_are_unique_and_updates_need_the_current_version() {
        let mut t = ServiceTables::default();
        assert_eq!(create(&mut t, 5, "s1", "web"), CommandResult::Done);
        assert!(
            matches!(create(&mut t, 6, "s2", "web"), CommandResult::Refused(m) if m.message.contains("name conflicts"))
        );
        let update = |version| ServiceCommand::Update {
            id: "s1".into(),
            version,
            name: "web".into(),
            spec: "{\"Name\":\"web\",\"X\":1,\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"b\"}}}".into(),
            at: "t2".into(),
            rollback: false,
        };
        assert!(
            matches!(t.apply(7, &update(4)), CommandResult::Refused(m) if m.message.contains("update out of sequence"))
        );
        assert_eq!(t.services["s1"].spec_version, 1, "a refused update changes nothing");
        assert_eq!(t.apply(8, &update(5)), CommandResult::Done);
        let s = &t.services["s1"];
        assert_eq!((s.spec_version, s.modify_index, s.previous_spec.as_deref()), (2, 8, Some("{\"Name\":\"web\"}")));
        assert!(s.spec.contains("\"X\":1"), "the spec is kept verbatim");
        assert!(matches!(t.apply(9, &update(5)), CommandResult::Refused(_)), "the old version is stale now");
        // A change outside the task template (a scale) keeps the tasks up to date.
        let scale = ServiceCommand::Update {
            id: "s1".into(),
            version: 8,
            name: "web".into(),
            spec: "{\"Name\":\"web\",\"X\":2,\"Mode\":{\"Replicated\":{\"Replicas\":9}},\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"b\"}}}".into(),
            at: "t3".into(),
            rollback: false,
        };
        assert_eq!(t.apply(10, &scale), CommandResult::Done);
        assert_eq!(t.services["s1"].spec_version, 2, "a scale is not a new task spec");
    }

    #[test]
    fn task_states_never_go_back_and_only_the_assigned_node_reports() {
        let mut t = ServiceTables::default();
        create(&mut t, 1, "s1", "web");
        let new = NewTask {
            id: "t1".into(),
            service_id: "s1".into(),
            slot: 1,
            node_id: None,
            spec_version: 1,
            desired: TaskState::Running,
        };
        assert_eq!(t.apply(2, &ServiceCommand::CreateTasks { tasks: vec![new], at: "t".into() }), CommandResult::Done);
        let assign =
            ServiceCommand::Assign { id: "t1".into(), node_id: Some(7), message: "assigned".into(), at: "t".into() };
        assert_eq!(t.apply(3, &assign), CommandResult::Applied(true));
        let report = |node, state| ServiceCommand::SetStatus { id: "t1".into(), node_id: node, status: status(state) };
        assert!(
            matches!(t.apply(4, &report(8, TaskState::Running)), CommandResult::Refused(m) if m.message.contains("not assigned to node"))
        );
        assert_eq!(t.apply(5, &report(7, TaskState::Running)), CommandResult::Applied(true));
        assert!(
            matches!(t.apply(6, &report(7, TaskState::Starting)), CommandResult::Refused(m) if m.message.contains("cannot go back"))
        );
        assert!(matches!(t.apply(7, &assign), CommandResult::Refused(m) if m.message.contains("already running")));
        let desired = |d| ServiceCommand::SetDesired { id: "t1".into(), desired: d };
        assert_eq!(t.apply(8, &desired(TaskState::Shutdown)), CommandResult::Applied(true));
        assert!(matches!(t.apply(9, &desired(TaskState::Running)), CommandResult::Refused(_)));
        assert_eq!(t.tasks["t1"].desired, TaskState::Shutdown);
        // Removing the service marks its tasks for removal; the reaper deletes them.
        assert_eq!(t.apply(10, &ServiceCommand::Remove { id: "s1".into() }), CommandResult::Done);
        assert_eq!(t.tasks["t1"].desired, TaskState::Remove);
        assert_eq!(t.apply(11, &ServiceCommand::RemoveTask { id: "t1".into() }), CommandResult::Applied(true));
        assert!(t.tasks.is_empty());
    }

    fn any_state() -> impl proptest::strategy::Strategy<Value = TaskState> {
        use TaskState::*;
        proptest::sample::select(vec![
            New, Pending, Assigned, Accepted, Preparing, Ready, Starting, Running, Complete, Shutdown, Failed,
            Rejected, Remove, Orphaned,
        ])
    }

    proptest::proptest! {
        /// Whatever managers and nodes propose, in any order, neither state of a task moves backwards,
        /// and a refused command changes nothing.
        #[test]
        fn no_task_state_moves_backwards(steps in proptest::collection::vec((proptest::bool::ANY, any_state(), 0u64..3), 1..60)) {
            let mut t = ServiceTables::default();
            create(&mut t, 1, "s1", "web");
            let new = NewTask { id: "t1".into(), service_id: "s1".into(), slot: 1, node_id: Some(1), spec_version: 1, desired: TaskState::Running };
            t.apply(2, &ServiceCommand::CreateTasks { tasks: vec![new], at: "t".into() });
            for (i, (desired, state, node)) in steps.into_iter().enumerate() {
                let before = t.tasks["t1"].clone();
                let cmd = if desired {
                    ServiceCommand::SetDesired { id: "t1".into(), desired: state }
                } else {
                    ServiceCommand::SetStatus { id: "t1".into(), node_id: node, status: status(state) }
                };
                let r = t.apply(3 + i as u64, &cmd);
                let after = &t.tasks["t1"];
                proptest::prop_assert!(after.desired >= before.desired);
                proptest::prop_assert!(after.status.state >= before.status.state);
                proptest::prop_assert_eq!(after.spec_version, before.spec_version);
                if matches!(r, CommandResult::Refused(_)) {
                    proptest::prop_assert_eq!(after, &before);
                }
            }
        }
    }

    #[test]
    fn times_round_trip() {
        let ms = 1_795_000_000_123;
        assert_eq!(unix_ms(&rfc3339(ms)), Some(ms));
        assert_eq!(unix_ms("not a time"), None);
    }

    #[test]
    fn states_are_ordered_as_swarmkit() {
        use TaskState::*;
        let order = [
            New, Pending, Assigned, Accepted, Preparing, Ready, Starting, Running, Complete, Shutdown, Failed,
            Rejected, Remove, Orphaned,
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        assert!(!Running.is_terminal() && Complete.is_terminal() && Failed.is_terminal());
    }
}
