//! The checks of an instance: the one `SERVICE_CHECK_*` (or `shoal.check.*`) asks for, and the
//! one that follows the container's Docker health.

use std::collections::BTreeMap;

use shoal_model::catalog::{CheckDef, CheckKind, CheckSpec, Health};
use shoal_model::duration;

use super::{ContainerFacts, Derivation, DockerHealth, Draft, ServiceKeys};

/// How often a check is probed unless `SERVICE_CHECK_INTERVAL` says otherwise (Registrator's).
const DEFAULT_INTERVAL_MS: u64 = 10_000;
/// A probe's time limit unless `SERVICE_CHECK_TIMEOUT` says otherwise (Consul's HTTP/TCP default).
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Consul's default time limit for a script check.
const DEFAULT_EXEC_TIMEOUT_MS: u64 = 30_000;

/// `host:port` with IPv6 addresses in brackets.
fn host_port(address: &str, port: u16) -> String {
    if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") }
}

fn millis(keys: &ServiceKeys, scope: Option<u16>, key: &str, id: &str, d: &mut Derivation) -> Option<u64> {
    let v = keys.get(scope, key)?;
    match duration::parse(v) {
        Some(t) => Some(t.as_millis() as u64),
        None => {
            d.skipped.push(format!("{id}: SERVICE_{} {v:?} is not a duration (e.g. \"10s\")", key.to_uppercase()));
            None
        }
    }
}

/// The instance's one check from `SERVICE_CHECK_*` (the first of HTTP, HTTPS, CMD, SCRIPT, TTL, TCP).
pub(super) fn service_check(
    c: &ContainerFacts,
    keys: &ServiceKeys,
    draft: &Draft,
    d: &mut Derivation,
) -> Option<CheckSpec> {
    let scope = draft.container_port.map(|p| p.port);
    let get = |key: &str| keys.get(scope, key);
    let (addr, port) = (draft.address.as_str(), draft.port);
    let needs_port = |kind: &str, d: &mut Derivation| {
        if port == 0 {
            d.skipped.push(format!("{}: a {kind} check needs a port; left out", draft.id));
        }
        port != 0
    };
    let exec = |cmd: &str| CheckKind::Exec {
        args: cmd
            .replace("$SERVICE_IP", addr)
            .replace("$SERVICE_PORT", &port.to_string())
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        container: c.id.clone(),
    };
    let http = |scheme: &str, path: &str| CheckKind::Http {
        url: format!("{scheme}://{}{path}", host_port(addr, port)),
        method: get(&format!("check_{scheme}_method")).unwrap_or("GET").to_string(),
        headers: BTreeMap::new(),
        tls_skip_verify: false,
    };
    let kind = if let Some(path) = get("check_http") {
        needs_port("http", d).then(|| http("http", path))?
    } else if let Some(path) = get("check_https") {
        needs_port("https", d).then(|| http("https", path))?
    } else if let Some(cmd) = get("check_cmd") {
        exec(cmd)
    } else if let Some(script) = get("check_script") {
        exec(script)
    } else if get("check_ttl").is_some() {
        CheckKind::Ttl { ttl_ms: millis(keys, scope, "check_ttl", &draft.id, d)? }
    } else if get("check_tcp").is_some() {
        needs_port("tcp", d).then(|| CheckKind::Tcp { addr: host_port(addr, port) })?
    } else {
        return None;
    };
    let probed = kind.is_probed();
    let default_timeout =
        if matches!(kind, CheckKind::Exec { .. }) { DEFAULT_EXEC_TIMEOUT_MS } else { DEFAULT_TIMEOUT_MS };
    let interval_ms = millis(keys, scope, "check_interval", &draft.id, d).unwrap_or(DEFAULT_INTERVAL_MS);
    let timeout_ms = millis(keys, scope, "check_timeout", &draft.id, d).unwrap_or(default_timeout);
    let status = match get("check_initial_status").map(Health::parse_status) {
        None => Health::Critical,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            d.skipped.push(format!("{}: SERVICE_CHECK_INITIAL_STATUS: {e}", draft.id));
            Health::Critical
        }
    };
    Some(CheckSpec {
        id: format!("service:{}", draft.id),
        name: format!("Service '{}' check", draft.name),
        notes: String::new(),
        def: CheckDef {
            kind,
            interval_ms: if probed { interval_ms } else { 0 },
            timeout_ms: if probed { timeout_ms } else { 0 },
            deregister_after_ms: millis(keys, scope, "check_deregister_after", &draft.id, d),
            ..CheckDef::manual()
        },
        status,
        output: String::new(),
    })
}

/// The check that follows the container's Docker health (it has a `HEALTHCHECK`).
pub(super) fn docker_check(c: &ContainerFacts, draft: &Draft) -> Option<CheckSpec> {
    if !c.has_healthcheck && c.health.is_none() {
        return None;
    }
    let (status, output) = docker_status(c.health);
    Some(CheckSpec {
        id: docker_check_id(&draft.id),
        name: format!("Service '{}' Docker health", draft.name),
        notes: "the container's HEALTHCHECK, as the engine reports it".into(),
        def: CheckDef { kind: CheckKind::Docker { container: c.id.clone() }, ..CheckDef::manual() },
        status,
        output: output.into(),
    })
}

/// The ID of the check that follows an instance's Docker health.
pub fn docker_check_id(instance_id: &str) -> String {
    format!("service:{instance_id}:docker")
}

/// A Docker health as a check status and output.
pub fn docker_status(health: Option<DockerHealth>) -> (Health, &'static str) {
    match health {
        Some(DockerHealth::Healthy) => (Health::Passing, "healthy"),
        Some(DockerHealth::Unhealthy) => (Health::Critical, "unhealthy"),
        Some(DockerHealth::Starting) | None => (Health::Critical, "starting"),
    }
}
