//! `lustrekit hsm ...`: the command line of the data mover.
//!
//! The binary wires its `hsm` subcommand to [`run`], passing its global `--json` flag. Every
//! command works on files, and on trees with `-r`. Progress bars go to stderr (only when it
//! is a terminal); `--json` prints one report object on stdout. A command where some paths
//! failed prints its report, then fails with [`PartialFailure`] (exit code 1 in the binary).
//!
//! The store comes from `--store` or `LUSTREKIT_HSM_STORE`; the namespace root (the
//! directory object keys are relative to) from `--root` or `LUSTREKIT_HSM_ROOT`, default the
//! current directory. The backend for the root is the `local` backend.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::engine::{FileOp, HsmEngine, OpReport, PathError, TreeReport};
use crate::import::{ConflictMode, ImportOptions};
use crate::metrics::Metrics;
use crate::store::{ArchiveStore, RetryPolicy};
use crate::{EngineConfig, HsmError};

/// `lustrekit hsm ...`.
#[derive(Debug, Args)]
pub struct HsmArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: HsmCommand,
}

/// Options every `hsm` command takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The archive store: `file:///dir`, `s3://bucket/prefix?endpoint=...`,
    /// `az://container/prefix?use_emulator=true`, `gs://bucket/prefix`.
    #[arg(long, env = "LUSTREKIT_HSM_STORE", global = true)]
    pub store: Option<String>,
    /// The filesystem root object keys are relative to (default: the current directory).
    #[arg(long, env = "LUSTREKIT_HSM_ROOT", global = true)]
    pub root: Option<PathBuf>,
    /// The HSM archive ID recorded on files.
    #[arg(long, default_value_t = 1, global = true)]
    pub archive_id: u32,
    /// Files worked on at once.
    #[arg(long, short = 'j', default_value_t = 8, global = true)]
    pub concurrency: usize,
    /// Parts in flight per file (multipart uploads and ranged GETs).
    #[arg(long, default_value_t = 4, global = true)]
    pub part_concurrency: usize,
    /// Multipart part and ranged-GET size (e.g. `8MiB`; S3 needs at least 5 MiB).
    #[arg(long, default_value = "8MiB", value_parser = parse_size, global = true)]
    pub part_size: u64,
    /// Cap on bytes per second per file copy (e.g. `100MiB`).
    #[arg(long, value_parser = parse_size, global = true)]
    pub bandwidth: Option<u64>,
    /// Stop starting new work once more than this many paths failed.
    #[arg(long, global = true)]
    pub max_errors: Option<usize>,
    /// No progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Which filesystem the files are on: `local` (a directory, `--root`) or `config` (the
    /// backend of the lustrekit configuration file, e.g. a real Lustre through `lfs hsm_*`;
    /// `--root` is then its client mount point).
    #[arg(long = "backend", value_enum, default_value_t = BackendSource::Local, global = true)]
    pub backend_source: BackendSource,
    /// The backend opened by the caller when `--backend config` (the binary fills it in).
    #[arg(skip)]
    pub backend: InjectedBackend,
}

/// Where the backend of `hsm` commands comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendSource {
    Local,
    Config,
}

/// A backend opened by the caller, handed to the CLI.
#[derive(Clone, Default)]
pub struct InjectedBackend(pub Option<Arc<dyn backend::Filesystem>>);

impl std::fmt::Debug for InjectedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(fs) => write!(f, "InjectedBackend({})", fs.kind_name()),
            None => f.write_str("InjectedBackend(none)"),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum HsmCommand {
    /// Copy files to the archive and mark them archived.
    Archive(PathArgs),
    /// Free the data of archived, unchanged files (keeping size and metadata). On `local`
    /// it refuses unless a restore daemon watches the filesystem (see `--unguarded`).
    Release(ReleaseArgs),
    /// Bring released files' data back from the archive.
    Restore(PathArgs),
    /// Delete the archived copies.
    Remove(PathArgs),
    /// Mark files dirty (changed since they were archived).
    Dirty(PathArgs),
    /// Print the HSM state, as `lfs hsm_state` does.
    State(PathArgs),
    /// Import a container or prefix into a directory as released stubs.
    Import(ImportArgs),
    /// Archive what is new or changed under a directory since the last export.
    Export(ExportArgs),
    /// Run the policy engine.
    Policy(PolicyArgs),
    /// Restore released files when they are read (fanotify pre-content, `local` backend).
    RestoreDaemon(DaemonArgs),
    /// Serve the Lustre HSM coordinator as a copytool (needs liblustreapi at run time).
    Copytool(CopytoolArgs),
    /// Delete archived versions that no file pins any more and that were set aside longer
    /// ago than the grace period; reports the bytes freed.
    Gc(GcArgs),
}

