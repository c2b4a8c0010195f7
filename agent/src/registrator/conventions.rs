//! Which catalog instances a container is: Shoal's task labels and Registrator's `SERVICE_*`
//! conventions (`../shared/reference/discovery.md` §1), as one pure function of what the engine
//! says about a container and who this node is. No I/O: table-tested in `conventions/tests.rs`.
//!
//! ```text
//! ContainerFacts ─▶ not running / another node's task / SERVICE_IGNORE ─▶ ignored (why)
//!                ─▶ task (shoal.task.id): name shoal.service.name, ID the container name
//!                ─▶ other (shoal.service, SERVICE_[<port>_]NAME): ID <node>:<container>:<port>[:udp]
//!                     ports ─▶ names (group rule) ─▶ tags, meta (Consul's rules) ─▶ checks
//! ```

mod checks;
mod facts;

use std::collections::BTreeMap;

use shoal_model::catalog::{InstanceSpec, Source, Weights, validate_check, validate_instance};

pub use checks::{docker_check_id, docker_status};
pub use facts::{ContainerFacts, Derivation, DockerHealth, HostBinding, NodeFacts, PortKey, Proto};

use crate::docker::labels;

/// Shoal's own labels for containers it did not start (and for tasks: `shoal.port`, tags, checks).
pub mod keys {
    /// Registers the container under this service name (like `SERVICE_NAME`); without a published
    /// port it is registered on its container IP and exposed ports.
    pub const SERVICE: &str = "shoal.service";
    /// The one container port (`8080` or `8080/udp`) to register when it has several.
    pub const PORT: &str = "shoal.port";
    /// Extra tags, comma-separated (`\,` escapes a comma), as `SERVICE_TAGS`.
    pub const TAGS: &str = "shoal.tags";
    /// `shoal.check.<key>` is `SERVICE_CHECK_<KEY>`: `shoal.check.http`, `.tcp`, `.interval`, `.timeout` …
    pub const CHECK_PREFIX: &str = "shoal.check.";
}

/// Consul's limit on a service's meta pairs.
const MAX_META: usize = 64;

/// The catalog instances of container `c` on `node` (see [`derive`] for why some are left out).
pub fn instances(c: &ContainerFacts, node: &NodeFacts) -> Vec<(Source, InstanceSpec)> {
    derive(c, node).instances
}

/// The catalog instances of container `c` on `node`, and the reasons for what was left out.
pub fn derive(c: &ContainerFacts, node: &NodeFacts) -> Derivation {
    if !c.running {
        return Derivation::ignored("not running");
    }
    let keys = ServiceKeys::read(c);
    if keys.generic("ignore").is_some() {
        return Derivation::ignored("SERVICE_IGNORE is set");
    }
    let mut d = Derivation::default();
    match c.labels.get(labels::TASK_ID) {
        Some(task_id) => {
            let owner = c.labels.get(labels::NODE_ID).map_or("", String::as_str);
            if owner != node.id {
                return Derivation::ignored(format!("a task of another node ({owner:?})"));
            }
            let service = c.labels.get(labels::SERVICE_NAME).map_or("", String::as_str);
            if service.is_empty() {
                return Derivation::ignored(format!("task container without a {} label", labels::SERVICE_NAME));
            }
            task_instances(c, node, &keys, task_id, service, &mut d);
        }
        None => {
            if !node.register_others {
                return Derivation::ignored("not a Shoal task (registering other containers is off)");
            }
            if c.label(keys::SERVICE).is_none() && keys.generic("name").is_none() && !keys.any_scoped("name") {
                return Derivation::ignored(format!("names no service ({}, SERVICE_NAME)", keys::SERVICE));
            }
            other_instances(c, node, &keys, &mut d);
        }
    }
    if d.instances.is_empty() && d.ignored.is_none() {
        d.ignored = Some(d.skipped.last().cloned().unwrap_or_else(|| "no instance".into()));
    }
    d
}

/// A container's `SERVICE_*` keys (env, then labels, so a label wins), lower-cased after the
/// prefix; `SERVICE_<port>_<key>` apply to that port only and win over the generic key.
pub(super) struct ServiceKeys {
    generic: BTreeMap<String, String>,
    scoped: BTreeMap<u16, BTreeMap<String, String>>,
    /// `shoal.*` labels standing for a key (`shoal.check.http` → `check_http`).
    shoal: BTreeMap<String, String>,
}

