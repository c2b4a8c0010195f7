//! The built-in edge proxy (`shoal router --listen ADDR`): HTTP routed by host and path to a
//! service's passing instances, with the route table swapped atomically on every catalog change.
//!
//! ```text
//!  catalog watch ─▶ feeder.rs: View ─▶ Table::build (table.rs, via routes.rs) ─▶ ArcSwap<Table>
//!                                                                                   │ load()
//!  client ─▶ server.rs: accept ─▶ hyper-util auto (h1 / h2c) ─▶ forward.rs: lookup, pick,
//!                                                                rewrite, pooled client ─▶ backend
//! ```

pub mod feeder;
pub mod forward;
pub mod server;
pub mod table;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

pub use forward::Forwarder;
pub use table::{Balance, Lookup, Table};

use crate::source::Source;

/// The proxy's timeouts and limits.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// A client must send a request's whole head within this (also the idle keep-alive limit of
    /// HTTP/1 client connections: hyper starts the timer when it waits for the next head).
    pub header_timeout: Duration,
    /// The largest request head (HTTP/1: 431 beyond it; HTTP/2: the header list size).
    pub max_header_bytes: usize,
    /// The largest request body (413 beyond it).
    pub max_body_bytes: u64,
    /// Connecting to a backend.
    pub connect_timeout: Duration,
    /// From sending a request to the backend's response head (504 after it).
    pub response_timeout: Duration,
    /// Idle upstream connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// The longest an upgraded connection (WebSocket) lives.
    pub tunnel_idle_timeout: Duration,
    /// HTTP/2 streams per client connection.
    pub max_streams: u32,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024 * 1024,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(30),
            tunnel_idle_timeout: Duration::from_secs(3600),
            max_streams: 256,
        }
    }
}

/// A table that routes nothing yet (requests get 503 until the first catalog read).
pub fn empty_table() -> Arc<ArcSwap<Table>> {
    Arc::new(ArcSwap::from_pointee(Table::default()))
}

/// Serves `listener` with routes from `table` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    table: Arc<ArcSwap<Table>>,
    opts: ProxyOptions,
    shutdown: impl Future<Output = ()>,
) {
    let fw = Arc::new(Forwarder::new(table, opts));
    server::serve(listener, fw, shutdown).await
}

/// Follows the catalog through `source` into `table` (forever; abort the task to stop it).
pub async fn follow(source: Arc<dyn Source>, domain: String, table: Arc<ArcSwap<Table>>) {
    feeder::follow(source, domain, table).await
}
