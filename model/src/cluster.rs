//! The cluster's identity: its root CA (as data; signing lives in the registry's `pki/`) and the
//! join secrets, written once at `--init`.

use serde::{Deserialize, Serialize};

use crate::node::Role;

/// The cluster root CA: certificate and key, PEM. Kept in the replicated state so any leader can sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCa {
    /// CA certificate, PEM.
    pub cert_pem: String,
    /// CA private key, PEM.
    pub key_pem: String,
}

/// The cluster's identity and join secrets, written once at `--init`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Cluster identifier: the SHA-256 digest of the root CA certificate, pinned by join tokens.
    pub cluster_id: String,
    /// The root CA.
    pub ca: Option<ClusterCa>,
    /// Secret of the manager token.
    pub manager_secret: String,
    /// Secret of the worker token.
    pub worker_secret: String,
}

impl ClusterInfo {
    /// The join token for `role`: `SHOAL-1-<cluster digest>-<secret>`.
    pub fn token(&self, role: Role) -> String {
        let secret = match role {
            Role::Manager => &self.manager_secret,
            Role::Worker => &self.worker_secret,
        };
        format!("SHOAL-1-{}-{}", self.cluster_id, secret)
    }

    /// Which role a token grants, or `None` when it is not a valid token of this cluster.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        if !self.cluster_id.is_empty() && token == self.token(Role::Manager) {
            Some(Role::Manager)
        } else if !self.cluster_id.is_empty() && token == self.token(Role::Worker) {
            Some(Role::Worker)
        } else {
            None
        }
    }
}
