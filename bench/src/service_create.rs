//! `shoal-bench service-create`: end to end through the API and Raft: create a service of N
//! replicas on a running cluster and time until every task is assigned (the leader's orchestrator
//! and scheduler have done their work and Raft has committed it).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Creates `replicas` replicas through `api` and returns (seconds to all assigned, tasks).
pub async fn run(api: &str, replicas: u64, timeout: Duration) -> Result<(f64, u64)> {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
    let name = format!("bench{}", std::process::id());
    let spec = json!({"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "shoal:local"}}, "Mode": {"Replicated": {"Replicas": replicas}}});
    let start = Instant::now();
    let r = http.post(format!("{api}/v1/services/create")).json(&spec).send().await.context("create")?;
    if !r.status().is_success() {
        bail!("create failed: {}", r.text().await.unwrap_or_default());
    }
    let id = r.json::<Value>().await?["ID"].as_str().context("no ID")?.to_string();
    let filters = format!("{{\"service\":{{\"{id}\":true}}}}");
    let url = format!(
        "{api}/v1/tasks?filters={}",
        filters.replace('"', "%22").replace('{', "%7B").replace('}', "%7D").replace(':', "%3A")
    );
    loop {
        let tasks: Vec<Value> = http.get(&url).send().await?.json().await?;
        let assigned = tasks.iter().filter(|t| t["NodeID"].is_string()).count() as u64;
        if assigned >= replicas {
            let secs = start.elapsed().as_secs_f64();
            let _ = http.delete(format!("{api}/v1/services/{id}")).send().await;
            return Ok((secs, assigned));
        }
        if start.elapsed() > timeout {
            bail!("only {assigned} of {replicas} tasks assigned after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
