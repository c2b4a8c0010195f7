//! A chitchat transport whose datagrams are sealed (ChaCha20-Poly1305) with the cluster's gossip key.
//!
//! chitchat has no security of its own and keeps its wire codec private: the only public way to
//! turn an envelope into bytes and back is its UDP socket. So each sealed socket owns a private
//! *codec* pair on 127.0.0.1 — chitchat's own `UdpSocket` and a plain "tap" socket — and:
//!
//! ```text
//! send:  envelope ─chitchat codec─▶ tap (plaintext) ─seal─▶ public socket ─▶ peer
//! recv:  peer ─▶ public socket ─open─▶ tap ─▶ chitchat codec ─▶ envelope (from = peer)
//! ```
//!
//! A datagram that does not open with the key (another cluster, a process without the key, a
//! replay with a tampered byte) is dropped, counted and logged; it never reaches chitchat.
//! Only datagrams from the tap are accepted on the codec socket, and vice versa.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as CodecSocket};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_507;
/// Wire format version, first byte of every sealed datagram.
const WIRE_VERSION: u8 = 1;
/// Bound into every datagram's tag so a sealed gossip packet is not valid anywhere else.
const AAD: &[u8] = b"shoal-gossip-v1";
/// Seal overhead: version byte, nonce, tag.
const OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// The 32-byte key gossip is sealed with. Every member of a cluster derives or receives the same
/// one; see the registry's `ClusterCa::gossip_key`.
#[derive(Clone)]
pub struct GossipKey([u8; 32]);

impl GossipKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }

    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.0).expect("a 32-byte ChaCha20 key"))
    }
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

/// Counters shared by a transport and the sockets it opened.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Datagrams dropped because they did not open with the key.
    pub rejected: AtomicU64,
    /// Datagrams accepted.
    pub accepted: AtomicU64,
}

/// Seals `plain` into a datagram.
pub fn seal(key: &GossipKey, plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).expect("system randomness");
    let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
    out.push(WIRE_VERSION);
    out.extend_from_slice(&nonce);
    let mut body = plain.to_vec();
    key.aead()
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut body)
        .expect("sealing cannot fail for in-memory buffers");
    out.extend_from_slice(&body);
    out
}

/// Opens a sealed datagram; `None` if it was not sealed with `key` or was altered.
pub fn open(key: &GossipKey, datagram: &[u8]) -> Option<Vec<u8>> {
    if datagram.len() < OVERHEAD || datagram[0] != WIRE_VERSION {
        return None;
    }
    let nonce = Nonce::try_assume_unique_for_key(&datagram[1..1 + NONCE_LEN]).ok()?;
    let mut body = datagram[1 + NONCE_LEN..].to_vec();
    let plain = key.aead().open_in_place(nonce, Aad::from(AAD), &mut body).ok()?;
    Some(plain.to_vec())
}

/// A chitchat [`Transport`] over UDP whose datagrams are sealed with a [`GossipKey`].
pub struct SealedTransport {
    key: GossipKey,
    stats: Arc<TransportStats>,
}

impl SealedTransport {
    /// A transport sealing with `key` and counting into `stats`.
    pub fn new(key: GossipKey, stats: Arc<TransportStats>) -> Self {
        Self { key, stats }
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("cannot bind {listen_addr}/udp for gossip (pick another --gossip-port?)"))?;
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let codec = CodecSocket::open(loopback).await?;
        let codec_addr = codec.local_addr()?;
        let tap = tokio::net::UdpSocket::bind(loopback).await.context("cannot bind the gossip codec socket")?;
        let tap_addr = tap.local_addr()?;
        Ok(Box::new(SealedSocket {
            key: self.key.clone(),
            stats: self.stats.clone(),
            public,
            codec,
            codec_addr,
            tap,
            tap_addr,
            pending_from: None,
            buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            last_reject_log: None,
        }))
    }
}

struct SealedSocket {
    key: GossipKey,
    stats: Arc<TransportStats>,
    public: tokio::net::UdpSocket,
    codec: CodecSocket,
    codec_addr: SocketAddr,
    tap: tokio::net::UdpSocket,
    tap_addr: SocketAddr,
    /// Set while an opened datagram waits in the codec socket: chitchat cancels `recv` at every
    /// gossip tick, so the sender's address must survive a cancelled call.
    pending_from: Option<SocketAddr>,
    buf: Box<[u8]>,
    last_reject_log: Option<Instant>,
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public.local_addr().context("gossip socket address")
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        self.codec.send(self.tap_addr, envelope).await?;
        let plain = loop {
            let (n, from) = self.tap.recv_from(&mut self.buf).await.context("gossip codec")?;
            if from == self.codec_addr {
                break &self.buf[..n];
            }
        };
        let sealed = seal(&self.key, plain);
        if sealed.len() > MAX_DATAGRAM {
            tracing::warn!(bytes = sealed.len(), "gossip message too large for one datagram; dropped");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        // A peer that cannot be reached (or a firewall dropping our packets) is not a broken
        // transport: chitchat would stop gossiping altogether if we returned an error.
        match self.public.send_to(&sealed, to).await {
            Ok(n) => Ok(SendOutcome { num_bytes_sent: n }),
            Err(e) => {
                tracing::debug!(to = %to, error = %e, "gossip send failed");
                Ok(SendOutcome { num_bytes_sent: 0 })
            }
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(from) = self.pending_from {
                // chitchat's codec drops payloads it cannot parse; do not wait forever for one.
                match tokio::time::timeout(Duration::from_millis(200), self.codec.recv()).await {
                    Ok(Ok(mut outcome)) => {
                        if outcome.from_addr != self.tap_addr {
                            continue;
                        }
                        self.pending_from = None;
                        outcome.from_addr = from;
                        return Ok(outcome);
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        self.pending_from = None;
                        continue;
                    }
                }
            }
            let (n, from) = match self.public.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors surface here as ConnectionRefused; they are not fatal.
                    tracing::debug!(error = %e, "gossip recv error");
                    continue;
                }
            };
            let Some(plain) = open(&self.key, &self.buf[..n]) else {
                let total = self.stats.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                // One line per second at most: a flood must not flood the log too.
                if self.last_reject_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    self.last_reject_log = Some(Instant::now());
                    tracing::warn!(
                        from = %from,
                        bytes = n,
                        rejected_total = total,
                        "gossip packet rejected: not sealed with this cluster's key"
                    );
                }
                continue;
            };
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            self.tap.send_to(&plain, self.codec_addr).await.context("gossip codec")?;
            self.pending_from = Some(from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_rejections() {
        let key = GossipKey::new([7; 32]);
        let other = GossipKey::new([8; 32]);
        let sealed = seal(&key, b"hello");
        assert_eq!(open(&key, &sealed).as_deref(), Some(&b"hello"[..]), "same key opens");
        assert_eq!(open(&other, &sealed), None, "another cluster's key does not open");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(open(&key, &tampered), None, "a flipped bit is caught");
        assert_eq!(open(&key, b"\x00\x00plain chitchat"), None, "plaintext is refused");
        assert_eq!(open(&key, &[]), None, "empty datagram is refused");
        assert_ne!(seal(&key, b"x"), seal(&key, b"x"), "fresh nonce per datagram");
    }

    #[test]
    fn key_hex_round_trip() {
        let key = GossipKey::new([0xab; 32]);
        assert_eq!(GossipKey::from_hex(&key.to_hex()).unwrap().0, key.0);
        assert!(GossipKey::from_hex("abc").is_none());
        assert!(GossipKey::from_hex(&"zz".repeat(32)).is_none());
    }
}
