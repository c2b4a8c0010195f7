//! The bench's own DNS client: one blocking UDP socket, one query at a time, hickory-proto for the
//! wire format. It checks that the servers are up, that they give the same answers to every line
//! of the query file, and it is the poller of the change-to-DNS measurement. The load itself is
//! dnsperf's.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::zone::{Kind, Question};

/// The EDNS buffer the client advertises, as dnsperf's `-e` does: big enough for every answer here.
pub const EDNS_PAYLOAD: u16 = 4096;

/// A connected UDP socket towards one server.
pub struct Client {
    sock: std::net::UdpSocket,
    server: SocketAddr,
    next_id: u16,
    buf: Vec<u8>,
}

/// A response, and its size on the wire.
pub struct Response {
    pub msg: Message,
    pub bytes: usize,
}

impl Client {
    /// A socket on an ephemeral port connected to `server`; every read waits at most `timeout`.
    pub fn new(server: SocketAddr, timeout: Duration) -> Result<Client> {
        let sock = std::net::UdpSocket::bind(SocketAddr::new(unspecified(server), 0))?;
        sock.connect(server)?;
        sock.set_read_timeout(Some(timeout))?;
        Ok(Client { sock, server, next_id: std::process::id() as u16, buf: vec![0; 65_535] })
    }

    /// Asks `name` `rtype` (no recursion, EDNS with [`EDNS_PAYLOAD`]) and waits for the response
    /// with the same ID; `Err` on a timeout or an unreadable response.
    pub fn query(&mut self, name: &Name, rtype: RecordType) -> Result<Response> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = false;
        m.add_query(Query::query(name.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(edns);
        self.sock.send(&m.to_vec()?)?;
        loop {
            let n = self
                .sock
                .recv(&mut self.buf)
                .with_context(|| format!("no answer from {} to {name} {rtype}", self.server))?;
            let msg =
                Message::from_vec(&self.buf[..n]).with_context(|| format!("{} sent a bad message", self.server))?;
            // A late answer to an earlier query that timed out: skip it.
            if msg.metadata.id == id {
                return Ok(Response { msg, bytes: n });
            }
        }
    }

    /// Asks the question of one line of the query file.
    pub fn ask(&mut self, q: &Question) -> Result<Response> {
        let name = Name::from_str(&q.name).with_context(|| format!("{:?}", q.name))?;
        let rtype = RecordType::from_str(q.rtype).map_err(|e| anyhow::anyhow!("{}: {e}", q.rtype))?;
        self.query(&name, rtype)
    }
}

fn unspecified(server: SocketAddr) -> std::net::IpAddr {
    if server.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() }
}

/// A response reduced to what must be equal between the two servers: the code, the AA and TC bits,
/// and each section as a sorted list of records (Shoal shuffles, Knot does not). The SOA is
/// compared without its serial (Shoal's is the catalog index, Knot's the zone's).
#[derive(Debug, PartialEq, Eq)]
pub struct Normal {
    pub code: ResponseCode,
    pub authoritative: bool,
    pub truncated: bool,
    pub answers: Vec<String>,
    pub authority: Vec<String>,
    pub additionals: Vec<String>,
}

impl Normal {
    pub fn of(m: &Message) -> Normal {
        let section = |rs: &[Record]| {
            let mut v: Vec<String> = rs.iter().map(record).collect();
            v.sort();
            v
        };
        Normal {
            code: m.metadata.response_code,
            authoritative: m.metadata.authoritative,
            truncated: m.metadata.truncation,
            answers: section(&m.answers),
            authority: section(&m.authorities),
            additionals: section(&m.additionals),
        }
    }

    /// Whether this is the answer `kind` must get with `instances` instances per service.
    pub fn fits(&self, kind: Kind, instances: usize) -> bool {
        let count = |v: &[String], t: &str| v.iter().filter(|r| r.split(' ').nth(2) == Some(t)).count();
        let ok = self.authoritative && !self.truncated;
        ok && match kind {
            Kind::A => self.code == ResponseCode::NoError && count(&self.answers, "A") == instances,
            Kind::Srv => {
                self.code == ResponseCode::NoError
                    && count(&self.answers, "SRV") == instances
                    && count(&self.additionals, "A") == instances
            }
            Kind::NxDomain => {
                self.code == ResponseCode::NXDomain && self.answers.is_empty() && count(&self.authority, "SOA") == 1
            }
        }
    }
}

