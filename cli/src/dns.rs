//! The node's DNS server as `shoal agent` and `shoal dev` run it: flags, binding on the node's
//! address, and the feed that keeps its copy of the catalog current (restarted with the agent on a
//! role switch: a manager reads its own state, a worker watches a manager).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_proto::rr::Name;
use shoal_dns::{DnsConfig, DnsServer, Feed, SnapshotHandle};
use shoal_registry::node::RunningNode;

/// DNS flags of `shoal agent` and `shoal dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct DnsArgs {
    /// DNS port (UDP and TCP) on the node's bind address; 0 picks a free one.
    #[arg(long, default_value_t = 8600, value_name = "PORT")]
    pub dns_port: u16,
    /// Run no DNS server on this node.
    #[arg(long)]
    pub no_dns: bool,
    /// The domain DNS answers for (`web.service.DOMAIN`); `consul.` is answered too.
    #[arg(long, default_value = "shoal", value_name = "DOMAIN")]
    pub dns_domain: String,
    /// TTL of service answers (e.g. 0s, 5s).
    #[arg(long, default_value = "0s", value_name = "DURATION")]
    pub dns_service_ttl: String,
    /// TTL of node answers.
    #[arg(long, default_value = "0s", value_name = "DURATION")]
    pub dns_node_ttl: String,
    /// Forward names outside the domain to this resolver (IP[:PORT]); without it they are refused
    /// on the node's port, and task containers' queries go to the host's resolvers (/etc/resolv.conf).
    #[arg(long, value_name = "IP[:PORT]")]
    pub dns_recursor: Option<String>,
    /// Leave task containers with Docker's DNS: no resolver on the service networks' gateways.
    #[arg(long)]
    pub no_container_dns: bool,
}

impl Default for DnsArgs {
    /// The same as the flags' defaults.
    fn default() -> Self {
        DnsArgs {
            dns_port: 8600,
            no_dns: false,
            dns_domain: "shoal".into(),
            dns_service_ttl: "0s".into(),
            dns_node_ttl: "0s".into(),
            dns_recursor: None,
            no_container_dns: false,
        }
    }
}

fn ttl(flag: &str, v: &str) -> Result<Duration> {
    shoal_model::duration::parse(v).with_context(|| format!("--{flag} {v:?}: use a duration such as 0s, 5s or 1m"))
}

impl DnsArgs {
    /// The answer configuration and the recursor these flags ask for.
    pub fn config(&self) -> Result<(DnsConfig, Option<SocketAddr>)> {
        let domain = self.dns_domain.trim_end_matches('.');
        let primary = Name::from_ascii(format!("{domain}.")).with_context(|| {
            format!("--dns-domain {:?} is not a domain name (e.g. shoal or cluster.example)", self.dns_domain)
        })?;
        let mut domains = vec![primary.clone()];
        let consul = Name::from_ascii("consul.").expect("a valid name");
        if primary != consul {
            domains.push(consul);
        }
        let cfg = DnsConfig {
            domains,
            service_ttl: ttl("dns-service-ttl", &self.dns_service_ttl)?,
            node_ttl: ttl("dns-node-ttl", &self.dns_node_ttl)?,
            ..DnsConfig::default()
        };
        let recursor = match &self.dns_recursor {
            None => None,
            Some(r) => Some(
                r.parse::<SocketAddr>()
                    .or_else(|_| r.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .with_context(|| {
                        format!("--dns-recursor {r:?}: give an IP or IP:PORT, e.g. 1.1.1.1 or 10.0.0.2:53")
                    })?,
            ),
        };
        Ok((cfg, recursor))
    }
}

/// The first `nameserver` of a resolv.conf, on port 53 (the host's resolver, for containers).
pub fn first_nameserver(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()?.parse::<IpAddr>().ok()).flatten()
        })
        .map(|ip| SocketAddr::new(ip, 53))
}

/// The resolver of task containers (see `shoal_agent::docker::resolver`): one DNS server per
/// service network gateway, answering from the node's copy of the catalog and forwarding other
/// names to `--dns-recursor`, else to the host's first resolver in /etc/resolv.conf.
pub struct ContainerDns {
    handle: SnapshotHandle,
    cfg: DnsConfig,
    upstream: Option<SocketAddr>,
    search: Vec<String>,
    /// Listening gateways, each with what stops its server.
    serving: tokio::sync::Mutex<std::collections::HashMap<IpAddr, tokio::sync::oneshot::Sender<()>>>,
}

