//! Linearizability of Shoal's KV while the leader is killed and restarted.
//!
//! Six clients spread over a 3-manager cluster do a random mix of get/put/cas on a few keys; the
//! leader is SIGKILLed, a new one is awaited and the old one restarted, twice; then the recorded
//! history is checked with porcupine against a register-per-key model. A write that failed or timed
//! out counts as maybe applied; a failed read is dropped. Needs `cargo build -p shoal` first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_lincheck::{Clock, History, Input, KvOp, NEVER, OpMeta, Output};
use shoal_testkit::{Cluster, ClusterOptions, KvClient, KvError, wait_for};

const NODES: usize = 3;
const CLIENTS: u32 = 6;
const KEYS: [&str; 4] = ["lin/a", "lin/b", "lin/c", "lin/d"];
/// Every client stops after this many operations (a CAS counts once, its read apart)...
const MAX_OPS_PER_CLIENT: usize = 4_000;
/// ...or this long after the traffic started, whichever comes first.
const MAX_TRAFFIC: Duration = Duration::from_secs(40);
/// Traffic before each kill and after the last restart: at least this long...
const PHASE: Duration = Duration::from_secs(5);
/// ...and at least this many successful operations.
const PHASE_OPS: usize = 300;
/// A request that gets no answer for this long counts as failed (the server gives up on a write
/// after 4.5 s with a 503).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the checker may search.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the clients and the fault injector share.
struct Shared {
    clock: Clock,
    stop: AtomicBool,
    /// Nodes the clients should not pick (killed, or not back yet). Requests in flight at the kill
    /// still fail; but a client hammering a dead node would add thousands of refused writes, each
    /// maybe-applied with no return time (the testkit's `KvError::Transport` cannot tell "never
    /// sent" apart), and that makes the checker's search explode.
    down: [AtomicBool; NODES],
    /// Operations that got an answer, over all clients.
    ok: AtomicUsize,
}

/// What one client saw.
#[derive(Default)]
struct Counts {
    ok: usize,
    failed_reads: usize,
    maybe_applied: usize,
    cas_true: usize,
    cas_false: usize,
    /// Maybe-applied writes by error.
    errors: BTreeMap<String, usize>,
}

/// One sequential client: it starts on its home node and moves to the next one up while that is down.
struct Client {
    id: u32,
    home: usize,
    nodes: Vec<KvClient>,
    rng: StdRng,
    history: History,
    counts: Counts,
    written: usize,
}

impl Client {
    fn node(&self, shared: &Shared) -> usize {
        (0..NODES)
            .map(|d| (self.home + d) % NODES)
            .find(|&n| !shared.down[n].load(Ordering::SeqCst))
            .unwrap_or(self.home)
    }

    fn meta(&self, node: usize, error: Option<&KvError>) -> OpMeta {
        OpMeta { client: self.id, node, error: error.map(|e| format!("{e:?}")) }
    }

    fn next_value(&mut self) -> String {
        self.written += 1;
        format!("c{}-{}", self.id, self.written)
    }

    async fn run(mut self, shared: Arc<Shared>) -> (History, Counts) {
        let mut ops = 0;
        while ops < MAX_OPS_PER_CLIENT
            && !shared.stop.load(Ordering::SeqCst)
            && shared.clock.now() < MAX_TRAFFIC.as_nanos() as i64
        {
            ops += 1;
            let node = self.node(&shared);
            let key = KEYS[self.rng.random_range(0..KEYS.len())];
            match self.rng.random_range(0..10) {
                0..4 => {
                    self.get(&shared, node, key).await;
                }
                4..7 => self.put(&shared, node, key).await,
                _ => self.cas(&shared, node, key).await,
            }
        }
        (self.history, self.counts)
    }

    /// A linearizable read; returns the value and its ModifyIndex (0 if missing), `None` if it failed.
    async fn get(&mut self, shared: &Shared, node: usize, key: &str) -> Option<(Option<String>, u64)> {
        let call = shared.clock.now();
        let res = self.nodes[node].read(key, "").await;
        let ret = shared.clock.now();
        match res {
            Ok(read) => {
                let pair = read.pairs.first();
                let value = pair.map(|p| String::from_utf8(p.bytes()).expect("utf-8 value"));
                let index = pair.map_or(0, |p| p.modify_index);
                let op = KvOp { key: key.into(), input: Input::Get, output: Output::Read(value.clone()) };
                self.history.record(self.meta(node, None), op, call, Some(ret));
                self.counts.ok += 1;
                shared.ok.fetch_add(1, Ordering::SeqCst);
                Some((value, index))
            }
            Err(_) => {
                self.counts.failed_reads += 1;
                None
            }
        }
    }

