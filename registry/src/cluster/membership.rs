//! Membership: how nodes join (certificates, tokens, learners promoted to voters), the signing side
//! of certificate renewals, worker heartbeats, and how the node table is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cluster::manager::{Manager, random_secret};
use crate::datadir::NodeIdentity;
use crate::error::Error;
use crate::pki::gossip_key::GossipParams;
use crate::pki::tls::{ClusterCaExt, NodeCert, PeerIdentity};
use crate::rpc::wire::{CertificateRequest, CertificateResponse, JoinRequest, JoinResponse};
use crate::rpc::{RpcClient, RpcError};
use crate::store::TypeConfig;
use shoal_model::{Availability, Command, NodeId, NodeStatus, Resources, Role, ShoalNode};

/// A parsed join token `SHOAL-1-<ca digest>-<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the cluster CA certificate, hex.
    pub ca_digest: String,
    /// The secret.
    pub secret: String,
}

impl std::str::FromStr for JoinToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::BadRequest("malformed join token: expected SHOAL-1-<ca digest>-<secret>; copy it from `shoal join-token manager` on a manager".into())
        };
        let rest = s.trim().strip_prefix("SHOAL-1-").ok_or_else(bad)?;
        let (digest, secret) = rest.split_once('-').ok_or_else(bad)?;
        if digest.len() != 64
            || !digest.bytes().all(|b| b.is_ascii_hexdigit())
            || secret.is_empty()
            || secret.contains('-')
        {
            return Err(bad());
        }
        Ok(Self { ca_digest: digest.to_ascii_lowercase(), secret: secret.to_string() })
    }
}

/// One row of `shoal node ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRow {
    /// Node ID, 16 hex digits (a string: JSON numbers lose precision above 2^53).
    #[serde(rename = "ID")]
    pub id: String,
    /// Name.
    pub name: String,
    /// Cluster address.
    pub address: String,
    /// HTTP API address.
    pub http_address: String,
    /// Ready or Down.
    pub status: String,
    /// Leader, Reachable, Unreachable, Joining.
    pub manager_status: String,
    /// Role.
    pub role: Role,
    /// active, pause or drain.
    pub availability: Availability,
    /// Operator-set labels.
    pub labels: BTreeMap<String, String>,
    /// CPUs and memory the node reported.
    pub resources: Resources,
}

/// `POST /v1/nodes/{node}/update`: what to change (absent fields stay as they are).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeUpdateSpec {
    /// active, pause or drain.
    pub availability: Option<String>,
    /// Labels to add or overwrite.
    pub label_add: BTreeMap<String, String>,
    /// Labels to remove.
    pub label_rm: Vec<String>,
}

