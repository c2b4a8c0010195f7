//! Table tests of [`answer`]: one named case per query form and rule.

use std::collections::BTreeMap;

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use shoal_model::catalog::snapshot::{Snapshot, SnapshotInstance, SnapshotNode};
use shoal_model::catalog::{Health, Weights};

use super::*;

fn inst(id: &str, node: &str, address: &str, own: bool, port: u16, tags: &[&str], health: Health) -> SnapshotInstance {
    SnapshotInstance::new(
        id.into(),
        node.into(),
        address.into(),
        own,
        port,
        tags.iter().map(|t| (*t).into()).collect(),
        Default::default(),
        health,
        Weights { passing: 10, warning: 2 },
    )
}

/// The catalog every case answers from.
pub(crate) fn fixture() -> Snapshot {
    use Health::*;
    let mut services = BTreeMap::new();
    services.insert(
        "web".to_string(),
        vec![
            inst("web-1", "h1", "10.0.0.1", false, 8080, &["v1", "Primary"], Passing),
            inst("web-2", "h2", "10.0.0.12", true, 8081, &["v2"], Warning),
            inst("web-3", "h2", "10.0.0.13", true, 8082, &["v1"], Critical),
            inst("web-4", "h1", "10.0.0.14", true, 8083, &["v1"], Maintenance),
        ],
    );
    services.insert("db".to_string(), vec![inst("db-1", "h6", "2001:db8::6", false, 5432, &[], Passing)]);
    services.insert("ext".to_string(), vec![inst("ext-1", "h1", "example.org", true, 443, &[], Passing)]);
    services.insert("down".to_string(), vec![inst("down-1", "h1", "10.0.0.1", false, 1, &[], Critical)]);
    services.insert("Api".to_string(), vec![inst("api-1", "h2", "10.0.0.2", false, 7000, &[], Passing)]);
    services.insert(
        "five".to_string(),
        (1..=5).map(|n| inst(&format!("five-{n}"), "h1", &format!("10.5.0.{n}"), true, 5000, &[], Passing)).collect(),
    );
    services.insert(
        "big".to_string(),
        (1..=40)
            .map(|n| inst(&format!("big-{n}"), "h1", &format!("10.1.0.{n}"), true, 9000 + n, &[], Passing))
            .collect(),
    );
    let node = |a: &str| SnapshotNode { address: a.into(), meta: BTreeMap::new() };
    let nodes = [("h1", "10.0.0.1"), ("h2", "10.0.0.2"), ("h6", "2001:db8::6"), ("Mixed", "10.0.0.9")]
        .into_iter()
        .map(|(n, a)| (n.to_string(), node(a)))
        .collect();
    Snapshot {
        index: 7,
        services: services.into_iter().map(|(k, v)| (k, std::sync::Arc::new(v))).collect(),
        nodes,
        ..Snapshot::default()
    }
}

/// A record as `dig` would show it, without TTL and class.
pub(crate) fn show(r: &Record) -> String {
    let data = match &r.data {
        RData::SRV(srv) => format!("{} {} {} {}", srv.priority, srv.weight, srv.port, srv.target),
        other => other.to_string(),
    };
    format!("{} {} {}", r.name, r.record_type(), data)
}

fn sorted(rs: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = rs.iter().map(show).collect();
    v.sort();
    v
}

/// What a case expects in the answer section.
enum Want {
    /// Exactly these records, in any order.
    Records(&'static [&'static str]),
    /// This many records.
    Count(usize),
}

struct Case {
    name: &'static str,
    qname: &'static str,
    qtype: RecordType,
    /// `None`: TCP.
    limit: Option<usize>,
    code: ResponseCode,
    answers: Want,
    /// `None`: only checked to resolve every SRV target (see `check_glue`).
    additionals: Option<&'static [&'static str]>,
    /// The SOA in authority (NXDOMAIN, NODATA).
    soa: bool,
    tc: bool,
}

