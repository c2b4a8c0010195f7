//! The check `haproxy -c` cannot make: does a config bind a TCP address that another process
//! holds? HAProxy finds out only while reloading, after it has paused every listener of the old
//! worker: connections are refused for ~2 s before it gives up (measured, `README.md`).
//!
//! An address is fine if a test `bind()` (no SO_REUSEPORT) succeeds, or if the listening socket
//! that holds it belongs to this HAProxy's master or workers (HAProxy rebinds its own with
//! SO_REUSEPORT). Anything this parser does not understand (unix sockets, `fd@`, names,
//! environment variables) is left to HAProxy: the check only ever refuses what it is sure of.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::ReloadError;
use super::child::children_of;

/// Refuses (before any reload) a config whose `bind` lines name a TCP address held by a process
/// outside `master`'s tree.
pub(crate) fn check_new_binds(config: &Path, master: u32, what: &str) -> Result<(), ReloadError> {
    let Ok(text) = std::fs::read_to_string(config) else { return Ok(()) };
    let mut ours: Option<HashSet<u64>> = None;
    for (line_no, addr) in bind_addresses(&text) {
        let in_use = match std::net::TcpListener::bind(addr) {
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::AddrInUse,
        };
        if !in_use {
            continue;
        }
        let ours = ours.get_or_insert_with(|| socket_inodes(master));
        if listeners_on(addr).iter().any(|inode| ours.contains(inode)) {
            continue;
        }
        return Err(ReloadError::Refused {
            what: what.to_string(),
            detail: format!(
                "{}:{line_no}: `bind {addr}` is held by another process, not by this haproxy; HAProxy would pause all its \
                 listeners for ~2 s and then keep the old config. Free the address or bind another one",
                config.display()
            ),
        });
    }
    Ok(())
}

/// The TCP addresses of the `bind` lines HAProxy would open (line number, address).
pub(crate) fn bind_addresses(config: &str) -> Vec<(usize, SocketAddr)> {
    let mut out = Vec::new();
    for (i, line) in config.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() != Some("bind") {
            continue;
        }
        let Some(spec) = words.next() else { continue };
        for part in spec.trim_matches('"').split(',') {
            out.extend(parse_one(part).into_iter().map(|a| (i + 1, a)));
        }
    }
    out
}

fn parse_one(part: &str) -> Vec<SocketAddr> {
    let mut p = part;
    for prefix in ["ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"] {
        if let Some(rest) = p.strip_prefix(prefix) {
            p = rest;
        }
    }
    if p.contains('@') || p.contains('$') || p.starts_with('/') {
        return vec![];
    }
    let Some((host, ports)) = p.rsplit_once(':') else { return vec![] };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = match host {
        "" | "*" => Ipv4Addr::UNSPECIFIED.into(),
        "::" => Ipv6Addr::UNSPECIFIED.into(),
        h => match h.parse() {
            Ok(ip) => ip,
            Err(_) => return vec![],
        },
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
        None => (ports.parse::<u16>(), ports.parse::<u16>()),
    };
    match (lo, hi) {
        (Ok(lo), Ok(hi)) if lo <= hi && hi - lo < 256 && lo > 0 => {
            (lo..=hi).map(|port| SocketAddr::new(ip, port)).collect()
        }
        _ => vec![],
    }
}

/// Inodes of the sockets open in `master` and its children.
fn socket_inodes(master: u32) -> HashSet<u64> {
    let mut pids = vec![master];
    pids.extend(children_of(master).into_iter().map(|c| c.0));
    let mut out = HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(inode) =
                    target.to_str().and_then(|t| t.strip_prefix("socket:[")).and_then(|t| t.strip_suffix(']'))
                && let Ok(inode) = inode.parse()
            {
                out.insert(inode);
            }
        }
    }
    out
}

/// Inodes of the listening TCP sockets that conflict with `addr` (same port; same address or
/// either side a wildcard).
fn listeners_on(addr: SocketAddr) -> Vec<u64> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(f) = std::fs::File::open(file) else { continue };
        // The kernel lists the listening sockets first, then the established hash (with every
        // TIME_WAIT: tens of thousands under connection-close load, seconds to read). Stop there.
        let lines = std::io::BufRead::lines(std::io::BufReader::new(f)).skip(1).map_while(Result::ok);
        for (local, inode) in lines.map_while(|l| parse_proc_net_line(&l, v6)) {
            let same_port = local.port() == addr.port();
            let overlap = local.ip() == addr.ip()
                || local.ip().is_unspecified()
                || addr.ip().is_unspecified()
                || mapped(local.ip()) == Some(addr.ip());
            if same_port && overlap {
                out.push(inode);
            }
        }
    }
    out
}

