//! `shoal node ls | inspect | update | rm`, as `docker node`.

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use shoal_registry::NodeRow;

use super::Format;
use crate::client::{ApiClient, encode_key};
use crate::table;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum AvailabilityArg {
    Active,
    Pause,
    Drain,
}

impl AvailabilityArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Pause => "pause",
            Self::Drain => "drain",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List the nodes with their status and manager status.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one node (by ID, unique ID prefix, or name) as JSON.
    Inspect { node: String },
    /// Change a node's availability or labels.
    Update {
        node: String,
        #[arg(long, value_enum)]
        availability: Option<AvailabilityArg>,
        /// Add or overwrite a label (repeatable).
        #[arg(long = "label-add", value_name = "KEY=VALUE")]
        label_add: Vec<String>,
        /// Remove a label (repeatable).
        #[arg(long = "label-rm", value_name = "KEY")]
        label_rm: Vec<String>,
    },
    /// Make a ready worker a manager (it joins Raft as a learner, then a voter); waits until it votes.
    Promote {
        node: String,
        /// Return as soon as the promotion is recorded.
        #[arg(long, short)]
        detach: bool,
    },
    /// Make a manager a worker (it leaves the Raft voters; demoting the leader hands leadership
    /// over first). Refused when it would leave no manager or too few for a quorum.
    Demote { node: String },
    /// Remove a node from the cluster (refused while it is up, unless --force).
    Rm {
        node: String,
        #[arg(long, short)]
        force: bool,
    },
}

pub async fn run(addr: &str, cmd: NodeCmd) -> Result<()> {
    let api = ApiClient::new(addr)?;
    match cmd {
        NodeCmd::Ls { format } => {
            let nodes: Vec<NodeRow> = api.get_json("/v1/nodes").await?.unwrap_or_default();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&nodes)?),
                Format::Table => {
                    let rows: Vec<Vec<String>> = nodes
                        .iter()
                        .map(|n| {
                            let me = if n.http_address == addr { " *" } else { "" };
                            vec![
                                format!("{}{me}", n.id),
                                n.name.clone(),
                                n.address.clone(),
                                n.status.clone(),
                                format!("{:?}", n.availability),
                                n.manager_status.clone(),
                                n.resources.engine_version.clone(),
                            ]
                        })
                        .collect();
                    let headers =
                        ["ID", "NAME", "ADDRESS", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"];
                    print!("{}", table::render(&headers, &rows));
                }
            }
        }
        NodeCmd::Inspect { node } => {
            let row: NodeRow = api
                .get_json(&format!("/v1/nodes/{}", encode_key(&node)))
                .await?
                .with_context(|| format!("no such node: {node}"))?;
            println!("{}", serde_json::to_string_pretty(&row)?);
        }
        NodeCmd::Update { node, availability, label_add, label_rm } => {
            let mut add = serde_json::Map::new();
            for l in &label_add {
                let Some((k, v)) = l.split_once('=') else {
                    bail!("invalid --label-add {l:?}: use KEY=VALUE");
                };
                add.insert(k.to_string(), v.into());
            }
            if availability.is_none() && label_add.is_empty() && label_rm.is_empty() {
                bail!("nothing to update: give --availability, --label-add or --label-rm");
            }
            let body = serde_json::json!({
                "Availability": availability.map(AvailabilityArg::as_str),
                "LabelAdd": add,
                "LabelRm": label_rm,
            });
            let path = format!("/v1/nodes/{}/update", encode_key(&node));
            api.send(Method::POST, &path, Some(serde_json::to_vec(&body)?))
                .await?
                .with_context(|| format!("no such node: {node}"))?;
            println!("{node}");
        }
        NodeCmd::Promote { node, detach } => {
            let path = format!("/v1/nodes/{}/promote", encode_key(&node));
            let body = api.send(Method::POST, &path, None).await?.with_context(|| format!("no such node: {node}"))?;
            let row: NodeRow = serde_json::from_slice(&body).context("unexpected answer")?;
            if !detach {
                // Converged when the leader lists it as a reachable manager.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                loop {
                    let nodes: Vec<NodeRow> = api.get_json("/v1/nodes").await?.unwrap_or_default();
                    if nodes.iter().any(|n| n.id == row.id && n.manager_status == "Reachable") {
                        break;
                    }
                    if std::time::Instant::now() > deadline {
                        bail!("node {node} was promoted but has not joined the managers within 60 s; check its log");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
            println!("Node {node} promoted to a manager in the cluster.");
        }
        NodeCmd::Demote { node } => {
            let path = format!("/v1/nodes/{}/demote", encode_key(&node));
            api.send(Method::POST, &path, None).await?.with_context(|| format!("no such node: {node}"))?;
            println!("Manager {node} demoted in the cluster.");
        }
        NodeCmd::Rm { node, force } => {
            let path = format!("/v1/nodes/{}{}", encode_key(&node), if force { "?force" } else { "" });
            api.send(Method::DELETE, &path, None).await?.with_context(|| format!("no such node: {node}"))?;
            println!("{node}");
        }
    }
    Ok(())
}
