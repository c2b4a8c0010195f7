//! `shoal kv get|put|delete|ls`, with `consul kv`'s behaviour and messages.

use std::io::Read;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Subcommand;
use reqwest::Method;
use serde::Deserialize;

use super::Format;
use crate::client::{ApiClient, encode_key};

#[derive(Subcommand, Debug)]
pub enum KvCmd {
    /// Print a key's value (or every key under a prefix with --recurse).
    Get {
        key: String,
        /// Every key with this prefix, as KEY:VALUE lines.
        #[arg(long)]
        recurse: bool,
        /// Answer from this node's local state, even without a leader.
        #[arg(long)]
        stale: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Write a value (from the argument, or from stdin when it is absent or "-").
    Put {
        key: String,
        value: Option<String>,
        /// Write only if the key's ModifyIndex is INDEX (0: only if the key does not exist).
        #[arg(long, value_name = "INDEX")]
        cas: Option<u64>,
        /// Opaque flags stored with the value.
        #[arg(long)]
        flags: Option<u64>,
    },
    /// Delete a key (or a whole prefix with --recurse).
    Delete {
        key: String,
        #[arg(long)]
        recurse: bool,
        /// Delete only if the key's ModifyIndex is INDEX.
        #[arg(long, value_name = "INDEX", conflicts_with = "recurse")]
        cas: Option<u64>,
    },
    /// List the keys under a prefix, rolled up at "/".
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        stale: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair {
    key: String,
    value: Option<String>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
}

fn decode(v: &Option<String>) -> Result<Vec<u8>> {
    match v {
        None => Ok(Vec::new()),
        Some(s) => {
            base64::engine::general_purpose::STANDARD.decode(s).context("the API sent a value that is not base64")
        }
    }
}

pub async fn run(addr: &str, cmd: KvCmd) -> Result<()> {
    let api = ApiClient::new(addr)?;
    match cmd {
        KvCmd::Get { key, recurse, stale, format } => {
            let mut q = Vec::new();
            if recurse {
                q.push("recurse");
            }
            if stale {
                q.push("stale");
            }
            let path = format!("/v1/kv/{}?{}", encode_key(&key), q.join("&"));
            let Some(pairs) = api.get_json::<Vec<KvPair>>(&path).await? else {
                bail!("no key exists at: {key}");
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&pairs)?),
                Format::Table if recurse => {
                    for p in &pairs {
                        println!("{}:{}", p.key, String::from_utf8_lossy(&decode(&p.value)?));
                    }
                }
                Format::Table => {
                    use std::io::Write;
                    let value = decode(&pairs[0].value)?;
                    let mut out = std::io::stdout().lock();
                    out.write_all(&value)?;
                    if !value.ends_with(b"\n") {
                        out.write_all(b"\n")?;
                    }
                }
            }
        }
        KvCmd::Put { key, value, cas, flags } => {
            let body = match value.as_deref() {
                None | Some("-") => {
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf).context("reading the value from stdin")?;
                    buf
                }
                Some(v) => v.as_bytes().to_vec(),
            };
            let mut q = Vec::new();
            if let Some(c) = cas {
                q.push(format!("cas={c}"));
            }
            if let Some(f) = flags {
                q.push(format!("flags={f}"));
            }
            let path = format!("/v1/kv/{}?{}", encode_key(&key), q.join("&"));
            let ok: bool = match api.send(Method::PUT, &path, Some(body)).await? {
                Some(b) => serde_json::from_slice(&b).context("unexpected answer to PUT")?,
                None => bail!("the API answered 404 to PUT {path}"),
            };
            if !ok {
                bail!("did not write to {key}: CAS failed (the key's ModifyIndex is not {})", cas.unwrap_or(0));
            }
            println!("Success! Data written to: {key}");
        }
        KvCmd::Delete { key, recurse, cas } => {
            let mut q = Vec::new();
            if recurse {
                q.push("recurse".to_string());
            }
            if let Some(c) = cas {
                q.push(format!("cas={c}"));
            }
            let path = format!("/v1/kv/{}?{}", encode_key(&key), q.join("&"));
            let ok: bool = match api.send(Method::DELETE, &path, None).await? {
                Some(b) => serde_json::from_slice(&b).context("unexpected answer to DELETE")?,
                None => bail!("the API answered 404 to DELETE {path}"),
            };
            if !ok {
                bail!("did not delete {key}: CAS failed (the key's ModifyIndex is not {})", cas.unwrap_or(0));
            }
            if recurse {
                println!("Success! Deleted keys with prefix: {key}");
            } else {
                println!("Success! Deleted key: {key}");
            }
        }
        KvCmd::Ls { prefix, stale, format } => {
            let path = format!("/v1/kv/{}?keys&separator=/{}", encode_key(&prefix), if stale { "&stale" } else { "" });
            let keys = api.get_json::<Vec<String>>(&path).await?.unwrap_or_default();
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&keys)?),
                Format::Table => {
                    for k in keys {
                        println!("{k}");
                    }
                }
            }
        }
    }
    Ok(())
}
