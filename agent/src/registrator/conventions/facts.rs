//! What the registrator knows of a container and of its node (filled from `inspect` by
//! `docker/events.rs`, by hand in tests), and what it made of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use shoal_model::catalog::{InstanceSpec, Source};

/// A port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP (the default).
    Tcp,
    /// UDP: its instances get `:udp` on the ID and a `udp` tag.
    Udp,
    /// SCTP.
    Sctp,
}

/// A container port, `80/tcp` in Docker's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    /// The number.
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
}

impl PortKey {
    /// A TCP port.
    pub fn tcp(port: u16) -> Self {
        PortKey { port, proto: Proto::Tcp }
    }

    /// Parses `80`, `80/tcp`, `53/udp`, `9/sctp`.
    pub fn parse(s: &str) -> Option<Self> {
        let (num, proto) = s.trim().split_once('/').unwrap_or((s.trim(), "tcp"));
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "sctp" => Proto::Sctp,
            _ => return None,
        };
        Some(PortKey { port: num.parse().ok().filter(|p| *p > 0)?, proto })
    }
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        };
        write!(f, "{}/{proto}", self.port)
    }
}

/// Where a container port is published on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBinding {
    /// The host address; empty, `0.0.0.0` or `::`: every address (the node's is registered).
    pub ip: String,
    /// The host port; 0: not published.
    pub port: u16,
}

/// A container's health as the engine reports it (only containers with a `HEALTHCHECK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerHealth {
    /// Not yet healthy (within the start period, or no probe has passed).
    Starting,
    /// The last probes passed.
    Healthy,
    /// Too many probes failed.
    Unhealthy,
}

/// What the engine says about one container (from `inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerFacts {
    /// The full ID.
    pub id: String,
    /// The name, without Docker's leading `/`.
    pub name: String,
    /// The image as the container was created from it (`gliderlabs/foobar:1.2`).
    pub image: String,
    /// Labels (the image's and the container's).
    pub labels: BTreeMap<String, String>,
    /// Environment, `KEY=VALUE`, in order.
    pub env: Vec<String>,
    /// Exposed ports (the image's and the container's).
    pub exposed: BTreeSet<PortKey>,
    /// Published ports: container port → host bindings.
    pub published: BTreeMap<PortKey, Vec<HostBinding>>,
    /// Network name → the container's IP on it (empty on `host`).
    pub networks: BTreeMap<String, String>,
    /// Whether it runs.
    pub running: bool,
    /// Its Docker health, when it has a health check and the engine reported one.
    pub health: Option<DockerHealth>,
    /// Whether it has a health check (the image's or its own, not disabled).
    pub has_healthcheck: bool,
}

/// Who this node is, for the registrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node ID (16 hex digits), as in the `shoal.node.id` label of its tasks.
    pub id: String,
    /// The node's name: its catalog node, and the first part of Registrator-style IDs.
    pub name: String,
    /// The address registered for ports published on every host address.
    pub address: String,
    /// Whether containers Shoal did not start are registered (when they name a service).
    pub register_others: bool,
}

/// The instances of a container, and why parts of it were left out (for debug logs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Derivation {
    /// The instances, with their source.
    pub instances: Vec<(Source, InstanceSpec)>,
    /// Why the whole container is ignored, if it is.
    pub ignored: Option<String>,
    /// Ports, meta keys, checks or instances that were left out, and why.
    pub skipped: Vec<String>,
}

impl Derivation {
    pub(super) fn ignored(why: impl Into<String>) -> Self {
        Derivation { ignored: Some(why.into()), ..Default::default() }
    }
}

impl ContainerFacts {
    /// A label that is set and not empty.
    pub(super) fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Its IP on the first of its networks (by name, for a stable answer) that gave it one.
    pub(super) fn container_ip(&self) -> Option<&str> {
        self.networks.values().map(String::as_str).find(|ip| !ip.is_empty())
    }

    /// Every container port: exposed or published.
    pub(super) fn all_ports(&self) -> BTreeSet<PortKey> {
        self.exposed.iter().chain(self.published.keys()).copied().collect()
    }

    /// The published ports and where (the first binding with a host port, as Registrator). A
    /// container on the host network publishes every exposed port on the same port.
    pub(super) fn published_ports(&self, node: &NodeFacts) -> BTreeMap<PortKey, (String, u16)> {
        let mut out = BTreeMap::new();
        if self.networks.contains_key("host") {
            for p in &self.exposed {
                out.insert(*p, (node.address.clone(), p.port));
            }
        }
        for (p, bindings) in &self.published {
            if let Some(b) = bindings.iter().find(|b| b.port != 0) {
                let ip =
                    if matches!(b.ip.as_str(), "" | "0.0.0.0" | "::") { node.address.clone() } else { b.ip.clone() };
                out.insert(*p, (ip, b.port));
            }
        }
        out
    }
}
