//! The engine: archive, release, restore, remove, state and dirty marking of single files,
//! over one archive store and one backend.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::Filesystem;
use lustre_model::{HS_DIRTY, HsmFlags, HsmState};
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use crate::error::{HsmError, Result};
use crate::metrics::Metrics;
use crate::posix;
use crate::store::{ArchiveStore, RetryPolicy};

mod archive;
mod batch;
mod copy;
mod release;
mod remove;
mod restore;

pub use archive::Previous;
pub use batch::{FileOp, PathError, TreeOp, TreeReport};
pub(crate) use copy::same_entry;
pub use copy::{CopyCounters, CopyProgress};

/// How the engine moves data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// The namespace root: keys are `<store prefix>/<path below root>`.
    pub root: PathBuf,
    /// The HSM archive ID recorded on files (Lustre's `archive_id`).
    pub archive_id: u32,
    /// Multipart part size and ranged-GET size (bytes). S3 needs at least 5 MiB.
    pub part_size: usize,
    /// Parts in flight per file (upload and download).
    pub concurrency: usize,
    /// Files worked on at once by tree operations.
    pub file_concurrency: usize,
    /// Cap on bytes per second per file copy; `None` for no cap.
    pub rate_limit_bytes_per_sec: Option<u64>,
    pub retry: RetryPolicy,
    /// Release even where a released file would read as zeros: a backend whose reads are not
    /// held by the filesystem (`local`) with no restore daemon watching (see [`crate::guard`]).
    pub allow_unguarded_release: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            archive_id: 1,
            part_size: 8 << 20,
            concurrency: 4,
            file_concurrency: 8,
            rate_limit_bytes_per_sec: None,
            retry: RetryPolicy::default(),
            allow_unguarded_release: false,
        }
    }
}

/// Progress of a long copy.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub op: &'static str,
    pub path: PathBuf,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done,
    Skipped,
}

/// The report of one operation on one path (`--json` output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpReport {
    pub op: String,
    pub path: PathBuf,
    pub key: String,
    pub outcome: Outcome,
    /// Why it was skipped, or notes (e.g. xattrs too big for the store's metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    pub elapsed_ms: u64,
}

/// The state of one file (`lustrekit hsm state --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateReport {
    pub path: PathBuf,
    pub state: HsmState,
    /// As `lfs hsm_state` prints it after `path: `.
    pub text: String,
    /// Released, and nothing keeps its reads from returning zeros (`local` with no restore
    /// daemon watching): see [`crate::guard`].
    #[serde(default)]
    pub unguarded: bool,
}

fn flags(bits: u32) -> HsmFlags {
    HsmFlags::from_bits(bits)
}

/// The name prefix of restore temporaries (the tree walk skips them).
const RESTORE_TEMP_PREFIX: &str = ".lustrekit-restore.";

/// The data mover.
pub struct HsmEngine {
    store: ArchiveStore,
    backend: Arc<dyn Filesystem>,
    cfg: EngineConfig,
    progress: Option<ProgressFn>,
    metrics: Arc<Metrics>,
}

impl HsmEngine {
    /// The process's signal dispositions are the caller's: a process that releases or
    /// restores calls [`ignore_lease_break_signal`] first.
    pub fn new(store: ArchiveStore, backend: Arc<dyn Filesystem>, cfg: EngineConfig) -> Self {
        let mut cfg = cfg;
        cfg.part_size = cfg.part_size.max(64 << 10);
        cfg.concurrency = cfg.concurrency.max(1);
        cfg.file_concurrency = cfg.file_concurrency.max(1);
        Self {
            store,
            backend,
            cfg,
            progress: None,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Calls `f` as long copies advance.
    pub fn with_progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }

    /// Shares a metrics registry.
    pub fn with_metrics(mut self, m: Arc<Metrics>) -> Self {
        self.metrics = m;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn store(&self) -> &ArchiveStore {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn backend(&self) -> &Arc<dyn Filesystem> {
        &self.backend
    }

    /// The absolute path and the components below the root; `path` may be relative to
    /// the root. `..` is refused outright.
    pub fn resolve(&self, path: &Path) -> Result<(PathBuf, Vec<String>)> {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.cfg.root.join(path)
        };
        let outside = || HsmError::OutsideRoot {
            path: abs.clone(),
            root: self.cfg.root.clone(),
        };
        let rel = abs.strip_prefix(&self.cfg.root).map_err(|_| outside())?;
        let mut comps = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => comps.push(
                    n.to_str()
                        .ok_or_else(|| HsmError::refused(&abs, "name is not UTF-8"))?
                        .to_string(),
                ),
                Component::CurDir => {}
                _ => return Err(outside()),
            }
        }
        Ok((abs, comps))
    }

