//! The server on real sockets (127.0.0.1, an ephemeral port): queried with hickory's client over
//! UDP and TCP, with hickory's resolver, and with raw bad packets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use hickory_server::net::DnsHandle;
use hickory_server::net::client::Client;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::proto::op::{DnsRequestOptions, Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, Record, RecordType, rdata::A};
use hickory_server::resolver::Resolver;
use hickory_server::resolver::config::{NameServerConfig, ResolverConfig};
use shoal_dns::{DnsConfig, DnsServer, SnapshotHandle};
use shoal_model::catalog::snapshot::{Snapshot, SnapshotInstance, SnapshotNode};
use shoal_model::catalog::{Health, Weights};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

fn inst(id: &str, node: &str, address: &str, own: bool, port: u16) -> SnapshotInstance {
    SnapshotInstance {
        id: id.into(),
        node: node.into(),
        address: address.into(),
        own_address: own,
        port,
        tags: vec!["v1".into()],
        meta: Default::default(),
        health: Health::Passing,
        weights: Weights::default(),
    }
}

fn snapshot() -> Snapshot {
    let mut services = BTreeMap::new();
    services.insert(
        "web".to_string(),
        vec![inst("web-1", "h1", "10.0.0.1", false, 8080), inst("web-2", "h1", "10.0.0.12", true, 8081)],
    );
    services.insert(
        "big".to_string(),
        (1..=40).map(|n| inst(&format!("big-{n}"), "h1", &format!("10.1.0.{n}"), true, 9000 + n)).collect(),
    );
    let mut nodes = BTreeMap::new();
    nodes.insert("h1".to_string(), SnapshotNode { address: "10.0.0.1".into(), meta: BTreeMap::new() });
    Snapshot {
        index: 3,
        services: services.into_iter().map(|(k, v)| (k, std::sync::Arc::new(v))).collect(),
        nodes,
        ..Snapshot::default()
    }
}

/// A running server; dropping the sender stops it.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), shoal_dns::DnsError>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        self.task.await.expect("no panic").expect("clean stop");
    }
}

async fn start(handle: SnapshotHandle, recursor: Option<SocketAddr>) -> Running {
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), handle, DnsConfig::default(), recursor).await.unwrap();
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Running { addr, stop: Some(tx), task }
}

async fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(Duration::from_secs(5)))
        .build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    client
}

async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) =
        TcpClientStream::new(addr, None, Some(Duration::from_secs(5)), TokioRuntimeProvider::default());
    let (client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    client
}

/// One question; `edns`: the buffer size advertised, `None` for a classic query.
async fn ask(client: &Client<TokioRuntimeProvider>, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut opts = DnsRequestOptions::default();
    opts.use_edns = edns.is_some();
    opts.edns_payload_len = edns.unwrap_or(512);
    let query = Query::query(Name::from_ascii(name).unwrap(), qtype);
    let response = client.lookup(query, opts).next().await.expect("a response").expect("no error");
    response.into_message()
}

fn a_records(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn answers_over_udp_and_tcp() {
    let server = start(SnapshotHandle::new(snapshot()), None).await;
    let udp = udp_client(server.addr).await;
    let tcp = tcp_client(server.addr).await;

    for (proto, client) in [("udp", &udp), ("tcp", &tcp)] {
        let m = ask(client, "web.service.shoal.", RecordType::A, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{proto}: A");
        assert!(m.metadata.authoritative, "{proto}: AA");
        assert_eq!(a_records(&m), vec!["10.0.0.1", "10.0.0.12"], "{proto}: A");
        assert!(m.edns.is_none(), "{proto}: no EDNS in, none out");

        let m = ask(client, "_web._tcp.service.shoal.", RecordType::SRV, Some(1232)).await;
        assert_eq!(m.answers.len(), 2, "{proto}: SRV");
        assert_eq!(m.edns.as_ref().map(Edns::max_payload), Some(1232), "{proto}: EDNS echoed");
        let mut glue: Vec<String> = m.additionals.iter().map(|r| format!("{} {}", r.name, r.data)).collect();
        glue.sort();
        assert_eq!(glue, vec!["0a00000c.addr.dc1.shoal. 10.0.0.12", "h1.node.dc1.shoal. 10.0.0.1"], "{proto}: glue");

        let m = ask(client, "nope.service.shoal.", RecordType::A, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{proto}: NXDOMAIN");
        assert!(m.answers.is_empty());
        assert!(
            matches!(m.authorities.as_slice(), [r] if r.record_type() == RecordType::SOA),
            "{proto}: SOA in authority: {:?}",
            m.authorities
        );

        let m = ask(client, "example.com.", RecordType::A, None).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{proto}: outside the domain, no recursor");
    }
    server.stop().await;
}

#[tokio::test]
async fn truncated_over_udp_whole_over_tcp() {
    let server = start(SnapshotHandle::new(snapshot()), None).await;
    let udp = udp_client(server.addr).await;
    let tcp = tcp_client(server.addr).await;

    let m = ask(&udp, "big.service.shoal.", RecordType::SRV, None).await;
    assert!(m.metadata.truncation, "UDP without EDNS: TC");
    assert_eq!(m.answers.len(), 3, "UDP without EDNS: Consul's 3 answers");
    assert_eq!(m.additionals.len(), 3, "glue of the kept answers only");

    let m = ask(&udp, "big.service.shoal.", RecordType::A, Some(4096)).await;
    assert!(!m.metadata.truncation, "UDP with a 4096-byte EDNS buffer: whole");
    assert_eq!(m.answers.len(), 40);

    let m = ask(&tcp, "big.service.shoal.", RecordType::SRV, None).await;
    assert!(!m.metadata.truncation, "TCP: whole");
    assert_eq!(m.answers.len(), 40);
    assert_eq!(m.additionals.len(), 40);

    // A stub resolver without EDNS sees TC and asks again over TCP.
    let mut resolver = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![name_server(server.addr)]),
        TokioRuntimeProvider::default(),
    );
    resolver.options_mut().edns0 = false;
    resolver.options_mut().cache_size = 0;
    let resolver = resolver.build().unwrap();
    let lookup = resolver.lookup("big.service.shoal.", RecordType::A).await.unwrap();
    assert_eq!(lookup.answers().len(), 40, "the resolver retried over TCP");
    server.stop().await;
}

fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    ns
}

