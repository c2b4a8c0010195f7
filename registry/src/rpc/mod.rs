//! The cluster port's client side: [`RpcClient`] (bincode over HTTP/1.1 in mutual TLS), the wire
//! types every route carries ([`wire`]), and the Raft network openraft sends through ([`network`]).
//! It knows nothing of the Manager: the server side lives in `cluster/server.rs`.
//!
//! May import: `shoal_model`, [`crate::error`], [`crate::pki`], [`crate::store`]. Nothing above.

pub mod client;
pub mod network;
pub mod wire;

pub use client::{RpcClient, RpcError};