/// `name ttl type rdata`, the SOA without its serial.
fn record(r: &Record) -> String {
    let data = match &r.data {
        RData::SOA(soa) => {
            format!("{} {} {} {} {} {}", soa.mname, soa.rname, soa.refresh, soa.retry, soa.expire, soa.minimum)
        }
        other => other.to_string(),
    };
    format!("{} {} {} {data}", r.name, r.ttl, r.record_type())
}

/// What [`compare`] found: the response sizes, for the report.
pub struct Compared {
    pub questions: usize,
    pub shoal_bytes: usize,
    pub knot_bytes: usize,
}

/// Asks every question of both servers and fails at the first answers that differ or that are not
/// what the layout says they must be.
pub fn compare(shoal: SocketAddr, knot: SocketAddr, questions: &[Question], instances: usize) -> Result<Compared> {
    let timeout = Duration::from_secs(2);
    let (mut s, mut k) = (Client::new(shoal, timeout)?, Client::new(knot, timeout)?);
    let mut out = Compared { questions: questions.len(), shoal_bytes: 0, knot_bytes: 0 };
    for q in questions {
        let (rs, rk) = (s.ask(q)?, k.ask(q)?);
        let (ns, nk) = (Normal::of(&rs.msg), Normal::of(&rk.msg));
        if ns != nk {
            bail!("{} {}: Shoal and Knot differ\nshoal: {ns:#?}\nknot: {nk:#?}", q.name, q.rtype);
        }
        if !ns.fits(q.kind, instances) {
            bail!("{} {}: not the answer the catalog must give ({instances} instances)\n{ns:#?}", q.name, q.rtype);
        }
        out.shoal_bytes += rs.bytes;
        out.knot_bytes += rk.bytes;
    }
    Ok(out)
}

/// Polls `q` every `every` until `ok` holds for the answer, for at most `timeout`.
pub fn wait_for(
    server: SocketAddr,
    q: &Question,
    timeout: Duration,
    every: Duration,
    ok: impl Fn(&Normal) -> bool,
) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let mut c = Client::new(server, Duration::from_millis(200))?;
    let mut last = String::from("no answer");
    while std::time::Instant::now() < deadline {
        match c.ask(q) {
            Ok(r) => {
                let n = Normal::of(&r.msg);
                if ok(&n) {
                    return Ok(());
                }
                last = format!("{n:?}");
            }
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(every);
    }
    bail!("{server} did not answer {} {} as expected within {timeout:?}; last: {last}", q.name, q.rtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, OpCode};
    use hickory_proto::rr::rdata::{A, SOA, SRV};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn normal_form_ignores_order_and_the_soa_serial() {
        let a = |ip: [u8; 4]| {
            Record::from_rdata(name("svc.service.shoal."), 0, RData::A(A::from(std::net::Ipv4Addr::from(ip))))
        };
        let soa = |serial| {
            let s = SOA::new(name("ns.shoal."), name("hostmaster.shoal."), serial, 3600, 600, 86400, 0);
            Record::from_rdata(name("shoal."), 0, RData::SOA(s))
        };
        let msg = |answers: Vec<Record>, serial| {
            let mut m = Message::new(1, MessageType::Response, OpCode::Query);
            m.metadata.authoritative = true;
            m.answers = answers;
            m.authorities = vec![soa(serial)];
            m
        };
        let one = Normal::of(&msg(vec![a([10, 0, 0, 1]), a([10, 0, 0, 2])], 7));
        let two = Normal::of(&msg(vec![a([10, 0, 0, 2]), a([10, 0, 0, 1])], 1));
        assert_eq!(one, two);
        assert_eq!(one.answers[0], "svc.service.shoal. 0 A 10.0.0.1");
        assert_eq!(one.authority[0], "shoal. 0 SOA ns.shoal. hostmaster.shoal. 3600 600 86400 0");
        assert!(one.fits(Kind::A, 2));
        assert!(!one.fits(Kind::A, 3), "a missing instance");
        assert!(!one.fits(Kind::NxDomain, 2));

        let srv = Record::from_rdata(
            name("_svc._tcp.service.shoal."),
            0,
            RData::SRV(SRV::new(1, 1, 20000, name("sim-000.node.dc1.shoal."))),
        );
        let mut m = msg(vec![srv], 1);
        assert!(!Normal::of(&m).fits(Kind::Srv, 1), "no glue");
        m.additionals = vec![Record::from_rdata(name("sim-000.node.dc1.shoal."), 0, RData::A(A::new(10, 0, 0, 1)))];
        assert!(Normal::of(&m).fits(Kind::Srv, 1));
    }
}
