//! The server side of the cluster port (2377): Raft and the calls nodes make to the managers
//! (forwarded writes, read-index, joins, renewals, heartbeats, and the routes `control/` adds for
//! task dispatch). Every route except the two a joining node needs (`GET /cluster/ca`,
//! `POST /cluster/certificate`) requires a client certificate from this cluster's CA; the
//! manager-only ones the manager role. Anything else is refused and logged.

use std::sync::Arc;

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
use shoal_model::{Command, NodeId, Role};

use crate::cluster::manager::Manager;
use crate::error::Error;
use crate::pki::listener::Peer;
use crate::rpc::wire::{CertificateRequest, Heartbeat, JoinRequest, ManagerList, RenewRequest};
use crate::store::TypeConfig;

/// A bincode request body; one that does not decode is refused with 400.
pub struct Bincode<T>(pub T);

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

/// A bincode answer.
pub fn encode<T: Serialize>(value: &T) -> Response {
    match bincode::serialize(value) {
        Ok(b) => b.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The router of the cluster port (serve it with `ConnectInfo<Peer>`). `member_routes` are the
/// routes of the rooms above (task dispatch) that any node of the cluster may call; they get the
/// same certificate check as this room's own.
pub fn router(manager: Arc<Manager>, member_routes: Router<Arc<Manager>>) -> Router {
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
    let members = member_routes
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
        None => refuse_anonymous(&peer, &req),
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
        Some(id) if is_removed(&m, id.id) => refuse_removed(&peer, id.id),
        Some(_) => next.run(req).await,
        None => refuse_anonymous(&peer, &req),
    }
}

/// Refuses (and logs) a request that presented no certificate of this cluster.
fn refuse_anonymous(peer: &Peer, req: &Request) -> Response {
    tracing::warn!(peer = %peer.addr, path = %req.uri().path(), "refused: no client certificate from this cluster");
    (StatusCode::UNAUTHORIZED, "this RPC needs a node certificate from this cluster's CA\n").into_response()
}

fn is_removed(m: &Manager, id: NodeId) -> bool {
    m.view().read(|s| s.removed.contains(&id))
}

fn refuse_removed(peer: &Peer, id: NodeId) -> Response {
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
    Bincode(hb): Bincode<Heartbeat>,
) -> Response {
    let who = peer.identity.expect("checked by require_member");
    // A worker speaks for itself; a manager may forward a worker's heartbeat to the leader.
    if who.role == Role::Worker && who.id != hb.id {
        tracing::warn!(peer = %peer.addr, "refused: a worker sent a heartbeat for another node");
        return encode(&Err::<ManagerList, _>(Error::Forbidden("a worker can only report for itself".into())));
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

async fn remove_voter(State(m): State<Arc<Manager>>, Bincode(id): Bincode<NodeId>) -> Response {
    encode(&m.remove_voter_as_leader(id).await)
}

async fn demote(State(m): State<Arc<Manager>>, Bincode(id): Bincode<NodeId>) -> Response {
    encode(&m.demote_as_leader(id).await)
}

async fn demoted(State(m): State<Arc<Manager>>, Bincode(id): Bincode<NodeId>) -> Response {
    encode(&m.mark_demoted(id))
}

async fn campaign(State(m): State<Arc<Manager>>) -> Response {
    encode(&m.campaign().await)
}

async fn nodes(State(m): State<Arc<Manager>>) -> Response {
    encode(&m.node_rows())
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
