//! `shoal join-token manager|worker [-q] [--rotate]`, as `docker swarm join-token`.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use reqwest::Method;
use serde::Deserialize;

use crate::client::ApiClient;

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    Manager,
    Worker,
}

#[derive(Args, Debug)]
pub struct JoinTokenArgs {
    role: RoleArg,
    /// Print only the token.
    #[arg(short, long)]
    quiet: bool,
    /// Replace the token's secret; the old token stops working at once.
    #[arg(long)]
    rotate: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TokenAnswer {
    token: String,
    join_addr: String,
}

pub async fn run(addr: &str, args: JoinTokenArgs) -> Result<()> {
    let api = ApiClient::new(addr)?;
    let role = match args.role {
        RoleArg::Manager => "manager",
        RoleArg::Worker => "worker",
    };
    let path = format!("/v1/cluster/join-token/{role}");
    let method = if args.rotate { Method::POST } else { Method::GET };
    let body = api.send(method, &path, None).await?.context("this node does not serve join tokens")?;
    let t: TokenAnswer = serde_json::from_slice(&body).context("unexpected answer")?;
    if args.quiet {
        println!("{}", t.token);
        return Ok(());
    }
    if args.rotate {
        println!("Successfully rotated {role} join token.\n");
    }
    println!("To add a {role} to this cluster, run the following command:\n");
    println!("    shoal agent --join {} --token {} --data-dir DIR --bind IP\n", t.join_addr, t.token);
    Ok(())
}