impl ContainerDns {
    /// The containers' resolver for these flags, answering from `handle`; `None` with
    /// `--no-container-dns`.
    pub fn new(args: &DnsArgs, handle: SnapshotHandle) -> Result<Option<Self>> {
        if args.no_container_dns {
            return Ok(None);
        }
        let (cfg, recursor) = args.config()?;
        let upstream = recursor.or_else(|| first_nameserver(&std::fs::read_to_string("/etc/resolv.conf").ok()?));
        let domain = args.dns_domain.trim_end_matches('.');
        if upstream.is_none() {
            tracing::info!("the host has no resolver in /etc/resolv.conf: containers resolve only the cluster's names");
        }
        Ok(Some(ContainerDns {
            handle,
            cfg,
            upstream,
            search: vec![format!("service.{domain}")],
            serving: Default::default(),
        }))
    }
}

#[async_trait::async_trait]
impl shoal_agent::docker::resolver::ContainerResolver for ContainerDns {
    async fn serve_on(&self, gateway: IpAddr) -> Result<(), String> {
        let mut serving = self.serving.lock().await;
        if serving.contains_key(&gateway) {
            return Ok(());
        }
        let addr = SocketAddr::new(gateway, 53);
        let server = DnsServer::bind(addr, self.handle.clone(), self.cfg.clone(), self.upstream)
            .await
            .map_err(|e| format!("{e} (port 53 needs root or CAP_NET_BIND_SERVICE; is another DNS server on it?)"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            if let Err(e) = server.run(async move { stopped.await.unwrap_or(()) }).await {
                tracing::error!(error = %e, %addr, "the containers' DNS server stopped");
            }
        });
        tracing::info!(%addr, upstream = ?self.upstream, "DNS for the containers of a service network");
        serving.insert(gateway, stop);
        Ok(())
    }

    async fn release(&self, gateway: IpAddr) {
        if let Some(stop) = self.serving.lock().await.remove(&gateway) {
            let _ = stop.send(());
            tracing::debug!(%gateway, "stopped the DNS server of a removed network");
        }
    }

    fn search_domains(&self) -> Vec<String> {
        self.search.clone()
    }
}

/// A bound DNS server and the handle its copy of the catalog lives in.
pub struct Dns {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    /// The copy of the catalog it answers from.
    pub handle: SnapshotHandle,
}

/// Binds the DNS server on `ip` and serves it in the background; `None` with `--no-dns`.
pub async fn start(args: &DnsArgs, ip: IpAddr) -> Result<Option<Dns>> {
    if args.no_dns {
        return Ok(None);
    }
    let (cfg, recursor) = args.config()?;
    let handle = SnapshotHandle::default();
    let want = SocketAddr::new(ip, args.dns_port);
    let server = DnsServer::bind(want, handle.clone(), cfg, recursor).await.with_context(|| {
        format!("cannot serve DNS on {want} (is another node using it? pick --dns-port, or --no-dns)")
    })?;
    let addr = server.local_addr();
    tokio::spawn(async move {
        if let Err(e) = server.run(std::future::pending()).await {
            tracing::error!(error = %e, "the DNS server stopped");
        }
    });
    Ok(Some(Dns { addr, handle }))
}

/// Keeps `handle` current from `node` until the returned future is dropped.
pub async fn feed(node: RunningNode, handle: SnapshotHandle) {
    match node {
        RunningNode::Manager(m) => Feed::new(m, handle).run(std::future::pending()).await,
        RunningNode::Worker(w) => Feed::new(w, handle).run(std::future::pending()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_resolver_is_the_first_nameserver_line() {
        let conf = "# made by hand\nsearch example.org\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions ndots:1\n";
        assert_eq!(first_nameserver(conf), Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(first_nameserver("nameserver fd00::53\n"), Some("[fd00::53]:53".parse().unwrap()));
        assert_eq!(
            first_nameserver("nameserver not-an-ip\nnameserver 127.0.0.53"),
            Some("127.0.0.53:53".parse().unwrap())
        );
        assert_eq!(first_nameserver("search example.org\n"), None);
    }
}
