//! The service and task tables (swarmkit's model, Docker's field names).
//!
//! Rules the state machine enforces, whoever proposes the command:
//! - a service's spec is stored verbatim as submitted; updates carry the version (`ModifyIndex`)
//!   they read, and a stale one is refused ("update out of sequence");
//! - a task's spec version never changes; its desired state is written by managers, its observed
//!   state only by the node it is assigned to; neither moves backwards (refused, not applied).
//!
//! This file holds the records and the commands; `apply.rs` the deterministic apply, one method
//! per command.

mod apply;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

impl ServiceTables {
    /// The tasks `cmd` may send away (shut down, end or delete), each with its service's name, read
    /// before the command is applied (a removed service's name is gone after it).
    pub fn tasks_named_by(&self, cmd: &ServiceCommand) -> Vec<(String, String)> {
        let name_of = |service_id: &str| self.services.get(service_id).map(|s| s.name.clone());
        let task = |id: &str| {
            self.tasks.get(id).and_then(|t| name_of(&t.service_id).map(|n| (id.to_string(), n))).into_iter().collect()
        };
        match cmd {
            ServiceCommand::SetDesired { id, desired } if *desired > TaskState::Running => task(id),
            ServiceCommand::SetStatus { id, status, .. } if status.state.is_terminal() => task(id),
            ServiceCommand::RemoveTask { id } => task(id),
            ServiceCommand::Remove { id } => match name_of(id) {
                None => Vec::new(),
                Some(name) => {
                    self.tasks.values().filter(|t| &t.service_id == id).map(|t| (t.id.clone(), name.clone())).collect()
                }
            },
            _ => Vec::new(),
        }
    }

    /// The service named `name`, if any.
    pub fn by_name(&self, name: &str) -> Option<&ServiceRecord> {
        self.services.values().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
