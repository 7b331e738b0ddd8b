//! The storage backends of lustrekit.
//!
//! Everything above this crate talks to one [`Filesystem`] trait. Two implementations stand
//! behind it:
//! - [`lustre`]: drives a real Lustre through `lfs`, `lctl` and `mount -t lustre`, run by a
//!   [`lustre::runner::CommandRunner`] locally or over SSH to the MGS/MDS;
//! - [`local`]: the embedded default, on any Linux directory. On btrfs each share is a
//!   subvolume whose qgroup limit the kernel enforces; elsewhere usage is only accounted, and
//!   [`Capabilities`] says so.
//!
//! Must never: follow a path a tenant can change (resolve beneath a trusted root fd), run a
//! command without a timeout, or decide anything a caller should decide from capabilities.

pub mod block;
mod error;
mod filesystem;
pub mod fscrypt;
pub mod local;
pub mod lustre;
pub mod mount;

pub use error::{BackendError, Result, panic_message};
pub use filesystem::{
    BackendKind, Capabilities, Capacity, ClientParams, DataVersion, DirInfo, DirSpec, Encryption,
    Filesystem, Hsm, HsmAccessState, MountMode, MountRequest, Mounts, Namespace, NodemapChange,
    Nodemaps, Pcc, QuotaEnforcement, Quotas, ReleaseInProgress, RootProjectQuota, VolumeStatfs,
};
