//! The answer to one question, from one catalog snapshot: a pure function, so every Consul rule
//! (health filtering, NXDOMAIN vs NODATA, SRV targets and glue, trimming to the client's buffer)
//! is table-tested without a socket. Records are hickory-proto's, and sizes are measured with
//! hickory-server's own response encoder; there is no DNS wire code here.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use shoal_model::catalog::Health;
use shoal_model::catalog::snapshot::{Snapshot, SnapshotInstance};

use crate::names::{self, Lookup};

/// SOA timers (Consul's `dns_config.soa` defaults), in seconds.
pub const SOA_REFRESH: i32 = 3600;
/// See [`SOA_REFRESH`].
pub const SOA_RETRY: i32 = 600;
/// See [`SOA_REFRESH`].
pub const SOA_EXPIRE: i32 = 86400;
/// SOA MINIMUM, and so the negative-caching TTL: 0, so resolvers don't cache NXDOMAIN/NODATA.
pub const SOA_MINIMUM: u32 = 0;

/// The classic UDP budget (RFC 1035 §4.2.1): a client without EDNS gets at most this many bytes.
pub const CLASSIC_UDP_SIZE: usize = 512;
/// Consul's `udp_answer_limit`: answers sent to a client with the classic 512-byte budget.
pub const UDP_ANSWER_LIMIT: usize = 3;
/// The most a DNS message can hold (TCP's 2-byte length prefix).
pub const MAX_MESSAGE_SIZE: usize = 65535;

/// How names are answered; `Default` is Consul's defaults with Shoal's domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The domains answered, primary first (`shoal.`, then the alias `consul.`). Answers use the
    /// domain the question used.
    pub domains: Vec<Name>,
    /// This cluster's datacenter: names may carry it (`web.service.dc1.shoal`); any other is
    /// NXDOMAIN.
    pub datacenter: String,
    /// TTL of service answers (A/AAAA/SRV and their glue). Consul's default: 0.
    pub service_ttl: Duration,
    /// TTL of node and `.addr` answers. Consul's default: 0.
    pub node_ttl: Duration,
    /// Answer only passing instances (Consul's `only_passing`); by default warning ones too.
    pub only_passing: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domains: vec![Name::from_ascii("shoal.").expect("valid"), Name::from_ascii("consul.").expect("valid")],
            datacenter: "dc1".to_string(),
            service_ttl: Duration::ZERO,
            node_ttl: Duration::ZERO,
            only_passing: false,
        }
    }
}

impl DnsConfig {
    /// The configured domain `name` is in (the longest if several), case-insensitively.
    pub fn zone_of(&self, name: &Name) -> Option<&Name> {
        self.domains.iter().filter(|d| d.zone_of(name)).max_by_key(|d| d.num_labels())
    }
}

/// What to send back: the header fields that depend on the data and the three sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// NOERROR, NXDOMAIN, REFUSED (outside the domains), NOTIMP (zone transfers, odd classes).
    pub code: ResponseCode,
    /// AA: set for every name under the domains.
    pub authoritative: bool,
    /// The answer section (owner: the question's name as asked).
    pub answers: Vec<Record>,
    /// The authority section: the domain's SOA on NXDOMAIN and NODATA.
    pub authority: Vec<Record>,
    /// The additional section: A/AAAA of the SRV targets that remain after trimming.
    pub additionals: Vec<Record>,
    /// TC: the whole answer did not fit the UDP budget, so some records were left out.
    pub truncated: bool,
}

impl Answer {
    fn code(code: ResponseCode, authoritative: bool) -> Answer {
        Answer {
            code,
            authoritative,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
            truncated: false,
        }
    }

    fn negative(code: ResponseCode, soa: Record) -> Answer {
        Answer { authority: vec![soa], ..Answer::code(code, true) }
    }
}

/// One answer record with the glue that must travel with it (an SRV target's address).
struct Entry {
    record: Record,
    glue: Vec<Record>,
}

