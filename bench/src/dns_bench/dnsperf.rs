//! One dnsperf run against one server, and what it printed.
//!
//! Debian's dnsperf (2.10) reports queries/s and the average latency, but no percentiles (its
//! `latency-histogram` option came later). With `-v` it prints one line per answer, `> NOERROR
//! name type 0.000123`, with the latency in seconds (µs resolution). The bench keeps that output in
//! a file and reads every line, so p50/p99 are exact over every answer of the same run that gave
//! queries/s. Printing costs dnsperf some CPU, on the two cores the servers share; the measured
//! runs of both servers pay it alike, and `--no-verbose` shows the price (no percentiles then).
//!
//! The CPU figures: the server's from `/proc/PID/stat` before and after; dnsperf's from the
//! `rusage` of `wait4` when it is reaped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::catalog_scale::probe;
use crate::load::Measurement;

/// How dnsperf is run (the same for both servers).
#[derive(Debug, Clone)]
pub struct Settings {
    pub bin: String,
    pub duration: Duration,
    /// `-c`: clients (sockets), spread over the threads.
    pub clients: usize,
    /// `-T`: threads.
    pub threads: usize,
    /// `-q`: queries in flight at most.
    pub outstanding: usize,
    /// `-t`: a query with no answer after this long is lost.
    pub timeout: Duration,
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct Run {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    /// `Response codes:` as dnsperf prints them (`NOERROR 7 (70.00%), NXDOMAIN 3 (30.00%)`).
    pub codes: String,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub run_secs: f64,
    pub qps: f64,
    pub avg_ms: f64,
    pub max_ms: f64,
    /// Every answer's latency from `-v` (empty without it), sorted.
    pub lat: Measurement,
    /// CPU time of the server's process during the run, if its PID is known.
    pub server_cpu_ms: Option<f64>,
    /// CPU time dnsperf used.
    pub dnsperf_cpu_ms: f64,
}

/// Runs dnsperf against `server` with `queries` for `s.duration` (at most `rate` queries/s if
/// given), `-e` (EDNS0, as resolvers send), and `-v` if `verbose`. Output goes to `dir`.
pub fn run(
    s: &Settings,
    server: SocketAddr,
    queries: &Path,
    rate: Option<f64>,
    verbose: bool,
    server_pid: Option<u32>,
    dir: &Path,
) -> Result<Run> {
    let (out_path, err_path) = (dir.join("dnsperf.out"), dir.join("dnsperf.err"));
    let mut cmd = Command::new(&s.bin);
    cmd.args(["-s", &server.ip().to_string(), "-p", &server.port().to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &format!("{:.3}", s.duration.as_secs_f64())])
        .args(["-c", &s.clients.to_string(), "-T", &s.threads.to_string(), "-q", &s.outstanding.to_string()])
        .args(["-t", &format!("{:.3}", s.timeout.as_secs_f64()), "-e"]);
    if let Some(r) = rate {
        cmd.args(["-Q", &format!("{}", r.round().max(1.0) as u64)]);
    }
    if verbose {
        cmd.arg("-v");
    }
    let cpu0 = server_pid.and_then(cpu_ms);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("spawn {} (install Debian's dnsperf)", s.bin))?;
    let pid = child.id() as libc::pid_t;
    // dnsperf stops itself after -l; it may wait up to -t more for the last answers.
    let bound = s.duration + s.timeout + Duration::from_secs(10);
    let deadline = Instant::now() + bound;
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child's PID, with valid pointers; WNOHANG does not block.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break (status, ru);
        }
        if r < 0 {
            bail!("wait4 on dnsperf: {}", std::io::Error::last_os_error());
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            bail!("dnsperf did not end within {bound:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let server_cpu_ms = cpu0.zip(server_pid.and_then(cpu_ms)).map(|(a, b)| b - a);
    let out = std::fs::read_to_string(&out_path)?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        bail!("dnsperf failed (wait status {status}):\n{err}\n{}", tail(&out, 20));
    }
    let mut run = parse(&out).with_context(|| format!("reading dnsperf's output:\n{}", tail(&out, 30)))?;
    run.server_cpu_ms = server_cpu_ms;
    run.dnsperf_cpu_ms = tv_ms(rusage.ru_utime) + tv_ms(rusage.ru_stime);
    if verbose && run.lat.ok != run.completed {
        bail!("dnsperf -v printed {} latencies for {} completed queries", run.lat.ok, run.completed);
    }
    // The verbose file can be large (one line per answer): gone once read.
    let _ = std::fs::remove_file(&out_path);
    Ok(run)
}

