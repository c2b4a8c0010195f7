//! The cluster RPC: one listener per manager (port 2377) carrying Raft and the calls managers make to
//! the leader (forwarded writes, read-index, joins). Bodies are bincode over HTTP/1.1 keep-alive,
//! inside mutual TLS: every route except the two a joining node needs (`GET /cluster/ca`,
//! `POST /cluster/certificate`) requires a client certificate from this cluster's CA with the
//! manager role; anything else is refused and logged.
//!
//! The client side distinguishes a request that never left (connection refused: safe to retry) from
//! one whose outcome is unknown (it may have been applied).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::listener::Peer;
use crate::manager::{CertificateRequest, JoinRequest, Manager, RenewRequest};
use crate::types::{Command, Role, TypeConfig};

/// Why a cluster RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The request was not delivered (connection refused or reset before sending): safe to retry.
    #[error("cannot reach {addr}: {msg}")]
    NotSent {
        /// Target.
        addr: String,
        /// Cause.
        msg: String,
    },
    /// The request may or may not have been processed.
    #[error("no answer from {addr}: {msg}")]
    Unknown {
        /// Target.
        addr: String,
        /// Cause.
        msg: String,
    },
}

/// Client for the cluster RPC.
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
}

impl RpcClient {
    /// A client with pooled keep-alive connections over TLS configured by `tls`.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Self::bound(tls, None)
    }

    /// A client whose connections leave from `local` (the node's own address, as on a real host
    /// with one IP; on a multi-address test host it keeps each node's traffic under its own IP).
    pub fn bound(tls: rustls::ClientConfig, local: Option<std::net::IpAddr>) -> Self {
        crate::tls::install_crypto_provider();
        let local = local.filter(|ip| !ip.is_unspecified());
        let http = reqwest::Client::builder()
            .local_address(local)
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .no_proxy()
            .https_only(true)
            .tls_backend_preconfigured(tls)
            .build()
            .expect("reqwest client");
        Self { http }
    }

    /// Sends `req` and returns the body of a 2xx answer. A connection that was never made is
    /// `NotSent`; anything after that is `Unknown`.
    async fn send(&self, addr: &str, req: reqwest::RequestBuilder) -> Result<bytes::Bytes, RpcError> {
        let resp = req.send().await.map_err(|e| {
            let msg = format!("{e:#}");
            if e.is_connect() {
                RpcError::NotSent { addr: addr.into(), msg }
            } else {
                RpcError::Unknown { addr: addr.into(), msg }
            }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| RpcError::Unknown { addr: addr.into(), msg: e.to_string() })?;
        if !status.is_success() {
            return Err(RpcError::Unknown {
                addr: addr.into(),
                msg: format!("{status}: {}", String::from_utf8_lossy(&bytes)),
            });
        }
        Ok(bytes)
    }

    /// GETs `https://addr/path` and returns the body as text.
    pub async fn get_text(&self, addr: &str, path: &str, timeout: Duration) -> Result<String, RpcError> {
        let bytes = self.send(addr, self.http.get(format!("https://{addr}{path}")).timeout(timeout)).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// POSTs `req` to `https://addr/path` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let body = bincode::serialize(req).map_err(|e| RpcError::NotSent { addr: addr.into(), msg: e.to_string() })?;
        let bytes =
            self.send(addr, self.http.post(format!("https://{addr}{path}")).timeout(timeout).body(body)).await?;
        bincode::deserialize(&bytes)
            .map_err(|e| RpcError::Unknown { addr: addr.into(), msg: format!("bad answer: {e}") })
    }
}

/// A bincode request body; one that does not decode is refused with 400.
struct Bincode<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequest<S> for Bincode<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        decode(&body).map(Bincode)
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    bincode::deserialize(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("bad rpc body: {e}")).into_response())
}

fn encode<T: Serialize>(value: &T) -> Response {
    match bincode::serialize(value) {
        Ok(b) => b.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The router of the cluster port (serve it with `ConnectInfo<Peer>`).
pub fn router(manager: Arc<Manager>) -> Router {
    let managers_only = Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/cluster/write", post(write))
        .route("/cluster/read-index", post(read_index))
        .route("/cluster/join", post(join))
        .route("/cluster/nodes", post(nodes))
        .route("/cluster/remove-voter", post(remove_voter))
        .route("/cluster/demote", post(demote))
        .route("/cluster/demoted", post(demoted))
        .route("/cluster/campaign", post(campaign))
        .route_layer(middleware::from_fn_with_state(manager.clone(), require_manager));
    let members = Router::new()
        .route("/cluster/assignments", post(assignments))
        .route("/cluster/task-status", post(task_status))
        .route("/cluster/renew", post(renew))
        .route("/cluster/heartbeat", post(heartbeat))
        .route_layer(middleware::from_fn_with_state(manager.clone(), require_member));
    Router::new()
        .merge(managers_only)
        .merge(members)
        .route("/cluster/ca", get(ca))
        .route("/cluster/certificate", post(certificate))
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024 * 1024))
        .with_state(manager)
}

/// Refuses (and logs) any request not made with a manager certificate of this cluster.
async fn require_manager(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    match peer.identity {
        Some(id) if is_removed(&m, id.id) => refuse_removed(&peer, id.id),
        Some(id) if id.role == Role::Manager => next.run(req).await,
        Some(id) => {
            tracing::warn!(peer = %peer.addr, node_id = format!("{:016x}", id.id), path = %req.uri().path(), "refused: a worker certificate cannot call a manager-only RPC");
            (StatusCode::FORBIDDEN, "manager-only RPC: the client certificate has the worker role\n").into_response()
        }
        None => {
            tracing::warn!(peer = %peer.addr, path = %req.uri().path(), "refused: no client certificate from this cluster");
            (StatusCode::UNAUTHORIZED, "this RPC needs a node certificate from this cluster's CA\n").into_response()
        }
    }
}

