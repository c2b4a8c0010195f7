//! The Docker runtime: the only module that talks to the engine (bollard). A task becomes one
//! container, named `SERVICE.SLOT.TASK` as Swarm names them, labelled with the node, service and
//! task so that each node finds its own containers again (several nodes may share one engine).
//!
//! ```text
//! prepare: image present? (else pull; else "image not found locally: NAME")
//!          ─▶ network shoal-SERVICE-ID (bridge, per host) ─▶ create container (labels, env, ports…)
//! start:   start ─▶ healthy? (when it has a health check)
//! wait:    /containers/ID/wait (the health is watched too: unhealthy ⇒ killed, failed)
//! shutdown: stop (the spec's stop signal, then its grace period)  ·  remove: rm -f
//! ```
//! Docker's own restart policy stays off: restarts are the orchestrator's decision. Host-mode ports
//! are published on the node's own address when it has one, so nodes sharing an engine (on
//! 127.0.0.2, .3 …) do not collide.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, EndpointSettings, HealthConfig, HealthStatusEnum,
    HostConfig, Mount, MountType, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use serde_json::Value;
use shoal_registry::rpc::wire::Assignment;

use crate::exec::{Controller, ExecError, Executor, Exit, LogLine, LogStream, Owned};

/// Labels on every container Shoal starts.
pub mod labels {
    /// The node that runs it (16 hex digits).
    pub const NODE_ID: &str = "shoal.node.id";
    /// Its service's ID.
    pub const SERVICE_ID: &str = "shoal.service.id";
    /// Its service's name.
    pub const SERVICE_NAME: &str = "shoal.service.name";
    /// Its task's ID.
    pub const TASK_ID: &str = "shoal.task.id";
    /// Its task's slot (0 for a global service's task).
    pub const TASK_SLOT: &str = "shoal.task.slot";
}

/// Who this node is, as its containers are labelled and published.
#[derive(Debug, Clone)]
pub struct RuntimeNode {
    /// The node ID, 16 hex digits.
    pub id: String,
    /// The node's name.
    pub name: String,
    /// Where host-mode ports are published: the node's own address, or `None` for all addresses.
    pub publish_ip: Option<IpAddr>,
}

struct Inner {
    /// For requests that answer at once (a minute at most).
    quick: Docker,
    /// For requests that last as long as a container (wait, stop, pull, followed logs).
    long: Docker,
    node: RuntimeNode,
    /// This node's networks known to exist. Containers are created under the read lock; a network
    /// is made, or removed with the last container of its service, under the write lock.
    networks: tokio::sync::RwLock<std::collections::HashSet<String>>,
}

/// Runs tasks as containers on the local Docker engine.
#[derive(Clone)]
pub struct DockerExecutor(Arc<Inner>);

fn temporary(e: DockerError) -> ExecError {
    ExecError::Temporary(format!("docker engine: {e}"))
}

fn not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

/// The engine's message for an answer with an error status, `None` for a transport failure.
fn server_message(e: &DockerError) -> Option<(u16, &str)> {
    match e {
        DockerError::DockerResponseServerError { status_code, message } => Some((*status_code, message)),
        _ => None,
    }
}

impl DockerExecutor {
    /// Connects to the engine (`DOCKER_HOST` or the local socket) and checks that it answers.
    pub async fn connect(node: RuntimeNode) -> Result<Self, String> {
        let connect = |timeout: Duration| -> Result<Docker, String> {
            Docker::connect_with_local_defaults()
                .map(|d| d.with_timeout(timeout))
                .map_err(|e| format!("cannot reach the Docker engine: {e}"))
        };
        let quick = connect(Duration::from_secs(60))?;
        let quick = quick.negotiate_version().await.map_err(|e| format!("the Docker engine does not answer: {e}"))?;
        let long = connect(Duration::from_secs(365 * 24 * 3600))?
            .negotiate_version()
            .await
            .map_err(|e| format!("the Docker engine does not answer: {e}"))?;
        Ok(Self(Arc::new(Inner { quick, long, node, networks: Default::default() })))
    }
}

/// The local engine's version (for the node table, `docker node ls`), or `None` when no engine
/// answers within a second.
pub async fn engine_version() -> Option<String> {
    let docker = Docker::connect_with_local_defaults().ok()?;
    let asked = tokio::time::timeout(Duration::from_secs(1), docker.version()).await;
    asked.ok()?.ok()?.version
}