fn mapped(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

/// A LISTEN line of `/proc/net/tcp{,6}`: local address and inode.
fn parse_proc_net_line(line: &str, v6: bool) -> Option<(SocketAddr, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.get(3) != Some(&"0A") {
        return None;
    }
    let (ip_hex, port_hex) = f.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    // The address is in 32-bit words, each in host (little-endian here) byte order.
    let words: Vec<u32> = (0..ip_hex.len() / 8)
        .map(|i| u32::from_str_radix(&ip_hex[i * 8..i * 8 + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip: IpAddr = if v6 {
        let mut b = [0u8; 16];
        for (i, w) in words.iter().enumerate().take(4) {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Ipv6Addr::from(b).into()
    } else {
        Ipv4Addr::from(words.first()?.to_ne_bytes()).into()
    };
    Some((SocketAddr::new(ip, port), f.get(9)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_lines_parse() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let cases: [(&str, &str, Vec<SocketAddr>); 9] = [
            ("plain", "    bind 127.0.55.1:8080", vec![a("127.0.55.1:8080")]),
            ("options", "bind 127.0.55.1:443 ssl crt /x.pem alpn h2", vec![a("127.0.55.1:443")]),
            ("wildcard", "bind :80\nbind *:81", vec![a("0.0.0.0:80"), a("0.0.0.0:81")]),
            ("list", "bind 127.0.55.1:1,127.0.55.2:2", vec![a("127.0.55.1:1"), a("127.0.55.2:2")]),
            ("ipv6", "bind [::1]:90\nbind ipv6@:::91", vec![a("[::1]:90"), a("[::]:91")]),
            ("range", "bind 127.0.55.1:10-12", vec![a("127.0.55.1:10"), a("127.0.55.1:11"), a("127.0.55.1:12")]),
            ("not tcp", "bind /run/h.sock\nbind unix@x\nbind fd@${FD}\nbind abns@y", vec![]),
            ("names and vars", "bind localhost:80\nbind ${ADDR}:80", vec![]),
            ("not a bind", "# bind 1.2.3.4:5\n  server s 1.2.3.4:5\nbind-process 1", vec![]),
        ];
        for (name, text, want) in cases {
            let got: Vec<SocketAddr> = bind_addresses(text).into_iter().map(|(_, a)| a).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn proc_net_lines_parse() {
        let cases = [
            (
                "v4 listen",
                "   0: 0137007F:46B4 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 38513 1",
                false,
                Some(("127.0.55.1:18100", 38513)),
            ),
            (
                "v4 established",
                "   1: 0137007F:46B4 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 0 1",
                false,
                None,
            ),
            (
                "v6 loopback",
                "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1",
                true,
                Some(("[::1]:80", 777)),
            ),
        ];
        for (name, line, v6, want) in cases {
            let want = want.map(|(a, i)| (a.parse::<SocketAddr>().unwrap(), i));
            assert_eq!(parse_proc_net_line(line, v6), want, "{name}");
        }
    }

    #[test]
    fn a_port_held_by_someone_else_is_refused_and_a_free_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let held = std::net::TcpListener::bind("127.0.55.9:0").unwrap();
        let addr = held.local_addr().unwrap();
        let free = std::net::TcpListener::bind("127.0.55.9:0").unwrap().local_addr().unwrap(); // dropped: free
        let cfg = dir.path().join("h.cfg");
        std::fs::write(&cfg, format!("frontend a\n    bind {free}\n")).unwrap();
        check_new_binds(&cfg, std::process::id(), "t").unwrap();
        std::fs::write(&cfg, format!("frontend a\n    bind {addr}\n")).unwrap();
        // Held by this very process: "ours" (the master's tree) accepts it ...
        check_new_binds(&cfg, std::process::id(), "t").unwrap();
        // ... a tree that does not hold it is refused, with the line and what to do.
        let e = check_new_binds(&cfg, 0x3fff_fff0, "t").unwrap_err().to_string();
        assert!(
            e.contains(&format!("h.cfg:2: `bind {addr}` is held by another process")) && e.contains("Free the address"),
            "{e}"
        );
    }
}
