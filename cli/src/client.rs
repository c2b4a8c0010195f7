//! The CLI's client of the Shoal HTTP API is the API crate's ([`shoal_api::client`]): configured from
//! `SHOAL_TLS_DIR` and `SHOAL_HTTP_TOKEN`, with errors that say what to do.

pub use shoal_api::client::{ApiClient, encode_key};
