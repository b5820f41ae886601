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
}