const NONE: Want = Want::Records(&[]);
const WEB_A: Want = Want::Records(&["web.service.shoal. A 10.0.0.1", "web.service.shoal. A 10.0.0.12"]);
const WEB_SRV: &[&str] = &[
    "web.service.shoal. SRV 1 10 8080 h1.node.dc1.shoal.",
    "web.service.shoal. SRV 1 2 8081 0a00000c.addr.dc1.shoal.",
];
const WEB_GLUE: &[&str] = &["0a00000c.addr.dc1.shoal. A 10.0.0.12", "h1.node.dc1.shoal. A 10.0.0.1"];
/// A client without EDNS.
const CLASSIC: Option<usize> = Some(512);

fn ok(name: &'static str, qname: &'static str, qtype: RecordType, answers: Want) -> Case {
    Case {
        name,
        qname,
        qtype,
        limit: CLASSIC,
        code: ResponseCode::NoError,
        answers,
        additionals: Some(&[]),
        soa: false,
        tc: false,
    }
}

fn nodata(name: &'static str, qname: &'static str, qtype: RecordType) -> Case {
    Case { soa: true, ..ok(name, qname, qtype, NONE) }
}

fn nxdomain(name: &'static str, qname: &'static str, qtype: RecordType) -> Case {
    Case { code: ResponseCode::NXDomain, soa: true, ..ok(name, qname, qtype, NONE) }
}

