//! A worker node: it holds a worker certificate, keeps no cluster state and reports to the managers
//! with a heartbeat over the cluster RPC, which is what keeps it Ready on the leader (see
//! `cluster::liveness`); it fetches its assignments and reports task statuses the same way.
//!
//! Its HTTP API refuses every request with a message naming a manager's API to use instead.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::cluster::manager::NodeConfig;
use crate::datadir::NodeIdentity;
use crate::error::Error;
use crate::pki::tls::{LiveCert, NodeCert};
use crate::rpc::wire::{Heartbeat, ManagerList};
use crate::rpc::{RpcClient, RpcError};
use shoal_model::NodeId;

/// How often a worker reports to the managers.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Heartbeats in flight at most (each waits up to 3 s per manager).
const MAX_BEATS_IN_FLIGHT: usize = 4;

/// A running worker.
pub struct Worker {
    /// Node ID.
    pub id: NodeId,
    /// Identity and addresses.
    pub identity: NodeIdentity,
    rpc: RpcClient,
    managers: Mutex<ManagerList>,
    data_dir: std::path::PathBuf,
    /// Set when the cluster refuses this node for good (e.g. it was removed).
    stopped: tokio::sync::watch::Sender<Option<String>>,
    /// Set, with a manager certificate, when the node was promoted.
    promoted: tokio::sync::watch::Sender<Option<(NodeCert, String)>>,
    /// Taken by the one heartbeat that gets the manager certificate after a promotion.
    promoting: AtomicBool,
    cert: LiveCert,
}

impl Worker {
    /// Starts the heartbeat. `first` is the manager the node joined through (none on a restart:
    /// the managers come from the data dir).
    pub(crate) async fn launch(
        config: NodeConfig,
        identity: NodeIdentity,
        cert: NodeCert,
        first: Option<String>,
    ) -> Result<Arc<Worker>, Error> {
        let dir = config.data_dir.clone();
        let live = LiveCert::new(cert.clone())?;
        let rpc = RpcClient::bound(live.client_config()?, Some(config.bind_ip));
        let live = live.clone();
        let known = match first {
            Some(addr) => ManagerList { managers: vec![(addr, String::new())], role: shoal_model::Role::Worker },
            None => load_managers(&dir),
        };
        let worker = Arc::new(Worker {
            id: identity.id,
            identity: identity.clone(),
            rpc,
            managers: Mutex::new(known),
            data_dir: dir.clone(),
            stopped: tokio::sync::watch::channel(None).0,
            promoted: tokio::sync::watch::channel(None).0,
            promoting: AtomicBool::new(false),
            cert: live,
        });
        // The first heartbeat registers the node; a join is complete only when it is accepted.
        worker.beat().await?;
        cert.save(&dir)?;
        identity.save(&dir)?;
        let w = worker.clone();
        tokio::spawn(async move { w.heartbeat_loop().await });
        Ok(worker)
    }

