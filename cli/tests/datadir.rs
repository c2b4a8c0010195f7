//! The data dir's on-disk format: a dir written by an older build is read (format 1, the layout
//! before formats were recorded, from a fixture made by that build), and a format this build cannot
//! read is refused at start with a message naming both formats, touching nothing.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_testkit::{shoal_bin, wait_for};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn fixture(dir: &Path) -> std::path::PathBuf {
    let tgz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkit/fixtures/datadir-format1.tgz");
    let ok = Command::new("tar").arg("xzf").arg(&tgz).arg("-C").arg(dir).status().expect("tar").success();
    assert!(ok, "unpack {}", tgz.display());
    dir.join("node")
}

fn agent(data_dir: &Path, http: u16) -> Command {
    let mut cmd = Command::new(shoal_bin());
    cmd.args(["agent", "--bind", "127.0.0.1", "--runtime", "none", "--docker-port", "0", "--dns-port", "0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--http-port", &http.to_string()])
        .args(["--cluster-port", &free_port().to_string()])
        .args(["--gossip-port", &free_port().to_string()])
        .stdin(Stdio::null());
    cmd
}

/// Kills the child when the test ends, pass or fail.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_of_the_build_before_formats_is_read_and_stamped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture(tmp.path());
    assert!(!dir.join("format.json").exists(), "the fixture predates format.json");
    let http = free_port();
    let log = std::fs::File::create(tmp.path().join("node.log")).unwrap();
    let _node = Running(agent(&dir, http).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap());
    let addr = format!("127.0.0.1:{http}");
    let kv = shoal_testkit::KvClient::new(&addr);
    let written_by = wait_for("the old data dir's keys", Duration::from_secs(20), || async {
        kv.get("fixture/written-by", "").await.ok().flatten()
    })
    .await;
    assert_eq!(written_by, b"b7fbdc3");
    // From the snapshot and from the log after it.
    for i in 1..=8 {
        assert_eq!(kv.get(&format!("fixture/k{i}"), "").await.unwrap().unwrap(), format!("v{i}").as_bytes());
    }
    assert_eq!(kv.get("fixture/after-snapshot", "").await.unwrap().unwrap(), b"yes");
    let services: serde_json::Value =
        shoal_testkit::get_json(&addr, "/v1/services").await.expect("services of the old data dir");
    let names: Vec<&str> = services.as_array().unwrap().iter().filter_map(|s| s["Spec"]["Name"].as_str()).collect();
    assert_eq!(names, ["web"], "{services}");
    let stamp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("format.json")).expect("format.json written")).unwrap();
    assert_eq!(stamp["Format"], shoal_registry::datadir::FORMAT, "{stamp}");
    // New writes land too.
    assert!(kv.put("fixture/new", b"ok", "").await.unwrap());
    assert_eq!(kv.get("fixture/new", "").await.unwrap().unwrap(), b"ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_format_is_refused_with_both_versions_and_nothing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture(tmp.path());
    let newer = r#"{"Format":99,"WrittenBy":"0.9.0"}"#;
    std::fs::write(dir.join("format.json"), newer).unwrap();
    let before = std::fs::read(dir.join("raft.redb")).unwrap();
    let out = agent(&dir, free_port()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a newer format must not start: {stderr}");
    let reads = format!("reads formats 1 to {}", shoal_registry::datadir::FORMAT);
    for words in ["format 99", "0.9.0", reads.as_str(), "join the node again"] {
        assert!(stderr.contains(words), "{words:?} missing from: {stderr}");
    }
    assert_eq!(std::fs::read_to_string(dir.join("format.json")).unwrap(), newer);
    assert_eq!(std::fs::read(dir.join("raft.redb")).unwrap(), before, "the Raft data is untouched");
}
