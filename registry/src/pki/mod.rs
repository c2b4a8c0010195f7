//! The cluster's PKI: the root CA made at `--init` (signing lives here; the CA itself is data in
//! the model), node certificates and their live swap, the rustls configurations, the TLS listener
//! that tags each connection with the peer's identity, and the gossip key derived from the CA.
//!
//! May import: `shoal_model`, [`crate::error`], [`crate::files`]. Nothing above.

pub mod gossip_key;
pub mod listener;
pub mod tls;
