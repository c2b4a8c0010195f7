//! Gossip among all nodes: who is alive, and a few small keys each node publishes about itself.
//!
//! [`Cluster`] wraps chitchat (scuttlebutt anti-entropy over UDP) behind a typed, cloneable handle.
//! Gossip is a *hint*: it never decides anything. The Raft leader's liveness verdicts need a
//! contact over the cluster port (see the registry's `liveness` module); it reads
//! [`Cluster::last_heard`] to tell the operator that a node it marks down still gossips. Every datagram is sealed with the cluster's gossip key ([`sealed`]);
//! chitchat itself has no security.
//!
//! ```text
//! node A ──sealed UDP──▶ node B ──sealed UDP──▶ node C      (every interval, to a few peers)
//!   heartbeat counter + keys travel directly and second-hand
//! Cluster::last_heard(): when each node's heartbeat counter last moved, as seen here
//! ```

#![warn(missing_docs)]

pub mod keys;
pub mod sealed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chitchat::transport::Transport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat};

pub use sealed::{GossipKey, SealedTransport, TransportStats};

/// What can go wrong starting gossip.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// The UDP socket could not be opened (port taken, address not local).
    #[error("cannot start gossip: {0}")]
    Start(String),
}

/// How to join the gossip.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// This node's ID (16 hex digits, as in the registry).
    pub node_id: String,
    /// The address to bind (UDP).
    pub listen_addr: SocketAddr,
    /// The address peers use to reach this node.
    pub advertise_addr: SocketAddr,
    /// Gossip addresses of some members (the managers); any live one is enough.
    pub seeds: Vec<String>,
    /// The cluster's ID: peers of another cluster are told off by chitchat itself.
    pub cluster_id: String,
    /// The key every datagram is sealed with.
    pub key: GossipKey,
    /// How often this node gossips (to a few peers each time).
    pub interval: Duration,
    /// This node's keys at start ([`keys`]).
    pub initial: Vec<(String, String)>,
}

/// One node as gossip sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node ID (16 hex digits).
    pub node_id: String,
    /// Its gossip address.
    pub gossip_addr: SocketAddr,
    /// chitchat's phi-accrual verdict (display only; decisions use [`Cluster::last_heard`]).
    pub live: bool,
    /// The keys it publishes ([`keys`]).
    pub keys: HashMap<String, String>,
    /// How long ago its heartbeat last moved, as seen here (`None`: never, or this node).
    pub last_heard: Option<Duration>,
    /// Whether this is the local node.
    pub is_self: bool,
}

impl Member {
    /// One of its keys.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }
}

/// A handle on this node's gossip. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    self_id: ChitchatId,
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    handle: tokio::sync::Mutex<Option<ChitchatHandle>>,
    /// Node ID → (last heartbeat value seen, when it last moved).
    heard: Mutex<HashMap<String, (u64, Instant)>>,
    stats: Arc<TransportStats>,
    tracker: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tracker.abort();
    }
}

impl Cluster {
    /// Joins the gossip over sealed UDP.
    pub async fn join(config: GossipConfig) -> Result<Cluster, GossipError> {
        let stats = Arc::new(TransportStats::default());
        let transport = SealedTransport::new(config.key.clone(), stats.clone());
        Self::join_with(config, &transport, stats).await
    }