/// `hsm gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Report what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep versions set aside more recently than this (e.g. `24h`, `30m`, `0s`).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
}

#[derive(Debug, Clone, Args)]
pub struct PathArgs {
    /// Files (or, with -r, directories).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Work on whole trees.
    #[arg(short = 'r', long)]
    pub recursive: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The directory the stubs go into (made if missing).
    #[arg(default_value = ".")]
    pub target: PathBuf,
    /// Only objects under this prefix (below the store's own prefix).
    #[arg(long)]
    pub prefix: Option<String>,
    /// What to do with entries that already exist.
    #[arg(long, value_enum, default_value_t = ConflictMode::Fail)]
    pub conflict: ConflictMode,
    /// Owner of the stubs (default: the target directory's owner). With --preserve-owner,
    /// only of objects whose metadata names none.
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group of the stubs (default: the target directory's group), as --uid.
    #[arg(long)]
    pub gid: Option<u32>,
    /// Take owner and group from object metadata. Without it every entry belongs to the
    /// target directory's owner (or --uid/--gid): an object cannot make a root-owned file.
    #[arg(long)]
    pub preserve_owner: bool,
    /// Keep setuid/setgid bits (and a file's sticky bit) from object metadata. Without it
    /// they are dropped and counted: an object cannot make a setuid program.
    #[arg(long)]
    pub preserve_setid: bool,
    /// Also apply xattrs recorded in objects with this name or namespace (repeatable, e.g.
    /// `security.selinux`, `trusted.`). Without it only `user.*` is applied; the others are
    /// dropped and counted. Our own `trusted.lustrekit.*`/`user.lustrekit.*` never are.
    #[arg(long = "xattr-allow", value_name = "NAME_OR_PREFIX")]
    pub xattr_allow: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The directory to export (default: the root).
    pub dir: Option<PathBuf>,
    /// What to do with objects that exist for files we never archived.
    #[arg(long, value_enum, default_value_t = ConflictMode::Fail)]
    pub conflict: ConflictMode,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// One pass: archive and release what the rules select (or, dry, list it).
    Run(PolicyRunArgs),
    /// Passes on change events (fanotify on `local`) and on an interval, until stopped.
    Watch(PolicyWatchArgs),
}

/// What `--unguarded` says in the help of `release` and `policy`.
const UNGUARDED_HELP: &str = "Release even when no restore daemon watches the filesystem \
(`local`). RISK: until a daemon watches, a read of a released file returns zeros (its size \
in NUL bytes, with success), not its data. Lustre needs no daemon (its kernel holds reads).";

#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub paths: PathArgs,
    #[arg(long, help = UNGUARDED_HELP)]
    pub unguarded: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PolicyRunArgs {
    /// The policy file (TOML).
    pub config: PathBuf,
    /// List what would be done; change nothing (overrides the file's `dry_run`).
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, help = UNGUARDED_HELP)]
    pub unguarded: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PolicyWatchArgs {
    #[command(flatten)]
    pub run: PolicyRunArgs,
    /// Serve Prometheus metrics at this address (`GET /metrics`).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

/// `restore-daemon`: its watch lock goes to `$LUSTREKIT_RUN_DIR` (default `/run/lustrekit`),
/// where `release` looks for it. To restart without a window, start the new daemon, wait
/// until it says it watches, then stop the old one.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Restores at once.
    #[arg(long, default_value_t = 4)]
    pub restores: usize,
    /// Reads held at once, each an open descriptor (0: derived from the descriptor limit);
    /// more wait in the kernel.
    #[arg(long, default_value_t = 0)]
    pub max_held_events: usize,
    /// How long one restore may take before its reads fail with EIO (e.g. `10m`, `90s`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub restore_timeout: Duration,
    /// On stop, how long restores in flight may finish (e.g. `30s`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub stop_grace: Duration,
    /// Threads reading fanotify events.
    #[arg(long, default_value_t = 4)]
    pub readers: usize,
    /// Serve Prometheus metrics at this address (`GET /metrics`).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, Args)]
pub struct CopytoolArgs {
    /// The Lustre client mount point.
    #[arg(long)]
    pub mnt: PathBuf,
    /// Archive IDs served (none: all).
    #[arg(long = "archive")]
    pub archives: Vec<u32>,
    /// The liblustreapi shared object to load.
    #[arg(long, default_value = "liblustreapi.so.1")]
    pub lib: String,
    /// Serve Prometheus metrics at this address (`GET /metrics`).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

/// Some paths failed; the report was printed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {failed} of {total} paths failed{}", if *.stopped { " (stopped early: --max-errors)" } else { "" })]
pub struct PartialFailure {
    pub op: String,
    pub failed: usize,
    pub total: usize,
    pub stopped: bool,
}

/// `8MiB`, `16k`, `2G`, `1000` → bytes (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: not a size (e.g. 8MiB, 512k, 1000)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("`{s}`: unknown unit `{other}`")),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("`{s}`: not a size"));
    }
    Ok((n * mult as f64) as u64)
}