fn cases() -> Vec<Case> {
    use RecordType::*;
    vec![
        // A/AAAA of services, health filtering
        ok("A: passing and warning in, critical and maintenance out", "web.service.shoal.", A, WEB_A),
        ok(
            "A: dc in the name",
            "web.service.dc1.shoal.",
            A,
            Want::Records(&["web.service.dc1.shoal. A 10.0.0.1", "web.service.dc1.shoal. A 10.0.0.12"]),
        ),
        ok(
            "A: dc in the name, dc.dc form",
            "web.service.dc1.dc.shoal.",
            A,
            Want::Records(&["web.service.dc1.dc.shoal. A 10.0.0.1", "web.service.dc1.dc.shoal. A 10.0.0.12"]),
        ),
        ok(
            "A: consul. alias answers under the asked domain",
            "web.service.consul.",
            A,
            Want::Records(&["web.service.consul. A 10.0.0.1", "web.service.consul. A 10.0.0.12"]),
        ),
        ok(
            "A: case-insensitive name, owner as asked",
            "WEB.Service.SHOAL.",
            A,
            Want::Records(&["WEB.Service.SHOAL. A 10.0.0.1", "WEB.Service.SHOAL. A 10.0.0.12"]),
        ),
        ok(
            "A: service name matched case-insensitively",
            "api.service.shoal.",
            A,
            Want::Records(&["api.service.shoal. A 10.0.0.2"]),
        ),
        ok("ANY: address records", "web.service.shoal.", ANY, WEB_A),
        ok("AAAA: IPv6 instance", "db.service.shoal.", AAAA, Want::Records(&["db.service.shoal. AAAA 2001:db8::6"])),
        nodata("A on an IPv6-only service: NODATA", "db.service.shoal.", A),
        nodata("AAAA on an IPv4-only service: NODATA", "web.service.shoal.", AAAA),
        nodata("MX on a service: NODATA", "web.service.shoal.", MX),
        nodata("A on a hostname instance: skipped, NODATA", "ext.service.shoal.", A),
        nxdomain("every instance critical: NXDOMAIN", "down.service.shoal.", A),
        nxdomain("unknown service: NXDOMAIN", "nope.service.shoal.", A),
        nxdomain("unknown datacenter: NXDOMAIN", "web.service.dc2.shoal.", A),
        nxdomain("unknown datacenter on a node: NXDOMAIN", "h1.node.dc2.shoal.", A),
        nxdomain("no kind label: NXDOMAIN", "web.shoal.", A),
        nxdomain("empty service name: NXDOMAIN", "service.shoal.", A),
        // tags
        ok(
            "tag: only tagged, critical still out",
            "v1.web.service.shoal.",
            A,
            Want::Records(&["v1.web.service.shoal. A 10.0.0.1"]),
        ),
        ok(
            "tag: case-insensitive",
            "PRIMARY.web.service.shoal.",
            A,
            Want::Records(&["PRIMARY.web.service.shoal. A 10.0.0.1"]),
        ),
        nxdomain("tag no live instance has: NXDOMAIN", "v9.web.service.shoal.", A),
        // SRV, both forms, weights, targets and glue
        Case {
            additionals: Some(WEB_GLUE),
            ..ok("SRV: node and .addr targets, glue", "web.service.shoal.", SRV, Want::Records(WEB_SRV))
        },
        Case {
            additionals: Some(WEB_GLUE),
            ..ok(
                "SRV RFC 2782 _tcp: any tag",
                "_web._tcp.service.shoal.",
                SRV,
                Want::Records(&[
                    "_web._tcp.service.shoal. SRV 1 10 8080 h1.node.dc1.shoal.",
                    "_web._tcp.service.shoal. SRV 1 2 8081 0a00000c.addr.dc1.shoal.",
                ]),
            )
        },
        Case {
            additionals: Some(WEB_GLUE),
            ..ok(
                "SRV RFC 2782 without .service",
                "_web._tcp.shoal.",
                SRV,
                Want::Records(&[
                    "_web._tcp.shoal. SRV 1 10 8080 h1.node.dc1.shoal.",
                    "_web._tcp.shoal. SRV 1 2 8081 0a00000c.addr.dc1.shoal.",
                ]),
            )
        },
        Case {
            additionals: Some(&["0a00000c.addr.dc1.shoal. A 10.0.0.12"]),
            ..ok(
                "SRV RFC 2782 tag, warning weight",
                "_web._v2.service.shoal.",
                SRV,
                Want::Records(&["_web._v2.service.shoal. SRV 1 2 8081 0a00000c.addr.dc1.shoal."]),
            )
        },
        ok(
            "A on an RFC 2782 name",
            "_web._udp.service.shoal.",
            A,
            Want::Records(&["_web._udp.service.shoal. A 10.0.0.1", "_web._udp.service.shoal. A 10.0.0.12"]),
        ),
        Case {
            additionals: Some(&["0a00000c.addr.dc1.consul. A 10.0.0.12", "h1.node.dc1.consul. A 10.0.0.1"]),
            ..ok(
                "SRV under consul.: targets under consul.",
                "web.service.consul.",
                SRV,
                Want::Records(&[
                    "web.service.consul. SRV 1 10 8080 h1.node.dc1.consul.",
                    "web.service.consul. SRV 1 2 8081 0a00000c.addr.dc1.consul.",
                ]),
            )
        },
        Case {
            additionals: Some(&["h6.node.dc1.shoal. AAAA 2001:db8::6"]),
            ..ok(
                "SRV IPv6 node address: AAAA glue",
                "db.service.shoal.",
                SRV,
                Want::Records(&["db.service.shoal. SRV 1 10 5432 h6.node.dc1.shoal."]),
            )
        },
        ok(
            "SRV hostname instance: hostname target, no glue",
            "ext.service.shoal.",
            SRV,
            Want::Records(&["ext.service.shoal. SRV 1 10 443 example.org."]),
        ),
        // nodes
        ok("node: A", "h1.node.shoal.", A, Want::Records(&["h1.node.shoal. A 10.0.0.1"])),
        ok("node: dc in the name", "h2.node.dc1.shoal.", A, Want::Records(&["h2.node.dc1.shoal. A 10.0.0.2"])),
        ok("node: case-insensitive", "mixed.NODE.shoal.", A, Want::Records(&["mixed.NODE.shoal. A 10.0.0.9"])),
        ok("node: AAAA", "h6.node.consul.", AAAA, Want::Records(&["h6.node.consul. AAAA 2001:db8::6"])),
        nodata("node: AAAA of an IPv4 node, NODATA", "h1.node.shoal.", AAAA),
        nodata("node: TXT, NODATA", "h1.node.shoal.", TXT),
        // Found by the fuzz target: the SRV-glue rule (both families) answered A here.
        nodata("node: SRV, NODATA", "h1.node.dc1.shoal.", SRV),
        nxdomain("node: unknown, NXDOMAIN", "h9.node.shoal.", A),
        // .addr
        ok("addr: IPv4", "0a00000c.addr.dc1.shoal.", A, Want::Records(&["0a00000c.addr.dc1.shoal. A 10.0.0.12"])),
        ok(
            "addr: IPv6",
            "20010db8000000000000000000000006.addr.dc1.shoal.",
            AAAA,
            Want::Records(&["20010db8000000000000000000000006.addr.dc1.shoal. AAAA 2001:db8::6"]),
        ),
        ok(
            "addr: upper-case hex",
            "0A00000C.addr.dc1.shoal.",
            A,
            Want::Records(&["0A00000C.addr.dc1.shoal. A 10.0.0.12"]),
        ),
        nodata("addr: AAAA of an IPv4 addr, NODATA", "0a00000c.addr.dc1.shoal.", AAAA),
        nodata("addr: SRV, NODATA", "0a00000c.addr.dc1.shoal.", SRV),
        nxdomain("addr: bad hex, NXDOMAIN", "zz00000c.addr.dc1.shoal.", A),
        nxdomain("addr: bad length, NXDOMAIN", "0a0000.addr.dc1.shoal.", A),
        // the zone itself, other types and names
        nodata("apex: NODATA", "shoal.", A),
        Case { soa: false, ..ok("SOA: the domain's, in the answer", "web.service.shoal.", SOA, Want::Count(1)) },
        Case { code: ResponseCode::NotImp, ..ok("AXFR: NOTIMP", "shoal.", AXFR, NONE) },
        Case { code: ResponseCode::Refused, ..ok("outside the domains: REFUSED", "example.com.", A, NONE) },
        // size limits
        Case {
            tc: false,
            ..ok("UDP without EDNS: 3 answers, no TC when all would fit", "five.service.shoal.", A, Want::Count(3))
        },
        Case {
            tc: true,
            additionals: None,
            ..ok("UDP without EDNS: 3 answers and TC when all don't fit", "big.service.shoal.", A, Want::Count(3))
        },
        Case {
            tc: true,
            additionals: None,
            ..ok("UDP without EDNS, SRV: glue of the kept answers only", "big.service.shoal.", SRV, Want::Count(3))
        },
        Case {
            limit: Some(4096 - 11),
            ..ok("UDP with a large EDNS buffer: whole", "big.service.shoal.", A, Want::Count(40))
        },
        Case {
            limit: Some(1232 - 11),
            tc: true,
            additionals: None,
            ..ok("UDP with EDNS 1232, SRV: trimmed to the buffer, TC", "big.service.shoal.", SRV, Want::Count(19))
        },
        Case {
            limit: Some(512 - 11),
            ..ok("EDNS advertising 512: the classic cap", "five.service.shoal.", A, Want::Count(3))
        },
        Case { limit: None, additionals: None, ..ok("TCP: whole", "big.service.shoal.", SRV, Want::Count(40)) },
    ]
}