    async fn put(&mut self, shared: &Shared, node: usize, key: &str) {
        let value = self.next_value();
        let call = shared.clock.now();
        let res = self.nodes[node].put(key, value.as_bytes(), "").await;
        self.record_write(shared, node, key, Input::Put(value), call, res);
    }

    /// Read, then `?cas=<the ModifyIndex read>` (0 if missing) with a new value.
    async fn cas(&mut self, shared: &Shared, node: usize, key: &str) {
        let Some((expected, index)) = self.get(shared, node, key).await else { return };
        let new = self.next_value();
        let call = shared.clock.now();
        let res = self.nodes[node].put(key, new.as_bytes(), &format!("cas={index}")).await;
        if let Ok(applied) = res {
            if applied {
                self.counts.cas_true += 1;
            } else {
                self.counts.cas_false += 1;
            }
        }
        self.record_write(shared, node, key, Input::Cas { expected, new }, call, res);
    }

    fn record_write(
        &mut self,
        shared: &Shared,
        node: usize,
        key: &str,
        input: Input,
        call: i64,
        res: Result<bool, KvError>,
    ) {
        match res {
            Ok(applied) => {
                let ret = shared.clock.now();
                let op = KvOp { key: key.into(), input, output: Output::Written(applied) };
                self.history.record(self.meta(node, None), op, call, Some(ret));
                self.counts.ok += 1;
                shared.ok.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                // 503 or no answer: it may still have been applied, now or later.
                let op = KvOp { key: key.into(), input, output: Output::Unknown };
                self.history.record(self.meta(node, Some(&e)), op, call, None);
                self.counts.maybe_applied += 1;
                let kind = match e {
                    KvError::Status(code, msg) => format!("{code} {}", msg.split(':').next().unwrap_or_default()),
                    KvError::Transport(_) => "no answer".to_string(),
                };
                *self.counts.errors.entry(kind).or_default() += 1;
            }
        }
    }
}

/// Lets the traffic run for a phase: waits until [`PHASE`] has passed since `since` and
/// [`PHASE_OPS`] more operations than `from` have succeeded; returns the count of successes.
async fn run_phase(shared: &Shared, what: &str, since: i64, from: usize) -> usize {
    let until = since + PHASE.as_nanos() as i64;
    wait_for(what, PHASE + Duration::from_secs(30), || async {
        let ok = shared.ok.load(Ordering::SeqCst);
        (shared.clock.now() >= until && ok >= from + PHASE_OPS).then_some(ok)
    })
    .await
}

