//! The cluster port's TLS listener for axum: handshakes run in their own tasks (a slow or hostile
//! client never blocks accepting others), failed handshakes are logged and dropped, and every
//! connection carries the identity read from the peer's verified certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::pki::tls::PeerIdentity;

/// The remote end of a cluster-port connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Remote address.
    pub addr: SocketAddr,
    /// Identity from a client certificate of this cluster's CA; `None` when none was presented.
    pub identity: Option<PeerIdentity>,
}

/// Accepts TCP connections and yields those whose TLS handshake succeeded.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        let local = tcp.local_addr().expect("bound listener");
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster port accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let identity = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| PeerIdentity::from_cert(c.as_ref()));
                            let _ = tx.send((tls, Peer { addr, identity })).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(peer = %addr, error = %e, "refused connection on the cluster port: TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::warn!(peer = %addr, "refused connection on the cluster port: TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Self { rx, local }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer { addr: self.local, identity: None })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        *stream.remote_addr()
    }
}
