//! The convergence display of `create`, `update`, `scale` and `rollback`: progress lines until
//! every slot runs an up-to-date task (as the docker CLI shows), unless `--detach`.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use super::get_service;
use crate::client::{ApiClient, encode_key};

/// Waits until every slot runs an up-to-date task and no update is under way, printing progress.
pub(super) async fn converge(api: &ApiClient, id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = String::new();
    loop {
        let svc = get_service(api, id).await?;
        let name = svc["Spec"]["Name"].as_str().unwrap_or(id).to_string();
        let filters = format!("{{\"service\":{{\"{id}\":true}},\"_up-to-date\":{{\"true\":true}}}}");
        let tasks: Vec<Value> =
            api.get_json(&format!("/v1/tasks?filters={}", encode_key(&filters))).await?.unwrap_or_default();
        let running =
            tasks.iter().filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running").count();
        let desired = svc["Spec"]["Mode"]["Replicated"]["Replicas"]
            .as_u64()
            .map_or_else(|| tasks.iter().filter(|t| t["DesiredState"] == "running").count(), |n| n as usize);
        let update = svc["UpdateStatus"]["State"].as_str().unwrap_or("");
        if update == "paused" || update == "rollback_paused" {
            bail!("service {name}: {}", svc["UpdateStatus"]["Message"].as_str().unwrap_or("update paused"));
        }
        let line = format!("overall progress: {running} out of {desired} tasks");
        if line != last {
            println!("{line}");
            last = line;
        }
        let updating = matches!(update, "updating" | "rollback_started");
        if running == desired && !updating {
            println!("verify: Service {name} converged");
            return Ok(());
        }
        if let Some(why) =
            tasks.iter().find(|t| t["Status"]["State"] == "pending").and_then(|t| t["Status"]["Message"].as_str())
            && last_pending_reason_printed(why)
        {
            println!("pending: {why}");
        }
        if Instant::now() > deadline {
            bail!("service {name} did not converge within 10 minutes; see `shoal service ps {name}`");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `why` is a new pending reason (it is remembered): each reason is printed once in a row.
fn last_pending_reason_printed(why: &str) -> bool {
    use std::sync::Mutex;
    static LAST: Mutex<String> = Mutex::new(String::new());
    let mut last = LAST.lock().expect("lock");
    if *last == why {
        false
    } else {
        *last = why.to_string();
        true
    }
}
