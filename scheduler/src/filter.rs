//! Placement filters: each says whether it applies to a service, checks one node, and explains its
//! refusals; the [`Pipeline`] counts refusals per filter so "no suitable node" says why (swarmkit's
//! `filter.go` / `pipeline.go`).

use shoal_model::spec::{ConstraintKey, ServiceSpec};
use shoal_model::{Availability, Role};

use crate::snapshot::{NodeInfo, NodeUsage};

/// One placement rule.
pub trait Filter: Sync {
    /// Whether the rule has anything to say about this service.
    fn applies(&self, spec: &ServiceSpec) -> bool;
    /// Whether `node` (with `usage`) can take one more task of `service_id`.
    fn check(&self, spec: &ServiceSpec, service_id: &str, node: &NodeInfo, usage: &NodeUsage) -> bool;
    /// Why `n` nodes were refused ("insufficient memory on 3 nodes").
    fn explain(&self, n: usize) -> String;
    /// Whether the verdict can change as tasks are placed (resources, ports, per-node limits).
    fn depends_on_usage(&self) -> bool;
}

fn nodes(n: usize) -> String {
    if n == 1 { "1 node".into() } else { format!("{n} nodes") }
}

/// Ready and active.
pub struct Available;
impl Filter for Available {
    fn applies(&self, _: &ServiceSpec) -> bool {
        true
    }
    fn check(&self, _: &ServiceSpec, _: &str, node: &NodeInfo, _: &NodeUsage) -> bool {
        node.ready && node.availability == Availability::Active
    }
    fn explain(&self, n: usize) -> String {
        format!("{} not available", nodes(n))
    }
    fn depends_on_usage(&self) -> bool {
        false
    }
}

/// `node.id`, `node.hostname`, `node.role`, `node.labels.K` with `==` / `!=`.
pub struct Constraints;
impl Filter for Constraints {
    fn applies(&self, spec: &ServiceSpec) -> bool {
        !spec.constraints.is_empty()
    }
    fn check(&self, spec: &ServiceSpec, _: &str, node: &NodeInfo, _: &NodeUsage) -> bool {
        spec.constraints.iter().all(|c| {
            let actual = match &c.key {
                ConstraintKey::NodeId => Some(format!("{:016x}", node.id)),
                ConstraintKey::Hostname => Some(node.hostname.clone()),
                ConstraintKey::Role => Some(match node.role {
                    Role::Manager => "manager".to_string(),
                    Role::Worker => "worker".to_string(),
                }),
                ConstraintKey::Label(k) => node.labels.get(k).cloned(),
            };
            // A missing label is "not equal" (Docker's behaviour).
            let equal =
                actual.is_some_and(|a| a == c.value || (c.key == ConstraintKey::NodeId && a.starts_with(&c.value)));
            equal == c.equal
        })
    }
    fn explain(&self, n: usize) -> String {
        format!("scheduling constraints not satisfied on {}", nodes(n))
    }
    fn depends_on_usage(&self) -> bool {
        false
    }
}

/// Reserved memory against capacity.
pub struct Memory;
impl Filter for Memory {
    fn applies(&self, spec: &ServiceSpec) -> bool {
        spec.reserve_memory > 0
    }
    fn check(&self, spec: &ServiceSpec, _: &str, node: &NodeInfo, usage: &NodeUsage) -> bool {
        usage.memory + spec.reserve_memory <= node.memory
    }
    fn explain(&self, n: usize) -> String {
        format!("insufficient memory on {}", nodes(n))
    }
    fn depends_on_usage(&self) -> bool {
        true
    }
}

/// Reserved CPUs against capacity.
pub struct Cpu;
impl Filter for Cpu {
    fn applies(&self, spec: &ServiceSpec) -> bool {
        spec.reserve_nano_cpus > 0
    }
    fn check(&self, spec: &ServiceSpec, _: &str, node: &NodeInfo, usage: &NodeUsage) -> bool {
        usage.nano_cpus + spec.reserve_nano_cpus <= node.nano_cpus
    }
    fn explain(&self, n: usize) -> String {
        format!("insufficient CPU on {}", nodes(n))
    }
    fn depends_on_usage(&self) -> bool {
        true
    }
}

