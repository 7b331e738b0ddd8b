//! `lustrekit bench ...` (hidden): the measurements behind the figures in our notes. Timing
//! lives here and in scripts/bench-*.sh, never in tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use backend::Filesystem;
use backend::local::LocalBackend;
use clap::{Args, Subcommand};
use lustre_model::{FsName, ProjectId, ProjectRange, RelPath, ShareName};
use share::{CreateShare, DeleteMode, ShareService, ShareSettings};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Create then delete COUNT shares on the local backend at ROOT.
    Shares {
        /// The directory the local backend works in.
        #[arg(long)]
        root: PathBuf,
        /// Shares created and deleted.
        #[arg(long, default_value_t = 1000)]
        count: u32,
        /// Shares created at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// Parse a file of `lfs quota` or `lctl get_param nodemap.*` output many times.
    Parse {
        /// What the file holds: `quota` (`lfs quota`) or `nodemap` (`lctl get_param nodemap.*`).
        #[arg(long)]
        kind: String,
        /// The file of captured output.
        file: PathBuf,
        /// Times the whole file is parsed.
        #[arg(long, default_value_t = 20)]
        rounds: u32,
    },
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Shares {
            root,
            count,
            concurrency,
        } => shares(root, count, concurrency).await,
        BenchCommand::Parse { kind, file, rounds } => parse(&kind, &file, rounds),
    }
}

async fn shares(root: PathBuf, count: u32, concurrency: usize) -> anyhow::Result<()> {
    let fs: Arc<dyn Filesystem> = Arc::new(LocalBackend::open(&root).await?);
    let settings = ShareSettings {
        tenants: Vec::new(),
        fsname: FsName::new("bench")?,
        prefix: RelPath::parse("shares")?,
        project_ids: ProjectRange::new(ProjectId::new(100_000)?, ProjectId::new(199_999)?)?,
        export_nids: Vec::new(),
        nid_net: "tcp".parse()?,
        trash_ttl_secs: 3600,
        root_squash: true,
        activate_nodemaps: false,
        dir: backend::DirSpec::default(),
    };
    let service = Arc::new(ShareService::open(fs, settings).await?);
    let names: Vec<ShareName> = (0..count)
        .map(|i| ShareName::new(&format!("b{i:05}")))
        .collect::<Result<_, _>>()?;
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for name in names.clone() {
        let (service, gate) = (Arc::clone(&service), Arc::clone(&gate));
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            service
                .create(CreateShare {
                    name,
                    size_bytes: 10 << 20,
                    inode_limit: None,
                    labels: Default::default(),
                    layout: None,
                    compression: None,
                })
                .await?;
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let create = started.elapsed();
    let started = Instant::now();
    for name in names {
        let (service, gate) = (Arc::clone(&service), Arc::clone(&gate));
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            service.delete(&name, DeleteMode::Purge).await?;
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let delete = started.elapsed();
    let report = serde_json::json!({
        "count": count,
        "concurrency": concurrency,
        "create_secs": create.as_secs_f64(),
        "delete_secs": delete.as_secs_f64(),
        "create_per_sec": f64::from(count) / create.as_secs_f64(),
        "delete_per_sec": f64::from(count) / delete.as_secs_f64(),
    });
    println!("{report}");
    Ok(())
}

fn parse(kind: &str, file: &PathBuf, rounds: u32) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)?;
    let lines = text.lines().count();
    let started = Instant::now();
    let mut items = 0usize;
    for _ in 0..rounds {
        items = match kind {
            "quota" => lustre_model::parse_lfs_quota_all(&text)?.len(),
            "nodemap" => lustre_model::parse_nodemap_params(&text)?.nodemaps.len(),
            other => anyhow::bail!("unknown kind {other:?}: quota or nodemap"),
        };
    }
    let secs = started.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "kind": kind,
        "lines": lines,
        "items": items,
        "rounds": rounds,
        "lines_per_sec": (lines as f64 * f64::from(rounds)) / secs,
        "mb_per_sec": (text.len() as f64 * f64::from(rounds)) / secs / 1e6,
    });
    println!("{report}");
    Ok(())
}