/// Every SRV target under the domain has its glue, and every glue record is a kept target's.
fn check_glue(case: &str, a: &Answer) {
    let targets: Vec<Name> = a
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.target.clone()),
            _ => None,
        })
        .collect();
    let ours = |t: &&Name| t.to_ascii().ends_with(".shoal.") || t.to_ascii().ends_with(".consul.");
    for t in targets.iter().filter(ours) {
        assert!(a.additionals.iter().any(|g| &g.name == t), "case {case}: no glue for {t}");
    }
    for g in &a.additionals {
        assert!(targets.contains(&g.name), "case {case}: glue {} for no kept target", show(g));
    }
}

#[test]
fn answer_table() {
    let snap = fixture();
    let cfg = DnsConfig::default();
    for case in cases() {
        let q = Query::query(Name::from_ascii(case.qname).unwrap(), case.qtype);
        let a = answer(&snap, &cfg, &q, case.limit, 42);
        let name = case.name;
        assert_eq!(a.code, case.code, "case {name}: code");
        assert_eq!(a.authoritative, case.code != ResponseCode::Refused, "case {name}: AA");
        match case.answers {
            Want::Records(want) => assert_eq!(sorted(&a.answers), want.to_vec(), "case {name}: answers"),
            Want::Count(n) => assert_eq!(a.answers.len(), n, "case {name}: answer count"),
        }
        if let Some(want) = case.additionals {
            assert_eq!(sorted(&a.additionals), want.to_vec(), "case {name}: additionals");
        }
        check_glue(name, &a);
        let soa: Vec<String> = a.authority.iter().map(show).collect();
        if case.soa {
            let domain = if case.qname.ends_with("consul.") { "consul." } else { "shoal." };
            let want = format!("{domain} SOA ns.{domain} hostmaster.{domain} 7 3600 600 86400 0");
            assert_eq!(soa, vec![want], "case {name}: SOA in authority");
        } else {
            assert!(soa.is_empty(), "case {name}: no authority, got {soa:?}");
        }
        assert_eq!(a.truncated, case.tc, "case {name}: TC");
        if let Some(limit) = case.limit {
            let entries: Vec<Entry> = a.answers.iter().map(|r| Entry { record: r.clone(), glue: Vec::new() }).collect();
            let mut all = entries;
            all.extend(a.additionals.iter().map(|r| Entry { record: r.clone(), glue: Vec::new() }));
            assert!(encoded_len(question_of(&q).as_ref(), &all) <= limit, "case {name}: fits {limit} bytes");
        }
    }
}

