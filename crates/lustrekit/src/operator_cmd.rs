//! `lustrekit operator`: print the CRDs, or run the controller.

use std::time::Duration;

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
    /// Run the controllers only while holding a coordination.k8s.io Lease, so that of several
    /// replicas one works and the others wait to take over.
    #[arg(long)]
    leader_elect: bool,
    /// The Lease of --leader-elect.
    #[arg(long, default_value = "lustrekit-operator")]
    lease_name: String,
    /// The Lease's namespace [default: the in-cluster account's or the kubeconfig context's].
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long a claim on the Lease lasts without renewal (whole seconds, at least 1s): how
    /// long replicas wait after a leader dies without releasing it.
    #[arg(long, default_value = "15s", value_parser = parse_lease_duration)]
    lease_duration: Duration,
}

fn parse_lease_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < Duration::from_secs(1) || duration.subsec_nanos() != 0 {
        return Err("must be whole seconds, at least 1s".to_string());
    }
    Ok(duration)
}

/// Unique per process, so a restarted pod is a new candidate: the pod name (or host name)
/// and a random suffix.
fn lease_identity() -> anyhow::Result<String> {
    let base = match std::env::var("POD_NAME") {
        Ok(name) if !name.is_empty() => name,
        _ => nix::unistd::gethostname()
            .context("cannot read the host name")?
            .to_string_lossy()
            .into_owned(),
    };
    let mut suffix = [0u8; 4];
    getrandom::getrandom(&mut suffix).context("cannot draw the identity's random suffix")?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{base}-{suffix}"))
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
            if !run.leader_elect {
                operator::run(client, options, async {
                    // A failed signal handler just means no graceful stop.
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await;
                return Ok(());
            }
            let config = operator::LeaseConfig {
                namespace: run
                    .lease_namespace
                    .unwrap_or_else(|| client.default_namespace().to_string()),
                name: run.lease_name,
                identity: lease_identity()?,
                duration: run.lease_duration,
            };
            // Err (the Lease lost): the process exits non-zero and its pod restarts as a
            // candidate.
            operator::run_elected(client.clone(), config, shutdown_signal(), |step_down| {
                operator::run(client, options, step_down.wait())
            })
            .await
            .context("leader election")
        }
    }
}

/// Ctrl-C or SIGTERM (what the kubelet sends a pod): a graceful stop that releases the Lease.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        // A failed signal handler just means no graceful stop on that signal.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