/// Answers `query` from `snap`.
///
/// * `udp_limit`: the most bytes the message may take over UDP (without the OPT record, which the
///   server adds); `None` for TCP, which gets the whole answer. A limit of at most 512 is the
///   classic budget: at most [`UDP_ANSWER_LIMIT`] answers are sent then (Consul applies the same
///   cap to EDNS clients that advertise ≤ 512).
/// * `rng_seed`: instances are shuffled with it (callers pass a random one per query).
///
/// Trimming keeps the first answers that fit (at least one) and only the glue of those. TC is set
/// only when the whole answer does not fit the byte budget: an answer trimmed only by the count
/// cap is complete enough for a stub resolver and has no reason to be retried over TCP.
pub fn answer(snap: &Snapshot, cfg: &DnsConfig, query: &Query, udp_limit: Option<usize>, rng_seed: u64) -> Answer {
    let qname = query.name();
    let Some(domain) = cfg.zone_of(qname) else {
        return Answer::code(ResponseCode::Refused, false);
    };
    let domain = domain.to_lowercase();
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Answer::code(ResponseCode::NotImp, true);
    }
    let soa = soa_record(&domain, snap.index);
    let qtype = query.query_type();
    match qtype {
        RecordType::AXFR | RecordType::IXFR => return Answer::code(ResponseCode::NotImp, true),
        // Consul answers SOA for any name under the domain with the domain's SOA.
        RecordType::SOA => return Answer { answers: vec![soa], ..Answer::code(ResponseCode::NoError, true) },
        _ => {}
    }
    let labels: Vec<String> = qname
        .iter()
        .take(qname.num_labels() as usize - domain.num_labels() as usize)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    if labels.is_empty() {
        // The domain itself exists (it has the SOA) but holds nothing else.
        return Answer::negative(ResponseCode::NoError, soa);
    }
    let ctx = Ctx { snap, cfg, domain: &domain, qname, qtype };
    let entries = match names::parse(&labels, qtype, &cfg.datacenter) {
        None => None,
        Some(Lookup::Service { name, tag }) => ctx.service(&name, tag.as_deref(), rng_seed),
        Some(Lookup::Node(node)) => ctx.node(&node),
        Some(Lookup::Addr(hex)) => ctx.addr(&hex),
    };
    match entries {
        None => Answer::negative(ResponseCode::NXDomain, soa),
        Some(entries) if entries.is_empty() => Answer::negative(ResponseCode::NoError, soa),
        Some(entries) => trim(query, entries, udp_limit),
    }
}

/// What every lookup needs.
struct Ctx<'a> {
    snap: &'a Snapshot,
    cfg: &'a DnsConfig,
    domain: &'a Name,
    qname: &'a Name,
    qtype: RecordType,
}

