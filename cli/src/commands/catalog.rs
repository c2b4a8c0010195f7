//! `shoal catalog services | service NAME`: what discovery sees, as `consul catalog` shows it, with
//! each instance's health (the worst of its checks and its node's).

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use super::Format;
use crate::client::{ApiClient, encode_key};
use crate::table;

#[derive(Subcommand, Debug)]
pub enum CatalogCmd {
    /// List the services in the catalog with their tags and instance counts.
    Services {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List one service's instances with node, address, port, health and source.
    Service {
        name: String,
        /// Only instances with this tag (repeatable; all must match).
        #[arg(long)]
        tag: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// The worst status of a health entry's checks (Consul's `AggregatedStatus`).
pub fn aggregated(checks: &Value) -> &'static str {
    let rank = |s: &str| match s {
        "passing" => 0,
        "warning" => 1,
        "critical" => 2,
        _ => 3,
    };
    let mut worst = "passing";
    for c in checks.as_array().into_iter().flatten() {
        let id = c["CheckID"].as_str().unwrap_or_default();
        if id == "_node_maintenance" || id.starts_with("_service_maintenance:") {
            return "maintenance";
        }
        let s = c["Status"].as_str().unwrap_or("critical");
        if rank(s) > rank(worst) {
            worst = match s {
                "warning" => "warning",
                "critical" => "critical",
                _ => "critical",
            };
        }
    }
    worst
}

pub async fn run(addr: &str, cmd: CatalogCmd) -> Result<()> {
    let api = ApiClient::new(addr)?;
    match cmd {
        CatalogCmd::Services { format } => {
            let services: Value = api.get_json("/v1/catalog/services").await?.unwrap_or_default();
            let names: Vec<String> = services.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
            let mut rows = Vec::new();
            let mut all = serde_json::Map::new();
            for name in &names {
                let entries: Value =
                    api.get_json(&format!("/v1/health/service/{}", encode_key(name))).await?.unwrap_or_default();
                let entries = entries.as_array().cloned().unwrap_or_default();
                let passing = entries.iter().filter(|e| aggregated(&e["Checks"]) == "passing").count();
                let tags: Vec<String> = services[name]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect();
                rows.push(vec![name.clone(), format!("{passing}/{}", entries.len()), tags.join(",")]);
                all.insert(
                    name.clone(),
                    serde_json::json!({ "Tags": tags, "Instances": entries.len(), "Passing": passing }),
                );
            }
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Format::Table => print!("{}", table::render(&["SERVICE", "PASSING", "TAGS"], &rows)),
            }
        }
        CatalogCmd::Service { name, tag, format } => {
            let mut path = format!("/v1/health/service/{}", encode_key(&name));
            for (i, t) in tag.iter().enumerate() {
                path.push(if i == 0 { '?' } else { '&' });
                path.push_str(&format!("tag={}", encode_key(t)));
            }
            let entries: Value = api.get_json(&path).await?.unwrap_or_default();
            let entries = entries.as_array().cloned().unwrap_or_default();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
                Format::Table => {
                    if entries.is_empty() {
                        eprintln!("no instances of service {name:?} in the catalog");
                    }
                    let rows: Vec<Vec<String>> = entries
                        .iter()
                        .map(|e| {
                            let s = &e["Service"];
                            let address = match s["Address"].as_str() {
                                Some(a) if !a.is_empty() => a.to_string(),
                                _ => e["Node"]["Address"].as_str().unwrap_or_default().to_string(),
                            };
                            let failing: Vec<String> = e["Checks"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter(|c| c["Status"] != "passing")
                                .map(|c| {
                                    let out = c["Output"].as_str().unwrap_or_default();
                                    let out: String = out.lines().next().unwrap_or_default().chars().take(60).collect();
                                    format!("{}: {}", c["CheckID"].as_str().unwrap_or_default(), out)
                                })
                                .collect();
                            vec![
                                s["ID"].as_str().unwrap_or_default().to_string(),
                                e["Node"]["Node"].as_str().unwrap_or_default().to_string(),
                                address,
                                s["Port"].as_u64().unwrap_or(0).to_string(),
                                aggregated(&e["Checks"]).to_string(),
                                s["Meta"]["shoal-source"].as_str().unwrap_or_default().to_string(),
                                failing.join("; "),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table::render(&["ID", "NODE", "ADDRESS", "PORT", "HEALTH", "SOURCE", "FAILING CHECKS"], &rows)
                    );
                }
            }
        }
    }
    Ok(())
}
