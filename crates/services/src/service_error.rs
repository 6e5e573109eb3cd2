//! `ServiceError`: what a component (the IPAM replica, the tenant store, authentication's state)
//! says went wrong, in the domain's words and with the data. Knows nothing of HTTP: `error.rs`
//! is the one place that turns it into a status and a JSON body.

use romana_ipam::IpamError;
use romana_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The object asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change collides with what is stored (taken name, changed meanwhile, no number left).
    #[error("{0}")]
    Conflict(String),
    /// Nothing was changed and the caller may try again (contention, a replica reloading).
    #[error("{0}")]
    Unavailable(String),
    /// The input is wrong; `details` lists every problem.
    #[error("{message}")]
    Invalid { message: String, details: Vec<String> },
    /// The credentials do not prove who the caller is.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Stored data or local state is broken (not the caller's fault).
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn invalid(message: impl Into<String>, details: Vec<String>) -> ServiceError {
        ServiceError::Invalid { message: message.into(), details }
    }
}