    /// The object key of a path.
    pub fn key_of(&self, path: &Path) -> Result<ObjPath> {
        Ok(self.locate(path)?.1)
    }

    /// The absolute path and the object key of `path`, resolved once.
    fn locate(&self, path: &Path) -> Result<(PathBuf, ObjPath)> {
        let (abs, comps) = self.resolve(path)?;
        let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
        let key = self.store.key_for(&refs);
        Ok((abs, key))
    }

    /// Opens `path` beneath the root (see [`posix::open_entry`]) with its object key: every
    /// later step acts on the descriptors, so a tenant swapping a directory for a symlink
    /// mid-operation cannot point root at a file outside the namespace.
    async fn open(&self, path: &Path) -> Result<(posix::Entry, ObjPath)> {
        let (abs, comps) = self.resolve(path)?;
        let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
        let key = self.store.key_for(&refs);
        let root = self.cfg.root.clone();
        let entry = blocking(move || posix::open_entry(&root, &comps, &abs)).await?;
        Ok((entry, key))
    }
    fn emit(&self, op: &'static str, path: &Path, done: u64, total: u64) {
        if let Some(p) = &self.progress {
            p(&Progress {
                op,
                path: path.to_path_buf(),
                done_bytes: done,
                total_bytes: total,
            });
        }
    }

    async fn throttle(&self, started: Instant, done: u64) {
        if let Some(rate) = self.cfg.rate_limit_bytes_per_sec.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(done as f64 / rate as f64);
            let el = started.elapsed();
            if due > el {
                tokio::time::sleep(due - el).await;
            }
        }
    }

    fn finish(
        &self,
        op: &'static str,
        started: Instant,
        res: Result<OpReport>,
    ) -> Result<OpReport> {
        let took = started.elapsed();
        match &res {
            Ok(r) => {
                self.metrics.record(op, true, r.bytes, took);
                tracing::info!(op, path = %r.path.display(), outcome = ?r.outcome, bytes = r.bytes, ms = took.as_millis() as u64, "hsm");
            }
            Err(e) => {
                self.metrics.record(op, false, 0, took);
                tracing::warn!(op, error = %e, "hsm operation failed");
            }
        }
        res.map(|mut r| {
            r.elapsed_ms = took.as_millis() as u64;
            r
        })
    }

    fn report(
        op: &str,
        path: &Path,
        key: &ObjPath,
        outcome: Outcome,
        detail: Option<String>,
    ) -> OpReport {
        OpReport {
            op: op.to_string(),
            path: path.to_path_buf(),
            key: key.to_string(),
            outcome,
            detail,
            bytes: 0,
            checksum: None,
            elapsed_ms: 0,
        }
    }

    /// The HSM state of a file.
    pub async fn state(&self, path: &Path) -> Result<StateReport> {
        let (abs, _) = self.resolve(path)?;
        let state = self.backend.hsm_state(&abs).await?;
        let unguarded = {
            // The watch probe stats the file and reads lock files: off the async workers.
            let (caps, st, a) = (self.backend.capabilities(), state, abs.clone());
            blocking(move || Ok(crate::guard::unguarded(&caps, &st, &a))).await?
        };
        let mut text = state.to_string();
        if unguarded {
            text = format!("{text}, {}", crate::guard::UNGUARDED_TEXT);
        }
        Ok(StateReport {
            text,
            path: abs,
            state,
            unguarded,
        })
    }

    /// Marks a file dirty (it changed since it was archived).
    pub async fn mark_dirty(&self, path: &Path) -> Result<OpReport> {
        let (abs, key) = self.locate(path)?;
        self.backend
            .hsm_mark(&abs, flags(HS_DIRTY), flags(0), None)
            .await?;
        Ok(Self::report("dirty", &abs, &key, Outcome::Done, None))
    }
}

/// Release and restore hold write leases (`F_SETLEASE`). When another open breaks one, the
/// kernel signals the holder with SIGIO, whose default action ends the process: a reader
/// opening a file mid-release (or a fanotify listener opening an event fd) would kill the
/// mover. Ignoring SIGIO keeps lease breaks working (the kernel still waits for us to let
/// go, up to `lease-break-time`). A handler someone else installed is left alone.
///
/// It changes the whole process, so the library never calls it: the `lustrekit` binary
/// does (its `hsm` commands and the demo), and so must any other program that uses an
/// [`HsmEngine`] or runs a restore daemon.
pub fn ignore_lease_break_signal() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: reading and setting the disposition of SIGIO; SIG_IGN needs no handler.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGIO, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_DFL
            {
                libc::signal(libc::SIGIO, libc::SIG_IGN);
            }
        }
    });
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HsmError::from_join("blocking task", e))?
}
