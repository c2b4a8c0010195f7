//! `shoal whoami` and `shoal probe` as real processes on 127.0.0.1: the identity pages, flipping
//! the health status, the probe's exit codes, and how the workload stops (SIGTERM, --exit-after).
//!
//! Each whoami listens on port 0 and the test reads the chosen address from its start line, so
//! parallel tests never race for a port.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use shoal_testkit::{http_client_builder, shoal_bin, wait_for};

const TIMEOUT: Duration = Duration::from_secs(10);

/// What the agent sets in each container; the tests set them explicitly or not at all.
const IDENTITY_VARS: [&str; 6] =
    ["SHOAL_NODE_ID", "SHOAL_NODE_NAME", "SHOAL_SERVICE_NAME", "SHOAL_TASK_ID", "SHOAL_TASK_NAME", "SHOAL_TASK_SLOT"];

/// One `shoal whoami` process, SIGKILLed on drop if it still runs.
struct Whoami {
    child: Child,
    addr: String,
    /// Every stdout line, in order, read by a thread as the process prints them.
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Whoami {
    /// Starts `shoal whoami --bind 127.0.0.1 --port 0 EXTRA` with the given `SHOAL_*` identity and
    /// waits for its start line.
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Whoami {
        let mut cmd = Command::new(shoal_bin());
        cmd.args(["whoami", "--bind", "127.0.0.1", "--port", "0"]).args(extra);
        for var in IDENTITY_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn shoal whoami");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Whoami { child, addr: String::new(), lines, seen: Vec::new() };
        let first = w.line_containing("whoami listening on ");
        w.addr = first.trim_start_matches("whoami listening on ").to_string();
        assert!(w.addr.starts_with("127.0.0.1:"), "start line: {first}");
        w
    }

    /// Waits for a stdout line containing `needle` (lines already seen count too).
    fn line_containing(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!("no stdout line containing {needle:?} ({e}); stdout so far: {:?}", self.seen),
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let child = &mut self.child;
        wait_for("whoami to exit", TIMEOUT, || {
            let status = child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        let pipe: Option<ChildStderr> = self.child.stderr.take();
        pipe.expect("piped stderr").read_to_string(&mut s).expect("read stderr");
        s
    }
}

impl Drop for Whoami {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `shoal probe URL`: (exit code, stdout + stderr). The CA-root variables point nowhere, as
/// in a scratch image that has no CA certificates: the probe must not need them.
async fn probe(url: &str) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(shoal_bin())
        .args(["probe", url, "--timeout-ms", "2000"])
        .env("SSL_CERT_FILE", "/nonexistent/shoal-test/ca.pem")
        .env("SSL_CERT_DIR", "/nonexistent/shoal-test")
        .output()
        .await
        .expect("run shoal probe");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

async fn post_health(url: &str, body: &str) -> (u16, String) {
    let http = http_client_builder().timeout(TIMEOUT).build().unwrap();
    let r = http.post(url).body(body.to_string()).send().await.expect("POST /health");
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get(url: &str) -> (u16, String) {
    let http = http_client_builder().timeout(TIMEOUT).build().unwrap();
    let r = http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_identity_and_health_and_stops_on_sigterm() {
    let mut w = Whoami::start(
        &[],
        &[
            ("SHOAL_NODE_NAME", "node-1"),
            ("SHOAL_SERVICE_NAME", "web"),
            ("SHOAL_TASK_NAME", "web.2"),
            ("SHOAL_TASK_ID", "t123"),
            ("SHOAL_TASK_SLOT", "2"),
        ],
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();

    let (code, page) = get(&w.url("/")).await;
    assert_eq!(code, 200, "{page}");
    let lines: Vec<&str> = page.lines().collect();
    assert_eq!(lines[0], format!("Hostname: {hostname}"), "{page}");
    // SHOAL_NODE_ID is unset: it prints as empty.
    assert_eq!(lines[1..5], ["Node: node-1 ()", "Service: web", "Task: web.2 (t123)", "Slot: 2"], "{page}");
    assert!(lines[5].starts_with("RemoteAddr: 127.0.0.1:"), "{page}");
    assert_eq!(lines[6], "GET / HTTP/1.1", "{page}");
    assert!(lines.contains(&format!("Host: {}", w.addr).as_str()), "{page}");
    let (code, page) = get(&w.url("/some/path?x=1")).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("\nGET /some/path?x=1 HTTP/1.1\n"), "{page}");

    let (code, body) = get(&w.url("/api")).await;
    assert_eq!(code, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["hostname"], hostname.as_str(), "{api}");
    assert_eq!(api["node_id"], "", "{api}");
    assert_eq!(api["node_name"], "node-1", "{api}");
    assert_eq!(api["service"], "web", "{api}");
    assert_eq!(api["task_id"], "t123", "{api}");
    assert_eq!(api["task_name"], "web.2", "{api}");
    assert_eq!(api["slot"], "2", "{api}");
    assert!(api["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{api}");

    let health = w.url("/health");
    assert_eq!(get(&health).await, (200, "ok\n".to_string()));
    let (code, out) = probe(&health).await;
    assert_eq!(code, Some(0), "{out}");

    assert_eq!(post_health(&health, "503").await.0, 200);
    w.line_containing("whoami health set to 503 (was 200)");
    assert_eq!(get(&health).await, (503, "unhealthy\n".to_string()));
    let (code, out) = probe(&health).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("answered 503 Service Unavailable"), "{out}");

    let (code, msg) = post_health(&health, "sick").await;
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("200..=599") && msg.contains("\"sick\""), "{msg}");
    assert_eq!(post_health(&health, "700").await.0, 400);
    assert_eq!(get(&health).await.0, 503, "a refused POST leaves the status as it was");

    assert_eq!(post_health(&health, "200\n").await.0, 200);
    w.line_containing("whoami health set to 200 (was 503)");
    assert_eq!(get(&health).await, (200, "ok\n".to_string()));
    let (code, out) = probe(&health).await;
    assert_eq!(code, Some(0), "{out}");

    let pid = w.child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = w.wait_exit().await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    w.line_containing("whoami stopping on SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_after_exits_with_the_code() {
    let mut w = Whoami::start(&["--exit-after", "0.2", "--exit-code", "3"], &[]);
    let status = w.wait_exit().await;
    assert_eq!(status.code(), Some(3), "{status:?}");
    let stderr = w.stderr();
    assert!(stderr.contains("whoami exiting with code 3"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_explains_failures() {
    // A port nobody listens on: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/health");
    let (code, out) = probe(&url).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("GET {url} failed")), "{out}");

    let (code, out) = probe("https://127.0.0.1:1/health").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("plain http only"), "{out}");

    let (code, out) = probe("not a url").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("invalid URL"), "{out}");
}