fn tv_ms(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 * 1000.0 + tv.tv_usec as f64 / 1000.0
}

/// CPU time (user + system) of `pid` so far, in ms.
fn cpu_ms(pid: u32) -> Option<f64> {
    probe::cpu_ms(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reads dnsperf's statistics and, if present, its `-v` lines.
pub fn parse(out: &str) -> Result<Run> {
    let mut run = Run::default();
    let mut lat_ns = Vec::new();
    let first_number = |v: &str| -> Result<f64> {
        let n = v.split_whitespace().next().context("empty value")?;
        n.parse::<f64>().with_context(|| format!("{n:?} is not a number"))
    };
    let mut seen = 0;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("> ") {
            // `> CODE name type seconds`; a lost query prints `> T name type` with no latency.
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() == 4
                && let Ok(secs) = f[3].parse::<f64>()
            {
                lat_ns.push((secs * 1e9).round() as u64);
            }
            continue;
        }
        let Some((key, value)) = line.trim().split_once(':') else { continue };
        let value = value.trim();
        match key {
            "Queries sent" => run.sent = first_number(value)? as u64,
            "Queries completed" => run.completed = first_number(value)? as u64,
            "Queries lost" => run.lost = first_number(value)? as u64,
            "Response codes" => run.codes = value.to_string(),
            "Average packet size" => {
                // `request 52, response 114`
                let nums: Vec<u64> =
                    value.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
                if let [req, resp] = nums[..] {
                    (run.request_bytes, run.response_bytes) = (req, resp);
                }
            }
            "Run time (s)" => run.run_secs = first_number(value)?,
            "Queries per second" => run.qps = first_number(value)?,
            "Average Latency (s)" => {
                // `0.000181 (min 0.000140, max 0.000297)`
                run.avg_ms = first_number(value)? * 1000.0;
                if let Some(max) = value.split("max ").nth(1) {
                    run.max_ms = first_number(max.trim_end_matches(')'))? * 1000.0;
                }
            }
            _ => continue,
        }
        seen += 1;
    }
    if seen < 6 {
        bail!("no statistics section");
    }
    lat_ns.sort_unstable();
    run.lat = Measurement {
        ok: lat_ns.len() as u64,
        elapsed: Duration::from_secs_f64(run.run_secs),
        latencies_ns: lat_ns,
        ..Measurement::default()
    };
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "DNS Performance Testing Tool\nVersion 2.10.0\n\n\
        [Status] Command line: dnsperf -s 127.0.77.2 -p 8600 -d q.txt -l 2 -e -v -Q 5\n\
        > NOERROR svc-0000.service.shoal A 0.000297\n\
        > NOERROR _svc-0000._tcp.service.shoal SRV 0.000145\n\
        > NXDOMAIN nosuch.service.shoal A 0.000159\n\
        > T nosuch.service.shoal A\n\
        [Status] Testing complete (time limit)\n\nStatistics:\n\n\
        \x20 Queries sent:         4\n\
        \x20 Queries completed:    3 (75.00%)\n\
        \x20 Queries lost:         1 (25.00%)\n\n\
        \x20 Response codes:       NOERROR 2 (66.67%), NXDOMAIN 1 (33.33%)\n\
        \x20 Average packet size:  request 52, response 114\n\
        \x20 Run time (s):         2.000177\n\
        \x20 Queries per second:   1.499867\n\n\
        \x20 Average Latency (s):  0.000200 (min 0.000145, max 0.000297)\n\
        \x20 Latency StdDev (s):   0.000046\n\n";

    #[test]
    fn reads_statistics_and_verbose_lines() {
        let r = parse(OUT).unwrap();
        assert_eq!((r.sent, r.completed, r.lost), (4, 3, 1));
        assert_eq!(r.codes, "NOERROR 2 (66.67%), NXDOMAIN 1 (33.33%)");
        assert_eq!((r.request_bytes, r.response_bytes), (52, 114));
        assert!((r.qps - 1.499867).abs() < 1e-9);
        assert!((r.avg_ms - 0.2).abs() < 1e-9 && (r.max_ms - 0.297).abs() < 1e-9);
        assert_eq!(r.lat.latencies_ns, [145_000, 159_000, 297_000], "sorted, the lost query left out");
        assert_eq!(r.lat.percentile_ms(0.5), 0.159);
        assert!(parse("[Status] Sending queries\n").is_err());
    }
}
