//! Starting a node: settle its identity and certificate, then run it as a manager (Raft member) or a
//! worker, as its join token (or its data dir) says, with the certificate renewal of that role
//! ([`renewal`]); the same on a role switch.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::cluster::manager::{Manager, NodeConfig, StartMode};
use crate::datadir::{NodeIdentity, data_dir_in_use};
use crate::error::Error;
use crate::node::renewal;
use crate::node::worker::Worker;
use crate::pki::gossip_key::GossipParams;
use crate::pki::tls::{ClusterCa, ClusterCaExt, NodeCert, PeerIdentity};
use shoal_model::Role;

/// A running node.
#[derive(Clone)]
pub enum RunningNode {
    /// A Raft member keeping the registry.
    Manager(Arc<Manager>),
    /// A node that only runs tasks (and, for now, reports liveness).
    Worker(Arc<Worker>),
}

impl RunningNode {
    /// Resolves when the node cannot go on, with the reason to stop the process with: the cluster
    /// refused it for good (a removed worker), or its certificate expired and nobody can renew it.
    pub async fn stopped(&self) -> String {
        match self {
            RunningNode::Manager(m) => m.given_up().await,
            RunningNode::Worker(w) => w.stopped().await,
        }
    }
}

fn role_of(cert: &NodeCert) -> Result<Role, Error> {
    let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
        .map_err(|e| Error::Internal(format!("bad node certificate: {e}")))?;
    PeerIdentity::from_cert(der.as_ref())
        .map(|p| p.role)
        .ok_or_else(|| Error::Internal("the node certificate names no role".into()))
}

/// Starts a node in `mode` with `config`.
pub async fn start(mut config: NodeConfig, mode: StartMode) -> Result<RunningNode, Error> {
    let dir = config.data_dir.clone();
    // Before anything in the data dir is read: a format this build cannot read is refused here.
    crate::datadir::check_format(&dir)?;
    let stored = NodeIdentity::load(&dir)?;
    match (&mode, &stored) {
        (StartMode::Init | StartMode::Join { .. }, _) if data_dir_in_use(&dir) => {
            return Err(Error::BadRequest(format!(
                "data dir {} already holds a node; restart it with `shoal agent --data-dir {}` (without --init/--join), or choose an empty directory",
                dir.display(),
                dir.display()
            )));
        }
        (StartMode::Resume, None) => {
            return Err(Error::BadRequest(format!(
                "data dir {} holds no node; start a new cluster with --init or join one with --join ADDR --token TOKEN",
                dir.display()
            )));
        }
        _ => {}
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Internal(format!("cannot create data dir {}: {e}", dir.display())))?;
    if !data_dir_in_use(&dir) {
        crate::datadir::stamp_format(&dir)?;
    }

    let mut identity = match stored {
        Some(id) => {
            config.name = id.name.clone();
            id
        }
        None => NodeIdentity {
            id: crate::ids::node_id(),
            name: config.name.clone(),
            cluster_addr: SocketAddr::new(config.advertise_ip, config.cluster_port).to_string(),
            http_addr: SocketAddr::new(config.advertise_ip, config.http_port).to_string(),
            bind_ip: config.bind_ip,
            role: Role::Manager,
            gossip_addr: SocketAddr::new(config.advertise_ip, config.gossip_port).to_string(),
        },
    };
    if identity.gossip_addr.is_empty() {
        identity.gossip_addr = SocketAddr::new(config.advertise_ip, config.gossip_port).to_string();
    }

    // The node certificate comes first: the cluster port and every outgoing link need it.
    let (cert, ca_for_init) = match &mode {
        StartMode::Init => {
            let ca = ClusterCa::generate()?;
            let cert = ca.issue(identity.id, Role::Manager, &[config.advertise_ip], config.cert_validity)?;
            cert.save(&dir)?;
            GossipParams::for_ca(&ca, vec![])?.save(&dir)?;
            (cert, Some(ca))
        }
        StartMode::Join { addr, token } => {
            let (cert, gossip) = Manager::obtain_certificate(&identity, config.advertise_ip, addr, token).await?;
            gossip.save(&dir)?;
            (cert, None)
        }
        StartMode::Resume => {
            let cert = NodeCert::load(&dir)?.ok_or_else(|| {
                Error::BadRequest(format!(
                    "data dir {} has no node certificate (tls/node.pem); it cannot rejoin",
                    dir.display()
                ))
            })?;
            (cert, None)
        }
    };
    identity.role = role_of(&cert)?;
    // A certificate that expired while the node was off is refused by every other node, so the
    // node could never rejoin by itself: say so now, with what to do, instead of knocking forever.
    // The one exception is the cluster's only manager, which needs nobody to lead and then signs
    // itself a new certificate from the CA in its state (checked once Raft has loaded its log).
    let expired_at = match mode {
        StartMode::Resume => renewal::expired_at(&cert)?,
        _ => None,
    };
    if let Some(at) = expired_at
        && identity.role == Role::Worker
    {
        return Err(renewal::expired(at, identity.id, Role::Worker, &dir));
    }

    let node = match identity.role {
        Role::Manager => {
            let id = identity.id;
            let m = Manager::launch(config, mode, identity, cert, ca_for_init, crate::control::member_routes()).await?;
            let node = RunningNode::Manager(m.clone());
            if let Some(at) = expired_at {
                if !renewal::can_sign_expired(&node).await {
                    m.shutdown().await;
                    return Err(renewal::expired(at, id, Role::Manager, &dir));
                }
                tracing::warn!(
                    expired_at = %renewal::rfc3339(at),
                    "the node certificate expired while this node was off; it is the cluster's only manager, so it signs itself a new one from the cluster CA as soon as it leads"
                );
            }
            node
        }
        Role::Worker => {
            let first = match &mode {
                StartMode::Join { addr, .. } => {
                    Some(if addr.contains(':') { addr.clone() } else { format!("{addr}:2377") })
                }
                _ => None,
            };
            RunningNode::Worker(Worker::launch(config, identity, cert, first).await?)
        }
    };
    tokio::spawn(renewal::run(node.clone()));
    Ok(node)
}

