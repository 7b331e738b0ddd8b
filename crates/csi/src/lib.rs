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
//! - [`hsm_volume`]: CreateVolume's import of an HSM volume's objects as released stubs;
//! - [`pcc_volume`]: the node's registration and purge of a volume's Persistent Client Cache;
//! - [`options`]: what the process is told to do (mode, endpoint, defaults); [`run`] takes
//!   them and is the binary's entry point;
//! - [`server`]: the socket, metrics and shutdown;
//! - [`authority`]: the relay in front of h2 that accepts clients sending the socket path as
//!   `:authority` (gRPC C-core, grpc-java).
//!
//! Must never: run Lustre commands or touch a share's data itself (the share service, the
//! backend and, for an HSM volume's import, the HSM engine do), hold a volume's in-flight claim across an unbounded call, or log a request
//! (it may carry secrets).

pub mod authority;
pub mod capacity;
pub mod client_tunables;
pub mod csi_server;
pub mod encryption;
pub mod error;
pub mod grpc;
pub mod hsm_node;
pub mod hsm_status;
pub mod hsm_volume;
pub mod inflight;
pub mod kmip;
pub mod metrics;
pub mod node_ops;
pub mod node_record;
pub mod options;
pub mod params;
pub mod pcc_node;
pub mod pcc_volume;
pub mod registration;
pub mod server;
pub mod stats;
pub mod tenancy;
pub mod volume;

use std::sync::Arc;

pub use csi_server::{Driver, DriverOptions};
pub use error::{CsiError, Result};
pub use hsm_volume::{DEFAULT_HSM_IMPORT_TIMEOUT, DEFAULT_HSM_IMPORT_TIMEOUT_SECS};
pub use options::{
    DEFAULT_DRIVER_NAME, DEFAULT_FS_TIMEOUT, DEFAULT_FS_TIMEOUT_SECS, Mode, RunOptions,
    node_id_or_host_name, parse_endpoint, parse_metrics_address,
};

/// `lustrekit csi`: loads the configuration (the same TOML the share service reads), opens
/// the backend and the share service, and serves until SIGTERM or SIGINT.
pub async fn run(options: RunOptions, config: &std::path::Path) -> Result<()> {
    run_with(options, config, None).await
}

/// [`run`], with the controller's view of namespaces' tenant labels (the binary's watch of
/// the API server).
pub async fn run_with(
    options: RunOptions,
    config: &std::path::Path,
    namespace_tenants: Option<Arc<dyn tenancy::NamespaceTenants>>,
) -> Result<()> {
    let node_id = if options.mode.node() {
        node_id_or_host_name(options.node_id.as_deref())?
    } else {
        node_id_or_host_name(options.node_id.as_deref()).unwrap_or_default()
    };
    let registration = options
        .registration
        .plan(&options.driver_name, options.mode)?;
    let node_state_dir = options.node_state_dir();
    let config = share::Config::load(config)?;
    let settings = config.settings()?;
    let fs = config.open_backend().await?;
    let service = Arc::new(share::ShareService::open(fs, settings).await?);
    if options.mode.controller() && !service.settings().tenants.is_empty() {
        tokio::spawn(tenancy::keep_tenants(
            Arc::clone(&service),
            tenancy::RECONCILE_EVERY,
        ));
    }
    if let (true, Some(annotator)) = (options.mode.controller(), options.pvc_annotator) {
        tokio::spawn(hsm_status::annotate_pvcs(
            Arc::clone(&service),
            annotator,
            hsm_status::ANNOTATE_EVERY,
        ));
    }
    if options.mode.controller() {
        // Crypto-erase of purged trash: keys whose data is gone (see encryption).
        tokio::spawn(encryption::keep_erasing(
            Arc::clone(&service),
            options.kmip_credentials_dir.clone(),
            encryption::ERASE_EVERY,
        ));
    }
    let driver = Driver::new(
        service,
        DriverOptions {
            name: options.driver_name,
            node_id,
            mode: options.mode,
            fs_timeout: options.fs_timeout,
            quota_margin: options.quota_margin,
            hsm_import_timeout: options.hsm_import_timeout,
            node_state_dir: Some(node_state_dir),
        },
    );
    if let Some(tenants) = namespace_tenants {
        driver.set_namespace_tenants(tenants);
    }
    registration::serve_registered(
        registration,
        driver,
        &options.socket,
        options.metrics_addr,
        server::shutdown_signal(),
    )
    .await
}
