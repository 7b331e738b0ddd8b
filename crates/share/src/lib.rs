//! The share service: one lifecycle for every front-end.
//!
//! A share is a sub-directory of the filesystem with its own project ID, a hard block quota,
//! optional inode limit, and access rules enforced as nodemaps. The CSI driver, the share CLI
//! (and through it Manila) and the operator all call [`ShareService`]; none of them knows
//! which backend is underneath.
//!
//! Must never: branch on which backend it runs on (it asks capabilities), or leave a share
//! half-made: every step is idempotent and a failed create rolls back.

pub mod access;
mod allocator;
pub mod config;
mod error;
mod layout;
mod lock;
pub mod model;
mod record;
mod service;
pub mod sizes;
pub mod tenant;

pub use config::{Config, ShareSettings};
pub use error::{Result, ShareError};
/// The share service's own directory under the prefix (records, claims, locks, trash);
/// other services keep their per-share state there too.
pub use layout::META_DIR;
pub use lock::{Held, now_secs};
pub use model::*;
pub use service::ShareService;
