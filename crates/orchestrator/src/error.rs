//! The orchestrator's errors; each names the file, key, trial or path concerned.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec problem: `location` is `FILE` or `FILE:LINE`.
    #[error("{location}: {message}")]
    Spec { location: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("results database: {0}")]
    Store(String),
    /// A fault of the machine, not of a trial (a full disk, an I/O error, an
    /// unwritable folder, the database unavailable): see [`crate::fault`].
    #[error("{0}")]
    Fault(String),
    /// The database is unavailable for now (a lost connection, a server
    /// restarting): retried within the lease (see [`crate::retry`]).
    #[error("{0}")]
    Unavailable(String),
    #[error("worker: {0}")]
    Worker(String),
    #[error(transparent)]
    Train(#[from] sweep_train::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Whether the error is the user's input (exit code 2) rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Spec { .. })
    }

    /// Whether the error is a fault of the machine (see [`crate::fault`]).
    pub fn is_fault(&self) -> bool {
        match self {
            Error::Fault(_) | Error::Unavailable(_) => true,
            Error::Io { source, .. } => crate::fault::of_io(source).is_some(),
            // an I/O error inside the training crate's error, or in text
            other => crate::fault::of_message(&other.to_string()).is_some(),
        }
    }
}