    async fn beat(&self) -> Result<(), Error> {
        if self.promoted.borrow().is_some() {
            return Ok(());
        }
        let hb = Heartbeat {
            id: self.id,
            name: self.identity.name.clone(),
            cluster_addr: self.identity.cluster_addr.clone(),
            http_addr: self.identity.http_addr.clone(),
            resources: crate::host::resources(),
        };
        let targets = self.manager_addrs();
        let mut last = Error::NoLeader;
        for addr in targets {
            let res: Result<Result<ManagerList, Error>, RpcError> =
                self.rpc.call(&addr, "/cluster/heartbeat", &hb, Duration::from_secs(3)).await;
            match res {
                Ok(Ok(list)) if !list.managers.is_empty() => {
                    // Beats overlap: only one of them switches roles.
                    if list.role == shoal_model::Role::Manager
                        && !self.promoting.swap(true, Ordering::SeqCst)
                        && let Err(e) = self.become_manager(&addr).await
                    {
                        self.promoting.store(false, Ordering::SeqCst);
                        return Err(e);
                    }
                    let changed = {
                        let mut known = self.managers.lock().expect("managers lock");
                        let changed = known.managers != list.managers;
                        *known = list;
                        changed
                    };
                    if changed {
                        self.save_managers();
                    }
                    return Ok(());
                }
                Ok(Ok(_)) => last = Error::NoLeader,
                Ok(Err(e)) if !e.is_retryable() => return Err(e),
                Err(RpcError::Unknown { msg, .. }) if msg.starts_with("403") => return Err(Error::Forbidden(msg)),
                Ok(Err(e)) => last = e,
                Err(e) => last = Error::Unavailable(e.to_string()),
            }
        }
        Err(last)
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        tracing::info!("registered with the managers");
        // Heartbeats are what keeps this worker Ready on the leader (gossip alone is not enough),
        // so one that hangs (a lost packet, a paused manager) must not hold up the next: a beat
        // goes out every interval, each with its own timeouts, a few at most in flight.
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate, and launch has just beaten
        let mut beats = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.is_stopped() {
                        return;
                    }
                    if beats.len() < MAX_BEATS_IN_FLIGHT {
                        let w = self.clone();
                        beats.spawn(async move { w.beat().await });
                    }
                }
                Some(done) = beats.join_next() => match done {
                    Ok(Ok(())) => {}
                    // Refused for good (removed from the cluster): stop instead of knocking forever.
                    Ok(Err(e @ Error::Forbidden(_))) => {
                        tracing::error!(error = %e, "the cluster refuses this node; stopping");
                        self.stop(e.to_string());
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat to the managers failed"),
                    Err(e) => tracing::warn!(error = %e, "heartbeat task failed"),
                },
            }
        }
    }

    /// Promotion: get a manager certificate (the node table now says manager) and hand it over.
    async fn become_manager(&self, via: &str) -> Result<(), Error> {
        let ca_pem = self.cert.current().ca_pem;
        let (_, cert) =
            crate::node::renewal::request(&self.rpc, &[via.to_string()], self.advertised_ip()?, &ca_pem).await?;
        tracing::info!("promoted to manager: got a manager certificate, joining Raft");
        self.promoted.send_replace(Some((cert, via.to_string())));
        Ok(())
    }

    /// Resolves when the node was promoted, with its manager certificate and a manager to join through.
    pub async fn promoted(&self) -> (NodeCert, String) {
        let mut rx = self.promoted.subscribe();
        // Clone out of the watch's guard before any other await: it must not be held across one.
        let promoted = rx.wait_for(Option::is_some).await.ok().and_then(|p| p.clone());
        match promoted {
            Some(p) => p,
            None => std::future::pending().await,
        }
    }

    /// Whether the node was promoted (this worker's part is over).
    pub(crate) fn is_promoted(&self) -> bool {
        self.promoted.borrow().is_some()
    }

    /// Stops the worker for good with `reason` (see [`Worker::stopped`]).
    pub(crate) fn stop(&self, reason: String) {
        self.stopped.send_replace(Some(reason));
    }

    /// Whether the worker was stopped for good.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.borrow().is_some()
    }

    /// Resolves when this node cannot go on, with the reason: the cluster refused it for good (it
    /// was removed), or its certificate expired.
    pub async fn stopped(&self) -> String {
        let mut rx = self.stopped.subscribe();
        let reason = rx.wait_for(Option::is_some).await.ok().and_then(|r| r.clone());
        match reason {
            Some(reason) => reason,
            None => std::future::pending().await,
        }
    }

    /// Asks the managers (the first that answers) for this node's assignments after `index`.
    pub async fn assignments(&self, index: u64, wait: Duration) -> Result<crate::rpc::wire::Assignments, Error> {
        let req = crate::rpc::wire::AssignmentsRequest { index, wait_ms: wait.as_millis() as u64 };
        self.call_managers("/cluster/assignments", &req, wait + Duration::from_secs(5)).await
    }

    /// Reports task statuses to the managers.
    pub async fn report_status(&self, updates: Vec<(String, shoal_model::services::TaskStatus)>) -> Result<(), Error> {
        let r: Result<(), Error> =
            self.call_managers("/cluster/task-status", &updates, Duration::from_secs(10)).await?;
        r
    }

    /// Asks the managers for this node's catalog entries once they changed after `index`.
    pub async fn node_catalog(
        &self,
        index: u64,
        wait: Duration,
    ) -> Result<crate::control::catalog::NodeCatalog, Error> {
        let req = crate::control::catalog::NodeCatalogRequest { index, wait_ms: wait.as_millis() as u64 };
        let r: Result<_, Error> =
            self.call_managers("/cluster/catalog-node", &req, wait + Duration::from_secs(5)).await?;
        r
    }

    /// Asks the managers for the catalog as discovery sees it, once it changed after `index`.
    pub async fn catalog_snapshot(
        &self,
        index: u64,
        wait: Duration,
    ) -> Result<shoal_model::catalog::snapshot::Snapshot, Error> {
        let req = crate::control::catalog::NodeCatalogRequest { index, wait_ms: wait.as_millis() as u64 };
        self.call_managers("/cluster/catalog-snapshot", &req, wait + Duration::from_secs(5)).await
    }

    /// Writes catalog commands about this node through the managers.
    pub async fn catalog_write(
        &self,
        cmds: Vec<shoal_model::catalog::CatalogCommand>,
    ) -> Result<Vec<shoal_model::CommandResult>, Error> {
        let r: Result<_, Error> = self.call_managers("/cluster/catalog-write", &cmds, Duration::from_secs(10)).await?;
        r
    }

    async fn call_managers<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, Error> {
        let targets = self.manager_addrs();
        let mut last = Error::NoLeader;
        for addr in targets {
            match self.rpc.call::<Req, Resp>(&addr, path, req, timeout).await {
                Ok(r) => return Ok(r),
                Err(e) => last = Error::Unavailable(e.to_string()),
            }
        }
        Err(last)
    }

    /// The cluster addresses of the managers this worker knows (where it renews its certificate).
    pub(crate) fn manager_addrs(&self) -> Vec<String> {
        self.managers.lock().expect("managers lock").managers.iter().map(|m| m.0.clone()).collect()
    }

    /// The IP this worker advertises (its certificate's SAN).
    pub(crate) fn advertised_ip(&self) -> Result<IpAddr, Error> {
        self.identity
            .cluster_addr
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .map_err(|e| Error::Internal(format!("bad advertised address {:?}: {e}", self.identity.cluster_addr)))
    }

    /// The cluster-port client (with this worker's live certificate).
    pub(crate) fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    /// The certificate TLS uses, replaced by renewal.
    pub(crate) fn live_cert(&self) -> &LiveCert {
        &self.cert
    }

    /// The data dir.
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// A manager's HTTP API address to point clients at.
    pub fn manager_api(&self) -> Option<String> {
        self.managers.lock().expect("managers lock").managers.iter().map(|m| m.1.clone()).find(|a| !a.is_empty())
    }

    /// The TLS config of this worker's API with `--http-tls` (client certificates required).
    pub fn api_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        self.cert.api_server_config()
    }
}

fn load_managers(dir: &std::path::Path) -> ManagerList {
    // A restarted worker finds the managers through the addresses it last heard of.
    std::fs::read(dir.join("managers.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

impl Worker {
    /// Remembers the managers in the data dir, for restarts.
    fn save_managers(&self) {
        let list = self.managers.lock().expect("managers lock").clone();
        if let Ok(b) = serde_json::to_vec(&list) {
            let _ = std::fs::write(self.data_dir.join("managers.json"), b);
        }
    }
}
