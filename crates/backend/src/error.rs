//! The typed errors of every backend.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: already exists")]
    AlreadyExists { path: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed; `stderr` is what Lustre (or the tool) said.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {after:?}")]
    Timeout { command: String, after: Duration },
    #[error("ssh to {host}: {message}")]
    Ssh { host: String, message: String },
    #[error("cannot parse the output of `{command}`: {source}")]
    Parse {
        command: String,
        #[source]
        source: lustre_model::ParseError,
    },
    #[error(transparent)]
    Model(#[from] lustre_model::ModelError),
    #[error("{what} is not supported: {why}")]
    Unsupported { what: &'static str, why: String },
    #[error("invalid state: {0}")]
    InvalidState(String),
}

impl BackendError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub fn unsupported(what: &'static str, why: impl Into<String>) -> Self {
        Self::Unsupported {
            what,
            why: why.into(),
        }
    }

    /// The errno behind an I/O error, if there is one (EDQUOT, ENOSPC, ...).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
