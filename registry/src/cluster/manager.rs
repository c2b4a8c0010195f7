//! A manager node: the Raft instance, its storage, the cluster RPC listener, and the operations every
//! API builds on — `write` (forwarded to the leader from anywhere), `linearize` (a quorum-confirmed
//! read barrier), `join` and the status reports.
//!
//! ```text
//!  HTTP API ──write──▶ Manager::write ──(follower)── cluster RPC /cluster/write ──▶ leader
//!                          │ (leader)
//!                          ▼
//!                  Proposer (group commit) ──▶ raft.client_write ──▶ LogStore (fsync) ──▶ quorum ──▶ StateMachine
//!                                                                                         │
//!  HTTP API ◀──blocking query── IndexWatch ◀──────────────── applied index ───────────────┘
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{Config, Raft, SnapshotPolicy};
use tokio::time::Instant;

pub use crate::cluster::config::{NodeConfig, StartMode};
pub use crate::cluster::membership::JoinToken;
pub use crate::cluster::nodes::NodeRow;
pub use crate::cluster::status::RaftStats;
use crate::datadir::{DB_FILE, NodeIdentity};
use crate::error::Error;
use crate::pki::listener::{Peer, TlsListener};
use crate::pki::tls::{ClusterCaExt, LiveCert, NodeCert};
use crate::rpc::network::{Contacts, Network};
use crate::rpc::{RpcClient, RpcError};
use crate::store::TypeConfig;
use crate::store::log_store::{LogStats, LogStore};
use crate::store::proposer::Proposer;
use crate::store::read_barrier::ReadBarrier;
use crate::store::state_machine::{StateMachineStore, StateView};
use shoal_model::ClusterCa;
use shoal_model::{Command, CommandResult, NodeId, Role, ShoalNode};

/// A running manager.
pub struct Manager {
    /// This node's ID.
    pub id: NodeId,
    /// This node's addresses.
    pub node: ShoalNode,
    /// The Raft instance.
    pub raft: Raft<TypeConfig>,
    pub(crate) view: StateView,
    pub(crate) cert: LiveCert,
    pub(crate) rpc: RpcClient,
    pub(crate) contacts: Contacts,
    pub(crate) leader_contact: Mutex<Instant>,
    pub(crate) workers_seen: Mutex<std::collections::HashMap<NodeId, Instant>>,
    /// Gossip's view of who was heard from when (set once gossip runs).
    pub(crate) heard: std::sync::RwLock<Option<Arc<dyn crate::cluster::liveness::Heard>>>,
    /// Container logs of this node's tasks (set once its runtime runs).
    /// Closed (true) while leadership is being handed over: local writes and reads wait.
    gate: tokio::sync::watch::Sender<bool>,
    /// Set when the leader says this node was demoted (the process then runs as a worker).
    demoted: tokio::sync::watch::Sender<bool>,
    /// Set, with the reason, when this manager cannot go on (its certificate expired and nobody
    /// can renew it): the process stops with that reason.
    given_up: tokio::sync::watch::Sender<Option<String>>,
    /// Stops the cluster port's server.
    stop: tokio::sync::watch::Sender<bool>,
    pub(crate) proposer: Proposer,
    pub(crate) reads: ReadBarrier,
    pub(crate) log_stats: Arc<LogStats>,
    pub(crate) config: NodeConfig,
    /// The last catalog snapshot handed out, so the next is rebuilt only where it changed.
    pub(crate) catalog_snapshot: Mutex<Option<Arc<shoal_model::catalog::snapshot::Snapshot>>>,
}

/// redb's page cache (see where the database is opened).
const REDB_CACHE_BYTES: usize = 256 << 10;

