//! A raw KV client for tests: it reports exactly what the API said, including the X-Consul-* headers.

use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde::Deserialize;
use shoal_api::client::{ApiClient, ClientOptions};

/// A KV entry as the API returns it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct KvPair {
    pub key: String,
    pub value: Option<String>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
}

impl KvPair {
    /// The decoded value.
    pub fn bytes(&self) -> Vec<u8> {
        self.value
            .as_ref()
            .map(|v| base64::engine::general_purpose::STANDARD.decode(v).expect("base64"))
            .unwrap_or_default()
    }
}

/// What went wrong with a KV call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The API answered with an error status.
    Status(u16, String),
    /// No answer (connection refused, timeout, ...): a write may or may not have been applied.
    Transport(String),
}

/// A KV client on one node.
#[derive(Clone)]
pub struct KvClient {
    api: ApiClient,
}

/// A GET's answer with its headers.
#[derive(Debug, Clone)]
pub struct Read {
    /// HTTP status.
    pub status: u16,
    /// `X-Consul-Index`.
    pub index: u64,
    /// `X-Consul-KnownLeader`.
    pub known_leader: Option<String>,
    /// `X-Consul-LastContact`.
    pub last_contact: Option<u64>,
    /// The entries (empty on 404).
    pub pairs: Vec<KvPair>,
}

impl KvClient {
    /// A client for `addr` (`IP:PORT`) with a 10 s timeout.
    pub fn new(addr: &str) -> Self {
        Self::with_timeout(addr, Duration::from_secs(10))
    }

    /// A client with its own request timeout.
    pub fn with_timeout(addr: &str, timeout: Duration) -> Self {
        crate::install_crypto_provider();
        let options = ClientOptions { timeout: Some(timeout), ..ClientOptions::default() };
        Self { api: ApiClient::with_options(addr, options).expect("client") }
    }

    /// PUT; `Ok(true|false)` as the API said.
    pub async fn put(&self, key: &str, value: &[u8], query: &str) -> Result<bool, KvError> {
        self.write(Method::PUT, &format!("/v1/kv/{key}?{query}"), Some(value.to_vec())).await
    }

    /// DELETE with `query`.
    pub async fn delete(&self, key: &str, query: &str) -> Result<bool, KvError> {
        self.write(Method::DELETE, &format!("/v1/kv/{key}?{query}"), None).await
    }

    /// Sends a KV write and decodes Consul's `true`/`false` answer.
    async fn write(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<bool, KvError> {
        let r = self.api.request(method, path, body).await.map_err(|e| KvError::Transport(e.to_string()))?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|e| KvError::Transport(e.to_string()))?;
        if status != 200 {
            return Err(KvError::Status(status, text.trim().to_string()));
        }
        serde_json::from_str(&text).map_err(|e| KvError::Transport(format!("bad body {text:?}: {e}")))
    }

    /// GET with `query`; a 404 is a `Read` with no pairs.
    pub async fn read(&self, key: &str, query: &str) -> Result<Read, KvError> {
        let r = self
            .api
            .request(Method::GET, &format!("/v1/kv/{key}?{query}"), None)
            .await
            .map_err(|e| KvError::Transport(e.to_string()))?;
        let status = r.status().as_u16();
        let h = r.headers().clone();
        let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let index = header("X-Consul-Index").and_then(|v| v.parse().ok()).unwrap_or(0);
        let text = r.text().await.map_err(|e| KvError::Transport(e.to_string()))?;
        let pairs = match status {
            200 => serde_json::from_str(&text).map_err(|e| KvError::Transport(format!("bad body {text:?}: {e}")))?,
            404 => Vec::new(),
            s => return Err(KvError::Status(s, text.trim().to_string())),
        };
        Ok(Read {
            status,
            index,
            known_leader: header("X-Consul-KnownLeader"),
            last_contact: header("X-Consul-LastContact").and_then(|v| v.parse().ok()),
            pairs,
        })
    }

    /// The value of `key` (`None` if missing), read with `query`.
    pub async fn get(&self, key: &str, query: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.read(key, query).await?.pairs.first().map(KvPair::bytes))
    }
}
