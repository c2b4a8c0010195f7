//! What both servers serve and what they are asked, from the catalog-scale [`Layout`]: the static
//! zone Knot loads (the records Shoal derives from the same catalog), and the query file dnsperf
//! reads. Both are pure functions of the layout; the bench checks over the wire that the two
//! servers really give the same answers before it measures anything (`client::compare`).
//!
//! Per service `svc-NNNN` of the layout, under `shoal.`:
//!
//! ```text
//!   svc-NNNN.service            A    the address of each instance (its node's: 10.x.y.z)
//!   _svc-NNNN._tcp.service      SRV  1 1 <port> sim-MMM.node.dc1.shoal.   (one per instance)
//!   sim-MMM.node.dc1            A    the glue of those targets (every node the layout uses)
//! ```
//!
//! and the apex's SOA with Shoal's names and timers (`ns.`/`hostmaster.`, 3600/600/86400/0) and
//! an NS. TTLs are 0, Shoal's default. Shoal names the SRV target after the node because each
//! instance's address is its node's (`own_address` false in the snapshot).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::catalog_scale::Layout;

/// The domain both servers answer.
pub const DOMAIN: &str = "shoal.";
/// The datacenter in Shoal's SRV targets (`<node>.node.<dc>.<domain>`).
pub const DATACENTER: &str = "dc1";

/// What a line of the query file asks, and so what its answer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `svc-NNNN.service.shoal A`: NOERROR with one A per instance.
    A,
    /// `_svc-NNNN._tcp.service.shoal SRV`: NOERROR with one SRV per instance and the glue.
    Srv,
    /// `nosuch-NNNN.service.shoal A`: NXDOMAIN with the SOA.
    NxDomain,
}

/// One query of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub rtype: &'static str,
    pub kind: Kind,
}

/// The name the A records of instance `k`'s service live at.
pub fn service_name(layout: &Layout, k: usize) -> String {
    format!("{}.service.{DOMAIN}", layout.service(k))
}

/// The queries, in file order: for every service in turn its A, its SRV and an unknown name, so
/// the mix is a third of each and every service is asked.
pub fn questions(layout: &Layout) -> Vec<Question> {
    let mut q = Vec::with_capacity(3 * layout.services);
    for s in 0..layout.services {
        let k = s * layout.instances;
        let svc = layout.service(k);
        q.push(Question { name: service_name(layout, k), rtype: "A", kind: Kind::A });
        q.push(Question { name: format!("_{svc}._tcp.service.{DOMAIN}"), rtype: "SRV", kind: Kind::Srv });
        q.push(Question { name: format!("nosuch-{s:04}.service.{DOMAIN}"), rtype: "A", kind: Kind::NxDomain });
    }
    q
}

/// dnsperf's input: `NAME TYPE` per line.
pub fn query_file(questions: &[Question]) -> String {
    questions.iter().fold(String::new(), |mut out, q| {
        let _ = writeln!(out, "{} {}", q.name, q.rtype);
        out
    })
}

/// The zone file of `layout`, for a server listening on `ns_addr` (the NS's address record).
pub fn zone_file(layout: &Layout, ns_addr: Ipv4Addr) -> String {
    let mut z = String::new();
    let _ = writeln!(z, "$ORIGIN {DOMAIN}\n$TTL 0");
    let _ = writeln!(
        z,
        "@ IN SOA ns.{DOMAIN} hostmaster.{DOMAIN} 1 {} {} {} {}",
        shoal_dns::answer::SOA_REFRESH,
        shoal_dns::answer::SOA_RETRY,
        shoal_dns::answer::SOA_EXPIRE,
        shoal_dns::answer::SOA_MINIMUM
    );
    let _ = writeln!(z, "@ IN NS ns.{DOMAIN}\nns IN A {ns_addr}");
    let mut nodes = std::collections::BTreeMap::new();
    for s in 0..layout.services {
        let ks = (s * layout.instances)..((s + 1) * layout.instances);
        let svc = layout.service(ks.start);
        for k in ks.clone() {
            let _ = writeln!(z, "{svc}.service IN A {}", layout.node_addr(k));
        }
        for k in ks {
            let port = crate::catalog_scale::BASE_PORT + k;
            let node = layout.node_name(k);
            let _ = writeln!(z, "_{svc}._tcp.service IN SRV 1 1 {port} {node}.node.{DATACENTER}");
            nodes.insert(node, layout.node_addr(k));
        }
    }
    for (node, addr) in nodes {
        let _ = writeln!(z, "{node}.node.{DATACENTER} IN A {addr}");
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_and_queries_follow_the_layout() {
        let l = Layout { services: 2, instances: 3, nodes: 4 };
        let z = zone_file(&l, Ipv4Addr::new(127, 0, 77, 2));
        let lines: Vec<&str> = z.lines().collect();
        assert_eq!(lines[2], "@ IN SOA ns.shoal. hostmaster.shoal. 1 3600 600 86400 0");
        assert_eq!(lines[4], "ns IN A 127.0.77.2");
        for want in [
            "svc-0000.service IN A 10.0.0.1",
            "svc-0001.service IN A 10.0.0.4",
            "svc-0001.service IN A 10.0.0.1",
            "_svc-0000._tcp.service IN SRV 1 1 20002 sim-002.node.dc1",
            "_svc-0001._tcp.service IN SRV 1 1 20004 sim-000.node.dc1",
            "sim-003.node.dc1 IN A 10.0.0.4",
        ] {
            assert!(lines.contains(&want), "zone has {want:?}:\n{z}");
        }
        assert_eq!(lines.iter().filter(|l| l.contains(" A 10.")).count(), 6 + 4, "6 service A, 4 glue");
        assert_eq!(lines.iter().filter(|l| l.contains(" SRV ")).count(), 6);

        let q = questions(&l);
        assert_eq!(q.len(), 6);
        assert_eq!(
            query_file(&q).lines().collect::<Vec<_>>(),
            [
                "svc-0000.service.shoal. A",
                "_svc-0000._tcp.service.shoal. SRV",
                "nosuch-0000.service.shoal. A",
                "svc-0001.service.shoal. A",
                "_svc-0001._tcp.service.shoal. SRV",
                "nosuch-0001.service.shoal. A",
            ]
        );
        assert_eq!(q[5].kind, Kind::NxDomain);
    }
}