/// `90s`, `10m`, `1h`, `600` (seconds) → a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: not a duration (e.g. 90s, 10m, 1h)"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        other => return Err(format!("`{s}`: unknown unit `{other}` (s, m, h)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}`: too long"))
}

/// The engine the common options describe: on the backend the caller injected, or on the
/// `local` backend at `--root`.
pub async fn engine(common: &CommonArgs) -> anyhow::Result<HsmEngine> {
    engine_with(common, false).await
}

/// [`engine`], saying whether releases may go on where no restore daemon watches.
pub async fn engine_with(
    common: &CommonArgs,
    allow_unguarded_release: bool,
) -> anyhow::Result<HsmEngine> {
    let spec = common
        .store
        .clone()
        .context("no archive store: pass --store URL or set LUSTREKIT_HSM_STORE")?;
    let (backend, root): (Arc<dyn backend::Filesystem>, PathBuf) = match &common.backend.0 {
        Some(fs) => {
            let root = common.root.clone().context(
                "--backend config needs --root: the filesystem's client mount point on this host",
            )?;
            (Arc::clone(fs), root)
        }
        None => {
            if common.backend_source == BackendSource::Config {
                anyhow::bail!("--backend config: no backend was opened from the configuration");
            }
            let root = match &common.root {
                Some(r) => r.clone(),
                None => std::env::current_dir().context("current directory")?,
            };
            let local = backend::local::LocalBackend::open(&root)
                .await
                .with_context(|| format!("opening the root {}", root.display()))?;
            let root = local.root().to_path_buf();
            (Arc::new(local), root)
        }
    };
    let retry = RetryPolicy::default();
    let store = ArchiveStore::open(&spec, &retry)?;
    let cfg = EngineConfig {
        root,
        archive_id: common.archive_id,
        part_size: common.part_size as usize,
        concurrency: common.part_concurrency,
        file_concurrency: common.concurrency,
        rate_limit_bytes_per_sec: common.bandwidth,
        retry,
        allow_unguarded_release,
    };
    Ok(HsmEngine::new(store, backend, cfg))
}

/// An absolute form of a path given on the command line: relative to the current
/// directory, with the parent's symlinks resolved (the last component is kept as it is, so
/// a symlink is archived as a symlink and a deleted file can still be named).
pub fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("current directory")?
            .join(p)
    };
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Ok(abs);
    };
    Ok(match parent.canonicalize() {
        Ok(parent) => parent.join(name),
        Err(_) => abs,
    })
}

