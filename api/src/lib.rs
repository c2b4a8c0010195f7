//! Every HTTP surface of a node: the HTTP API on port 8500 (Shoal's own endpoints and the
//! Consul-compatible subset), the Docker Engine API of the managers (2375/2376), and a worker's
//! small API. Handlers read and write through the registry's public operations only.
//!
//! Every read answers with `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact`,
//! errors included, because Consul clients parse them on every response. See `README.md`.

pub mod client;
pub mod consul;
pub mod docker;
pub mod edge;
pub mod logs;
pub mod nodes;
pub mod query;
pub mod worker;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use shoal_registry::Error;
use shoal_registry::control::logs::LogSource;
use shoal_registry::pki::listener::{Peer, TlsListener};

use shoal_model::kv::MAX_VALUE_BYTES;
use shoal_registry::cluster::manager::Manager;

/// What every handler of a manager's APIs may reach: the manager and this node's log source.
#[derive(Clone)]
pub struct ApiState {
    /// The manager this API runs on.
    pub manager: Arc<Manager>,
    /// This node's container logs.
    pub logs: Arc<LogSource>,
}

impl axum::extract::FromRef<ApiState> for Arc<Manager> {
    fn from_ref(s: &ApiState) -> Self {
        s.manager.clone()
    }
}

impl axum::extract::FromRef<ApiState> for Arc<LogSource> {
    fn from_ref(s: &ApiState) -> Self {
        s.logs.clone()
    }
}

/// Builds the HTTP API router of a manager.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/kv", get(consul::kv::get).put(consul::kv::put).delete(consul::kv::delete))
        .route("/v1/kv/", get(consul::kv::get).put(consul::kv::put).delete(consul::kv::delete))
        .route("/v1/kv/{*key}", get(consul::kv::get_key).put(consul::kv::put_key).delete(consul::kv::delete_key))
        .route("/v1/status/leader", get(consul::status::leader))
        .route("/v1/status/peers", get(consul::status::peers))
        .route("/v1/agent/self", get(consul::status::agent_self))
        .route("/v1/agent/raft", get(consul::status::raft))
        .route("/v1/agent/members", get(consul::status::members))
        .route("/v1/agent/services", get(consul::agent::services))
        .route("/v1/agent/service/register", put(consul::agent::register_service))
        .route("/v1/agent/service/deregister/{id}", put(consul::agent::deregister_service))
        .route("/v1/agent/service/maintenance/{id}", put(consul::agent::service_maintenance))
        .route("/v1/agent/service/{id}", get(consul::agent::service))
        .route("/v1/agent/checks", get(consul::agent::checks))
        .route("/v1/agent/check/register", put(consul::agent::register_check))
        .route("/v1/agent/check/deregister/{id}", put(consul::agent::deregister_check))
        .route("/v1/agent/check/pass/{id}", put(consul::agent::pass))
        .route("/v1/agent/check/warn/{id}", put(consul::agent::warn))
        .route("/v1/agent/check/fail/{id}", put(consul::agent::fail_check))
        .route("/v1/agent/check/update/{id}", put(consul::agent::update))
        .route("/v1/agent/maintenance", put(consul::agent::node_maintenance))
        .route("/v1/catalog/services", get(consul::catalog::services))
        .route("/v1/catalog/service/{name}", get(consul::catalog::service))
        .route("/v1/catalog/nodes", get(consul::catalog::nodes))
        .route("/v1/catalog/node/{node}", get(consul::catalog::node))
        .route("/v1/catalog/datacenters", get(consul::catalog::datacenters))
        .route("/v1/catalog/snapshot", get(edge::snapshot))
        .route("/v1/catalog/register", put(consul::catalog::register))
        .route("/v1/catalog/deregister", put(consul::catalog::deregister))
        .route("/v1/health/service/{name}", get(consul::health::service))
        .route("/v1/health/state/{state}", get(consul::health::state))
        .route("/v1/health/checks/{name}", get(consul::health::checks))
        .route("/v1/health/node/{node}", get(consul::health::node))
        .route("/v1/nodes", get(nodes::nodes))
        .route("/v1/nodes/{node}", get(nodes::inspect_node).delete(nodes::remove_node))
        .route("/v1/nodes/{node}/update", axum::routing::post(nodes::update_node))
        .route("/v1/nodes/{node}/promote", axum::routing::post(nodes::promote_node))
        .route("/v1/nodes/{node}/demote", axum::routing::post(nodes::demote_node))
        .route("/v1/services", get(docker::services::list))
        .route("/v1/services/create", axum::routing::post(docker::services::create))
        .route("/v1/services/{id}", get(docker::services::inspect).delete(docker::services::remove))
        .route("/v1/services/{id}/update", axum::routing::post(docker::services::update))
        .route("/v1/services/{id}/logs", get(logs::shoal_service_logs))
        .route("/v1/agent/task-logs/{task}", get(agent_task_logs))
        .route("/v1/tasks", get(docker::services::tasks))
        .route("/v1/cluster/client-cert", axum::routing::post(nodes::client_cert))
        .route("/v1/cluster/join-token/{role}", get(nodes::join_token).post(nodes::rotate_token))
        // The body limit is above the value limit so an oversized value gets our own 413 message.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_VALUE_BYTES * 2))
        .with_state(state)
}