    /// Joins the gossip over any chitchat transport (tests use chitchat's in-memory one).
    pub async fn join_with(
        config: GossipConfig,
        transport: &dyn Transport,
        stats: Arc<TransportStats>,
    ) -> Result<Cluster, GossipError> {
        // A restarted node is a new generation: peers drop what they knew of the old one.
        let generation = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let self_id = ChitchatId::new(config.node_id.clone(), generation, config.advertise_addr);
        let chitchat_config = ChitchatConfig {
            chitchat_id: self_id.clone(),
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.interval,
            listen_addr: config.listen_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                initial_interval: config.interval * 2,
                max_interval: Duration::from_secs(10),
                dead_node_grace_period: Duration::from_secs(3600),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let handle = spawn_chitchat(chitchat_config, config.initial.clone(), transport)
            .await
            .map_err(|e| GossipError::Start(format!("{e:#}")))?;
        let chitchat = handle.chitchat();
        let heard = Mutex::new(HashMap::new());
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let interval = config.interval;
            let tracker = tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval / 2);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    inner.sample().await;
                }
            });
            Inner { self_id, chitchat, handle: tokio::sync::Mutex::new(Some(handle)), heard, stats, tracker }
        });
        Ok(Cluster { inner })
    }

    /// This node's ID.
    pub fn node_id(&self) -> &str {
        &self.inner.self_id.node_id
    }

    /// The local address gossip listens on.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.inner.self_id.gossip_advertise_addr
    }

    /// Sets one of this node's keys; peers see it within a few gossip rounds.
    pub async fn set(&self, key: &str, value: &str) {
        self.inner.chitchat.lock().await.self_node_state().set(key, value);
    }

    /// When each other node's heartbeat last moved, as seen from here (directly or second-hand).
    /// A node missing from the map has never been heard of.
    pub fn last_heard(&self) -> HashMap<String, Instant> {
        self.inner.heard.lock().expect("heard lock").iter().map(|(id, (_, at))| (id.clone(), *at)).collect()
    }

    /// Every node gossip knows of, this one included.
    pub async fn members(&self) -> Vec<Member> {
        let heard = self.inner.heard.lock().expect("heard lock").clone();
        let chitchat = self.inner.chitchat.lock().await;
        let live: std::collections::HashSet<&ChitchatId> = chitchat.live_nodes().collect();
        // Keep the newest generation of each node ID.
        let mut newest: HashMap<&str, &ChitchatId> = HashMap::new();
        for id in chitchat.node_states().keys() {
            let slot = newest.entry(&id.node_id).or_insert(id);
            if id.generation_id > slot.generation_id {
                *slot = id;
            }
        }
        let mut out: Vec<Member> = newest
            .values()
            .filter_map(|id| {
                let state = chitchat.node_state(id)?;
                let is_self = *id == &self.inner.self_id;
                Some(Member {
                    node_id: id.node_id.to_string(),
                    gossip_addr: id.gossip_advertise_addr,
                    live: is_self || live.contains(id),
                    keys: state.key_values().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    last_heard: if is_self { None } else { heard.get(&*id.node_id).map(|(_, at)| at.elapsed()) },
                    is_self,
                })
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// Datagrams dropped because they were not sealed with this cluster's key.
    pub fn rejected_packets(&self) -> u64 {
        self.inner.stats.rejected.load(Ordering::Relaxed)
    }

    /// Stops gossiping (peers notice the silence).
    pub async fn shutdown(&self) {
        if let Some(handle) = self.inner.handle.lock().await.take() {
            let _ = handle.shutdown().await;
        }
        self.inner.tracker.abort();
    }
}

impl Inner {
    /// Records which heartbeats moved since the last sample.
    async fn sample(&self) {
        let now = Instant::now();
        let beats: Vec<(String, u64)> = {
            let chitchat = self.chitchat.lock().await;
            chitchat
                .node_states()
                .iter()
                .filter(|(id, _)| **id != self.self_id)
                .map(|(id, state)| (id.node_id.to_string(), u64::from(state.heartbeat()) ^ id.generation_id))
                .collect()
        };
        let mut heard = self.heard.lock().expect("heard lock");
        for (node_id, beat) in beats {
            match heard.get_mut(&node_id) {
                Some((last, at)) if *last != beat => {
                    *last = beat;
                    *at = now;
                }
                Some(_) => {}
                None => {
                    heard.insert(node_id, (beat, now));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn node(id: &str, port: u16, seeds: Vec<String>, key: [u8; 32]) -> Cluster {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Cluster::join(GossipConfig {
            node_id: id.into(),
            listen_addr: addr,
            advertise_addr: addr,
            seeds,
            cluster_id: "test".into(),
            key: GossipKey::new(key),
            interval: Duration::from_millis(50),
            initial: vec![(keys::ROLE.into(), "worker".into())],
        })
        .await
        .unwrap()
    }

    async fn wait_until<F: AsyncFnMut() -> bool>(mut f: F, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn sealed_nodes_see_each_other_and_an_outsider_is_shut_out() {
        let (pa, pb, pc) = (free_port(), free_port(), free_port());
        let a = node("aaaa", pa, vec![], [1; 32]).await;
        let b = node("bbbb", pb, vec![format!("127.0.0.1:{pa}")], [1; 32]).await;
        // Same cluster ID, wrong key: its datagrams must never reach chitchat.
        let outsider = node("cccc", pc, vec![format!("127.0.0.1:{pa}")], [2; 32]).await;
        b.set(keys::STATUS, "ready").await;
        wait_until(
            async || {
                a.members().await.iter().any(|m| m.node_id == "bbbb" && m.live && m.get(keys::STATUS) == Some("ready"))
            },
            "a to see b live with its key",
        )
        .await;
        assert!(a.last_heard().contains_key("bbbb"));
        wait_until(async || a.rejected_packets() > 0, "a to reject the outsider's packets").await;
        assert!(
            !a.members().await.iter().any(|m| m.node_id == "cccc"),
            "a node without the key must not become a member"
        );
        assert!(!outsider.members().await.iter().any(|m| m.node_id == "aaaa"), "nor learn about the cluster");
        // Silence: b stops, its heartbeat stops moving.
        b.shutdown().await;
        // Let what was already in flight land, then nothing more may arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = a.last_heard()["bbbb"];
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(a.last_heard()["bbbb"], before, "a stopped node's heartbeat does not move");
    }
}
