//! The [`Executor`] half of the Docker runtime: controllers for tasks, this node's containers
//! (found by their labels), removing them, and their logs. The listing helpers here are shared
//! with the controllers.

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use shoal_registry::rpc::wire::Assignment;

use super::controller::DockerController;
use super::plan::plan;
use super::{DockerExecutor, Inner, labels, not_found, server_message, temporary};
use crate::exec::{Controller, ExecError, Executor, LogLine, LogStream, Owned};

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
        Ok(Box::new(DockerController::new(self.0.clone(), a.task.id.clone(), plan)))
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
pub(super) async fn find(x: &Inner, task_id: &str) -> Result<Option<(String, bool)>, ExecError> {
    let list = mine(x, Some(format!("{}={task_id}", labels::TASK_ID))).await.map_err(temporary)?;
    Ok(list.into_iter().find_map(|c| Some((c.id?, c.state == Some(ContainerSummaryStateEnum::RUNNING)))))
}

/// Removes this node's network for a service once no container of it is left here.
pub(super) async fn release_network(x: &Inner, network: &str, service_id: &str) {
    let mut known = x.networks.write().await;
    if let Ok(list) = mine(x, Some(format!("{}={service_id}", labels::SERVICE_ID))).await
        && list.is_empty()
        && x.quick.remove_network(network).await.is_ok()
        && let Some(dns) = known.remove(network)
        && let (Some(gateway), Some(resolver)) = (dns, &x.resolver)
    {
        resolver.release(gateway).await;
    }
}

/// Removes a container and its anonymous volumes (one gone, or being removed, counts as removed).
pub(super) async fn remove(x: &Inner, id: &str) -> Result<(), ExecError> {
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

/// A container's log as lines (a followed log goes through the long-lived client).
pub(super) fn log_lines(x: &Inner, id: &str, follow: bool, tail: Option<u64>) -> LogStream {
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