/// Serves the API on `listener` until the process ends. With `token`, every request must carry it
/// (`X-Consul-Token`, `Authorization: Bearer`, or `?token=`); others get 403 and no data.
pub async fn serve(state: ApiState, listener: tokio::net::TcpListener, token: Option<String>) -> std::io::Result<()> {
    let app = guarded_router(state, token);
    axum::serve(listener, app).await
}

/// Serves the API over mutual TLS on `listener` (`--http-tls`): only clients presenting a
/// certificate from the cluster CA get through the handshake; the token, if any, is checked too.
pub async fn serve_tls(
    state: ApiState,
    listener: tokio::net::TcpListener,
    token: Option<String>,
) -> std::io::Result<()> {
    let config = state.manager.api_tls_config().map_err(std::io::Error::other)?;
    let listener = TlsListener::new(listener, config);
    let app = guarded_router(state, token);
    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>()).await
}

/// The API router, behind the token check when a token is set.
pub(crate) fn guarded_router(state: ApiState, token: Option<String>) -> Router {
    match token {
        None => router(state),
        Some(token) => {
            router(state).layer(axum::middleware::from_fn(move |req, next| require_token(token.clone(), req, next)))
        }
    }
}

/// Whether `req` carries `token`.
fn has_token(req: &axum::extract::Request, token: &str) -> bool {
    let h = req.headers();
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if header("X-Consul-Token") == Some(token) {
        return true;
    }
    if header("Authorization").and_then(|v| v.strip_prefix("Bearer ")) == Some(token) {
        return true;
    }
    let q = query::Query::parse(req.uri().query());
    q.get("token") == Some(token)
}

async fn require_token(token: String, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if has_token(&req, &token) {
        return next.run(req).await;
    }
    tracing::warn!(path = %req.uri().path(), "refused an HTTP API request without a valid token");
    (
        StatusCode::FORBIDDEN,
        "Permission denied: this API needs a token (X-Consul-Token header or SHOAL_HTTP_TOKEN for the CLI)\n",
    )
        .into_response()
}

/// The `X-Consul-*` headers of a read answered at `index`.
pub(crate) fn consul_headers(m: &Manager, index: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("X-Consul-Index", HeaderValue::from(index.max(1)));
    h.insert("X-Consul-KnownLeader", HeaderValue::from_static(if m.known_leader() { "true" } else { "false" }));
    h.insert("X-Consul-LastContact", HeaderValue::from(m.last_contact_ms()));
    h
}

/// An error as a response: its status and a one-line plain-text reason.
pub(crate) fn error_response(e: &Error, headers: Option<HeaderMap>) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, format!("{e}\n")).into_response();
    if let Some(h) = headers {
        resp.headers_mut().extend(h);
    }
    resp
}

async fn agent_task_logs(
    axum::extract::State(source): axum::extract::State<Arc<LogSource>>,
    axum::extract::Path(task): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<logs::LogQuery>,
) -> axum::response::Response {
    logs::local(&source, &task, &q).await
}
