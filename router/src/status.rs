//! `shoal router --status ADDR`: the router's state over HTTP. `GET /v1/router/status` is the
//! JSON of [`RouterStatus`] (every template: renders, installs, reloads, the last error);
//! `GET /health` answers 200 while every template's last pass succeeded, else 503 with the errors,
//! so an orchestrator or a monitor sees a broken template at once.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::runner::RouterStatus;

/// Serves the status on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, status: Arc<Mutex<RouterStatus>>) -> std::io::Result<()> {
    let s1 = status.clone();
    let app = Router::new()
        .route(
            "/v1/router/status",
            get(move || {
                let s = s1.lock().expect("status").clone();
                async move { axum::Json(s) }
            }),
        )
        .route(
            "/health",
            get(move || {
                let s = status.lock().expect("status").clone();
                async move {
                    if s.healthy() {
                        (StatusCode::OK, "ok\n".to_string()).into_response()
                    } else {
                        let errors: Vec<String> = s
                            .templates
                            .iter()
                            .filter_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.source)))
                            .collect();
                        (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", errors.join("\n"))).into_response()
                    }
                }
            }),
        );
    axum::serve(listener, app).await
}
