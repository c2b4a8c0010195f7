//! The clusters under test: how to find their leader and how to phrase a put and a read for each.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

/// The system behind a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum System {
    Shoal,
    Etcd,
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Shoal => "shoal",
            System::Etcd => "etcd",
        })
    }
}

/// `SYSTEM:NODES=URL[,URL..]` from the command line.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub system: System,
    pub nodes: usize,
    pub urls: Vec<String>,
}

impl FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("{s:?}: expected SYSTEM:NODES=URL[,URL..], e.g. shoal:1=http://127.0.1.1:8500");
        let (head, urls) = s.split_once('=').ok_or_else(usage)?;
        let (system, nodes) = head.split_once(':').ok_or_else(usage)?;
        let system = match system {
            "shoal" => System::Shoal,
            "etcd" => System::Etcd,
            other => return Err(format!("{s:?}: unknown system {other:?} (shoal or etcd)")),
        };
        let nodes: usize = nodes.parse().map_err(|_| usage())?;
        let urls: Vec<String> =
            urls.split(',').filter(|u| !u.is_empty()).map(|u| u.trim_end_matches('/').to_string()).collect();
        if nodes == 0 || urls.len() != nodes {
            return Err(format!("{s:?}: {nodes} nodes but {} URLs", urls.len()));
        }
        Ok(Self { system, nodes, urls })
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}", self.system, self.nodes, self.urls.join(","))
    }
}

/// A cluster whose leader has been found.
pub struct Target {
    pub spec: TargetSpec,
    /// Base URL of the leader's HTTP API; every client of the benchmark talks to it.
    pub leader: String,
}

/// One ready-to-send request: everything but the connection.
#[derive(Clone)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub body: bytes::Bytes,
}

