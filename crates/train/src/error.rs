//! The crate's error type. Every variant names the file, key or value that failed.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file or value is invalid; `location` is `FILE` or `FILE:LINE`.
    #[error("{location}: {message}")]
    Config { location: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: cannot decode image: {message}", path.display())]
    Image { path: PathBuf, message: String },
    #[error("dataset {}: {message}", root.display())]
    Dataset { root: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn dataset(root: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Dataset {
            root: root.into(),
            message: message.into(),
        }
    }
}
