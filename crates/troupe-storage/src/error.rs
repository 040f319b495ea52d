//! Storage errors. The HTTP layer maps each variant to one Apify error type.

/// What went wrong in a storage call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The addressed thing does not exist (the message names it).
    #[error("{0}")]
    NotFound(String),
    /// A uniqueness rule was broken (duplicate name...).
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but not acceptable in the current state.
    #[error("{0}")]
    Invalid(String),
    /// Anything else: I/O, database corruption, a bug.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::Internal(err.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Internal(err.into())
    }
}