impl ServiceKeys {
    fn read(c: &ContainerFacts) -> Self {
        let mut keys = ServiceKeys { generic: BTreeMap::new(), scoped: BTreeMap::new(), shoal: BTreeMap::new() };
        let env = c.env.iter().filter_map(|e| e.split_once('='));
        for (k, v) in env.chain(c.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            let Some(rest) = k.strip_prefix("SERVICE_") else { continue };
            let rest = rest.to_lowercase();
            let scoped = rest.split_once('_').and_then(|(p, key)| Some((p.parse::<u16>().ok()?, key)));
            match scoped {
                Some((port, key)) if !key.is_empty() => {
                    keys.scoped.entry(port).or_default().insert(key.to_string(), v.to_string());
                }
                _ => {
                    keys.generic.insert(rest, v.to_string());
                }
            }
        }
        for (k, v) in &c.labels {
            if let Some(key) = k.strip_prefix(keys::CHECK_PREFIX) {
                keys.shoal.insert(format!("check_{}", key.replace(['.', '-'], "_")), v.clone());
            }
        }
        if let Some(name) = c.label(keys::SERVICE) {
            keys.shoal.insert("name".into(), name.to_string());
        }
        keys
    }

    /// A generic key's value (empty is unset, as Registrator's `mapDefault`).
    fn generic(&self, key: &str) -> Option<&str> {
        self.generic.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A port-scoped key's value.
    fn scoped(&self, port: Option<u16>, key: &str) -> Option<&str> {
        self.scoped.get(&port?)?.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn any_scoped(&self, key: &str) -> bool {
        self.scoped.values().any(|m| m.get(key).is_some_and(|v| !v.is_empty()))
    }

    /// A key for `port`: its port-scoped value, else the Shoal label's, else the generic value.
    pub(super) fn get(&self, port: Option<u16>, key: &str) -> Option<&str> {
        self.scoped(port, key)
            .or_else(|| self.shoal.get(key).map(String::as_str).filter(|v| !v.is_empty()))
            .or_else(|| self.generic(key))
    }

    /// The keys that become meta for `port` (every key but `id`, `tags` and `name`, as Registrator).
    fn meta(&self, port: Option<u16>) -> BTreeMap<String, String> {
        let mut all = self.generic.clone();
        if let Some(scoped) = port.and_then(|p| self.scoped.get(&p)) {
            all.extend(scoped.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        all.retain(|k, v| !v.is_empty() && !matches!(k.as_str(), "id" | "tags" | "name"));
        all
    }
}

/// One instance to be made: where it is and how it is named.
pub(super) struct Draft<'a> {
    pub(super) source: Source,
    pub(super) id: String,
    pub(super) name: String,
    pub(super) address: String,
    pub(super) port: u16,
    /// The container port it stands for (`None`: a container without ports).
    pub(super) container_port: Option<PortKey>,
    pub(super) task_id: Option<&'a str>,
}

/// The ports to register: `shoal.port` when it names one of the container's ports, else `candidates`.
fn chosen_ports(c: &ContainerFacts, candidates: Vec<PortKey>, d: &mut Derivation) -> Vec<PortKey> {
    let Some(want) = c.label(keys::PORT) else { return candidates };
    let all = c.all_ports();
    let found = PortKey::parse(want).and_then(|p| {
        // `8080` means 8080/tcp, or the one protocol 8080 has.
        all.get(&p)
            .copied()
            .or_else(|| (!want.contains('/')).then(|| all.iter().find(|k| k.port == p.port)).flatten().copied())
    });
    match found {
        Some(p) => vec![p],
        None => {
            tracing::warn!(container = %c.name, port = %want, "the shoal.port label names none of the container's ports; ignoring it");
            d.skipped.push(format!("{} {want:?} is not one of the container's ports", keys::PORT));
            candidates
        }
    }
}

fn udp_suffix(p: Option<PortKey>) -> &'static str {
    if p.is_some_and(|p| p.proto == Proto::Udp) { ":udp" } else { "" }
}

fn task_instances(
    c: &ContainerFacts,
    node: &NodeFacts,
    keys: &ServiceKeys,
    task_id: &str,
    service: &str,
    d: &mut Derivation,
) {
    let published = c.published_ports(node);
    let container_ip = c.container_ip().unwrap_or(&node.address).to_string();
    // A task that publishes host-mode ports is reached there; otherwise on its network.
    let candidates: Vec<PortKey> =
        if published.is_empty() { c.all_ports().into_iter().collect() } else { published.keys().copied().collect() };
    let ports = chosen_ports(c, candidates, d);
    let group = ports.len() > 1;
    let mut drafts = Vec::new();
    if ports.is_empty() {
        drafts.push(Draft {
            source: Source::Task,
            id: c.name.clone(),
            name: service.to_string(),
            address: container_ip.clone(),
            port: 0,
            container_port: None,
            task_id: Some(task_id),
        });
    }
    for p in ports {
        if keys.scoped(Some(p.port), "ignore").is_some() {
            d.skipped.push(format!("port {p}: SERVICE_{}_IGNORE is set", p.port));
            continue;
        }
        let (address, port) = published.get(&p).cloned().unwrap_or_else(|| (container_ip.clone(), p.port));
        let (id, name) = if group {
            (format!("{}:{}{}", c.name, p.port, udp_suffix(Some(p))), format!("{service}-{}", p.port))
        } else {
            (c.name.clone(), service.to_string())
        };
        drafts.push(Draft {
            source: Source::Task,
            id,
            name,
            address,
            port,
            container_port: Some(p),
            task_id: Some(task_id),
        });
    }
    for draft in drafts {
        finish(c, keys, draft, d);
    }
}

fn other_instances(c: &ContainerFacts, node: &NodeFacts, keys: &ServiceKeys, d: &mut Derivation) {
    let published = c.published_ports(node);
    let internal = published.is_empty() && c.label(keys::SERVICE).is_some();
    if published.is_empty() && !internal {
        d.ignored = Some("no published ports".into());
        return;
    }
    let container_ip = c.container_ip().unwrap_or(&node.address).to_string();
    let candidates: Vec<PortKey> =
        if internal { c.exposed.iter().copied().collect() } else { published.keys().copied().collect() };
    let ports = chosen_ports(c, candidates, d);
    // Registrator's group rule: decided on the ports kept so far, before ignored or unnamed ones go.
    let group = ports.len() > 1;
    if ports.is_empty() {
        let name = keys.get(None, "name").unwrap_or_default().to_string();
        let id = format!("{}:{}", node.name, c.name);
        let draft = Draft {
            source: Source::Registrator,
            id,
            name,
            address: container_ip,
            port: 0,
            container_port: None,
            task_id: None,
        };
        finish(c, keys, draft, d);
        return;
    }
    for p in ports {
        if keys.scoped(Some(p.port), "ignore").is_some() {
            d.skipped.push(format!("port {p}: SERVICE_{}_IGNORE is set", p.port));
            continue;
        }
        let scoped_name = keys.scoped(Some(p.port), "name");
        let Some(base) = keys.get(Some(p.port), "name") else {
            d.skipped.push(format!("port {p}: names no service"));
            continue;
        };
        let name = if group && scoped_name.is_none() { format!("{base}-{}", p.port) } else { base.to_string() };
        let (address, port) = published.get(&p).cloned().unwrap_or_else(|| (container_ip.clone(), p.port));
        let id = format!("{}:{}:{}{}", node.name, c.name, p.port, udp_suffix(Some(p)));
        let draft =
            Draft { source: Source::Registrator, id, name, address, port, container_port: Some(p), task_id: None };
        finish(c, keys, draft, d);
    }
}

/// Adds tags, meta and checks to a draft and keeps it if the catalog would take it.
fn finish(c: &ContainerFacts, keys: &ServiceKeys, draft: Draft, d: &mut Derivation) {
    let scope = draft.container_port.map(|p| p.port);
    let mut tags = Vec::new();
    for t in keys.get(scope, "tags").map(split_tags).into_iter().chain(c.label(keys::TAGS).map(split_tags)).flatten() {
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if draft.container_port.is_some_and(|p| p.proto == Proto::Udp) && !tags.iter().any(|t| t == "udp") {
        tags.push("udp".into());
    }
    let meta = valid_meta(keys.meta(scope), &draft.id, d);
    let mut checks = Vec::new();
    checks.extend(checks::service_check(c, keys, &draft, d));
    checks.extend(checks::docker_check(c, &draft));
    checks.retain(|check| match validate_check(check) {
        Ok(()) => true,
        Err(why) => {
            d.skipped.push(format!("{}: check left out: {}", draft.id, why.message));
            false
        }
    });
    let spec = InstanceSpec {
        id: draft.id,
        name: draft.name,
        tags,
        address: draft.address,
        port: draft.port,
        meta,
        weights: Weights::default(),
        enable_tag_override: false,
        task_id: draft.task_id.map(str::to_string),
        container_id: Some(c.id.clone()),
        checks,
    };
    match validate_instance(&spec) {
        Ok(()) => d.instances.push((draft.source, spec)),
        Err(why) => d.skipped.push(format!("{}: not registered: {}", spec.id, why.message)),
    }
}

/// Splits a tag list on unescaped commas (`\,` is a comma); empty items go, items are not trimmed.
fn split_tags(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(ch),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The pairs Consul would accept (`validateMetaPair`); the others are reported, not fatal.
fn valid_meta(meta: BTreeMap<String, String>, id: &str, d: &mut Derivation) -> BTreeMap<String, String> {
    let mut kept = BTreeMap::new();
    for (k, v) in meta {
        let why = if k.len() > 128 || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            Some("use 1-128 of a-z, A-Z, 0-9, '_' and '-'")
        } else if k.starts_with("consul-") {
            Some("the prefix \"consul-\" is reserved")
        } else if v.len() > 512 {
            Some("the value is longer than 512 bytes")
        } else if kept.len() == MAX_META {
            Some("more than 64 pairs")
        } else {
            None
        };
        match why {
            Some(why) => d.skipped.push(format!("{id}: meta key {k:?} left out: {why}")),
            None => {
                kept.insert(k, v);
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests;