fn secs(t: i64) -> String {
    format!("{:.2}s", t as f64 / 1e9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_is_linearizable_while_the_leader_is_killed_and_restarted() {
    let mut cluster = Cluster::start(NODES, ClusterOptions::default()).await;
    cluster.wait_leader(Duration::from_secs(15)).await;
    let seed: u64 = rand::random();
    println!("traffic seed {seed}");

    let shared = Arc::new(Shared {
        clock: Clock::start(),
        stop: AtomicBool::new(false),
        down: Default::default(),
        ok: AtomicUsize::new(0),
    });
    let nodes: Vec<KvClient> =
        cluster.nodes.iter().map(|n| KvClient::with_timeout(&n.http_addr(), REQUEST_TIMEOUT)).collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let client = Client {
                id,
                home: id as usize % NODES,
                nodes: nodes.clone(),
                rng: StdRng::seed_from_u64(seed ^ u64::from(id)),
                history: History::default(),
                counts: Counts::default(),
                written: 0,
            };
            tokio::spawn(client.run(shared.clone()))
        })
        .collect();

    // The faults: twice, kill -9 the leader, wait for a new one, restart the old one.
    let mut events = Vec::new();
    let (mut ok, mut since) = (0, 0);
    for round in 1..=2 {
        ok = run_phase(&shared, &format!("traffic before kill {round}"), since, ok).await;
        let leader = cluster.wait_leader(Duration::from_secs(15)).await;
        shared.down[leader].store(true, Ordering::SeqCst);
        let killed_at = shared.clock.now();
        cluster.kill(leader);
        let new_leader = cluster.wait_leader(Duration::from_secs(15)).await;
        let elected_at = shared.clock.now();
        cluster.restart(leader);
        let addr = cluster.nodes[leader].http_addr();
        wait_for(&format!("node{} to know the leader after its restart", leader + 1), Duration::from_secs(30), || {
            let addr = addr.clone();
            async move {
                let known: String = shoal_testkit::get_json(&addr, "/v1/status/leader").await?;
                (!known.is_empty()).then_some(())
            }
        })
        .await;
        shared.down[leader].store(false, Ordering::SeqCst);
        let back_at = shared.clock.now();
        since = back_at;
        let event = format!(
            "kill {round}: node{} (leader) killed at {}, node{} elected at {}, node{} back at {}",
            leader + 1,
            secs(killed_at),
            new_leader + 1,
            secs(elected_at),
            leader + 1,
            secs(back_at)
        );
        println!("{event}");
        events.push(event);
    }
    run_phase(&shared, "traffic after the last restart", since, ok).await;
    shared.stop.store(true, Ordering::SeqCst);

    let mut history = History::default();
    let mut counts = Counts::default();
    for c in clients {
        let (h, n) = c.await.expect("client task");
        history.extend(h);
        counts.ok += n.ok;
        counts.failed_reads += n.failed_reads;
        counts.maybe_applied += n.maybe_applied;
        counts.cas_true += n.cas_true;
        counts.cas_false += n.cas_false;
        for (e, k) in n.errors {
            *counts.errors.entry(e).or_default() += k;
        }
    }
    let traffic = shared.clock.now();
    println!(
        "{} operations in {}: {} ok ({} cas applied, {} cas refused), {} maybe-applied writes, {} failed reads dropped",
        history.ops.len(),
        secs(traffic),
        counts.ok,
        counts.cas_true,
        counts.cas_false,
        counts.maybe_applied,
        counts.failed_reads
    );
    assert!(counts.ok >= 3 * PHASE_OPS, "too few successful operations to mean anything");
    assert!(counts.cas_true > 0 && counts.cas_false > 0, "both CAS outcomes must occur");

    let patched = history.patched();
    let observed = patched.iter().filter(|o| o.op.output == Output::Unknown && o.return_time != NEVER).count();
    println!("maybe-applied writes: {:?}; {observed} of them were seen applied later", counts.errors);

    let started = std::time::Instant::now();
    let dump = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let verdict = shoal_lincheck::check(&patched, CHECK_TIMEOUT, Some(dump));
    println!("checked in {:.2?}", started.elapsed());
    if let Err(report) = verdict {
        panic!("{report}\nfault events:\n{}", events.join("\n"));
    }

    // The same history with one stale read appended must fail: the checker is not vacuous on it.
    let stale = with_stale_read(&history, shared.clock.now());
    let err = shoal_lincheck::check(&stale.patched(), CHECK_TIMEOUT, None)
        .expect_err("the recorded history plus a stale read must not be linearizable");
    assert!(err.contains("NOT LINEARIZABLE"), "{err}");
    println!("the history with a stale read appended is rejected, as it must be");
}

/// `history` plus, after everything, `put(k, probe)` and then a `get(k)` that returns an older
/// acknowledged value of `k`: no value comes back once overwritten, so this cannot be linearized.
fn with_stale_read(history: &History, after: i64) -> History {
    let old = history
        .ops
        .iter()
        .find_map(|o| match (&o.op.input, &o.op.output) {
            (Input::Put(v) | Input::Cas { new: v, .. }, Output::Written(true)) => Some((o.op.key.clone(), v.clone())),
            _ => None,
        })
        .expect("an acknowledged write");
    let mut h = history.clone();
    let meta = OpMeta { client: CLIENTS, node: 0, error: None };
    let (key, value) = old;
    let probe = KvOp { key: key.clone(), input: Input::Put("probe".into()), output: Output::Written(true) };
    h.record(meta.clone(), probe, after + 1, Some(after + 2));
    let read = KvOp { key, input: Input::Get, output: Output::Read(Some(value)) };
    h.record(meta, read, after + 3, Some(after + 4));
    h
}