/// The paths an operation works on: each path itself, and with `-r` everything beneath a
/// directory (regular files only, except for archive, which also records directories and
/// symlinks). Sorted, parents first.
fn expand(op: FileOp, args: &PathArgs) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for p in &args.paths {
        let abs = absolute(p)?;
        let md = std::fs::symlink_metadata(&abs);
        let is_dir = md.as_ref().is_ok_and(|m| m.is_dir());
        if is_dir && args.recursive {
            let archive = op == FileOp::Archive;
            let (found, errors) =
                crate::walk::walk_with(&abs, crate::walk::DEFAULT_WALK_WORKERS, |p, m| {
                    (m.is_file() || (archive && (m.is_dir() || m.is_symlink())))
                        .then(|| (p.to_path_buf(), if m.is_file() { m.len() } else { 0 }))
                })?;
            for (p, e) in errors {
                tracing::warn!(path = %p.display(), error = %e, "walk");
            }
            out.extend(found);
        } else if is_dir && op != FileOp::Archive && op != FileOp::Remove {
            bail!(
                "{}: is a directory (use -r for the files in it)",
                abs.display()
            );
        } else {
            out.push((abs, md.map(|m| m.len()).unwrap_or(0)));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Progress bars on stderr: files, and bytes for the copying operations.
struct Bars {
    files: ProgressBar,
    bytes: Option<ProgressBar>,
    seen: Mutex<HashMap<PathBuf, u64>>,
    _multi: MultiProgress,
}

impl Bars {
    fn new(op: &str, files: u64, bytes: Option<u64>, hidden: bool) -> Arc<Self> {
        let target = if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let multi = MultiProgress::with_draw_target(target);
        let fbar = multi.add(ProgressBar::new(files));
        fbar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {pos}/{len} files ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        fbar.set_prefix(op.to_string());
        let bbar = bytes.map(|b| {
            let bar = multi.add(ProgressBar::new(b));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix("data");
            bar
        });
        Arc::new(Self {
            files: fbar,
            bytes: bbar,
            seen: Mutex::new(HashMap::new()),
            _multi: multi,
        })
    }

    /// Bytes of one path so far (the engine reports cumulative figures per file).
    fn bytes_of(&self, path: &Path, done: u64) {
        let Some(b) = &self.bytes else { return };
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let last = seen.entry(path.to_path_buf()).or_insert(0);
        if done > *last {
            b.inc(done - *last);
            *last = done;
        }
    }

    fn finish_path(&self, path: &Path, total: u64) {
        self.bytes_of(path, total);
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(path);
        }
        self.files.inc(1);
    }

    fn finish(&self) {
        self.files.finish_and_clear();
        if let Some(b) = &self.bytes {
            b.finish_and_clear();
        }
    }
}

/// The `--json` report of a file operation.
#[derive(Debug, Serialize)]
struct OpSummary<'a> {
    op: &'a str,
    total: usize,
    done: usize,
    skipped: usize,
    failed: usize,
    bytes: u64,
    elapsed_ms: u64,
    bytes_per_sec: f64,
    files_per_sec: f64,
    stopped: bool,
    errors: &'a [PathError],
    items: &'a [OpReport],
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

async fn gc(common: &CommonArgs, args: &GcArgs, json: bool) -> anyhow::Result<()> {
    let engine = engine(common).await?;
    let report = engine
        .gc(&crate::gc::GcOptions {
            dry_run: args.dry_run,
            grace: args.grace,
        })
        .await?;
    if json {
        print_json(&report)?;
    } else {
        let verb = if report.dry_run {
            "would free"
        } else {
            "freed"
        };
        println!(
            "gc: {} files scanned, {} versions pinned; {} versions aside: {} pinned, {} in grace; {verb} {} ({})",
            report.files_scanned,
            report.pinned_versions,
            report.versions_seen,
            report.kept_pinned,
            report.kept_in_grace,
            report.freed,
            human_bytes(report.bytes_freed)
        );
        for e in &report.errors {
            eprintln!("{}: {}", e.path.display(), e.error);
        }
    }
    if !report.errors.is_empty() {
        anyhow::bail!(
            "{} files' pins could not be read; nothing was deleted",
            report.errors.len()
        );
    }
    Ok(())
}

/// Runs `lustrekit hsm ...`.
pub async fn run(args: HsmArgs, json: bool) -> anyhow::Result<()> {
    let common = args.common;
    match args.command {
        HsmCommand::Archive(a) => file_op(&common, FileOp::Archive, &a, false, json).await,
        HsmCommand::Release(a) => {
            file_op(&common, FileOp::Release, &a.paths, a.unguarded, json).await
        }
        HsmCommand::Restore(a) => file_op(&common, FileOp::Restore, &a, false, json).await,
        HsmCommand::Remove(a) => file_op(&common, FileOp::Remove, &a, false, json).await,
        HsmCommand::Dirty(a) => file_op(&common, FileOp::Dirty, &a, false, json).await,
        HsmCommand::State(a) => state(&common, &a, json).await,
        HsmCommand::Import(a) => import(&common, &a, json).await,
        HsmCommand::Export(a) => export(&common, &a, json).await,
        HsmCommand::Policy(p) => match p.command {
            PolicyCommand::Run(r) => policy_run(&common, &r, json).await,
            PolicyCommand::Watch(w) => policy_watch(&common, &w, json).await,
        },
        HsmCommand::RestoreDaemon(d) => restore_daemon(&common, &d).await,
        HsmCommand::Copytool(c) => copytool(&common, &c).await,
        HsmCommand::Gc(g) => gc(&common, &g, json).await,
    }
}

async fn file_op(
    common: &CommonArgs,
    op: FileOp,
    args: &PathArgs,
    unguarded: bool,
    json: bool,
) -> anyhow::Result<()> {
    let paths = expand(op, args)?;
    let total_bytes: u64 = paths.iter().map(|(_, n)| n).sum();
    let copies = matches!(op, FileOp::Archive | FileOp::Restore);
    let bars = Bars::new(
        op.name(),
        paths.len() as u64,
        copies.then_some(total_bytes),
        common.no_progress,
    );
    let b = bars.clone();
    let engine = engine_with(common, unguarded)
        .await?
        .with_progress(Arc::new(move |p| b.bytes_of(&p.path, p.done_bytes)));
    let sizes: HashMap<PathBuf, u64> = paths.iter().cloned().collect();
    let started = Instant::now();
    let list: Vec<PathBuf> = paths.into_iter().map(|(p, _)| p).collect();
    let total = list.len();
    let b = bars.clone();
    let report = engine
        .apply(op, list, common.max_errors, &move |p, r| {
            let n = match r {
                Ok(rep) => rep.bytes,
                Err(_) => sizes.get(p).copied().unwrap_or(0),
            };
            b.finish_path(p, n);
            if let Err(e) = r {
                b.files
                    .suspend(|| tracing::warn!(path = %p.display(), error = %e, "failed"));
            }
        })
        .await;
    bars.finish();
    print_op_report(op.name(), total, &report, started.elapsed(), json)
}

fn print_op_report(
    op: &str,
    total: usize,
    report: &TreeReport,
    took: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let secs = took.as_secs_f64().max(1e-9);
    if json {
        print_json(&OpSummary {
            op,
            total,
            done: report.done,
            skipped: report.skipped,
            failed: report.errors.len(),
            bytes: report.bytes,
            elapsed_ms: took.as_millis() as u64,
            bytes_per_sec: report.bytes as f64 / secs,
            files_per_sec: (report.done + report.skipped) as f64 / secs,
            stopped: report.stopped,
            errors: &report.errors,
            items: &report.items,
        })?;
    } else {
        for e in &report.errors {
            eprintln!("error: {}", e.error);
        }
        println!(
            "{op}: {} done, {} skipped, {} failed, {} in {:.2}s ({}/s, {:.0} files/s)",
            report.done,
            report.skipped,
            report.errors.len(),
            human_bytes(report.bytes),
            secs,
            human_bytes((report.bytes as f64 / secs) as u64),
            (report.done + report.skipped) as f64 / secs,
        );
    }
    if report.errors.is_empty() && !report.stopped {
        Ok(())
    } else {
        Err(PartialFailure {
            op: op.to_string(),
            failed: report.errors.len(),
            total,
            stopped: report.stopped,
        }
        .into())
    }
}

async fn state(common: &CommonArgs, args: &PathArgs, json: bool) -> anyhow::Result<()> {
    let engine = engine(common).await?;
    let paths = expand(FileOp::Release, args)?;
    let mut out = Vec::new();
    let mut failed = 0;
    for (p, _) in &paths {
        match engine.state(p).await {
            Ok(s) => {
                if !json {
                    println!("{}: {}", s.path.display(), s.text);
                }
                out.push(s);
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if json {
        print_json(&out)?;
    }
    if failed > 0 {
        return Err(PartialFailure {
            op: "state".into(),
            failed,
            total: paths.len(),
            stopped: false,
        }
        .into());
    }
    Ok(())
}

async fn import(common: &CommonArgs, args: &ImportArgs, json: bool) -> anyhow::Result<()> {
    let engine = engine(common).await?;
    let opts = ImportOptions {
        source_prefix: args.prefix.clone(),
        target: absolute(&args.target)?,
        conflict: args.conflict,
        max_errors: common.max_errors.unwrap_or(100),
        default_uid: args.uid,
        default_gid: args.gid,
        preserve_owner: args.preserve_owner,
        preserve_setid: args.preserve_setid,
        xattr_allow: args.xattr_allow.clone(),
    };
    let spinner = if common.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    spinner.set_message("importing");
    spinner.enable_steady_tick(Duration::from_millis(200));
    let report = engine.import(&opts).await?;
    spinner.finish_and_clear();
    let entries = report.files + report.dirs + report.symlinks;
    if json {
        print_json(&report)?;
    } else {
        for e in &report.errors {
            eprintln!("error: {}", e.error);
        }
        let secs = (report.elapsed_ms as f64 / 1000.0).max(1e-9);
        println!(
            "import: {} files, {} directories, {} symlinks, {} skipped, {} failed ({} as stubs) in {:.2}s ({:.0} stubs/s)",
            report.files,
            report.dirs,
            report.symlinks,
            report.skipped,
            report.errors.len(),
            human_bytes(report.bytes),
            secs,
            entries as f64 / secs
        );
        if report.setid_dropped > 0 {
            eprintln!(
                "import: setuid/setgid bits not applied on {} entries (--preserve-setid keeps them)",
                report.setid_dropped
            );
        }
        if report.xattrs_dropped > 0 {
            eprintln!(
                "import: {} xattrs not applied ({}); only user.* is, others with --xattr-allow",
                report.xattrs_dropped,
                report.xattrs_dropped_names.join(", ")
            );
        }
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(PartialFailure {
            op: "import".into(),
            failed: report.errors.len(),
            total: entries + report.skipped + report.errors.len(),
            stopped: report.stopped,
        }
        .into())
    }
}

async fn export(common: &CommonArgs, args: &ExportArgs, json: bool) -> anyhow::Result<()> {
    let engine = engine(common).await?;
    let dir = match &args.dir {
        Some(d) => absolute(d)?,
        None => engine.config().root.clone(),
    };
    let started = Instant::now();
    let report = engine.export(&dir, args.conflict).await?;
    let total = report.done + report.skipped + report.errors.len();
    print_op_report("export", total, &report, started.elapsed(), json)
}

async fn serve_metrics(
    addr: Option<SocketAddr>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    match addr {
        None => Ok(None),
        Some(a) => {
            let (bound, h) = crate::metrics::serve(a, metrics.clone())
                .await
                .with_context(|| format!("metrics listener on {a}"))?;
            tracing::info!(addr = %bound, "serving Prometheus metrics at /metrics");
            Ok(Some(h))
        }
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
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

async fn load_policy(args: &PolicyRunArgs) -> anyhow::Result<crate::policy::PolicyConfig> {
    let mut cfg = crate::policy::PolicyConfig::load(&args.config)?;
    if args.dry_run {
        cfg.dry_run = true;
    }
    Ok(cfg)
}

async fn policy_run(common: &CommonArgs, args: &PolicyRunArgs, json: bool) -> anyhow::Result<()> {
    let cfg = load_policy(args).await?;
    let engine = Arc::new(engine_with(common, args.unguarded).await?);
    let policy = crate::policy::Policy::new(engine, cfg)?;
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

async fn policy_watch(
    common: &CommonArgs,
    args: &PolicyWatchArgs,
    json: bool,
) -> anyhow::Result<()> {
    let cfg = load_policy(&args.run).await?;
    let engine = Arc::new(engine_with(common, args.run.unguarded).await?);
    let _server = serve_metrics(args.metrics_addr, engine.metrics()).await?;
    let policy = crate::policy::Policy::new(engine, cfg)?;
    let each = move |r: &crate::policy::PassReport| {
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

async fn restore_daemon(common: &CommonArgs, args: &DaemonArgs) -> anyhow::Result<()> {
    let engine = Arc::new(engine(common).await?);
    let _server = serve_metrics(args.metrics_addr, engine.metrics()).await?;
    let daemon = crate::restore_daemon::RestoreDaemon::start(
        engine,
        crate::restore_daemon::DaemonConfig {
            restores: args.restores,
            max_held_events: args.max_held_events,
            restore_timeout: args.restore_timeout,
            readers: args.readers,
            stop_grace: args.stop_grace,
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

async fn copytool(common: &CommonArgs, args: &CopytoolArgs) -> anyhow::Result<()> {
    let api = crate::copytool::LustreApi::load(&args.lib).map_err(|e| {
        anyhow::anyhow!("copytool mode needs liblustreapi, which cannot be loaded: {e}")
    })?;
    let mut common = common.clone();
    if common.root.is_none() {
        common.root = Some(args.mnt.clone());
    }
    let engine = Arc::new(engine(&common).await?);
    let _server = serve_metrics(args.metrics_addr, engine.metrics()).await?;
    crate::copytool::run(api, engine, &args.mnt, &args.archives, shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Top {
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Debug, Subcommand)]
    enum Cmd {
        Hsm(HsmArgs),
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("16k"), Ok(16 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert!(parse_size("abc").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn command_line_parses() {
        let t = Top::try_parse_from([
            "lk",
            "hsm",
            "archive",
            "-r",
            "a",
            "b",
            "--store",
            "file:///x",
            "-j",
            "3",
            "--json",
        ])
        .expect("parse");
        assert!(t.json);
        let Cmd::Hsm(h) = t.cmd;
        assert_eq!(h.common.store.as_deref(), Some("file:///x"));
        assert_eq!(h.common.concurrency, 3);
        match h.command {
            HsmCommand::Archive(p) => {
                assert!(p.recursive);
                assert_eq!(p.paths.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        let t = Top::try_parse_from([
            "lk",
            "hsm",
            "import",
            "dir",
            "--conflict",
            "overwrite-if-dirty",
            "--max-errors",
            "5",
        ])
        .expect("parse");
        let Cmd::Hsm(h) = t.cmd;
        assert_eq!(h.common.max_errors, Some(5));
        match h.command {
            HsmCommand::Import(i) => assert_eq!(i.conflict, ConflictMode::OverwriteIfDirty),
            other => panic!("{other:?}"),
        }
        let t = Top::try_parse_from([
            "lk",
            "hsm",
            "policy",
            "watch",
            "p.toml",
            "--metrics-addr",
            "127.0.0.1:9100",
        ])
        .expect("parse");
        let Cmd::Hsm(h) = t.cmd;
        assert!(matches!(
            h.command,
            HsmCommand::Policy(PolicyArgs {
                command: PolicyCommand::Watch(_)
            })
        ));
        assert!(Top::try_parse_from(["lk", "hsm", "archive"]).is_err());
    }
}
