//! The Raft type configuration and the one command enum every table of the registry goes through.
//!
//! Later tables (nodes, services, tasks, catalog) add variants to [`Command`] and [`CommandResult`];
//! there is one log, one state machine and one index.

use std::fmt;
use std::io::Cursor;

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

openraft::declare_raft_types!(
    /// Shoal's Raft types: [`Command`] in, [`CommandResult`] out, `u64` node IDs.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = ShoalNode,
);

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
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "pause" => Ok(Self::Pause),
            "drain" => Ok(Self::Drain),
            other => Err(crate::error::Error::BadRequest(format!(
                "invalid availability {other:?}: use active, pause or drain"
            ))),
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

static ENGINE_VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

impl Resources {
    /// Records the local engine's version once at start (the `shoal` binary probes the engine;
    /// the registry knows nothing of Docker).
    pub fn set_engine_version(version: String) {
        let _ = ENGINE_VERSION.set(version);
    }

    /// Measures this host: CPUs from the scheduler affinity, memory from `/proc/meminfo`.
    pub fn of_this_host() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(0);
        Self { cpus, memory_bytes, engine_version: ENGINE_VERSION.get().cloned().unwrap_or_default() }
    }
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

/// Every change to the registry. Applied deterministically by [`crate::state::State::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Written once by the first manager: the cluster's identity and join secrets.
    InitCluster {
        /// Cluster identifier, part of every join token: the digest of the root CA certificate.
        cluster_id: String,
        /// The cluster root CA (certificate and key), so that any leader can issue certificates.
        ca: Option<crate::tls::ClusterCa>,
        /// Secret of the manager join token.
        manager_secret: String,
        /// Secret of the worker join token.
        worker_secret: String,
    },
    /// Replace the secret of one join token; the old token stops working at once.
    RotateToken {
        /// Which token.
        role: Role,
        /// The new secret.
        secret: String,
    },
    /// Create or update a node record (`create_index`/`modify_index` are set by the state machine).
    NodeUpsert {
        /// Node ID.
        id: NodeId,
        /// Name.
        name: String,
        /// Cluster RPC address.
        cluster_addr: String,
        /// HTTP API address.
        http_addr: String,
        /// Role.
        role: Role,
        /// CPUs and memory, as measured by the node.
        resources: Resources,
    },
    /// Operator changes to a node: availability and labels (absent fields stay as they are).
    NodeUpdate {
        /// Node ID.
        id: NodeId,
        /// New availability.
        availability: Option<Availability>,
        /// Labels to add or overwrite.
        label_add: std::collections::BTreeMap<String, String>,
        /// Labels to remove.
        label_rm: Vec<String>,
    },
    /// Change a node's role (promotion of a worker; the node acts on it).
    NodeSetRole {
        /// Node ID.
        id: NodeId,
        /// New role.
        role: Role,
    },
    /// The leader's verdict on liveness (from gossip and heartbeats), one node per command.
    NodeSetStatus {
        /// Node ID.
        id: NodeId,
        /// Ready or down.
        status: NodeStatus,
    },
    /// Remove a node record.
    NodeRemove {
        /// Node ID.
        id: NodeId,
    },
    /// Services and tasks.
    Service(crate::services::ServiceCommand),
    /// Consul `PUT /v1/kv/<key>`.
    KvSet {
        /// Key.
        key: String,
        /// Raw value bytes.
        value: Vec<u8>,
        /// Opaque flags.
        flags: u64,
        /// `Some(0)`: create only; `Some(n)`: only if `ModifyIndex == n`.
        cas: Option<u64>,
    },
    /// Several commands proposed together (group commit); applied in order, all at the batch's
    /// index, each with its own result. Batches do not nest.
    Batch(Vec<Command>),
    /// Consul `DELETE /v1/kv/<key>`.
    KvDelete {
        /// Key, or prefix when `recurse`.
        key: String,
        /// Delete every key with this prefix.
        recurse: bool,
        /// Only if `ModifyIndex == n` (single key only).
        cas: Option<u64>,
    },
}

/// The answer of the state machine to one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Blank and membership entries, and commands that always succeed.
    Done,
    /// A conditional command: whether it took effect (Consul's `true`/`false`).
    Applied(bool),
    /// The command was refused; nothing changed.
    Refused(String),
    /// The results of a [`Command::Batch`], in order.
    Batch(Vec<CommandResult>),
}

impl CommandResult {
    /// `true` unless the command was conditional and its condition failed, or was refused.
    pub fn succeeded(&self) -> bool {
        matches!(self, CommandResult::Done | CommandResult::Applied(true))
    }
}
