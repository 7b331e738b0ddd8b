//! The three CSI services, one file each, over one shared [`Driver`].

mod controller;
mod identity;
mod node;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::VolumeStatfs;
use share::ShareService;
use tonic::{Response, Status};

use crate::error::CsiError;
use crate::inflight::InFlight;
use crate::metrics::Metrics;
use crate::options::Mode;
use crate::stats::QuotaMargin;

pub use controller::ControllerService;
pub use identity::IdentityService;
pub use node::NodeService;

/// What the services share: the share service, the per-volume in-flight set and the metrics.
pub struct Driver {
    pub(crate) service: Arc<ShareService>,
    pub(crate) inflight: InFlight,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) name: String,
    pub(crate) node_id: String,
    pub(crate) mode: Mode,
    pub(crate) fs_timeout: Duration,
    pub(crate) quota_margin: QuotaMargin,
    pub(crate) hsm_import_timeout: Duration,
    /// What `df` in this node's volumes shows, as last asked at a publish (or at the first
    /// stats call after a restart); never held across an await.
    pub(crate) statfs: std::sync::Mutex<Option<VolumeStatfs>>,
    /// Client tunables held on this node by published volumes.
    pub(crate) tunables: crate::client_tunables::NodeTunables,
    /// Restore daemons of the HSM volumes published on this node.
    pub(crate) restore: crate::hsm_node::NodeRestore,
    /// Persistent Client Caches of the `hotNodes` volumes published on this node.
    pub(crate) pcc: crate::pcc_node::NodePcc,
    /// The controller's view of namespaces' tenant labels, if it has one (see
    /// [`crate::tenancy::NamespaceTenants`]).
    pub(crate) namespace_tenants: std::sync::OnceLock<Arc<dyn crate::tenancy::NamespaceTenants>>,
}

/// How a [`Driver`] is set up, apart from its share service.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    pub name: String,
    pub node_id: String,
    pub mode: Mode,
    /// How long one blocking filesystem step on the node (stat, statvfs, mkdir, rmdir of a
    /// target) may take; see [`crate::options::DEFAULT_FS_TIMEOUT`].
    pub fs_timeout: Duration,
    /// How close to its quota a volume may get before its condition turns abnormal, beyond
    /// one write of one block; see [`crate::stats`].
    pub quota_margin: QuotaMargin,
    /// How long CreateVolume's import of an HSM volume may take; see
    /// [`crate::hsm_volume::DEFAULT_HSM_IMPORT_TIMEOUT`].
    pub hsm_import_timeout: Duration,
    /// Where the node keeps what must outlive a restart of its plugin (the client tunables
    /// it holds); `None` keeps it in memory (tests).
    pub node_state_dir: Option<std::path::PathBuf>,
}

impl Driver {
    pub fn new(service: Arc<ShareService>, options: DriverOptions) -> Arc<Self> {
        let metrics = Arc::new(Metrics::default());
        let restore = crate::hsm_node::NodeRestore::new(
            options.node_state_dir.clone(),
            Arc::clone(&service),
            &options.node_id,
            metrics.hsm_volumes(),
        );
        Arc::new(Self {
            service,
            inflight: InFlight::default(),
            pcc: crate::pcc_node::NodePcc::new(options.node_state_dir.clone(), metrics.pcc()),
            restore,
            metrics,
            name: options.name,
            node_id: options.node_id,
            mode: options.mode,
            fs_timeout: options.fs_timeout,
            quota_margin: options.quota_margin,
            hsm_import_timeout: options.hsm_import_timeout,
            statfs: std::sync::Mutex::new(None),
            tunables: crate::client_tunables::NodeTunables::new(options.node_state_dir.clone()),
            namespace_tenants: std::sync::OnceLock::new(),
        })
    }

    /// Gives the controller its view of namespaces' tenant labels (once; a second is
    /// ignored).
    pub fn set_namespace_tenants(&self, tenants: Arc<dyn crate::tenancy::NamespaceTenants>) {
        if self.namespace_tenants.set(tenants).is_err() {
            tracing::warn!("namespace tenant labels were given twice; the first view is kept");
        }
    }

    /// The node's restore daemons (see [`crate::hsm_node`]).
    pub fn restore(&self) -> &crate::hsm_node::NodeRestore {
        &self.restore
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The per-volume in-flight set (tests hold a key to see a second call ABORTED).
    pub fn in_flight(&self) -> &InFlight {
        &self.inflight
    }

    pub fn service(&self) -> &Arc<ShareService> {
        &self.service
    }

    /// Runs one RPC: counts it, times it, logs its outcome (never its request: that may hold
    /// secrets), and turns a [`CsiError`] into the gRPC status.
    pub(crate) async fn call<T>(
        &self,
        method: &'static str,
        subject: &str,
        f: impl Future<Output = Result<T, CsiError>>,
    ) -> Result<Response<T>, Status> {
        let start = Instant::now();
        self.metrics.started();
        let result = f.await;
        let elapsed = start.elapsed();
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code(),
        };
        self.metrics.finished(method, code, elapsed);
        match result {
            Ok(value) => {
                tracing::debug!(method, subject, ?elapsed, "ok");
                Ok(Response::new(value))
            }
            Err(error) => {
                match code {
                    tonic::Code::Internal
                    | tonic::Code::Unknown
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unavailable => {
                        tracing::error!(method, subject, %error, ?elapsed, "failed")
                    }
                    _ => tracing::info!(method, subject, %error, code = ?code, ?elapsed, "refused"),
                }
                Err(error.into())
            }
        }
    }
}
