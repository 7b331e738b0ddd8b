//! `lustrekit operator`: print the CRDs, or run the controller.

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct OperatorArgs {
    #[command(subcommand)]
    command: OperatorCommand,
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Print the CRDs as YAML (deploy/crds/ holds the same).
    Crdgen,
    /// Run the controller, with the kubeconfig from KUBECONFIG or the in-cluster account.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The CSI driver the PVs name.
    #[arg(long, env = "LUSTREKIT_CSI_DRIVER_NAME", default_value = csi::DEFAULT_DRIVER_NAME)]
    driver_name: String,
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    match args.command {
        OperatorCommand::Crdgen => {
            let yaml = operator::crd::crd_yaml().context("cannot serialize the CRD")?;
            print!("{yaml}");
            Ok(())
        }
        OperatorCommand::Run(run) => {
            // Err: a provider is already installed, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = kube::Client::try_default()
                .await
                .context("cannot reach the Kubernetes API (KUBECONFIG or in-cluster)")?;
            let options = operator::OperatorOptions {
                driver_name: run.driver_name,
            };
            operator::run(client, options, async {
                // A failed signal handler just means no graceful stop.
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
            Ok(())
        }
    }
}
