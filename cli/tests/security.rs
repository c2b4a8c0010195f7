//! The cluster port speaks mutual TLS: everything without a certificate from this cluster's CA is
//! refused and logged, and join tokens pin the CA.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shoal_testkit::{Cluster, ClusterOptions, shoal_bin};

/// curl (installed by scripts/install-test-deps.sh) against the cluster port: `(exit code, HTTP status)`.
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data-binary", "x"])
        .args(args)
        .output()
        .expect("curl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_port_refuses_anything_without_this_clusters_certificate() {
    let a = Cluster::start(1, ClusterOptions::default()).await;
    let b = Cluster::start(1, ClusterOptions::default()).await;
    let tls = |c: &Cluster, f: &str| c.nodes[0].data_dir.join("tls").join(f).to_string_lossy().into_owned();
    let url = |p: &str| format!("https://{}{p}", a.nodes[0].cluster_addr());
    let (a_ca, a_cert, a_key) = (tls(&a, "ca.pem"), tls(&a, "node.pem"), tls(&a, "node.key"));
    let (b_cert, b_key) = (tls(&b, "node.pem"), tls(&b, "node.key"));

    // Plain HTTP on the cluster port: no TLS handshake, no answer.
    let (_, code) = curl(&[&format!("http://{}/raft/vote", a.nodes[0].cluster_addr())]);
    assert_ne!(code, "200", "plain HTTP must not be served");
    assert!(code == "000" || code.starts_with('4'), "plain HTTP got {code}");

    // TLS without a client certificate: refused on every Raft/cluster route.
    for path in
        ["/raft/vote", "/raft/append", "/raft/snapshot", "/cluster/write", "/cluster/read-index", "/cluster/join"]
    {
        let (rc, code) = curl(&["--cacert", &a_ca, &url(path)]);
        assert_eq!((rc, code.as_str()), (0, "401"), "{path} without a client certificate");
    }

    // A certificate from another cluster's CA: the handshake itself fails.
    let (rc, code) = curl(&["--cacert", &a_ca, "--cert", &b_cert, "--key", &b_key, &url("/raft/vote")]);
    assert!(rc != 0 && code == "000", "foreign certificate: curl exit {rc}, status {code}");

    // This cluster's own manager certificate is let through (and the bogus body is rejected as such).
    let (rc, code) = curl(&["--cacert", &a_ca, "--cert", &a_cert, "--key", &a_key, &url("/raft/vote")]);
    assert_eq!((rc, code.as_str()), (0, "400"), "own certificate reaches the handler");

    // Every refusal is logged.
    let log = a.log_tail(0, 200);
    assert!(log.contains("refused: no client certificate from this cluster"), "{log}");
    assert!(log.contains("refused connection on the cluster port: TLS handshake failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn join_tokens_pin_the_ca_and_bad_tokens_end_at_once() {
    let a = Cluster::start(1, ClusterOptions::default()).await;
    let b = Cluster::start(1, ClusterOptions::default()).await;
    let b_token = b.token(0).await;
    let a_token = a.token(0).await;
    assert!(a_token.starts_with("SHOAL-1-") && a_token.split('-').nth(2).unwrap().len() == 64, "{a_token}");
    let join = |token: &str, name: &str| {
        let dir = a.dir().join(name);
        let start = Instant::now();
        let out = Command::new(shoal_bin())
            .args(["agent", "--join", &a.nodes[0].cluster_addr(), "--token", token, "--data-dir"])
            .arg(&dir)
            .args(["--bind", "127.0.0.1", "--cluster-port", "0", "--http-port", "0"])
            .output()
            .expect("run shoal");
        (out, start.elapsed(), dir)
    };

    // Another cluster's token: its CA digest does not match what this manager presents.
    let (out, took, dir) = join(&b_token, "pinned");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not match the join token"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "refused at once ({took:?})");
    assert!(!dir.join("node.json").exists() && !dir.join("tls/node.pem").exists());

    // Right CA, wrong secret.
    let wrong = format!("{}-{}", a_token.rsplit_once('-').unwrap().0, "notthesecret");
    let (out, _, _) = join(&wrong, "wrong-secret");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid join token"), "{}", stderr(&out));
    assert!(a.log_tail(0, 100).contains("refused a certificate request"), "refusal is logged");

    // Malformed tokens never reach the network.
    for bad in ["garbage", "SHOAL-1-abc-def", "SHOAL-2-x-y", ""] {
        let (out, took, _) = join(bad, "malformed");
        assert!(!out.status.success(), "token {bad:?}");
        assert!(stderr(&out).contains("malformed join token"), "token {bad:?}: {}", stderr(&out));
        assert!(took < Duration::from_secs(5));
    }
}
