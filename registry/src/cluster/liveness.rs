//! The leader's liveness verdicts: "no contact over the cluster port for the down window" becomes a
//! Raft write that marks the node `down`, and a contact again marks it `ready`.
//!
//! ```text
//! worker heartbeat RPC (TCP, to any manager, forwarded) ─┬─▶ last contact ─▶ verdict ─▶ NodeSetStatus (Raft)
//! Raft replication answers (managers)                   ─┘                     │
//! gossip (any node's heartbeat counter) ──────────────────────▶ only explains a down verdict in the log
//! ```
//!
//! Ready means "can be given work": tasks reach a node over the cluster port, so only a contact
//! there counts. Gossip alone does not: a node whose certificate is refused (expired) or whose
//! cluster port is blocked still gossips, and counting that kept such nodes Ready while the
//! scheduler placed tasks they could never receive. Two paths still keep one lost packet from
//! making a node flap: a worker's heartbeats overlap rather than wait for each other, and any
//! manager forwards them. A new leader gives every node a full window from the moment it took
//! over, so an election never marks the cluster down.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::cluster::manager::Manager;
use shoal_model::{Command, CommandResult, NodeId, NodeStatus};

/// How often the leader re-judges liveness.
const TICK: Duration = Duration::from_millis(250);

/// A source of "when was each node last heard from" (gossip, in practice). It no longer decides
/// a verdict; it tells the operator that a node marked down is alive but cannot reach the cluster port.
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

/// When the leader last heard from a node, by path.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastHeard {
    /// A heartbeat or a Raft answer over the cluster port.
    pub cluster_port: Option<Instant>,
    /// Gossip.
    pub gossip: Option<Instant>,
}

impl LastHeard {
    /// Whether gossip heard the node within `window` before `now`.
    pub fn gossiping(&self, now: Instant, window: Duration) -> bool {
        self.gossip.is_some_and(|t| now.saturating_duration_since(t) < window)
    }
}

/// The verdict for one node: Ready only with a cluster-port contact within the window (gossip
/// does not count). Pure, so the rules are table-tested.
pub fn verdict(heard: LastHeard, leading_since: Instant, now: Instant, window: Duration) -> NodeStatus {
    let last = heard.cluster_port.map_or(leading_since, |t| t.max(leading_since));
    if now.saturating_duration_since(last) < window { NodeStatus::Ready } else { NodeStatus::Down }
}

/// One change of a node's recorded status.
struct Change {
    id: NodeId,
    status: NodeStatus,
    /// Gossip heard it within the window: it runs, but does not reach the cluster port.
    gossiping: bool,
}

/// Runs until the manager is dropped or shut down; acts only while this node leads.
pub(crate) async fn run(manager: Weak<Manager>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading_since: Option<Instant> = None;
    // When this leader first saw each node down, in ms since it began leading (its own clock, so a
    // new leader waits a full period before it removes a down node's instances).
    let mut down_since: BTreeMap<String, u64> = BTreeMap::new();
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
            down_since.clear();
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        reap_down_nodes(&m, since, &mut down_since).await;
        let changes = changes(&m, since);
        if changes.is_empty() {
            continue;
        }
        let cmds = changes.iter().map(|c| Command::NodeSetStatus { id: c.id, status: c.status }).collect();
        match m.write(Command::Batch(cmds)).await {
            Ok(CommandResult::Batch(results)) => {
                for (c, r) in changes.iter().zip(results) {
                    if r.succeeded() {
                        log_change(&m, c);
                    }
                }
            }
            Ok(other) => tracing::warn!(result = ?other, "unexpected answer to a liveness write"),
            Err(e) => tracing::warn!(error = %e, "cannot record node liveness"),
        }
    }
}

