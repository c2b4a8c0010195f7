//! Certificate renewal, one loop for every role: at two thirds of its validity a node makes a new
//! key and CSR, has a manager sign it over the cluster port (its current certificate proves who it
//! is), stores the new certificate in the data dir and swaps it into TLS (`LiveCert`), so new
//! handshakes in both directions use it without a restart.
//!
//! ```text
//! sleep until 2/3 of the validity ─▶ new_csr ─▶ who signs?
//!    manager leading:  itself, from the CA in the replicated state
//!    manager follower: the leader's /cluster/renew
//!    worker:           its known managers' /cluster/renew, first that answers
//! ─▶ save to DATA_DIR/tls ─▶ LiveCert::replace ─▶ loop
//!    failed: retry with backoff; once the certificate expired, nobody accepts it any more:
//!            the node stops and says how to rejoin (a lone manager excepted: it signs itself)
//! ```
//!
//! A loop belongs to one role of the process: it ends when that role ends (manager shut down,
//! worker promoted or stopped); `node::start` spawns the loop of the next role.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::node::start::RunningNode;
use crate::pki::tls::{LiveCert, NodeCert, PeerIdentity};
use crate::rpc::wire::RenewRequest;
use crate::rpc::{RpcClient, RpcError};
use shoal_model::{NodeId, Role};

/// The first pause after a failed renewal; it doubles up to [`max_backoff`].
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// How long one signing request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// When a certificate valid from `from` to `to` is due for renewal: at two thirds of its life, so
/// a third is left for retries (a manager down for a while, an election).
pub fn renew_at(from: SystemTime, to: SystemTime) -> SystemTime {
    from + to.duration_since(from).unwrap_or_default() * 2 / 3
}

/// The longest pause between two failed attempts: a tenth of the validity (so that short test
/// validities still get several tries before expiry), between 1 s and 30 s.
fn max_backoff(from: SystemTime, to: SystemTime) -> Duration {
    (to.duration_since(from).unwrap_or_default() / 10).clamp(FIRST_RETRY, Duration::from_secs(30))
}

/// `t` as RFC 3339 in UTC, for people (logs and messages).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

/// The error of a node whose certificate expired at `at`: what happened and how to rejoin.
pub fn expired(at: SystemTime, id: NodeId, role: Role, data_dir: &Path) -> Error {
    let when = rfc3339(at);
    let dir = data_dir.display();
    let role = role.as_str();
    Error::CertificateExpired(format!(
        "the node certificate of this node expired at {when}; it cannot reach the cluster any more (no node accepts an expired certificate: the node was off, or cut off, for longer than the certificate's validity, --cert-expiry on the managers). Rejoin it: move the data dir {dir} aside, get a fresh token with `shoal join-token {role}` on a manager, and run `shoal agent --join MANAGER --token TOKEN --data-dir {dir}`; it joins as a new node, and `shoal node rm {id:016x}` removes this one's old entry"
    ))
}

/// `Some(not after)` if `cert` has expired.
pub(crate) fn expired_at(cert: &NodeCert) -> Result<Option<SystemTime>, Error> {
    let (_, to) = cert.validity()?;
    Ok((to <= SystemTime::now()).then_some(to))
}

/// One renewal: a new key and CSR, signed by the first of `targets` (cluster addresses of
/// managers) that does. Returns the manager that signed and the certificate, which the caller
/// installs (or hands over, on a role switch).
pub(crate) async fn request(
    rpc: &RpcClient,
    targets: &[String],
    ip: IpAddr,
    ca_pem: &str,
) -> Result<(String, NodeCert), Error> {
    let (key_pem, csr_pem) = crate::pki::tls::new_csr()?;
    let req = RenewRequest { csr_pem, ip };
    let mut last = Error::NoLeader;
    for addr in targets {
        let res: Result<Result<String, Error>, RpcError> =
            rpc.call(addr, "/cluster/renew", &req, REQUEST_TIMEOUT).await;
        match res {
            Ok(Ok(cert_pem)) => {
                let cert = NodeCert { ca_pem: ca_pem.to_string(), cert_pem, key_pem };
                return Ok((addr.clone(), cert));
            }
            Ok(Err(e)) => last = e,
            Err(e) => last = Error::Unavailable(format!("certificate renewal through {addr} failed: {e}")),
        }
    }
    Err(last)
}

/// Keeps the certificate of `node` fresh until its role ends. A certificate that expires anyway
/// (renewal kept failing) stops the node with [`expired`]'s message, unless it is the cluster's only
/// manager, which can always sign for itself once it leads.
pub(crate) async fn run(node: RunningNode) {
    let mut backoff = FIRST_RETRY;
    loop {
        let (from, to) = match live(&node).current().validity() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the node certificate; renewal stopped");
                return;
            }
        };
        if let Ok(wait) = renew_at(from, to).duration_since(SystemTime::now()) {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = role_ended(&node) => return,
            }
        }
        if has_ended(&node) {
            return;
        }
        let err = match renew(&node).await {
            Ok(until) => {
                tracing::info!(valid_until = %rfc3339(until), "renewed the node certificate");
                backoff = FIRST_RETRY;
                continue;
            }
            Err(e) => e,
        };
        if has_ended(&node) {
            return;
        }
        if SystemTime::now() >= to && !can_sign_expired(&node).await {
            let e = expired(to, id(&node), role(&node), data_dir(&node));
            tracing::error!(error = %e, "certificate renewal failed and the certificate expired; stopping");
            give_up(&node, e.to_string());
            return;
        }
        tracing::warn!(error = %err, retry_in = ?backoff, "certificate renewal failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = role_ended(&node) => return,
        }
        backoff = (backoff * 2).min(max_backoff(from, to));
    }
}

