//! Consul's HTTP API as Consul's clients call it: the KV store (`/v1/kv`) and the status and agent
//! endpoints. Catalog, health, agent services, sessions and transactions land here too.

pub mod filter;
pub mod kv;
pub mod status;
