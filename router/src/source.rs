//! Where a router's data comes from: a node's HTTP API, through blocking reads. A trait, so the
//! runner is tested against a scripted source.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use shoal_api::client::{ApiClient, ClientError};
use shoal_api::edge::EdgeSnapshot;

/// Why a read failed (the runner keeps its last copy and retries).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

impl From<ClientError> for SourceError {
    fn from(e: ClientError) -> Self {
        SourceError(e.to_string())
    }
}

/// The reads a router makes.
#[async_trait]
pub trait Source: Send + Sync {
    /// The catalog and service labels, once they changed after `index` (or `wait` passed).
    async fn snapshot(&self, index: u64, wait: Duration) -> Result<EdgeSnapshot, SourceError>;
    /// The KV store's index, once it moved past `index` (or `wait` passed).
    async fn kv_index(&self, index: u64, wait: Duration) -> Result<u64, SourceError>;
    /// One key's value (`None`: no such key).
    async fn kv_get(&self, key: &str) -> Result<Option<String>, SourceError>;
    /// Every (key, value) under `prefix`, in key order.
    async fn kv_tree(&self, prefix: &str) -> Result<Vec<(String, String)>, SourceError>;
}

/// A node's HTTP API.
pub struct ApiSource {
    client: ApiClient,
}

impl ApiSource {
    /// Reads through `client` (made with no overall timeout: blocking reads last `wait`).
    pub fn new(client: ApiClient) -> Self {
        Self { client }
    }
}

#[derive(serde::Deserialize)]
struct KvEntry {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value")]
    value: Option<String>,
}

fn decode(v: Option<String>) -> String {
    v.and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[async_trait]
impl Source for ApiSource {
    async fn snapshot(&self, index: u64, wait: Duration) -> Result<EdgeSnapshot, SourceError> {
        let path = format!("/v1/catalog/snapshot?index={index}&wait={}ms", wait.as_millis());
        let (snap, _) = self.client.get_json_at::<EdgeSnapshot>(&path).await?;
        Ok(snap)
    }

    async fn kv_index(&self, index: u64, wait: Duration) -> Result<u64, SourceError> {
        // The root's key list: it answers (an empty store: 404) once any key changed.
        let path = format!("/v1/kv/?keys&index={index}&wait={}ms", wait.as_millis());
        let resp = self.client.request(reqwest::Method::GET, &path, None).await?;
        let status = resp.status();
        if !status.is_success() && status != reqwest::StatusCode::NOT_FOUND {
            return Err(SourceError(format!("GET {path}: the API answered {status}")));
        }
        let at = resp.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        Ok(at)
    }

    async fn kv_get(&self, key: &str) -> Result<Option<String>, SourceError> {
        let path = format!("/v1/kv/{}", shoal_api::client::encode_key(key));
        let entries: Option<Vec<KvEntry>> = self.client.get_json(&path).await?;
        Ok(entries.and_then(|e| e.into_iter().find(|e| e.key == key)).map(|e| decode(e.value)))
    }

    async fn kv_tree(&self, prefix: &str) -> Result<Vec<(String, String)>, SourceError> {
        let path = format!("/v1/kv/{}?recurse", shoal_api::client::encode_key(prefix));
        let entries: Option<Vec<KvEntry>> = self.client.get_json(&path).await?;
        let mut out: Vec<(String, String)> =
            entries.unwrap_or_default().into_iter().map(|e| (e.key, decode(e.value))).collect();
        out.sort();
        Ok(out)
    }
}
