//! Tests on the real Docker engine: the `docker` CLI against the engine or a node's Docker API, and
//! a one-node cluster running tasks as containers, removed with everything it made however the
//! test ends.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::{Cluster, ClusterOptions, get_json, remove_engine_objects, wait_for};

/// `docker ARGS` (60 s at most) against `host` (a node's Docker API, `IP:2375`) or, with `None`,
/// the local engine.
pub fn docker(host: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "docker"]).env_remove("DOCKER_CONTEXT").env_remove("DOCKER_TLS_VERIFY").args(args);
    match host {
        Some(h) => cmd.env("DOCKER_HOST", format!("tcp://{h}")),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    cmd.output().expect("the docker CLI")
}

/// [`docker`], which must succeed.
pub fn docker_ok(host: Option<&str>, args: &[&str]) {
    let o = docker(host, args);
    assert!(o.status.success(), "docker {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
}

/// A one-node cluster on the real engine (`--runtime docker`). Dropping it kills the node and
/// removes every container and network the node made.
pub struct DockerNode {
    /// The cluster (one node).
    pub cluster: Cluster,
    /// Its HTTP API (`IP:8500`).
    pub addr: String,
    /// Its loopback IP.
    pub ip: String,
    /// Its node ID.
    pub id: String,
}

impl DockerNode {
    /// Starts the node with `extra` agent flags and waits until it has its ID.
    pub async fn start(extra: &[&str]) -> DockerNode {
        let mut agent_args = vec!["--runtime".to_string(), "docker".to_string()];
        agent_args.extend(extra.iter().map(|a| a.to_string()));
        let cluster = Cluster::start(1, ClusterOptions { agent_args }).await;
        let addr = cluster.nodes[0].http_addr();
        let ip = cluster.nodes[0].ip.to_string();
        let id = first_node_id(&addr).await;
        DockerNode { cluster, addr, ip, id }
    }

    /// Its Docker API (`IP:2375`), for `docker -H`.
    pub fn docker_host(&self) -> String {
        format!("{}:2375", self.ip)
    }
}

impl Drop for DockerNode {
    fn drop(&mut self) {
        for i in 0..self.cluster.nodes.len() {
            self.cluster.kill(i);
        }
        remove_engine_objects(std::slice::from_ref(&self.id));
    }
}

/// The ID of the first node `addr`'s API lists, once it has one (30 s at most): what a test's
/// engine sweep ([`remove_engine_objects`]) needs.
pub async fn first_node_id(addr: &str) -> String {
    wait_for("the node's ID", Duration::from_secs(30), || async {
        let nodes: Vec<Value> = get_json(addr, "/v1/nodes").await?;
        nodes.first().and_then(|n| n["ID"].as_str().map(str::to_string))
    })
    .await
}

/// Instance address → container name (its service ID) of `name`'s passing instances.
pub async fn passing(addr: &str, name: &str) -> Vec<(String, String)> {
    let entries: Vec<Value> = get_json(addr, &format!("/v1/health/service/{name}?passing")).await.unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            (
                e["Service"]["Address"].as_str().unwrap_or_default().to_string(),
                e["Service"]["ID"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
