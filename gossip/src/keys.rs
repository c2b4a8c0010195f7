//! The gossip keys every node publishes about itself. Names live here and nowhere else.

/// `manager` or `worker`.
pub const ROLE: &str = "role";
/// The node's cluster RPC address `IP:PORT`.
pub const CLUSTER_ADDR: &str = "cluster_addr";
/// The node's human name.
pub const NAME: &str = "name";
/// What the node says of itself: `ready` (more states come with the agent).
pub const STATUS: &str = "status";