/// Refuses (and logs) any request not made with a certificate of this cluster, whatever its role.
async fn require_member(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    match peer.identity {
        Some(id) if is_removed(&m, id.id) => return refuse_removed(&peer, id.id),
        Some(_) => return next.run(req).await,
        None => {}
    }
    tracing::warn!(peer = %peer.addr, path = %req.uri().path(), "refused: no client certificate from this cluster");
    (StatusCode::UNAUTHORIZED, "this RPC needs a node certificate from this cluster's CA\n").into_response()
}

fn is_removed(m: &Manager, id: crate::types::NodeId) -> bool {
    m.view().read(|s| s.removed.contains(&id))
}

fn refuse_removed(peer: &Peer, id: crate::types::NodeId) -> Response {
    tracing::warn!(peer = %peer.addr, node_id = format!("{id:016x}"), "refused: the certificate belongs to a removed node");
    (StatusCode::FORBIDDEN, "this node was removed from the cluster; its certificate is no longer accepted\n")
        .into_response()
}

async fn renew(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Bincode(req): Bincode<RenewRequest>,
) -> Response {
    let who = peer.identity.expect("checked by require_member");
    let res = m.sign_renewal(&req.csr_pem, who, req.ip);
    match &res {
        Ok(_) => tracing::info!(node_id = format!("{:016x}", who.id), "renewed a node certificate"),
        Err(e) => tracing::warn!(peer = %peer.addr, error = %e, "refused a certificate renewal"),
    }
    encode(&res)
}

async fn heartbeat(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Bincode(hb): Bincode<crate::worker::Heartbeat>,
) -> Response {
    let who = peer.identity.expect("checked by require_member");
    // A worker speaks for itself; a manager may forward a worker's heartbeat to the leader.
    if who.role == Role::Worker && who.id != hb.id {
        tracing::warn!(peer = %peer.addr, "refused: a worker sent a heartbeat for another node");
        return encode(&Err::<crate::worker::ManagerList, _>(Error::Forbidden(
            "a worker can only report for itself".into(),
        )));
    }
    encode(&m.handle_heartbeat(hb).await)
}

async fn ca(State(m): State<Arc<Manager>>) -> Response {
    m.ca_pem().into_response()
}

async fn certificate(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Bincode(req): Bincode<CertificateRequest>,
) -> Response {
    let res = m.handle_certificate(req).await;
    if let Err(e) = &res {
        tracing::warn!(peer = %peer.addr, error = %e, "refused a certificate request");
    }
    encode(&res)
}

async fn append(State(m): State<Arc<Manager>>, Bincode(req): Bincode<AppendEntriesRequest<TypeConfig>>) -> Response {
    m.note_leader_contact();
    encode(&m.raft.append_entries(req).await)
}

async fn vote(State(m): State<Arc<Manager>>, Bincode(req): Bincode<VoteRequest<u64>>) -> Response {
    encode(&m.raft.vote(req).await)
}

async fn snapshot(
    State(m): State<Arc<Manager>>,
    Bincode(req): Bincode<InstallSnapshotRequest<TypeConfig>>,
) -> Response {
    m.note_leader_contact();
    encode(&m.raft.install_snapshot(req).await)
}

async fn write(State(m): State<Arc<Manager>>, Bincode(cmd): Bincode<Command>) -> Response {
    encode(&m.write_as_leader(cmd).await)
}

async fn remove_voter(State(m): State<Arc<Manager>>, Bincode(id): Bincode<crate::types::NodeId>) -> Response {
    encode(&m.remove_voter_as_leader(id).await)
}

async fn assignments(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Bincode(req): Bincode<crate::assignments::AssignmentsRequest>,
) -> Response {
    let who = peer.identity.expect("checked by require_member");
    encode(&m.assignments_for(who.id, req.index, std::time::Duration::from_millis(req.wait_ms)).await)
}

async fn task_status(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Bincode(updates): Bincode<Vec<(String, crate::services::TaskStatus)>>,
) -> Response {
    let who = peer.identity.expect("checked by require_member");
    encode(&m.report_status(who.id, updates).await)
}

async fn demote(State(m): State<Arc<Manager>>, Bincode(id): Bincode<crate::types::NodeId>) -> Response {
    encode(&m.demote_as_leader(id).await)
}

async fn demoted(State(m): State<Arc<Manager>>, Bincode(id): Bincode<crate::types::NodeId>) -> Response {
    encode(&m.mark_demoted(id))
}

async fn campaign(State(m): State<Arc<Manager>>) -> Response {
    encode(&m.campaign().await)
}

async fn nodes(State(m): State<Arc<Manager>>) -> Response {
    encode(&m.manager_statuses())
}

async fn read_index(State(m): State<Arc<Manager>>) -> Response {
    encode(&m.read_index_as_leader().await)
}

async fn join(
    State(m): State<Arc<Manager>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Bincode(req): Bincode<JoinRequest>,
) -> Response {
    // Only a manager certificate gets here (the joining node's own, or a follower forwarding it).
    tracing::info!(peer = %peer.addr, node_id = format!("{:016x}", req.id), "join request");
    let res: Result<_, Error> = m.handle_join(req).await;
    encode(&res)
}