/// Host-mode published ports must be free on the node.
pub struct HostPorts;
impl Filter for HostPorts {
    fn applies(&self, spec: &ServiceSpec) -> bool {
        spec.ports.iter().any(|p| p.host_mode && p.published != 0)
    }
    fn check(&self, spec: &ServiceSpec, _: &str, _: &NodeInfo, usage: &NodeUsage) -> bool {
        spec.ports
            .iter()
            .filter(|p| p.host_mode && p.published != 0)
            .all(|p| !usage.host_ports.contains(&(p.protocol.clone(), p.published)))
    }
    fn explain(&self, n: usize) -> String {
        format!("host-mode port already in use on {}", nodes(n))
    }
    fn depends_on_usage(&self) -> bool {
        true
    }
}

/// `Placement.MaxReplicas`: at most this many tasks of the service per node.
pub struct MaxReplicas;
impl Filter for MaxReplicas {
    fn applies(&self, spec: &ServiceSpec) -> bool {
        spec.max_replicas_per_node > 0
    }
    fn check(&self, spec: &ServiceSpec, service_id: &str, _: &NodeInfo, usage: &NodeUsage) -> bool {
        usage.per_service.get(service_id).copied().unwrap_or(0) < spec.max_replicas_per_node
    }
    fn explain(&self, n: usize) -> String {
        format!("max replicas per node limit exceed on {}", nodes(n))
    }
    fn depends_on_usage(&self) -> bool {
        true
    }
}

/// The filters, in order; a node is eligible when every applicable filter passes.
pub struct Pipeline {
    filters: Vec<&'static dyn Filter>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self { filters: vec![&Available, &Constraints, &Memory, &Cpu, &HostPorts, &MaxReplicas] }
    }
}

/// Refusal counts of one search, per filter (in pipeline order).
#[derive(Debug, Default, Clone)]
pub struct Refusals(Vec<(usize, usize)>);

impl Pipeline {
    /// The filters that apply to `spec`.
    pub fn applicable(&self, spec: &ServiceSpec) -> Vec<(usize, &'static dyn Filter)> {
        self.filters.iter().copied().enumerate().filter(|(_, f)| f.applies(spec)).collect()
    }

