//! Shoal's node administration (`/v1/nodes`, `shoal node ...`) and cluster secrets (join tokens,
//! client certificates of the HTTP API).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::error_response;
use shoal_model::Role;
use shoal_registry::Error;
use shoal_registry::cluster::manager::Manager;

/// `GET /v1/nodes`: the node table with live status, as the leader sees it (a follower asks the
/// leader); with no leader the answer is 503.
pub(crate) async fn nodes(State(m): State<Arc<Manager>>) -> Response {
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
pub(crate) async fn join_token(State(m): State<Arc<Manager>>, Path(role): Path<String>) -> Response {
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
pub(crate) async fn rotate_token(State(m): State<Arc<Manager>>, Path(role): Path<String>) -> Response {
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

/// `GET /v1/nodes/{node}`: one node by ID, unique ID prefix or name.
pub(crate) async fn inspect_node(State(m): State<Arc<Manager>>, Path(node): Path<String>) -> Response {
    match m.inspect_node(&node).await {
        Ok(row) => axum::Json(row).into_response(),
        Err(e) => error_response(&e, None),
    }
}

/// `POST /v1/nodes/{node}/update` with a JSON `NodeUpdateSpec`.
pub(crate) async fn update_node(
    State(m): State<Arc<Manager>>,
    Path(node): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let spec: shoal_registry::cluster::nodes::NodeUpdateSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error_response(&Error::BadRequest(format!("invalid node update: {e}")), None),
    };
    match m.update_node(&node, spec).await {
        Ok(row) => axum::Json(row).into_response(),
        Err(e) => error_response(&e, None),
    }
}

/// `DELETE /v1/nodes/{node}[?force]`.
pub(crate) async fn remove_node(
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
pub(crate) async fn promote_node(State(m): State<Arc<Manager>>, Path(node): Path<String>) -> Response {
    match m.promote_node(&node).await {
        Ok(row) => axum::Json(row).into_response(),
        Err(e) => error_response(&e, None),
    }
}

/// `POST /v1/nodes/{node}/demote`.
pub(crate) async fn demote_node(State(m): State<Arc<Manager>>, Path(node): Path<String>) -> Response {
    match m.demote_node(&node).await {
        Ok(row) => axum::Json(row).into_response(),
        Err(e) => error_response(&e, None),
    }
}

/// `POST /v1/cluster/client-cert` `{"Csr": PEM, "Name": NAME}`: a client certificate for the HTTP
/// API (`shoal cert client`), signed by the cluster CA. Answer: `{"Cert": PEM, "Ca": PEM}`.
pub(crate) async fn client_cert(State(m): State<Arc<Manager>>, body: axum::body::Bytes) -> Response {
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
