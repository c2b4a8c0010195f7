//! The agent side of the contract: a node learns its tasks through the one watch mechanism (a
//! blocking query over the cluster RPC, or locally on a manager) and reports their status back.
//!
//! ```text
//! agent ──/cluster/assignments {index, wait}──▶ any manager: its tasks once something changed for it
//! agent ──/cluster/task-status [(task, status)]─▶ any manager ──write──▶ leader (SetStatus, batched)
//! ```
//! The node is the one its certificate names: a node can neither read nor report another's tasks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::manager::Manager;
use crate::services::{ServiceCommand, TaskRecord, TaskState, TaskStatus};
use crate::types::{Command, CommandResult, NodeId};

/// One task a node must run (or stop), with what it needs to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task record.
    pub task: TaskRecord,
    /// Its service's name (for container names and labels).
    pub service_name: String,
    /// The task spec (Docker's `TaskTemplate` JSON) of the task's spec version; empty once the
    /// service is removed.
    pub task_spec: String,
    /// The service's `EndpointSpec` JSON (published ports) at that version; empty if none.
    #[serde(default)]
    pub endpoint_spec: String,
}

/// A blocking request for a node's assignments.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AssignmentsRequest {
    /// The index the node last saw (0: now).
    pub index: u64,
    /// How long to wait for a change, in milliseconds (at most 5 minutes).
    pub wait_ms: u64,
}

/// A node's assignments at `index`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignments {
    /// Pass it back to wait for the next change.
    pub index: u64,
    /// Every task on the node that it must run, or stop (placed, not yet deleted).
    pub tasks: Vec<Assignment>,
}

impl Manager {
    /// The tasks assigned to `node`, once something changed for it after `index` (or `wait` passed).
    pub async fn assignments_for(&self, node: NodeId, index: u64, wait: Duration) -> Assignments {
        let deadline = tokio::time::Instant::now() + wait.min(Duration::from_secs(300));
        let view = self.view().clone();
        let (index, tasks) = self
            .view()
            .watch()
            .query(index, deadline, || {
                view.read(|s| {
                    let mut index = s.services.last_task_removal;
                    let tasks: Vec<Assignment> = s
                        .services
                        .tasks
                        .values()
                        .filter(|t| t.node_id == Some(node) && t.status.state >= TaskState::Assigned)
                        .map(|t| {
                            index = index.max(t.modify_index);
                            let service = s.services.services.get(&t.service_id);
                            let spec = service
                                .and_then(|svc| svc.spec_history.get(&t.spec_version))
                                .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
                            let part = |key: &str| {
                                spec.as_ref().map(|v| &v[key]).filter(|v| !v.is_null()).map(|v| v.to_string())
                            };
                            Assignment {
                                task: t.clone(),
                                service_name: service.map(|svc| svc.name.clone()).unwrap_or_default(),
                                task_spec: part("TaskTemplate").unwrap_or_default(),
                                endpoint_spec: part("EndpointSpec").unwrap_or_default(),
                            }
                        })
                        .collect();
                    (index, tasks)
                })
            })
            .await;
        Assignments { index, tasks }
    }

    /// Records what `node` reports about its tasks. Reports that would move a state backwards, or
    /// that name another node's task, are refused by the state machine and logged.
    pub async fn report_status(&self, node: NodeId, updates: Vec<(String, TaskStatus)>) -> Result<(), Error> {
        if updates.is_empty() {
            return Ok(());
        }
        let cmds: Vec<Command> = updates
            .into_iter()
            .map(|(id, status)| Command::Service(ServiceCommand::SetStatus { id, node_id: node, status }))
            .collect();
        if let CommandResult::Batch(results) = self.write(Command::Batch(cmds)).await? {
            for r in results {
                if let CommandResult::Refused(why) = r {
                    tracing::warn!(node_id = format!("{node:016x}"), reason = %why, "task status report refused");
                }
            }
        }
        Ok(())
    }
}
