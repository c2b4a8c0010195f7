//! The HTTP API (port 8500): Shoal's own endpoints and the Consul-compatible subset.
//!
//! Every read answers with `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact`,
//! errors included, because Consul clients parse them on every response.

pub mod docker;
mod kv;
pub mod logs;
pub mod query;
pub mod services;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::Error;
use crate::kv::MAX_VALUE_BYTES;
use crate::manager::Manager;

/// Builds the API router for `manager`.
pub fn router(manager: Arc<Manager>) -> Router {
    Router::new()
        .route("/v1/kv", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/kv/", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/kv/{*key}", get(kv::get_key).put(kv::put_key).delete(kv::delete_key))
        .route("/v1/status/leader", get(status::leader))
        .route("/v1/status/peers", get(status::peers))
        .route("/v1/agent/self", get(status::agent_self))
        .route("/v1/agent/raft", get(status::raft))
        .route("/v1/agent/members", get(status::members))
        .route("/v1/nodes", get(status::nodes))
        .route("/v1/nodes/{node}", get(status::inspect_node).delete(status::remove_node))
        .route("/v1/nodes/{node}/update", axum::routing::post(status::update_node))
        .route("/v1/nodes/{node}/promote", axum::routing::post(status::promote_node))
        .route("/v1/nodes/{node}/demote", axum::routing::post(status::demote_node))
        .route("/v1/services", get(services::list))
        .route("/v1/services/create", axum::routing::post(services::create))
        .route("/v1/services/{id}", get(services::inspect).delete(services::remove))
        .route("/v1/services/{id}/update", axum::routing::post(services::update))
        .route("/v1/services/{id}/logs", get(logs::shoal_service_logs))
        .route("/v1/agent/task-logs/{task}", get(agent_task_logs))
        .route("/v1/tasks", get(services::tasks))
        .route("/v1/cluster/client-cert", axum::routing::post(status::client_cert))
        .route("/v1/cluster/join-token/{role}", get(status::join_token).post(status::rotate_token))
        // The body limit is above the value limit so an oversized value gets our own 413 message.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_VALUE_BYTES * 2))
        .with_state(manager)
}

/// Serves the API on `listener` until the process ends. With `token`, every request must carry it
/// (`X-Consul-Token`, `Authorization: Bearer`, or `?token=`); others get 403 and no data.
pub async fn serve(
    manager: Arc<Manager>,
    listener: tokio::net::TcpListener,
    token: Option<String>,
) -> std::io::Result<()> {
    let app = guarded_router(manager, token);
    axum::serve(listener, app).await
}

/// Serves the API over mutual TLS on `listener` (`--http-tls`): only clients presenting a
/// certificate from the cluster CA get through the handshake; the token, if any, is checked too.
pub async fn serve_tls(
    manager: Arc<Manager>,
    listener: tokio::net::TcpListener,
    token: Option<String>,
) -> std::io::Result<()> {
    let config = manager.cert.api_server_config().map_err(std::io::Error::other)?;
    let listener = crate::listener::TlsListener::new(listener, config);
    let app = guarded_router(manager, token);
    axum::serve(listener, app.into_make_service_with_connect_info::<crate::listener::Peer>()).await
}

/// The API router, behind the token check when a token is set.
fn guarded_router(manager: Arc<Manager>, token: Option<String>) -> Router {
    match token {
        None => router(manager),
        Some(token) => {
            router(manager).layer(axum::middleware::from_fn(move |req, next| require_token(token.clone(), req, next)))
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
    axum::extract::State(m): axum::extract::State<Arc<Manager>>,
    axum::extract::Path(task): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<logs::LogQuery>,
) -> axum::response::Response {
    logs::local(&m.log_source, &task, &q).await
}