/// What a task's container is made of, read from the task spec (Docker's `TaskTemplate`) and its
/// service's `EndpointSpec`.
#[derive(Debug, Clone)]
struct Plan {
    name: String,
    image: String,
    network: String,
    service_id: String,
    service_name: String,
    body: ContainerCreateBody,
    grace: Duration,
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
}

fn nanos(v: &Value) -> Option<i64> {
    v.as_i64().filter(|n| *n > 0)
}

/// The container for `a` on `node` (pure: unit-tested without an engine).
fn plan(a: &Assignment, node: &RuntimeNode) -> Result<Plan, String> {
    let spec: Value = serde_json::from_str(&a.task_spec).map_err(|e| format!("the task spec is not JSON: {e}"))?;
    let c = &spec["ContainerSpec"];
    let image = c["Image"].as_str().unwrap_or_default().to_string();
    if image.is_empty() {
        return Err("the task has no image (ContainerSpec.Image)".into());
    }
    let t = &a.task;
    let service = if a.service_name.is_empty() { "task" } else { a.service_name.as_str() };
    let slot = if t.slot > 0 { t.slot.to_string() } else { node.id.clone() };
    let name = format!("{service}.{slot}.{}", t.id);
    // One bridge network per service and node (a node is a host; nodes that share an engine in
    // tests keep theirs apart), named for both so that two clusters on one engine never meet.
    let short_id: String = t.service_id.chars().take(8).collect();
    let network = format!("shoal-{service}-{short_id}-{}", &node.id[node.id.len().saturating_sub(8)..]);

    let mut labels: HashMap<String, String> = c["Labels"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    for (k, v) in [
        (labels::NODE_ID, node.id.clone()),
        (labels::SERVICE_ID, t.service_id.clone()),
        (labels::SERVICE_NAME, a.service_name.clone()),
        (labels::TASK_ID, t.id.clone()),
        (labels::TASK_SLOT, t.slot.to_string()),
    ] {
        labels.insert(k.into(), v);
    }
    let mut env = strings(&c["Env"]).unwrap_or_default();
    env.extend([
        format!("SHOAL_NODE_ID={}", node.id),
        format!("SHOAL_NODE_NAME={}", node.name),
        format!("SHOAL_SERVICE_ID={}", t.service_id),
        format!("SHOAL_SERVICE_NAME={}", a.service_name),
        format!("SHOAL_TASK_ID={}", t.id),
        format!("SHOAL_TASK_NAME={name}"),
        format!("SHOAL_TASK_SLOT={}", t.slot),
    ]);

    shoal_model::spec::check_mounts(&c["Mounts"]).map_err(|e| e.0)?;
    let mounts: Vec<Mount> = c["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| Mount {
            target: m["Target"].as_str().map(str::to_string),
            source: m["Source"].as_str().filter(|s| !s.is_empty()).map(str::to_string),
            typ: Some(match m["Type"].as_str() {
                Some("bind") => MountType::BIND,
                Some("tmpfs") => MountType::TMPFS,
                _ => MountType::VOLUME,
            }),
            read_only: m["ReadOnly"].as_bool(),
            ..Default::default()
        })
        .collect();

    let mut exposed = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let endpoint: Value = serde_json::from_str(&a.endpoint_spec).unwrap_or(Value::Null);
    for p in endpoint["Ports"].as_array().into_iter().flatten() {
        let target = p["TargetPort"].as_u64().unwrap_or(0);
        if target == 0 || target > 65535 {
            return Err(format!("a port has no valid TargetPort: {p}"));
        }
        let key = format!("{target}/{}", p["Protocol"].as_str().unwrap_or("tcp"));
        exposed.push(key.clone());
        // Ingress-mode ports are the edge router's job (no routing mesh here); host mode binds here.
        if p["PublishMode"].as_str() == Some("host") {
            let published = p["PublishedPort"].as_u64().unwrap_or(0);
            bindings.entry(key).or_insert_with(|| Some(Vec::new())).get_or_insert_with(Vec::new).push(PortBinding {
                host_ip: node.publish_ip.map(|ip| ip.to_string()),
                host_port: Some(if published == 0 { String::new() } else { published.to_string() }),
            });
        }
    }

    let h = &c["Healthcheck"];
    let healthcheck = strings(&h["Test"]).filter(|t| !t.is_empty()).map(|test| HealthConfig {
        test: Some(test),
        interval: nanos(&h["Interval"]),
        timeout: nanos(&h["Timeout"]),
        retries: h["Retries"].as_i64().filter(|n| *n > 0),
        start_period: nanos(&h["StartPeriod"]),
        ..Default::default()
    });
    let limits = &spec["Resources"]["Limits"];
    let grace = c["StopGracePeriod"].as_u64().map_or(Duration::from_secs(10), Duration::from_nanos);
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        entrypoint: strings(&c["Command"]).filter(|v| !v.is_empty()),
        cmd: strings(&c["Args"]).filter(|v| !v.is_empty()),
        env: Some(env),
        labels: Some(labels),
        working_dir: c["Dir"].as_str().filter(|s| !s.is_empty()).map(str::to_string),
        user: c["User"].as_str().filter(|s| !s.is_empty()).map(str::to_string),
        hostname: c["Hostname"].as_str().filter(|s| !s.is_empty()).map(str::to_string),
        stop_signal: c["StopSignal"].as_str().filter(|s| !s.is_empty()).map(str::to_string),
        stop_timeout: Some(grace.as_secs() as i64),
        tty: c["TTY"].as_bool(),
        healthcheck,
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            nano_cpus: limits["NanoCPUs"].as_i64().filter(|n| *n > 0),
            memory: limits["MemoryBytes"].as_i64().filter(|n| *n > 0),
            pids_limit: limits["Pids"].as_i64().filter(|n| *n > 0),
            init: c["Init"].as_bool(),
            readonly_rootfs: c["ReadOnly"].as_bool(),
            restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.clone(),
                EndpointSettings { aliases: Some(vec![a.service_name.clone()]), ..Default::default() },
            )])),
        }),
        ..Default::default()
    };
    Ok(Plan {
        name,
        image,
        network,
        service_id: t.service_id.clone(),
        service_name: a.service_name.clone(),
        body,
        grace,
    })
}

