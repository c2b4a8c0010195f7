//! The registry's error type, classified by what the caller should do.

use serde::{Deserialize, Serialize};

/// The message every client sees when no leader can take a write (Consul's wording).
pub const NO_LEADER: &str = "no elected cluster leader";

/// What a manager that is not the leader answers a leader-only request with.
pub const NOT_LEADER: &str = "this manager is not the leader";

/// Errors of registry operations. They cross the cluster RPC, so they are plain data. Callers
/// branch on the variant (or on [`Error::is_retryable`], [`Error::is_not_leader`] ...), never on
/// the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// No leader could be reached in time; the write was not acknowledged (it may still apply).
    #[error("{NO_LEADER}")]
    NoLeader,
    /// This manager is not the leader: forward the request to the leader, or retry once one is elected.
    #[error("{NOT_LEADER}")]
    NotLeader,
    /// A temporary failure: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The request was malformed; it will never succeed as it is.
    #[error("{0}")]
    BadRequest(String),
    /// A value or body is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The caller is not allowed to do this (a bad or rotated join token, ...).
    #[error("{0}")]
    Forbidden(String),
    /// Something is missing.
    #[error("{0}")]
    NotFound(String),
    /// A bug or a broken disk: not the caller's fault.
    #[error("{0}")]
    Internal(String),
    /// The request clashes with what is stored (a taken name, a stale version): read and retry.
    #[error("{0}")]
    Conflict(String),
    /// This node's certificate expired: no node of the cluster accepts it any more, so retrying
    /// cannot help; the operator must rejoin the node (the message says how). Kept last: the
    /// variants' order is their encoding on the cluster port.
    #[error("{0}")]
    CertificateExpired(String),
}

impl Error {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NoLeader | Error::NotLeader | Error::Unavailable(_))
    }

    /// Whether the manager asked is not the leader (the request must go to the leader).
    pub fn is_not_leader(&self) -> bool {
        matches!(self, Error::NotLeader)
    }

    /// Whether the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    /// The HTTP status this error maps to.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::NoLeader | Error::NotLeader | Error::Unavailable(_) => 503,
            Error::BadRequest(_) => 400,
            Error::TooLarge(_) => 413,
            Error::Forbidden(_) | Error::CertificateExpired(_) => 403,
            Error::NotFound(_) => 404,
            Error::Internal(_) => 500,
            Error::Conflict(_) => 409,
        }
    }
}

impl From<shoal_model::Refusal> for Error {
    fn from(r: shoal_model::Refusal) -> Self {
        use shoal_model::RefusalKind;
        match r.kind {
            RefusalKind::NotFound => Error::NotFound(r.message),
            RefusalKind::Conflict => Error::Conflict(r.message),
            RefusalKind::Invalid => Error::BadRequest(r.message),
        }
    }
}

impl From<shoal_model::InvalidInput> for Error {
    fn from(e: shoal_model::InvalidInput) -> Self {
        Error::BadRequest(e.0)
    }
}

impl From<shoal_model::spec::SpecError> for Error {
    fn from(e: shoal_model::spec::SpecError) -> Self {
        Error::BadRequest(e.0)
    }
}
