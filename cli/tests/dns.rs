//! The node's DNS server, queried with the real `dig` (Debian's bind9-dnsutils, installed by
//! scripts/install-test-deps.sh): a service of three tasks on the real engine answers A and SRV
//! with glue, a killed container's address and a failing task's address leave the answers, nodes
//! resolve, and names that do not exist get NXDOMAIN with the SOA.
//!
//! And from inside a task container (busybox from Debian's busybox-static, in an image built
//! `FROM scratch`): `nslookup` and `wget` of `NAME.service.shoal`, a plain service name through the
//! search domain, and a name outside the domain through the upstream resolver — a Knot server on
//! loopback serving `outside.test.`, standing in for the host's resolver (the test sends nothing
//! off this machine).
//!
//! The tests remove every container, network and image they made, however they end.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_testkit::docker::{DockerNode, docker, docker_ok as ok, passing};
use shoal_testkit::{http_client_builder, wait_for};

/// `dig @IP -p 8600 ARGS` (one try, 2 s), its stdout.
fn dig(ip: &str, args: &[&str]) -> String {
    let o = Command::new("dig")
        .args([&format!("@{ip}"), "-p", "8600", "+tries=1", "+time=2"])
        .args(args)
        .output()
        .expect("dig (bind9-dnsutils; see scripts/install-test-deps.sh)");
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn short(ip: &str, name: &str) -> BTreeSet<String> {
    dig(ip, &["+short", name]).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dig_finds_a_service_and_follows_its_health() {
    let env = DockerNode::start(&[]).await;
    let (addr, ip) = (env.addr.clone(), env.ip.clone());
    let host = format!("{ip}:2375");
    let web = format!("dweb{}", std::process::id() % 100_000);
    ok(
        Some(&host),
        &[
            "service",
            "create",
            "--detach",
            "--replicas",
            "3",
            "--name",
            &web,
            "--container-label",
            "shoal.check.http=/health",
            "--container-label",
            "shoal.check.interval=200ms",
            "shoal:local",
        ],
    );
    let instances = wait_for("3 passing instances", Duration::from_secs(60), || {
        let (addr, web) = (addr.clone(), web.clone());
        async move {
            let p = passing(&addr, &web).await;
            (p.len() == 3).then_some(p)
        }
    })
    .await;
    let want: BTreeSet<String> = instances.iter().map(|(a, _)| a.clone()).collect();
    let fqdn = format!("{web}.service.shoal");
    let got = wait_for("dig returns the 3 addresses", Duration::from_secs(10), || {
        let got = short(&ip, &fqdn);
        let want = want.clone();
        async move { (got == want).then_some(got) }
    })
    .await;
    println!("$ dig +short {fqdn}\n{}", got.iter().cloned().collect::<Vec<_>>().join("\n"));

    // SRV, both forms: three records on the task port, each target with its address as glue.
    for name in [format!("_{web}._tcp.service.shoal"), fqdn.clone()] {
        let out = dig(&ip, &["+noall", "+answer", "+additional", "SRV", &name]);
        println!("$ dig SRV {name}\n{out}");
        let srv: Vec<&str> = out.lines().filter(|l| l.contains("\tSRV\t")).collect();
        assert_eq!(srv.len(), 3, "{out}");
        for line in &srv {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f[6], "8080", "the task port: {line}");
            let target = f[7];
            assert!(out.lines().any(|l| l.starts_with(target) && l.contains("\tA\t")), "glue for {target} in:\n{out}");
        }
        let glue: BTreeSet<String> = out
            .lines()
            .filter(|l| l.contains("\tA\t"))
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        assert_eq!(glue, want, "{out}");
    }

    // The node's name, and names that do not exist.
    assert_eq!(short(&ip, "node1.node.shoal"), BTreeSet::from([ip.clone()]));
    let out = dig(&ip, &[&format!("nope{web}.service.shoal")]);
    assert!(out.contains("status: NXDOMAIN") && out.contains("SOA"), "{out}");
    assert_eq!(short(&ip, &format!("{web}.service.consul")), want, "the consul. alias");

    // A failing health check: its address leaves DNS.
    let (sick_addr, _) = instances[0].clone();
    http_client_builder()
        .build()
        .unwrap()
        .post(format!("http://{sick_addr}:8080/health"))
        .body("503")
        .send()
        .await
        .unwrap();
    let t0 = Instant::now();
    wait_for("the failing task's address gone from DNS", Duration::from_secs(10), || {
        let got = short(&ip, &fqdn);
        let sick = sick_addr.clone();
        async move { (!got.contains(&sick) && got.len() == 2).then_some(()) }
    })
    .await;
    println!("health check fails -> address gone from DNS after {:?} (probe interval 200 ms)", t0.elapsed());

    // docker kill: its address is gone within a second.
    let (dead_addr, dead) = instances[1].clone();
    ok(None, &["kill", &dead]);
    let t0 = Instant::now();
    wait_for("the killed task's address gone from DNS", Duration::from_secs(10), || {
        let got = short(&ip, &fqdn);
        let dead = dead_addr.clone();
        async move { (!got.contains(&dead)).then_some(()) }
    })
    .await;
    let took = t0.elapsed();
    println!("docker kill -> address gone from DNS after {took:?}");
    assert!(took < Duration::from_secs(1), "the killed task stayed in DNS for {took:?}");
    ok(Some(&host), &["service", "rm", &web]);
    drop(env);
}

/// The busybox image the container test runs (`FROM scratch`: busybox-static's binary, a page,
/// `busybox httpd` on 8080); removed on drop.
struct Image(String);

impl Image {
    fn build(tag: &str) -> Image {
        let busybox = Path::new("/bin/busybox");
        assert!(busybox.exists(), "/bin/busybox (Debian's busybox-static; see scripts/install-test-deps.sh)");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(busybox, dir.path().join("busybox")).unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        std::fs::write(dir.path().join("www/index.html"), "hello from a busybox task\n").unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nEXPOSE 8080\n\
             ENTRYPOINT [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        )
        .unwrap();
        let o = Command::new("docker")
            .args(["build", "-q", "-t", tag])
            .arg(dir.path())
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_HOST")
            .output()
            .expect("the docker CLI");
        assert!(o.status.success(), "docker build: {}", String::from_utf8_lossy(&o.stderr));
        Image(tag.to_string())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker(None, &["rmi", "-f", &self.0]);
    }
}

/// Knot serving `outside.test.` on a free port of `ip` (loopback): the "host's resolver" of the
/// container test. knotd logs to a file in its dir; a knotd that exits (its port taken by a TCP
/// socket the UDP probe could not see, say) is started again on another port, and a failure to
/// answer reports knotd's log.
struct Knot {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Knot {
    async fn start(ip: &str) -> Knot {
        let mut why = String::new();
        for _ in 0..3 {
            match Knot::try_start(ip).await {
                Ok(k) => return k,
                Err(e) => why.push_str(&format!("{e}\n")),
            }
        }
        panic!("knotd did not come up in 3 tries:\n{why}");
    }

    async fn try_start(ip: &str) -> Result<Knot, String> {
        let port = UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap().port();
        // A short path under /tmp: knotd's control socket path must fit in 108 bytes, and knotd
        // exits at once when it does not (a long $TMPDIR).
        let dir = tempfile::Builder::new().prefix("knot").tempdir_in("/tmp").unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("outside.test.zone"),
            "$ORIGIN outside.test.\n$TTL 60\n\
             @ SOA ns.outside.test. hostmaster.outside.test. 1 3600 600 86400 60\n\
             @ NS ns\nns A 127.0.0.1\nwww A 192.0.2.10\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("knot.conf"),
            format!(
                "server:\n    rundir: \"{d}\"\n    listen: {ip}@{port}\n\
                 database:\n    storage: \"{d}\"\n\
                 log:\n  - target: stderr\n    any: info\n\
                 zone:\n  - domain: outside.test\n    file: \"{d}/outside.test.zone\"\n\
                 \x20   zonefile-sync: -1\n    journal-content: none\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("knot.log")).unwrap();
        let child = Command::new("knotd")
            .arg("-c")
            .arg(dir.path().join("knot.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("knotd (Debian's knot; see scripts/install-test-deps.sh)");
        let mut knot = Knot { child, addr: format!("{ip}:{port}"), dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = Command::new("dig")
                .args([&format!("@{ip}"), "-p", &port.to_string(), "+short", "+tries=1", "+time=1"])
                .arg("www.outside.test")
                .output()
                .expect("dig (bind9-dnsutils)");
            if String::from_utf8_lossy(&o.stdout).contains("192.0.2.10") {
                return Ok(knot);
            }
            if let Ok(Some(status)) = knot.child.try_wait() {
                return Err(format!("knotd on {} exited ({status}); its log:\n{}", knot.addr, knot.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("knotd on {} did not answer in 20 s; its log:\n{}", knot.addr, knot.log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("knot.log")).unwrap_or_default()
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exec(container: &str, args: &[&str]) -> (bool, String) {
    let o = docker(None, &[&["exec", container, "/bin/busybox"], args].concat());
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn task_containers_resolve_cluster_names_and_the_rest_through_the_host() {
    let tag = format!("shoal-busybox-test:{}", std::process::id());
    let image = Image::build(&tag);
    // The upstream listens on the cluster's loopback block, which Cluster::start picks; start Knot
    // on 127.0.0.1 instead (any loopback address works: the node forwards, not the container).
    let knot = Knot::start("127.0.0.1").await;

    let env = DockerNode::start(&["--dns-recursor", &knot.addr]).await;
    let (addr, ip) = (env.addr.clone(), env.ip.clone());
    let host = format!("{ip}:2375");
    let n = std::process::id() % 100_000;
    let (web, db) = (format!("bweb{n}"), format!("bdb{n}"));
    for (name, replicas) in [(&web, "2"), (&db, "1")] {
        ok(Some(&host), &["service", "create", "--detach", "--replicas", replicas, "--name", name, &tag]);
    }
    let webs = wait_for("2 passing web instances and 1 db", Duration::from_secs(60), || {
        let (addr, web, db) = (addr.clone(), web.clone(), db.clone());
        async move {
            let (w, d) = (passing(&addr, &web).await, passing(&addr, &db).await);
            (w.len() == 2 && d.len() == 1).then_some(w)
        }
    })
    .await;
    let db_addr = passing(&addr, &db).await[0].0.clone();
    let (_, container) = webs[0].clone();

    let (_, conf) = exec(&container, &["cat", "/etc/resolv.conf"]);
    println!("$ cat /etc/resolv.conf   (in {container})\n{conf}");
    assert!(conf.contains("search service.shoal"), "{conf}");

    // The cluster's name: both instances, and a page from one of them.
    let fqdn = format!("{web}.service.shoal");
    let (ok1, out) = exec(&container, &["nslookup", &fqdn]);
    println!("$ nslookup {fqdn}\n{out}");
    assert!(ok1, "{out}");
    for (a, _) in &webs {
        assert!(out.contains(a.as_str()), "{a} in:\n{out}");
    }
    let url = format!("http://{fqdn}:8080/");
    let (ok2, page) = exec(&container, &["wget", "-qO-", &url]);
    println!("$ wget -qO- {url}\n{page}");
    assert!(ok2 && page.contains("hello from a busybox task"), "{page}");

    // A plain name of another service, through the search domain (Docker's embedded DNS knows only
    // this network's names, so `DB` reaches the node's resolver and `DB.service.shoal` answers).
    let (ok4, out) = exec(&container, &["nslookup", &db]);
    println!("$ nslookup {db}\n{out}");
    assert!(ok4 && out.contains(&format!("{db}.service.shoal")) && out.contains(db_addr.as_str()), "{out}");

    // A name outside the domain: forwarded to the upstream.
    let (ok3, out) = exec(&container, &["nslookup", "www.outside.test"]);
    println!("$ nslookup www.outside.test\n{out}");
    assert!(ok3 && out.contains("192.0.2.10"), "{out}");

    for name in [&web, &db] {
        ok(Some(&host), &["service", "rm", name]);
    }
    drop(env);
    drop(image);
}