    /// Checks `node` against `filters`; on refusal, counts the first filter that said no.
    pub fn check(
        filters: &[(usize, &'static dyn Filter)],
        spec: &ServiceSpec,
        service_id: &str,
        node: &NodeInfo,
        usage: &NodeUsage,
        refusals: &mut Refusals,
    ) -> bool {
        for (i, f) in filters {
            if !f.check(spec, service_id, node, usage) {
                match refusals.0.iter_mut().find(|(k, _)| k == i) {
                    Some((_, n)) => *n += 1,
                    None => refusals.0.push((*i, 1)),
                }
                return false;
            }
        }
        true
    }

    /// "no suitable node (insufficient memory on 3 nodes; 1 node not available)".
    pub fn explain(&self, refusals: &Refusals) -> String {
        // Most refusals first, as swarmkit's pipeline explains.
        let mut parts: Vec<(usize, usize)> = refusals.0.clone();
        parts.sort_by_key(|(i, n)| (std::cmp::Reverse(*n), *i));
        let reasons: Vec<String> = parts.iter().map(|(i, n)| self.filters[*i].explain(*n)).collect();
        if reasons.is_empty() {
            "no suitable node (no nodes in the cluster)".into()
        } else {
            format!("no suitable node ({})", reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use shoal_model::spec::ServiceSpec;

    use super::*;

    fn node(f: impl FnOnce(&mut NodeInfo)) -> NodeInfo {
        let mut n = NodeInfo {
            id: 0xab,
            hostname: "h1".into(),
            role: Role::Worker,
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            ready: true,
            availability: Availability::Active,
            nano_cpus: 2_000_000_000,
            memory: 1 << 30,
        };
        f(&mut n);
        n
    }

    fn spec(extra: serde_json::Value) -> ServiceSpec {
        let mut s = json!({"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "i"}}});
        for (k, v) in extra.as_object().unwrap() {
            s["TaskTemplate"][k] = v.clone();
        }
        ServiceSpec::parse(&s).unwrap()
    }

    fn constraints(c: &[&str]) -> ServiceSpec {
        spec(json!({"Placement": {"Constraints": c}}))
    }

    #[test]
    fn available() {
        let s = spec(json!({}));
        let cases = [
            ("ready and active", node(|_| {}), true),
            ("down", node(|n| n.ready = false), false),
            ("paused", node(|n| n.availability = Availability::Pause), false),
            ("drained", node(|n| n.availability = Availability::Drain), false),
        ];
        for (name, n, want) in cases {
            assert_eq!(Available.check(&s, "s", &n, &NodeUsage::default()), want, "{name}");
        }
        assert_eq!(Available.explain(1), "1 node not available");
    }

    #[test]
    fn constraint_filter() {
        let cases = [
            ("role matches", &["node.role==worker"][..], true),
            ("role differs", &["node.role==manager"], false),
            ("role !=", &["node.role!=manager"], true),
            ("hostname", &["node.hostname==h1"], true),
            ("hostname !=", &["node.hostname!=h1"], false),
            ("id", &["node.id==00000000000000ab"], true),
            ("id prefix", &["node.id==000000000000"], true),
            ("other id", &["node.id==ff"], false),
            ("label", &["node.labels.zone==a"], true),
            ("label differs", &["node.labels.zone==b"], false),
            ("missing label ==", &["node.labels.disk==ssd"], false),
            ("missing label !=", &["node.labels.disk!=ssd"], true),
            ("all must hold", &["node.labels.zone==a", "node.role==manager"], false),
        ];
        for (name, c, want) in cases {
            assert_eq!(Constraints.check(&constraints(c), "s", &node(|_| {}), &NodeUsage::default()), want, "{name}");
        }
    }

    #[test]
    fn resources_ports_and_max_replicas() {
        let mem = spec(json!({"Resources": {"Reservations": {"MemoryBytes": 600u64 << 20}}}));
        let cpu = spec(json!({"Resources": {"Reservations": {"NanoCPUs": 1_500_000_000u64}}}));
        let mut ports = spec(json!({}));
        ports.ports =
            vec![shoal_model::spec::Port { protocol: "tcp".into(), target: 80, published: 8080, host_mode: true }];
        let mut max = spec(json!({}));
        max.max_replicas_per_node = 2;
        let used = |f: fn(&mut NodeUsage)| {
            let mut u = NodeUsage::default();
            f(&mut u);
            u
        };
        let n = node(|_| {});
        let cases: [(&str, &dyn Filter, &ServiceSpec, NodeUsage, bool); 8] = [
            ("memory fits", &Memory, &mem, NodeUsage::default(), true),
            ("memory full", &Memory, &mem, used(|u| u.memory = 600 << 20), false),
            ("cpu fits", &Cpu, &cpu, NodeUsage::default(), true),
            ("cpu full", &Cpu, &cpu, used(|u| u.nano_cpus = 1_000_000_000), false),
            (
                "port free",
                &HostPorts,
                &ports,
                used(|u| {
                    let _ = u.host_ports.insert(("udp".into(), 8080));
                }),
                true,
            ),
            (
                "port taken",
                &HostPorts,
                &ports,
                used(|u| {
                    let _ = u.host_ports.insert(("tcp".into(), 8080));
                }),
                false,
            ),
            (
                "below max",
                &MaxReplicas,
                &max,
                used(|u| {
                    let _ = u.per_service.insert("s".into(), 1);
                }),
                true,
            ),
            (
                "at max",
                &MaxReplicas,
                &max,
                used(|u| {
                    let _ = u.per_service.insert("s".into(), 2);
                }),
                false,
            ),
        ];
        for (name, f, s, u, want) in cases {
            assert!(f.applies(s), "{name}: applies");
            assert_eq!(f.check(s, "s", &n, &u), want, "{name}");
        }
        assert!(!Memory.applies(&spec(json!({}))), "no reservation, no memory filter");
    }

    #[test]
    fn explanations_count_per_filter() {
        let p = Pipeline::default();
        let s = spec(json!({"Resources": {"Reservations": {"MemoryBytes": 2u64 << 30}}}));
        let filters = p.applicable(&s);
        let mut r = Refusals::default();
        for n in [node(|_| {}), node(|_| {}), node(|_| {}), node(|n| n.ready = false)] {
            Pipeline::check(&filters, &s, "s", &n, &NodeUsage::default(), &mut r);
        }
        assert_eq!(p.explain(&r), "no suitable node (insufficient memory on 3 nodes; 1 node not available)");
    }
}
