//! `shoal`: one binary for the cluster's nodes and its command line.

mod agent;
mod alloc;
mod client;
mod commands;
mod dns;
mod gossip;
mod runtime;
mod table;
mod whoami;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: Swarm-style orchestration with Consul-style discovery, in one binary"
)]
struct Cli {
    /// HTTP API of the node to talk to.
    #[arg(long, global = true, env = "SHOAL_HTTP_ADDR", default_value = "127.0.0.1:8500", value_name = "IP:PORT")]
    http_addr: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node: --init a new cluster, --join one, or resume from --data-dir.
    Agent(agent::AgentArgs),
    /// Run a single-node cluster on this host for development.
    Dev(agent::DevArgs),
    /// Read and write the replicated KV store (as `consul kv`).
    #[command(subcommand)]
    Kv(commands::kv::KvCmd),
    /// Inspect the cluster's nodes.
    #[command(subcommand)]
    Node(commands::node::NodeCmd),
    /// Create and manage services (as `docker service`).
    #[command(subcommand)]
    Service(commands::service::ServiceCmd),
    /// What discovery sees: services and their instances with health (as `consul catalog`).
    #[command(subcommand)]
    Catalog(commands::catalog::CatalogCmd),
    /// Look a name up in the node's DNS server (a small dig): `shoal dns web.service.shoal [SRV]`.
    Dns(commands::dns::DnsArgs),
    /// Keep configs rendered from templates and reload their proxy (consul-template's job).
    Router(commands::router::RouterArgs),
    /// Issue certificates from the cluster CA.
    #[command(subcommand)]
    Cert(commands::cert::CertCmd),
    /// Print (or --rotate) the token and command to join a node.
    JoinToken(commands::token::JoinTokenArgs),
    /// Serve a small HTTP test workload that tells which node, service, task and slot it runs as.
    Whoami(whoami::WhoamiArgs),
    /// GET a plain-http URL; exit 0 on a 2xx answer, else 1 (a health check for scratch images).
    Probe(whoami::ProbeArgs),
}

fn main() {
    shoal_registry::pki::tls::install_crypto_provider();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| {
        let default = if matches!(cli.command, Cmd::Agent(_) | Cmd::Dev(_) | Cmd::Router(_)) {
            "info,openraft=warn,hickory_server=warn"
        } else {
            "warn"
        };
        tracing_subscriber::EnvFilter::new(default)
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Agent(args) => agent::run_agent(args).await,
        Cmd::Dev(args) => agent::run_dev(args).await,
        Cmd::Kv(cmd) => commands::kv::run(&cli.http_addr, cmd).await,
        Cmd::Node(cmd) => commands::node::run(&cli.http_addr, cmd).await,
        Cmd::Service(cmd) => commands::service::run(&cli.http_addr, cmd).await,
        Cmd::Catalog(cmd) => commands::catalog::run(&cli.http_addr, cmd).await,
        Cmd::Dns(args) => commands::dns::run(&cli.http_addr, args).await,
        Cmd::Router(args) => commands::router::run(&cli.http_addr, args).await,
        Cmd::Cert(cmd) => commands::cert::run(&cli.http_addr, cmd).await,
        Cmd::JoinToken(args) => commands::token::run(&cli.http_addr, args).await,
        Cmd::Whoami(args) => whoami::run(args).await,
        Cmd::Probe(args) => whoami::probe(args).await,
    }
}
