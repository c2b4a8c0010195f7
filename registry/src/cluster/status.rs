//! What a manager reports about Raft: the leader, whether there is a working one (Consul's
//! `X-Consul-KnownLeader`, `X-Consul-LastContact`), the voters, and the log writer's counters.

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use shoal_model::{NodeId, ShoalNode};

use crate::cluster::manager::Manager;

impl Manager {
    /// The leader as this node sees it: its ID and addresses.
    pub fn leader(&self) -> Option<(NodeId, ShoalNode)> {
        // Borrow, not clone: these run on every request (X-Consul-* headers, write routing).
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, node))
    }

    /// Whether this node leads.
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.current_leader == Some(self.id) && m.state == ServerState::Leader
    }

    /// Whether this node believes there is a working leader (Consul's `X-Consul-KnownLeader`). A
    /// leader that has not heard from a quorum for several election timeouts does not count.
    pub fn known_leader(&self) -> bool {
        // Borrow, not clone: these run on every request (X-Consul-* headers, write routing).
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        match m.current_leader {
            None => false,
            Some(id) if id == self.id => {
                let stale = 3 * self.config.election_timeout.1.as_millis() as u64;
                m.millis_since_quorum_ack.is_none_or(|ms| ms < stale)
            }
            Some(_) => true,
        }
    }

    /// Milliseconds since this node last heard from a leader (0 on the leader).
    pub fn last_contact_ms(&self) -> u64 {
        if self.raft.metrics().borrow().state == ServerState::Leader {
            return 0;
        }
        self.leader_contact.lock().expect("leader contact lock").elapsed().as_millis() as u64
    }

    /// The voters' cluster addresses.
    pub fn peers(&self) -> Vec<String> {
        // Borrow, not clone: these run on every request (X-Consul-* headers, write routing).
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        membership.voter_ids().filter_map(|id| membership.get_node(&id).map(|n| n.cluster_addr.clone())).collect()
    }

    /// Raft and log-writer figures for operators (`GET /v1/agent/raft`).
    pub fn raft_stats(&self) -> RaftStats {
        use std::sync::atomic::Ordering::Relaxed;
        let m = self.raft.metrics().borrow().clone();
        RaftStats {
            state: format!("{:?}", m.state),
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            leader: self.leader().map(|(_, n)| n.cluster_addr).unwrap_or_default(),
            fsyncs: self.log_stats.fsyncs.load(Relaxed),
            append_calls: self.log_stats.appends.load(Relaxed),
            entries_written: self.log_stats.entries.load(Relaxed),
        }
    }
}

/// `GET /v1/agent/raft`: what this manager's Raft and log writer are doing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RaftStats {
    /// Leader, Follower, Candidate, Learner.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// Last log index on this node.
    pub last_log_index: u64,
    /// Last applied index.
    pub applied_index: u64,
    /// Index covered by the last snapshot.
    pub snapshot_index: u64,
    /// The leader's cluster address, `""` if none.
    pub leader: String,
    /// Durable commits of the log writer; fewer than `AppendCalls` means group commit is sharing fsyncs.
    pub fsyncs: u64,
    /// Appends openraft asked for.
    pub append_calls: u64,
    /// Log entries written.
    pub entries_written: u64,
}
