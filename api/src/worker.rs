//! A worker's HTTP API: its own tasks' container logs (for the managers' `service logs`); every
//! other request is refused with a pointer to a manager, since a worker keeps no cluster state.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shoal_registry::control::logs::LogSource;
use shoal_registry::node::worker::Worker;

/// The worker's HTTP API: its own tasks' container logs (for the managers' `service logs`);
/// every other request is refused with a pointer to a manager.
pub fn router(worker: Arc<Worker>, source: Arc<LogSource>) -> Router {
    Router::new()
        .route(
            "/v1/agent/task-logs/{task}",
            axum::routing::get(
                move |axum::extract::Path(task): axum::extract::Path<String>,
                      axum::extract::Query(q): axum::extract::Query<crate::logs::LogQuery>| {
                    let source = source.clone();
                    async move { crate::logs::local(&source, &task, &q).await }
                },
            ),
        )
        .fallback(move || {
            let w = worker.clone();
            async move { refuse(&w) }
        })
}

fn refuse(w: &Worker) -> Response {
    let hint = match w.manager_api() {
        Some(api) => format!("send it to a manager, e.g. --http-addr {api}"),
        None => "send it to a manager's API".into(),
    };
    (StatusCode::FORBIDDEN, format!("this node is a worker and keeps no cluster state: {hint}\n")).into_response()
}

/// Serves a worker's API on `listener` until the process ends; with `tls`, over mutual TLS.
pub async fn serve(
    worker: Arc<Worker>,
    source: Arc<LogSource>,
    listener: tokio::net::TcpListener,
    tls: bool,
) -> std::io::Result<()> {
    let app = router(worker.clone(), source);
    if tls {
        let config = worker.api_tls_config().map_err(std::io::Error::other)?;
        axum::serve(shoal_registry::pki::listener::TlsListener::new(listener, config), app).await
    } else {
        axum::serve(listener, app).await
    }
}
