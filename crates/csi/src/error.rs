//! The errors of the CSI driver, and the one place where each becomes a gRPC code.
//!
//! The spec fixes the code per RPC and condition: missing or malformed arguments are
//! INVALID_ARGUMENT, unknown volumes NOT_FOUND, an incompatible re-create ALREADY_EXISTS, a
//! call on a volume with another call in flight ABORTED, a capacity outside the range
//! OUT_OF_RANGE. Handlers return [`CsiError`]; only `From<CsiError> for Status` picks codes.
//!
//! Beyond the spec's table, the codes tell the sidecar whether to retry:
//! - a share another operation is still creating or deleting is ABORTED (retry soon), never
//!   ALREADY_EXISTS (which the provisioner takes as final);
//! - a server that cannot be reached (SSH failing, a command that could not be started or
//!   was lost), or a filesystem call that timed out, is UNAVAILABLE or DEADLINE_EXCEEDED;
//! - a feature the driver or backend does not offer is INVALID_ARGUMENT, whoever says so
//!   ([`UNSUPPORTED`]): the request asks for something this driver will never do.

use backend::BackendError;
use backend::mount::FsCallError;
use share::ShareError;
use thiserror::Error;
use tonic::{Code, Status};

pub type Result<T, E = CsiError> = std::result::Result<T, E>;

/// The one code for "not supported", from the driver or from a backend.
pub const UNSUPPORTED: Code = Code::InvalidArgument;

