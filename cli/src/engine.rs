//! Asks the local Docker engine for its version once at start, for the node table's engine version
//! (`docker node ls` shows it). A plain HTTP/1.0 request on the engine's unix socket: the agent's
//! Docker runtime (bollard, behind the runtime trait) arrives with the agent and will take this over.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The engine's version, or `None` when no engine answers within a second.
pub async fn version() -> Option<String> {
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| "/var/run/docker.sock".into());
    let probe = async {
        let mut stream = tokio::net::UnixStream::connect(&socket).await.ok()?;
        stream.write_all(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n").await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let body = answer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| &answer[i + 4..])?;
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v["Version"].as_str().map(str::to_string)
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten()
}
