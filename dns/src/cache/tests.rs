//! The cache against the uncached path: same bytes for the same seed, a new snapshot never answered
//! from the old one's entries, answers still shuffled, the budget kept, and what is not `answer()`'s
//! left alone.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};

use super::*;
use crate::answer::DnsConfig;
use crate::fuzzing::fixture;
use crate::server::SnapshotHandle;

const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 9)), 4242);

fn query(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("valid"), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encodes")
}

fn handler(handle: SnapshotHandle) -> DnsHandler {
    DnsHandler::new(handle, DnsConfig::default(), None).expect("no recursor")
}

/// The uncached reply to `packet` shuffled with `seed`.
fn uncached(h: &DnsHandler, packet: &[u8], seed: u64) -> Vec<u8> {
    let request = Request::from_bytes(packet.to_vec(), CLIENT, Protocol::Udp).expect("parses");
    poll_now(crate::udp::reply_to(h, &request, |r| r, &h.snapshot(), seed)).expect("at once").expect("a reply")
}

fn cached(cache: &AnswerCache, h: &DnsHandler, packet: &[u8], rng: &mut Rng) -> (Vec<u8>, u64, bool) {
    let mut out = Vec::new();
    match cache.reply(h, packet, CLIENT, rng, &mut out) {
        Cached::Sent { seed, filled } => (out, seed, filled),
        other => panic!("not from the cache: {other:?}"),
    }
}

#[test]
fn a_hit_is_the_uncached_reply_for_its_seed_with_the_clients_id() {
    let h = handler(SnapshotHandle::new(fixture()));
    let cache = AnswerCache::default();
    let mut rng = Rng::new(1);
    let cases = [
        ("A", query(1, "web.service.shoal.", RecordType::A, None)),
        ("A, EDNS", query(2, "big.service.shoal.", RecordType::A, Some(1232))),
        ("SRV with glue, trimmed", query(3, "big.service.shoal.", RecordType::SRV, Some(700))),
        ("SRV, classic", query(4, "_web._tcp.service.shoal.", RecordType::SRV, None)),
        ("NXDOMAIN", query(5, "nope.service.shoal.", RecordType::A, None)),
        ("NODATA", query(6, "web.service.shoal.", RecordType::TXT, None)),
        ("node", query(7, "h1.node.shoal.", RecordType::A, None)),
        ("SOA", query(8, "shoal.", RecordType::SOA, None)),
    ];
    for (name, packet) in cases {
        let (first, seed, filled) = cached(&cache, &h, &packet, &mut rng);
        assert!(filled, "{name}: the first ask fills");
        assert_eq!(first, uncached(&h, &packet, seed), "{name}: the filling reply");
        let mut again = packet.clone();
        again[..2].copy_from_slice(&0xbeefu16.to_be_bytes());
        again[2] &= !0x01; // RD off: another key, another entry
        for round in 0..20 {
            let (hit, seed, _) = cached(&cache, &h, &packet, &mut rng);
            assert_eq!(hit, uncached(&h, &packet, seed), "{name}, round {round}: a hit");
            let (hit, seed, _) = cached(&cache, &h, &again, &mut rng);
            assert_eq!(hit, uncached(&h, &again, seed), "{name}, round {round}: other ID and flags");
            assert_eq!(Message::from_vec(&hit).expect("parses").metadata.id, 0xbeef, "{name}: the client's ID");
        }
    }
}

#[test]
fn a_mixed_case_question_is_answered_as_spelled_or_left_uncached() {
    let h = handler(SnapshotHandle::new(fixture()));
    let cache = AnswerCache::default();
    let mut rng = Rng::new(2);
    let mut out = Vec::new();
    // A: the owner is respelled too; the same bytes as the uncached reply in that spelling.
    cached(&cache, &h, &query(1, "web.service.shoal.", RecordType::A, None), &mut rng);
    for spelling in ["WeB.SERVICE.shoal.", "WEB.SERVICE.SHOAL.", "web.service.SHOAL."] {
        let mixed = query(9, spelling, RecordType::A, None);
        let (hit, seed, filled) = cached(&cache, &h, &mixed, &mut rng);
        assert!(!filled, "{spelling}: one entry for every spelling");
        assert_eq!(hit, uncached(&h, &mixed, seed), "{spelling}");
        for r in &Message::from_vec(&hit).expect("parses").answers {
            assert_eq!(r.name.to_string(), spelling, "owners spelled as asked");
        }
    }
    // SRV with glue, NXDOMAIN with the SOA: hickory writes SRV targets uncompressed and the glue
    // and SOA names compress against those and the SOA's owner, never against the question's
    // name, so every spelling is a hit too (else `fill` would leave them uncached).
    for (lower, spelling, qtype) in [
        ("_web._tcp.service.shoal.", "_WEB._tcp.service.SHOAL.", RecordType::SRV),
        ("nope.service.shoal.", "NOPE.Service.shoal.", RecordType::A),
    ] {
        cached(&cache, &h, &query(1, lower, qtype, None), &mut rng);
        let mixed = query(2, spelling, qtype, None);
        let (hit, seed, filled) = cached(&cache, &h, &mixed, &mut rng);
        assert!(!filled, "{spelling}");
        assert_eq!(hit, uncached(&h, &mixed, seed), "{spelling}");
    }
    assert_eq!(cache.reply(&h, &[0; 11], CLIENT, &mut rng, &mut out), Cached::Uncached);
}

