//! The policy engine: `lustrekit hsm policy run|watch`.
//!
//! A pass scans the policy's directory (a parallel bounded walk), reads each file's HSM
//! state, then:
//! 1. **archives** the files the `[archive]` rule selects: regular files not modified for
//!    `older_than_minutes`, inside the size bounds, matching `include` (if any) and no
//!    `exclude` glob, and not already archived-and-clean, released or `never_archive`;
//! 2. **releases**, when usage passes `high_watermark`, the least recently used (oldest
//!    atime) archived, clean, present files until usage is projected below
//!    `low_watermark`. Usage is that of the filesystem, of a share's project quota, or of the
//!    bytes allocated under the policy path against a `capacity`.
//!
//! Every operation waits for the rate limiter. A dry run lists the actions and changes
//! nothing. `watch` runs a pass at start, after change events settle (debounce), and at
//! least every `interval_secs` (ages pass without events, so the interval is needed even
//! with events); without fanotify it says so and keeps to the interval.

pub mod config;
pub mod rate;
pub mod watch;

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use globset::GlobSet;
use lustre_model::{HsmState, ProjectId, RelPath};
use serde::Serialize;

pub use config::{ArchiveRule, PolicyConfig, ReleaseRule, Size, UsageScope, WatchConfig};
pub use rate::RateLimiter;

use crate::engine::{HsmEngine, Outcome, PathError, blocking};
use crate::error::{HsmError, Result};
use crate::metrics::StateCount;

/// A file the scan found.
#[derive(Debug, Clone)]
struct Candidate {
    path: PathBuf,
    rel: PathBuf,
    size: u64,
    mtime_ns: i64,
    atime_ns: i64,
    /// Bytes of allocated blocks (what releasing frees).
    alloc: u64,
}

/// One thing a pass did, or (dry run) would do.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub op: &'static str,
    pub path: PathBuf,
    pub bytes: u64,
    /// False in a dry run, or when the engine skipped it.
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What release measured and chose.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseSummary {
    pub scope: UsageScope,
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub used_percent: f64,
    pub high_watermark: f64,
    pub low_watermark: f64,
    /// Usage passed the high watermark.
    pub triggered: bool,
    /// Bytes the chosen files free (their allocated blocks).
    pub freeing_bytes: u64,
    /// Usage once they are released, as projected.
    pub projected_percent: f64,
    /// No more candidates, and usage stays above the low watermark.
    pub short_of_target: bool,
}

/// The report of one pass.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    /// `run`, `start`, `change` or `interval`.
    pub trigger: String,
    pub dry_run: bool,
    pub scanned_files: usize,
    pub actions: Vec<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseSummary>,
    pub errors: Vec<PathError>,
    pub elapsed_ms: u64,
    /// The scanned files by HSM state once the pass's actions are done.
    pub states: StateSummary,
}

/// Files and bytes (their sizes) by HSM state, as a pass leaves them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StateSummary {
    /// Released: the data is only in the store.
    pub released: StateCount,
    /// Archived and unchanged since: present, with a good copy in the store.
    pub archived: StateCount,
    /// Archived, then changed: the store's copy is stale.
    pub dirty: StateCount,
    /// Never archived.
    pub unarchived: StateCount,
}

impl StateSummary {
    /// The counts in [`crate::metrics::VOLUME_STATES`] order.
    pub fn as_array(&self) -> [StateCount; 4] {
        [self.released, self.archived, self.dirty, self.unarchived]
    }

    fn count(&mut self, flags: &lustre_model::HsmFlags, size: u64) {
        let slot = if flags.released {
            &mut self.released
        } else if flags.archived && flags.dirty {
            &mut self.dirty
        } else if flags.archived {
            &mut self.archived
        } else {
            &mut self.unarchived
        };
        slot.files += 1;
        slot.bytes += size;
    }
}

