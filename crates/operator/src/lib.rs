//! The Kubernetes operator (kube-rs): the `LustreFileSystem` CRD and its controller, which
//! exposes a Lustre filesystem to namespaces through PV/PVC pairs that are static volumes of
//! our CSI driver. It also serves HPE's `lus.cray.hpe.com` `LustreFileSystem` as it is
//! ([`hpe`]), with the same reconcile.
//!
//! It also runs `DataMovement` copies between a filesystem's directory and an object store
//! (through the HSM engine's copy, never anything else that touches file data).
//!
//! It must never delete file data or mount anything: it writes only the Kubernetes objects it
//! labels as its own, and a copy only adds or replaces entries at its destination. Its PVs
//! are `Retain`, so deleting a resource never deletes data.

pub mod controller;
pub mod copy_job;
pub mod crd;
pub mod hpe;
pub mod lease;
pub mod metrics;
pub mod movement;
pub mod mover;
mod mover_job;
pub mod plan;

pub use controller::{FIELD_MANAGER, FINALIZER, OperatorError, OperatorOptions, Served, run};
pub use crd::{AccessMode, LustreFileSystem, LustreFileSystemSpec, LustreFileSystemStatus};
pub use hpe::HpeLustreFileSystem;
pub use lease::{LeaseConfig, LeaseError, run_elected};
pub use metrics::Metrics;
pub use movement::{DataMovement, DataMovementSpec, DataMovementStatus};
pub use mover::{MoverOptions, Runner};
