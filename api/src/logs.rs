//! Service logs: a manager gathers the log lines of a service's tasks from the nodes that run
//! them, each node reading its own containers through its runtime.
//!
//! ```text
//! shoal service logs web ─▶ manager /v1/services/web/logs ─┬─▶ local runtime (its own tasks)
//! docker service logs web ─▶ manager /services/web/logs ───┴─▶ node's /v1/agent/task-logs/TASK (HTTP API)
//!                                    lines, prefixed with task and node, merged as they come
//! ```
//! The registry does not know the runtime: the node plugs it in through `TaskLogs`. A manager
//! reaches another node's HTTP API as the CLI does, with its own `--http-token` when one is set;
//! when that API speaks TLS (`--http-tls`), it presents its node certificate, which the cluster
//! CA signed. A node it cannot reach gets a line saying so in the stream.

use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;

use shoal_model::NodeId;
use shoal_registry::Error;
use shoal_registry::cluster::manager::Manager;
use shoal_registry::control::logs::{Lines, LogSource};

use crate::client::{ApiClient, ClientError, ClientOptions};
use shoal_registry::control::services::resolve;

/// Query of both log routes (Docker's names).
#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    /// Keep streaming new lines.
    #[serde(default, deserialize_with = "flag")]
    pub follow: bool,
    /// `all` or a number of lines per task.
    #[serde(default)]
    pub tail: Option<String>,
}

fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = String::deserialize(d)?;
    Ok(matches!(s.as_str(), "1" | "true" | "yes"))
}

impl LogQuery {
    fn tail(&self) -> Result<Option<u64>, Error> {
        match self.tail.as_deref() {
            None | Some("") | Some("all") => Ok(None),
            Some(n) => n
                .parse()
                .map(Some)
                .map_err(|_| Error::BadRequest(format!("tail must be a number of lines or `all`, got {n:?}"))),
        }
    }
}

/// `GET /v1/agent/task-logs/{task}`: this node's container log of a task, one line per line,
/// each starting with `o ` (stdout) or `e ` (stderr).
pub async fn local(source: &LogSource, task: &str, q: &LogQuery) -> Response {
    let tail = match q.tail() {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match source.logs(task, q.follow, tail).await {
        Ok(lines) => {
            let body = lines.map(|(stream, line)| {
                let tag = if stream == "stderr" { 'e' } else { 'o' };
                Ok::<_, std::convert::Infallible>(Bytes::from(format!("{tag} {line}\n")))
            });
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(body)).into_response()
        }
        Err(e) => (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    }
}

/// One line of a service's log, with where it comes from.
#[derive(Debug, Clone)]
pub struct ServiceLine {
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The line.
    pub line: String,
    /// Task, service and node IDs.
    pub task_id: String,
    /// The service's ID.
    pub service_id: String,
    /// The node's ID (16 hex digits).
    pub node_id: String,
    /// `SERVICE.SLOT` (as Docker prints a task).
    pub task_name: String,
    /// The node's name.
    pub node_name: String,
}

struct Source {
    task_id: String,
    node: NodeId,
    node_name: String,
    http_addr: String,
    task_name: String,
}

/// The merged log stream of a service's tasks (those that have had a container): this node's own
/// from `source`, the others' from their nodes' HTTP APIs.
pub async fn service_logs(
    m: &Arc<Manager>,
    source: &LogSource,
    service: &str,
    follow: bool,
    tail: Option<u64>,
) -> Result<Pin<Box<dyn Stream<Item = ServiceLine> + Send>>, Error> {
    m.linearize().await?;
    let (service_id, sources) = m.view().read(|s| {
        let svc = resolve(s.services.services.values(), service)?;
        let mut tasks: Vec<_> =
            s.services.tasks.values().filter(|t| t.service_id == svc.id && t.status.container_id.is_some()).collect();
        tasks.sort_by_key(|t| (t.slot, t.create_index));
        let sources: Vec<Source> = tasks
            .into_iter()
            .filter_map(|t| {
                let node = s.nodes.get(&t.node_id?)?;
                Some(Source {
                    task_id: t.id.clone(),
                    node: node.id,
                    node_name: node.name.clone(),
                    http_addr: node.http_addr.clone(),
                    task_name: if t.slot > 0 { format!("{}.{}", svc.name, t.slot) } else { svc.name.clone() },
                })
            })
            .collect();
        Ok::<_, Error>((svc.id.clone(), sources))
    })?;
    let mut streams = Vec::new();
    for src in sources {
        let lines: Lines = if src.node == m.id {
            match source.logs(&src.task_id, follow, tail).await {
                Ok(l) => l,
                Err(e) => Box::pin(futures::stream::iter([("stderr", format!("(no log: {e})"))])),
            }
        } else {
            let tls = m.cluster_client_tls().ok();
            remote_lines(source.token(), tls, &src.http_addr, &src.task_id, follow, tail).await
        };
        let service_id = service_id.clone();
        streams.push(
            lines
                .map(move |(stream, line)| ServiceLine {
                    stream,
                    line,
                    task_id: src.task_id.clone(),
                    service_id: service_id.clone(),
                    node_id: format!("{:016x}", src.node),
                    task_name: src.task_name.clone(),
                    node_name: src.node_name.clone(),
                })
                .boxed(),
        );
    }
    Ok(Box::pin(futures::stream::select_all(streams)))
}

/// Asks a node's API for a task's log: plain HTTP first, then HTTPS with this manager's node
/// certificate (the cluster CA's, which an API with `--http-tls` accepts).
async fn remote_lines(
    token: Option<String>,
    tls: Option<rustls::ClientConfig>,
    http_addr: &str,
    task: &str,
    follow: bool,
    tail: Option<u64>,
) -> Lines {
    let tail = tail.map_or_else(|| "all".to_string(), |n| n.to_string());
    let path = format!("/v1/agent/task-logs/{task}?follow={follow}&tail={tail}");
    let get = |tls: Option<rustls::ClientConfig>| {
        let options = ClientOptions { timeout: None, tls, token: token.clone() };
        let path = path.clone();
        async move { ApiClient::with_options(http_addr, options)?.stream(&path).await }
    };
    let answer = match get(None).await {
        // Connected, but the answer was no HTTP: the API speaks TLS.
        Err(ClientError::Transport { .. }) if tls.is_some() => get(tls).await,
        other => other,
    };
    let resp = match answer {
        Ok(r) => r,
        Err(e) => {
            return Box::pin(futures::stream::iter([("stderr", format!("(no log from {http_addr}: {e})"))]));
        }
    };
    // Bytes arrive in any chunking: split them into lines.
    let stream = futures::stream::unfold((resp.bytes_stream(), Vec::<u8>::new()), |(mut body, mut buf)| async move {
        loop {
            if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
                let (stream, rest) = match text.split_once(' ') {
                    Some(("e", rest)) => ("stderr", rest.to_string()),
                    Some((_, rest)) => ("stdout", rest.to_string()),
                    None => ("stdout", String::new()),
                };
                return Some(((stream, rest), (body, buf)));
            }
            match body.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    });
    Box::pin(stream)
}

/// `GET /v1/services/{id}/logs?follow&tail`: plain lines, `web.1.TASK@node | line`.
pub async fn shoal_service_logs(
    State(m): State<Arc<Manager>>,
    State(source): State<Arc<LogSource>>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let tail = match q.tail() {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match service_logs(&m, &source, &id, q.follow, tail).await {
        Ok(lines) => {
            let body = lines.map(|l| {
                let short: String = l.task_id.chars().take(12).collect();
                Ok::<_, std::convert::Infallible>(Bytes::from(format!(
                    "{}.{short}@{}    | {}\n",
                    l.task_name, l.node_name, l.line
                )))
            });
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(body)).into_response()
        }
        Err(e) => {
            (StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), format!("{e}\n"))
                .into_response()
        }
    }
}