#[async_trait]
impl Executor for DockerExecutor {
    fn controller(&self, a: &Assignment) -> Result<Box<dyn Controller>, ExecError> {
        let plan = if a.task_spec.is_empty() {
            // The service is gone (removed): the controller can still find, stop and remove the
            // container by its labels.
            None
        } else {
            Some(plan(a, &self.0.node).map_err(ExecError::Rejected)?)
        };
        Ok(Box::new(DockerController { x: self.0.clone(), task_id: a.task.id.clone(), plan, id: None }))
    }

    async fn owned(&self) -> Result<Vec<Owned>, ExecError> {
        let list = mine(&self.0, None).await.map_err(temporary)?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let task_id = c.labels.as_ref()?.get(labels::TASK_ID)?.clone();
                Some(Owned {
                    task_id,
                    container_id: c.id?,
                    running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                })
            })
            .collect())
    }

    async fn remove_owned(&self, container_id: &str) -> Result<(), ExecError> {
        let c = match self.0.quick.inspect_container(container_id, None).await {
            Ok(c) => c,
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => return Err(temporary(e)),
        };
        let service_id = c.config.and_then(|c| c.labels).and_then(|l| l.get(labels::SERVICE_ID).cloned());
        let networks: Vec<String> = c
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().filter(|k| k.starts_with("shoal-")).collect())
            .unwrap_or_default();
        let stop = StopContainerOptionsBuilder::default().t(10).build();
        match self.0.long.stop_container(container_id, Some(stop)).await {
            Err(e) if not_found(&e) => return Ok(()),
            _ => {}
        }
        remove(&self.0, container_id).await?;
        if let Some(service_id) = service_id {
            for network in networks {
                release_network(&self.0, &network, &service_id).await;
            }
        }
        Ok(())
    }

    async fn logs(&self, task_id: &str, follow: bool, tail: Option<u64>) -> Result<LogStream, ExecError> {
        let Some((id, _)) = find(&self.0, task_id).await? else {
            return Err(ExecError::Failed(format!("task {task_id} has no container on this node")));
        };
        Ok(log_lines(&self.0, &id, follow, tail))
    }
}

/// This node's containers in any state, those with the label `extra` (`KEY=VALUE`) if given.
async fn mine(x: &Inner, extra: Option<String>) -> Result<Vec<ContainerSummary>, DockerError> {
    let node = format!("{}={}", labels::NODE_ID, x.node.id);
    let mut wanted = vec![node.as_str()];
    wanted.extend(extra.as_deref());
    let opts = ListContainersOptionsBuilder::default().all(true).filters(&HashMap::from([("label", wanted)])).build();
    x.quick.list_containers(Some(opts)).await
}

