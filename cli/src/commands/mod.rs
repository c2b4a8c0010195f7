//! Client commands: each talks to a node's HTTP API.

pub mod catalog;
pub mod cert;
pub mod dns;
pub mod kv;
pub mod node;
pub mod router;
pub mod service;
pub mod token;

/// Output format of read commands.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}
