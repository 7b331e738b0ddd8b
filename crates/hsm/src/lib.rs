//! The HSM data mover of lustrekit.
//!
//! It moves file data between a filesystem namespace and an object store (Azure Blob, S3,
//! GCS, or a local directory, all through the `object_store` crate), and keeps each file's
//! HSM state through the backend's [`backend::Filesystem`] trait:
//!
//! - **archive** streams a file to `<prefix>/<path>` (multipart for large files, memory and
//!   concurrency bounded), with POSIX metadata under the AMLFS key names and our extras
//!   (nanosecond times, xattrs, symlink target, a BLAKE3 checksum, the data version);
//!   the file is marked archived only if its data version did not move during the copy;
//! - **release** frees the data of an archived, unchanged file (and refuses otherwise,
//!   changing nothing);
//! - **restore** fetches with ranged parallel GETs into a temporary file, verifies the
//!   checksum, and renames it over the stub;
//! - **remove** deletes the archived copy; **dirty** marks a changed file;
//! - **import** turns a container or prefix into released stubs, reading every known
//!   metadata dialect; **export** sends what is new or changed.
//!
//! Around it: [`policy`] (rules in TOML, `policy run|watch`), [`restore_daemon`] (restore
//! on access with fanotify pre-content events; [`guard`] says what keeps a released file
//! from reading as zeros) and [`copytool`] (the Lustre HSM coordinator's agent, through
//! `liblustreapi` loaded at run time), and [`pcc`] (the purge of a Persistent Client
//! Cache by access time, and its metrics). The command line, `lustrekit hsm ...`, lives in the
//! binary crate; this crate carries no clap, indicatif or anyhow.
//!
//! Entry point: [`HsmEngine`]. Every operation returns a serde-serialisable report.
//!
//! Must never: release a file without a verified archive of its current data, overwrite or
//! delete an object version a file pins, return bytes it has not checked against the pinned
//! checksum, or trust a tenant's path, name or object metadata as root.

pub mod copytool;
pub mod engine;
pub mod error;
pub mod fanotify;
pub mod gc;
pub mod guard;
pub mod import;
pub mod meta;
pub mod metrics;
pub mod pcc;
pub mod pin;
pub mod policy;
pub mod posix;
pub mod restore_daemon;
pub mod store;
pub mod walk;

pub use engine::{
    CopyCounters, CopyProgress, EngineConfig, FileOp, HsmEngine, OpReport, Outcome, PathError,
    Progress, ProgressFn, StateReport, TreeOp, TreeReport,
};
pub use error::{HsmError, Result, StoreRefusal};
pub use import::{ConflictMode, ImportOptions, ImportReport};
pub use meta::{EntryKind, FileMeta};
pub use metrics::Metrics;
pub use store::{ArchiveStore, RetryPolicy};
