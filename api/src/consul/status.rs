//! Consul's status and agent endpoints: `/v1/status/leader|peers`, `/v1/agent/self|members|raft`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::query::DATACENTER;
use shoal_registry::cluster::manager::Manager;

/// `GET /v1/status/leader`: the leader's cluster address, `""` when there is none.
pub(crate) async fn leader(State(m): State<Arc<Manager>>) -> Response {
    let addr =
        if m.known_leader() { m.leader().map(|(_, n)| n.cluster_addr).unwrap_or_default() } else { String::new() };
    axum::Json(addr).into_response()
}

/// `GET /v1/status/peers`: the voters' cluster addresses.
pub(crate) async fn peers(State(m): State<Arc<Manager>>) -> Response {
    axum::Json(m.peers()).into_response()
}

/// `GET /v1/agent/self`: the minimal shape Consul clients read (`Config.Datacenter`, `Config.Version`).
pub(crate) async fn agent_self(State(m): State<Arc<Manager>>) -> Response {
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
pub(crate) async fn members(State(m): State<Arc<Manager>>) -> Response {
    axum::Json(m.gossip_members().await).into_response()
}

/// `GET /v1/agent/raft`: Raft state and log-writer counters of this manager.
pub(crate) async fn raft(State(m): State<Arc<Manager>>) -> Response {
    axum::Json(m.raft_stats()).into_response()
}