/// Finds `query` among `rows` by full ID, unique ID prefix, or name (as Docker does).
pub fn resolve_node<'a>(rows: &'a [NodeRow], query: &str) -> Result<&'a NodeRow, Error> {
    if query.is_empty() {
        return Err(Error::BadRequest("a node ID, ID prefix or name is needed".into()));
    }
    if let Some(r) = rows.iter().find(|r| r.id == query) {
        return Ok(r);
    }
    let by_name: Vec<&NodeRow> = rows.iter().filter(|r| r.name == query).collect();
    let by_prefix: Vec<&NodeRow> = rows.iter().filter(|r| r.id.starts_with(query)).collect();
    match (by_name.as_slice(), by_prefix.as_slice()) {
        ([one], _) => Ok(one),
        ([], [one]) => Ok(one),
        ([], []) => Err(Error::NotFound(format!("no such node: {query}"))),
        (many, _) if many.len() > 1 => {
            Err(Error::BadRequest(format!("node name {query:?} is ambiguous: {} nodes have it; use an ID", many.len())))
        }
        (_, many) => Err(Error::BadRequest(format!(
            "node ID prefix {query:?} is ambiguous: it matches {}; use more characters",
            many.iter().map(|r| format!("{} ({})", r.id, r.name)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

impl Manager {
    /// Gets a node certificate from the cluster at `addr`: fetch the CA, check it against the
    /// token's digest before sending anything secret, then send the token and a CSR over TLS that
    /// verifies the manager against that CA. Unreachable managers are retried with backoff; a
    /// refused token ends at once.
    pub(crate) async fn obtain_certificate(
        identity: &NodeIdentity,
        ip: IpAddr,
        addr: &str,
        token: &str,
    ) -> Result<(NodeCert, GossipParams), Error> {
        let parsed: JoinToken = token.parse()?;
        let addr = if addr.contains(':') { addr.to_string() } else { format!("{addr}:2377") };
        let probe = RpcClient::new(crate::pki::tls::unverified_client_config());
        let mut backoff = Duration::from_millis(200);
        let give_up = Instant::now() + Duration::from_secs(120);
        let ca_pem = loop {
            match probe.get_text(&addr, "/cluster/ca", Duration::from_secs(5)).await {
                Ok(pem) => break pem,
                Err(e) => {
                    if Instant::now() + backoff > give_up {
                        return Err(Error::Unavailable(format!(
                            "could not reach a manager at {addr} within 120 s: {e}"
                        )));
                    }
                    tracing::warn!(error = %e, "cannot reach the manager to join, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let digest = crate::pki::tls::ca_digest(&ca_pem)?;
        if digest != parsed.ca_digest {
            return Err(Error::Forbidden(format!(
                "the manager at {addr} presented a cluster CA whose digest ({digest}) does not match the join token; refusing to send the token (wrong cluster, or someone in between)"
            )));
        }
        let (key_pem, csr_pem) = crate::pki::tls::new_csr()?;
        let client = RpcClient::new(crate::pki::tls::anonymous_client_config(&ca_pem)?);
        let req = CertificateRequest { token: token.to_string(), id: identity.id, csr_pem, ip };
        let res: Result<Result<CertificateResponse, Error>, RpcError> =
            client.call(&addr, "/cluster/certificate", &req, Duration::from_secs(30)).await;
        match res {
            Ok(Ok(resp)) => Ok((NodeCert { ca_pem, cert_pem: resp.cert_pem, key_pem }, resp.gossip)),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Error::Unavailable(format!("certificate request failed: {e}"))),
        }
    }

    /// The cluster CA certificate, PEM (served to joining nodes).
    pub fn ca_pem(&self) -> String {
        self.cert.current().ca_pem
    }

    /// The node certificate in use.
    pub fn node_cert(&self) -> NodeCert {
        self.cert.current()
    }

    /// Signing side of a renewal (`node::renewal` runs the loop on every node): a new certificate
    /// for the identity the caller's current certificate proves.
    pub fn sign_renewal(&self, csr_pem: &str, who: PeerIdentity, ip: IpAddr) -> Result<String, Error> {
        let ca = self.view.read(|s| s.cluster.as_ref().and_then(|c| c.ca.clone())).ok_or(Error::NoLeader)?;
        // The node table decides the role (a promoted worker renews into a manager certificate).
        let role = self
            .view
            .read(|s| s.nodes.get(&who.id).map(|n| n.role))
            .ok_or_else(|| Error::Forbidden(format!("node {:016x} is not a member of this cluster", who.id)))?;
        ca.sign(csr_pem, who.id, role, &[ip], self.config.cert_validity)
    }

    /// Leader side of a certificate request: check the token, sign the CSR with the role the token
    /// grants. A follower forwards to the leader, which alone decides whether a token is current.
    pub async fn handle_certificate(&self, req: CertificateRequest) -> Result<CertificateResponse, Error> {
        if let Some(leader) = self.leader_to_forward()? {
            let res: Result<Result<CertificateResponse, Error>, RpcError> =
                self.rpc.call(&leader.cluster_addr, "/cluster/certificate", &req, Duration::from_secs(30)).await;
            return res.map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        let cluster =
            self.view.read(|s| s.cluster.clone()).ok_or(Error::Unavailable("cluster is still initialising".into()))?;
        let role = match cluster.role_of(&req.token) {
            None => {
                return Err(Error::Forbidden(
                    "invalid join token: it is not a current token of this cluster (was it rotated?); get one with `shoal join-token manager` on a manager".into(),
                ));
            }
            Some(role) => role,
        };
        // A new node must bring a new ID: a token holder may not take over an existing node's identity.
        if self.view.read(|s| s.nodes.contains_key(&req.id) || s.removed.contains(&req.id)) {
            return Err(Error::Forbidden(format!(
                "node ID {:016x} is already taken in this cluster; a joining node needs a fresh data dir",
                req.id
            )));
        }
        let ca = cluster.ca.ok_or_else(|| Error::Internal("this cluster has no CA".into()))?;
        let cert_pem = ca.sign(&req.csr_pem, req.id, role, &[req.ip], self.config.cert_validity)?;
        tracing::info!(node_id = format!("{:016x}", req.id), role = role.as_str(), "issued a node certificate");
        let gossip = GossipParams::for_ca(&ca, self.gossip_seeds())?;
        Ok(CertificateResponse { cert_pem, gossip })
    }

    /// A client certificate for the HTTP API: `(certificate PEM, CA PEM)`.
    pub fn issue_client_cert(&self, csr_pem: &str, name: &str) -> Result<(String, String), Error> {
        let ca = self
            .view
            .read(|s| s.cluster.as_ref().and_then(|c| c.ca.clone()))
            .ok_or(Error::Unavailable("cluster is still initialising".into()))?;
        let cert = ca.sign_client(csr_pem, name, self.config.cert_validity)?;
        tracing::info!(client = %name, "issued an API client certificate");
        Ok((cert, ca.cert_pem))
    }

    /// The gossip key and seeds from the replicated state (for a manager whose data dir predates
    /// `gossip.json`); `None` until the state holds the CA.
    pub fn gossip_params_from_state(&self) -> Option<GossipParams> {
        let ca = self.view.read(|s| s.cluster.as_ref().and_then(|c| c.ca.clone()))?;
        GossipParams::for_ca(&ca, self.gossip_seeds()).ok()
    }

    /// The gossip addresses of the Raft members (seeds for a node joining the gossip).
    pub fn gossip_seeds(&self) -> Vec<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().nodes().map(|(_, n)| n.gossip_addr.clone()).filter(|a| !a.is_empty()).collect()
    }

    /// Asks the leader (through `addr`) to add this node to Raft. The manager certificate this node
    /// presents is the authority; the token was spent getting it.
    pub(crate) async fn join(&self, addr: &str) -> Result<(), Error> {
        let addr = if addr.contains(':') { addr.to_string() } else { format!("{addr}:2377") };
        let req = JoinRequest { id: self.id, node: self.node.clone(), resources: crate::host::resources() };
        let mut backoff = Duration::from_millis(200);
        let give_up = Instant::now() + Duration::from_secs(120);
        loop {
            let res: Result<Result<JoinResponse, Error>, RpcError> =
                self.rpc.call(&addr, "/cluster/join", &req, Duration::from_secs(150)).await;
            match res {
                Ok(Ok(resp)) => {
                    tracing::info!(cluster_id = %resp.cluster_id, "joined the cluster");
                    return Ok(());
                }
                Ok(Err(e)) if !e.is_retryable() => return Err(e),
                Ok(Err(e)) => tracing::warn!(error = %e, "join not possible yet, retrying"),
                Err(e) => tracing::warn!(error = %e, "cannot reach the manager to join, retrying"),
            }
            if Instant::now() + backoff > give_up {
                return Err(Error::Unavailable(format!(
                    "could not join through {addr} within 120 s; is it a running manager?"
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Leader side of a join: add the node as a learner, wait until it has caught up, then make it
    /// a voter.
    pub async fn handle_join(&self, req: JoinRequest) -> Result<JoinResponse, Error> {
        if let Some(leader) = self.leader_to_forward()? {
            let res: Result<Result<JoinResponse, Error>, RpcError> =
                self.rpc.call(&leader.cluster_addr, "/cluster/join", &req, Duration::from_secs(150)).await;
            return res.map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        let cluster =
            self.view.read(|s| s.cluster.clone()).ok_or(Error::Unavailable("cluster is still initialising".into()))?;
        // The caller holds a manager certificate of this cluster (checked by the RPC layer), issued
        // against a manager token moments ago or by a promotion: that is the authority, not a token.
        let is_voter = self.raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == req.id);
        if !is_voter {
            tracing::info!(node_id = req.id, node = %req.node, "adding manager as learner");
            self.retry_membership(|| self.raft.add_learner(req.id, req.node.clone(), true)).await?;
            tracing::info!(node_id = req.id, "learner caught up, promoting to voter");
            self.retry_membership(|| {
                self.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), false)
            })
            .await?;
        }
        self.write(Command::NodeUpsert {
            id: req.id,
            name: req.node.name.clone(),
            cluster_addr: req.node.cluster_addr.clone(),
            http_addr: req.node.http_addr.clone(),
            role: Role::Manager,
            resources: req.resources,
        })
        .await?;
        Ok(JoinResponse { cluster_id: cluster.cluster_id })
    }

    async fn retry_membership<F, Fut>(&self, f: F) -> Result<(), Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
                Output = Result<
                    openraft::raft::ClientWriteResponse<TypeConfig>,
                    RaftError<NodeId, ClientWriteError<NodeId, ShoalNode>>,
                >,
            >,
    {
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            match f().await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    return Err(Error::Unavailable("leadership changed during the join; retrying".into()));
                }
                Err(e) => return Err(Error::Internal(format!("membership change failed: {e}"))),
            }
        }
    }

    /// A worker's heartbeat: the leader records when it was seen and registers the node in the node
    /// table the first time (or when its addresses change); followers forward it.
    pub async fn handle_heartbeat(
        &self,
        hb: crate::rpc::wire::Heartbeat,
    ) -> Result<crate::rpc::wire::ManagerList, Error> {
        if let Some(leader) = self.leader_to_forward()? {
            let res: Result<Result<crate::rpc::wire::ManagerList, Error>, RpcError> =
                self.rpc.call(&leader.cluster_addr, "/cluster/heartbeat", &hb, Duration::from_secs(3)).await;
            return res.map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        // One look at the table: removed? already registered with these addresses? which role?
        let (removed, known, role) = self.view.read(|s| {
            let record = s.nodes.get(&hb.id);
            let known = record
                .is_some_and(|n| n.name == hb.name && n.cluster_addr == hb.cluster_addr && n.http_addr == hb.http_addr);
            // The record's role wins: a worker being promoted keeps reporting until it has switched.
            (s.removed.contains(&hb.id), known, record.map_or(Role::Worker, |n| n.role))
        });
        if removed {
            return Err(Error::Forbidden(format!("node {:016x} was removed from this cluster", hb.id)));
        }
        if !known {
            self.write(Command::NodeUpsert {
                id: hb.id,
                name: hb.name.clone(),
                cluster_addr: hb.cluster_addr.clone(),
                http_addr: hb.http_addr.clone(),
                role,
                resources: hb.resources,
            })
            .await?;
            tracing::info!(node_id = format!("{:016x}", hb.id), name = %hb.name, "worker registered");
        }
        self.workers_seen.lock().expect("workers lock").insert(hb.id, Instant::now());
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let managers = membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| (n.cluster_addr.clone(), n.http_addr.clone())))
            .collect();
        Ok(crate::rpc::wire::ManagerList { managers, role })
    }

    /// `node promote`: a ready worker is told (through its heartbeat) to become a manager; it gets a
    /// manager certificate and joins Raft as a learner, then a voter.
    pub async fn promote_node(&self, query: &str) -> Result<NodeRow, Error> {
        let row = self.inspect_node(query).await?;
        if row.role == Role::Manager {
            return Err(Error::BadRequest(format!("node {} is already a manager", row.name)));
        }
        if row.status != "Ready" {
            return Err(Error::BadRequest(format!("node {} is down: a node must be up to be promoted", row.name)));
        }
        let id = NodeId::from_str_radix(&row.id, 16).map_err(|e| Error::Internal(e.to_string()))?;
        self.write(Command::NodeSetRole { id, role: Role::Manager }).await?;
        self.inspect_node(&row.id).await
    }

    /// The managers as the leader sees them. On a follower this is answered by forwarding to the
    /// leader's HTTP API (see the API layer); here it requires leadership.
    pub fn node_rows(&self) -> Result<Vec<NodeRow>, Error> {
        if self.leader_to_forward()?.is_some() {
            return Err(Error::NotLeader);
        }
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let reach = 3 * self.config.election_timeout.1;
        let records = self.view.read(|s| s.nodes.clone());
        let mut out = Vec::new();
        for (id, node) in membership.nodes() {
            let reachable = *id == self.id || self.contacts.last(*id).is_some_and(|t| t.elapsed() < reach);
            let manager_status = if *id == self.id {
                "Leader"
            } else if !voters.contains(id) {
                if reachable { "Joining" } else { "Unreachable" }
            } else if reachable {
                "Reachable"
            } else {
                "Unreachable"
            };
            out.push(NodeRow {
                id: format!("{id:016x}"),
                name: records.get(id).map_or_else(|| node.name.clone(), |r| r.name.clone()),
                address: node.cluster_addr.clone(),
                http_address: node.http_addr.clone(),
                status: if *id == self.id {
                    "Ready".into()
                } else {
                    records.get(id).map_or(NodeStatus::Unknown, |r| r.status).as_str().into()
                },
                manager_status: manager_status.into(),
                role: Role::Manager,
                availability: records.get(id).map(|r| r.availability).unwrap_or_default(),
                labels: records.get(id).map(|r| r.labels.clone()).unwrap_or_default(),
                resources: records.get(id).map(|r| r.resources.clone()).unwrap_or_default(),
            });
        }
        // Nodes outside the Raft membership: workers, and workers being promoted (role manager in
        // the table, not yet a learner).
        for (id, n) in records.iter().filter(|(id, _)| membership.get_node(id).is_none()) {
            out.push(NodeRow {
                id: format!("{id:016x}"),
                name: n.name.clone(),
                address: n.cluster_addr.clone(),
                http_address: n.http_addr.clone(),
                status: n.status.as_str().into(),
                manager_status: if n.role == Role::Manager { "Promoting".into() } else { String::new() },
                role: n.role,
                availability: n.availability,
                labels: n.labels.clone(),
                resources: n.resources.clone(),
            });
        }
        Ok(out)
    }

    /// The node table with live status as the leader sees it, from any manager (a follower asks the
    /// leader over the cluster RPC).
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, Error> {
        match self.leader_to_forward()? {
            None => self.node_rows(),
            Some(leader) => {
                let res: Result<Result<Vec<NodeRow>, Error>, RpcError> =
                    self.rpc.call(&leader.cluster_addr, "/cluster/nodes", &(), Duration::from_secs(5)).await;
                res.map_err(|_| Error::NoLeader)?
            }
        }
    }

    /// One node, by ID, unique ID prefix or name.
    pub async fn inspect_node(&self, query: &str) -> Result<NodeRow, Error> {
        let rows = self.nodes().await?;
        resolve_node(&rows, query).cloned()
    }

    /// Applies operator changes to a node and returns it as it is now.
    pub async fn update_node(&self, query: &str, spec: NodeUpdateSpec) -> Result<NodeRow, Error> {
        let availability = spec
            .availability
            .as_deref()
            .map(str::parse::<Availability>)
            .transpose()
            .map_err(|e| Error::BadRequest(e.0))?;
        for k in spec.label_add.keys().chain(spec.label_rm.iter()) {
            if k.is_empty() || k.contains('=') {
                return Err(Error::BadRequest(format!(
                    "invalid label key {k:?}: use --label-add key=value, --label-rm key"
                )));
            }
        }
        let row = self.inspect_node(query).await?;
        let id = NodeId::from_str_radix(&row.id, 16).map_err(|e| Error::Internal(e.to_string()))?;
        let cmd = Command::NodeUpdate { id, availability, label_add: spec.label_add, label_rm: spec.label_rm };
        match self.write(cmd).await? {
            shoal_model::CommandResult::Refused(r) => Err(r.into()),
            _ => self.inspect_node(&row.id).await,
        }
    }

    /// Removes a node: refused while it is up unless `force`; a manager leaves the Raft membership
    /// first (refused if that would leave no manager or lose the quorum). Its certificate is no
    /// longer accepted afterwards.
    pub async fn remove_node(&self, query: &str, force: bool) -> Result<(), Error> {
        let row = self.inspect_node(query).await?;
        let id = NodeId::from_str_radix(&row.id, 16).map_err(|e| Error::Internal(e.to_string()))?;
        if row.status == "Ready" && !force {
            return Err(Error::BadRequest(format!(
                "node {} ({}) is up: stop it first, or use --force to remove it anyway",
                row.name, row.id
            )));
        }
        if row.role == Role::Manager {
            if row.manager_status == "Leader" {
                return Err(Error::BadRequest(format!(
                    "node {} is the leader: stop it (another manager takes over) and remove it from there",
                    row.name
                )));
            }
            let rows = self.nodes().await?;
            let voters: Vec<&NodeRow> =
                rows.iter().filter(|r| r.role == Role::Manager && r.manager_status != "Joining").collect();
            let remaining = voters.len().saturating_sub(1);
            let reachable = voters.iter().filter(|r| r.id != row.id && r.status == "Ready").count();
            if remaining == 0 || reachable < remaining / 2 + 1 {
                return Err(Error::BadRequest(format!(
                    "removing {} would leave {remaining} manager(s) with {reachable} reachable: the cluster would lose its quorum",
                    row.name
                )));
            }
            self.change_voters_remove(id).await?;
        }
        self.write(Command::NodeRemove { id }).await?;
        Ok(())
    }

    async fn change_voters_remove(&self, id: NodeId) -> Result<(), Error> {
        if let Some(leader) = self.leader_to_forward()? {
            let res: Result<Result<(), Error>, RpcError> =
                self.rpc.call(&leader.cluster_addr, "/cluster/remove-voter", &id, Duration::from_secs(30)).await;
            return res.map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        // retain = false: the node leaves the membership entirely (not kept as a learner).
        self.retry_membership(|| self.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false))
            .await
    }

    /// The cluster RPC side of removing a voter (the leader only).
    pub async fn remove_voter_as_leader(&self, id: NodeId) -> Result<(), Error> {
        self.change_voters_remove(id).await
    }

    /// Replaces the secret of a join token and returns the new token.
    pub async fn rotate_token(&self, role: Role) -> Result<String, Error> {
        self.write(Command::RotateToken { role, secret: random_secret(25) }).await?;
        self.linearize().await?;
        self.view
            .read(|s| s.cluster.as_ref().map(|c| c.token(role)))
            .ok_or(Error::Unavailable("cluster is still initialising".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str) -> NodeRow {
        NodeRow {
            id: id.into(),
            name: name.into(),
            address: String::new(),
            http_address: String::new(),
            status: "Ready".into(),
            manager_status: String::new(),
            role: Role::Worker,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            resources: Resources::default(),
        }
    }

    #[test]
    fn resolve_by_id_prefix_or_name() {
        let rows =
            vec![row("abc0000000000001", "web1"), row("abd0000000000002", "web2"), row("f000000000000003", "abc")];
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("full id", Ok("abc0000000000001")),
            ("unique prefix", Ok("abd0000000000002")),
            ("name", Ok("abd0000000000002")),
            ("name wins over prefix", Ok("f000000000000003")),
            ("ambiguous prefix", Err("is ambiguous: it matches abc0000000000001 (web1), abd0000000000002 (web2)")),
            ("missing", Err("no such node: zzz")),
            ("empty", Err("a node ID, ID prefix or name is needed")),
        ];
        let queries = ["abc0000000000001", "abd", "web2", "abc", "ab", "zzz", ""];
        for ((name, want), q) in cases.iter().zip(queries) {
            match (resolve_node(&rows, q), want) {
                (Ok(r), Ok(id)) => assert_eq!(r.id, *id, "case {name}"),
                (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "case {name}: {e}"),
                (got, want) => panic!("case {name}: got {:?}, want {want:?}", got.map(|r| &r.id)),
            }
        }
    }

    #[test]
    fn join_tokens_parse() {
        let digest = "a".repeat(64);
        assert_eq!(
            format!("SHOAL-1-{digest}-s3cret").parse::<JoinToken>().unwrap(),
            JoinToken { ca_digest: digest.clone(), secret: "s3cret".into() }
        );
        for bad in
            ["", "SHOAL-1-", "SHOAL-2-x-y", &format!("SHOAL-1-{digest}"), &format!("SHOAL-1-{}-s", "g".repeat(64))]
        {
            let e = bad.parse::<JoinToken>().unwrap_err();
            assert!(e.to_string().contains("malformed join token"), "{bad:?}: {e}");
        }
    }
}
