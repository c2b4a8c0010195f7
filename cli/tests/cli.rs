//! The `shoal` command line against real nodes: messages, exit codes, output formats.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shoal_testkit::{Cluster, ClusterOptions, shoal_bin};

fn shoal(args: &[&str]) -> Output {
    Command::new(shoal_bin()).args(args).env_remove("SHOAL_HTTP_ADDR").output().expect("run shoal")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_and_node_commands() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let addr = c.nodes[0].http_addr();
    let a = |rest: &[&str]| {
        let mut v = vec!["--http-addr", addr.as_str()];
        v.extend_from_slice(rest);
        shoal(&v)
    };
    let o = a(&["kv", "put", "cfg/db/host", "10.0.0.5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "Success! Data written to: cfg/db/host\n");
    assert_eq!(stdout(&a(&["kv", "get", "cfg/db/host"])), "10.0.0.5\n");
    a(&["kv", "put", "cfg/port", "5432"]);
    assert_eq!(stdout(&a(&["kv", "ls", "cfg/"])), "cfg/db/\ncfg/port\n");
    assert_eq!(stdout(&a(&["kv", "get", "--recurse", "cfg/"])), "cfg/db/host:10.0.0.5\ncfg/port:5432\n");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&a(&["kv", "get", "cfg/port", "--format", "json"]))).unwrap();
    let index = json[0]["ModifyIndex"].as_u64().unwrap();

    let o = a(&["kv", "put", "--cas", &(index + 1).to_string(), "cfg/port", "1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("CAS failed"), "{}", stderr(&o));
    let o = a(&["kv", "put", "--cas", &index.to_string(), "cfg/port", "6543"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = a(&["kv", "get", "nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no key exists at: nope"), "{}", stderr(&o));
    assert!(a(&["kv", "delete", "--recurse", "cfg/"]).status.success());
    assert_eq!(stdout(&a(&["kv", "ls"])), "");

    let o = a(&["node", "ls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("MANAGER STATUS") && table.contains("ADDRESS"), "{table}");
    assert_eq!(table.matches("Leader").count(), 1, "{table}");
    let nodes: serde_json::Value = serde_json::from_str(&stdout(&a(&["node", "ls", "--format", "json"]))).unwrap();
    assert_eq!(nodes[0]["ManagerStatus"], "Leader");
    assert_eq!(nodes[0]["Status"], "Ready");
    assert_eq!(nodes[0]["Name"], "node1");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_api_is_a_clear_error() {
    let o = shoal(&["--http-addr", "127.0.0.1:1", "kv", "get", "x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot reach the Shoal API at 127.0.0.1:1"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn data_dir_rules_and_join_tokens() {
    let c = Cluster::start(1, ClusterOptions::default()).await;
    let addr = c.nodes[0].http_addr();
    let used = c.nodes[0].data_dir.to_str().unwrap().to_string();

    let o = shoal(&[
        "agent",
        "--init",
        "--data-dir",
        &used,
        "--bind",
        "127.0.0.1",
        "--http-port",
        "1",
        "--cluster-port",
        "2",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already holds a node"), "{}", stderr(&o));
    let empty = c.dir().join("empty");
    let o = shoal(&["agent", "--data-dir", empty.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("holds no node"), "{}", stderr(&o));

    let o = shoal(&["--http-addr", &addr, "join-token", "manager"]);
    let text = stdout(&o);
    assert!(text.contains("To add a manager to this cluster, run the following command:"), "{text}");
    assert!(text.contains(&format!("shoal agent --join {} --token SHOAL-1-", c.nodes[0].cluster_addr())), "{text}");
    let old = stdout(&shoal(&["--http-addr", &addr, "join-token", "manager", "-q"])).trim().to_string();
    assert!(old.starts_with("SHOAL-1-") && !old.contains(' '));
    let worker = stdout(&shoal(&["--http-addr", &addr, "join-token", "worker", "-q"])).trim().to_string();
    assert_ne!(old, worker);

    let o = shoal(&["--http-addr", &addr, "join-token", "manager", "--rotate", "-q"]);
    let new = stdout(&o).trim().to_string();
    assert!(o.status.success() && new != old, "rotated: {new}");

    // A join with the rotated (old) token is refused at once, with a non-zero exit.
    let dir = c.dir().join("joiner");
    let start = Instant::now();
    let o = shoal(&[
        "agent",
        "--join",
        &c.nodes[0].cluster_addr(),
        "--token",
        &old,
        "--data-dir",
        dir.to_str().unwrap(),
        "--bind",
        "127.0.0.1",
        "--cluster-port",
        "0",
        "--http-port",
        "0",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid join token"), "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(5), "refused at once, took {:?}", start.elapsed());
    assert!(!dir.join("node.json").exists(), "a refused join leaves no node behind");
}