#[test]
fn only_passing_drops_warning() {
    let cfg = DnsConfig { only_passing: true, ..DnsConfig::default() };
    let q = Query::query(Name::from_ascii("web.service.shoal.").unwrap(), RecordType::A);
    let a = answer(&fixture(), &cfg, &q, None, 1);
    assert_eq!(sorted(&a.answers), vec!["web.service.shoal. A 10.0.0.1"]);
    // The warning instance alone: nothing passes, so the name does not exist.
    let q = Query::query(Name::from_ascii("v2.web.service.shoal.").unwrap(), RecordType::A);
    assert_eq!(answer(&fixture(), &cfg, &q, None, 1).code, ResponseCode::NXDomain);
}

#[test]
fn ttls_from_config() {
    let cfg =
        DnsConfig { service_ttl: Duration::from_secs(30), node_ttl: Duration::from_secs(5), ..DnsConfig::default() };
    let q = Query::query(Name::from_ascii("web.service.shoal.").unwrap(), RecordType::SRV);
    let a = answer(&fixture(), &cfg, &q, None, 1);
    assert!(a.answers.iter().chain(&a.additionals).all(|r| r.ttl == 30), "service TTL on SRV and glue");
    let q = Query::query(Name::from_ascii("h1.node.shoal.").unwrap(), RecordType::A);
    assert_eq!(answer(&fixture(), &cfg, &q, None, 1).answers[0].ttl, 5, "node TTL");
    let q = Query::query(Name::from_ascii("nope.service.shoal.").unwrap(), RecordType::A);
    assert_eq!(answer(&fixture(), &cfg, &q, None, 1).authority[0].ttl, 0, "SOA TTL = MINIMUM");
}

#[test]
fn shuffled_by_seed() {
    let q = Query::query(Name::from_ascii("big.service.shoal.").unwrap(), RecordType::A);
    let order =
        |seed| answer(&fixture(), &DnsConfig::default(), &q, None, seed).answers.iter().map(show).collect::<Vec<_>>();
    assert_eq!(order(3), order(3), "same seed, same order");
    assert_ne!(order(3), order(4), "another seed, another order");
    // The three answers a classic client gets differ between queries: load spreads.
    let firsts: std::collections::HashSet<_> = (0..20)
        .map(|seed| answer(&fixture(), &DnsConfig::default(), &q, CLASSIC, seed).answers[0].clone())
        .map(|r| show(&r))
        .collect();
    assert!(firsts.len() > 5, "first answer varies: {firsts:?}");
}

#[test]
fn class_other_than_in_is_not_implemented() {
    let mut q = Query::query(Name::from_ascii("web.service.shoal.").unwrap(), RecordType::A);
    q.set_query_class(DNSClass::CH);
    assert_eq!(answer(&fixture(), &DnsConfig::default(), &q, None, 1).code, ResponseCode::NotImp);
}