#[derive(Debug, Error)]
pub enum CsiError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("an operation on {0} is already in progress")]
    InFlight(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A tenant's volume on a node that is not the tenant's.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unsupported(String),
    /// A call touching the filesystem did not finish in time; the path is in the message.
    #[error("{0}")]
    Timeout(String),
    /// A path is known to hang (an earlier call on it has not returned): refused at once.
    #[error("{0}")]
    Unavailable(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Model(#[from] lustre_model::ModelError),
    /// The key server (see [`crate::kmip`]).
    #[error(transparent)]
    Kmip(#[from] crate::kmip::KmipError),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// An error, and what the clean-up after it could not do (a volume key left in the key
    /// server, named by its KMIP ID only): the code stays the error's.
    #[error("{source}; {note}")]
    Noted { source: Box<CsiError>, note: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl From<FsCallError> for CsiError {
    fn from(error: FsCallError) -> Self {
        match error {
            FsCallError::TimedOut { .. } => Self::Timeout(error.to_string()),
            FsCallError::Hung { .. } | FsCallError::Busy { .. } => {
                Self::Unavailable(error.to_string())
            }
            FsCallError::Lost { .. } => Self::Internal(error.to_string()),
        }
    }
}

impl CsiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<std::path::PathBuf>, source: impl Into<std::io::Error>) -> Self {
        Self::Io {
            path: path.into(),
            source: source.into(),
        }
    }

    /// The gRPC code the spec asks for.
    pub fn code(&self) -> Code {
        match self {
            Self::Missing(_) | Self::InvalidArgument(_) | Self::Model(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::OutOfRange(_) => Code::OutOfRange,
            Self::InFlight(_) | Self::Aborted(_) => Code::Aborted,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Unsupported(_) => UNSUPPORTED,
            Self::Timeout(_) => Code::DeadlineExceeded,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Config(_) | Self::Internal(_) | Self::Transport(_) | Self::Io { .. } => {
                Code::Internal
            }
            Self::Share(e) => share_code(e),
            Self::Backend(e) => backend_code(e),
            Self::Kmip(e) => kmip_code(e),
            Self::Noted { source, .. } => source.code(),
        }
    }
}

fn share_code(error: &ShareError) -> Code {
    match error {
        ShareError::InvalidArgument(_) | ShareError::Model(_) => Code::InvalidArgument,
        ShareError::NotFound { .. } => Code::NotFound,
        ShareError::Conflict { message, .. } if in_progress(message) => Code::Aborted,
        // Same name, other parameters.
        ShareError::Conflict { .. } => Code::AlreadyExists,
        ShareError::ShrinkBelowUsage { .. } => Code::FailedPrecondition,
        ShareError::ProjectIdsExhausted { .. } | ShareError::TenantQuotaExceeded { .. } => {
            Code::ResourceExhausted
        }
        ShareError::ProjectIdsInUse { .. } | ShareError::AccessConflict { .. } => {
            Code::FailedPrecondition
        }
        ShareError::Busy { .. } | ShareError::InProgress { .. } => Code::Aborted,
        ShareError::Config(_) => Code::Internal,
        ShareError::Backend(e) => backend_code(e),
    }
}

fn backend_code(error: &BackendError) -> Code {
    match error {
        BackendError::NotFound { .. } => Code::NotFound,
        BackendError::AlreadyExists { .. } => Code::AlreadyExists,
        BackendError::Model(_) => Code::InvalidArgument,
        // A mount option a bind mount cannot honour, for example.
        BackendError::Unsupported { .. } => UNSUPPORTED,
        // The request is fine; the filesystem's release is too old for it.
        BackendError::NeedsVersion { .. } => Code::FailedPrecondition,
        BackendError::Timeout { .. } => Code::DeadlineExceeded,
        // What the node reached is not the volume: not this node's to see.
        BackendError::WrongDirectory { .. } => Code::PermissionDenied,
        // The server could not be reached: the sidecar retries with backoff.
        BackendError::Ssh { .. } => Code::Unavailable,
        BackendError::Command { status, .. } if transport_failure(status) => Code::Unavailable,
        BackendError::Io { source, .. } => match source.raw_os_error() {
            Some(libc::EDQUOT) | Some(libc::ENOSPC) => Code::ResourceExhausted,
            Some(libc::ENOENT) => Code::NotFound,
            Some(libc::EPERM) | Some(libc::EACCES) => Code::PermissionDenied,
            _ => Code::Internal,
        },
        _ => Code::Internal,
    }
}

fn kmip_code(error: &crate::kmip::KmipError) -> Code {
    use crate::kmip::KmipError;
    match error {
        // The key server is down or slow: the CO retries with backoff.
        KmipError::Unavailable { .. } => Code::Unavailable,
        // The volume's key is gone or revoked: nothing a retry fixes, and no data is shown.
        KmipError::KeyNotFound { .. } | KmipError::KeyNotActive { .. } => Code::FailedPrecondition,
        KmipError::Credentials { .. } => Code::InvalidArgument,
        KmipError::Tls { .. } => Code::PermissionDenied,
        KmipError::Server { .. } => Code::Internal,
    }
}

/// A share record that is neither ready nor gone: another create or delete is on it, or one
/// was interrupted and the next call finishes it. The share service says so with a
/// `Conflict` whose message names the state (`it is Creating; ...`).
fn in_progress(message: &str) -> bool {
    ["it is Creating", "it is Deleting"]
        .iter()
        .any(|state| message.starts_with(state))
}

/// A command that never ran to an exit status: it could not be started, or its process was
/// lost. A command that ran and failed is the tool's answer, not a transport failure.
fn transport_failure(status: &str) -> bool {
    matches!(status, "not started" | "lost")
}

impl From<CsiError> for Status {
    fn from(error: CsiError) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        assert_eq!(
            Status::from(CsiError::Missing("volume_id")).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            Status::from(CsiError::InFlight("v".into())).code(),
            Code::Aborted
        );
        let conflict = ShareError::Conflict {
            share: "a".into(),
            message: "m".into(),
        };
        assert_eq!(
            Status::from(CsiError::from(conflict)).code(),
            Code::AlreadyExists
        );
        let quota = BackendError::io("/x", std::io::Error::from_raw_os_error(libc::EDQUOT));
        assert_eq!(
            Status::from(CsiError::from(ShareError::from(quota))).code(),
            Code::ResourceExhausted
        );
        let busy = ShareError::Busy { share: "a".into() };
        assert_eq!(Status::from(CsiError::from(busy)).code(), Code::Aborted);
        let gone = ShareError::NotFound { share: "a".into() };
        assert_eq!(Status::from(CsiError::from(gone)).code(), Code::NotFound);
    }

    fn code_of(error: impl Into<CsiError>) -> Code {
        Status::from(error.into()).code()
    }

    #[test]
    fn a_share_in_progress_is_aborted_not_already_exists() {
        for state in ["Creating", "Deleting"] {
            let conflict = ShareError::Conflict {
                share: "a".into(),
                message: format!("it is {state}; retry the interrupted operation or run ensure"),
            };
            assert_eq!(code_of(conflict), Code::Aborted, "{state}");
        }
        let other = ShareError::Conflict {
            share: "a".into(),
            message: "it has 1 bytes and inode limit None, not 2 and None".into(),
        };
        assert_eq!(code_of(other), Code::AlreadyExists);
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let ssh = BackendError::Ssh {
            host: "root@mds1:22".into(),
            message: "connection refused".into(),
        };
        assert_eq!(code_of(ShareError::from(ssh)), Code::Unavailable);
        for status in ["not started", "lost"] {
            let command = BackendError::Command {
                command: "lfs df".into(),
                status: status.into(),
                stderr: "No such file or directory".into(),
            };
            assert_eq!(code_of(command), Code::Unavailable, "{status}");
        }
        // A command that ran and failed is Lustre's answer, not a transport problem.
        let failed = BackendError::Command {
            command: "lfs setquota".into(),
            status: "exit status 1".into(),
            stderr: "Invalid argument".into(),
        };
        assert_eq!(code_of(failed), Code::Internal);
        let timeout = BackendError::Timeout {
            command: "lfs df".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(code_of(timeout), Code::DeadlineExceeded);
    }

    #[test]
    fn unsupported_is_one_code() {
        let backend = BackendError::unsupported("mount option", "flock");
        assert_eq!(code_of(backend), UNSUPPORTED);
        assert_eq!(code_of(CsiError::Unsupported("x".into())), UNSUPPORTED);
        let shared = ShareError::from(BackendError::unsupported("hsm_release", "local"));
        assert_eq!(code_of(shared), UNSUPPORTED);
    }
}