/// Turns a promoted worker into a manager: it joins Raft through `via` with its new manager
/// certificate (no token: the certificate is the authority) and keeps its ID and data dir.
pub async fn become_manager(config: NodeConfig, cert: NodeCert, via: String) -> Result<Arc<Manager>, Error> {
    let dir = config.data_dir.clone();
    let mut identity =
        NodeIdentity::load(&dir)?.ok_or_else(|| Error::Internal("the worker's data dir has no node.json".into()))?;
    identity.role = Role::Manager;
    let manager = Manager::launch(
        config,
        StartMode::Join { addr: via, token: String::new() },
        identity,
        cert,
        None,
        crate::control::member_routes(),
    )
    .await?;
    tokio::spawn(renewal::run(RunningNode::Manager(manager.clone())));
    Ok(manager)
}

/// Turns a demoted manager into a worker: stops Raft and the cluster port, gets a worker
/// certificate from another manager (the node table now says worker), drops the Raft data and
/// starts the worker side with the same ID and data dir.
pub async fn become_worker(config: NodeConfig, manager: Arc<Manager>) -> Result<Arc<Worker>, Error> {
    let dir = config.data_dir.clone();
    let others: Vec<String> = {
        let metrics = manager.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != manager.id)
            .map(|(_, n)| n.cluster_addr.clone())
            .collect()
    };
    manager.shutdown().await;
    let ca_pem = manager.cert.current().ca_pem;
    let (via, cert) = renewal::request(&manager.rpc, &others, config.advertise_ip, &ca_pem).await?;
    if role_of(&cert)? != Role::Worker {
        return Err(Error::Internal("the managers still issue a manager certificate to this node".into()));
    }
    cert.save(&dir)?;
    // The Raft data of a node that is no longer a member is of no use; a later promotion starts fresh.
    let _ = std::fs::remove_file(dir.join("raft.redb"));
    let mut identity =
        NodeIdentity::load(&dir)?.ok_or_else(|| Error::Internal("the manager's data dir has no node.json".into()))?;
    identity.role = Role::Worker;
    identity.save(&dir)?;
    tracing::info!(via = %via, "demoted: running as a worker");
    let worker = Worker::launch(config, identity, cert, Some(via)).await?;
    tokio::spawn(renewal::run(RunningNode::Worker(worker.clone())));
    Ok(worker)
}
