//! The engine as the registrator's [`ContainerSource`]: running containers as [`ContainerFacts`]
//! (from `inspect`, which has the image's config merged in) and the container events it follows.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::models::{ContainerInspectResponse, EventMessage, HealthStatusEnum};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::{DockerExecutor, not_found};
use crate::registrator::{
    ContainerAction, ContainerEvent, ContainerFacts, ContainerSource, DockerHealth, HostBinding, PortKey,
};

/// The actions asked of the engine (`health_status` matches `health_status: healthy` and the others).
const ACTIONS: [&str; 7] = ["start", "restart", "unpause", "rename", "health_status", "die", "destroy"];

#[async_trait]
impl ContainerSource for DockerExecutor {
    async fn list(&self) -> Result<Vec<ContainerFacts>, String> {
        let opts = ListContainersOptionsBuilder::default().all(false).build();
        let list = self.0.quick.list_containers(Some(opts)).await.map_err(|e| format!("docker engine: {e}"))?;
        let mut out = Vec::with_capacity(list.len());
        for id in list.into_iter().filter_map(|c| c.id) {
            // One that went between the list and its inspect is simply not there.
            out.extend(self.inspect(&id).await?);
        }
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerFacts>, String> {
        match self.0.quick.inspect_container(id, None).await {
            Ok(c) => Ok(Some(facts(c))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(format!("docker engine: {e}")),
        }
    }

    fn events(&self) -> BoxStream<'static, Result<ContainerEvent, String>> {
        // From a second ago: the engine replays what it saw since, so an event between this
        // subscription reaching the engine and the resync's list is not lost (replays are
        // harmless: every event is applied by inspecting the container again).
        let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs().saturating_sub(1));
        let filters = HashMap::from([("type", vec!["container"]), ("event", ACTIONS.to_vec())]);
        let opts = EventsOptionsBuilder::default().since(&since.to_string()).filters(&filters).build();
        self.0
            .long
            .events(Some(opts))
            .filter_map(|item| {
                futures::future::ready(match item {
                    Ok(m) => event(m).map(Ok),
                    Err(e) => Some(Err(format!("docker event stream: {e}"))),
                })
            })
            .boxed()
    }
}

/// A container event the registrator acts on, `None` for the others.
fn event(m: EventMessage) -> Option<ContainerEvent> {
    let action = m.action?;
    let action = match action.split(':').next().unwrap_or_default().trim() {
        "start" | "restart" | "unpause" => ContainerAction::Started,
        "rename" => ContainerAction::Renamed,
        "health_status" => ContainerAction::Health,
        "die" => ContainerAction::Died,
        "destroy" => ContainerAction::Destroyed,
        _ => return None,
    };
    Some(ContainerEvent { id: m.actor?.id?, action })
}

