//! The messages of the cluster port: what nodes send the managers and what they answer. Plain
//! data (bincode on the wire); the handlers live in `cluster/` and `control/`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use shoal_model::services::TaskRecord;
use shoal_model::{NodeId, Resources, ShoalNode};

use crate::pki::gossip_key::GossipParams;

/// A join request, sent by a new node to any manager and forwarded to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The new node's ID.
    pub id: NodeId,
    /// The new node's addresses.
    pub node: ShoalNode,
    /// Its CPUs and memory.
    pub resources: Resources,
}

/// A joining node's request for a certificate (sent over TLS that verifies the server against the
/// CA pinned by the token; the node has no certificate yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateRequest {
    /// The join token; its role decides the certificate's role.
    pub token: String,
    /// The new node's ID.
    pub id: NodeId,
    /// Its certificate signing request, PEM.
    pub csr_pem: String,
    /// The IP it advertises (the certificate's SAN).
    pub ip: IpAddr,
}

/// The leader's answer to a certificate request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// The signed node certificate, PEM.
    pub cert_pem: String,
    /// The gossip key and the managers' gossip addresses.
    pub gossip: GossipParams,
}

/// A member's request for a renewed certificate (over mutual TLS: the current certificate says who).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    /// CSR for the new key, PEM.
    pub csr_pem: String,
    /// The IP it advertises.
    pub ip: IpAddr,
}

/// The leader's answer to a successful join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The cluster joined.
    pub cluster_id: String,
}

/// A worker's heartbeat (sent to any manager; followers forward it to the leader).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The worker's ID (must match its certificate when it sends the heartbeat itself).
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Its advertised cluster address.
    pub cluster_addr: String,
    /// Its HTTP API address.
    pub http_addr: String,
    /// Its CPUs and memory.
    pub resources: shoal_model::Resources,
}

/// The managers, as the leader lists them in answer to a heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ManagerList {
    /// `(cluster address, HTTP address)` of each voter.
    pub managers: Vec<(String, String)>,
    /// The role the node table gives the reporting node (`Manager` once it was promoted).
    pub role: shoal_model::Role,
}

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
