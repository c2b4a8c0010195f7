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
    /// A client for the API at `addr`. With `SHOAL_TLS_DIR` set (a directory holding `ca.pem`,
    /// `client.pem` and `client.key`, as `shoal cert client --out` writes it), it speaks HTTPS and
    /// presents that client certificate, for an API served with `--http-tls`.
    pub fn new(addr: &str) -> Result<Self> {
        Self::build(addr, Some(Duration::from_secs(15)))
    }

    /// A client whose answers may stream for as long as they last (`service logs --follow`).
    pub fn streaming(addr: &str) -> Result<Self> {
        Self::build(addr, None)
    }

    fn build(addr: &str, timeout: Option<Duration>) -> Result<Self> {
        let mut builder = reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(5));
        if let Some(t) = timeout {
            builder = builder.timeout(t);
        }
        let tls_dir = std::env::var_os("SHOAL_TLS_DIR").filter(|d| !d.is_empty());
        if let Some(dir) = &tls_dir {
            builder = builder.tls_backend_preconfigured(client_tls(std::path::Path::new(dir))?);
        }
        let http = builder.build().context("cannot build the HTTP client")?;
        let addr = addr.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/').to_string();
        let scheme = if tls_dir.is_some() { "https" } else { "http" };
        Ok(Self { base: format!("{scheme}://{addr}"), addr, http })
    }

    /// Sends a request; `Ok(None)` on 404, `Err` on any other failure.
    pub async fn send(&self, method: Method, path_and_query: &str, body: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let resp = self.request(method, path_and_query, body).await?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the answer")?.to_vec();
        if status == StatusCode::NOT_FOUND && bytes.is_empty() {
            return Ok(None);
        }
        if !status.is_success() {
            bail!(api_error(status, &bytes));
        }
        Ok(Some(bytes))
    }

    /// A GET whose answer is read as it comes; `Err` on a non-2xx answer.
    pub async fn stream(&self, path_and_query: &str) -> Result<reqwest::Response> {
        let resp = self.request(Method::GET, path_and_query, None).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.context("reading the answer")?.to_vec();
            bail!(api_error(status, &bytes));
        }
        Ok(resp)
    }

    async fn request(&self, method: Method, path_and_query: &str, body: Option<Vec<u8>>) -> Result<reqwest::Response> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path_and_query));
        if let Ok(token) = std::env::var("SHOAL_HTTP_TOKEN")
            && !token.is_empty()
        {
            req = req.header("X-Consul-Token", token);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.map_err(|e| {
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
        })
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

/// Docker-shaped endpoints answer `{"message": ...}`; the others a line of text.
fn api_error(status: StatusCode, bytes: &[u8]) -> ApiError {
    let message = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_string());
    ApiError { status, message }
}

/// The TLS client config of `SHOAL_TLS_DIR`: trust the cluster CA, present the client certificate.
fn client_tls(dir: &std::path::Path) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let file = |f: &str| dir.join(f);
    let hint = "SHOAL_TLS_DIR must hold ca.pem, client.pem and client.key (`shoal cert client --out DIR` writes them), or be a node's DATA_DIR/tls";
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(file("ca.pem")).with_context(|| format!("reading ca.pem: {hint}"))? {
        roots.add(ca.context("bad ca.pem")?).context("bad ca.pem")?;
    }
    // A node's own `DATA_DIR/tls` works too (node.pem/node.key): that is how the first client
    // certificate is fetched from an API that already requires one.
    let (cert_file, key_file) =
        if file("client.pem").exists() { ("client.pem", "client.key") } else { ("node.pem", "node.key") };
    let certs = CertificateDer::pem_file_iter(file(cert_file))
        .with_context(|| format!("reading {cert_file}: {hint}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad {cert_file}"))?;
    let key = PrivateKeyDer::from_pem_file(file(key_file)).with_context(|| format!("reading {key_file}: {hint}"))?;
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .context("the client certificate and key do not match")
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
