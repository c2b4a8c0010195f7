//! The one client of the Shoal HTTP API, shared by the CLI, the tests and a manager gathering logs
//! from other nodes: addresses with or without a scheme, the token header, HTTPS with a client
//! certificate for an API served with `--http-tls`, and errors that say what to do.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};

/// How a client reaches the API.
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// The deadline of a whole request (`None`: answers may stream for as long as they last).
    pub timeout: Option<Duration>,
    /// Speak HTTPS with this config (trust the cluster CA, present a certificate).
    pub tls: Option<rustls::ClientConfig>,
    /// Sent as `X-Consul-Token`.
    pub token: Option<String>,
}

impl ClientOptions {
    /// What the CLI uses: `SHOAL_TLS_DIR` (a directory with `ca.pem`, `client.pem`, `client.key` as
    /// `shoal cert client --out` writes it, or a node's `DATA_DIR/tls`) and `SHOAL_HTTP_TOKEN`.
    pub fn from_env(timeout: Option<Duration>) -> Result<Self, ClientError> {
        let tls = match std::env::var_os("SHOAL_TLS_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => Some(client_tls(Path::new(&dir)).map_err(ClientError::Setup)?),
            None => None,
        };
        let token = std::env::var("SHOAL_HTTP_TOKEN").ok().filter(|t| !t.is_empty());
        Ok(Self { timeout, tls, token })
    }
}

/// The API of one node.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    addr: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A non-2xx answer: status and the server's one-line reason.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The server's reason (Docker's `message`, or the text of the body).
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

/// Why a request failed, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there: wrong address, or the node is down.
    #[error(
        "cannot reach the Shoal API at {addr}: is `shoal agent` running there? (set --http-addr or SHOAL_HTTP_ADDR)"
    )]
    Unreachable {
        /// The address tried.
        addr: String,
    },
    /// Connected, but no answer within the deadline.
    #[error("the Shoal API at {addr} did not answer in time")]
    Timeout {
        /// The address tried.
        addr: String,
    },
    /// Another transport failure (TLS, a reset connection, ...).
    #[error("request to the Shoal API at {addr} failed: {msg}")]
    Transport {
        /// The address tried.
        addr: String,
        /// What went wrong.
        msg: String,
    },
    /// The API answered with an error.
    #[error("{0}")]
    Status(ApiError),
    /// The answer was not what the endpoint promises.
    #[error("unexpected answer to {what}: {msg}")]
    Decode {
        /// The request.
        what: String,
        /// Why it does not decode.
        msg: String,
    },
    /// The client could not be set up (TLS files, ...).
    #[error("{0}")]
    Setup(String),
}

impl ClientError {
    /// Whether the request never reached a listener (nothing can have happened).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }
}

impl ApiClient {
    /// A client configured as the CLI is ([`ClientOptions::from_env`]), with a 15 s deadline.
    pub fn new(addr: &str) -> Result<Self, ClientError> {
        Self::with_options(addr, ClientOptions::from_env(Some(Duration::from_secs(15)))?)
    }

    /// As [`ApiClient::new`], for answers that stream for as long as they last (`logs --follow`).
    pub fn streaming(addr: &str) -> Result<Self, ClientError> {
        Self::with_options(addr, ClientOptions::from_env(None)?)
    }

