//! The leader's liveness verdicts: "not heard from for the down window" becomes a Raft write that
//! marks the node `down`, and hearing from it again marks it `ready`.
//!
//! ```text
//! gossip (any node's heartbeat counter, first- or second-hand) ─┐
//! worker heartbeat RPC (TCP, to any manager, forwarded)       ─┼─▶ last heard ─▶ verdict ─▶ NodeSetStatus (Raft)
//! Raft replication answers (managers)                          ─┘
//! ```
//!
//! Several sources so that one lossy path does not make a node flap: a node is down only when
//! *none* of them heard from it for the whole window. A new leader gives every node a full window
//! from the moment it took over, so an election never marks the cluster down.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::cluster::manager::Manager;
use shoal_model::{Command, CommandResult, NodeId, NodeStatus};

/// How often the leader re-judges liveness.
const TICK: Duration = Duration::from_millis(250);

/// A source of "when was each node last heard from" (gossip, in practice).
pub trait Heard: Send + Sync + 'static {
    /// Node ID → the last time it was heard from.
    fn last_heard(&self) -> HashMap<NodeId, Instant>;
    /// Every node the source knows of (`GET /v1/agent/members`).
    fn members(&self) -> futures::future::BoxFuture<'_, Vec<GossipMember>>;
}

/// One gossip member, as `GET /v1/agent/members` shows it (Consul's field names).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct GossipMember {
    /// Node name.
    pub name: String,
    /// Gossip IP.
    pub addr: String,
    /// Gossip port.
    pub port: u16,
    /// `id`, `role`, `cluster_addr`.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Serf's codes: 1 alive, 4 failed.
    pub status: u8,
    /// Milliseconds since its heartbeat last moved, as seen here (absent for this node).
    pub last_heard_ms: Option<u64>,
}

/// The verdict for one node: pure, so the rules are table-tested.
pub fn verdict(last_heard: Option<Instant>, leading_since: Instant, now: Instant, window: Duration) -> NodeStatus {
    let last = last_heard.map_or(leading_since, |t| t.max(leading_since));
    if now.saturating_duration_since(last) < window { NodeStatus::Ready } else { NodeStatus::Down }
}

/// Runs until the manager is dropped or shut down; acts only while this node leads.
pub(crate) async fn run(manager: Weak<Manager>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading_since: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Some(m) = manager.upgrade() else { return };
        let (leading, running) = {
            let metrics = m.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state == ServerState::Leader, metrics.running_state.is_ok())
        };
        if !running {
            return;
        }
        if !leading {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        let changes = changes(&m, since);
        if changes.is_empty() {
            continue;
        }
        let cmds = changes.iter().map(|&(id, status)| Command::NodeSetStatus { id, status }).collect();
        match m.write(Command::Batch(cmds)).await {
            Ok(CommandResult::Batch(results)) => {
                for ((id, status), r) in changes.iter().zip(results) {
                    if r.succeeded() {
                        let name = m.view.read(|s| s.nodes.get(id).map(|n| n.name.clone())).unwrap_or_default();
                        match status {
                            NodeStatus::Down => tracing::warn!(
                                node_id = format!("{id:016x}"),
                                name = %name,
                                window_ms = m.config.down_window.as_millis() as u64,
                                "node marked down: not heard from for the down window"
                            ),
                            _ => tracing::info!(node_id = format!("{id:016x}"), name = %name, "node marked ready"),
                        }
                    }
                }
            }
            Ok(other) => tracing::warn!(result = ?other, "unexpected answer to a liveness write"),
            Err(e) => tracing::warn!(error = %e, "cannot record node liveness"),
        }
    }
}

/// Nodes whose recorded status differs from the verdict.
fn changes(m: &Arc<Manager>, leading_since: Instant) -> Vec<(NodeId, NodeStatus)> {
    let now = Instant::now();
    let gossip = m.heard.read().expect("heard lock").as_ref().map(|h| h.last_heard()).unwrap_or_default();
    // The RPC heartbeats are kept in tokio's clock; bring them to std's.
    let tokio_now = tokio::time::Instant::now();
    let rpc: HashMap<NodeId, Instant> = m
        .workers_seen
        .lock()
        .expect("workers lock")
        .iter()
        .map(|(id, t)| (*id, now.checked_sub(tokio_now.saturating_duration_since(*t)).unwrap_or(now)))
        .collect();
    let records: Vec<(NodeId, NodeStatus)> = m.view.read(|s| s.nodes.values().map(|n| (n.id, n.status)).collect());
    records
        .into_iter()
        .filter_map(|(id, recorded)| {
            let wanted = if id == m.id {
                NodeStatus::Ready
            } else {
                let last =
                    [gossip.get(&id).copied(), rpc.get(&id).copied(), m.contacts.last(id)].into_iter().flatten().max();
                verdict(last, leading_since, now, m.config.down_window)
            };
            (wanted != recorded).then_some((id, wanted))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let t0 = Instant::now();
        let w = Duration::from_secs(5);
        let s = Duration::from_secs;
        let cases = [
            ("heard just now", Some(t0 + s(10)), t0, t0 + s(10), NodeStatus::Ready),
            ("heard 4 s ago", Some(t0 + s(6)), t0, t0 + s(10), NodeStatus::Ready),
            ("heard 5 s ago", Some(t0 + s(5)), t0, t0 + s(10), NodeStatus::Down),
            ("never heard, leader new", None, t0 + s(8), t0 + s(10), NodeStatus::Ready),
            ("never heard, leader for a window", None, t0, t0 + s(10), NodeStatus::Down),
            ("heard long ago but leader just took over", Some(t0), t0 + s(9), t0 + s(10), NodeStatus::Ready),
        ];
        for (name, heard, since, now, want) in cases {
            assert_eq!(verdict(heard, since, now, w), want, "{name}");
        }
    }
}
