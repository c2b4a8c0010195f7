//! The HTTP routes the shipped templates write: one per service, read from the view with the
//! labels Shoal's services carry. A pure function, so both templates route the same way.
//!
//! | label | meaning | default |
//! |---|---|---|
//! | `shoal.http` | `false` leaves the service out | routed |
//! | `shoal.http.host` | the host names it answers (comma-separated) | `NAME.<domain>` |
//! | `shoal.http.path` | a path prefix it answers under | `/` |
//! | `shoal.http.check` | an HTTP path the proxy probes (`GET`, 2xx/3xx) | a TCP connect |
//!
//! The built-in `consul` service (the managers) is never routed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::render::sanitize;
use crate::view::{InstanceView, View};

/// One service's route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The service's name.
    pub service: String,
    /// A backend/upstream name for it (sanitized, unique per service).
    pub backend: String,
    /// Host names it answers, lower case.
    pub hosts: Vec<String>,
    /// Path prefix (`/` for all).
    pub path: String,
    /// HTTP health-check path, if any.
    pub check: Option<String>,
    /// Passing instances with a port, in node then ID order, each with a server name unique in
    /// the backend.
    pub servers: Vec<Server>,
}

/// One instance in a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    /// A server name unique in its backend (`node_id`, sanitized).
    pub name: String,
    /// `address:port` (`[v6]:port` for IPv6).
    pub endpoint: String,
    /// Its weight.
    pub weight: u32,
    /// The instance.
    pub instance: InstanceView,
}

/// One host's locations (what an Nginx `server` block holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRoutes {
    /// The host name.
    pub host: String,
    /// Its routes, longest path first (Nginx picks the longest prefix anyway; HAProxy takes rules
    /// in order).
    pub routes: Vec<Route>,
}

/// The routes of `view`: services in name order, each route's servers in node then ID order.
pub fn http_routes(view: &View) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    for name in view.instances.keys() {
        if name == shoal_model::catalog::read::CONSUL_SERVICE {
            continue;
        }
        let labels = view.labels.get(name).cloned().unwrap_or_default();
        if labels.get("shoal.http").is_some_and(|v| v.eq_ignore_ascii_case("false")) {
            continue;
        }
        let hosts: Vec<String> = match labels.get("shoal.http.host") {
            Some(h) => h.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect(),
            None => vec![format!("{}.{}", name.to_ascii_lowercase(), view.domain)],
        };
        let path = match labels.get("shoal.http.path").map(|p| p.trim()) {
            Some(p) if !p.is_empty() => {
                if p.starts_with('/') {
                    p.to_string()
                } else {
                    format!("/{p}")
                }
            }
            _ => "/".to_string(),
        };
        let check = labels.get("shoal.http.check").map(|c| c.trim().to_string()).filter(|c| c.starts_with('/'));
        let servers = view
            .service(name, None, true)
            .into_iter()
            .filter(|i| i.port != 0)
            .map(|i| Server {
                name: sanitize(&format!("{}_{}", i.node, i.id)),
                endpoint: endpoint(&i.address, i.port),
                weight: i.weight.clamp(1, 256),
                instance: i,
            })
            .collect();
        out.push(Route {
            service: name.clone(),
            backend: format!("svc_{}", sanitize(name)),
            hosts,
            path,
            check,
            servers,
        });
    }
    out
}

/// The routes grouped by host, hosts in name order, longest path first within a host.
pub fn http_hosts(view: &View) -> Vec<HostRoutes> {
    let mut by_host: BTreeMap<String, Vec<Route>> = BTreeMap::new();
    for r in http_routes(view) {
        for h in &r.hosts {
            by_host.entry(h.clone()).or_default().push(r.clone());
        }
    }
    by_host
        .into_iter()
        .map(|(host, mut routes)| {
            routes.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then_with(|| a.path.cmp(&b.path)));
            // Two services claiming the same host and path: the first by name wins, as a proxy
            // would take the first rule; the others are left out rather than written twice.
            routes.dedup_by(|b, a| a.path == b.path);
            HostRoutes { host, routes }
        })
        .collect()
}

/// `address:port`, brackets around an IPv6 address.
pub fn endpoint(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}
