//! The Kubernetes operator (kube-rs): the `LustreFileSystem` CRD and its controller, which
//! exposes a Lustre filesystem to namespaces through PV/PVC pairs that are static volumes of
//! our CSI driver. It also serves HPE's `lus.cray.hpe.com` `LustreFileSystem` as it is
//! ([`hpe`]), with the same reconcile.
//!
//! It must never touch file data or mount anything: it only writes Kubernetes objects, and
//! only the ones it labels as its own. Its PVs are `Retain`, so deleting a resource never
//! deletes data.

pub mod controller;
pub mod crd;
pub mod hpe;
pub mod metrics;
pub mod plan;

pub use controller::{FIELD_MANAGER, FINALIZER, OperatorError, OperatorOptions, Served, run};
pub use crd::{AccessMode, LustreFileSystem, LustreFileSystemSpec, LustreFileSystemStatus};
pub use hpe::HpeLustreFileSystem;
pub use metrics::Metrics;
