//! The listener: a tokio accept loop, each connection served by hyper-util's `auto` builder
//! (HTTP/1.1, and HTTP/2 with prior knowledge: h2c), upgrades allowed, the header-read timeout
//! and header-size limits set. Bad input is answered by hyper itself: an oversized head gets 431,
//! a malformed request line 400, a client that does not finish its head within the timeout is
//! closed; none of it reaches the forwarder or other connections.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::forward::Forwarder;

/// How long a graceful stop waits for open connections before it drops them.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Serves `listener` through `forwarder` until `shutdown`, then stops taking connections, lets
/// the open ones finish their requests (HTTP/1: `Connection: close` on the next answer; HTTP/2:
/// GOAWAY), and returns once they are done or after a grace period.
pub async fn serve(listener: TcpListener, forwarder: Arc<Forwarder>, shutdown: impl Future<Output = ()>) {
    let opts = forwarder.options().clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(opts.max_header_bytes as u32)
        .max_concurrent_streams(opts.max_streams);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, or a connection reset while queued: keep accepting.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let fw = forwarder.clone();
        let svc = service_fn(move |req| {
            let fw = fw.clone();
            async move { Ok::<_, Infallible>(fw.handle(req, peer).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer = %peer, error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(STOP_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {STOP_GRACE:?}; dropping them");
    }
}
