//! A manager node: the Raft instance, its storage, the cluster RPC listener, and the operations every
//! API builds on — `write` (forwarded to the leader from anywhere), `linearize` (a quorum-confirmed
//! read barrier), `join` and the status reports.
//!
//! ```text
//!  HTTP API ──write──▶ Manager::write ──(follower)── cluster RPC /cluster/write ──▶ leader
//!                          │ (leader)
//!                          ▼
//!                  raft.client_write ──▶ LogStore (group commit, fsync) ──▶ quorum ──▶ StateMachine
//!                                                                                         │
//!  HTTP API ◀──blocking query── IndexWatch ◀──────────────── applied index ───────────────┘
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::Error;
use crate::listener::{Peer, TlsListener};
use crate::log_store::{LogStats, LogStore};
use crate::network::{Contacts, Network};
use crate::proposer::Proposer;
use crate::read_barrier::ReadBarrier;
use crate::rpc::{RpcClient, RpcError};
use crate::state_machine::{StateMachineStore, StateView};
use crate::tls::{ClusterCa, DEFAULT_CERT_VALIDITY, LiveCert, NodeCert, PeerIdentity};
use crate::types::{Command, CommandResult, NodeId, Role, ShoalNode, TypeConfig};

const NODE_FILE: &str = "node.json";
const DB_FILE: &str = "raft.redb";

/// Tunables of a manager. `Default` gives the production defaults.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where the Raft log, snapshots and identity live.
    pub data_dir: PathBuf,
    /// Node name (hostname by default).
    pub name: String,
    /// Address to listen on.
    pub bind_ip: IpAddr,
    /// Address other nodes use to reach this one.
    pub advertise_ip: IpAddr,
    /// Cluster RPC port (Raft, agent RPC).
    pub cluster_port: u16,
    /// HTTP API port.
    pub http_port: u16,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout: a follower that hears nothing for a random time in this range campaigns.
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot and compact the log after this many entries.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers need no snapshot.
    pub keep_logs: u64,
    /// A write (or linearizable read) that has not been acknowledged after this long fails with
    /// "no elected cluster leader".
    pub write_timeout: Duration,
    /// Never fsync the Raft log. UNSAFE: acknowledged writes are lost on a crash. Only for tests that
    /// prove the crash tests can fail.
    pub unsafe_no_fsync: bool,
    /// Validity of the node certificates this manager issues (when it leads). Nodes renew theirs
    /// after two thirds of it.
    pub cert_validity: Duration,
    /// A worker not heard from for this long is shown as down.
    pub down_window: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("shoal-data"),
            name: "shoal".into(),
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            advertise_ip: IpAddr::from([127, 0, 0, 1]),
            cluster_port: 2377,
            http_port: 8500,
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(250), Duration::from_millis(500)),
            snapshot_threshold: 10_000,
            keep_logs: 1_000,
            write_timeout: Duration::from_millis(4_500),
            unsafe_no_fsync: false,
            cert_validity: DEFAULT_CERT_VALIDITY,
            down_window: Duration::from_secs(5),
        }
    }
}

/// How a manager starts.
#[derive(Debug, Clone)]
pub enum StartMode {
    /// Create a new cluster with this node as its only member.
    Init,
    /// Join the cluster whose manager is at `addr` (`IP[:PORT]`).
    Join {
        /// A manager's cluster address.
        addr: String,
        /// Join token.
        token: String,
    },
    /// Resume from an existing data dir.
    Resume,
}

/// What a data dir remembers about its node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Raft node ID.
    pub id: NodeId,
    /// Name.
    pub name: String,
    /// Advertised cluster address.
    pub cluster_addr: String,
    /// Advertised HTTP address.
    pub http_addr: String,
    /// Listen IP.
    pub bind_ip: IpAddr,
    /// Manager or worker (from the join token).
    #[serde(default = "manager_role")]
    pub role: Role,
}

fn manager_role() -> Role {
    Role::Manager
}

impl NodeIdentity {
    /// Reads `node.json` from `dir`; `None` if there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, Error> {
        let path = dir.join(NODE_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Internal(format!("{} is damaged: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Internal(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Writes `node.json` durably.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        let tmp = dir.join(format!("{NODE_FILE}.tmp"));
        let body = serde_json::to_vec_pretty(self).expect("identity serialises");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(NODE_FILE))?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| Error::Internal(format!("cannot write {}: {e}", dir.join(NODE_FILE).display())))
    }
}

