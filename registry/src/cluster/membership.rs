//! Membership: how nodes join (certificates, tokens, learners promoted to voters), the signing side
//! of certificate renewals, client certificates of the HTTP API, and the join tokens. The node
//! table's operations (heartbeats, rows, inspect/update/promote/remove) are in `nodes.rs`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use tokio::time::Instant;

use crate::cluster::manager::Manager;
use crate::datadir::NodeIdentity;
use crate::error::Error;
use crate::pki::gossip_key::GossipParams;
use crate::pki::tls::{ClusterCaExt, NodeCert, PeerIdentity};
use crate::rpc::wire::{CertificateRequest, CertificateResponse, JoinRequest, JoinResponse};
use crate::rpc::{RpcClient, RpcError};
use crate::store::TypeConfig;
use shoal_model::{Command, NodeId, Role, ShoalNode};

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

    pub(crate) async fn retry_membership<F, Fut>(&self, f: F) -> Result<(), Error>
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

    /// Replaces the secret of a join token and returns the new token.
    pub async fn rotate_token(&self, role: Role) -> Result<String, Error> {
        self.write(Command::RotateToken { role, secret: crate::ids::secret() }).await?;
        self.linearize().await?;
        self.view
            .read(|s| s.cluster.as_ref().map(|c| c.token(role)))
            .ok_or(Error::Unavailable("cluster is still initialising".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
