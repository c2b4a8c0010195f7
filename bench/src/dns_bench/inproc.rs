//! What Shoal's answer costs without a socket: `shoal_dns::answer()` called in this process on a
//! snapshot of the same catalog, for the questions of the query file, on one thread. Set beside
//! the node's CPU time per query under dnsperf, it splits that time into the answer itself and
//! everything around it (hickory's parse, its UDP loop and per-query task, the encoding, tokio,
//! the kernel).
//!
//! The snapshot is built from the layout the way the node builds its own (`catalog_snapshot`):
//! instances by node then ID, their node's address (so `own_address` is false), passing, the
//! default weights. It leaves out the node's built-in `consul` service. Before timing, every
//! answer is encoded and checked against the live node's answer to the same question, so the
//! copy is the node's catalog as DNS sees it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Edns, Message, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use shoal_dns::DnsConfig;
use shoal_model::catalog::snapshot::{Snapshot, SnapshotInstance, SnapshotNode};
use shoal_model::catalog::{Health, Weights};

use super::client::{Client, EDNS_PAYLOAD, Normal};
use super::zone::{Kind, Question};
use crate::catalog_scale::{BASE_PORT, Layout};

/// The bytes the server leaves for the answer under the client's EDNS buffer (its OPT record).
const UDP_LIMIT: usize = EDNS_PAYLOAD as usize - 11;

/// The cost of one question: the median per kind, and the file's mix (a third of each).
pub struct Cost {
    /// `answer()` alone, ns per question: (A, SRV, NXDOMAIN, the mix).
    pub answer_ns: [f64; 4],
    /// `answer()` and the response's encoding (`Message::to_vec`), ns per question, same order.
    pub with_encoding_ns: [f64; 4],
}

/// The node's snapshot of `layout`, as its DNS feed would build it.
pub fn snapshot(layout: &Layout) -> Snapshot {
    let mut services = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for s in 0..layout.services {
        let mut instances: Vec<SnapshotInstance> = (s * layout.instances..(s + 1) * layout.instances)
            .map(|k| {
                SnapshotInstance::new(
                    layout.instance_id(k).into(),
                    layout.node_name(k).into(),
                    layout.node_addr(k).into(),
                    false,
                    (BASE_PORT + k) as u16,
                    vec!["bench".into(), format!("v{}", k % 3).into()],
                    [("version".into(), "1.0.0".into())].into(),
                    Health::Passing,
                    Weights::default(),
                )
            })
            .collect();
        instances.sort_by(|a, b| (a.node(), a.id()).cmp(&(b.node(), b.id())));
        for i in &instances {
            nodes.insert(i.node().to_string(), SnapshotNode { address: i.address.to_string(), meta: BTreeMap::new() });
        }
        services.insert(layout.service(s * layout.instances), Arc::new(instances));
    }
    Snapshot { index: 1, services, service_indexes: BTreeMap::new(), nodes }
}

fn query(q: &Question) -> Result<Query> {
    let name = Name::from_str(&q.name).with_context(|| format!("{:?}", q.name))?;
    let rtype = RecordType::from_str(q.rtype).map_err(|e| anyhow::anyhow!("{}: {e}", q.rtype))?;
    Ok(Query::query(name, rtype))
}

/// The response the server would send for `ans`.
fn response(query: &Query, ans: shoal_dns::Answer) -> Message {
    let mut m = Message::response(1, OpCode::Query);
    m.metadata.authoritative = ans.authoritative;
    m.metadata.response_code = ans.code;
    m.metadata.truncation = ans.truncated;
    m.add_query(query.clone());
    m.answers = ans.answers;
    m.authorities = ans.authority;
    m.additionals = ans.additionals;
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    m.set_edns(edns);
    m
}

/// Checks the copy against the node at `dns`, then times every question for about `time` in all.
pub fn measure(layout: &Layout, questions: &[Question], dns: SocketAddr, time: Duration) -> Result<Cost> {
    let snap = snapshot(layout);
    let cfg = DnsConfig::default();
    let queries: Vec<(Kind, Query)> = questions.iter().map(|q| Ok((q.kind, query(q)?))).collect::<Result<_>>()?;
    let mut node = Client::new(dns, Duration::from_secs(2))?;
    for (q, (_, query)) in questions.iter().zip(&queries) {
        let mine = response(query, shoal_dns::answer(&snap, &cfg, query, Some(UDP_LIMIT), 7));
        let mine = Message::from_vec(&mine.to_vec()?)?;
        let live = node.ask(q)?;
        if Normal::of(&mine) != Normal::of(&live.msg) {
            bail!(
                "{} {}: the in-process copy answers {:#?}, the node {:#?}",
                q.name,
                q.rtype,
                Normal::of(&mine),
                Normal::of(&live.msg)
            );
        }
    }
    // Rounds over the whole file, half the time without encoding and half with. The median per
    // kind, not the mean: on a shared machine a call preempted in the middle would count whole.
    let mut answer_ns = [0.0; 4];
    let mut with_encoding_ns = [0.0; 4];
    for (encode, out) in [(false, &mut answer_ns), (true, &mut with_encoding_ns)] {
        let mut ns: [Vec<u64>; 3] = Default::default();
        let deadline = Instant::now() + time / 2;
        let mut seed = 1u64;
        while Instant::now() < deadline {
            for (kind, query) in &queries {
                seed = seed.wrapping_add(1);
                let t0 = Instant::now();
                let ans = shoal_dns::answer(&snap, &cfg, query, Some(UDP_LIMIT), seed);
                let len = if encode { response(query, ans).to_vec()?.len() } else { ans.answers.len() };
                ns[*kind as usize].push(t0.elapsed().as_nanos() as u64);
                std::hint::black_box(len);
            }
        }
        for (i, v) in ns.iter_mut().enumerate() {
            v.sort_unstable();
            out[i] = v.get(v.len() / 2).copied().unwrap_or(0) as f64;
        }
        // The file asks a third of each kind.
        out[3] = (out[0] + out[1] + out[2]) / 3.0;
    }
    Ok(Cost { answer_ns, with_encoding_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_answers_every_question_of_the_file() {
        let l = Layout { services: 3, instances: 4, nodes: 5 };
        let snap = snapshot(&l);
        assert_eq!(snap.services.len(), 3);
        assert_eq!(snap.nodes.len(), 5);
        let cfg = DnsConfig::default();
        for q in super::super::zone::questions(&l) {
            let query = query(&q).unwrap();
            let m = response(&query, shoal_dns::answer(&snap, &cfg, &query, Some(UDP_LIMIT), 1));
            let n = Normal::of(&Message::from_vec(&m.to_vec().unwrap()).unwrap());
            assert!(n.fits(q.kind, 4), "{} {}: {n:#?}", q.name, q.rtype);
        }
    }
}
