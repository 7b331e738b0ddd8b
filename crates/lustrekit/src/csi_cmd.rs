//! `lustrekit csi`: the driver's flags (clap), turned into [`csi::RunOptions`]; the driver
//! itself is the `csi` library.

use std::path::{Path, PathBuf};

use csi::registration::{DEFAULT_REGISTRATION_DIR, RegistrationOptions};
use csi::{DEFAULT_DRIVER_NAME, DEFAULT_FS_TIMEOUT_SECS};

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

impl From<Mode> for csi::Mode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Controller => csi::Mode::Controller,
            Mode::Node => csi::Mode::Node,
            Mode::All => csi::Mode::All,
        }
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
    pub quota_margin: csi::stats::QuotaMargin,
    /// Seconds CreateVolume may spend importing an HSM volume's objects as released stubs
    /// (`hsmImportFrom`) before it fails with DEADLINE_EXCEEDED; a retry resumes the import.
    /// The provisioner's own `--timeout` bounds each attempt as well.
    #[arg(long, env = "CSI_HSM_IMPORT_TIMEOUT", default_value_t = csi::DEFAULT_HSM_IMPORT_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub hsm_import_timeout: u64,
    /// Copy each HSM volume's status (files and bytes released, archived, dirty; the last
    /// policy pass) onto its PVC's `lustrekit.io/hsm-*` annotations, at most every 30 s per
    /// PVC and only when it changed (controller and all modes; needs the Kubernetes API:
    /// in-cluster or KUBECONFIG, and `patch` on persistentvolumeclaims).
    #[arg(long, env = "CSI_HSM_PVC_ANNOTATIONS")]
    pub hsm_pvc_annotations: bool,
    /// The controller's KMIP credentials: a directory with the files kmipClientCert,
    /// kmipClientKey and kmipCaCert (a mounted Secret, the provisioner secret's keys). With
    /// them the controller destroys the keys of encrypted volumes once their trash is purged;
    /// without, it reports those keys in its log.
    #[arg(long, env = "CSI_KMIP_CREDENTIALS_DIR")]
    pub kmip_credentials_dir: Option<PathBuf>,
    /// Self-registration with the kubelet's plugin watcher (instead of node-driver-registrar).
    #[command(flatten)]
    pub registration: RegistrationArgs,
}

/// `lustrekit csi` flags for self-registration (flattened into [`CsiArgs`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistrationArgs {
    /// Register with the kubelet's plugin watcher, announcing this path as the CSI endpoint:
    /// the CSI socket's path on the host, as the kubelet sees it (for example
    /// /var/lib/kubelet/plugins/lustre.csi.lustrekit.io/csi.sock). Node and all modes only.
    /// Leave unset when node-driver-registrar runs beside the driver.
    #[arg(long, env = "CSI_KUBELET_REGISTRATION_PATH")]
    pub kubelet_registration_path: Option<PathBuf>,
    /// The kubelet's plugin watcher directory as mounted in this container; the registration
    /// socket `<driver>-reg.sock` is made there.
    #[arg(long, env = "CSI_PLUGIN_REGISTRATION_DIR", default_value = DEFAULT_REGISTRATION_DIR)]
    pub plugin_registration_dir: PathBuf,
}

impl CsiArgs {
    /// The driver's options; the endpoint and the metrics address are checked here. No PVC
    /// annotator yet: [`run`] adds it.
    pub fn options(self) -> Result<csi::RunOptions, csi::CsiError> {
        Ok(csi::RunOptions {
            socket: csi::parse_endpoint(&self.endpoint)?,
            metrics_addr: csi::parse_metrics_address(&self.metrics_address)?,
            mode: self.mode.into(),
            node_id: self.node_id,
            driver_name: self.driver_name,
            fs_timeout: std::time::Duration::from_secs(self.fs_timeout),
            quota_margin: self.quota_margin,
            hsm_import_timeout: std::time::Duration::from_secs(self.hsm_import_timeout),
            registration: RegistrationOptions {
                kubelet_registration_path: self.registration.kubelet_registration_path,
                plugin_registration_dir: self.registration.plugin_registration_dir,
            },
            pvc_annotator: None,
            kmip_credentials_dir: self.kmip_credentials_dir,
        })
    }
}

