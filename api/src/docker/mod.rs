//! The Docker Engine API subset a Swarm manager answers, so the real `docker` CLI drives Shoal
//! (`DOCKER_HOST=tcp://MANAGER:2375`): `/_ping`, `/version`, `/info`, nodes, services, tasks,
//! `/distribution` (404), under any `/v1.NN/` prefix. Errors are `{"message": ...}`.
//! Services and tasks share their handlers with Shoal's own API (`services.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub mod services;

use services::docker_error;
use shoal_model::Role;
use shoal_registry::Error;
use shoal_registry::cluster::manager::{Manager, NodeRow};
use shoal_registry::cluster::nodes::NodeUpdateSpec;

/// The API version Shoal speaks (the engine on this project's machines speaks the same).
pub const API_VERSION: &str = "1.41";

/// The Docker API router (wrap it with [`strip_version_prefix`] before serving).
pub fn router(state: crate::ApiState) -> Router {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/nodes", get(nodes))
        .route("/nodes/{id}", get(node).delete(remove_node))
        .route("/nodes/{id}/update", post(update_node))
        .route("/services", get(services::list))
        .route("/services/create", post(services::create))
        .route("/services/{id}", get(services::inspect).delete(services::remove))
        .route("/services/{id}/update", post(services::update))
        .route("/services/{id}/logs", get(super::logs::docker_service_logs))
        .route("/tasks", get(services::tasks))
        .route("/tasks/{id}", get(services::task))
        .route("/distribution/{*image}", get(distribution))
        .fallback(unsupported)
        .with_state(state)
}

