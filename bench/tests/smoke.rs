//! The load generator runs end to end against a real single-node Shoal (a smoke test, not a
//! benchmark: the figures are not checked, only that every workload completes without errors).

use std::process::Command;

use shoal_testkit::{Cluster, ClusterOptions};

/// Runs `shoal-bench` with these arguments (in groups, for reading) and returns its stdout; fails
/// the test with both outputs unless it succeeds.
async fn shoal_bench(args: &[&[&str]]) -> String {
    let args: Vec<String> = args.iter().flat_map(|g| g.iter().map(|a| a.to_string())).collect();
    let out = tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_shoal-bench")).args(&args).output())
        .await
        .unwrap()
        .expect("run shoal-bench");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "shoal-bench failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn shoal_bench_runs_every_workload_against_shoal() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let target = format!("shoal:1=http://{}", c.nodes[0].http_addr());
    let stdout = shoal_bench(&[
        &["kv", "--target", &target, "--workloads", "put1,put64,get64"],
        &["--duration", "1s", "--warmup", "200ms", "--clients", "8", "--keys", "50"],
    ])
    .await;
    // Workloads are named after the client count: put64 with --clients 8 prints as put8.
    for w in ["put1", "put8", "get8"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with("| shoal | 1 | ") && l.contains(&format!("| {w} |")))
            .unwrap_or_else(|| panic!("no {w} row:\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[5], "0", "{w}: no errors: {row}");
        assert!(cells[4].parse::<u64>().unwrap() > 0, "{w}: some operations: {row}");
    }
}

/// `catalog-scale` at a small size: every phase completes, every watcher is answered in every
/// round, and the table has its rows (the figures themselves are not checked).
#[tokio::test(flavor = "multi_thread")]
async fn catalog_scale_runs_every_phase_against_shoal() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let api = format!("http://{}", c.nodes[0].http_addr());
    let pid = c.nodes[0].pid().expect("node running").to_string();
    let stdout = shoal_bench(&[
        &["catalog-scale", "--api", &api, "--pid", &pid],
        &["--services", "20", "--instances", "3", "--nodes", "5", "--concurrency", "8"],
        &["--watchers", "20", "--rounds", "2", "--park", "200ms"],
        &["--flip-seconds", "1", "--flip-rate", "100", "--flip-clients", "4"],
    ])
    .await;
    for row in [
        "| load | registrations (ok / errors) | 60 / 0 |",
        "| fan-out | answered | 40/40 |",
        "| memory | manager VmRSS before / halfway / after |",
        "| raft | flips per entry |",
    ] {
        assert!(stdout.contains(row), "no {row:?} row:\n{stdout}");
    }
    let flips = stdout.lines().find(|l| l.starts_with("| flips | flips (ok / errors) |")).expect("flips row");
    assert!(flips.ends_with(" / 0 |"), "no flip errors: {flips}");
}

/// Whether `tool` is an executable file on `PATH`.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// `dns` at a tiny size against a one-node cluster, with Knot beside it: both servers give the
/// same answers to the whole query file, every dnsperf run loses nothing, the in-process copy of
/// the snapshot answers as the node does, and every change is seen in DNS. Skipped, with a message,
/// only where dnsperf or knotd is missing; with `CI=true` a missing tool fails the test instead.
#[tokio::test(flavor = "multi_thread")]
async fn dns_compares_shoal_and_knot_and_times_changes() {
    let missing: Vec<&str> = ["dnsperf", "knotd"].into_iter().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        let why = format!("{missing:?} not installed (scripts/install-test-deps.sh installs dnsperf and knot)");
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{why}: CI must run this test");
        eprintln!("SKIPPED dns_compares_shoal_and_knot_and_times_changes: {why}");
        return;
    }
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let node = &c.nodes[0];
    let api = format!("http://{}", node.http_addr());
    let dns = format!("{}:8600", node.ip);
    let pid = node.pid().expect("node running").to_string();
    // Knot on .2 of the block the cluster took (it has one node, on .1).
    let [_, a, b, _] = node.ip.octets();
    let block = format!("{a}.{b}");
    let stdout = shoal_bench(&[
        &["dns", "--api", &api, "--dns", &dns, "--pid", &pid, "--ips", &block],
        &["--sizes", "2,4", "--instances", "3", "--nodes", "5", "--concurrency", "4"],
        &["--duration", "1s", "--warmup", "0s", "--rate", "500", "--answer-time", "200ms"],
        &["--changes", "4"],
    ])
    .await;
    for want in [
        "6 instances: all 6 queries of the file answered the same by both",
        "12 instances: all 12 queries of the file answered the same by both",
        "| 4 changes, 12 instances in the catalog |",
        "goal: p99 < 50 ms (from the send):",
    ] {
        assert!(stdout.contains(want), "no {want:?}:\n{stdout}");
    }
    for (instances, server, load) in
        [(6, "shoal", "max"), (6, "knot", "max"), (12, "shoal", "max"), (12, "knot", "500/s"), (12, "shoal", "500/s")]
    {
        let prefix = format!("| {instances} | {server} | {load} | ");
        let row = stdout.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix:?}:\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells[4].parse::<f64>().unwrap() > 0.0, "some queries/s: {row}");
        assert!(cells[5].ends_with(" / 0"), "no query lost: {row}");
    }
    assert!(stdout.lines().any(|l| l.starts_with("| 12 | ") && l.contains(" / ")), "the answer() cost row:\n{stdout}");
}
