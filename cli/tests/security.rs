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

#[tokio::test(flavor = "multi_thread")]
async fn the_http_api_stays_on_loopback_unless_a_token_guards_it() {
    let dir = tempfile::tempdir().unwrap();
    // A non-loopback API without a token is refused before anything starts.
    let out = Command::new(shoal_bin())
        .args(["agent", "--init", "--data-dir"])
        .arg(dir.path().join("open"))
        .args(["--bind", "127.0.0.1", "--http-bind", "0.0.0.0", "--cluster-port", "0", "--http-port", "0"])
        .env_remove("SHOAL_HTTP_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("not a loopback address") && err.contains("--http-tls") && err.contains("--http-token"),
        "{err}"
    );

    // With a token, requests without it get 403 and no data; with it, they work (the CLI reads
    // SHOAL_HTTP_TOKEN).
    let ip = format!("127.{}.{}.9", rand_octet(), rand_octet());
    let _node = KillOnDrop(
        Command::new(shoal_bin())
            .args(["agent", "--init", "--data-dir"])
            .arg(dir.path().join("guarded"))
            .args(["--bind", &ip, "--http-token", "s3cret"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = shoal_testkit::http_client_builder().timeout(Duration::from_secs(5)).build().unwrap();
    let base = format!("http://{ip}:8500");
    let with_token = shoal_testkit::wait_for("the guarded node", Duration::from_secs(15), || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .put(format!("{base}/v1/kv/secret"))
                .header("X-Consul-Token", "s3cret")
                .body("v")
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(r.status())
        }
    })
    .await;
    assert_eq!(with_token, 200);
    for req in [
        http.get(format!("{base}/v1/kv/secret")),
        http.get(format!("{base}/v1/kv/secret")).header("X-Consul-Token", "wrong"),
        http.get(format!("{base}/v1/status/leader")),
        http.put(format!("{base}/v1/kv/secret")).body("overwrite"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.text().await.unwrap().contains("Permission denied"));
    }
    let r = http.get(format!("{base}/v1/kv/secret?raw&token=s3cret")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "v", "?token= works and nothing was overwritten");
    let out = Command::new(shoal_bin())
        .args(["--http-addr", &format!("{ip}:8500"), "kv", "get", "secret"])
        .env("SHOAL_HTTP_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n", "{}", stderr(&out));
    let out = Command::new(shoal_bin())
        .args(["--http-addr", &format!("{ip}:8500"), "kv", "get", "secret"])
        .env_remove("SHOAL_HTTP_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success() && stderr(&out).contains("Permission denied"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_with_http_tls_answers_only_clients_with_a_certificate_from_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ip = format!("127.{}.{}.7", rand_octet(), rand_octet());
    let port = (std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).to_string();
    let data = dir.path().join("tls-node");
    // Listening on every address is allowed with --http-tls (no token needed).
    let _node = KillOnDrop(
        Command::new(shoal_bin())
            .args(["agent", "--init", "--data-dir"])
            .arg(&data)
            .args(["--bind", &ip, "--http-bind", "0.0.0.0", "--http-port", &port, "--http-tls"])
            .env_remove("SHOAL_HTTP_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api = format!("{ip}:{port}");
    let shoal = |tls_dir: &std::path::Path, args: &[&str]| {
        Command::new(shoal_bin()).args(["--http-addr", &api]).args(args).env("SHOAL_TLS_DIR", tls_dir).output().unwrap()
    };
    // The node's own certificate is a client of its API: that is how the first client cert is had.
    let node_tls = data.join("tls");
    shoal_testkit::wait_for("the TLS API", Duration::from_secs(15), || {
        let ok = shoal(&node_tls, &["kv", "put", "boot", "1"]).status.success();
        async move { ok.then_some(()) }
    })
    .await;
    let out_dir = dir.path().join("me");
    let out = shoal(&node_tls, &["cert", "client", "--out", out_dir.to_str().unwrap(), "--name", "alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = shoal(&out_dir, &["kv", "put", "greeting", "hello"]);
    assert!(out.status.success(), "with the client certificate: {}", stderr(&out));
    let out = shoal(&out_dir, &["kv", "get", "greeting"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

    // Without a certificate, with plain HTTP, or with a certificate of another cluster: no data.
    let url = format!("https://{api}/v1/kv/greeting?raw");
    let ca = out_dir.join("ca.pem").to_string_lossy().into_owned();
    let get = |args: &[&str]| {
        let out = Command::new("curl").args(["-s", "-m", "5", "-w", "\n%{http_code}"]).args(args).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (rc, body) = get(&["--cacert", &ca, &url]);
    assert!(rc != 0 && !body.contains("hello"), "no client certificate: curl {rc} {body}");
    let (_, body) = get(&[&format!("http://{api}/v1/kv/greeting?raw")]);
    assert!(!body.contains("hello"), "plain HTTP: {body}");
    let other = Cluster::start(1, ClusterOptions::default()).await;
    let otls = |f: &str| other.nodes[0].data_dir.join("tls").join(f).to_string_lossy().into_owned();
    let (rc, body) = get(&["--cacert", &ca, "--cert", &otls("node.pem"), "--key", &otls("node.key"), &url]);
    assert!(rc != 0 && !body.contains("hello"), "another cluster's certificate: curl {rc} {body}");
    let (cert, key) = (out_dir.join("client.pem"), out_dir.join("client.key"));
    let (rc, body) = get(&["--cacert", &ca, "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap(), &url]);
    assert_eq!((rc, body.as_str()), (0, "hello\n200"), "curl with the client certificate");

    // The Docker API is exposed too (all addresses): on 2376 with TLS, and only with a certificate.
    let docker = |with_certs: bool| {
        let mut cmd = Command::new("timeout");
        cmd.args(["30", "docker", "node", "ls"])
            .env("DOCKER_HOST", format!("tcp://{ip}:2376"))
            .env_remove("DOCKER_CONTEXT");
        if with_certs {
            cmd.env("DOCKER_TLS_VERIFY", "1").env("DOCKER_CERT_PATH", &out_dir);
        } else {
            cmd.env_remove("DOCKER_TLS_VERIFY").env_remove("DOCKER_CERT_PATH");
        }
        cmd.output().unwrap()
    };
    let o = shoal_testkit::wait_for("the Docker API over TLS", Duration::from_secs(10), || {
        let o = docker(true);
        async move { o.status.success().then_some(o) }
    })
    .await;
    assert!(String::from_utf8_lossy(&o.stdout).contains("Leader"), "{}", stderr(&o));
    let o = docker(false);
    assert!(!o.status.success(), "the docker CLI without a certificate must be refused");

    // A client certificate is no node identity: the cluster port refuses it.
    let (_, code) = curl(&[
        "--cacert",
        &ca,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        &format!("https://{ip}:2377/cluster/heartbeat"),
    ]);
    assert_eq!(code, "401", "an API client certificate on the cluster port");
}

/// Kills (by PID) the process this test started, even when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rand_octet() -> u8 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() % 250 + 2) as u8
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_renew_before_expiry_and_an_expired_one_is_refused() {
    let opts = ClusterOptions { agent_args: vec!["--cert-expiry".into(), "12s".into()] };
    let c = Cluster::start(3, opts).await;
    let tls = |f: &str| c.nodes[1].data_dir.join("tls").join(f);
    let saved = tempfile::tempdir().unwrap();
    let (old_cert, old_key) = (saved.path().join("old.pem"), saved.path().join("old.key"));
    std::fs::copy(tls("node.pem"), &old_cert).unwrap();
    std::fs::copy(tls("node.key"), &old_key).unwrap();
    let old_pem = std::fs::read_to_string(&old_cert).unwrap();
    let not_after = {
        let cert = shoal_registry::pki::tls::NodeCert {
            ca_pem: String::new(),
            cert_pem: old_pem.clone(),
            key_pem: String::new(),
        };
        cert.validity().unwrap().1
    };

    // Wait until the saved certificate has expired; meanwhile every node renews its own.
    shoal_testkit::wait_for("the old certificate to expire", Duration::from_secs(30), || async {
        (std::time::SystemTime::now() > not_after + Duration::from_secs(1)).then_some(())
    })
    .await;
    for i in 0..3 {
        assert!(
            c.log_tail(i, 400).contains("renewed the node certificate"),
            "node {} renewed:\n{}",
            i + 1,
            c.log_tail(i, 30)
        );
    }
    assert_ne!(std::fs::read_to_string(tls("node.pem")).unwrap(), old_pem, "a new certificate is on disk");

    // The cluster kept working across the renewals, without restarts.
    let leader = c.wait_leader(Duration::from_secs(5)).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    assert_eq!(c.client(follower).put("renewed", b"yes", "").await, Ok(true));

    // The expired certificate is refused at the handshake; the renewed one is let in.
    let ca = tls("ca.pem").to_string_lossy().into_owned();
    let url = format!("https://{}/raft/vote", c.nodes[0].cluster_addr());
    let (rc, code) =
        curl(&["--cacert", &ca, "--cert", old_cert.to_str().unwrap(), "--key", old_key.to_str().unwrap(), &url]);
    assert!(rc != 0 && code == "000", "expired certificate: curl exit {rc}, status {code}");
    let (rc, code) = curl(&[
        "--cacert",
        &ca,
        "--cert",
        tls("node.pem").to_str().unwrap(),
        "--key",
        tls("node.key").to_str().unwrap(),
        &url,
    ]);
    assert_eq!((rc, code.as_str()), (0, "400"), "renewed certificate");
    let log = c.log_tail(0, 400);
    assert!(
        log.contains("TLS handshake failed") && log.contains("expired"),
        "the refusal is logged:\n{}",
        c.log_tail(0, 20)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_cannot_buy_an_existing_nodes_identity() {
    use shoal_registry::rpc::RpcClient;
    use shoal_registry::rpc::wire::{CertificateRequest, CertificateResponse};

    let c = Cluster::start(1, ClusterOptions::default()).await;
    let token = c.token_for(0, "worker").await;
    let nodes: Vec<serde_json::Value> = shoal_testkit::get_json(&c.nodes[0].http_addr(), "/v1/nodes").await.unwrap();
    let manager_id = u64::from_str_radix(nodes[0]["ID"].as_str().unwrap(), 16).unwrap();
    let ca = std::fs::read_to_string(c.nodes[0].data_dir.join("tls/ca.pem")).unwrap();
    let client = RpcClient::new(shoal_registry::pki::tls::anonymous_client_config(&ca).unwrap());
    let ask = |id: u64| {
        let (_, csr_pem) = shoal_registry::pki::tls::new_csr().unwrap();
        CertificateRequest { token: token.clone(), id, csr_pem, ip: c.nodes[0].ip.into() }
    };
    let taken: Result<CertificateResponse, shoal_registry::Error> = client
        .call(&c.nodes[0].cluster_addr(), "/cluster/certificate", &ask(manager_id), Duration::from_secs(5))
        .await
        .unwrap();
    let err = taken.unwrap_err();
    assert!(err.to_string().contains("is already taken"), "{err}");
    let fresh: Result<CertificateResponse, shoal_registry::Error> = client
        .call(&c.nodes[0].cluster_addr(), "/cluster/certificate", &ask(42), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(fresh.is_ok(), "a fresh ID gets a certificate: {fresh:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gossip_from_a_process_without_the_cluster_key_is_dropped_and_logged() {
    let mut c = Cluster::start(1, ClusterOptions::default()).await;
    let w = c.add_worker(0).await;
    let api = c.nodes[0].http_addr();
    // The members gossip sealed with the cluster key: both are alive in the manager's view.
    shoal_testkit::wait_for("both members alive in gossip", Duration::from_secs(10), || {
        let api = api.clone();
        async move {
            let m: Vec<serde_json::Value> = shoal_testkit::get_json(&api, "/v1/agent/members").await?;
            (m.len() == 2 && m.iter().all(|m| m["Status"] == 1)).then_some(())
        }
    })
    .await;

    // An outsider speaks chitchat in the clear (what chitchat sends without Shoal's sealing: magic
    // number, protocol version, a Syn) and then garbage; neither reaches the gossip state.
    let gossip = format!("{}:7946", c.nodes[0].ip);
    let sock = std::net::UdpSocket::bind(format!("{}:0", c.nodes[w].ip)).unwrap();
    let mut syn = 45_139u16.to_le_bytes().to_vec();
    syn.extend_from_slice(&[0, 0]);
    syn.extend_from_slice(b"\x00\x00\x07outsider");
    for _ in 0..5 {
        sock.send_to(&syn, &gossip).unwrap();
        sock.send_to(&[0xde, 0xad, 0xbe, 0xef], &gossip).unwrap();
    }
    shoal_testkit::wait_for("the rejection to be logged", Duration::from_secs(5), || {
        let log = c.log_tail(0, 400);
        async move { log.contains("gossip packet rejected: not sealed with this cluster's key").then_some(()) }
    })
    .await;
    let m: Vec<serde_json::Value> = shoal_testkit::get_json(&api, "/v1/agent/members").await.unwrap();
    assert_eq!(m.len(), 2, "no outsider among the members: {m:?}");
    let log = c.log_tail(0, 400);
    let line = log.lines().find(|l| l.contains("gossip packet rejected")).unwrap();
    assert!(line.contains(&c.nodes[w].ip.to_string()), "the log names the sender: {line}");
}
