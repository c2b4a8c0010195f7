//! The convergence display of `create`, `update`, `scale` and `rollback`: progress lines until
//! every slot runs an up-to-date task (as the docker CLI shows), unless `--detach`.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use super::get_service;
use crate::client::{ApiClient, encode_key};

/// How long one blocking query waits (below the client's 15 s deadline).
const WAIT: &str = "10s";

/// Waits until every slot runs an up-to-date task and no update is under way, printing progress.
/// It waits on the registry's watch through blocking queries of `/v1/tasks` (whose index also
/// moves with every service record), so it wakes on each change and never polls.
pub(super) async fn converge(api: &ApiClient, id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = String::new();
    let mut last_reason = String::new();
    let mut index = 0;
    loop {
        let filters = format!("{{\"service\":{{\"{id}\":true}},\"_up-to-date\":{{\"true\":true}}}}");
        let path = format!("/v1/tasks?filters={}&index={index}&wait={WAIT}", encode_key(&filters));
        let (tasks, next): (Vec<Value>, u64) = api.get_json_at(&path).await?;
        index = next;
        let svc = get_service(api, id).await?;
        let name = svc["Spec"]["Name"].as_str().unwrap_or(id).to_string();
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
            && why != last_reason
        {
            println!("pending: {why}");
            last_reason = why.to_string();
        }
        if Instant::now() > deadline {
            bail!("service {name} did not converge within 10 minutes; see `shoal service ps {name}`");
        }
    }
}
