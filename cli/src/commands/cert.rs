//! `shoal cert client --out DIR`: a client certificate for an HTTP API served with `--http-tls`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use reqwest::Method;

use crate::client::ApiClient;

/// Flags of `shoal cert client`.
#[derive(Args, Debug)]
pub struct ClientCertArgs {
    /// Directory to write `ca.pem`, `client.pem` and `client.key` to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Name in the certificate's subject (`client-NAME`).
    #[arg(long, default_value = "cli")]
    pub name: String,
}

/// `shoal cert ...`.
#[derive(clap::Subcommand, Debug)]
pub enum CertCmd {
    /// Issue a client certificate from the cluster CA (ask a manager's API on loopback, or with a token).
    Client(ClientCertArgs),
}

fn write(path: &Path, body: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(body.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

pub async fn run(addr: &str, cmd: CertCmd) -> Result<()> {
    let CertCmd::Client(args) = cmd;
    let (key_pem, csr_pem) = shoal_registry::pki::tls::new_csr().map_err(anyhow::Error::new)?;
    let body = serde_json::json!({ "Csr": csr_pem, "Name": args.name });
    let answer = ApiClient::new(addr)?
        .send(Method::POST, "/v1/cluster/client-cert", Some(serde_json::to_vec(&body)?))
        .await?
        .context("this API does not issue client certificates (is it a Shoal manager?)")?;
    let v: serde_json::Value = serde_json::from_slice(&answer).context("unexpected answer")?;
    let (cert, ca) = (v["Cert"].as_str().context("no Cert in the answer")?, v["Ca"].as_str().context("no Ca")?);
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    write(&args.out.join("ca.pem"), ca, 0o644)?;
    write(&args.out.join("client.pem"), cert, 0o644)?;
    write(&args.out.join("client.key"), &key_pem, 0o600)?;
    // The same pair under the names the docker CLI looks for (DOCKER_CERT_PATH).
    write(&args.out.join("cert.pem"), cert, 0o644)?;
    write(&args.out.join("key.pem"), &key_pem, 0o600)?;
    println!(
        "Client certificate written to {dir}. Use it with:\n  SHOAL_TLS_DIR={dir} shoal --http-addr IP:8500 node ls\n  curl --cacert {dir}/ca.pem --cert {dir}/client.pem --key {dir}/client.key https://IP:8500/v1/nodes\n  DOCKER_HOST=tcp://IP:2376 DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={dir} docker node ls",
        dir = args.out.display()
    );
    Ok(())
}
