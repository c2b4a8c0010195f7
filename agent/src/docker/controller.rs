//! One task's container: the [`Controller`] operations (prepare, start, wait, shutdown, terminate,
//! remove) and what they need (the image, the service's network, the health check). Every operation
//! is idempotent and finds the container by the task's label when it does not know it yet, which is
//! how a restarted agent adopts its containers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{HealthStatusEnum, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::sync::RwLockReadGuard;

use super::executor::{find, log_lines, release_network, remove};
use super::plan::Plan;
use super::{Inner, labels, not_found, resolver, server_message, temporary};
use crate::exec::{Controller, ExecError, Exit};

/// Drives one task's container.
pub(super) struct DockerController {
    x: Arc<Inner>,
    task_id: String,
    /// `None` once the service is gone: the container can still be found, stopped and removed.
    plan: Option<Plan>,
    /// The container, once created or found.
    id: Option<String>,
}

impl DockerController {
    pub(super) fn new(x: Arc<Inner>, task_id: String, plan: Option<Plan>) -> Self {
        Self { x, task_id, plan, id: None }
    }

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
    ) -> Result<RwLockReadGuard<'_, HashMap<String, Option<IpAddr>>>, ExecError> {
        let known = self.x.networks.read().await;
        if known.contains_key(&plan.network) {
            return Ok(known);
        }
        drop(known);
        let mut known = self.x.networks.write().await;
        if !known.contains_key(&plan.network) {
            let network = match self.x.quick.inspect_network(&plan.network, None).await {
                Ok(n) => n,
                Err(e) if not_found(&e) => {
                    self.create_network(plan).await?;
                    self.x.quick.inspect_network(&plan.network, None).await.map_err(temporary)?
                }
                Err(e) => return Err(temporary(e)),
            };
            let dns = self.serve_dns(&plan.network, resolver::gateway(network.ipam.as_ref())).await;
            known.insert(plan.network.clone(), dns);
        }
        Ok(known.downgrade())
    }

    /// Starts the node's resolver on the network's gateway; the address its containers are given,
    /// or `None` (Docker's default DNS) when there is no resolver or it cannot listen there.
    async fn serve_dns(&self, network: &str, gateway: Option<IpAddr>) -> Option<IpAddr> {
        let resolver = self.x.resolver.as_ref()?;
        let Some(gateway) = gateway else {
            tracing::warn!(network, "the network has no IPv4 gateway; its containers keep Docker's DNS");
            return None;
        };
        match resolver.serve_on(gateway).await {
            Ok(()) => Some(gateway),
            Err(e) => {
                tracing::warn!(network, %gateway, error = %e, "no DNS for this network's containers; they keep Docker's DNS");
                None
            }
        }
    }

    /// A bridge network for the service on this node, labelled with both.
    async fn create_network(&self, plan: &Plan) -> Result<(), ExecError> {
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
            Ok(_) => Ok(()),
            Err(e) if server_message(&e).is_some() => {
                Err(ExecError::Failed(format!("cannot create network {}: {e}", plan.network)))
            }
            Err(e) => Err(temporary(e)),
        }
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
            let mut body = plan.body.clone();
            if let (Some(Some(dns)), Some(resolver)) = (networks.get(&plan.network), &self.x.resolver)
                && let Some(host) = body.host_config.as_mut()
                && host.dns.is_none()
            {
                host.dns = Some(vec![dns.to_string()]);
                host.dns_search = Some(resolver.search_domains());
            }
            let opts = CreateContainerOptionsBuilder::default().name(&plan.name).build();
            let created = self.x.quick.create_container(Some(opts), body).await;
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