/// Removes the registrator and agent instances of nodes down for longer than
/// `deregister_critical_after` (Consul's reap of failed nodes, per node instead of per check).
async fn reap_down_nodes(m: &Arc<Manager>, leading_since: Instant, down_since: &mut BTreeMap<String, u64>) {
    let now_ms = leading_since.elapsed().as_millis() as u64;
    let after_ms = m.config.deregister_critical_after.as_millis() as u64;
    let cmds = m.view.read(|s| {
        down_since.retain(|name, _| s.nodes.values().any(|n| &n.name == name && n.status == NodeStatus::Down));
        for n in s.nodes.values().filter(|n| n.status == NodeStatus::Down) {
            down_since.entry(n.name.clone()).or_insert(now_ms);
        }
        shoal_model::catalog::reap::expired_down_nodes(s, down_since, now_ms, after_ms)
    });
    if cmds.is_empty() {
        return;
    }
    let n = cmds.len();
    match m.write(Command::Batch(cmds.into_iter().map(Command::Catalog).collect())).await {
        Ok(_) => {
            tracing::info!(instances = n, after = ?m.config.deregister_critical_after, "removed the instances of nodes down for the deregistration period")
        }
        Err(e) => tracing::warn!(error = %e, "cannot remove the instances of down nodes"),
    }
}

fn log_change(m: &Manager, c: &Change) {
    let name = m.view.read(|s| s.nodes.get(&c.id).map(|n| n.name.clone())).unwrap_or_default();
    let node_id = format!("{:016x}", c.id);
    let window_ms = m.config.down_window.as_millis() as u64;
    match c.status {
        NodeStatus::Down if c.gossiping => tracing::warn!(
            node_id,
            name = %name,
            window_ms,
            "node marked down: it gossips, but no heartbeat or Raft answer reached the cluster port for the down window (an expired or refused certificate, or a blocked port?)"
        ),
        NodeStatus::Down => {
            tracing::warn!(node_id, name = %name, window_ms, "node marked down: not heard from for the down window")
        }
        _ => tracing::info!(node_id, name = %name, "node marked ready"),
    }
}

/// Nodes whose recorded status differs from the verdict.
fn changes(m: &Arc<Manager>, leading_since: Instant) -> Vec<Change> {
    let now = Instant::now();
    let window = m.config.down_window;
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
            let heard = LastHeard {
                cluster_port: [rpc.get(&id).copied(), m.contacts.last(id)].into_iter().flatten().max(),
                gossip: gossip.get(&id).copied(),
            };
            let wanted = if id == m.id { NodeStatus::Ready } else { verdict(heard, leading_since, now, window) };
            (wanted != recorded).then_some(Change { id, status: wanted, gossiping: heard.gossiping(now, window) })
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
        let port = |t| LastHeard { cluster_port: Some(t), gossip: None };
        let cases = [
            ("heard just now", port(t0 + s(10)), t0, t0 + s(10), NodeStatus::Ready),
            ("heard 4 s ago", port(t0 + s(6)), t0, t0 + s(10), NodeStatus::Ready),
            ("heard 5 s ago", port(t0 + s(5)), t0, t0 + s(10), NodeStatus::Down),
            ("never heard, leader new", LastHeard::default(), t0 + s(8), t0 + s(10), NodeStatus::Ready),
            ("never heard, leader for a window", LastHeard::default(), t0, t0 + s(10), NodeStatus::Down),
            ("heard long ago but leader just took over", port(t0), t0 + s(9), t0 + s(10), NodeStatus::Ready),
            (
                "gossip just now, cluster port silent for a window",
                LastHeard { cluster_port: Some(t0), gossip: Some(t0 + s(10)) },
                t0,
                t0 + s(10),
                NodeStatus::Down,
            ),
            (
                "gossip only, never on the cluster port",
                LastHeard { cluster_port: None, gossip: Some(t0 + s(10)) },
                t0,
                t0 + s(10),
                NodeStatus::Down,
            ),
            (
                "cluster port just now, gossip silent",
                LastHeard { cluster_port: Some(t0 + s(9)), gossip: Some(t0) },
                t0,
                t0 + s(10),
                NodeStatus::Ready,
            ),
        ];
        for (name, heard, since, now, want) in cases {
            assert_eq!(verdict(heard, since, now, w), want, "{name}");
        }
        let gossiping = LastHeard { cluster_port: None, gossip: Some(t0 + s(8)) };
        assert!(gossiping.gossiping(t0 + s(10), w));
        assert!(!gossiping.gossiping(t0 + s(14), w));
    }
}
