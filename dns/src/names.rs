//! Reading a question name under one of the domains into what it asks for (Consul's
//! `parseQuery`/`parseLocality`): the kind label, the parts left of it and the datacenter right of
//! it. Pure; every string is already lower-cased.

use hickory_proto::rr::RecordType;

/// What a name under the domain asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// `[TAG.]NAME.service`, `_NAME._TAG.service` (and `_NAME._tcp` without `.service` for SRV).
    Service {
        /// The service's name.
        name: String,
        /// Only instances with this tag; `None`: any.
        tag: Option<String>,
    },
    /// `NODE.node`: the node's address (dots allowed in the node's name).
    Node(String),
    /// `HEX.addr`: the IP the hex digits spell (8: IPv4, 32: IPv6).
    Addr(String),
}

/// The kind keywords Consul knows; those Shoal does not answer (`query`, the mesh ones) are found
/// so that their parts are not read as a service or node, and then answer NXDOMAIN.
const KINDS: [&str; 7] = ["service", "connect", "virtual", "ingress", "node", "query", "addr"];

/// Reads `labels` (the question name without the domain, left to right, lower case).
///
/// `None` when the name is not one Shoal answers: no kind label, a locality that is not
/// `[DC]` or `[DC.dc]`, another datacenter than `datacenter`, an empty service or node name, an
/// unsupported kind. All of these are NXDOMAIN.
pub(crate) fn parse(labels: &[String], qtype: RecordType, datacenter: &str) -> Option<Lookup> {
    // Right to left, as Consul: the first kind keyword from the right splits parts from locality.
    let mut found = None;
    for (i, label) in labels.iter().enumerate().rev() {
        if KINDS.contains(&label.as_str()) {
            found = Some((label.as_str(), &labels[..i], &labels[i + 1..]));
            break;
        }
        // For SRV the `.service` label is optional in the RFC 2782 form (`_web._tcp.shoal`).
        if qtype == RecordType::SRV && label.starts_with('_') {
            found = Some(("service", &labels[..=i], &labels[i + 1..]));
            break;
        }
    }
    let (kind, parts, locality) = found?;
    let dc = match locality {
        [] => datacenter,
        [dc] => dc.as_str(),
        [dc, key] if key == "dc" => dc.as_str(),
        _ => return None,
    };
    if !dc.eq_ignore_ascii_case(datacenter) {
        return None;
    }
    match kind {
        "service" => service(parts),
        "node" if !parts.is_empty() => Some(Lookup::Node(parts.join("."))),
        "addr" if parts.len() == 1 => Some(Lookup::Addr(parts[0].clone())),
        _ => None,
    }
}

fn service(parts: &[String]) -> Option<Lookup> {
    match parts {
        [] => None,
        // RFC 2782: `_service._proto` or `_service._tag`; the protocols mean "any tag".
        [name, tag] if name.starts_with('_') && tag.starts_with('_') => {
            let name = &name[1..];
            let tag = &tag[1..];
            if name.is_empty() {
                return None;
            }
            let tag = (!matches!(tag, "tcp" | "udp" | "")).then(|| tag.to_string());
            Some(Lookup::Service { name: name.to_string(), tag })
        }
        // Consul's 0.3 format: every label left of the name is one tag, dots included.
        [tag @ .., name] => {
            let tag = (!tag.is_empty()).then(|| tag.join("."));
            Some(Lookup::Service { name: name.clone(), tag })
        }
    }
}

/// The IP a `.addr` label spells: 8 hex digits for IPv4, 32 for IPv6 (Consul's encoding).
pub(crate) fn decode_addr(hex: &str) -> Option<std::net::IpAddr> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        8 => u32::from_str_radix(hex, 16).ok().map(|v| std::net::Ipv4Addr::from(v).into()),
        32 => u128::from_str_radix(hex, 16).ok().map(|v| std::net::Ipv6Addr::from(v).into()),
        _ => None,
    }
}

/// The `.addr` label of an IP: lower-case hex, the full address.
pub(crate) fn encode_addr(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        std::net::IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(s: &str) -> Vec<String> {
        s.split('.').filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    fn svc(name: &str, tag: Option<&str>) -> Option<Lookup> {
        Some(Lookup::Service { name: name.into(), tag: tag.map(Into::into) })
    }

    #[test]
    fn parse_table() {
        use RecordType::{A, SRV};
        let cases: Vec<(&str, &str, RecordType, Option<Lookup>)> = vec![
            ("service", "web.service", A, svc("web", None)),
            ("service in dc", "web.service.dc1", A, svc("web", None)),
            ("service in dc.dc", "web.service.dc1.dc", A, svc("web", None)),
            ("other dc", "web.service.dc2", A, None),
            ("bad locality", "web.service.a.b.c", A, None),
            ("tag", "v1.web.service", A, svc("web", Some("v1"))),
            ("dotted tag", "v1.2.web.service", A, svc("web", Some("v1.2"))),
            ("rfc2782 tcp", "_web._tcp.service", SRV, svc("web", None)),
            ("rfc2782 udp", "_web._udp.service", SRV, svc("web", None)),
            ("rfc2782 tag", "_web._v1.service", SRV, svc("web", Some("v1"))),
            ("rfc2782 any qtype", "_web._tcp.service", A, svc("web", None)),
            ("rfc2782 without .service", "_web._tcp", SRV, svc("web", None)),
            ("rfc2782 without .service in dc", "_web._tcp.dc1", SRV, svc("web", None)),
            ("rfc2782 without .service, A", "_web._tcp", A, None),
            ("empty service", "service", A, None),
            ("node", "h1.node", A, Some(Lookup::Node("h1".into()))),
            ("dotted node", "h1.example.node.dc1", A, Some(Lookup::Node("h1.example".into()))),
            ("empty node", "node", A, None),
            ("addr", "0a000005.addr.dc1", A, Some(Lookup::Addr("0a000005".into()))),
            ("addr with two parts", "a.b.addr", A, None),
            ("no kind", "web", A, None),
            ("prepared query", "q.query", A, None),
            ("mesh", "web.connect", A, None),
        ];
        for (case, name, qtype, want) in cases {
            assert_eq!(parse(&labels(name), qtype, "dc1"), want, "case {case}: {name}");
        }
    }

    #[test]
    fn addr_round_trip() {
        for ip in ["10.0.0.5", "127.0.0.1", "::1", "2001:db8::5"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(decode_addr(&encode_addr(ip)), Some(ip), "{ip}");
        }
        assert_eq!(encode_addr("10.0.0.5".parse().unwrap()), "0a000005");
        for bad in ["0a00000", "+a000005", "0a00000g", "", "0a0000050a000005"] {
            assert_eq!(decode_addr(bad), None, "{bad:?}");
        }
    }
}