impl Manager {
    /// Starts a manager whose identity and certificate are settled (see [`crate::node::start`]):
    /// opens storage, starts Raft and the cluster RPC listener, then initialises, joins or resumes.
    pub(crate) async fn launch(
        config: NodeConfig,
        mode: StartMode,
        identity: NodeIdentity,
        cert: NodeCert,
        ca_for_init: Option<ClusterCa>,
        member_routes: axum::Router<Arc<Manager>>,
    ) -> Result<Arc<Manager>, Error> {
        let dir = config.data_dir.clone();
        let node = ShoalNode {
            name: identity.name.clone(),
            cluster_addr: identity.cluster_addr.clone(),
            http_addr: identity.http_addr.clone(),
            gossip_addr: identity.gossip_addr.clone(),
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

        // redb's page cache defaults to a 1 GiB ceiling that it fills with every page written and
        // keeps. Shoal reads the database only at start (the log has a mirror in memory; the state
        // is in memory), so a small cache bounds the manager's memory: 4 MiB of it was 410 B per
        // instance of a 10,000-instance catalog (bench/RESULTS.md, "Catalog at scale").
        let db = redb::Database::builder()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(dir.join(DB_FILE))
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
        let rpc = RpcClient::bound(live.client_config()?, Some(config.bind_ip));
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
            heard: std::sync::RwLock::new(None),
            gate: tokio::sync::watch::Sender::new(false),
            demoted: tokio::sync::watch::Sender::new(false),
            given_up: tokio::sync::watch::Sender::new(None),
            stop: tokio::sync::watch::Sender::new(false),
            proposer: Proposer::start(raft.clone()),
            reads: ReadBarrier::new(raft.clone(), config.write_timeout),
            log_stats,
            config,
            catalog_snapshot: Mutex::new(None),
        });