impl Ctx<'_> {
    /// `None`: NXDOMAIN (unknown service, or no instance left after the health and tag filters).
    /// `Some(empty)`: NODATA.
    fn service(&self, name: &str, tag: Option<&str>, seed: u64) -> Option<Vec<Entry>> {
        let instances = self
            .snap
            .services
            .get(name)
            .or_else(|| self.snap.services.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v))?;
        let mut live: Vec<&SnapshotInstance> = instances
            .iter()
            .filter(|i| match i.health {
                Health::Passing => true,
                Health::Warning => !self.cfg.only_passing,
                Health::Critical | Health::Maintenance => false,
            })
            .filter(|i| tag.is_none_or(|t| i.tags().iter().any(|it| it.eq_ignore_ascii_case(t))))
            .collect();
        if live.is_empty() {
            return None;
        }
        live.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let ttl = secs(self.cfg.service_ttl);
        let entries = match self.qtype {
            RecordType::A | RecordType::AAAA | RecordType::ANY => {
                let mut seen = HashSet::new();
                live.iter()
                    // A hostname address (an external service) is skipped: Consul would answer a
                    // CNAME and resolve it, which needs the recursor.
                    .filter_map(|i| i.address.parse::<IpAddr>().ok())
                    .filter(|ip| seen.insert(*ip))
                    .filter_map(|ip| self.address_record(self.qname.clone(), ip, ttl))
                    .map(|record| Entry { record, glue: Vec::new() })
                    .collect()
            }
            RecordType::SRV => {
                let mut seen = HashSet::new();
                live.iter()
                    .filter(|i| seen.insert((i.node(), &i.address, i.port())))
                    .filter_map(|i| self.srv(i, ttl))
                    .collect()
            }
            _ => Vec::new(),
        };
        Some(entries)
    }

    /// One SRV and the glue that resolves its target.
    fn srv(&self, i: &SnapshotInstance, ttl: u32) -> Option<Entry> {
        let weight = match i.health {
            Health::Warning => i.weights().warning,
            _ => i.weights().passing,
        };
        let weight = weight.min(u16::MAX as u32) as u16;
        if i.address.is_empty() {
            return None;
        }
        let (target, glue) = match i.address.parse::<IpAddr>() {
            Ok(ip) => {
                // The node's own address: its node name, which the node lookup answers. Else the
                // synthetic `.addr` name, which the addr lookup answers.
                let by_node = (!i.own_address).then(|| self.under_dc(&format!("{}.node", i.node()))).flatten();
                let target = match by_node {
                    Some(t) => t,
                    None => self.under_dc(&format!("{}.addr", names::encode_addr(ip)))?,
                };
                (target.clone(), vec![glue_record(target, ip, ttl)])
            }
            // A hostname is its own target; it is not resolved here (no glue).
            Err(_) => {
                let mut host = Name::from_ascii(&i.address).ok()?;
                host.set_fqdn(true);
                (host, Vec::new())
            }
        };
        let record = Record::from_rdata(self.qname.clone(), ttl, RData::SRV(SRV::new(1, weight, i.port(), target)));
        Some(Entry { record, glue })
    }

    fn node(&self, node: &str) -> Option<Vec<Entry>> {
        let n = self
            .snap
            .nodes
            .get(node)
            .or_else(|| self.snap.nodes.iter().find(|(n, _)| n.eq_ignore_ascii_case(node)).map(|(_, v)| v))?;
        Some(self.ip_entries(n.address.parse().ok()))
    }

    fn addr(&self, hex: &str) -> Option<Vec<Entry>> {
        Some(self.ip_entries(Some(names::decode_addr(hex)?)))
    }

    /// The address record of a node or `.addr` name, if the question asks for its family.
    fn ip_entries(&self, ip: Option<IpAddr>) -> Vec<Entry> {
        let ttl = secs(self.cfg.node_ttl);
        ip.and_then(|ip| self.address_record(self.qname.clone(), ip, ttl))
            .map(|record| Entry { record, glue: Vec::new() })
            .into_iter()
            .collect()
    }

    /// A or AAAA for `ip` if the question's type asks for that family (A, AAAA or ANY). An SRV
    /// question asks for neither: a node or `.addr` name asked SRV is NODATA (the fuzz target
    /// found it answered with an A record, by the glue's rule).
    fn address_record(&self, owner: Name, ip: IpAddr, ttl: u32) -> Option<Record> {
        let any = self.qtype == RecordType::ANY;
        let data = match ip {
            IpAddr::V4(v4) if any || self.qtype == RecordType::A => RData::A(A(v4)),
            IpAddr::V6(v6) if any || self.qtype == RecordType::AAAA => RData::AAAA(AAAA(v6)),
            _ => return None,
        };
        Some(Record::from_rdata(owner, ttl, data))
    }

    /// `<prefix>.<dc>.<domain>`; `None` if `prefix` makes no valid name (odd node names).
    fn under_dc(&self, prefix: &str) -> Option<Name> {
        Name::from_ascii(format!("{prefix}.{}", self.cfg.datacenter)).ok()?.append_domain(self.domain).ok()
    }
}

/// The glue of an SRV target: its address, of either family.
fn glue_record(target: Name, ip: IpAddr, ttl: u32) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(target, ttl, data)
}

/// The domain's SOA (Consul's: `ns.`/`hostmaster.` the domain, TTL = MINIMUM). The serial is the
/// snapshot's index (low 32 bits), which moves exactly when the data does; Consul uses the clock.
fn soa_record(domain: &Name, index: u64) -> Record {
    let mname = Name::from_ascii("ns").expect("valid").append_domain(domain).expect("short");
    let rname = Name::from_ascii("hostmaster").expect("valid").append_domain(domain).expect("short");
    let soa = SOA::new(mname, rname, index as u32, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, SOA_MINIMUM);
    Record::from_rdata(domain.clone(), SOA_MINIMUM, RData::SOA(soa))
}

fn secs(d: Duration) -> u32 {
    d.as_secs().min(u32::MAX as u64) as u32
}