/// `lustrekit csi`: serves until SIGTERM or SIGINT. A controller whose configuration
/// declares tenants reads namespaces' `lustrekit.io/tenant` labels from the API server
/// (in-cluster or the kubeconfig); without one it warns and goes by the configuration's
/// `namespaces` alone.
pub async fn run(args: CsiArgs, config: &Path) -> anyhow::Result<()> {
    let annotate = args.hsm_pvc_annotations && csi::Mode::from(args.mode).controller();
    let mut options = args.options()?;
    let tenants_declared =
        options.mode.controller() && !share::Config::load(config)?.settings()?.tenants.is_empty();
    let client = if annotate || tenants_declared {
        // Err: a provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Some(kube::Client::try_default().await)
    } else {
        None
    };
    if annotate {
        let client = match &client {
            Some(Ok(client)) => client.clone(),
            Some(Err(e)) => anyhow::bail!(
                "--hsm-pvc-annotations: cannot reach the Kubernetes API (in-cluster or KUBECONFIG): {e}"
            ),
            None => anyhow::bail!("--hsm-pvc-annotations: no Kubernetes client was made"),
        };
        options.pvc_annotator = Some(std::sync::Arc::new(
            crate::pvc_annotations::KubePvcAnnotator::new(client),
        ));
    }
    let mut namespaces = None;
    if tenants_declared {
        match &client {
            Some(Ok(client)) => {
                let view: std::sync::Arc<dyn csi::tenancy::NamespaceTenants> =
                    crate::namespace_tenants::WatchedNamespaces::start(client.clone());
                namespaces = Some(view);
            }
            Some(Err(e)) => tracing::warn!(error = %e,
                "no Kubernetes API: namespace tenant labels are not read (the configuration's \
                 namespaces still are)"),
            None => {}
        }
    }
    Ok(csi::run_with(options, config, namespaces).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        csi: CsiArgs,
    }

    #[test]
    fn args_parse_with_clap() {
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
        let options = cli.csi.options().unwrap();
        assert_eq!(options.mode, csi::Mode::Node);
        assert!(options.mode.node() && !options.mode.controller());
        assert_eq!(options.socket, Path::new("/tmp/a.sock"));
        assert_eq!(options.metrics_addr, None);
        assert_eq!(options.node_id.as_deref(), Some("n1"));
        assert_eq!(options.fs_timeout, csi::DEFAULT_FS_TIMEOUT);
        assert!(options.registration.kubelet_registration_path.is_none());
        assert!(options.kmip_credentials_dir.is_none());
        let cli =
            Cli::try_parse_from(["csi", "--kmip-credentials-dir", "/etc/lustrekit/kmip"]).unwrap();
        assert_eq!(
            cli.csi.options().unwrap().kmip_credentials_dir.as_deref(),
            Some(Path::new("/etc/lustrekit/kmip"))
        );
        assert!(Cli::try_parse_from(["csi", "--mode", "both"]).is_err());
        assert!(Cli::try_parse_from(["csi", "--fs-timeout", "0"]).is_err());
        let bad_endpoint = Cli::try_parse_from(["csi", "--endpoint", "tcp://x:1"]).unwrap();
        assert!(bad_endpoint.csi.options().is_err());
    }

    #[test]
    fn registration_flags_parse_with_clap() {
        let cli = Cli::try_parse_from([
            "csi",
            "--kubelet-registration-path",
            "/var/lib/kubelet/plugins/x/csi.sock",
            "--plugin-registration-dir",
            "/registration",
        ])
        .unwrap();
        assert_eq!(
            cli.csi.registration.kubelet_registration_path.as_deref(),
            Some(Path::new("/var/lib/kubelet/plugins/x/csi.sock"))
        );
        assert_eq!(
            cli.csi.registration.plugin_registration_dir,
            Path::new("/registration")
        );
        let cli = Cli::try_parse_from(["csi"]).unwrap();
        assert!(cli.csi.registration.kubelet_registration_path.is_none());
        assert_eq!(
            cli.csi.registration.plugin_registration_dir,
            Path::new(DEFAULT_REGISTRATION_DIR)
        );
    }
}