    /// A client for the API at `addr` (`IP:PORT`, with or without `http://`/`https://`).
    pub fn with_options(addr: &str, options: ClientOptions) -> Result<Self, ClientError> {
        // reqwest is built without a default crypto provider in this workspace.
        shoal_registry::pki::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(5));
        if let Some(t) = options.timeout {
            builder = builder.timeout(t);
        }
        let scheme = if options.tls.is_some() { "https" } else { "http" };
        if let Some(tls) = options.tls {
            builder = builder.tls_backend_preconfigured(tls);
        }
        let http = builder.build().map_err(|e| ClientError::Setup(format!("cannot build the HTTP client: {e}")))?;
        let addr = addr.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/').to_string();
        Ok(Self { base: format!("{scheme}://{addr}"), addr, token: options.token, http })
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends a request and returns the answer as it is, whatever its status.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path_and_query));
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.map_err(|e| {
            let addr = self.addr.clone();
            if e.is_connect() {
                ClientError::Unreachable { addr }
            } else if e.is_timeout() {
                ClientError::Timeout { addr }
            } else {
                ClientError::Transport { addr, msg: format!("{e:#}") }
            }
        })
    }

    /// Sends a request; `Ok(None)` on an empty 404, `Err` on any other failure.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let resp = self.request(method, path_and_query, body).await?;
        let status = resp.status();
        let bytes = self.body(resp).await?;
        if status == StatusCode::NOT_FOUND && bytes.is_empty() {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(ClientError::Status(api_error(status, &bytes)));
        }
        Ok(Some(bytes))
    }

    /// A GET whose answer is read as it comes; `Err` on a non-2xx answer.
    pub async fn stream(&self, path_and_query: &str) -> Result<reqwest::Response, ClientError> {
        let resp = self.request(Method::GET, path_and_query, None).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = self.body(resp).await?;
            return Err(ClientError::Status(api_error(status, &bytes)));
        }
        Ok(resp)
    }

    /// A GET of JSON; `Ok(None)` on an empty 404.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ClientError> {
        match self.send(Method::GET, path, None).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| ClientError::Decode { what: format!("GET {path}"), msg: e.to_string() }),
        }
    }

    /// A blocking GET of JSON (`?index=&wait=` already in `path`): the answer and its
    /// `X-Consul-Index`.
    pub async fn get_json_at<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<(T, u64), ClientError> {
        let resp = self.stream(path).await?;
        let index = resp.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let bytes = self.body(resp).await?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode { what: format!("GET {path}"), msg: e.to_string() })?;
        Ok((value, index))
    }

    async fn body(&self, resp: reqwest::Response) -> Result<Vec<u8>, ClientError> {
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Transport { addr: self.addr.clone(), msg: format!("reading the answer: {e}") })
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

/// The TLS client config of a certificate directory: trust its `ca.pem`, present `client.pem` and
/// `client.key` (or a node's own `node.pem`/`node.key`: that is how the first client certificate is
/// fetched from an API that already requires one).
pub fn client_tls(dir: &Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let file = |f: &str| dir.join(f);
    let hint = "SHOAL_TLS_DIR must hold ca.pem, client.pem and client.key (`shoal cert client --out DIR` writes them), or be a node's DATA_DIR/tls";
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(file("ca.pem")).map_err(|e| format!("reading ca.pem: {e}: {hint}"))? {
        let ca = ca.map_err(|e| format!("bad ca.pem: {e}"))?;
        roots.add(ca).map_err(|e| format!("bad ca.pem: {e}"))?;
    }
    let (cert_file, key_file) =
        if file("client.pem").exists() { ("client.pem", "client.key") } else { ("node.pem", "node.key") };
    let certs = CertificateDer::pem_file_iter(file(cert_file))
        .map_err(|e| format!("reading {cert_file}: {e}: {hint}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad {cert_file}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(file(key_file)).map_err(|e| format!("reading {key_file}: {e}: {hint}"))?;
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("the client certificate and key do not match: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_keeping_slashes() {
        let cases = [("a/b", "a/b"), ("a b", "a%20b"), ("ü", "%C3%BC"), ("x?y#z", "x%3Fy%23z")];
        for (key, want) in cases {
            assert_eq!(encode_key(key), want, "{key:?}");
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_with_what_to_do() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = ApiClient::with_options(&format!("http://127.0.0.1:{port}/"), ClientOptions::default()).unwrap();
        assert_eq!(c.addr(), format!("127.0.0.1:{port}"));
        let e = c.send(Method::GET, "/v1/status/leader", None).await.unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        assert!(e.to_string().contains("SHOAL_HTTP_ADDR"), "{e}");
    }
}
