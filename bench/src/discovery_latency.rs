//! `shoal-bench discovery-latency`: from a container's start (the engine's `State.StartedAt`) to
//! its instance passing in `/v1/health/service/<name>`, as a blocking-query client sees it. Each
//! round starts one `docker run -d -l shoal.service=NAME` container on the engine the node's
//! registrator watches, waits on blocking queries until its instance is passing, then removes the
//! container and waits until the instance is gone, so rounds do not overlap.
//!
//! With `--check`, the container also carries `shoal.check.http=/health` (interval 1 s): the time
//! then includes the first probe, which the check runner makes as soon as it sees the check.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// What one run measured, in milliseconds per round.
pub struct Latencies {
    /// Start → passing, per round.
    pub ms: Vec<f64>,
}

fn docker(args: &[&str]) -> Result<String> {
    let o = Command::new("timeout")
        .args(["60", "docker"])
        .env_remove("DOCKER_HOST")
        .args(args)
        .output()
        .context("the docker CLI")?;
    if !o.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// Docker's `StartedAt` (RFC 3339 with nanoseconds) as Unix milliseconds with a fraction.
fn started_at_ms(rfc3339: &str) -> Option<f64> {
    let (secs, frac) = rfc3339.trim_end_matches('Z').split_once('.').unwrap_or((rfc3339.trim_end_matches('Z'), "0"));
    let whole = shoal_model::services::unix_ms(&format!("{secs}Z"))? as f64;
    let frac: String = frac.chars().take_while(char::is_ascii_digit).collect();
    let frac_ms = format!("0.{frac}").parse::<f64>().unwrap_or(0.0) * 1000.0;
    Some(whole + frac_ms)
}

/// One blocking read of the service: its entries and the index to wait past next.
async fn health(http: &reqwest::Client, api: &str, name: &str, index: u64) -> Result<(u64, Vec<Value>)> {
    let r = http.get(format!("{api}/v1/health/service/{name}?index={index}&wait=10s")).send().await?;
    let index = r.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(index);
    Ok((index, r.json().await?))
}

fn passing(e: &Value) -> bool {
    e["Checks"].as_array().is_some_and(|cs| cs.iter().all(|c| c["Status"] == "passing"))
}

/// Runs `rounds` rounds against the node whose HTTP API is `api`.
pub async fn run(api: &str, rounds: usize, image: &str, with_check: bool) -> Result<Latencies> {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
    let name = format!("latency{}", std::process::id());
    let mut ms = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let container = format!("{name}-{round}");
        let (mut index, _) = health(&http, api, &name, 0).await?;
        let label = format!("shoal.service={name}");
        let mut args = vec!["run", "-d", "--name", &container, "-l", &label];
        if with_check {
            args.extend(["-l", "shoal.check.http=/health", "-l", "shoal.check.interval=1s"]);
        }
        args.push(image);
        let id = docker(&args)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let seen = loop {
            let (next, entries) = health(&http, api, &name, index).await?;
            index = next;
            if entries.iter().any(|e| e["Service"]["ID"].as_str().is_some_and(|s| s.contains(&container)) && passing(e))
            {
                break now_ms();
            }
            if Instant::now() > deadline {
                let _ = docker(&["rm", "-f", &id]);
                bail!("round {round}: {container} not passing after 20 s");
            }
        };
        let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id])?;
        let started = started_at_ms(&started).with_context(|| format!("StartedAt {started:?}"))?;
        ms.push(seen - started);
        docker(&["rm", "-f", &id])?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (next, entries) = health(&http, api, &name, index).await?;
            index = next;
            if entries.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!("round {round}: {container} still in the catalog 20 s after its removal");
            }
        }
    }
    Ok(Latencies { ms })
}

/// The `p`-th percentile (0..=100) of `v` (sorted in place), nearest rank.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn docker_times() {
        let t = super::started_at_ms("2026-12-01T14:04:14.226797123Z").unwrap();
        let whole = shoal_model::services::unix_ms("2026-12-01T14:04:14Z").unwrap() as f64;
        assert!((t - whole - 226.797123).abs() < 1e-3, "{t} {whole}");
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(super::percentile(&mut v, 50.0), 3.0);
        assert_eq!(super::percentile(&mut v, 99.0), 5.0);
    }
}
