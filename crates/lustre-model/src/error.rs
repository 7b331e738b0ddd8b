//! Error types shared by every module: [`ModelError`] for rejected values and
//! [`ParseError`] for command output that does not match the documented format.

use thiserror::Error;

/// A value was rejected by validation (a name, an ID, a NID, a size, ...).
///
/// Every variant names the offending value and says why it was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// A Lustre filesystem name (`fsname`) is not valid.
    #[error("invalid Lustre filesystem name {value:?}: {reason}")]
    InvalidFsName {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A user-supplied path component (share name) is not valid.
    #[error("invalid share name {value:?}: {reason}")]
    InvalidShareName {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A relative path is not valid.
    #[error("invalid relative path {value:?}: {reason}")]
    InvalidRelPath {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A nodemap name is not valid.
    #[error("invalid nodemap name {value:?}: {reason}")]
    InvalidNodemapName {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An LNet network name (`tcp`, `o2ib3`) is not valid or not supported.
    #[error("invalid LNet network {value:?}: {reason}")]
    InvalidNet {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A NID (`192.168.0.1@tcp`) is not valid.
    #[error("invalid NID {value:?}: {reason}")]
    InvalidNid {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A NID range (CIDR or `lctl` range expression) is not valid or cannot be expressed.
    #[error("invalid NID range {value:?}: {reason}")]
    InvalidNidRange {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A project ID or project ID range is not valid.
    #[error("invalid project ID {value:?}: {reason}")]
    InvalidProjectId {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A byte size is not valid.
    #[error("invalid size {value:?}: {reason}")]
    InvalidSize {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A quota grace time is not valid.
    #[error("invalid grace time {value:?}: {reason}")]
    InvalidGrace {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A volume ID is not valid.
    #[error("invalid volume ID {value:?}: {reason}")]
    InvalidVolumeId {
        /// The rejected input.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// Command output did not match the documented format.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot parse `{what}` output at line {line}: {message}")]
pub struct ParseError {
    /// Which command output was being parsed (e.g. `"lfs quota"`).
    pub what: &'static str,
    /// 1-based line number of the offending line; 0 when the problem concerns the input as a whole.
    pub line: usize,
    /// What was wrong, naming the offending text.
    pub message: String,
}

impl ParseError {
    /// Builds a parse error for `what` at 1-based `line`.
    pub fn new(what: &'static str, line: usize, message: impl Into<String>) -> Self {
        Self {
            what,
            line,
            message: message.into(),
        }
    }
}

/// Shorthand constructors used by the validating types.
macro_rules! model_err {
    ($variant:ident, $value:expr, $($reason:tt)+) => {
        $crate::error::ModelError::$variant {
            value: ($value).to_string(),
            reason: format!($($reason)+),
        }
    };
}
pub(crate) use model_err;