/// Whether a response with this status and body is the success the request asked for.
pub fn is_success(system: System, is_put: bool, status: reqwest::StatusCode, body: &[u8]) -> bool {
    if status != reqwest::StatusCode::OK {
        return false;
    }
    match (system, is_put) {
        // Consul's PUT answers `true`, or `false` when it did not take effect.
        (System::Shoal, true) => body.trim_ascii() == b"true",
        // A read of a key that exists: a JSON array of one entry (404 when missing).
        (System::Shoal, false) => body.starts_with(b"["),
        (System::Etcd, true) => contains(body, b"\"header\""),
        // A range on a missing key answers 200 with no `kvs`.
        (System::Etcd, false) => contains(body, b"\"kvs\""),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Target {
    /// Checks the cluster has `nodes` voting members and finds its leader, waiting up to 30 s for one.
    pub async fn connect(spec: TargetSpec) -> Result<Self> {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let found = match spec.system {
                System::Shoal => shoal_leader(&client, &spec).await,
                System::Etcd => etcd_leader(&client, &spec).await,
            };
            match found {
                Ok(leader) => return Ok(Self { spec, leader }),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// `shoal:3` and the like.
    pub fn label(&self) -> String {
        format!("{}:{}", self.spec.system, self.spec.nodes)
    }

    /// The write of `value` under key number `i`.
    pub fn put(&self, i: usize, value: &[u8]) -> Request {
        let key = key_name(i);
        match self.spec.system {
            System::Shoal => Request {
                method: reqwest::Method::PUT,
                url: format!("{}/v1/kv/{key}", self.leader),
                body: bytes::Bytes::copy_from_slice(value),
            },
            System::Etcd => Request {
                method: reqwest::Method::POST,
                url: format!("{}/v3/kv/put", self.leader),
                body: serde_json::json!({ "key": B64.encode(&key), "value": B64.encode(value) }).to_string().into(),
            },
        }
    }

    /// The linearizable read of key number `i` (both systems' default consistency).
    pub fn get(&self, i: usize) -> Request {
        let key = key_name(i);
        match self.spec.system {
            System::Shoal => Request {
                method: reqwest::Method::GET,
                url: format!("{}/v1/kv/{key}", self.leader),
                body: bytes::Bytes::new(),
            },
            System::Etcd => Request {
                method: reqwest::Method::POST,
                url: format!("{}/v3/kv/range", self.leader),
                body: serde_json::json!({ "key": B64.encode(&key) }).to_string().into(),
            },
        }
    }
}

fn key_name(i: usize) -> String {
    format!("bench/k{i:06}")
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Shoal: `/v1/status/peers` must list `nodes` voters, and `/v1/status/leader` names the leader's
/// cluster address, whose IP is the one of the leader's HTTP URL.
async fn shoal_leader(client: &reqwest::Client, spec: &TargetSpec) -> Result<String> {
    let base = &spec.urls[0];
    let peers: Vec<String> =
        client.get(format!("{base}/v1/status/peers")).send().await?.error_for_status()?.json().await?;
    if peers.len() != spec.nodes {
        bail!("{base}: {} voters ({peers:?}), expected {}", peers.len(), spec.nodes);
    }
    let leader: String =
        client.get(format!("{base}/v1/status/leader")).send().await?.error_for_status()?.json().await?;
    if leader.is_empty() {
        bail!("{base}: no leader yet");
    }
    let ip = host_of(&leader);
    spec.urls
        .iter()
        .find(|u| host_of(u) == ip)
        .cloned()
        .ok_or_else(|| anyhow!("leader {leader} is not among {:?}", spec.urls))
}

/// etcd: `/v3/cluster/member/list` must list `nodes` members; the leader is the endpoint whose
/// `/v3/maintenance/status` has `header.member_id == leader`.
async fn etcd_leader(client: &reqwest::Client, spec: &TargetSpec) -> Result<String> {
    let base = &spec.urls[0];
    let members: Value = client
        .post(format!("{base}/v3/cluster/member/list"))
        .body("{}")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let n = members["members"].as_array().map_or(0, Vec::len);
    if n != spec.nodes {
        bail!("{base}: {n} members, expected {}", spec.nodes);
    }
    for url in &spec.urls {
        let status: Value = client
            .post(format!("{url}/v3/maintenance/status"))
            .body("{}")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .with_context(|| format!("{url}/v3/maintenance/status"))?;
        let me = status["header"]["member_id"].as_str().unwrap_or_default();
        let leader = status["leader"].as_str().unwrap_or_default();
        if !me.is_empty() && me == leader {
            return Ok(url.clone());
        }
    }
    bail!("no endpoint of {:?} is the leader", spec.urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s: TargetSpec =
            "shoal:3=http://127.0.1.1:8500,http://127.0.1.2:8500,http://127.0.1.3:8500/".parse().unwrap();
        assert_eq!(s.system, System::Shoal);
        assert_eq!(s.nodes, 3);
        assert_eq!(s.urls[2], "http://127.0.1.3:8500");
        assert!("etcd:2=http://a:1".parse::<TargetSpec>().is_err());
        assert!("consul:1=http://a:1".parse::<TargetSpec>().is_err());
        assert!("etcd=http://a:1".parse::<TargetSpec>().is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("http://127.0.1.2:8500"), "127.0.1.2");
        assert_eq!(host_of("127.0.1.2:2377"), "127.0.1.2");
        assert_eq!(host_of("http://127.0.1.2:8500/v1"), "127.0.1.2");
    }

    #[test]
    fn success_checks() {
        let ok = reqwest::StatusCode::OK;
        assert!(is_success(System::Shoal, true, ok, b"true\n"));
        assert!(!is_success(System::Shoal, true, ok, b"false"));
        assert!(!is_success(System::Shoal, false, reqwest::StatusCode::NOT_FOUND, b""));
        assert!(is_success(System::Etcd, false, ok, br#"{"header":{},"kvs":[{}],"count":"1"}"#));
        assert!(!is_success(System::Etcd, false, ok, br#"{"header":{}}"#));
    }
}