/// Docker's multiplexed stream frame: stream type (1 stdout, 2 stderr), three zero bytes, the
/// length (big endian), the payload.
fn frame(stream: &str, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.push(if stream == "stderr" { 2 } else { 1 });
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// `GET /services/{id}/logs` (Docker Engine API): a multiplexed stream; with `details=true`
/// (the CLI always asks) each line starts with the `com.docker.swarm.*` IDs the CLI resolves to
/// `web.1.TASK@node`.
pub async fn docker_service_logs(
    State(m): State<Arc<Manager>>,
    State(source): State<Arc<LogSource>>,
    Path(id): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let yes = |k: &str| q.get(k).is_some_and(|v| matches!(v.as_str(), "1" | "true"));
    let query = LogQuery { follow: yes("follow"), tail: q.get("tail").cloned() };
    let tail = match query.tail() {
        Ok(t) => t,
        Err(e) => return crate::docker::services::docker_error(&e),
    };
    let details = yes("details");
    let (stdout, stderr) = (yes("stdout"), yes("stderr"));
    match service_logs(&m, &source, &id, query.follow, tail).await {
        Ok(lines) => {
            let body = lines
                .filter(move |l| futures::future::ready(if l.stream == "stderr" { stderr } else { stdout }))
                .map(move |l| {
                    let text = if details {
                        format!(
                            "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={} {}\n",
                            l.node_id, l.service_id, l.task_id, l.line
                        )
                    } else {
                        format!("{}\n", l.line)
                    };
                    Ok::<_, std::convert::Infallible>(frame(l.stream, text.as_bytes()))
                });
            ([(header::CONTENT_TYPE, "application/vnd.docker.multiplexed-stream")], Body::from_stream(body))
                .into_response()
        }
        Err(e) => crate::docker::services::docker_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_dockers_multiplexed_format() {
        assert_eq!(&frame("stdout", b"hi\n")[..], &[1, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n']);
        assert_eq!(frame("stderr", b"x")[0], 2);
    }

    #[test]
    fn tail_is_a_number_or_all() {
        let q = |t: &str| LogQuery { follow: false, tail: Some(t.into()) }.tail();
        assert_eq!(q("all").unwrap(), None);
        assert_eq!(q("7").unwrap(), Some(7));
        assert!(q("seven").unwrap_err().to_string().contains("number of lines or `all`"));
    }
}
