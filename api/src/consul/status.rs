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
    let leader_addr =
        if m.known_leader() { m.leader().map(|(_, n)| n.cluster_addr).unwrap_or_default() } else { String::new() };
    axum::Json(json!({
        "Config": {
            "Datacenter": DATACENTER,
            "NodeName": m.node.name,
            "NodeID": shoal_model::catalog::read::node_uuid(m.id),
            "PrimaryDatacenter": DATACENTER,
            "Revision": env!("CARGO_PKG_VERSION"),
            "Version": "1.22.0",
            "Server": true,
        },
        "Member": {
            "Name": m.node.name,
            "Addr": shoal_model::catalog::read::host_of(&m.node.cluster_addr),
            "Port": m.node.cluster_addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).unwrap_or(0),
            "Tags": { "role": "consul", "dc": DATACENTER, "id": shoal_model::catalog::read::node_uuid(m.id) },
            "Status": 1,
        },
        "Meta": {},
        "Coord": null,
        "Stats": {
            "consul": {
                "server": "true",
                "leader": if m.is_leader() { "true" } else { "false" },
                "leader_addr": leader_addr,
                "bootstrap": "false",
                "known_datacenters": "1",
                "acl": "disabled",
            },
        },
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