        let app = crate::cluster::server::router(manager.clone(), member_routes)
            .into_make_service_with_connect_info::<Peer>();
        let mut stop = manager.stop.subscribe();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                tracing::error!(error = %e, "cluster rpc server stopped");
            }
        });

        match mode {
            StartMode::Init => manager.init(&identity, ca_for_init.expect("init made a CA")).await?,
            StartMode::Join { addr, .. } => {
                if let Err(e) = manager.join(&addr).await {
                    let _ = manager.raft.shutdown().await;
                    let _ = std::fs::remove_file(dir.join(DB_FILE));
                    return Err(e);
                }
                cert.save(&dir)?;
                identity.save(&dir)?;
            }
            StartMode::Resume => {}
        }
        tokio::spawn(crate::cluster::liveness::run(Arc::downgrade(&manager)));
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
            manager_secret: crate::ids::secret(),
            worker_secret: crate::ids::secret(),
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
            resources: crate::host::resources(),
        })
        .await
        .map(|_| ())
    }

    /// The TLS config of this manager's HTTP and Docker APIs with `--http-tls` (client certificates
    /// from the cluster CA required).
    pub fn api_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        self.cert.api_server_config()
    }

    /// A TLS client config presenting this node's certificate (for other nodes' APIs with `--http-tls`).
    pub fn cluster_client_tls(&self) -> Result<rustls::ClientConfig, Error> {
        self.cert.client_config()
    }

    /// `Some(leader)` when another node leads, `None` when this node does, an error when nobody does.
    pub(crate) fn leader_to_forward(&self) -> Result<Option<ShoalNode>, Error> {
        // Borrow, not clone: these run on every request (X-Consul-* headers, write routing).
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
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
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Applies `cmd` through Raft on the leader, wherever this node is. Fails with
    /// [`Error::NoLeader`] if no leader acknowledges it within the write timeout.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, Error> {
        let deadline = Instant::now() + self.config.write_timeout;
        loop {
            let leader = match self.leader_to_forward() {
                // Leadership is being handed over: wait, then look again who leads.
                Ok(None) if self.wait_gate(deadline).await? => continue,
                Ok(None) => match self.write_local(cmd.clone(), deadline).await {
                    // Leadership moved before the write was taken: nothing was applied, try again.
                    Err(Error::NotLeader) => {
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
                Ok(Err(Error::NotLeader)) => self.pause_before_retry(deadline).await?,
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
        if self.wait_gate(deadline).await? {
            return Err(Error::NotLeader);
        }
        self.write_local(cmd, deadline).await
    }

    async fn write_local(&self, cmd: Command, deadline: Instant) -> Result<CommandResult, Error> {
        match tokio::time::timeout_at(deadline, self.proposer.propose(cmd)).await {
            Ok(res) => res,
            Err(_) => Err(Error::NoLeader),
        }
    }

    /// Waits while the gate is closed (a hand-over); `true` if it had to wait.
    async fn wait_gate(&self, deadline: Instant) -> Result<bool, Error> {
        let mut rx = self.gate.subscribe();
        if !*rx.borrow() {
            return Ok(false);
        }
        match tokio::time::timeout_at(deadline, rx.wait_for(|closed| !*closed)).await {
            Ok(_) => Ok(true),
            Err(_) => Err(Error::NoLeader),
        }
    }

    /// Closes the gate until the guard is dropped.
    pub(crate) fn close_gate(&self) -> GateGuard<'_> {
        self.gate.send_replace(true);
        GateGuard(&self.gate)
    }

    /// The cluster RPC side of `/cluster/demoted`: the leader says this node is no longer a manager.
    pub fn mark_demoted(&self, id: NodeId) -> Result<(), Error> {
        if id != self.id {
            return Err(Error::BadRequest(format!("this is node {:016x}, not {id:016x}", self.id)));
        }
        self.demoted.send_replace(true);
        Ok(())
    }

    /// Resolves once [`Manager::shutdown`] was called.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Whether [`Manager::shutdown`] was called.
    pub(crate) fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Stops this manager for good with `reason` (see [`Manager::given_up`]).
    pub(crate) fn give_up(&self, reason: String) {
        self.given_up.send_replace(Some(reason));
    }

    /// Resolves when this manager cannot go on (its certificate expired and nobody can renew it),
    /// with the reason to stop the process with.
    pub async fn given_up(&self) -> String {
        let mut rx = self.given_up.subscribe();
        // Clone out of the watch's guard before any other await: it must not be held across one.
        let reason = rx.wait_for(Option::is_some).await.ok().and_then(|r| r.clone());
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// Resolves when this node was demoted to a worker.
    pub async fn demoted(&self) {
        let mut rx = self.demoted.subscribe();
        let _ = rx.wait_for(|d| *d).await;
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
                Ok(None) if self.wait_gate(deadline).await? => continue,
                Ok(None) => match self.read_index_local(deadline).await {
                    Ok(index) => return self.wait_applied(index, deadline).await,
                    // Leadership moved while confirming: ask the new leader.
                    Err(Error::NotLeader) => {
                        self.pause_before_retry(deadline).await?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
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
                Ok(Err(Error::NotLeader)) => self.pause_before_retry(deadline).await?,
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
        loop {
            match tokio::time::timeout_at(deadline, self.reads.read_index()).await {
                // A confirmation round that timed out (a follower slow to answer on a loaded
                // machine) is not a lost leadership: try again until the deadline.
                Ok(Err(Error::NoLeader)) if Instant::now() + Duration::from_millis(25) < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Ok(res) => return res,
                Err(_) => return Err(Error::NoLeader),
            }
        }
    }

    /// Hands the liveness loop its gossip view (`cli` wires gossip in; the registry does not know it).
    pub fn set_heard(&self, heard: Arc<dyn crate::cluster::liveness::Heard>) {
        *self.heard.write().expect("heard lock") = Some(heard);
    }

    /// Gossip members as this node sees them; empty until gossip runs.
    pub async fn gossip_members(&self) -> Vec<crate::cluster::liveness::GossipMember> {
        let heard = self.heard.read().expect("heard lock").clone();
        match heard {
            Some(h) => h.members().await,
            None => Vec::new(),
        }
    }

    /// Stops Raft and the cluster port.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        self.stop.send_replace(true);
    }
}

/// Reopens the hand-over gate when dropped.
pub(crate) struct GateGuard<'a>(&'a tokio::sync::watch::Sender<bool>);

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}