/// The container of `task_id` on this node: (ID, running).
async fn find(x: &Inner, task_id: &str) -> Result<Option<(String, bool)>, ExecError> {
    let list = mine(x, Some(format!("{}={task_id}", labels::TASK_ID))).await.map_err(temporary)?;
    Ok(list.into_iter().find_map(|c| Some((c.id?, c.state == Some(ContainerSummaryStateEnum::RUNNING)))))
}

/// Removes this node's network for a service once no container of it is left here.
async fn release_network(x: &Inner, network: &str, service_id: &str) {
    let mut known = x.networks.write().await;
    if let Ok(list) = mine(x, Some(format!("{}={service_id}", labels::SERVICE_ID))).await
        && list.is_empty()
        && x.quick.remove_network(network).await.is_ok()
    {
        known.remove(network);
    }
}

async fn remove(x: &Inner, id: &str) -> Result<(), ExecError> {
    let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    match x.quick.remove_container(id, Some(opts)).await {
        Ok(()) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        // Removal already under way (another call, or the engine cleaning up).
        Err(e) if server_message(&e).is_some_and(|(code, m)| code == 409 && m.contains("already in progress")) => {
            Ok(())
        }
        Err(e) if server_message(&e).is_some() => Err(ExecError::Failed(format!("cannot remove container {id}: {e}"))),
        Err(e) => Err(temporary(e)),
    }
}

fn log_lines(x: &Inner, id: &str, follow: bool, tail: Option<u64>) -> LogStream {
    let tail = tail.map_or_else(|| "all".to_string(), |n| n.to_string());
    let opts = LogsOptionsBuilder::default().stdout(true).stderr(true).follow(follow).tail(&tail).build();
    let client = if follow { &x.long } else { &x.quick };
    let stream = client.logs(id, Some(opts)).flat_map(|item| {
        let lines: Vec<Result<LogLine, ExecError>> = match item {
            Ok(out) => {
                let stream = match out {
                    bollard::container::LogOutput::StdErr { .. } => "stderr",
                    _ => "stdout",
                };
                let text = out.to_string();
                text.lines().map(|l| Ok(LogLine { stream, line: l.to_string() })).collect()
            }
            Err(e) => vec![Err(temporary(e))],
        };
        futures::stream::iter(lines)
    });
    Box::pin(stream)
}

struct DockerController {
    x: Arc<Inner>,
    task_id: String,
    plan: Option<Plan>,
    /// The container, once created or found.
    id: Option<String>,
}

impl DockerController {
    fn plan(&self) -> Result<&Plan, ExecError> {
        self.plan.as_ref().ok_or_else(|| ExecError::Failed("the task's service is gone".into()))
    }

    /// The container's ID: known, or found by the task's label (adoption).
    async fn container(&mut self) -> Result<Option<String>, ExecError> {
        if self.id.is_none() {
            self.id = find(&self.x, &self.task_id).await?.map(|(id, _)| id);
        }
        Ok(self.id.clone())
    }

    async fn ensure_image(&self, image: &str) -> Result<(), ExecError> {
        let present = |e: Result<_, DockerError>| match e {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(temporary(e)),
        };
        if present(self.x.quick.inspect_image(image).await)? {
            return Ok(());
        }
        // `docker service create` pins `name:tag@sha256:…` when a registry knows the image.
        if let Some((plain, _)) = image.split_once('@')
            && present(self.x.quick.inspect_image(plain).await)?
        {
            return Ok(());
        }
        let opts = CreateImageOptionsBuilder::default().from_image(image).build();
        let mut pull = self.x.long.create_image(Some(opts), None, None);
        let mut failure = None;
        while let Some(item) = pull.next().await {
            if let Err(e) = item {
                failure = Some(e.to_string());
                break;
            }
        }
        match failure {
            None if present(self.x.quick.inspect_image(image).await)? => Ok(()),
            None => Err(ExecError::Rejected(format!("image not found locally: {image} (the pull gave nothing)"))),
            Some(why) => Err(ExecError::Rejected(format!("image not found locally: {image} (pull failed: {why})"))),
        }
    }

