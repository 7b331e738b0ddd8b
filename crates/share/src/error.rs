//! The typed errors of the share service. Front-ends map each variant to their own codes
//! (gRPC status, CLI exit code) in one place each.

use backend::BackendError;
use lustre_model::ModelError;
use thiserror::Error;

pub type Result<T, E = ShareError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum ShareError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("share {share:?} not found")]
    NotFound { share: String },
    #[error("share {share:?} already exists with different parameters: {message}")]
    Conflict { share: String, message: String },
    #[error(
        "cannot shrink share {share:?} to {requested_bytes} bytes: it already uses {used_bytes} bytes"
    )]
    ShrinkBelowUsage {
        share: String,
        used_bytes: u64,
        requested_bytes: u64,
    },
    #[error("project ID range {range} is exhausted: every ID in it is claimed")]
    ProjectIdsExhausted { range: String },
    #[error("project ID range {range} overlaps IDs already in use: {in_use}")]
    ProjectIdsInUse { range: String, in_use: String },
    #[error("share {share:?} is busy: another operation holds it")]
    Busy { share: String },
    /// The share is still being created or deleted (by another call, or by one that was
    /// interrupted and that the next create, delete or `ensure` finishes): retry later.
    /// gRPC: ABORTED, never ALREADY_EXISTS.
    #[error(
        "share {share:?} is {state}: a create or delete is in progress or was interrupted; retry, or run ensure"
    )]
    InProgress { share: String, state: String },
    #[error(
        "access rule {rule} conflicts with nodemap {nodemap}: a client can be in one nodemap only"
    )]
    AccessConflict { rule: String, nodemap: String },
    /// The tenant's shares would together exceed its quota. gRPC: RESOURCE_EXHAUSTED.
    #[error(
        "tenant {tenant:?} has a quota of {quota_bytes} bytes; its shares hold {provisioned_bytes}, so {requested_bytes} more do not fit"
    )]
    TenantQuotaExceeded {
        tenant: String,
        quota_bytes: u64,
        provisioned_bytes: u64,
        requested_bytes: u64,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl ShareError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    /// A short stable code for scripts (`--json` errors and exit codes).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) | Self::Model(_) => "invalid_argument",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::ShrinkBelowUsage { .. } => "shrink_below_usage",
            Self::ProjectIdsExhausted { .. } => "project_ids_exhausted",
            Self::ProjectIdsInUse { .. } => "project_ids_in_use",
            // Retry later, as for a held lock (exit 4 in the CLI).
            Self::Busy { .. } | Self::InProgress { .. } => "busy",
            Self::AccessConflict { .. } => "access_conflict",
            Self::TenantQuotaExceeded { .. } => "tenant_quota_exceeded",
            Self::Config(_) => "config",
            Self::Backend(_) => "backend",
        }
    }
}
