//! Command-line arguments of `lustrekit csi`, for the binary crate to flatten into its
//! `csi` subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::CsiError;

/// The driver name registered with Kubernetes (`CSIDriver.metadata.name`).
pub const DEFAULT_DRIVER_NAME: &str = "lustre.csi.lustrekit.io";

/// How long one blocking filesystem step on the node may take (seconds) before the call
/// fails with DEADLINE_EXCEEDED; kubelet's own CSI call timeout is two minutes.
pub const DEFAULT_FS_TIMEOUT_SECS: u64 = 10;

/// [`DEFAULT_FS_TIMEOUT_SECS`] as a duration.
pub const DEFAULT_FS_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(DEFAULT_FS_TIMEOUT_SECS);

/// Which CSI services this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

/// `lustrekit csi`: serve the CSI spec v1.12 over a unix socket.
#[derive(Debug, Clone, clap::Args)]
pub struct CsiArgs {
    /// Which services to serve.
    #[arg(long, value_enum, env = "CSI_MODE", default_value = "all")]
    pub mode: Mode,
    /// The gRPC endpoint: `unix:///path/to/csi.sock` (a stale socket there is replaced; the
    /// new one is made with mode 0600).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///run/csi/csi.sock")]
    pub endpoint: String,
    /// This node's ID as NodeGetInfo reports it (the Kubernetes node name). Needed in node and
    /// all modes; defaults to the host name.
    #[arg(long, env = "CSI_NODE_ID")]
    pub node_id: Option<String>,
    /// The name this driver answers GetPluginInfo with.
    #[arg(long, env = "CSI_DRIVER_NAME", default_value = DEFAULT_DRIVER_NAME)]
    pub driver_name: String,
    /// Where `/metrics` (Prometheus text) and `/healthz` are served; `off` disables them.
    #[arg(long, env = "CSI_METRICS_ADDRESS", default_value = "0.0.0.0:9810")]
    pub metrics_address: String,
    /// Seconds one blocking filesystem step on the node (stat, statvfs, mkdir, rmdir of a
    /// target) may take before the call fails; a dead server then costs one stuck thread,
    /// not the node plugin.
    #[arg(long, env = "CSI_FS_TIMEOUT", default_value_t = DEFAULT_FS_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1..=600))]
    pub fs_timeout: u64,
    /// How close to its quota a volume may get before NodeGetVolumeStats calls it abnormal:
    /// `0` (as soon as one more block, with what the quota reserves per write, would not
    /// fit), a size (`64MiB`) or a share of the quota (`5%`) that must stay free besides.
    #[arg(long, env = "CSI_QUOTA_MARGIN", default_value = "0")]
    pub quota_margin: crate::stats::QuotaMargin,
    /// Self-registration with the kubelet's plugin watcher (instead of node-driver-registrar).
    #[command(flatten)]
    pub registration: crate::registration::RegistrationArgs,
}

impl CsiArgs {
    /// The unix socket path named by `--endpoint`.
    pub fn socket_path(&self) -> Result<PathBuf, CsiError> {
        parse_endpoint(&self.endpoint)
    }

    /// The metrics address, or `None` when disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, CsiError> {
        match self.metrics_address.trim() {
            "" | "off" | "none" => Ok(None),
            text => text
                .parse()
                .map(Some)
                .map_err(|e| CsiError::Config(format!("--metrics-address {text:?}: {e}"))),
        }
    }

    /// `--fs-timeout` as a duration.
    pub fn fs_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.fs_timeout)
    }

    /// The node ID: `--node-id`, or the host name.
    pub fn node_id(&self) -> Result<String, CsiError> {
        if let Some(id) = self.node_id.as_deref().filter(|s| !s.is_empty()) {
            return Ok(id.to_string());
        }
        let host = nix::unistd::gethostname()
            .map_err(|e| CsiError::Config(format!("no --node-id and no host name: {e}")))?;
        Ok(host.to_string_lossy().into_owned())
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
    fn args_parse_with_clap() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            csi: CsiArgs,
        }
        let cli = Cli::try_parse_from([
            "csi",
            "--mode",
            "node",
            "--endpoint",
            "unix:///tmp/a.sock",
            "--node-id",
            "n1",
            "--metrics-address",
            "off",
        ])
        .unwrap();
        assert_eq!(cli.csi.mode, Mode::Node);
        assert!(cli.csi.mode.node() && !cli.csi.mode.controller());
        assert_eq!(cli.csi.metrics_addr().unwrap(), None);
        assert_eq!(cli.csi.node_id().unwrap(), "n1");
        assert_eq!(cli.csi.fs_timeout(), DEFAULT_FS_TIMEOUT);
        assert!(Cli::try_parse_from(["csi", "--mode", "both"]).is_err());
        assert!(Cli::try_parse_from(["csi", "--fs-timeout", "0"]).is_err());
    }
}
