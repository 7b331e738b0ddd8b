//! `lustrekit pcc purge`: keeps a Persistent Client Cache below its high watermark by
//! detaching the least recently used files, once or every `--interval` (what the CSI node
//! plugin runs for each cache). The logic is `hsm::pcc`; this is its command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hsm::pcc::{
    PccMetrics, PurgePolicy, PurgeReport, PurgeTask, RemoveCacheFile, StatvfsUsage, UsageSource,
    detach_for, purge_once,
};

use crate::hsm_cmd::BackendSource;
use crate::output::{human_bytes, print_json};

#[derive(clap::Args)]
pub struct PccArgs {
    #[command(subcommand)]
    command: PccCommand,
}

#[derive(clap::Subcommand)]
enum PccCommand {
    /// Detach least recently used files once the cache filesystem is fuller than --high,
    /// down to --low.
    Purge(PurgeArgs),
}

#[derive(clap::Args)]
struct PurgeArgs {
    /// The cache directory (the PCCPATH registered with `lctl pcc add`).
    #[arg(long)]
    cache: PathBuf,
    /// The Lustre client mount the cache is registered on (`lfs pcc detach_fid -m`).
    #[arg(long)]
    mount: PathBuf,
    /// Purge when the cache filesystem is more than this full, in percent.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    high: u8,
    /// Purge down to this, in percent (below --high).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    low: u8,
    /// How often to check (`30`, `90s`, `5m`); ignored with --once.
    #[arg(long, default_value = "30", value_parser = parse_interval)]
    interval: Duration,
    /// Check and purge once, print the report, and exit.
    #[arg(long)]
    once: bool,
    /// `config`: detach through the configuration's backend (`lfs pcc detach_fid` on
    /// lustre); `local`: remove the cache files themselves.
    #[arg(long, value_enum, default_value = "config")]
    backend: BackendSource,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    csi::params::parse_duration_secs("--interval", text)
        .map(Duration::from_secs)
        .map_err(|e| e.to_string())
}

pub async fn run(args: PccArgs, config: &std::path::Path, json: bool) -> anyhow::Result<()> {
    match args.command {
        PccCommand::Purge(p) => purge(p, config, json).await,
    }
}

async fn purge(args: PurgeArgs, config: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let policy = PurgePolicy::new(args.high, args.low)
        .map_err(|e| share::ShareError::InvalidArgument(e.to_string()))?;
    let metrics = Arc::new(PccMetrics::new());
    let fs = match args.backend {
        BackendSource::Config => Some(
            share::Config::load(config)?
                .open_backend()
                .await
                .context("opening the configuration's backend")?,
        ),
        BackendSource::Local => None,
    };
    if args.once {
        let usage: Arc<dyn UsageSource> = Arc::new(StatvfsUsage {
            dir: args.cache.clone(),
        });
        let detach = match fs {
            Some(fs) => detach_for(fs, args.mount.clone(), args.cache.clone()),
            None => Arc::new(RemoveCacheFile {
                cache: args.cache.clone(),
            }),
        };
        let report =
            purge_once(&args.cache, policy, &usage, detach.as_ref(), Some(&metrics)).await?;
        if json {
            print_json(&report)?;
        } else {
            print_report(&report);
        }
        return Ok(());
    }
    let task = match fs {
        Some(fs) => {
            PurgeTask::for_backend(fs, args.mount, args.cache, policy, args.interval, metrics)
        }
        None => PurgeTask {
            usage: Arc::new(StatvfsUsage {
                dir: args.cache.clone(),
            }),
            detach: Arc::new(RemoveCacheFile {
                cache: args.cache.clone(),
            }),
            cache: args.cache,
            policy,
            interval: args.interval,
            counters: None,
            metrics,
        },
    };
    task.run(crate::operator_cmd::shutdown_signal()).await;
    Ok(())
}

fn print_report(r: &PurgeReport) {
    println!("{}", r.cache.display());
    println!(
        "  usage:    {:.1}% -> {:.1}% of {}",
        r.before_percent,
        r.after_percent,
        human_bytes(r.after.total_bytes)
    );
    println!(
        "  cache:    {} files, {}",
        r.files,
        human_bytes(r.cache_bytes)
    );
    println!(
        "  detached: {} files, {}",
        r.detached,
        human_bytes(r.detached_bytes)
    );
    if r.failed > 0 || r.skipped > 0 {
        println!("  failed:   {}, skipped: {}", r.failed, r.skipped);
    }
}
