//! `lustrekit operator`: print the CRDs, or run the controller.

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct OperatorArgs {
    #[command(subcommand)]
    command: OperatorCommand,
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Print the CRDs as YAML, ours then HPE's (deploy/crds/ holds the same, one a file).
    Crdgen(CrdgenArgs),
    /// Run the controller, with the kubeconfig from KUBECONFIG or the in-cluster account.
    Run(RunArgs),
}

#[derive(Args)]
struct CrdgenArgs {
    /// Only the CRD of this API group.
    #[arg(long, value_parser = [operator::crd::GROUP, operator::hpe::GROUP])]
    group: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// The CSI driver the PVs name.
    #[arg(long, env = "LUSTREKIT_CSI_DRIVER_NAME", default_value = csi::DEFAULT_DRIVER_NAME)]
    driver_name: String,
    /// Where `/metrics` (OpenMetrics text), `/healthz` and `/readyz` are served; `off`
    /// disables them. The CSI driver's pods use 9810 and 9811.
    #[arg(
        long,
        env = "LUSTREKIT_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:9812"
    )]
    metrics_addr: String,
    /// The directory below the filesystem root that HPE's `lus.cray.hpe.com`
    /// LustreFileSystems expose (their spec has no field for it; our driver serves static
    /// volumes below the root, not the root). Unset: they are refused with a condition.
    #[arg(long, env = "LUSTREKIT_OPERATOR_HPE_SUB_DIRECTORY")]
    hpe_sub_directory: Option<String>,
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    match args.command {
        OperatorCommand::Crdgen(crdgen) => {
            let ours = operator::crd::crd_yaml().context("cannot serialize the CRD")?;
            let hpe = operator::hpe::crd_yaml().context("cannot serialize HPE's CRD")?;
            match crdgen.group.as_deref() {
                Some(operator::crd::GROUP) => print!("{ours}"),
                Some(_) => print!("{hpe}"),
                None => print!("{ours}---\n{hpe}"),
            }
            Ok(())
        }
        OperatorCommand::Run(run) => {
            let metrics_addr = csi::parse_metrics_address(&run.metrics_addr)?;
            // Err: a provider is already installed, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = kube::Client::try_default()
                .await
                .context("cannot reach the Kubernetes API (KUBECONFIG or in-cluster)")?;
            let options = operator::OperatorOptions {
                driver_name: run.driver_name,
                hpe_sub_directory: run.hpe_sub_directory,
            };
            let metrics = Arc::new(operator::Metrics::default());
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let server = match metrics_addr {
                Some(addr) => {
                    let (listener, bound) = telemetry::bind(addr)
                        .await
                        .with_context(|| format!("metrics listener on {addr}"))?;
                    tracing::info!(addr = %bound, "serving Prometheus metrics at /metrics");
                    let exposition: Arc<dyn telemetry::Exposition> = metrics.clone();
                    let mut stop = stop_rx.clone();
                    Some(tokio::spawn(telemetry::serve(
                        exposition,
                        listener,
                        async move {
                            let _ = stop.wait_for(|stop| *stop).await;
                        },
                    )))
                }
                None => None,
            };
            operator::run(client, options, metrics, async {
                // A failed signal handler just means no graceful stop.
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
            let _ = stop_tx.send(true);
            if let Some(server) = server {
                // A panicked server task has nothing left to stop.
                let _ = server.await;
            }
            Ok(())
        }
    }
}