    /// Makes this node's network for the service unless it exists; the engine (API 1.41) does not
    /// refuse duplicate names, so it is looked up first, under the write lock.
    async fn ensure_network(
        &self,
        plan: &Plan,
    ) -> Result<tokio::sync::RwLockReadGuard<'_, std::collections::HashSet<String>>, ExecError> {
        let known = self.x.networks.read().await;
        if known.contains(&plan.network) {
            return Ok(known);
        }
        drop(known);
        let mut known = self.x.networks.write().await;
        if !known.contains(&plan.network) {
            match self.x.quick.inspect_network(&plan.network, None).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {
                    let req = NetworkCreateRequest {
                        name: plan.network.clone(),
                        driver: Some("bridge".into()),
                        labels: Some(HashMap::from([
                            (labels::NODE_ID.to_string(), self.x.node.id.clone()),
                            (labels::SERVICE_NAME.to_string(), plan.service_name.clone()),
                        ])),
                        ..Default::default()
                    };
                    match self.x.quick.create_network(req).await {
                        Ok(_) => {}
                        Err(e) if server_message(&e).is_some() => {
                            return Err(ExecError::Failed(format!("cannot create network {}: {e}", plan.network)));
                        }
                        Err(e) => return Err(temporary(e)),
                    }
                }
                Err(e) => return Err(temporary(e)),
            }
            known.insert(plan.network.clone());
        }
        Ok(known.downgrade())
    }

    /// Waits until the container is healthy (it has a health check) or no longer starting.
    async fn until_healthy(&self, id: &str) -> Result<(), ExecError> {
        loop {
            let c = self.x.quick.inspect_container(id, None).await.map_err(temporary)?;
            let state = c.state.unwrap_or_default();
            let health = state.health.and_then(|h| h.status);
            match health {
                None
                | Some(HealthStatusEnum::NONE)
                | Some(HealthStatusEnum::EMPTY)
                | Some(HealthStatusEnum::HEALTHY) => {
                    return Ok(());
                }
                Some(HealthStatusEnum::UNHEALTHY) => {
                    self.kill(id).await;
                    return Err(ExecError::Failed("task: container unhealthy".into()));
                }
                Some(HealthStatusEnum::STARTING) => {}
            }
            if state.running != Some(true) {
                // It exited while starting: `wait` reports how.
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn kill(&self, id: &str) {
        let opts = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
        let _ = self.x.quick.kill_container(id, Some(opts)).await;
    }

    async fn log_tail(&self, id: &str) -> String {
        let mut lines = Vec::new();
        let mut s = log_lines(&self.x, id, false, Some(5));
        while let Some(Ok(l)) = s.next().await {
            lines.push(l.line);
        }
        let text = lines.join(" | ");
        match text.char_indices().rev().nth(499) {
            Some((cut, _)) => format!("…{}", &text[cut..]),
            None => text,
        }
    }

    /// Resolves when the container turns unhealthy (never, without a health check).
    async fn watch_health(&self, id: &str) -> Result<(), ExecError> {
        let has_health = match self.x.quick.inspect_container(id, None).await {
            Ok(c) => c
                .config
                .and_then(|c| c.healthcheck)
                .and_then(|h| h.test)
                .is_some_and(|t| t.first().is_some_and(|t| t != "NONE")),
            Err(e) => return Err(temporary(e)),
        };
        if !has_health {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let c = self.x.quick.inspect_container(id, None).await.map_err(temporary)?;
            if c.state.and_then(|s| s.health).and_then(|h| h.status) == Some(HealthStatusEnum::UNHEALTHY) {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl Controller for DockerController {
    async fn prepare(&mut self) -> Result<(), ExecError> {
        let plan = self.plan()?.clone();
        if self.container().await?.is_some() {
            return Ok(()); // Created by an earlier run of this agent.
        }
        self.ensure_image(&plan.image).await?;
        {
            let networks = self.ensure_network(&plan).await?;
            let opts = CreateContainerOptionsBuilder::default().name(&plan.name).build();
            let created = self.x.quick.create_container(Some(opts), plan.body.clone()).await;
            drop(networks);
            match created {
                Ok(r) => {
                    self.id = Some(r.id);
                    Ok(())
                }
                Err(e) if server_message(&e).is_some_and(|(c, _)| c == 409) => {
                    self.id = find(&self.x, &self.task_id).await?.map(|(id, _)| id);
                    match self.id {
                        Some(_) => Ok(()),
                        None => Err(ExecError::Rejected(format!("cannot create container {}: {e}", plan.name))),
                    }
                }
                Err(e) if server_message(&e).is_some() => {
                    Err(ExecError::Rejected(format!("cannot create container {}: {e}", plan.name)))
                }
                Err(e) => Err(temporary(e)),
            }
        }
    }

    async fn start(&mut self) -> Result<(), ExecError> {
        let Some(id) = self.container().await? else {
            return Err(ExecError::Failed("the task's container is gone".into()));
        };
        match self.x.quick.start_container(&id, None).await {
            Ok(()) => {}
            // 304: already started (an earlier run of this agent started it).
            Err(DockerError::DockerResponseServerError { status_code: 304, .. }) => {}
            Err(e) => {
                let Some((_, message)) = server_message(&e) else { return Err(temporary(e)) };
                let why = if message.contains("port is already allocated") || message.contains("address already in use")
                {
                    format!("host port already in use on this node: {message}")
                } else {
                    format!("cannot start container: {message}")
                };
                return Err(ExecError::Rejected(why));
            }
        }
        // With a health check (the spec's or the image's) the task runs once it is healthy.
        self.until_healthy(&id).await
    }

    async fn wait(&mut self) -> Result<Exit, ExecError> {
        let Some(id) = self.container().await? else {
            return Err(ExecError::Failed("the task's container is gone (removed outside Shoal?)".into()));
        };
        let code = {
            let mut waiting = self.x.long.wait_container(&id, None);
            tokio::select! {
                r = waiting.next() => match r {
                    Some(Ok(r)) => r.status_code,
                    Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
                    Some(Err(e)) if not_found(&e) => {
                        return Err(ExecError::Failed("the task's container is gone (removed outside Shoal?)".into()))
                    }
                    Some(Err(e)) => return Err(temporary(e)),
                    None => return Err(ExecError::Temporary("the engine ended the wait without an answer".into())),
                },
                r = self.watch_health(&id) => {
                    r?;
                    self.kill(&id).await;
                    return Err(ExecError::Failed("task: container unhealthy".into()));
                }
            }
        };
        let log_tail = if code == 0 { String::new() } else { self.log_tail(&id).await };
        Ok(Exit { code, log_tail })
    }

    async fn shutdown(&mut self) -> Result<(), ExecError> {
        let Some(id) = self.container().await? else { return Ok(()) };
        let grace = self.plan.as_ref().map_or(Duration::from_secs(10), |p| p.grace);
        let opts = StopContainerOptionsBuilder::default().t(grace.as_secs().min(i32::MAX as u64) as i32).build();
        match self.x.long.stop_container(&id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(DockerError::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) if server_message(&e).is_some() => Err(ExecError::Failed(format!("cannot stop container: {e}"))),
            Err(e) => Err(temporary(e)),
        }
    }

    async fn terminate(&mut self) -> Result<(), ExecError> {
        if let Some(id) = self.container().await? {
            self.kill(&id).await;
        }
        Ok(())
    }

    async fn remove(&mut self) -> Result<(), ExecError> {
        let Some(id) = self.container().await? else { return Ok(()) };
        remove(&self.x, &id).await?;
        if let Some(plan) = &self.plan {
            release_network(&self.x, &plan.network, &plan.service_id).await;
        }
        Ok(())
    }

    fn container_id(&self) -> Option<String> {
        self.id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_model::services::{TaskRecord, TaskState};

    fn assignment(spec: Value, endpoint: Value) -> Assignment {
        Assignment {
            task: TaskRecord {
                id: "t1abc".into(),
                service_id: "svc0123456789abcdef".into(),
                slot: 2,
                node_id: Some(1),
                spec_version: 1,
                desired: TaskState::Running,
                status: crate::exec::status(TaskState::Assigned, "assigned"),
                created_at: String::new(),
                create_index: 1,
                modify_index: 1,
            },
            service_name: "web".into(),
            task_spec: spec.to_string(),
            endpoint_spec: endpoint.to_string(),
        }
    }

    fn node() -> RuntimeNode {
        RuntimeNode { id: "00000000000000aa".into(), name: "n1".into(), publish_ip: Some("127.0.0.2".parse().unwrap()) }
    }

    #[test]
    fn a_task_spec_becomes_a_container() {
        let spec = serde_json::json!({
            "ContainerSpec": {
                "Image": "shoal:local", "Command": ["/shoal"], "Args": ["whoami", "--port", "8080"],
                "Env": ["A=1"], "Labels": {"tier": "front"}, "Dir": "/tmp", "User": "65534",
                "Mounts": [{"Type": "bind", "Source": "/srv", "Target": "/data", "ReadOnly": true}, {"Type": "volume", "Source": "v1", "Target": "/v"}],
                "StopSignal": "SIGINT", "StopGracePeriod": 3_000_000_000u64,
                "Healthcheck": {"Test": ["CMD", "/shoal", "probe", "http://127.0.0.1:8080/health"], "Interval": 1_000_000_000u64, "Retries": 2}
            },
            "Resources": {"Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 67_108_864}}
        });
        let endpoint = serde_json::json!({"Ports": [
            {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 18080, "PublishMode": "host"},
            {"Protocol": "tcp", "TargetPort": 9090, "PublishedPort": 19090, "PublishMode": "ingress"}
        ]});
        let p = plan(&assignment(spec, endpoint), &node()).unwrap();
        assert_eq!(p.name, "web.2.t1abc");
        assert_eq!(p.network, "shoal-web-svc01234-000000aa");
        assert_eq!(p.grace, Duration::from_secs(3));
        assert_eq!(p.body.healthcheck.as_ref().unwrap().retries, Some(2));
        let b = &p.body;
        assert_eq!(b.entrypoint.as_deref(), Some(&["/shoal".to_string()][..]));
        assert_eq!(b.cmd.as_ref().unwrap().join(" "), "whoami --port 8080");
        let labels = b.labels.as_ref().unwrap();
        assert_eq!(labels["tier"], "front");
        assert_eq!(labels[labels::NODE_ID], "00000000000000aa");
        assert_eq!(labels[labels::TASK_ID], "t1abc");
        assert_eq!(labels[labels::TASK_SLOT], "2");
        assert_eq!(labels[labels::SERVICE_NAME], "web");
        let env = b.env.as_ref().unwrap();
        assert!(env.contains(&"A=1".to_string()) && env.contains(&"SHOAL_TASK_NAME=web.2.t1abc".to_string()));
        assert_eq!(
            (b.working_dir.as_deref(), b.user.as_deref(), b.stop_signal.as_deref()),
            (Some("/tmp"), Some("65534"), Some("SIGINT"))
        );
        let h = b.host_config.as_ref().unwrap();
        assert_eq!((h.nano_cpus, h.memory), (Some(500_000_000), Some(67_108_864)));
        assert_eq!(
            h.restart_policy.as_ref().unwrap().name,
            Some(RestartPolicyNameEnum::NO),
            "restarts are the orchestrator's"
        );
        let mounts = h.mounts.as_ref().unwrap();
        assert_eq!((mounts[0].typ, mounts[0].read_only), (Some(MountType::BIND), Some(true)));
        assert_eq!(mounts[1].typ, Some(MountType::VOLUME));
        let ports = h.port_bindings.as_ref().unwrap();
        assert_eq!(ports.len(), 1, "only host-mode ports are bound on the node");
        let bind = &ports["8080/tcp"].as_ref().unwrap()[0];
        assert_eq!((bind.host_ip.as_deref(), bind.host_port.as_deref()), (Some("127.0.0.2"), Some("18080")));
        assert_eq!(b.exposed_ports.as_ref().unwrap().len(), 2);
        let nets = b.networking_config.as_ref().unwrap().endpoints_config.as_ref().unwrap();
        assert_eq!(nets["shoal-web-svc01234-000000aa"].aliases.as_deref(), Some(&["web".to_string()][..]));
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let e = plan(&assignment(serde_json::json!({"ContainerSpec": {}}), Value::Null), &node()).unwrap_err();
        assert!(e.contains("no image"), "{e}");
        let spec = serde_json::json!({"ContainerSpec": {"Image": "x", "Mounts": [{"Type": "npipe", "Target": "/x"}]}});
        let e = plan(&assignment(spec, Value::Null), &node()).unwrap_err();
        assert!(e.contains("npipe") && e.contains("bind, volume or tmpfs"), "{e}");
        let a = Assignment { task_spec: "{".into(), ..assignment(Value::Null, Value::Null) };
        assert!(plan(&a, &node()).unwrap_err().contains("not JSON"));
    }
}
