//! The one command enum every table of the registry goes through, and the state machine's answer.
//!
//! Every change to the cluster is one [`Command`] in the Raft log; [`crate::State::apply`] turns it
//! into a [`CommandResult`]. There is one log, one state machine and one index.

use serde::{Deserialize, Serialize};

use crate::node::{Availability, NodeId, NodeStatus, Resources, Role};

/// Every change to the registry. Applied deterministically by [`crate::state::State::apply`].
// Commands are built once and moved into the log (see `CatalogCommand`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Written once by the first manager: the cluster's identity and join secrets.
    InitCluster {
        /// Cluster identifier, part of every join token: the digest of the root CA certificate.
        cluster_id: String,
        /// The cluster root CA (certificate and key), so that any leader can issue certificates.
        ca: Option<crate::cluster::ClusterCa>,
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
    /// The service catalog: instances, checks, external nodes. (Appended last: log entries are
    /// bincode, which numbers variants by position.)
    Catalog(crate::catalog::CatalogCommand),
}

/// The answer of the state machine to one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Blank and membership entries, and commands that always succeed.
    Done,
    /// A conditional command: whether it took effect (Consul's `true`/`false`).
    Applied(bool),
    /// The command was refused; nothing changed. The kind says what the caller should do.
    Refused(Refusal),
    /// The results of a [`Command::Batch`], in order.
    Batch(Vec<CommandResult>),
}

impl CommandResult {
    /// `true` unless the command was conditional and its condition failed, or was refused.
    pub fn succeeded(&self) -> bool {
        matches!(self, CommandResult::Done | CommandResult::Applied(true))
    }
}

/// Why the state machine refused a command: callers branch on the kind, people read the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// Says what was wrong, for people.
    pub message: String,
}

/// The kinds of [`Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalKind {
    /// The record the command names does not exist.
    NotFound,
    /// The command clashes with what is stored (a taken name or ID, a stale version): read and retry.
    Conflict,
    /// The command can never apply as it is (a state moving backwards, a wrong node, a nested batch).
    Invalid,
}

impl Refusal {
    /// A refusal because something is missing.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { kind: RefusalKind::NotFound, message: message.into() }
    }

    /// A refusal because the command clashes with what is stored.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self { kind: RefusalKind::Conflict, message: message.into() }
    }

    /// A refusal because the command can never apply as it is.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { kind: RefusalKind::Invalid, message: message.into() }
    }
}
