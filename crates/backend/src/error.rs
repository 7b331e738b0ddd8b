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
    /// The feature exists in a later release than the one running.
    #[error("{what} needs {needed}: {why}")]
    NeedsVersion {
        what: &'static str,
        needed: String,
        why: String,
    },
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A mount reached a directory that is not the volume's: its root shows another project
    /// ID than the volume's. It was not left visible.
    #[error(
        "{path}: the mounted directory has project ID {found}, not the volume's {expected}; \
         it is not this volume (another tenant's directory of the same name?), so it was refused"
    )]
    WrongDirectory {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    /// Work on the blocking pool panicked (a bug, not a property of the filesystem).
    #[error("{task} panicked: {message}")]
    Panic { task: String, message: String },
}

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
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

    /// A blocking task that ended without its result: [`BackendError::Panic`] when it
    /// panicked; otherwise the runtime cancelled it (it is shutting down), reported as
    /// `InvalidState("{what} failed: {join error}")`.
    pub fn from_join(what: &str, join: tokio::task::JoinError) -> Self {
        match join.try_into_panic() {
            Ok(payload) => Self::Panic {
                task: what.to_string(),
                message: panic_message(payload.as_ref()),
            },
            Err(join) => Self::InvalidState(format!("{what} failed: {join}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_blocking_task_is_a_panic() {
        let join = tokio::task::spawn_blocking(|| -> () { panic!("boom {}", 7) })
            .await
            .expect_err("it panicked");
        let err = BackendError::from_join("stat /x", join);
        assert!(
            matches!(&err, BackendError::Panic { task, message } if task == "stat /x" && message == "boom 7"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "stat /x panicked: boom 7");
        let join = tokio::task::spawn_blocking(|| -> () { std::panic::panic_any(42u8) })
            .await
            .expect_err("it panicked");
        assert!(matches!(
            BackendError::from_join("t", join),
            BackendError::Panic { message, .. } if message == "a panic without a message"
        ));
    }
}