/// What the registrator needs of an inspected container.
fn facts(c: ContainerInspectResponse) -> ContainerFacts {
    let config = c.config.unwrap_or_default();
    let state = c.state.unwrap_or_default();
    let net = c.network_settings.unwrap_or_default();
    let mut exposed: std::collections::BTreeSet<PortKey> =
        config.exposed_ports.unwrap_or_default().iter().filter_map(|p| PortKey::parse(p)).collect();
    let mut published = std::collections::BTreeMap::new();
    for (key, bindings) in net.ports.unwrap_or_default() {
        let Some(p) = PortKey::parse(&key) else { continue };
        exposed.insert(p);
        let bindings: Vec<HostBinding> = bindings
            .unwrap_or_default()
            .into_iter()
            .map(|b| HostBinding {
                ip: b.host_ip.unwrap_or_default(),
                port: b.host_port.and_then(|p| p.parse().ok()).unwrap_or(0),
            })
            .filter(|b| b.port != 0)
            .collect();
        if !bindings.is_empty() {
            published.insert(p, bindings);
        }
    }
    let health = state.health.as_ref().and_then(|h| match h.status {
        Some(HealthStatusEnum::STARTING) => Some(DockerHealth::Starting),
        Some(HealthStatusEnum::HEALTHY) => Some(DockerHealth::Healthy),
        Some(HealthStatusEnum::UNHEALTHY) => Some(DockerHealth::Unhealthy),
        _ => None,
    });
    let test = config.healthcheck.and_then(|h| h.test).unwrap_or_default();
    let has_healthcheck = health.is_some() || test.first().is_some_and(|t| t != "NONE");
    ContainerFacts {
        id: c.id.unwrap_or_default(),
        name: c.name.unwrap_or_default().trim_start_matches('/').to_string(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        env: config.env.unwrap_or_default(),
        exposed,
        published,
        networks: net
            .networks
            .unwrap_or_default()
            .into_iter()
            .map(|(name, e)| (name, e.ip_address.unwrap_or_default()))
            .collect(),
        running: state.running.unwrap_or(false),
        health,
        has_healthcheck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerConfig, ContainerState, EndpointSettings, EventActor, Health, HealthConfig, NetworkSettings,
        PortBinding,
    };

    #[test]
    fn an_inspected_container_becomes_facts() {
        let c = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/web.1.t1".into()),
            config: Some(ContainerConfig {
                image: Some("shoal:local".into()),
                env: Some(vec!["A=1".into()]),
                labels: Some(HashMap::from([("shoal.task.id".to_string(), "t1".to_string())])),
                exposed_ports: Some(vec!["8080/tcp".into(), "9090/tcp".into()]),
                healthcheck: Some(HealthConfig { test: Some(vec!["CMD".into(), "/x".into()]), ..Default::default() }),
                ..Default::default()
            }),
            state: Some(ContainerState {
                running: Some(true),
                health: Some(Health { status: Some(HealthStatusEnum::HEALTHY), ..Default::default() }),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                ports: Some(HashMap::from([
                    (
                        "8080/tcp".to_string(),
                        Some(vec![PortBinding { host_ip: Some("127.0.0.2".into()), host_port: Some("18080".into()) }]),
                    ),
                    ("9090/tcp".to_string(), None),
                    ("53/udp".to_string(), Some(vec![])),
                ])),
                networks: Some(HashMap::from([(
                    "shoal-web".to_string(),
                    EndpointSettings { ip_address: Some("172.18.0.3".into()), ..Default::default() },
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = facts(c);
        assert_eq!((f.id.as_str(), f.name.as_str(), f.image.as_str()), ("abc", "web.1.t1", "shoal:local"));
        assert_eq!(f.labels["shoal.task.id"], "t1");
        let exposed: Vec<String> = f.exposed.iter().map(|p| p.to_string()).collect();
        assert_eq!(exposed, ["53/udp", "8080/tcp", "9090/tcp"]);
        assert_eq!(f.published.len(), 1, "only ports with a host port are published");
        assert_eq!(f.published[&PortKey::tcp(8080)], vec![HostBinding { ip: "127.0.0.2".into(), port: 18080 }]);
        assert_eq!(f.networks["shoal-web"], "172.18.0.3");
        assert!(f.running && f.has_healthcheck);
        assert_eq!(f.health, Some(DockerHealth::Healthy));
    }

    #[test]
    fn engine_events_are_read() {
        let m = |action: &str| EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor { id: Some("abc".into()), attributes: None }),
            ..Default::default()
        };
        let cases = [
            ("start", Some(ContainerAction::Started)),
            ("restart", Some(ContainerAction::Started)),
            ("health_status: healthy", Some(ContainerAction::Health)),
            ("health_status: unhealthy", Some(ContainerAction::Health)),
            ("die", Some(ContainerAction::Died)),
            ("destroy", Some(ContainerAction::Destroyed)),
            ("rename", Some(ContainerAction::Renamed)),
            ("exec_start: /bin/true", None),
            ("pause", None),
        ];
        for (action, want) in cases {
            assert_eq!(event(m(action)).map(|e| e.action), want, "{action}");
        }
        assert_eq!(event(EventMessage { actor: None, ..m("start") }), None, "no actor: nothing to inspect");
    }

    /// Against the real engine: `cargo test -p shoal-agent -- --ignored engine_`. The container is
    /// labelled `shoal.test=registrator-helper` and removed even when the test fails.
    #[tokio::test]
    #[ignore = "needs the Docker engine and the shoal:local image (compose/build-image.sh)"]
    async fn engine_events_and_facts_of_a_published_container() {
        let node = super::super::RuntimeNode { id: "00000000000000ee".into(), name: "smoke".into(), publish_ip: None };
        let x = DockerExecutor::connect(node).await.expect("engine");
        let name = format!("shoal-registrator-smoke-{}", std::process::id());
        let result = smoke(&x, &name).await;
        let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = x.0.quick.remove_container(&name, Some(rm)).await;
        result.unwrap();
    }

    async fn smoke(x: &DockerExecutor, name: &str) -> Result<(), String> {
        use crate::registrator::{NodeFacts, derive};
        use bollard::models::{ContainerCreateBody, HostConfig};

        let mut events = x.events();
        let body = ContainerCreateBody {
            image: Some("shoal:local".into()),
            cmd: Some(vec!["whoami".into()]),
            labels: Some(HashMap::from([
                ("shoal.test".to_string(), "registrator-helper".to_string()),
                ("shoal.service".to_string(), "smoke".to_string()),
            ])),
            exposed_ports: Some(vec!["8080/tcp".into()]),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    "8080/tcp".to_string(),
                    Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default().name(name).build();
        let id = x.0.quick.create_container(Some(opts), body).await.map_err(|e| e.to_string())?.id;
        x.0.quick.start_container(&id, None).await.map_err(|e| e.to_string())?;
        until(&mut events, &id, ContainerAction::Started).await?;
        let facts = x.list().await?.into_iter().find(|f| f.id == id).ok_or("not listed")?;
        let node = NodeFacts {
            id: "00000000000000ee".into(),
            name: "smoke".into(),
            address: "127.0.0.2".into(),
            register_others: true,
        };
        let d = derive(&facts, &node);
        let [(_, i)] = d.instances.as_slice() else { return Err(format!("one instance expected: {d:?}")) };
        if (i.name.as_str(), i.address.as_str(), i.id.clone()) != ("smoke", "127.0.0.1", format!("smoke:{name}:8080"))
            || i.port == 0
        {
            return Err(format!("unexpected instance {i:?}"));
        }
        let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::default().force(true).build();
        x.0.quick.remove_container(&id, Some(rm)).await.map_err(|e| e.to_string())?;
        until(&mut events, &id, ContainerAction::Destroyed).await?;
        match x.inspect(&id).await? {
            None => Ok(()),
            Some(_) => Err("still there after removal".into()),
        }
    }

    async fn until(
        events: &mut BoxStream<'static, Result<ContainerEvent, String>>,
        id: &str,
        want: ContainerAction,
    ) -> Result<(), String> {
        let seen = async {
            while let Some(e) = events.next().await {
                let e = e?;
                if e.id == id && e.action == want {
                    return Ok(());
                }
            }
            Err("the event stream ended".to_string())
        };
        let limit = std::time::Duration::from_secs(20);
        tokio::time::timeout(limit, seen).await.map_err(|_| format!("no {want:?} event"))?
    }
}
