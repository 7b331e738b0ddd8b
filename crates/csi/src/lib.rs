//! The lustrekit CSI driver: CSI spec v1.12 (package `csi.v1`) over a unix socket.
//!
//! Each PersistentVolume is a share: a sub-directory of a Lustre filesystem (or of the
//! `local` backend's root) with its own project ID and quota, made and removed through the
//! share service. The node publishes without staging.
//!
//! - [`grpc`]: the generated types, from our own `proto/csi.proto`;
//! - [`csi_server`]: Identity, Controller and Node, one file each;
//! - [`params`], [`capacity`], [`volume`]: StorageClass parameters, sizes, volume IDs and
//!   contexts, with no I/O;
//! - [`node_ops`]: the node's target-path steps;
//! - [`server`]: the socket, metrics and shutdown; [`run`] is the binary's entry point;
//! - [`authority`]: the relay in front of h2 that accepts clients sending the socket path as
//!   `:authority` (gRPC C-core, grpc-java).

pub mod args;
pub mod authority;
pub mod capacity;
pub mod csi_server;
pub mod error;
pub mod grpc;
pub mod inflight;
pub mod metrics;
pub mod node_ops;
pub mod params;
pub mod registration;
pub mod server;
pub mod stats;
pub mod volume;

use std::sync::Arc;

pub use args::{CsiArgs, Mode};
pub use csi_server::{Driver, DriverOptions};
pub use error::{CsiError, Result};

/// `lustrekit csi`: loads the configuration (the same TOML the share service reads), opens
/// the backend and the share service, and serves until SIGTERM or SIGINT.
pub async fn run(args: CsiArgs, config: &std::path::Path) -> Result<()> {
    let socket = args.socket_path()?;
    let metrics_addr = args.metrics_addr()?;
    let node_id = if args.mode.node() {
        args.node_id()?
    } else {
        args.node_id().unwrap_or_default()
    };
    let registration = args.registration.plan(&args.driver_name, args.mode)?;
    let config = share::Config::load(config)?;
    let settings = config.settings()?;
    let fs = config.open_backend().await?;
    let service = Arc::new(share::ShareService::open(fs, settings).await?);
    let driver = Driver::new(
        service,
        DriverOptions {
            name: args.driver_name.clone(),
            node_id,
            mode: args.mode,
            fs_timeout: args.fs_timeout(),
            quota_margin: args.quota_margin,
        },
    );
    registration::serve_registered(
        registration,
        driver,
        &socket,
        metrics_addr,
        server::shutdown_signal(),
    )
    .await
}
