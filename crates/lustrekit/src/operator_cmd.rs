//! `lustrekit operator`: print the CRDs, run the controller, or run one DataMovement copy
//! (what the copy Job's pod runs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use operator::copy_job::{CopyOutcome, STORE_ENV_PREFIX};
use operator::movement::{Direction, MoveResult};
use operator::mover::{CopyRequest, progress_of, summary_words};

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
    /// Run one DataMovement copy here, printing its progress as JSON lines (the copy Job's
    /// pod runs this). Store options come from `LUSTREKIT_STORE_<key>` variables.
    Copy(CopyArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum CopyDirection {
    /// From the URL into the directory.
    In,
    /// From the directory to the URL.
    Out,
}

/// Where DataMovement copies run.
#[derive(Clone, Copy, ValueEnum)]
enum CopyRunner {
    /// In this operator, which mounts every filesystem at its mountRoot (the local backend).
    InProcess,
    /// In a Job in the movement's namespace, mounting the namespace's PVC (Lustre).
    Job,
}

#[derive(Args)]
struct CopyArgs {
    /// Which way to copy.
    #[arg(long, value_enum)]
    direction: CopyDirection,
    /// The filesystem's directory: the copy never leaves it.
    #[arg(long)]
    root: PathBuf,
    /// The directory copied, relative to --root (no `..`).
    #[arg(long, default_value = ".")]
    path: String,
    /// The other end: az://, s3://, gs:// or file:// URL.
    #[arg(long)]
    url: String,
    /// Also write the final outcome line here (the pod's termination message).
    #[arg(long)]
    report_file: Option<PathBuf>,
    /// A cap on bytes per second for each file.
    #[arg(long)]
    max_bytes_per_second: Option<u64>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 2)]
    progress_every: u64,
    /// Give up when nothing moved for this many seconds (a hung filesystem or store).
    #[arg(long, default_value_t = 600)]
    stall_timeout: u64,
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
    /// DataMovement copies run at once by this operator.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    copy_slots: u16,
    /// Where DataMovement copies run.
    #[arg(long, value_enum, default_value_t = CopyRunner::InProcess)]
    copy_runner: CopyRunner,
    /// The image of the copy Jobs (with --copy-runner job): this binary's.
    #[arg(long, env = "LUSTREKIT_IMAGE", required_if_eq("copy_runner", "job"))]
    copy_image: Option<String>,
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
        OperatorCommand::Crdgen(crdgen) => {
            let ours = operator::crd::crd_yaml().context("cannot serialize the CRD")?;
            let movements = operator::movement::crd_yaml().context("cannot serialize the CRD")?;
            let hpe = operator::hpe::crd_yaml().context("cannot serialize HPE's CRD")?;
            // One YAML stream, as `kubectl apply -f -` takes it.
            match crdgen.group.as_deref() {
                Some(operator::crd::GROUP) => print!("{ours}---\n{movements}"),
                Some(_) => print!("{hpe}"),
                None => print!("{ours}---\n{movements}---\n{hpe}"),
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
                mover: operator::MoverOptions {
                    slots: usize::from(run.copy_slots),
                    runner: match (run.copy_runner, run.copy_image) {
                        (CopyRunner::Job, Some(image)) => operator::Runner::Job { image },
                        (CopyRunner::Job, None) => {
                            anyhow::bail!("--copy-runner job needs --copy-image")
                        }
                        (CopyRunner::InProcess, _) => operator::Runner::InProcess,
                    },
                    ..Default::default()
                },
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
            let result = if run.leader_elect {
                // A standby is healthy and ready to take over; a leader is ready once its
                // caches are filled (operator::run says so).
                metrics.set_ready(true);
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
                    operator::run(client, options, metrics, step_down.wait())
                })
                .await
                .context("leader election")
            } else {
                operator::run(client, options, metrics, async {
                    // A failed signal handler just means no graceful stop.
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await;
                Ok(())
            };
            let _ = stop_tx.send(true);
            if let Some(server) = server {
                // A panicked server task has nothing left to stop.
                let _ = server.await;
            }
            result
        }
        OperatorCommand::Copy(copy) => run_copy(copy).await,
    }
}

/// Ctrl-C or SIGTERM (what the kubelet sends a pod): a graceful stop that releases the Lease.
pub(crate) async fn shutdown_signal() {
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

/// How `operator copy` ended.
enum Ended {
    Copied(Result<operator::mover::CopySummary, hsm::HsmError>),
    Cancelled,
    Stalled,
}

/// Exit status of a cancelled copy (128 + SIGTERM, as a shell reports it).
const CANCELLED_EXIT: i32 = 143;

async fn run_copy(args: CopyArgs) -> anyhow::Result<()> {
    hsm::engine::ignore_lease_break_signal();
    let below = operator::movement::below("--path", &args.path).map_err(anyhow::Error::msg)?;
    let store_options: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix(STORE_ENV_PREFIX)?.to_string(), v)))
        .collect();
    let request = CopyRequest {
        dir: args.root.join(below),
        root: args.root,
        direction: match args.direction {
            CopyDirection::In => Direction::In,
            CopyDirection::Out => Direction::Out,
        },
        url: args.url,
        store_options,
        max_bytes_per_second: args.max_bytes_per_second,
    };
    let counters = Arc::new(hsm::CopyCounters::default());
    let stall = Duration::from_secs(args.stall_timeout.max(1));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    let mut tick = tokio::time::interval(Duration::from_secs(args.progress_every.max(1)));
    let ended = {
        let copy = request.run(&counters);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                r = &mut copy => break Ended::Copied(r),
                _ = terminate.recv() => break Ended::Cancelled,
                _ = tokio::signal::ctrl_c() => break Ended::Cancelled,
                _ = tick.tick() => {
                    if counters.idle_for() > stall {
                        break Ended::Stalled;
                    }
                    print_line(&CopyOutcome { progress: progress_of(&counters), ..Default::default() });
                }
            }
        }
        // The copy future is dropped here: its temporaries go with it.
    };
    let progress = progress_of(&counters);
    let (result, message) = match &ended {
        Ended::Copied(r) => summary_words(r, &progress),
        Ended::Cancelled => (
            MoveResult::Cancelled,
            operator::mover::CANCELLED.to_string(),
        ),
        Ended::Stalled => (
            MoveResult::Failed,
            operator::mover::stalled_words(counters.idle_for()),
        ),
    };
    // The pod's output and termination message reach the operator's status and events.
    let message = request.scrub(&message);
    let outcome = CopyOutcome {
        progress,
        success: Some(result == MoveResult::Success),
        message: Some(message.clone()),
    };
    print_line(&outcome);
    if let Some(path) = &args.report_file {
        let line = serde_json::to_string(&outcome)?;
        if let Err(e) = tokio::fs::write(path, line).await {
            tracing::warn!(path = %path.display(), error = %e, "outcome not written");
        }
    }
    match result {
        MoveResult::Success => Ok(()),
        MoveResult::Cancelled => {
            // Let the blocking pool drop what the cancelled copy held before exiting.
            tokio::time::sleep(Duration::from_millis(200)).await;
            std::process::exit(CANCELLED_EXIT)
        }
        MoveResult::Failed => anyhow::bail!("copy failed: {message}"),
    }
}

fn print_line(outcome: &CopyOutcome) {
    if let Ok(line) = serde_json::to_string(outcome) {
        println!("{line}");
    }
}