/// A join request, sent by a new node to any manager and forwarded to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The token given on the command line.
    pub token: String,
    /// The new node's ID.
    pub id: NodeId,
    /// The new node's addresses.
    pub node: ShoalNode,
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

/// A member's request for a renewed certificate (over mutual TLS: the current certificate says who).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    /// CSR for the new key, PEM.
    pub csr_pem: String,
    /// The IP it advertises.
    pub ip: IpAddr,
}

/// The leader's answer to a certificate request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// The signed node certificate, PEM.
    pub cert_pem: String,
}

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

/// The leader's answer to a successful join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The cluster joined.
    pub cluster_id: String,
}

/// A running manager.
pub struct Manager {
    /// This node's ID.
    pub id: NodeId,
    /// This node's addresses.
    pub node: ShoalNode,
    /// The Raft instance.
    pub raft: Raft<TypeConfig>,
    view: StateView,
    cert: LiveCert,
    rpc: RpcClient,
    contacts: Contacts,
    leader_contact: Mutex<Instant>,
    workers_seen: Mutex<std::collections::HashMap<NodeId, Instant>>,
    proposer: Proposer,
    reads: ReadBarrier,
    log_stats: Arc<LogStats>,
    config: ManagerConfig,
}

fn random_secret(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(|c| (c as char).to_ascii_lowercase()).collect()
}

/// Whether `dir` already holds a node.
pub fn data_dir_in_use(dir: &Path) -> bool {
    dir.join(NODE_FILE).exists() || dir.join(DB_FILE).exists()
}

