//! The agent side of the contract: a node learns its tasks through the one watch mechanism (a
//! blocking query over the cluster RPC, or locally on a manager) and reports their status back.
//!
//! ```text
//! agent ──/cluster/assignments {index, wait}──▶ any manager: its tasks once something changed for it
//! agent ──/cluster/task-status [(task, status)]─▶ any manager ──write──▶ leader (SetStatus, batched)
//! ```
//! The node is the one its certificate names: a node can neither read nor report another's tasks.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::response::Response;

use crate::cluster::manager::Manager;
use crate::cluster::server::{Bincode, encode};
use crate::error::Error;
use crate::pki::listener::Peer;
use crate::rpc::wire::{Assignment, Assignments, AssignmentsRequest};
use shoal_model::services::{ServiceCommand, TaskState, TaskStatus};
use shoal_model::{Command, CommandResult, NodeId};

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

/// The cluster-port routes of task dispatch (`/cluster/assignments`, `/cluster/task-status`), for
/// any node of the cluster; the cluster room puts them behind its certificate check.
pub fn routes() -> axum::Router<Arc<Manager>> {
    axum::Router::new()
        .route("/cluster/assignments", axum::routing::post(assignments))
        .route("/cluster/task-status", axum::routing::post(task_status))
}

async fn assignments(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Bincode(req): Bincode<AssignmentsRequest>,
) -> Response {
    let who = peer.identity.expect("checked by require_member");
    encode(&m.assignments_for(who.id, req.index, std::time::Duration::from_millis(req.wait_ms)).await)
}

async fn task_status(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Bincode(updates): Bincode<Vec<(String, TaskStatus)>>,
) -> Response {
    let who = peer.identity.expect("checked by require_member");
    encode(&m.report_status(who.id, updates).await)
}
