//! The typed errors of the data mover. Each says which file, object or store it is about.

use std::path::PathBuf;

use thiserror::Error;

pub type Result<T, E = HsmError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum HsmError {
    #[error("invalid store spec `{spec}`: {why}")]
    StoreSpec { spec: String, why: String },
    /// The store failed (after the client's own retries with backoff).
    #[error("store {store}: {op} `{key}` failed: {source}")]
    Store {
        store: String,
        op: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
    #[error("{path}: checksum mismatch: the archive records {expected}, the object has {actual}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: modified while it was being archived; not marked archived")]
    ModifiedDuringArchive { path: PathBuf },
    #[error("{path}: refused: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("{path}: not beneath the namespace root {root}")]
    OutsideRoot { path: PathBuf, root: PathBuf },
    #[error("object `{key}`: unsafe name: {why}")]
    HostileName { key: String, why: String },
    #[error("`{key}`: no archived copy in {store}")]
    NoArchive { store: String, key: String },
    #[error("`{key}`: bad metadata `{field}`: {why}")]
    Metadata {
        key: String,
        field: String,
        why: String,
    },
    #[error("{path}: already exists (conflict mode {mode})")]
    Conflict { path: PathBuf, mode: &'static str },
    #[error("stopped after {count} errors (max_errors {max})")]
    TooManyErrors { count: usize, max: usize },
    #[error("policy: {0}")]
    Policy(String),
    #[error("{0}")]
    Unsupported(String),
    /// Work on the blocking pool panicked (a bug, not a property of the file or store).
    #[error("{task} panicked: {message}")]
    Panic { task: String, message: String },
}

/// How a store refused a request, for callers that answer each differently (the CSI
/// driver: a missing container or refused credentials is the request's fault, anything else
/// may pass on a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRefusal {
    /// No such container, bucket or object.
    NotFound,
    /// The credentials were refused, or allow no such request.
    Denied,
}

impl HsmError {
    /// Why the store refused, when this is a store error that says so; `None` for other
    /// errors and for store failures (connection refused, timeouts, 5xx) that may pass.
    pub fn store_refusal(&self) -> Option<StoreRefusal> {
        match self {
            Self::Store { source, .. } => match source.as_ref() {
                object_store::Error::NotFound { .. } => Some(StoreRefusal::NotFound),
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => Some(StoreRefusal::Denied),
                // The cloud clients report some refusals (Azure's list, for one) as generic
                // errors whose text carries the HTTP status; the status type is private.
                object_store::Error::Generic { source, .. } => {
                    let text = source.to_string();
                    if text.contains("status code: 401") || text.contains("status code: 403") {
                        Some(StoreRefusal::Denied)
                    } else if text.contains("status code: 404") {
                        Some(StoreRefusal::NotFound)
                    } else {
                        None
                    }
                }
                _ => None,
            },
            _ => None,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub fn refused(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        Self::Refused {
            path: path.into(),
            why: why.into(),
        }
    }

    /// A blocking task that ended without its result: [`HsmError::Panic`] when it
    /// panicked; otherwise the runtime cancelled it (it is shutting down).
    pub fn from_join(what: &str, join: tokio::task::JoinError) -> Self {
        match join.try_into_panic() {
            Ok(payload) => Self::Panic {
                task: what.to_string(),
                message: backend::panic_message(payload.as_ref()),
            },
            Err(join) => Self::Unsupported(format!("{what} failed: {join}")),
        }
    }

    /// A short machine-readable name of the error kind, for reports and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::StoreSpec { .. } => "store_spec",
            Self::Store { .. } => "store",
            Self::Io { .. } => "io",
            Self::Backend(_) => "backend",
            Self::Checksum { .. } => "checksum",
            Self::ModifiedDuringArchive { .. } => "modified_during_archive",
            Self::Refused { .. } => "refused",
            Self::OutsideRoot { .. } => "outside_root",
            Self::HostileName { .. } => "hostile_name",
            Self::NoArchive { .. } => "no_archive",
            Self::Metadata { .. } => "metadata",
            Self::Conflict { .. } => "conflict",
            Self::TooManyErrors { .. } => "too_many_errors",
            Self::Policy(_) => "policy",
            Self::Unsupported(_) => "unsupported",
            Self::Panic { .. } => "panic",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_refusals_are_told_from_failures_that_may_pass() {
        let store = |source: object_store::Error| HsmError::Store {
            store: "az://c".into(),
            op: "list",
            key: "p".into(),
            source: Box::new(source),
        };
        let generic = |text: &str| object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: text.to_string().into(),
        };
        assert_eq!(
            store(generic(
                "Error performing GET http://x in 3ms - Server returned non-2xx status code: 403 Forbidden: <Error>"
            ))
            .store_refusal(),
            Some(StoreRefusal::Denied)
        );
        assert_eq!(
            store(generic(
                "Server returned non-2xx status code: 404 Not Found"
            ))
            .store_refusal(),
            Some(StoreRefusal::NotFound)
        );
        assert_eq!(
            store(generic("error sending request: Connection refused")).store_refusal(),
            None
        );
        let missing = object_store::Error::NotFound {
            path: "p".into(),
            source: "gone".into(),
        };
        assert_eq!(store(missing).store_refusal(), Some(StoreRefusal::NotFound));
        assert_eq!(HsmError::Policy("x".into()).store_refusal(), None);
    }

    #[tokio::test]
    async fn a_panicking_blocking_task_is_a_panic() {
        let err = crate::engine::blocking(|| -> Result<()> { panic!("boom") })
            .await
            .expect_err("it panicked");
        assert!(
            matches!(&err, HsmError::Panic { message, .. } if message == "boom"),
            "{err:?}"
        );
        assert_eq!(err.kind(), "panic");
        assert_eq!(err.to_string(), "blocking task panicked: boom");
    }
}
