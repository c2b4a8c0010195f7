//! How long a catalog change takes to show in DNS.
//!
//! ```text
//!   poller thread ── A svc-NNNN.service.shoal every --poll-interval ──▶ the node's DNS (UDP)
//!   t_send ── PUT /v1/catalog/register (instance k's check → critical | passing) ── t_ack
//!   t_seen: the first answer without (critical) or with (passing) instance k's address
//! ```
//!
//! Change `n` flips instance `k` of pair `n / 2` (service `n/2 mod services`, instance
//! `n/2 mod instances`) to critical when `n` is even and back to passing when it is odd, so every
//! change is a real change of the truth and the catalog is whole again after each pair. The poller
//! starts before `t_send` and asks back to back at the interval, so `t_seen` is late by at most one
//! interval plus one round trip. The poller's deadline bounds each change; a change not seen by
//! then fails the phase.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::client::{Client, Normal};
use super::zone::{Kind, Question, service_name};
use crate::catalog_scale::Layout;
use crate::catalog_scale::load::register;

/// Knobs of the change phase.
pub struct Settings {
    pub changes: usize,
    pub poll: Duration,
    /// Bound on one change: the poller gives up this long after it started.
    pub timeout: Duration,
    pub request_timeout: Duration,
}

/// One timed change.
pub struct Change {
    pub to: &'static str,
    /// Just before the write was sent → the first DNS answer with the new truth.
    pub from_send_ms: f64,
    /// The write's acknowledgment → that answer (negative: DNS had it before the ack arrived).
    pub from_ack_ms: f64,
    /// The write itself, send → ack.
    pub ack_ms: f64,
    /// DNS queries the poller sent for this change.
    pub polls: u32,
}

/// A pause between changes, so that each one starts from a settled node.
const GAP: Duration = Duration::from_millis(10);

pub async fn run(api: &str, dns: SocketAddr, layout: Layout, s: &Settings) -> Result<Vec<Change>> {
    let http = crate::catalog_scale::http_client(s.request_timeout, 1)?;
    let mut out = Vec::with_capacity(s.changes);
    for n in 0..s.changes {
        let pair = n / 2;
        let k = (pair % layout.services) * layout.instances + pair % layout.instances;
        let to = if n % 2 == 0 { "critical" } else { "passing" };
        let addr = layout.node_addr(k);
        let q = Question { name: service_name(&layout, k), rtype: "A", kind: Kind::A };
        let want_present = to == "passing";
        let (poll, timeout) = (s.poll, s.timeout);
        let poller = tokio::task::spawn_blocking(move || {
            poll_until(dns, &q, poll, timeout, |n| {
                n.answers.iter().any(|r| r.ends_with(&format!(" A {addr}"))) == want_present
            })
        });
        // The poller asks from now on; the first answers still show the old truth.
        let body = layout.register_body(k, to);
        let t_send = Instant::now();
        register(&http, api, body).await.map_err(|e| anyhow::anyhow!("change {n} ({to}): {e}"))?;
        let t_ack = Instant::now();
        let (seen, polls) = poller.await.context("poller thread")??;
        let Some(t_seen) = seen else {
            bail!(
                "change {n}: instance {} → {to} not in DNS within {timeout:?} ({polls} polls)",
                layout.instance_id(k)
            );
        };
        let ms = |a: Instant, b: Instant| {
            if b >= a { (b - a).as_secs_f64() * 1e3 } else { -((a - b).as_secs_f64() * 1e3) }
        };
        out.push(Change {
            to,
            from_send_ms: ms(t_send, t_seen),
            from_ack_ms: ms(t_ack, t_seen),
            ack_ms: ms(t_send, t_ack),
            polls,
        });
        tokio::time::sleep(GAP).await;
    }
    Ok(out)
}

/// Asks `q` every `every` until `ok` holds; the time of that answer (`None` at `timeout`) and how
/// many queries were sent.
fn poll_until(
    dns: SocketAddr,
    q: &Question,
    every: Duration,
    timeout: Duration,
    ok: impl Fn(&Normal) -> bool,
) -> Result<(Option<Instant>, u32)> {
    let mut c = Client::new(dns, Duration::from_millis(100))?;
    let start = Instant::now();
    let mut polls = 0u32;
    while start.elapsed() < timeout {
        polls += 1;
        // A lost or late answer is just a missed poll.
        if let Ok(r) = c.ask(q) {
            let at = Instant::now();
            if ok(&Normal::of(&r.msg)) {
                return Ok((Some(at), polls));
            }
        }
        let next = start + every * polls;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    Ok((None, polls))
}
