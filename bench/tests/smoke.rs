//! The load generator runs end to end against a real single-node Shoal (a smoke test, not a
//! benchmark: the figures are not checked, only that every workload completes without errors).

use std::process::Command;

use shoal_testkit::{Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread")]
async fn shoal_bench_runs_every_workload_against_shoal() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let target = format!("shoal:1=http://{}", c.nodes[0].http_addr());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
            .args(["kv", "--target", &target, "--workloads", "put1,put64,get64"])
            .args(["--duration", "1s", "--warmup", "200ms", "--clients", "8", "--keys", "50"])
            .output()
    })
    .await
    .unwrap()
    .expect("run shoal-bench");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "shoal-bench failed:\n{stdout}\n{stderr}");
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
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_shoal-bench"))
            .args(["catalog-scale", "--api", &api, "--pid", &pid])
            .args(["--services", "20", "--instances", "3", "--nodes", "5", "--concurrency", "8"])
            .args(["--watchers", "20", "--rounds", "2", "--park", "200ms"])
            .args(["--flip-seconds", "1", "--flip-rate", "100", "--flip-clients", "4"])
            .output()
    })
    .await
    .unwrap()
    .expect("run shoal-bench");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "shoal-bench failed:\n{stdout}\n{stderr}");
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