#[tokio::test]
async fn answers_the_snapshot_swapped_in() {
    let handle = SnapshotHandle::default();
    let server = start(handle.clone(), None).await;
    let udp = udp_client(server.addr).await;
    let m = ask(&udp, "web.service.shoal.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "empty catalog");
    handle.set(snapshot());
    let m = ask(&udp, "web.service.shoal.", RecordType::A, None).await;
    assert_eq!(a_records(&m), vec!["10.0.0.1", "10.0.0.12"], "after set");
    server.stop().await;
}

/// Sends `packet` and returns the reply, if one comes within a short while.
async fn raw(addr: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(packet, addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

fn query_message(id: u16, name: &str) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m
}

#[tokio::test]
async fn survives_malformed_packets() {
    let server = start(SnapshotHandle::new(snapshot()), None).await;
    let good = query_message(7, "web.service.shoal.").to_vec().unwrap();

    // A compression pointer at offset 12 pointing at itself: the name never ends.
    let mut looped = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    looped.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
    // Two questions, which one request may not carry.
    let mut two = query_message(8, "web.service.shoal.");
    two.add_query(Query::query(Name::from_ascii("h1.node.shoal.").unwrap(), RecordType::A));
    // An opcode the server does not implement.
    let mut notify = query_message(9, "web.service.shoal.");
    notify.metadata.op_code = OpCode::Notify;
    // EDNS version 1.
    let mut edns1 = query_message(10, "web.service.shoal.");
    let mut e = Edns::new();
    e.set_version(1).set_max_payload(1232);
    edns1.set_edns(e);

    let cases: Vec<(&str, Vec<u8>, Option<ResponseCode>)> = vec![
        ("garbage shorter than a header", b"\x01\x02garbage".to_vec(), None),
        ("garbage", (0..200u8).map(|b| b.wrapping_mul(37)).collect(), Some(ResponseCode::FormErr)),
        ("truncated packet", good[..good.len() - 5].to_vec(), Some(ResponseCode::FormErr)),
        ("compression loop", looped, Some(ResponseCode::FormErr)),
        ("two questions", two.to_vec().unwrap(), Some(ResponseCode::FormErr)),
        ("NOTIFY", notify.to_vec().unwrap(), Some(ResponseCode::NotImp)),
        ("EDNS version 1", edns1.to_vec().unwrap(), Some(ResponseCode::BADVERS)),
    ];
    for (case, packet, want) in cases {
        let reply = raw(server.addr, &packet).await;
        match want {
            None => assert!(reply.is_none(), "case {case}: no reply"),
            Some(code) => {
                let reply = reply.unwrap_or_else(|| panic!("case {case}: a reply"));
                let m = Message::from_vec(&reply).unwrap_or_else(|e| panic!("case {case}: reply parses: {e}"));
                // Compared as numbers: BADVERS and BADSIG are both 16 and decode as BADSIG.
                assert_eq!(u16::from(m.metadata.response_code), u16::from(code), "case {case}");
            }
        }
        // The server still answers.
        let reply = raw(server.addr, &good).await.unwrap_or_else(|| panic!("case {case}: good query answered after"));
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert_eq!(a_records(&m), vec!["10.0.0.1", "10.0.0.12"], "case {case}: answer after");
    }
    server.stop().await;
}

/// A recursor on loopback that answers every A question with 192.0.2.1.
async fn fake_recursor() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else { return };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.clone());
            if let Some(question) = q.queries.first() {
                r.add_answer(Record::from_rdata(question.name().clone(), 60, RData::A(A::new(192, 0, 2, 1))));
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn forwards_outside_the_domain_to_the_recursor() {
    let (recursor, fake) = fake_recursor().await;
    let server = start(SnapshotHandle::new(snapshot()), Some(recursor)).await;
    let udp = udp_client(server.addr).await;

    let m = ask(&udp, "example.test.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "forwarded");
    assert_eq!(a_records(&m), vec!["192.0.2.1"]);
    assert!(m.metadata.recursion_available, "RA");

    // Names under the domain are still answered here, with RA set.
    let m = ask(&udp, "web.service.shoal.", RecordType::A, None).await;
    assert_eq!(a_records(&m), vec!["10.0.0.1", "10.0.0.12"]);
    assert!(m.metadata.recursion_available && m.metadata.authoritative);

    server.stop().await;
    fake.abort();
}

#[tokio::test]
async fn servfail_when_the_recursor_is_silent() {
    // Bound but never read: every forwarded query times out.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = start(SnapshotHandle::new(snapshot()), Some(silent.local_addr().unwrap())).await;
    let udp = udp_client(server.addr).await;
    let started = std::time::Instant::now();
    let m = ask(&udp, "example.test.", RecordType::A, None).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(5), "within the recursor timeout: {:?}", started.elapsed());
    server.stop().await;
}
