//! The long-running commands: `policy run|watch`, `restore-daemon` and `copytool`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hsm::HsmError;
use hsm::metrics::Metrics;

use super::args::{CommonArgs, CopytoolArgs, DaemonArgs, PolicyRunArgs, PolicyWatchArgs};
use super::{PartialFailure, engine, engine_with};
use crate::output::print_json;

async fn serve_metrics(
    addr: Option<SocketAddr>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    match addr {
        None => Ok(None),
        Some(a) => {
            let (listener, bound) = telemetry::bind(a)
                .await
                .with_context(|| format!("metrics listener on {a}"))?;
            tracing::info!(addr = %bound, "serving Prometheus metrics at /metrics");
            let exposition: Arc<dyn telemetry::Exposition> = metrics.clone();
            Ok(Some(tokio::spawn(telemetry::serve(
                exposition,
                listener,
                std::future::pending(),
            ))))
        }
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn load_policy(args: &PolicyRunArgs) -> anyhow::Result<hsm::policy::PolicyConfig> {
    let mut cfg = hsm::policy::PolicyConfig::load(&args.config)?;
    if args.dry_run {
        cfg.dry_run = true;
    }
    Ok(cfg)
}

pub(super) async fn policy_run(
    common: &CommonArgs,
    args: &PolicyRunArgs,
    json: bool,
) -> anyhow::Result<()> {
    let cfg = load_policy(args).await?;
    let engine = Arc::new(engine_with(common, args.unguarded).await?);
    let policy = hsm::policy::Policy::new(engine, cfg)?;
    let report = policy.run_pass().await?;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", report.text());
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(PartialFailure {
            op: "policy run".into(),
            failed: report.errors.len(),
            total: report.actions.len() + report.errors.len(),
            stopped: false,
        }
        .into())
    }
}

pub(super) async fn policy_watch(
    common: &CommonArgs,
    args: &PolicyWatchArgs,
    json: bool,
) -> anyhow::Result<()> {
    let cfg = load_policy(&args.run).await?;
    let engine = Arc::new(engine_with(common, args.run.unguarded).await?);
    let _server = serve_metrics(args.metrics_addr, engine.metrics()).await?;
    let policy = hsm::policy::Policy::new(engine, cfg)?;
    let each = move |r: &hsm::policy::PassReport| {
        if json {
            if let Ok(s) = serde_json::to_string(r) {
                println!("{s}");
            }
        } else {
            print!("{}", r.text());
        }
    };
    policy.watch(shutdown_signal(), &each).await?;
    Ok(())
}

pub(super) async fn restore_daemon(common: &CommonArgs, args: &DaemonArgs) -> anyhow::Result<()> {
    let engine = Arc::new(engine(common).await?);
    let _server = serve_metrics(args.metrics_addr, engine.metrics()).await?;
    let daemon = hsm::restore_daemon::RestoreDaemon::start(
        engine,
        hsm::restore_daemon::DaemonConfig {
            restores: args.restores,
            max_held_events: args.max_held_events,
            restore_timeout: args.restore_timeout,
            readers: args.readers,
            stop_grace: args.stop_grace,
            fail_fast: args.fail_fast,
        },
    )
    .map_err(|e| match e {
        HsmError::Unsupported(m) => anyhow::anyhow!("restore-on-access is unavailable: {m}"),
        other => other.into(),
    })?;
    eprintln!(
        "restore-daemon: watching {} for reads of released files ({} reads held at most)",
        daemon.root().display(),
        daemon.held_cap()
    );
    // Dies whole: an unrecoverable error ends the process non-zero, for a supervisor.
    daemon
        .run_until(shutdown_signal())
        .await
        .context("restore-daemon")?;
    Ok(())
}

pub(super) async fn copytool(common: &CommonArgs, args: &CopytoolArgs) -> anyhow::Result<()> {
    let api = hsm::copytool::LustreApi::load(&args.lib).map_err(|e| {
        anyhow::anyhow!("copytool mode needs liblustreapi, which cannot be loaded: {e}")
    })?;
    let mut common = common.clone();
    if common.root.is_none() {
        common.root = Some(args.mnt.clone());
    }
    let engine = Arc::new(engine(&common).await?);
    let _server = serve_metrics(args.metrics_addr, engine.metrics()).await?;
    hsm::copytool::run(api, engine, &args.mnt, &args.archives, shutdown_signal()).await?;
    Ok(())
}
