//! The Kubernetes operator (kube-rs): the `LustreFileSystem` CRD and its controller, which
//! exposes a Lustre filesystem to namespaces through PV/PVC pairs that are static volumes of
//! our CSI driver.
//!
//! It must never touch file data or mount anything: it only writes Kubernetes objects, and
//! only the ones it labels as its own. Its PVs are `Retain`, so deleting a resource never
//! deletes data.

pub mod controller;
pub mod crd;
pub mod lease;
pub mod plan;

pub use controller::{FIELD_MANAGER, FINALIZER, OperatorError, OperatorOptions, run};
pub use crd::{AccessMode, LustreFileSystem, LustreFileSystemSpec, LustreFileSystemStatus};
pub use lease::{LeaseConfig, LeaseError, run_elected};
