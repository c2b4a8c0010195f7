//! How a node is configured and how it starts: the tunables every role reads (`NodeConfig`, built
//! by the CLI from flags and the data dir) and the start mode (`--init`, `--join`, resume).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::pki::tls::DEFAULT_CERT_VALIDITY;

/// Tunables of a manager. `Default` gives the production defaults.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the Raft log, snapshots and identity live.
    pub data_dir: PathBuf,
    /// Node name (hostname by default).
    pub name: String,
    /// Address to listen on.
    pub bind_ip: IpAddr,
    /// Address other nodes use to reach this one.
    pub advertise_ip: IpAddr,
    /// Cluster RPC port (Raft, agent RPC).
    pub cluster_port: u16,
    /// HTTP API port.
    pub http_port: u16,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout: a follower that hears nothing for a random time in this range campaigns.
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot and compact the log after this many entries.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging followers need no snapshot.
    pub keep_logs: u64,
    /// A write (or linearizable read) that has not been acknowledged after this long fails with
    /// "no elected cluster leader".
    pub write_timeout: Duration,
    /// Never fsync the Raft log. UNSAFE: acknowledged writes are lost on a crash. Only for tests that
    /// prove the crash tests can fail.
    pub unsafe_no_fsync: bool,
    /// Validity of the node certificates this manager issues (when it leads). Nodes renew theirs
    /// after two thirds of it.
    pub cert_validity: Duration,
    /// A node not heard from (gossip, heartbeat, Raft) for this long is recorded as down.
    pub down_window: Duration,
    /// The registrator and agent instances of a node down this long leave the catalog (they are
    /// critical from the moment it is down).
    pub deregister_critical_after: Duration,
    /// Gossip port (UDP).
    pub gossip_port: u16,
    /// How often a node gossips.
    pub gossip_interval: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("shoal-data"),
            name: "shoal".into(),
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            advertise_ip: IpAddr::from([127, 0, 0, 1]),
            cluster_port: 2377,
            http_port: 8500,
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
            snapshot_threshold: 10_000,
            keep_logs: 1_000,
            write_timeout: Duration::from_millis(4_500),
            unsafe_no_fsync: false,
            cert_validity: DEFAULT_CERT_VALIDITY,
            down_window: Duration::from_secs(5),
            deregister_critical_after: Duration::from_secs(300),
            gossip_port: 7946,
            gossip_interval: Duration::from_millis(250),
        }
    }
}

/// How a manager starts.
#[derive(Debug, Clone)]
pub enum StartMode {
    /// Create a new cluster with this node as its only member.
    Init,
    /// Join the cluster whose manager is at `addr` (`IP[:PORT]`).
    Join {
        /// A manager's cluster address.
        addr: String,
        /// Join token.
        token: String,
    },
    /// Resume from an existing data dir.
    Resume,
}
