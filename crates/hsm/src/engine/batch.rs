//! Many paths at once: tree operations, [`FileOp`] over a list of paths ([`HsmEngine::apply`])
//! and the [`TreeReport`] they return.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{HsmEngine, OpReport, Outcome, blocking};
use crate::error::Result;

impl HsmEngine {
    /// Archives everything under `dir` (directories first), `file_concurrency` at a time.
    /// Errors are collected per path, not fatal.
    pub async fn archive_tree(&self, dir: &Path) -> Result<TreeReport> {
        let (abs, _) = self.resolve(dir)?;
        let paths = {
            let abs = abs.clone();
            blocking(move || crate::walk::walk(&abs)).await?
        };
        let mut report = TreeReport::default();
        let results: Vec<_> = futures::stream::iter(paths.into_iter().map(|p| async move {
            let r = self.archive(&p).await;
            (p, r)
        }))
        .buffer_unordered(self.cfg.file_concurrency)
        .collect()
        .await;
        for (p, r) in results {
            report.add(p, r);
        }
        Ok(report)
    }

    /// Applies `op` to every regular file under `dir`.
    pub async fn tree_op(&self, dir: &Path, op: TreeOp) -> Result<TreeReport> {
        let (abs, _) = self.resolve(dir)?;
        let paths = {
            let abs = abs.clone();
            blocking(move || crate::walk::walk(&abs)).await?
        };
        let mut report = TreeReport::default();
        let results: Vec<_> = futures::stream::iter(paths.into_iter().map(|p| async move {
            // Regular files only, as each one's turn comes (the lstat on a blocking thread).
            let is_file = {
                let p = p.clone();
                blocking(move || Ok(std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()))).await
            };
            if !matches!(is_file, Ok(true)) {
                return None;
            }
            let r = match op {
                TreeOp::Release => self.release(&p).await,
                TreeOp::Restore => self.restore(&p).await,
                TreeOp::Remove => self.remove(&p).await,
            };
            Some((p, r))
        }))
        .buffer_unordered(self.cfg.file_concurrency)
        .collect()
        .await;
        for (p, r) in results.into_iter().flatten() {
            report.add(p, r);
        }
        Ok(report)
    }
}

/// One operation on many paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOp {
    Archive,
    Release,
    Restore,
    Remove,
    Dirty,
}

impl FileOp {
    pub fn name(self) -> &'static str {
        match self {
            Self::Archive => "archive",
            Self::Release => "release",
            Self::Restore => "restore",
            Self::Remove => "remove",
            Self::Dirty => "dirty",
        }
    }
}

impl HsmEngine {
    /// Runs `op` on one path.
    pub async fn run_op(&self, op: FileOp, path: &Path) -> Result<OpReport> {
        match op {
            FileOp::Archive => self.archive(path).await,
            FileOp::Release => self.release(path).await,
            FileOp::Restore => self.restore(path).await,
            FileOp::Remove => self.remove(path).await,
            FileOp::Dirty => self.mark_dirty(path).await,
        }
    }

    /// Runs `op` on every path, `file_concurrency` at a time, calling `each` as each one
    /// finishes. Stops starting new ones once more than `max_errors` failed (`None`: never);
    /// `TreeReport::stopped` says so.
    pub async fn apply(
        &self,
        op: FileOp,
        paths: Vec<PathBuf>,
        max_errors: Option<usize>,
        each: &(dyn Fn(&Path, &Result<OpReport>) + Send + Sync),
    ) -> TreeReport {
        let mut report = TreeReport::default();
        let errors = std::sync::atomic::AtomicUsize::new(0);
        let over =
            || max_errors.is_some_and(|m| errors.load(std::sync::atomic::Ordering::Relaxed) > m);
        let mut stream = futures::stream::iter(paths.into_iter().map(|p| {
            let errors = &errors;
            async move {
                if over() {
                    return None;
                }
                let r = self.run_op(op, &p).await;
                if r.is_err() {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                each(&p, &r);
                Some((p, r))
            }
        }))
        .buffer_unordered(self.cfg.file_concurrency);
        while let Some(item) = stream.next().await {
            match item {
                Some((p, r)) => report.add(p, r),
                None => report.stopped = true,
            }
        }
        report
    }
}

/// Tree-wide operations other than archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeOp {
    Release,
    Restore,
    Remove,
}

/// One failed path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathError {
    pub path: PathBuf,
    pub kind: String,
    pub error: String,
}

/// The report of a tree operation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TreeReport {
    pub done: usize,
    pub skipped: usize,
    pub bytes: u64,
    pub errors: Vec<PathError>,
    pub items: Vec<OpReport>,
    /// True when `max_errors` stopped the operation early.
    #[serde(default)]
    pub stopped: bool,
}

impl TreeReport {
    fn add(&mut self, p: PathBuf, r: Result<OpReport>) {
        match r {
            Ok(rep) => {
                match rep.outcome {
                    Outcome::Done => self.done += 1,
                    Outcome::Skipped => self.skipped += 1,
                }
                self.bytes += rep.bytes;
                self.items.push(rep);
            }
            Err(e) => self.errors.push(PathError {
                path: p,
                kind: e.kind().into(),
                error: e.to_string(),
            }),
        }
    }
}
