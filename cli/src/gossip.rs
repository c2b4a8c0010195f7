//! Wires the gossip crate into a running node: joins with the key and seeds from the data dir,
//! publishes the node's keys, and hands managers the "last heard" view their liveness loop needs.
//! (The registry does not know the gossip crate; it sees it through `liveness::Heard`.)

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result};
use shoal_gossip::{Cluster, GossipConfig, GossipKey, keys};
use shoal_model::NodeId;
use shoal_registry::NodeConfig;
use shoal_registry::cluster::liveness::{GossipMember, Heard};
use shoal_registry::node::RunningNode;
use shoal_registry::pki::gossip_key::GossipParams;

/// The gossip view a manager's liveness loop reads.
pub struct GossipHeard(pub Cluster);

impl Heard for GossipHeard {
    fn last_heard(&self) -> HashMap<NodeId, Instant> {
        self.0
            .last_heard()
            .into_iter()
            .filter_map(|(id, at)| NodeId::from_str_radix(&id, 16).ok().map(|id| (id, at)))
            .collect()
    }

    fn members(&self) -> futures::future::BoxFuture<'_, Vec<GossipMember>> {
        Box::pin(async move {
            self.0
                .members()
                .await
                .into_iter()
                .map(|m| {
                    let mut tags = BTreeMap::from([("id".to_string(), m.node_id.clone())]);
                    for k in [keys::ROLE, keys::CLUSTER_ADDR, keys::STATUS] {
                        if let Some(v) = m.get(k) {
                            tags.insert(k.to_string(), v.to_string());
                        }
                    }
                    GossipMember {
                        name: m.get(keys::NAME).unwrap_or(&m.node_id).to_string(),
                        addr: m.gossip_addr.ip().to_string(),
                        port: m.gossip_addr.port(),
                        tags,
                        status: if m.live { 1 } else { 4 },
                        last_heard_ms: m.last_heard.map(|d| d.as_millis() as u64),
                    }
                })
                .collect()
        })
    }
}

/// Joins the gossip for `node`.
pub async fn start(config: &NodeConfig, node: &RunningNode) -> Result<Cluster> {
    let (id, name, cluster_addr, gossip_addr, role, mut seeds) = match node {
        RunningNode::Manager(m) => (
            m.id,
            m.node.name.clone(),
            m.node.cluster_addr.clone(),
            m.node.gossip_addr.clone(),
            "manager",
            m.gossip_seeds(),
        ),
        RunningNode::Worker(w) => (
            w.id,
            w.identity.name.clone(),
            w.identity.cluster_addr.clone(),
            w.identity.gossip_addr.clone(),
            "worker",
            Vec::new(),
        ),
    };
    let stored = GossipParams::load(&config.data_dir).map_err(anyhow::Error::new)?;
    let params = match (stored, node) {
        (Some(p), _) => Some(p),
        (None, RunningNode::Manager(m)) => m.gossip_params_from_state(),
        (None, RunningNode::Worker(_)) => None,
    };
    let params =
        params.with_context(|| format!("{} has no gossip.json; the node cannot gossip", config.data_dir.display()))?;
    let key = GossipKey::from_hex(&params.key).context("gossip.json holds a malformed key")?;
    seeds.extend(params.seeds.iter().cloned());
    seeds.retain(|s| *s != gossip_addr);
    seeds.sort();
    seeds.dedup();
    let advertise: SocketAddr = gossip_addr.parse().with_context(|| format!("bad gossip address {gossip_addr:?}"))?;
    let cluster = Cluster::join(GossipConfig {
        node_id: format!("{id:016x}"),
        listen_addr: SocketAddr::new(config.bind_ip, advertise.port()),
        advertise_addr: advertise,
        seeds,
        cluster_id: params.cluster_id.clone(),
        key,
        interval: config.gossip_interval,
        initial: vec![
            (keys::NAME.into(), name),
            (keys::ROLE.into(), role.into()),
            (keys::CLUSTER_ADDR.into(), cluster_addr),
            (keys::STATUS.into(), "ready".into()),
        ],
    })
    .await
    .with_context(|| format!("gossip on {}/udp (pick another --gossip-port?)", advertise))?;
    Ok(cluster)
}