impl Manager {
    /// Starts a manager whose identity and certificate are settled (see [`crate::node::start`]):
    /// opens storage, starts Raft and the cluster RPC listener, then initialises, joins or resumes.
    pub(crate) async fn launch(
        config: ManagerConfig,
        mode: StartMode,
        identity: NodeIdentity,
        cert: NodeCert,
        ca_for_init: Option<ClusterCa>,
    ) -> Result<Arc<Manager>, Error> {
        let dir = config.data_dir.clone();
        let node = ShoalNode {
            name: identity.name.clone(),
            cluster_addr: identity.cluster_addr.clone(),
            http_addr: identity.http_addr.clone(),
        };
        let tcp = tokio::net::TcpListener::bind(SocketAddr::new(config.bind_ip, config.cluster_port))
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot listen on {}:{} for cluster RPC: {e} (is another node using it? pick --bind or --cluster-port)",
                    config.bind_ip, config.cluster_port
                ))
            })?;
        let live = LiveCert::new(cert.clone())?;
        let listener = TlsListener::new(tcp, live.server_config()?);

        let db = redb::Database::create(dir.join(DB_FILE))
            .map_err(|e| Error::Internal(format!("cannot open {}: {e}", dir.join(DB_FILE).display())))?;
        let db = Arc::new(db);
        if config.unsafe_no_fsync {
            tracing::warn!(
                "--unsafe-no-fsync: the raft log is never made durable; acknowledged writes WILL be lost on a crash"
            );
        }
        let log =
            LogStore::open_with(db.clone(), !config.unsafe_no_fsync).map_err(|e| Error::Internal(e.to_string()))?;
        let log_stats = log.stats();
        let sm = StateMachineStore::open(db).map_err(|e| Error::Internal(e.to_string()))?;
        let view = sm.view();
        let rpc = RpcClient::new(live.client_config()?);
        let contacts = Contacts::default();
        let raft_config = Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
            max_in_snapshot_log_to_keep: config.keep_logs,
            max_payload_entries: 1_000,
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(|e| Error::BadRequest(format!("raft timing: {e}")))?);
        let raft = Raft::new(identity.id, raft_config, Network::new(rpc.clone(), contacts.clone()), log, sm)
            .await
            .map_err(|e| Error::Internal(format!("raft failed to start: {e}")))?;

        let manager = Arc::new(Manager {
            id: identity.id,
            node: node.clone(),
            raft: raft.clone(),
            view,
            cert: live,
            rpc,
            contacts,
            leader_contact: Mutex::new(Instant::now()),
            workers_seen: Mutex::default(),
            proposer: Proposer::start(raft.clone()),
            reads: ReadBarrier::new(raft.clone(), config.write_timeout),
            log_stats,
            config,
        });

        let app = crate::rpc::router(manager.clone()).into_make_service_with_connect_info::<Peer>();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "cluster rpc server stopped");
            }
        });

        match mode {
            StartMode::Init => manager.init(&identity, ca_for_init.expect("init made a CA")).await?,
            StartMode::Join { addr, token } => {
                if let Err(e) = manager.join(&addr, &token).await {
                    let _ = manager.raft.shutdown().await;
                    let _ = std::fs::remove_file(dir.join(DB_FILE));
                    return Err(e);
                }
                cert.save(&dir)?;
                identity.save(&dir)?;
            }
            StartMode::Resume => {}
        }
        tokio::spawn(manager.clone().renew_certificates());
        Ok(manager)
    }

    async fn init(&self, identity: &NodeIdentity, ca: ClusterCa) -> Result<(), Error> {
        let members = BTreeMap::from([(self.id, self.node.clone())]);
        self.raft.initialize(members).await.map_err(|e| Error::Internal(format!("cannot initialise raft: {e}")))?;
        identity.save(&self.config.data_dir)?;
        self.raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(self.id, "init")
            .await
            .map_err(|e| Error::Internal(format!("did not become leader: {e}")))?;
        self.write(Command::InitCluster {
            cluster_id: ca.digest()?,
            ca: Some(ca),
            manager_secret: random_secret(25),
            worker_secret: random_secret(25),
        })
        .await?;
        self.upsert_self(Role::Manager).await
    }

    async fn upsert_self(&self, role: Role) -> Result<(), Error> {
        self.write(Command::NodeUpsert {
            id: self.id,
            name: self.node.name.clone(),
            cluster_addr: self.node.cluster_addr.clone(),
            http_addr: self.node.http_addr.clone(),
            role,
        })
        .await
        .map(|_| ())
    }

    /// Gets a node certificate from the cluster at `addr`: fetch the CA, check it against the
    /// token's digest before sending anything secret, then send the token and a CSR over TLS that
    /// verifies the manager against that CA. Unreachable managers are retried with backoff; a
    /// refused token ends at once.
    pub(crate) async fn obtain_certificate(
        identity: &NodeIdentity,
        ip: IpAddr,
        addr: &str,
        token: &str,
    ) -> Result<NodeCert, Error> {
        let parsed: JoinToken = token.parse()?;
        let addr = if addr.contains(':') { addr.to_string() } else { format!("{addr}:2377") };
        let probe = RpcClient::new(crate::tls::unverified_client_config());
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
        let digest = crate::tls::ca_digest(&ca_pem)?;
        if digest != parsed.ca_digest {
            return Err(Error::Forbidden(format!(
                "the manager at {addr} presented a cluster CA whose digest ({digest}) does not match the join token; refusing to send the token (wrong cluster, or someone in between)"
            )));
        }
        let (key_pem, csr_pem) = crate::tls::new_csr()?;
        let client = RpcClient::new(crate::tls::anonymous_client_config(&ca_pem)?);
        let req = CertificateRequest { token: token.to_string(), id: identity.id, csr_pem, ip };
        let res: Result<Result<CertificateResponse, Error>, RpcError> =
            client.call(&addr, "/cluster/certificate", &req, Duration::from_secs(30)).await;
        match res {
            Ok(Ok(resp)) => Ok(NodeCert { ca_pem, cert_pem: resp.cert_pem, key_pem }),
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

    /// Keeps this node's certificate fresh: after two thirds of its validity, get a new one from
    /// the leader (or sign it, when leading), store it and swap it into TLS. Runs until the process ends.
    pub async fn renew_certificates(self: Arc<Self>) {
        loop {
            let due = match self.cert.current().validity() {
                Ok((from, to)) => from + to.duration_since(from).unwrap_or_default() * 2 / 3,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the node certificate; renewal stopped");
                    return;
                }
            };
            if let Ok(wait) = due.duration_since(std::time::SystemTime::now()) {
                tokio::time::sleep(wait).await;
            }
            match self.renew_once().await {
                Ok(until) => tracing::info!(valid_until = ?until, "renewed the node certificate"),
                Err(e) => {
                    tracing::warn!(error = %e, "certificate renewal failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn renew_once(&self) -> Result<std::time::SystemTime, Error> {
        let (key_pem, csr_pem) = crate::tls::new_csr()?;
        let current = self.cert.current();
        let ip = self.config.advertise_ip;
        let cert_pem = match self.leader_to_forward()? {
            None => self.sign_renewal(&csr_pem, self.identity(), ip)?,
            Some(leader) => {
                let req = RenewRequest { csr_pem, ip };
                let res: Result<Result<String, Error>, RpcError> =
                    self.rpc.call(&leader.cluster_addr, "/cluster/renew", &req, Duration::from_secs(10)).await;
                res.map_err(|e| Error::Unavailable(e.to_string()))??
            }
        };
        let renewed = NodeCert { ca_pem: current.ca_pem, cert_pem, key_pem };
        renewed.save(&self.config.data_dir)?;
        self.cert.replace(renewed.clone())?;
        Ok(renewed.validity()?.1)
    }

    fn identity(&self) -> PeerIdentity {
        PeerIdentity { id: self.id, role: Role::Manager }
    }

    /// Leader side of a renewal: a new certificate for the identity the caller's current
    /// certificate proves.
    pub fn sign_renewal(&self, csr_pem: &str, who: PeerIdentity, ip: IpAddr) -> Result<String, Error> {
        let ca = self.view.read(|s| s.cluster.as_ref().and_then(|c| c.ca.clone())).ok_or(Error::NoLeader)?;
        if self.view.read(|s| !s.nodes.contains_key(&who.id)) {
            return Err(Error::Forbidden(format!("node {:016x} is not a member of this cluster", who.id)));
        }
        ca.sign(csr_pem, who.id, who.role, &[ip], self.config.cert_validity)
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
        let ca = cluster.ca.ok_or_else(|| Error::Internal("this cluster has no CA".into()))?;
        let cert_pem = ca.sign(&req.csr_pem, req.id, role, &[req.ip], self.config.cert_validity)?;
        tracing::info!(node_id = format!("{:016x}", req.id), role = role.as_str(), "issued a node certificate");
        Ok(CertificateResponse { cert_pem })
    }

    async fn join(&self, addr: &str, token: &str) -> Result<(), Error> {
        let addr = if addr.contains(':') { addr.to_string() } else { format!("{addr}:2377") };
        let req = JoinRequest { token: token.to_string(), id: self.id, node: self.node.clone() };
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

    /// Leader side of a join: check the token, add the node as a learner, wait until it has caught
    /// up, then make it a voter.
    pub async fn handle_join(&self, req: JoinRequest) -> Result<JoinResponse, Error> {
        if let Some(leader) = self.leader_to_forward()? {
            let res: Result<Result<JoinResponse, Error>, RpcError> =
                self.rpc.call(&leader.cluster_addr, "/cluster/join", &req, Duration::from_secs(150)).await;
            return res.map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        let cluster =
            self.view.read(|s| s.cluster.clone()).ok_or(Error::Unavailable("cluster is still initialising".into()))?;
        match cluster.role_of(&req.token) {
            None => {
                return Err(Error::Forbidden(
                    "invalid join token: it is not a current token of this cluster (was it rotated?); get one with `shoal join-token manager` on a manager".into(),
                ));
            }
            Some(Role::Worker) => {
                return Err(Error::Forbidden(
                    "this is a worker token; worker nodes are not supported by this version yet: join with the manager token (`shoal join-token manager`)".into(),
                ));
            }
            Some(Role::Manager) => {}
        }
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

    /// `Some(leader)` when another node leads, `None` when this node does, an error when nobody does.
    fn leader_to_forward(&self) -> Result<Option<ShoalNode>, Error> {
        let m = self.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(id) if id == self.id => Ok(None),
            Some(id) => m.membership_config.membership().get_node(&id).cloned().map(Some).ok_or(Error::NoLeader),
            None => Err(Error::NoLeader),
        }
    }

    /// Records that a leader just talked to this node (for `X-Consul-LastContact`).
    pub fn note_leader_contact(&self) {
        *self.leader_contact.lock().expect("leader contact lock") = Instant::now();
    }

    /// A read handle on the state.
    pub fn view(&self) -> &StateView {
        &self.view
    }

    /// The configuration this manager runs with.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// Applies `cmd` through Raft on the leader, wherever this node is. Fails with
    /// [`Error::NoLeader`] if no leader acknowledges it within the write timeout.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, Error> {
        let deadline = Instant::now() + self.config.write_timeout;
        loop {
            let leader = match self.leader_to_forward() {
                Ok(None) => match self.write_local(cmd.clone(), deadline).await {
                    // Leadership moved before the write was taken: nothing was applied, try again.
                    Err(Error::Unavailable(msg)) if msg == NOT_LEADER => {
                        self.pause_before_retry(deadline).await?;
                        continue;
                    }
                    other => return other,
                },
                Ok(Some(leader)) => leader,
                Err(_) => {
                    self.pause_before_retry(deadline).await?;
                    continue;
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let res: Result<Result<CommandResult, Error>, RpcError> =
                self.rpc.call(&leader.cluster_addr, "/cluster/write", &cmd, remaining).await;
            match res {
                Ok(Ok(r)) => return Ok(r),
                // The leader moved before it took the write: nothing was applied, try again.
                Ok(Err(Error::Unavailable(msg))) if msg == NOT_LEADER => self.pause_before_retry(deadline).await?,
                Ok(Err(e)) => return Err(e),
                Err(RpcError::NotSent { .. }) => self.pause_before_retry(deadline).await?,
                Err(RpcError::Unknown { .. }) if Instant::now() >= deadline => return Err(Error::NoLeader),
                Err(e @ RpcError::Unknown { .. }) => {
                    return Err(Error::Unavailable(format!(
                        "the write's outcome is unknown, it may have been applied: {e}"
                    )));
                }
            }
        }
    }

    /// The cluster RPC side of a forwarded write: apply it only if this node leads.
    pub async fn write_as_leader(&self, cmd: Command) -> Result<CommandResult, Error> {
        let deadline = Instant::now() + self.config.write_timeout;
        self.write_local(cmd, deadline).await
    }

    async fn write_local(&self, cmd: Command, deadline: Instant) -> Result<CommandResult, Error> {
        match tokio::time::timeout_at(deadline, self.proposer.propose(cmd)).await {
            Ok(res) => res,
            Err(_) => Err(Error::NoLeader),
        }
    }

    async fn pause_before_retry(&self, deadline: Instant) -> Result<(), Error> {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::NoLeader);
        }
        // Wake on the next Raft metrics change (a new leader) or after a short backoff.
        let mut rx = self.raft.metrics();
        let wait = Duration::from_millis(50).min(deadline - now);
        let _ = tokio::time::timeout(wait, rx.changed()).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(())
    }

    /// A linearizable read barrier: when it returns `Ok`, this node's state includes every write
    /// acknowledged before the call. On the leader it is openraft's ReadIndex (leadership confirmed by
    /// a quorum); on a follower it asks the leader for the read index and waits to apply up to it.
    pub async fn linearize(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.config.write_timeout;
        loop {
            let leader = match self.leader_to_forward() {
                Ok(None) => {
                    let index = self.read_index_local(deadline).await?;
                    return self.wait_applied(index, deadline).await;
                }
                Ok(Some(leader)) => leader,
                Err(_) => {
                    self.pause_before_retry(deadline).await?;
                    continue;
                }
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let res: Result<Result<u64, Error>, RpcError> =
                self.rpc.call(&leader.cluster_addr, "/cluster/read-index", &(), remaining).await;
            match res {
                Ok(Ok(index)) => return self.wait_applied(index, deadline).await,
                Ok(Err(Error::Unavailable(msg))) if msg == NOT_LEADER => self.pause_before_retry(deadline).await?,
                Ok(Err(e)) => return Err(e),
                Err(_) => self.pause_before_retry(deadline).await?,
            }
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), Error> {
        if self.view.watch().wait_at_least(index, deadline).await {
            Ok(())
        } else {
            Err(Error::Unavailable(format!("this node has not caught up to index {index} yet; retry or use ?stale")))
        }
    }

    /// The cluster RPC side of a follower's read: the index it must apply before answering.
    pub async fn read_index_as_leader(&self) -> Result<u64, Error> {
        let deadline = Instant::now() + self.config.write_timeout;
        self.read_index_local(deadline).await
    }

    async fn read_index_local(&self, deadline: Instant) -> Result<u64, Error> {
        match tokio::time::timeout_at(deadline, self.reads.read_index()).await {
            Ok(res) => res,
            Err(_) => Err(Error::NoLeader),
        }
    }

    /// The leader as this node sees it: its ID and addresses.
    pub fn leader(&self) -> Option<(NodeId, ShoalNode)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, node))
    }

    /// Whether this node believes there is a working leader (Consul's `X-Consul-KnownLeader`). A
    /// leader that has not heard from a quorum for several election timeouts does not count.
    pub fn known_leader(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
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
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        membership.voter_ids().filter_map(|id| membership.get_node(&id).map(|n| n.cluster_addr.clone())).collect()
    }

    /// The managers as the leader sees them. On a follower this is answered by forwarding to the
    /// leader's HTTP API (see the API layer); here it requires leadership.
    pub fn manager_statuses(&self) -> Result<Vec<ManagerStatus>, Error> {
        if self.leader_to_forward()?.is_some() {
            return Err(Error::Unavailable(NOT_LEADER.into()));
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
            out.push(ManagerStatus {
                id: format!("{id:016x}"),
                name: records.get(id).map_or_else(|| node.name.clone(), |r| r.name.clone()),
                address: node.cluster_addr.clone(),
                http_address: node.http_addr.clone(),
                status: if reachable { "Ready" } else { "Down" }.into(),
                manager_status: manager_status.into(),
                role: Role::Manager,
            });
        }
        let seen = self.workers_seen.lock().expect("workers lock").clone();
        for (id, n) in records.iter().filter(|(_, n)| n.role == Role::Worker) {
            let up = seen.get(id).is_some_and(|t| t.elapsed() < self.config.down_window);
            out.push(ManagerStatus {
                id: format!("{id:016x}"),
                name: n.name.clone(),
                address: n.cluster_addr.clone(),
                http_address: n.http_addr.clone(),
                status: if up { "Ready" } else { "Down" }.into(),
                manager_status: String::new(),
                role: Role::Worker,
            });
        }
        Ok(out)
    }

    /// The node table with live status as the leader sees it, from any manager (a follower asks the
    /// leader over the cluster RPC).
    pub async fn nodes(&self) -> Result<Vec<ManagerStatus>, Error> {
        match self.leader_to_forward()? {
            None => self.manager_statuses(),
            Some(leader) => {
                let res: Result<Result<Vec<ManagerStatus>, Error>, RpcError> =
                    self.rpc.call(&leader.cluster_addr, "/cluster/nodes", &(), Duration::from_secs(5)).await;
                res.map_err(|_| Error::NoLeader)?
            }
        }
    }

    /// A worker's heartbeat: the leader records when it was seen and registers the node in the node
    /// table the first time (or when its addresses change); followers forward it.
    pub async fn handle_heartbeat(&self, hb: crate::worker::Heartbeat) -> Result<crate::worker::ManagerList, Error> {
        if let Some(leader) = self.leader_to_forward()? {
            let res: Result<Result<crate::worker::ManagerList, Error>, RpcError> =
                self.rpc.call(&leader.cluster_addr, "/cluster/heartbeat", &hb, Duration::from_secs(3)).await;
            return res.map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        if self.view.read(|s| s.removed.contains(&hb.id)) {
            return Err(Error::Forbidden(format!("node {:016x} was removed from this cluster", hb.id)));
        }
        let known = self.view.read(|s| {
            s.nodes.get(&hb.id).is_some_and(|n| {
                n.role == Role::Worker
                    && n.name == hb.name
                    && n.cluster_addr == hb.cluster_addr
                    && n.http_addr == hb.http_addr
            })
        });
        if !known {
            self.write(Command::NodeUpsert {
                id: hb.id,
                name: hb.name.clone(),
                cluster_addr: hb.cluster_addr.clone(),
                http_addr: hb.http_addr.clone(),
                role: Role::Worker,
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
        Ok(crate::worker::ManagerList { managers })
    }

    /// Replaces the secret of a join token and returns the new token.
    pub async fn rotate_token(&self, role: Role) -> Result<String, Error> {
        self.write(Command::RotateToken { role, secret: random_secret(25) }).await?;
        self.linearize().await?;
        self.view
            .read(|s| s.cluster.as_ref().map(|c| c.token(role)))
            .ok_or(Error::Unavailable("cluster is still initialising".into()))
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

    /// Stops Raft.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// Marker message for "this node is not the leader (any more)": the caller may retry elsewhere.
pub const NOT_LEADER: &str = "this manager is not the leader";

/// One row of `shoal node ls`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerStatus {
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