/// Keeps as many entries as the budget allows (at least one) with their glue.
fn trim(query: &Query, entries: Vec<Entry>, udp_limit: Option<usize>) -> Answer {
    let limit = udp_limit.unwrap_or(MAX_MESSAGE_SIZE).min(MAX_MESSAGE_SIZE);
    let cap = if udp_limit.is_some_and(|l| l <= CLASSIC_UDP_SIZE) { UDP_ANSWER_LIMIT } else { usize::MAX };
    // The exact size (hickory's encoder) only when the upper bound does not already fit: a
    // whole encoding just to measure was 17 % of the server's time at 10,000 instances.
    let question = std::cell::OnceCell::new();
    let question = || question.get_or_init(|| question_of(query)).as_ref();
    let full_fits =
        upper_bound(query, &entries).is_some_and(|b| b <= limit) || encoded_len(question(), &entries) <= limit;
    let keep = if full_fits {
        entries.len().min(cap)
    } else {
        // Sizes grow with the count: binary search the largest prefix that fits.
        let (mut lo, mut hi) = (1, entries.len().min(cap));
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if encoded_len(question(), &entries[..mid]) <= limit {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    };
    let (answers, additionals) = sections(&entries[..keep]);
    Answer { answers, additionals, truncated: !full_fits, ..Answer::code(ResponseCode::NoError, true) }
}

/// The answer and additional sections of `entries`, glue deduplicated (two SRVs may share a node).
fn sections(entries: &[Entry]) -> (Vec<Record>, Vec<Record>) {
    let mut additionals: Vec<Record> = Vec::new();
    for glue in entries.iter().flat_map(|e| &e.glue) {
        if !additionals.iter().any(|g| g.name == glue.name && g.data == glue.data) {
            additionals.push(glue.clone());
        }
    }
    (entries.iter().map(|e| e.record.clone()).collect(), additionals)
}

/// A size the response holding `entries` never exceeds (without the OPT record): the header, the
/// question and every record spelled out without compression, shared glue counted each time.
/// `None` for a record type it has no bound for.
fn upper_bound(query: &Query, entries: &[Entry]) -> Option<usize> {
    // A name's wire form is at most its text form (`Name::len`) plus 2: the first length byte
    // and the root, for a name without its final dot.
    let name = |n: &Name| n.len() + 2;
    let record = |r: &Record| {
        let data = match &r.data {
            RData::A(_) => 4,
            RData::AAAA(_) => 16,
            RData::SRV(srv) => 6 + name(&srv.target),
            _ => return None,
        };
        // type, class, TTL, RDLENGTH
        Some(name(&r.name) + 10 + data)
    };
    let mut total = 12 + name(query.name()) + 4;
    for e in entries {
        total += record(&e.record)?;
        for g in &e.glue {
            total += record(g)?;
        }
    }
    Some(total)
}

/// The size of the response message holding `entries`, encoded by hickory-server's own response
/// encoder (`MessageResponse::destructive_emit`, what the server's UDP encoding runs) with the
/// question as the client sent it (`question`: [`question_of`]). Size by construction, not by
/// estimate: hickory sends the client's question bytes back and offers them to its name
/// compressor as one candidate, type and class attached, so no record ever points into the
/// question and the candidate table (64 entries) holds one useful name fewer. Two budgets that
/// modelled this by hand fell short of the real reply (by a name's length, found by the fuzz
/// harness's seeds; then by a few bytes once the table filled, found by the fuzzer), and
/// hickory's encoder then dropped the OPT record and set TC itself.
fn encoded_len(question: Option<&Queries>, entries: &[Entry]) -> usize {
    // An encoding error (a name too long, …) counts as "does not fit".
    let Some(queries) = question else { return usize::MAX };
    let (answers, additionals) = sections(entries);
    let meta = Metadata::new(0, MessageType::Response, OpCode::Query);
    let response = MessageResponseBuilder::new(queries, None).build(
        meta,
        answers.iter(),
        std::iter::empty(),
        std::iter::empty(),
        additionals.iter(),
    );
    let mut bytes = Vec::with_capacity(512);
    let emitted = response.destructive_emit(&mut BinEncoder::new(&mut bytes));
    emitted.map(|_| bytes.len()).unwrap_or(usize::MAX)
}

/// The question section the server echoes: `query`'s plain encoding, which is the client's bytes
/// (the handler answers only a question in plain form), read back into hickory's `Queries`.
fn question_of(query: &Query) -> Option<Queries> {
    let bytes = query.to_bytes().ok()?;
    Queries::read(&mut BinDecoder::new(&bytes), 1).ok()
}

#[cfg(test)]
mod tests;
