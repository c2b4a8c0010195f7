//! The catalog as Consul's JSON: `ServiceNode` (catalog), `{Node, Service, Checks}` (health),
//! `AgentService`, `HealthCheck` and `Node`, with the fields real clients read (see
//! `../shared/reference/discovery.md` §2.8). Lists and maps clients iterate are never `null`.

use serde_json::{Value, json};
use shoal_model::catalog::read::{CheckView, HealthEntry, NodeView};
use shoal_model::catalog::{DATACENTER, Instance};

fn tagged_node(n: &NodeView) -> Value {
    json!({ "lan": n.address, "lan_ipv4": n.address, "wan": n.address, "wan_ipv4": n.address })
}

/// An instance's tagged addresses (Consul adds `lan_ipv4`/`wan_ipv4` for an IPv4 address).
fn tagged_service(address: &str, port: u16) -> Value {
    if address.is_empty() {
        return json!({});
    }
    let (lan, wan) = if address.contains(':') { ("lan_ipv6", "wan_ipv6") } else { ("lan_ipv4", "wan_ipv4") };
    json!({ lan: { "Address": address, "Port": port }, wan: { "Address": address, "Port": port } })
}

fn weights(i: &Instance) -> Value {
    json!({ "Passing": i.weights.passing, "Warning": i.weights.warning })
}

/// A node (`/v1/catalog/nodes`, the `Node` of a health entry).
pub(crate) fn node(n: &NodeView) -> Value {
    json!({
        "ID": n.id,
        "Node": n.name,
        "Address": n.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": tagged_node(n),
        "Meta": n.meta,
        "CreateIndex": n.create_index,
        "ModifyIndex": n.modify_index,
    })
}

/// An instance's meta with where it came from, so people can tell a task from a registration.
fn meta(i: &Instance) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in &i.meta {
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    m.entry("shoal-source").or_insert_with(|| Value::String(i.source.as_str().into()));
    if let Some(t) = &i.task_id {
        m.entry("shoal-task").or_insert_with(|| Value::String(t.to_string()));
    }
    Value::Object(m)
}

/// The `Service` of a health entry (`NodeService`).
pub(crate) fn node_service(i: &Instance) -> Value {
    let mut v = json!({
        "ID": i.id,
        "Service": i.name,
        "Tags": i.tags,
        "Address": i.address,
        "TaggedAddresses": tagged_service(&i.address, i.port),
        "Meta": meta(i),
        "Weights": weights(i),
        "EnableTagOverride": i.enable_tag_override,
        "Proxy": { "Mode": "", "MeshGateway": {}, "Expose": {} },
        "Connect": {},
        "PeerName": "",
        "Datacenter": DATACENTER,
        "CreateIndex": i.create_index,
        "ModifyIndex": i.modify_index,
    });
    if i.port != 0 {
        v["Port"] = json!(i.port);
    }
    v
}

/// `/v1/agent/services` values.
pub(crate) fn agent_service(i: &Instance) -> Value {
    json!({
        "ID": i.id,
        "Service": i.name,
        "Tags": i.tags,
        "Meta": meta(i),
        "Port": i.port,
        "Address": i.address,
        "TaggedAddresses": tagged_service(&i.address, i.port),
        "Weights": weights(i),
        "EnableTagOverride": i.enable_tag_override,
        "Datacenter": DATACENTER,
    })
}

/// `/v1/catalog/service/<name>` elements (`ServiceNode`).
pub(crate) fn service_node(n: &NodeView, i: &Instance) -> Value {
    json!({
        "ID": n.id,
        "Node": n.name,
        "Address": n.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": tagged_node(n),
        "NodeMeta": n.meta,
        "ServiceKind": "",
        "ServiceID": i.id,
        "ServiceName": i.name,
        "ServiceTags": i.tags,
        "ServiceAddress": i.address,
        "ServiceTaggedAddresses": tagged_service(&i.address, i.port),
        "ServiceWeights": weights(i),
        "ServiceMeta": meta(i),
        "ServicePort": i.port,
        "ServiceSocketPath": "",
        "ServiceEnableTagOverride": i.enable_tag_override,
        "ServiceProxy": { "Mode": "", "MeshGateway": {}, "Expose": {} },
        "ServiceConnect": {},
        "CreateIndex": i.create_index,
        "ModifyIndex": i.modify_index,
    })
}

fn ms(v: u64) -> String {
    if v == 0 {
        String::new()
    } else if v.is_multiple_of(1000) {
        format!("{}s", v / 1000)
    } else {
        format!("{v}ms")
    }
}

/// A `HealthCheck`.
pub(crate) fn check(c: &CheckView) -> Value {
    let k = &c.check;
    json!({
        "Node": c.node,
        "CheckID": k.id,
        "Name": k.name,
        "Status": k.consul_status(),
        "Notes": k.notes,
        "Output": k.output,
        "ServiceID": c.service_id,
        "ServiceName": c.service_name,
        "ServiceTags": c.service_tags,
        "Type": k.def.kind.type_name(),
        "Interval": ms(k.def.interval_ms),
        "Timeout": ms(k.def.timeout_ms),
        "ExposedPort": 0,
        "Definition": {},
        "CreateIndex": k.create_index,
        "ModifyIndex": k.modify_index,
    })
}

/// A `/v1/health/service/<name>` element.
pub(crate) fn health_entry(e: &HealthEntry) -> Value {
    json!({
        "Node": node(&e.node),
        "Service": node_service(&e.instance),
        "Checks": e.checks.iter().map(check).collect::<Vec<_>>(),
    })
}