/// Drops a `/v1.NN` prefix so every API version reaches the same routes (applied before routing).
pub fn strip_version_prefix(mut req: Request) -> Request {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v1.")
        && let Some(slash) = rest.find('/')
        && rest[..slash].chars().all(|c| c.is_ascii_digit())
    {
        let new_path = rest[slash..].to_string();
        let pq = match req.uri().query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

async fn unsupported(req: Request) -> Response {
    let e =
        Error::NotFound(format!("page not found: Shoal does not serve {} {} (yet)", req.method(), req.uri().path()));
    docker_error(&e)
}

async fn ping() -> Response {
    let mut r = "OK".into_response();
    let h = r.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Swarm", HeaderValue::from_static("active/manager"));
    h.insert("Cache-Control", HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    r
}

async fn version() -> Response {
    axum::Json(json!({
        "Platform": {"Name": "Shoal"},
        "Components": [{"Name": "Shoal", "Version": env!("CARGO_PKG_VERSION"), "Details": {"ApiVersion": API_VERSION}}],
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.24",
        "Os": "linux",
        "Arch": "amd64",
        "GitCommit": "",
        "GoVersion": "",
        "KernelVersion": "",
    }))
    .into_response()
}

fn node_json(row: &NodeRow, version: u64) -> Value {
    let addr = row.address.rsplit_once(':').map_or(row.address.as_str(), |(ip, _)| ip);
    let mut v = json!({
        "ID": row.id,
        "Version": {"Index": version},
        "Spec": {
            "Labels": row.labels,
            "Role": row.role.as_str(),
            "Availability": match row.availability {
                shoal_model::Availability::Active => "active",
                shoal_model::Availability::Pause => "pause",
                shoal_model::Availability::Drain => "drain",
            },
        },
        "Description": {
            "Hostname": row.name,
            "Platform": {"Architecture": std::env::consts::ARCH, "OS": "linux"},
            "Resources": {"NanoCPUs": u64::from(row.resources.cpus) * 1_000_000_000, "MemoryBytes": row.resources.memory_bytes},
            "Engine": {"EngineVersion": row.resources.engine_version},
        },
        "Status": {"State": row.status.to_lowercase(), "Addr": addr},
    });
    if row.role == Role::Manager && !row.manager_status.is_empty() {
        v["ManagerStatus"] = json!({
            "Leader": row.manager_status == "Leader",
            "Reachability": if row.manager_status == "Unreachable" { "unreachable" } else { "reachable" },
            "Addr": row.address,
        });
    }
    v
}

async fn rows(m: &Manager) -> Result<(Vec<NodeRow>, HashMap<String, u64>), Error> {
    let rows = m.nodes().await?;
    let versions = m.view().read(|s| s.nodes.values().map(|n| (format!("{:016x}", n.id), n.modify_index)).collect());
    Ok((rows, versions))
}

async fn nodes(State(m): State<Arc<Manager>>) -> Response {
    match rows(&m).await {
        Ok((rows, versions)) => {
            axum::Json(rows.iter().map(|r| node_json(r, versions.get(&r.id).copied().unwrap_or(0))).collect::<Vec<_>>())
                .into_response()
        }
        Err(e) => docker_error(&e),
    }
}

fn not_found_node(e: Error, id: &str) -> Error {
    match e {
        Error::NotFound(_) => Error::NotFound(format!("node {id} not found")),
        other => other,
    }
}

async fn node(State(m): State<Arc<Manager>>, Path(id): Path<String>) -> Response {
    let (rows, versions) = match rows(&m).await {
        Ok(r) => r,
        Err(e) => return docker_error(&e),
    };
    match shoal_registry::cluster::nodes::resolve_node(&rows, &id) {
        Ok(row) => axum::Json(node_json(row, versions.get(&row.id).copied().unwrap_or(0))).into_response(),
        Err(e) => docker_error(&not_found_node(e, &id)),
    }
}

/// `POST /nodes/{id}/update?version=N` with a `NodeSpec`: availability and labels as given (labels
/// are replaced as a whole), a role change promotes or demotes.
async fn update_node(
    State(m): State<Arc<Manager>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let spec: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return docker_error(&Error::BadRequest(format!("the body is not a JSON node spec: {e}"))),
    };
    let Some(version) = q.get("version").and_then(|v| v.parse::<u64>().ok()) else {
        return docker_error(&Error::BadRequest("a node update needs ?version=N".into()));
    };
    let (rows, versions) = match rows(&m).await {
        Ok(r) => r,
        Err(e) => return docker_error(&e),
    };
    let row = match shoal_registry::cluster::nodes::resolve_node(&rows, &id) {
        Ok(r) => r.clone(),
        Err(e) => return docker_error(&not_found_node(e, &id)),
    };
    let current = versions.get(&row.id).copied().unwrap_or(0);
    if current != version {
        return docker_error(&Error::Conflict(format!(
            "update out of sequence: node {} is at version {current}, the update was made from version {version}",
            row.name
        )));
    }
    let labels: BTreeMap<String, String> = match &spec["Labels"] {
        Value::Null => row.labels.clone(),
        v => match serde_json::from_value(v.clone()) {
            Ok(l) => l,
            Err(e) => return docker_error(&Error::BadRequest(format!("Labels: {e}"))),
        },
    };
    let update = NodeUpdateSpec {
        availability: spec["Availability"].as_str().map(str::to_string),
        label_rm: row.labels.keys().filter(|k| !labels.contains_key(*k)).cloned().collect(),
        label_add: labels,
    };
    if let Err(e) = m.update_node(&row.id, update).await {
        return docker_error(&e);
    }
    let result = match spec["Role"].as_str() {
        Some("manager") if row.role == Role::Worker => m.promote_node(&row.id).await.map(|_| ()),
        Some("worker") if row.role == Role::Manager => m.demote_node(&row.id).await.map(|_| ()),
        Some("manager" | "worker") | None => Ok(()),
        Some(other) => Err(Error::BadRequest(format!("invalid role {other:?}: use manager or worker"))),
    };
    match result {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => docker_error(&e),
    }
}

async fn remove_node(
    State(m): State<Arc<Manager>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let force = q.get("force").is_some_and(|v| v == "true" || v == "1");
    match m.remove_node(&id, force).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => docker_error(&not_found_node(e, &id)),
    }
}

async fn info(State(m): State<Arc<Manager>>) -> Response {
    let rows = m.nodes().await.unwrap_or_default();
    let managers: Vec<&NodeRow> = rows.iter().filter(|r| r.role == Role::Manager).collect();
    let cluster_id = m.view().read(|s| s.cluster.as_ref().map(|c| c.cluster_id.clone()).unwrap_or_default());
    let me = format!("{:016x}", m.id);
    let ip = m.node.cluster_addr.rsplit_once(':').map_or(m.node.cluster_addr.as_str(), |(ip, _)| ip).to_string();
    let res = shoal_registry::host::resources();
    axum::Json(json!({
        "ID": me,
        "Name": m.node.name,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "OperatingSystem": "Shoal",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": res.cpus,
        "MemTotal": res.memory_bytes,
        "Containers": 0,
        "Images": 0,
        "Swarm": {
            "NodeID": me,
            "NodeAddr": ip,
            "LocalNodeState": "active",
            "ControlAvailable": true,
            "Error": "",
            "RemoteManagers": managers.iter().map(|r| json!({"NodeID": r.id, "Addr": r.address})).collect::<Vec<_>>(),
            "Nodes": rows.len(),
            "Managers": managers.len(),
            "Cluster": {"ID": cluster_id, "Version": {"Index": m.view().read(|s| s.index())}, "Spec": {"Name": "default"}},
        },
    }))
    .into_response()
}

/// Image digests come from a registry; there is none here. The CLI warns and goes on.
async fn distribution(Path(image): Path<String>) -> Response {
    docker_error(&Error::NotFound(format!("no registry to resolve {image}: Shoal uses the image name as given")))
}

/// Serves the Docker API on `listener` until the process ends: plain HTTP on loopback, mutual TLS
/// (client certificates from the cluster CA, as `docker --tlsverify` presents them) otherwise.
pub async fn serve(state: crate::ApiState, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::ServiceExt;
    let exposed = listener.local_addr().is_ok_and(|a| !a.ip().is_loopback());
    let tls = if exposed { Some(state.manager.api_tls_config().map_err(std::io::Error::other)?) } else { None };
    let app = axum::middleware::map_request(|req: Request| async move { strip_version_prefix(req) });
    let app = tower::Layer::layer(&app, router(state));
    match tls {
        None => axum::serve(listener, ServiceExt::<Request>::into_make_service(app)).await,
        Some(config) => {
            let listener = shoal_registry::pki::listener::TlsListener::new(listener, config);
            axum::serve(listener, ServiceExt::<Request>::into_make_service(app)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes_are_stripped() {
        let cases = [
            ("/v1.41/services?status=true", "/services?status=true"),
            ("/v1.50/nodes", "/nodes"),
            ("/nodes", "/nodes"),
            ("/v1.x/nodes", "/v1.x/nodes"),
            ("/v2.1/nodes", "/v2.1/nodes"),
        ];
        for (from, to) in cases {
            let req = Request::builder().uri(from).body(axum::body::Body::empty()).unwrap();
            assert_eq!(strip_version_prefix(req).uri().to_string(), to, "{from}");
        }
    }
}
