//! `shoal dns NAME [TYPE]`: a small `dig` for people, against this node's DNS server (or
//! `--server IP:PORT`): one query over UDP, retried over TCP when the answer is truncated.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args, Debug)]
pub struct DnsArgs {
    /// The name to look up, e.g. web.service.shoal or _web._tcp.service.shoal.
    pub name: String,
    /// The record type: A (default), AAAA, SRV, SOA, ANY.
    #[arg(default_value = "A")]
    pub record_type: String,
    /// The DNS server (default: the node of --http-addr, port 8600).
    #[arg(long, value_name = "IP:PORT")]
    pub server: Option<SocketAddr>,
}

fn query(name: &Name, rtype: RecordType) -> Result<Vec<u8>> {
    let mut m = Message::query();
    // Any ID: one query, one answer, on a socket of its own.
    m.metadata.id = (std::process::id() & 0xffff) as u16;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), rtype));
    Ok(m.to_vec()?)
}

async fn over_udp(server: SocketAddr, bytes: &[u8]) -> Result<Message> {
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.send_to(bytes, server).await?;
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf))
        .await
        .with_context(|| format!("no answer from {server} within 3 s (is the node's DNS server on? --dns-port)"))??;
    Ok(Message::from_vec(&buf[..n])?)
}

async fn over_tcp(server: SocketAddr, bytes: &[u8]) -> Result<Message> {
    let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(server)).await??;
    s.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
    s.write_all(bytes).await?;
    let len = s.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(Message::from_vec(&buf)?)
}

pub async fn run(http_addr: &str, args: DnsArgs) -> Result<()> {
    let server = match args.server {
        Some(s) => s,
        None => {
            let host = http_addr.trim_start_matches("http://").trim_start_matches("https://");
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            SocketAddr::new(
                host.trim_matches(['[', ']']).parse().context("the --http-addr host is not an IP; give --server")?,
                8600,
            )
        }
    };
    let rtype = RecordType::from_str(&args.record_type.to_ascii_uppercase())
        .map_err(|_| anyhow::anyhow!("unknown record type {:?}: use A, AAAA, SRV, SOA or ANY", args.record_type))?;
    let name = Name::from_str(&args.name).with_context(|| format!("{:?} is not a DNS name", args.name))?;
    let bytes = query(&name, rtype)?;
    let mut answer = over_udp(server, &bytes).await?;
    if answer.metadata.truncation {
        answer = over_tcp(server, &bytes).await?;
    }
    let code = answer.metadata.response_code;
    println!(";; {server}: {code}, {} answers", answer.answers.len());
    for r in answer.answers.iter() {
        println!("{r}");
    }
    if !answer.additionals.is_empty() {
        println!(";; additional");
        for r in answer.additionals.iter() {
            println!("{r}");
        }
    }
    if code != hickory_proto::op::ResponseCode::NoError {
        bail!("{} {rtype}: {code}", args.name);
    }
    Ok(())
}
