//! `shoal node ls`.

use anyhow::Result;
use clap::Subcommand;
use shoal_registry::ManagerStatus;

use super::Format;
use crate::client::ApiClient;
use crate::table;

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List the nodes with their status and manager status.
    Ls {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub async fn run(addr: &str, cmd: NodeCmd) -> Result<()> {
    let api = ApiClient::new(addr)?;
    match cmd {
        NodeCmd::Ls { format } => {
            let nodes: Vec<ManagerStatus> = api.get_json("/v1/nodes").await?.unwrap_or_default();
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
                                n.manager_status.clone(),
                            ]
                        })
                        .collect();
                    print!("{}", table::render(&["ID", "NAME", "ADDRESS", "STATUS", "MANAGER STATUS"], &rows));
                }
            }
        }
    }
    Ok(())
}
