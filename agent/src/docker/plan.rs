//! What a task's container is made of, read from the task spec (Docker's `TaskTemplate`) and its
//! service's `EndpointSpec`. Pure: unit-tested without an engine.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use serde_json::Value;
use shoal_registry::rpc::wire::Assignment;

use super::{RuntimeNode, labels};

/// A task's container, as the engine is asked to create it.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) name: String,
    pub(super) image: String,
    pub(super) network: String,
    pub(super) service_id: String,
    pub(super) service_name: String,
    pub(super) body: ContainerCreateBody,
    pub(super) grace: Duration,
}

/// Host-mode port bindings by `PORT/PROTO`.
type Bindings = HashMap<String, Option<Vec<PortBinding>>>;

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
}

/// A positive integer (nanoseconds, bytes, a count); `None` for zero, negative or absent.
fn positive(v: &Value) -> Option<i64> {
    v.as_i64().filter(|n| *n > 0)
}

/// A string that is set and not empty.
fn non_empty(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// The container for `a` on `node`.
pub(super) fn plan(a: &Assignment, node: &RuntimeNode) -> Result<Plan, String> {
    let spec: Value = serde_json::from_str(&a.task_spec).map_err(|e| format!("the task spec is not JSON: {e}"))?;
    let c = &spec["ContainerSpec"];
    let image = c["Image"].as_str().unwrap_or_default().to_string();
    if image.is_empty() {
        return Err("the task has no image (ContainerSpec.Image)".into());
    }
    let name = container_name(a, node);
    let network = network_name(a, node);
    let labels = container_labels(c, a, node);
    let env = task_env(c, a, node, &name);
    let mounts = mounts(c)?;
    let (exposed, bindings) = ports(a, node)?;
    let grace = c["StopGracePeriod"].as_u64().map_or(Duration::from_secs(10), Duration::from_nanos);
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        entrypoint: strings(&c["Command"]).filter(|v| !v.is_empty()),
        cmd: strings(&c["Args"]).filter(|v| !v.is_empty()),
        env: Some(env),
        labels: Some(labels),
        working_dir: non_empty(&c["Dir"]),
        user: non_empty(&c["User"]),
        hostname: non_empty(&c["Hostname"]),
        stop_signal: non_empty(&c["StopSignal"]),
        stop_timeout: Some(grace.as_secs() as i64),
        tty: c["TTY"].as_bool(),
        healthcheck: healthcheck(&c["Healthcheck"]),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(host_config(c, &spec["Resources"]["Limits"], bindings, mounts)),
        networking_config: Some(networking(&network, &a.service_name)),
        ..Default::default()
    };
    Ok(Plan {
        name,
        image,
        network,
        service_id: a.task.service_id.clone(),
        service_name: a.service_name.clone(),
        body,
        grace,
    })
}

/// The service part of the names (`task` when the assignment has no service name).
fn service_part(a: &Assignment) -> &str {
    if a.service_name.is_empty() { "task" } else { a.service_name.as_str() }
}

/// `SERVICE.SLOT.TASK` as Swarm names containers; a global task's slot is its node.
fn container_name(a: &Assignment, node: &RuntimeNode) -> String {
    let t = &a.task;
    let slot = if t.slot > 0 { t.slot.to_string() } else { node.id.clone() };
    format!("{}.{slot}.{}", service_part(a), t.id)
}

/// One bridge network per service and node (a node is a host; nodes that share an engine in
/// tests keep theirs apart), named for both so that two clusters on one engine never meet.
fn network_name(a: &Assignment, node: &RuntimeNode) -> String {
    let short_id: String = a.task.service_id.chars().take(8).collect();
    format!("shoal-{}-{short_id}-{}", service_part(a), &node.id[node.id.len().saturating_sub(8)..])
}

/// The spec's labels plus Shoal's own, which win.
fn container_labels(c: &Value, a: &Assignment, node: &RuntimeNode) -> HashMap<String, String> {
    let t = &a.task;
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
    labels
}

/// The spec's environment followed by the `SHOAL_*` variables that tell a task where it runs.
fn task_env(c: &Value, a: &Assignment, node: &RuntimeNode, name: &str) -> Vec<String> {
    let t = &a.task;
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
    env
}

/// The spec's mounts, refused (as at create) when the runtime cannot make one.
fn mounts(c: &Value) -> Result<Vec<Mount>, String> {
    shoal_model::spec::check_mounts(&c["Mounts"]).map_err(|e| e.0)?;
    Ok(c["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| Mount {
            target: m["Target"].as_str().map(str::to_string),
            source: non_empty(&m["Source"]),
            typ: Some(match m["Type"].as_str() {
                Some("bind") => MountType::BIND,
                Some("tmpfs") => MountType::TMPFS,
                _ => MountType::VOLUME,
            }),
            read_only: m["ReadOnly"].as_bool(),
            ..Default::default()
        })
        .collect())
}

/// The `PORT/PROTO` of every published port (all exposed) and the bindings of the host-mode ones,
/// on the node's address.
fn ports(a: &Assignment, node: &RuntimeNode) -> Result<(Vec<String>, Bindings), String> {
    let mut exposed = Vec::new();
    let mut bindings: Bindings = HashMap::new();
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
    Ok((exposed, bindings))
}

/// The spec's health check, if it has a test (otherwise the image's applies).
fn healthcheck(h: &Value) -> Option<HealthConfig> {
    strings(&h["Test"]).filter(|t| !t.is_empty()).map(|test| HealthConfig {
        test: Some(test),
        interval: positive(&h["Interval"]),
        timeout: positive(&h["Timeout"]),
        retries: positive(&h["Retries"]),
        start_period: positive(&h["StartPeriod"]),
        ..Default::default()
    })
}

/// Bindings, mounts and limits. Docker's restart policy stays off: restarts are the orchestrator's.
fn host_config(c: &Value, limits: &Value, bindings: Bindings, mounts: Vec<Mount>) -> HostConfig {
    HostConfig {
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        mounts: (!mounts.is_empty()).then_some(mounts),
        nano_cpus: positive(&limits["NanoCPUs"]),
        memory: positive(&limits["MemoryBytes"]),
        pids_limit: positive(&limits["Pids"]),
        init: c["Init"].as_bool(),
        readonly_rootfs: c["ReadOnly"].as_bool(),
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        ..Default::default()
    }
}

/// The service's network, where the tasks of a service on one host reach each other by its name.
fn networking(network: &str, service_name: &str) -> NetworkingConfig {
    NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            network.to_string(),
            EndpointSettings { aliases: Some(vec![service_name.to_string()]), ..Default::default() },
        )])),
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
