//! The errors of the CSI driver, and the one place where each becomes a gRPC code.
//!
//! The spec fixes the code per RPC and condition: missing or malformed arguments are
//! INVALID_ARGUMENT, unknown volumes NOT_FOUND, an incompatible re-create ALREADY_EXISTS, a
//! call on a volume with another call in flight ABORTED, a capacity outside the range
//! OUT_OF_RANGE. Handlers return [`CsiError`]; only `From<CsiError> for Status` picks codes.

use backend::BackendError;
use share::ShareError;
use thiserror::Error;
use tonic::{Code, Status};

pub type Result<T, E = CsiError> = std::result::Result<T, E>;

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
    #[error("{0}")]
    Unsupported(String),
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
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl CsiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
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
            Self::Unsupported(_) => Code::Unimplemented,
            Self::Config(_) | Self::Internal(_) | Self::Transport(_) | Self::Io(_) => {
                Code::Internal
            }
            Self::Share(e) => share_code(e),
            Self::Backend(e) => backend_code(e),
        }
    }
}

fn share_code(error: &ShareError) -> Code {
    match error {
        ShareError::InvalidArgument(_) | ShareError::Model(_) => Code::InvalidArgument,
        ShareError::NotFound { .. } => Code::NotFound,
        // Create is the only caller that can meet it: same name, other parameters.
        ShareError::Conflict { .. } => Code::AlreadyExists,
        ShareError::ShrinkBelowUsage { .. } => Code::FailedPrecondition,
        ShareError::ProjectIdsExhausted { .. } => Code::ResourceExhausted,
        ShareError::ProjectIdsInUse { .. } | ShareError::AccessConflict { .. } => {
            Code::FailedPrecondition
        }
        ShareError::Busy { .. } => Code::Aborted,
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
        BackendError::Unsupported { .. } => Code::InvalidArgument,
        BackendError::Timeout { .. } => Code::DeadlineExceeded,
        BackendError::Io { source, .. } => match source.raw_os_error() {
            Some(libc::EDQUOT) | Some(libc::ENOSPC) => Code::ResourceExhausted,
            Some(libc::ENOENT) => Code::NotFound,
            Some(libc::EPERM) | Some(libc::EACCES) => Code::PermissionDenied,
            _ => Code::Internal,
        },
        _ => Code::Internal,
    }
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
}
