//! Status, node and cluster endpoints.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::error_response;
use super::query::DATACENTER;
use crate::error::Error;
use crate::manager::Manager;
use crate::types::Role;

/// `GET /v1/status/leader`: the leader's cluster address, `""` when there is none.
pub(super) async fn leader(State(m): State<Arc<Manager>>) -> Response {
    let addr =
        if m.known_leader() { m.leader().map(|(_, n)| n.cluster_addr).unwrap_or_default() } else { String::new() };
    axum::Json(addr).into_response()
}

/// `GET /v1/status/peers`: the voters' cluster addresses.
pub(super) async fn peers(State(m): State<Arc<Manager>>) -> Response {
    axum::Json(m.peers()).into_response()
}

/// `GET /v1/agent/self`: the minimal shape Consul clients read (`Config.Datacenter`, `Config.Version`).
pub(super) async fn agent_self(State(m): State<Arc<Manager>>) -> Response {
    axum::Json(json!({
        "Config": {
            "Datacenter": DATACENTER,
            "NodeName": m.node.name,
            "NodeID": format!("{:016x}", m.id),
            "Version": "1.22.0",
            "Server": true,
        },
        "Member": { "Name": m.node.name, "Addr": m.node.cluster_addr, "Tags": { "role": "manager" }, "Status": 1 },
        "Meta": {},
        "Coord": null,
        "Stats": {},
        "DebugConfig": {},
        "xDS": {},
    }))
    .into_response()
}

/// `GET /v1/agent/members`: the gossip members this node knows of (Consul's shape).
pub(super) async fn members(State(m): State<Arc<Manager>>) -> Response {
    axum::Json(m.gossip_members().await).into_response()
}

/// `GET /v1/nodes`: the node table with live status, as the leader sees it (a follower asks the
/// leader); with no leader the answer is 503.
pub(super) async fn nodes(State(m): State<Arc<Manager>>) -> Response {
    match m.nodes().await {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(e) => error_response(&e, None),
    }
}

fn parse_role(role: &str) -> Result<Role, Error> {
    match role {
        "manager" => Ok(Role::Manager),
        "worker" => Ok(Role::Worker),
        other => Err(Error::BadRequest(format!("unknown role {other:?}: use manager or worker"))),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TokenAnswer {
    role: Role,
    token: String,
    /// The address new nodes should join through (this manager's cluster address).
    join_addr: String,
}

/// `GET /v1/cluster/join-token/{role}`.
pub(super) async fn join_token(State(m): State<Arc<Manager>>, Path(role): Path<String>) -> Response {
    let role = match parse_role(&role) {
        Ok(r) => r,
        Err(e) => return error_response(&e, None),
    };
    match m.view().read(|s| s.cluster.as_ref().map(|c| c.token(role))) {
        Some(token) => axum::Json(TokenAnswer { role, token, join_addr: m.node.cluster_addr.clone() }).into_response(),
        None => error_response(&Error::Unavailable("cluster is still initialising".into()), None),
    }
}

/// `POST /v1/cluster/join-token/{role}`: rotate; the old token stops working at once.
pub(super) async fn rotate_token(State(m): State<Arc<Manager>>, Path(role): Path<String>) -> Response {
    let role = match parse_role(&role) {
        Ok(r) => r,
        Err(e) => return error_response(&e, None),
    };
    match m.rotate_token(role).await {
        Ok(token) => (StatusCode::OK, axum::Json(TokenAnswer { role, token, join_addr: m.node.cluster_addr.clone() }))
            .into_response(),
        Err(e) => error_response(&e, None),
    }
}

/// `GET /v1/agent/raft`: Raft state and log-writer counters of this manager.
pub(super) async fn raft(State(m): State<Arc<Manager>>) -> Response {
    axum::Json(m.raft_stats()).into_response()
}

/// `GET /v1/nodes/{node}`: one node by ID, unique ID prefix or name.
pub(super) async fn inspect_node(State(m): State<Arc<Manager>>, Path(node): Path<String>) -> Response {
    match m.inspect_node(&node).await {
        Ok(row) => axum::Json(row).into_response(),
        Err(e) => error_response(&e, None),
    }
}

/// `POST /v1/nodes/{node}/update` with a JSON `NodeUpdateSpec`.
pub(super) async fn update_node(
    State(m): State<Arc<Manager>>,
    Path(node): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let spec: crate::membership::NodeUpdateSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error_response(&Error::BadRequest(format!("invalid node update: {e}")), None),
    };
    match m.update_node(&node, spec).await {
        Ok(row) => axum::Json(row).into_response(),
        Err(e) => error_response(&e, None),
    }
}

/// `DELETE /v1/nodes/{node}[?force]`.
pub(super) async fn remove_node(
    State(m): State<Arc<Manager>>,
    Path(node): Path<String>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    let force = match super::query::Query::parse(q.as_deref()).flag("force") {
        Ok(f) => f,
        Err(e) => return error_response(&e, None),
    };
    match m.remove_node(&node, force).await {
        Ok(()) => axum::Json(true).into_response(),
        Err(e) => error_response(&e, None),
    }
}

/// `POST /v1/nodes/{node}/promote`: a ready worker becomes a manager.
pub(super) async fn promote_node(State(m): State<Arc<Manager>>, Path(node): Path<String>) -> Response {
    match m.promote_node(&node).await {
        Ok(row) => axum::Json(row).into_response(),
        Err(e) => error_response(&e, None),
    }
}

/// `POST /v1/nodes/{node}/demote`.
pub(super) async fn demote_node(State(m): State<Arc<Manager>>, Path(node): Path<String>) -> Response {
    match m.demote_node(&node).await {
        Ok(row) => axum::Json(row).into_response(),
        Err(e) => error_response(&e, None),
    }
}

/// `POST /v1/cluster/client-cert` `{"Csr": PEM, "Name": NAME}`: a client certificate for the HTTP
/// API (`shoal cert client`), signed by the cluster CA. Answer: `{"Cert": PEM, "Ca": PEM}`.
pub(super) async fn client_cert(State(m): State<Arc<Manager>>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Req {
        csr: String,
        name: String,
    }
    let req: Req = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(&Error::BadRequest(format!("expected {{\"Csr\": PEM, \"Name\": NAME}}: {e}")), None);
        }
    };
    match m.issue_client_cert(&req.csr, &req.name) {
        Ok((cert, ca)) => axum::Json(json!({ "Cert": cert, "Ca": ca })).into_response(),
        Err(e) => error_response(&e, None),
    }
}
