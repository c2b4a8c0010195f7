//! The client of the cluster port: bincode bodies over HTTP/1.1 keep-alive inside mutual TLS.
//!
//! It distinguishes a request that never left (connection refused: safe to retry) from one whose
//! outcome is unknown (it may have been applied).

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a cluster RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The request was not delivered (connection refused or reset before sending): safe to retry.
    #[error("cannot reach {addr}: {msg}")]
    NotSent {
        /// Target.
        addr: String,
        /// Cause.
        msg: String,
    },
    /// The request may or may not have been processed.
    #[error("no answer from {addr}: {msg}")]
    Unknown {
        /// Target.
        addr: String,
        /// Cause.
        msg: String,
    },
}

/// Client for the cluster RPC.
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
}

impl RpcClient {
    /// A client with pooled keep-alive connections over TLS configured by `tls`.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Self::bound(tls, None)
    }

    /// A client whose connections leave from `local` (the node's own address, as on a real host
    /// with one IP; on a multi-address test host it keeps each node's traffic under its own IP).
    pub fn bound(tls: rustls::ClientConfig, local: Option<std::net::IpAddr>) -> Self {
        crate::pki::tls::install_crypto_provider();
        let local = local.filter(|ip| !ip.is_unspecified());
        let http = reqwest::Client::builder()
            .local_address(local)
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .no_proxy()
            .https_only(true)
            .tls_backend_preconfigured(tls)
            .build()
            .expect("reqwest client");
        Self { http }
    }

    /// Sends `req` and returns the body of a 2xx answer. A connection that was never made is
    /// `NotSent`; anything after that is `Unknown`.
    async fn send(&self, addr: &str, req: reqwest::RequestBuilder) -> Result<bytes::Bytes, RpcError> {
        let resp = req.send().await.map_err(|e| {
            let msg = format!("{e:#}");
            if e.is_connect() {
                RpcError::NotSent { addr: addr.into(), msg }
            } else {
                RpcError::Unknown { addr: addr.into(), msg }
            }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| RpcError::Unknown { addr: addr.into(), msg: e.to_string() })?;
        if !status.is_success() {
            return Err(RpcError::Unknown {
                addr: addr.into(),
                msg: format!("{status}: {}", String::from_utf8_lossy(&bytes)),
            });
        }
        Ok(bytes)
    }

    /// GETs `https://addr/path` and returns the body as text.
    pub async fn get_text(&self, addr: &str, path: &str, timeout: Duration) -> Result<String, RpcError> {
        let bytes = self.send(addr, self.http.get(format!("https://{addr}{path}")).timeout(timeout)).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// POSTs `req` to `https://addr/path` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let body = bincode::serialize(req).map_err(|e| RpcError::NotSent { addr: addr.into(), msg: e.to_string() })?;
        let bytes =
            self.send(addr, self.http.post(format!("https://{addr}{path}")).timeout(timeout).body(body)).await?;
        bincode::deserialize(&bytes)
            .map_err(|e| RpcError::Unknown { addr: addr.into(), msg: format!("bad answer: {e}") })
    }
}
