//! A small Docker Engine API client: hyper's HTTP/1.1 client connection over the engine's unix
//! socket, or over TCP to a Shoal manager's Docker API. The two speak the same API, so
//! `swarm-compare` drives Swarm and Shoal with the same calls and only the transport differs.
//!
//! A [`Conn`] is one HTTP/1.1 connection (keep-alive, requests in sequence); [`Engine::call`] opens
//! a fresh one for a single request. The floor opens one connection per container, so the
//! engine sees the same parallelism as N clients would give it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};

/// The API version both the engine on these machines and Shoal speak.
const API_PREFIX: &str = "/v1.41";
/// Bound on one request, so no loop of the bench can hang on a stuck peer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the API listens.
#[derive(Clone, Debug)]
pub enum Transport {
    /// The engine's own socket, e.g. `/var/run/docker.sock`.
    Unix(PathBuf),
    /// A Shoal manager's Docker API, e.g. `127.77.0.1:2375`.
    Tcp(SocketAddr),
}

/// A Docker Engine API endpoint.
#[derive(Clone, Debug)]
pub struct Engine {
    transport: Transport,
}

/// One HTTP/1.1 connection to an [`Engine`].
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

/// A whole answer: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Fails unless the status is 2xx (or one of `also`), with the engine's `message` in the error.
    pub fn expect(self, what: &str, also: &[StatusCode]) -> Result<Reply> {
        if self.status.is_success() || also.contains(&self.status) {
            return Ok(self);
        }
        let msg = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        bail!("{what}: {} {}", self.status, msg.trim())
    }
}

impl Engine {
    /// An endpoint on `transport`.
    pub fn new(transport: Transport) -> Engine {
        Engine { transport }
    }

    /// Opens a connection.
    pub async fn connect(&self) -> Result<Conn> {
        let fut = async {
            match &self.transport {
                Transport::Unix(path) => {
                    let s = tokio::net::UnixStream::connect(path)
                        .await
                        .with_context(|| format!("connect to {}", path.display()))?;
                    Ok::<_, anyhow::Error>(Conn { sender: handshake(s).await?, host: "docker".into() })
                }
                Transport::Tcp(addr) => {
                    let s = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect to {addr}"))?;
                    s.set_nodelay(true)?;
                    Ok(Conn { sender: handshake(s).await?, host: addr.to_string() })
                }
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut).await.context("connect timed out")?
    }

    /// One request on a fresh connection.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        self.connect().await?.call(method, path, body).await
    }

    /// The IDs of containers carrying `label` (`key=value`): running ones, or in any state.
    pub async fn containers(&self, label: &str, running_only: bool) -> Result<Vec<String>> {
        let mut filters = json!({"label": [label]});
        if running_only {
            filters["status"] = json!(["running"]);
        }
        let path = format!("/containers/json?all=1&filters={}", encode(&filters.to_string()));
        let list = self.call(Method::GET, &path, None).await?.expect("list containers", &[])?.json()?;
        Ok(list
            .as_array()
            .context("container list is not an array")?
            .iter()
            .filter_map(|c| c["Id"].as_str().map(str::to_string))
            .collect())
    }

    /// `GET /info`'s `Swarm.LocalNodeState` (`inactive`, `active`, `pending`, ...).
    pub async fn swarm_state(&self) -> Result<String> {
        let info = self.call(Method::GET, "/info", None).await?.expect("info", &[])?.json()?;
        Ok(info["Swarm"]["LocalNodeState"].as_str().unwrap_or("inactive").to_string())
    }
}

impl Conn {
    /// One request on this connection; the body, if any, is sent as JSON.
    pub async fn call(&mut self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        let bytes = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let mut req =
            Request::builder().method(method.clone()).uri(format!("{API_PREFIX}{path}")).header("Host", &self.host);
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req.body(Full::new(bytes))?;
        let fut = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Reply { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .with_context(|| format!("{method} {path} timed out"))?
            .with_context(|| format!("{method} {path}"))
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_filters() {
        let cases = [
            ("plain", "abc-1_2.3~", "abc-1_2.3~"),
            ("json", r#"{"label":["a=b"]}"#, "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D"),
            ("space", "a b", "a%20b"),
        ];
        for (name, input, want) in cases {
            assert_eq!(encode(input), want, "{name}");
        }
    }
}
