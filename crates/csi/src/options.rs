//! What a driver process is told to do, as plain values: the mode, the defaults, the
//! endpoint and metrics address syntax, and the options [`crate::run`] takes. The binary's
//! `lustrekit csi` flags fill them in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::CsiError;
use crate::registration::RegistrationOptions;
use crate::stats::QuotaMargin;

/// The driver name registered with Kubernetes (`CSIDriver.metadata.name`).
pub const DEFAULT_DRIVER_NAME: &str = "lustre.csi.lustrekit.io";

/// How long one blocking filesystem step on the node may take (seconds) before the call
/// fails with DEADLINE_EXCEEDED; kubelet's own CSI call timeout is two minutes.
pub const DEFAULT_FS_TIMEOUT_SECS: u64 = 10;

/// [`DEFAULT_FS_TIMEOUT_SECS`] as a duration.
pub const DEFAULT_FS_TIMEOUT: Duration = Duration::from_secs(DEFAULT_FS_TIMEOUT_SECS);

/// Which CSI services this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Identity and Controller (the Deployment, beside csi-provisioner and csi-resizer).
    Controller,
    /// Identity and Node (the DaemonSet, beside node-driver-registrar).
    Node,
    /// All three, in one process (tests, csi-sanity, single-node set-ups).
    All,
}

impl Mode {
    pub fn controller(self) -> bool {
        matches!(self, Mode::Controller | Mode::All)
    }

    pub fn node(self) -> bool {
        matches!(self, Mode::Node | Mode::All)
    }
}

/// Everything [`crate::run`] needs besides the configuration file.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub mode: Mode,
    /// The CSI unix socket (see [`parse_endpoint`]).
    pub socket: PathBuf,
    /// Where `/metrics` and `/healthz` are served, or `None` (see [`parse_metrics_address`]).
    pub metrics_addr: Option<SocketAddr>,
    /// This node's ID; `None` or empty means the host name (see [`node_id_or_host_name`]).
    pub node_id: Option<String>,
    pub driver_name: String,
    pub fs_timeout: Duration,
    pub quota_margin: QuotaMargin,
    /// How long CreateVolume's import of an HSM volume may take (see [`crate::hsm_volume`]).
    pub hsm_import_timeout: Duration,
    pub registration: RegistrationOptions,
    /// Where the controller copies HSM volumes' statuses (PVC annotations); `None`: nowhere
    /// (see [`crate::hsm_status`]).
    pub pvc_annotator: Option<std::sync::Arc<dyn crate::hsm_status::PvcAnnotator>>,
    /// The controller's own KMIP credentials (a mounted Secret's directory, see
    /// [`crate::encryption::credentials_from_dir`]), with which it destroys the keys of
    /// purged trash; `None`: those keys are reported, not destroyed.
    pub kmip_credentials_dir: Option<PathBuf>,
}

impl RunOptions {
    /// The node's state directory: `state/` beside the CSI socket, which the chart keeps on
    /// a hostPath (`/var/lib/kubelet/plugins/<driver>/`), so it outlives the pod.
    pub fn node_state_dir(&self) -> PathBuf {
        self.socket
            .parent()
            .unwrap_or(std::path::Path::new("/"))
            .join("state")
    }
}

/// Parses `unix:///abs/path`, `unix:/abs/path` or a bare absolute path.
pub fn parse_endpoint(endpoint: &str) -> Result<PathBuf, CsiError> {
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        rest
    } else if endpoint.contains("://") {
        return Err(CsiError::Config(format!(
            "endpoint {endpoint:?}: only unix:// sockets are supported"
        )));
    } else {
        endpoint
    };
    if !path.starts_with('/') {
        return Err(CsiError::Config(format!(
            "endpoint {endpoint:?}: the socket path must be absolute"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Parses the metrics address: `host:port`, or `off`, `none` or nothing to disable.
pub fn parse_metrics_address(text: &str) -> Result<Option<SocketAddr>, CsiError> {
    match text.trim() {
        "" | "off" | "none" => Ok(None),
        text => text
            .parse()
            .map(Some)
            .map_err(|e| CsiError::Config(format!("--metrics-address {text:?}: {e}"))),
    }
}

/// The node ID: `node_id` when given and not empty, else the host name.
pub fn node_id_or_host_name(node_id: Option<&str>) -> Result<String, CsiError> {
    if let Some(id) = node_id.filter(|s| !s.is_empty()) {
        return Ok(id.to_string());
    }
    let host = nix::unistd::gethostname()
        .map_err(|e| CsiError::Config(format!("no --node-id and no host name: {e}")))?;
    Ok(host.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("unix:///run/csi/csi.sock").unwrap(),
            PathBuf::from("/run/csi/csi.sock")
        );
        assert_eq!(
            parse_endpoint("unix:/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert_eq!(
            parse_endpoint("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        for bad in [
            "tcp://127.0.0.1:10000",
            "unix://relative.sock",
            "x.sock",
            "",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_addresses_and_node_ids_parse() {
        for off in ["off", "none", "", " off "] {
            assert_eq!(parse_metrics_address(off).unwrap(), None, "{off:?}");
        }
        assert_eq!(
            parse_metrics_address("127.0.0.1:9810").unwrap(),
            Some("127.0.0.1:9810".parse().unwrap())
        );
        assert!(parse_metrics_address("localhost").is_err());
        assert_eq!(node_id_or_host_name(Some("n1")).unwrap(), "n1");
        assert!(!node_id_or_host_name(Some("")).unwrap().is_empty());
    }
}
