//! The node table's records: who a node is, its role, availability and liveness, and what it offers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's stable identity in Raft.
pub type NodeId = u64;

/// What Raft knows about a member: enough to reach it on the cluster port and to forward clients to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShoalNode {
    /// Human name (hostname by default).
    pub name: String,
    /// `IP:PORT` of the cluster RPC listener (Raft and agent RPC).
    pub cluster_addr: String,
    /// `IP:PORT` of the HTTP API.
    pub http_addr: String,
    /// `IP:PORT` of the gossip socket (UDP); empty for members that predate gossip.
    #[serde(default)]
    pub gossip_addr: String,
}

impl fmt::Display for ShoalNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.cluster_addr)
    }
}

/// The role a node joins with; it comes from the join token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Member of the Raft group; keeps the registry.
    Manager,
    /// Runs tasks only; keeps no cluster state.
    #[default]
    Worker,
}

impl Role {
    /// Lowercase name, as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

/// Whether a node takes work, as `docker node update --availability` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// Takes new tasks.
    #[default]
    Active,
    /// Keeps its tasks, takes no new ones.
    Pause,
    /// Its tasks move elsewhere.
    Drain,
}

impl std::str::FromStr for Availability {
    type Err = crate::InvalidInput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "pause" => Ok(Self::Pause),
            "drain" => Ok(Self::Drain),
            other => Err(crate::InvalidInput(format!("invalid availability {other:?}: use active, pause or drain"))),
        }
    }
}

/// Whether a node is up, as the leader recorded it from gossip and heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Not yet judged (e.g. a record written before the leader looked).
    #[default]
    Unknown,
    /// Heard from within the down window.
    Ready,
    /// Not heard from for the down window; its work moves elsewhere.
    Down,
}

impl NodeStatus {
    /// Capitalised, as `node ls` and Docker show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Ready => "Ready",
            Self::Down => "Down",
        }
    }
}

/// What a node offers, measured by the node itself (the scheduler reserves against it later), and
/// the container engine it runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resources {
    /// CPUs available to the process.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// The local Docker engine's version (`""` when no engine answered at start).
    #[serde(default)]
    pub engine_version: String,
}

/// A node in the node table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Raft node ID.
    pub id: NodeId,
    /// Human name.
    pub name: String,
    /// Cluster RPC address `IP:PORT`.
    pub cluster_addr: String,
    /// HTTP API address `IP:PORT`.
    pub http_addr: String,
    /// Manager or worker.
    pub role: Role,
    /// Whether the node takes work (set by operators).
    pub availability: Availability,
    /// Operator-set labels (`node.labels.K` in placement constraints).
    pub labels: std::collections::BTreeMap<String, String>,
    /// CPUs and memory the node reported.
    pub resources: Resources,
    /// Up or down, as the leader last recorded it.
    #[serde(default)]
    pub status: NodeStatus,
    /// Raft index at which the record was created.
    pub create_index: u64,
    /// Raft index of the last change.
    pub modify_index: u64,
}
