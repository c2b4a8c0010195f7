//! What a node needs to join the gossip: the cluster's gossip key and a few seed addresses.
//!
//! The key is derived from the cluster CA's private key, which only managers hold (it is in the
//! Raft state): `SHA-256("shoal-gossip-v1\n" ‖ CA key PEM)`. A joining node receives it with its
//! certificate, over the TLS link that the join token pinned to the CA, and keeps it in
//! `DATA_DIR/gossip.json`. So a process that never joined cannot seal or open a gossip datagram.
//! (A node removed later still knows the key; gossip is only a hint and the leader ignores nodes
//! that are not in the node table. Rotating the key on removal is future work.)

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::pki::tls::ClusterCaExt;
use shoal_model::ClusterCa;

const FILE: &str = "gossip.json";

/// Gossip key and seeds, as stored in the data dir and sent to joining nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipParams {
    /// 64 hex digits.
    pub key: String,
    /// The cluster ID (the CA digest); chitchat refuses peers of another cluster.
    pub cluster_id: String,
    /// Gossip addresses of the managers when the node joined.
    pub seeds: Vec<String>,
}

impl GossipParams {
    /// The params every member of the cluster of `ca` shares.
    pub fn for_ca(ca: &ClusterCa, seeds: Vec<String>) -> Result<Self, Error> {
        let mut h = Sha256::new();
        h.update(b"shoal-gossip-v1\n");
        h.update(ca.key_pem.as_bytes());
        let key = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { key, cluster_id: ca.digest()?, seeds })
    }

    /// Reads `gossip.json`; `None` if there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, Error> {
        crate::files::load_json(dir, FILE)
    }

    /// Writes `gossip.json` (mode 0600: it holds a secret).
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        crate::files::save_json(dir, FILE, self, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_ca_same_key_other_ca_other_key() {
        let a = ClusterCa::generate().unwrap();
        let b = ClusterCa::generate().unwrap();
        let ka = GossipParams::for_ca(&a, vec![]).unwrap();
        assert_eq!(ka, GossipParams::for_ca(&a, vec![]).unwrap());
        assert_ne!(ka.key, GossipParams::for_ca(&b, vec![]).unwrap().key);
        assert_eq!(ka.key.len(), 64);
    }
}
