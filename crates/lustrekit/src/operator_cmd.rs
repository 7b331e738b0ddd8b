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
    /// DataMovement copies run at once by this operator.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    copy_slots: u16,
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    match args.command {
        OperatorCommand::Crdgen => {
            // One YAML stream, as `kubectl apply -f -` takes it.
            let filesystems = operator::crd::crd_yaml().context("cannot serialize the CRDs")?;
            let movements = operator::movement::crd_yaml().context("cannot serialize the CRDs")?;
            print!("{filesystems}---\n{movements}");
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
                mover: operator::MoverOptions {
                    slots: usize::from(run.copy_slots),
                    ..Default::default()
                },
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
