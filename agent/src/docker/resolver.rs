//! The resolver a task's containers ask: a DNS server of this node's on the gateway of the
//! service's bridge network (port 53), which answers the cluster's names from the node's copy of
//! the catalog and forwards every other name to the host's resolvers.
//!
//! ```text
//!  container ─▶ 127.0.0.11 (Docker's embedded DNS: the network's container names)
//!                  └─ anything else ─▶ GATEWAY:53 (HostConfig.Dns) ─▶ web.service.shoal: the catalog
//!                                                                  └─ other names: the host's resolvers
//!  resolv.conf: search service.shoal  →  plain `web` finds web.service.shoal
//! ```
//!
//! The DNS server itself lives in the `dns/` crate, which this crate does not import: the node's
//! binary passes an implementation of [`ContainerResolver`] in ([`DockerExecutor::with_resolver`]).
//! Networks are per service and node, so each gateway (and its listener) belongs to one node, and
//! nodes that share an engine never answer each other's containers.
//!
//! [`DockerExecutor::with_resolver`]: super::DockerExecutor::with_resolver

use std::net::IpAddr;

use async_trait::async_trait;
use bollard::models::Ipam;

/// Serves DNS to containers on a network gateway.
#[async_trait]
pub trait ContainerResolver: Send + Sync {
    /// Listens on `gateway`, port 53, UDP and TCP (again is a no-op); why not when it cannot.
    async fn serve_on(&self, gateway: IpAddr) -> Result<(), String>;
    /// Stops listening on `gateway` (its network is gone).
    async fn release(&self, gateway: IpAddr);
    /// The search domains containers get, so plain names find services (`service.shoal`).
    fn search_domains(&self) -> Vec<String>;
}

/// The first IPv4 gateway of a network, from the IPAM configuration the engine reports.
pub(super) fn gateway(ipam: Option<&Ipam>) -> Option<IpAddr> {
    let configs = ipam?.config.as_ref()?;
    configs.iter().filter_map(|c| c.gateway.as_deref()?.parse::<IpAddr>().ok()).find(IpAddr::is_ipv4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::IpamConfig;

    #[test]
    fn the_gateway_is_the_first_ipv4_one() {
        let ipam = Ipam {
            config: Some(vec![
                IpamConfig { gateway: Some("fd00::1".into()), ..Default::default() },
                IpamConfig { gateway: Some("172.20.0.1".into()), ..Default::default() },
            ]),
            ..Default::default()
        };
        assert_eq!(gateway(Some(&ipam)), Some("172.20.0.1".parse().unwrap()));
        assert_eq!(gateway(None), None);
        assert_eq!(gateway(Some(&Ipam::default())), None);
    }
}