#[test]
fn a_new_snapshot_is_never_answered_from_the_old_ones_entries() {
    let handle = SnapshotHandle::new(fixture());
    let h = handler(handle.clone());
    let cache = AnswerCache::default();
    let mut rng = Rng::new(3);
    let packet = query(1, "web.service.shoal.", RecordType::A, None);
    let count = |bytes: &[u8]| Message::from_vec(bytes).expect("parses").answers.len();
    assert_eq!(count(&cached(&cache, &h, &packet, &mut rng).0), 2);
    let mut snap = fixture();
    let web = Arc::make_mut(snap.services.get_mut("web").expect("web"));
    web.retain(|i| i.id() == "web-1");
    handle.set(snap);
    let (after, _, filled) = cached(&cache, &h, &packet, &mut rng);
    assert!(filled, "a new generation");
    assert_eq!(count(&after), 1, "the new snapshot's answer");
    assert_eq!(cache.usage().0, 1, "the old entries are gone");
    handle.set(fixture());
    assert_eq!(count(&cached(&cache, &h, &packet, &mut rng).0), 2, "and back");
}

#[test]
fn answers_stay_shuffled_and_every_instance_comes_first() {
    let h = handler(SnapshotHandle::new(fixture()));
    let cache = AnswerCache::default();
    let mut rng = Rng::new(4);
    let packet = query(1, "big.service.shoal.", RecordType::A, Some(4096));
    let mut orders = HashSet::new();
    let mut firsts = HashSet::new();
    let runs = 200 * RESHUFFLE_EVERY as usize;
    for _ in 0..runs {
        let m = Message::from_vec(&cached(&cache, &h, &packet, &mut rng).0).expect("parses");
        let order: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        firsts.insert(order[0].clone());
        orders.insert(order);
    }
    assert!(orders.len() > VARIANTS, "reshuffled: {} orders in {runs} answers", orders.len());
    assert_eq!(firsts.len(), 40, "every one of the 40 instances came first");
}

#[test]
fn the_cache_keeps_to_its_budget_and_once_full_admits_few() {
    let h = handler(SnapshotHandle::new(fixture()));
    let cache = AnswerCache::default();
    let mut rng = Rng::new(5);
    let mut out = Vec::new();
    let nx = |n: usize| query(1, &format!("nope{n}.service.shoal."), RecordType::A, None);
    let mut n = 0;
    while cache.usage().1 + FULL_MARGIN <= CACHE_BYTES {
        cached(&cache, &h, &nx(n), &mut rng);
        n += 1;
    }
    let (entries, _) = cache.usage();
    let (mut uncached_misses, mut admitted) = (0, 0);
    for m in n..n + 1600 {
        match cache.reply(&h, &nx(m), CLIENT, &mut rng, &mut out) {
            Cached::Uncached => uncached_misses += 1,
            Cached::Sent { filled: true, .. } => admitted += 1,
            other => panic!("a new name: {other:?}"),
        }
        assert!(cache.usage().1 <= CACHE_BYTES, "within the budget");
    }
    // 1 in ADMIT_WHEN_FULL on average: 100 of 1,600, give or take.
    assert!((50..200).contains(&admitted), "{admitted} admitted, {uncached_misses} left uncached");
    // Admissions first take the last FULL_MARGIN bytes, then each replaces about one entry.
    let kept = cache.usage().0;
    assert!(kept >= entries - admitted && kept <= entries + FULL_MARGIN / 100, "{entries} then {kept}");
    let oldest = cache.reply(&h, &nx(0), CLIENT, &mut rng, &mut out);
    assert!(!matches!(oldest, Cached::Sent { filled: false, .. }), "the oldest went first: {oldest:?}");
    let (_, _, filled) = cached(&cache, &h, &nx(n - 1), &mut rng);
    assert!(!filled, "the newest stayed");
}

#[test]
fn what_answer_does_not_answer_is_left_uncached() {
    let h = handler(SnapshotHandle::new(fixture()));
    let cache = AnswerCache::default();
    let mut rng = Rng::new(6);
    let mut out = Vec::new();
    let mut response = query(1, "web.service.shoal.", RecordType::A, None);
    response[2] |= 0x80;
    let mut notify = query(1, "web.service.shoal.", RecordType::A, None);
    notify[2] |= 4 << 3;
    let mut edns_v1 = Message::from_vec(&query(1, "web.service.shoal.", RecordType::A, None)).expect("parses");
    let mut e = Edns::new();
    e.set_version(1);
    edns_v1.set_edns(e);
    let cases: Vec<(&str, Vec<u8>, Cached)> = vec![
        ("a response", response, Cached::Dropped),
        ("short", vec![0; 5], Cached::Uncached),
        ("garbage", (0..40u8).collect(), Cached::Uncached),
        ("outside the domains", query(1, "example.com.", RecordType::A, None), Cached::Uncached),
        ("NOTIFY", notify, Cached::Uncached),
        ("EDNS version 1", edns_v1.to_vec().expect("encodes"), Cached::Uncached),
    ];
    for (name, packet, want) in cases {
        assert_eq!(cache.reply(&h, &packet, CLIENT, &mut rng, &mut out), want, "{name}");
    }
    assert_eq!(cache.usage(), (0, 0), "nothing kept");
    let m = Message::from_vec(&uncached(&h, &query(1, "example.com.", RecordType::A, None), 0)).expect("parses");
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}
