//! A small client for the Shoal HTTP API, used by the CLI commands.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, StatusCode};

/// The API of one node.
pub struct ApiClient {
    base: String,
    addr: String,
    http: reqwest::Client,
}

/// A non-2xx answer: status and the server's one-line reason.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            write!(f, "the API answered {}", self.status)
        } else {
            write!(f, "{}", self.message)
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiClient {
    pub fn new(addr: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .context("cannot build the HTTP client")?;
        let addr = addr.trim_start_matches("http://").trim_end_matches('/').to_string();
        Ok(Self { base: format!("http://{addr}"), addr, http })
    }

    /// Sends a request; `Ok(None)` on 404, `Err` on any other failure.
    pub async fn send(&self, method: Method, path_and_query: &str, body: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path_and_query));
        if let Ok(token) = std::env::var("SHOAL_HTTP_TOKEN")
            && !token.is_empty()
        {
            req = req.header("X-Consul-Token", token);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "cannot reach the Shoal API at {}: is `shoal agent` running there? (set --http-addr or SHOAL_HTTP_ADDR)",
                    self.addr
                )
            } else if e.is_timeout() {
                anyhow!("the Shoal API at {} did not answer in time", self.addr)
            } else {
                anyhow!("request to the Shoal API at {} failed: {e}", self.addr)
            }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the answer")?.to_vec();
        if status == StatusCode::NOT_FOUND && bytes.is_empty() {
            return Ok(None);
        }
        if !status.is_success() {
            let message = String::from_utf8_lossy(&bytes).trim().to_string();
            bail!(ApiError { status, message });
        }
        Ok(Some(bytes))
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        match self.send(Method::GET, path, None).await? {
            None => Ok(None),
            Some(b) => {
                Ok(Some(serde_json::from_slice(&b).with_context(|| format!("unexpected answer to GET {path}"))?))
            }
        }
    }
}

/// Percent-encodes a KV key for a URL path, keeping `/` as the separator.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