/// Gets a new certificate, stores it and swaps it in; returns its end of validity.
async fn renew(node: &RunningNode) -> Result<SystemTime, Error> {
    let current = live(node).current();
    let renewed = match node {
        RunningNode::Manager(m) => {
            let ip = m.config.advertise_ip;
            match m.leader_to_forward()? {
                // The leader signs its own from the CA in the replicated state.
                None => {
                    let (key_pem, csr_pem) = crate::pki::tls::new_csr()?;
                    let cert_pem = m.sign_renewal(&csr_pem, PeerIdentity { id: m.id, role: Role::Manager }, ip)?;
                    NodeCert { ca_pem: current.ca_pem, cert_pem, key_pem }
                }
                Some(leader) => request(&m.rpc, &[leader.cluster_addr], ip, &current.ca_pem).await?.1,
            }
        }
        RunningNode::Worker(w) => request(w.rpc(), &w.manager_addrs(), w.advertised_ip()?, &current.ca_pem).await?.1,
    };
    renewed.save(data_dir(node))?;
    live(node).replace(renewed.clone())?;
    Ok(renewed.validity()?.1)
}

/// Whether `node` can still renew a certificate that expired: only a manager that is the only
/// voter, since it elects itself without the network and then signs its own.
pub(crate) async fn can_sign_expired(node: &RunningNode) -> bool {
    let RunningNode::Manager(m) = node else { return false };
    let id = m.id;
    m.raft
        .with_raft_state(move |st| st.membership_state.effective().voter_ids().eq(std::iter::once(id)))
        .await
        .unwrap_or(false)
}

fn live(node: &RunningNode) -> &LiveCert {
    match node {
        RunningNode::Manager(m) => &m.cert,
        RunningNode::Worker(w) => w.live_cert(),
    }
}

fn data_dir(node: &RunningNode) -> &Path {
    match node {
        RunningNode::Manager(m) => &m.config.data_dir,
        RunningNode::Worker(w) => w.data_dir(),
    }
}

fn id(node: &RunningNode) -> NodeId {
    match node {
        RunningNode::Manager(m) => m.id,
        RunningNode::Worker(w) => w.id,
    }
}

fn role(node: &RunningNode) -> Role {
    match node {
        RunningNode::Manager(_) => Role::Manager,
        RunningNode::Worker(_) => Role::Worker,
    }
}

/// Resolves when this role of the process is over.
async fn role_ended(node: &RunningNode) {
    match node {
        RunningNode::Manager(m) => m.stopped().await,
        RunningNode::Worker(w) => {
            tokio::select! {
                _ = w.promoted() => {}
                _ = w.stopped() => {}
            }
        }
    }
}

fn has_ended(node: &RunningNode) -> bool {
    match node {
        RunningNode::Manager(m) => m.is_stopped(),
        RunningNode::Worker(w) => w.is_promoted() || w.is_stopped(),
    }
}

fn give_up(node: &RunningNode, reason: String) {
    match node {
        RunningNode::Manager(m) => m.give_up(reason),
        RunningNode::Worker(w) => w.stop(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_times() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs;
        let cases = [
            ("90 days", s(90 * 86_400), s(60 * 86_400), s(30)),
            ("24 s", s(24), s(16), Duration::from_millis(2_400)),
            ("10 s", s(10), Duration::from_millis(6_666), s(1)),
        ];
        for (name, validity, due_after, cap) in cases {
            let due = renew_at(t0, t0 + validity).duration_since(t0).unwrap();
            assert!(due.abs_diff(due_after) < Duration::from_millis(1), "{name}: due after {due:?}");
            assert_eq!(max_backoff(t0, t0 + validity), cap, "{name}");
        }
    }

    #[test]
    fn the_expiry_message_says_when_and_how_to_rejoin() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let e = expired(at, 0xabc, Role::Worker, Path::new("/var/lib/shoal"));
        assert!(matches!(e, Error::CertificateExpired(_)));
        assert!(!e.is_retryable());
        let msg = e.to_string();
        for want in [
            "expired at 2023-11-14T22:13:20Z",
            "cannot reach the cluster",
            "move the data dir /var/lib/shoal aside",
            "`shoal join-token worker`",
            "shoal agent --join MANAGER --token TOKEN --data-dir /var/lib/shoal",
            "`shoal node rm 0000000000000abc` removes this one's old entry",
        ] {
            assert!(msg.contains(want), "{want:?} in {msg}");
        }
    }
}
