//! DNS through a leader election: 3 managers, a service of 3 instances registered through the
//! catalog API, and a client asking a follower's DNS server for it every 10 ms (UDP, 500 ms per
//! query, no retry) while the leader is killed with SIGKILL, until a new leader is elected and
//! for 2 s more. Every answer must be the 3 addresses with NOERROR; not one may fail. A manager's
//! DNS answers from its own replica (its feed reads its own state, no Raft round-trip), so an
//! election is not seen in DNS.
//!
//! No node talks to the Docker engine: they run with `--runtime none` and a `DOCKER_HOST` that
//! points nowhere (the engine-version probe at start then fails at once).

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use shoal_testkit::{Cluster, ClusterOptions, http_client_builder, wait_for};

const SERVICE: &str = "eweb";
const ADDRESSES: [&str; 3] = ["10.77.0.1", "10.77.0.2", "10.77.0.3"];
/// How long one query may take before it counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the client keeps asking once the new leader is elected.
const AFTER: Duration = Duration::from_secs(2);

/// One query of the client: when it was sent (since the client started), and its answer's
/// latency, or why it failed.
type Outcome = (Duration, Result<Duration, String>);

/// Asks `name` A of `server` every 10 ms until `stop`, each with its own ID and at most
/// [`QUERY_TIMEOUT`]; a reply that is not NOERROR with exactly `want` fails the query.
fn ask_every_10ms(server: SocketAddr, name: &str, want: &BTreeSet<String>, stop: &AtomicBool) -> Vec<Outcome> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("a client socket");
    let mut buf = vec![0u8; 4096];
    let started = Instant::now();
    let mut out = Vec::new();
    for id in 1u16.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = started + Duration::from_millis(10 * u64::from(id - 1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let mut q = Message::new(id, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(Name::from_ascii(name).expect("a name"), RecordType::A));
        let asked = Instant::now();
        sock.send_to(&q.to_vec().expect("encodes"), server).expect("send");
        let result = loop {
            let left = QUERY_TIMEOUT.saturating_sub(asked.elapsed());
            if left.is_zero() {
                break Err("no reply within 500 ms".to_string());
            }
            sock.set_read_timeout(Some(left)).expect("a timeout");
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => break Err(format!("receive: {e}")),
            };
            let Ok(m) = Message::from_vec(&buf[..n]) else { break Err("a reply that does not parse".into()) };
            if m.metadata.id != id {
                continue; // a late reply to an earlier query
            }
            let got: BTreeSet<String> = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.to_string()),
                    _ => None,
                })
                .collect();
            break if m.metadata.response_code == ResponseCode::NoError && got == *want {
                Ok(asked.elapsed())
            } else {
                Err(format!("{} {got:?}", m.metadata.response_code))
            };
        };
        out.push((asked.duration_since(started), result));
    }
    out
}

/// One A query of `name` at `server`: the addresses, if a NOERROR reply came within 500 ms.
fn addresses(server: SocketAddr, name: &str) -> Option<BTreeSet<String>> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(QUERY_TIMEOUT)).ok()?;
    let mut q = Message::new(7, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    sock.send_to(&q.to_vec().ok()?, server).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    (m.metadata.response_code == ResponseCode::NoError).then(|| {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.to_string()),
                _ => None,
            })
            .collect()
    })
}

#[test]
fn killing_the_leader_fails_no_dns_query_on_a_follower() {
    // SAFETY: set before this test process starts any other thread (the runtime is built below;
    // nextest runs each test in a process of its own, and this file has one test). The nodes
    // inherit it: their engine-version probe fails at once and they never reach the engine.
    unsafe { std::env::set_var("DOCKER_HOST", "unix:///nonexistent/shoal-test-no-engine.sock") };
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime").block_on(election());
}

async fn election() {
    let mut c = Cluster::start(3, ClusterOptions::default()).await;
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let http = c.nodes[follower].http_addr();
    let dns = SocketAddr::new(c.nodes[follower].ip.into(), 8600);

    // Three instances on a node outside the cluster, through the follower (it forwards writes).
    let client = http_client_builder().build().expect("an HTTP client");
    for (k, address) in ADDRESSES.iter().enumerate() {
        let body = serde_json::json!({
            "Node": "ext-web",
            "Address": "10.77.0.100",
            "Service": {"ID": format!("{SERVICE}-{k}"), "Service": SERVICE, "Address": address, "Port": 8080},
        });
        let r = client.put(format!("http://{http}/v1/catalog/register")).json(&body).send().await.expect("register");
        assert!(r.status().is_success(), "register {address}: {}", r.status());
    }
    let want: BTreeSet<String> = ADDRESSES.iter().map(|a| a.to_string()).collect();
    let name = format!("{SERVICE}.service.shoal.");
    let ready = Instant::now();
    wait_for("the follower's DNS to answer the 3 addresses", Duration::from_secs(20), || {
        let (name, want) = (name.clone(), want.clone());
        async move {
            tokio::task::spawn_blocking(move || addresses(dns, &name))
                .await
                .ok()
                .flatten()
                .filter(|got| *got == want)
                .map(|_| ())
        }
    })
    .await;
    println!("node{}'s DNS ({dns}) answers {name} after {:?}", follower + 1, ready.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let asking = {
        let (stop, want, name) = (stop.clone(), want.clone(), name.clone());
        std::thread::spawn(move || ask_every_10ms(dns, &name, &want, &stop))
    };
    // Some answers before the kill, as a baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill(leader);
    let killed = Instant::now();
    let new_leader = c.wait_leader(Duration::from_secs(20)).await;
    let election = killed.elapsed();
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = asking.join().expect("the client");

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.1.is_err()).collect();
    let mut latencies: Vec<Duration> = outcomes.iter().filter_map(|o| o.1.as_ref().ok().copied()).collect();
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    let itself = if new_leader == follower { ", now the leader" } else { "" };
    println!(
        "kill -9 of node{} (the leader): node{} elected after {election:?}; node{}'s DNS (a follower at the kill{itself}) \
         asked {} times every 10 ms (500 ms before the kill, {AFTER:?} after the election): {} failed, latency p99 {p99:?}, max {:?}",
        leader + 1,
        new_leader + 1,
        follower + 1,
        outcomes.len(),
        failed.len(),
        latencies.last().expect("answers")
    );
    assert!(failed.is_empty(), "{} queries failed: {failed:?}", failed.len());
    assert_ne!(new_leader, leader, "a new leader");
    // Every 10 ms over the whole run: the client was not starved (the machine is shared).
    let span = election + AFTER + Duration::from_millis(500);
    assert!(
        outcomes.len() as u128 >= span.as_millis() / 20,
        "{} queries in {span:?}: the client did not ask every 10 ms",
        outcomes.len()
    );
    drop(c);
}