impl PassReport {
    /// Human-readable lines.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let verb = |op: &str, done: bool| match (op, done, self.dry_run) {
            (_, _, true) => format!("would {op}"),
            ("archive", true, _) => "archived".to_string(),
            ("release", true, _) => "released".to_string(),
            (op, _, _) => format!("skipped {op}"),
        };
        for a in &self.actions {
            let _ = writeln!(
                s,
                "{} {} ({} bytes){}",
                verb(a.op, a.done),
                a.path.display(),
                a.bytes,
                a.detail
                    .as_ref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
        }
        for e in &self.errors {
            let _ = writeln!(s, "error: {}", e.error);
        }
        if let Some(r) = &self.release {
            let _ = writeln!(
                s,
                "usage {:.1}% of {} bytes (high {}%, low {}%){}",
                r.used_percent,
                r.total_bytes,
                r.high_watermark,
                r.low_watermark,
                if r.triggered {
                    format!(
                        ": releasing {} bytes, projected {:.1}%{}",
                        r.freeing_bytes,
                        r.projected_percent,
                        if r.short_of_target {
                            " (not enough archived files to reach the low watermark)"
                        } else {
                            ""
                        }
                    )
                } else {
                    String::new()
                }
            );
        }
        let archived = self.actions.iter().filter(|a| a.op == "archive").count();
        let released = self.actions.iter().filter(|a| a.op == "release").count();
        let _ = writeln!(
            s,
            "policy pass ({}{}): {} files scanned, {archived} to archive, {released} to release, {} errors, {} ms",
            self.trigger,
            if self.dry_run { ", dry run" } else { "" },
            self.scanned_files,
            self.errors.len(),
            self.elapsed_ms
        );
        s
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn path_error(path: &Path, e: &HsmError) -> PathError {
    PathError {
        path: path.to_path_buf(),
        kind: e.kind().into(),
        error: e.to_string(),
    }
}

/// How a pass of [`Policy::watch_outcomes`] ended: its report, or its error and how long
/// it ran.
pub type PassOutcome<'a> = std::result::Result<&'a PassReport, (&'a HsmError, Duration)>;

/// A policy bound to an engine.
pub struct Policy {
    engine: Arc<HsmEngine>,
    cfg: PolicyConfig,
    dir: PathBuf,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    limiter: RateLimiter,
}

impl Policy {
    pub fn new(engine: Arc<HsmEngine>, cfg: PolicyConfig) -> Result<Self> {
        cfg.validate()?;
        let dir = match &cfg.path {
            None => engine.config().root.clone(),
            Some(p) => engine.resolve(p)?.0,
        };
        let (include, exclude) = match &cfg.archive {
            Some(a) => (
                config::globset("archive.include", &a.include)?,
                config::globset("archive.exclude", &a.exclude)?,
            ),
            None => (None, None),
        };
        let limiter = RateLimiter::new(cfg.rate_limit);
        Ok(Self {
            engine,
            cfg,
            dir,
            include,
            exclude,
            limiter,
        })
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Operations the rate limiter let through so far.
    pub fn operations(&self) -> u64 {
        self.limiter.granted()
    }

    async fn scan(&self, errors: &mut Vec<PathError>) -> Result<Vec<(Candidate, HsmState)>> {
        let (dir, workers) = (self.dir.clone(), self.cfg.scan_workers);
        let (found, errs) = blocking(move || {
            crate::walk::walk_with(&dir, workers, |p, m| {
                m.is_file().then(|| Candidate {
                    path: p.to_path_buf(),
                    rel: p.strip_prefix(&dir).unwrap_or(p).to_path_buf(),
                    size: m.len(),
                    mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                    atime_ns: m.atime() * 1_000_000_000 + m.atime_nsec(),
                    alloc: m.blocks() * 512,
                })
            })
        })
        .await?;
        errors.extend(errs.iter().map(|(p, e)| path_error(p, e)));
        let backend = self.engine.backend().clone();
        let states: Vec<_> = futures::stream::iter(found.into_iter().map(|c| {
            let backend = backend.clone();
            async move {
                let st = backend.hsm_state(&c.path).await;
                (c, st)
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
        let mut out = Vec::with_capacity(states.len());
        for (c, st) in states {
            match st {
                Ok(st) => out.push((c, st)),
                Err(e) => errors.push(path_error(&c.path, &HsmError::from(e))),
            }
        }
        out.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        Ok(out)
    }

    fn wants_archive(&self, rule: &ArchiveRule, c: &Candidate, st: &HsmState, now: i64) -> bool {
        let f = &st.flags;
        if f.released || f.no_archive || (f.archived && f.exists && !f.dirty) {
            return false;
        }
        let age_ns = now.saturating_sub(c.mtime_ns);
        if (age_ns as f64) < rule.older_than_minutes * 60e9 {
            return false;
        }
        if rule.min_size.is_some_and(|m| c.size < m.0)
            || rule.max_size.is_some_and(|m| c.size > m.0)
        {
            return false;
        }
        if let Some(inc) = &self.include
            && !inc.is_match(&c.rel)
        {
            return false;
        }
        if let Some(exc) = &self.exclude
            && exc.is_match(&c.rel)
        {
            return false;
        }
        true
    }

    /// (used, total) bytes in the release rule's scope.
    async fn usage(
        &self,
        scope: &UsageScope,
        files: &[(Candidate, HsmState)],
    ) -> Result<(u64, u64)> {
        match scope {
            UsageScope::Filesystem => {
                let c = self.engine.backend().capacity().await?;
                Ok((c.used_bytes, c.total_bytes))
            }
            UsageScope::Tree { capacity_bytes } => {
                Ok((files.iter().map(|(c, _)| c.alloc).sum(), *capacity_bytes))
            }
            UsageScope::Share { dir } => {
                let rel = RelPath::parse(dir)
                    .map_err(|e| HsmError::Policy(format!("release.share `{dir}`: {e}")))?;
                let backend = self.engine.backend();
                let id: ProjectId = backend.project_of(&rel).await?.ok_or_else(|| {
                    HsmError::Policy(format!("release.share `{dir}`: no project ID on it"))
                })?;
                let q = backend.quota(&rel, id).await?;
                let total = if q.limits.block_hard_bytes > 0 {
                    q.limits.block_hard_bytes
                } else {
                    q.limits.block_soft_bytes
                };
                if total == 0 {
                    return Err(HsmError::Policy(format!(
                        "release.share `{dir}`: the share has no block quota to measure against"
                    )));
                }
                Ok((q.usage.used_bytes, total))
            }
        }
    }

    /// One pass.
    pub async fn run_pass(&self) -> Result<PassReport> {
        self.pass("run").await
    }

    async fn pass(&self, trigger: &str) -> Result<PassReport> {
        let started = Instant::now();
        let dry = self.cfg.dry_run;
        let mut errors = Vec::new();
        let mut files = self.scan(&mut errors).await?;
        let mut actions = Vec::new();
        let conc = self.engine.config().file_concurrency;

        // 1. Archive.
        if let Some(rule) = &self.cfg.archive {
            let now = now_ns();
            let chosen: Vec<usize> = files
                .iter()
                .enumerate()
                .filter(|(_, (c, st))| self.wants_archive(rule, c, st, now))
                .map(|(i, _)| i)
                .collect();
            let done: Vec<_> = futures::stream::iter(chosen.into_iter().map(|i| {
                let path = files[i].0.path.clone();
                let size = files[i].0.size;
                async move {
                    if dry {
                        return (i, path, size, Ok(None));
                    }
                    self.limiter.acquire().await;
                    let r = self.engine.archive(&path).await.map(Some);
                    (i, path, size, r)
                }
            }))
            .buffer_unordered(conc)
            .collect()
            .await;
            for (i, path, size, r) in done {
                match r {
                    Ok(None) => actions.push(Action {
                        op: "archive",
                        path,
                        bytes: size,
                        done: false,
                        detail: None,
                    }),
                    Ok(Some(rep)) => {
                        let ok = rep.outcome == Outcome::Done;
                        if ok {
                            // Archived and clean now: a release candidate in this pass.
                            let f = &mut files[i].1.flags;
                            f.archived = true;
                            f.exists = true;
                            f.dirty = false;
                        }
                        actions.push(Action {
                            op: "archive",
                            path,
                            bytes: rep.bytes,
                            done: ok,
                            detail: rep.detail,
                        });
                    }
                    Err(e) => errors.push(path_error(&path, &e)),
                }
            }
        }

        // 2. Release down to the low watermark.
        let mut release = None;
        if let (Some(rule), Some(scope)) = (&self.cfg.release, self.cfg.usage_scope()) {
            match self.usage(&scope, &files).await {
                Err(e) => errors.push(path_error(&self.dir, &e)),
                Ok((used, total)) => {
                    let pct = |u: u64| {
                        if total == 0 {
                            0.0
                        } else {
                            u as f64 * 100.0 / total as f64
                        }
                    };
                    let triggered = pct(used) > rule.high_watermark;
                    let mut chosen = Vec::new();
                    let mut freeing = 0u64;
                    if triggered {
                        let target = (rule.low_watermark / 100.0 * total as f64) as u64;
                        let need = used.saturating_sub(target);
                        let mut cands: Vec<&(Candidate, HsmState)> = files
                            .iter()
                            .filter(|(c, st)| {
                                let f = &st.flags;
                                f.archived
                                    && f.exists
                                    && !f.dirty
                                    && !f.released
                                    && !f.no_release
                                    && c.alloc > 0
                                    && rule.min_size.is_none_or(|m| c.size >= m.0)
                            })
                            .collect();
                        cands.sort_by(|a, b| {
                            a.0.atime_ns
                                .cmp(&b.0.atime_ns)
                                .then_with(|| a.0.path.cmp(&b.0.path))
                        });
                        for (c, _) in cands {
                            if freeing >= need {
                                break;
                            }
                            // A release frees the data, not the blocks that stay with the
                            // stub (an external xattr block on ext4, say): count at most
                            // the file's size, so the projection never overshoots.
                            freeing += c.alloc.min(c.size);
                            chosen.push((c.path.clone(), c.size));
                        }
                    }
                    let projected = pct(used.saturating_sub(freeing));
                    release = Some(ReleaseSummary {
                        scope,
                        used_bytes: used,
                        total_bytes: total,
                        used_percent: pct(used),
                        high_watermark: rule.high_watermark,
                        low_watermark: rule.low_watermark,
                        triggered,
                        freeing_bytes: freeing,
                        projected_percent: projected,
                        short_of_target: triggered && projected >= rule.low_watermark,
                    });
                    // Oldest first, in order (so a stop part-way keeps the LRU promise).
                    let done: Vec<_> =
                        futures::stream::iter(chosen.into_iter().map(|(path, size)| async move {
                            if dry {
                                return (path, size, Ok(None));
                            }
                            self.limiter.acquire().await;
                            let r = self.engine.release(&path).await.map(Some);
                            (path, size, r)
                        }))
                        .buffered(conc)
                        .collect()
                        .await;
                    for (path, size, r) in done {
                        match r {
                            Ok(None) => actions.push(Action {
                                op: "release",
                                path,
                                bytes: size,
                                done: false,
                                detail: None,
                            }),
                            Ok(Some(rep)) => actions.push(Action {
                                op: "release",
                                path,
                                bytes: rep.bytes,
                                done: rep.outcome == Outcome::Done,
                                detail: rep.detail,
                            }),
                            Err(e) => errors.push(path_error(&path, &e)),
                        }
                    }
                }
            }
        }
        let released: std::collections::HashSet<&Path> = actions
            .iter()
            .filter(|a| a.op == "release" && a.done)
            .map(|a| a.path.as_path())
            .collect();
        let mut states = StateSummary::default();
        for (c, st) in &files {
            let mut flags = st.flags;
            flags.released |= released.contains(c.path.as_path());
            states.count(&flags, c.size);
        }
        let report = PassReport {
            states,
            trigger: trigger.to_string(),
            dry_run: dry,
            scanned_files: files.len(),
            actions,
            release,
            errors,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            trigger,
            scanned = report.scanned_files,
            actions = report.actions.len(),
            errors = report.errors.len(),
            "policy pass"
        );
        Ok(report)
    }

    /// Passes until `stop` resolves: at start, after change events settle, and every
    /// `watch.interval_secs`. Each report goes to `each`.
    pub async fn watch(
        &self,
        stop: impl Future<Output = ()>,
        each: &(dyn Fn(&PassReport) + Send + Sync),
    ) -> Result<()> {
        self.watch_outcomes(stop, &|outcome| {
            if let Ok(report) = outcome {
                each(report)
            }
        })
        .await
    }

    /// [`Policy::watch`], and each pass that failed goes to `each` too (with the time it
    /// took), for whoever counts failures.
    pub async fn watch_outcomes(
        &self,
        stop: impl Future<Output = ()>,
        each: &(dyn Fn(PassOutcome<'_>) + Send + Sync),
    ) -> Result<()> {
        let interval = Duration::from_secs(self.cfg.watch.interval_secs);
        let debounce = Duration::from_millis(self.cfg.watch.debounce_ms);
        // fanotify sees only the changes made through this node's kernel. A filesystem
        // whose own servers hold reads of released files (Lustre's coordinator,
        // `restore_on_access`) is one many clients write to, so its changes are not all
        // seen here: it gets the timed pass only. (`restore_on_access` stands in for
        // "every change goes through this kernel"; exact for the backends there are.)
        let local_changes_visible = !self.engine.backend().capabilities().restore_on_access;
        let mut watcher = match (
            local_changes_visible,
            watch::ChangeWatcher::start(&self.dir),
        ) {
            (true, Ok(w)) => {
                tracing::info!(dir = %self.dir.display(), mark = w.mark, "watching for changes with fanotify");
                Some(w)
            }
            (true, Err(why)) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    "policy watch: fanotify is unavailable ({why}); falling back to a pass every {}s",
                    interval.as_secs()
                );
                None
            }
            (_, _) => {
                // Warn, not info: the default log level shows it, as the notice it is.
                tracing::warn!(
                    "policy watch: change events are only watched on the local backend; a pass every {}s",
                    interval.as_secs()
                );
                None
            }
        };
        tokio::pin!(stop);
        let mut trigger = "start";
        loop {
            let started = Instant::now();
            match self.pass(trigger).await {
                Ok(r) => each(Ok(&r)),
                Err(e) => {
                    tracing::warn!(error = %e, "policy pass failed");
                    each(Err((&e, started.elapsed())));
                }
            }
            let next_interval = tokio::time::sleep(interval);
            tokio::pin!(next_interval);
            trigger = tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = &mut next_interval => "interval",
                Some(_) = async {
                    match watcher.as_mut() {
                        Some(w) => w.events.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    // Debounce: wait for a quiet spell (at most ten of them in all).
                    let deadline = tokio::time::Instant::now() + debounce * 10;
                    loop {
                        let quiet = tokio::time::sleep(debounce);
                        tokio::pin!(quiet);
                        let more = async {
                            match watcher.as_mut() {
                                Some(w) => w.events.recv().await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            _ = &mut stop => return Ok(()),
                            _ = &mut quiet => break,
                            _ = more => {
                                if tokio::time::Instant::now() >= deadline {
                                    break;
                                }
                            }
                        }
                    }
                    "change"
                }
            };
        }
    }
}

/// The paths of a pass's actions of one kind (`archive` or `release`).
pub fn action_paths(r: &PassReport, op: &str) -> Vec<PathBuf> {
    r.actions
        .iter()
        .filter(|a| a.op == op)
        .map(|a| a.path.clone())
        .collect()
}
