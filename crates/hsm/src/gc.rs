//! `hsm gc`: frees the archived versions that nothing pins any more.
//!
//! Archiving never deletes or overwrites a version a stub may pin: it copies the version at
//! a key aside (`<prefix>/.lustrekit-versions/<version>`) before overwriting the key (see
//! [`crate::pin`]). Those copies are freed here, and only here, when
//! - no file below the namespace root pins them (the pin xattr of every regular file is
//!   read, from descriptors opened beneath the root), and no Lustre FID record does;
//! - and they were set aside longer ago than the grace period, so an archive running at
//!   the same time (which copies aside before it pins) never loses the version it is
//!   about to pin.
//!
//! If any file's pin cannot be read, nothing is deleted: an unreadable pin could be the
//! one that holds a version. Path-named objects (the layout users browse) are never
//! touched by gc; `hsm remove` is how they go.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use serde::Serialize;

use crate::engine::{HsmEngine, PathError, blocking};
use crate::error::{HsmError, Result};
use crate::meta::EntryKind;
use crate::{pin, posix};

/// How gc runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report what would be freed, delete nothing.
    pub dry_run: bool,
    /// Versions set aside more recently than this are kept.
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// What gc found and did (`--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Regular files whose pin was read.
    pub files_scanned: u64,
    /// Distinct versions pinned (by files and by Lustre FID records).
    pub pinned_versions: u64,
    /// Versions kept aside that were examined.
    pub versions_seen: u64,
    pub kept_pinned: u64,
    pub kept_in_grace: u64,
    /// Versions deleted (or that would be, in a dry run).
    pub freed: u64,
    pub bytes_freed: u64,
    pub freed_versions: Vec<String>,
    /// Files whose pin could not be read; any makes gc delete nothing.
    pub errors: Vec<PathError>,
}

/// Every version pinned by a regular file below `root`, and the files that could not be
/// read.
fn scan_pins(root: &Path) -> Result<(HashSet<String>, u64, Vec<PathError>)> {
    let mut pinned = HashSet::new();
    let mut files = 0u64;
    let mut errors = Vec::new();
    let (paths, walk_errors) =
        crate::walk::walk_every(root, crate::walk::DEFAULT_WALK_WORKERS, |p, m| {
            m.is_file().then(|| p.to_path_buf())
        })?;
    for (path, e) in walk_errors {
        errors.push(PathError {
            path,
            kind: e.kind().into(),
            error: e.to_string(),
        });
    }
    for path in paths {
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let comps: Option<Vec<String>> = rel
            .components()
            .map(|c| c.as_os_str().to_str().map(str::to_string))
            .collect();
        let Some(comps) = comps else {
            errors.push(PathError {
                path: path.clone(),
                kind: "hostile_name".into(),
                error: "name is not UTF-8".into(),
            });
            continue;
        };
        let read = posix::open_entry(root, &comps, &path).and_then(|e| {
            if e.kind != EntryKind::File {
                return Ok(None);
            }
            let f = e.file()?;
            pin::read(std::os::fd::AsFd::as_fd(&f), &path).map(|p| Some(p.map(|p| p.version)))
        });
        match read {
            Ok(None) => {}
            Ok(Some(v)) => {
                files += 1;
                pinned.extend(v);
            }
            // Gone since the walk: it pins nothing any more.
            Err(HsmError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => errors.push(PathError {
                path,
                kind: e.kind().into(),
                error: e.to_string(),
            }),
        }
    }
    Ok((pinned, files, errors))
}

impl HsmEngine {
    /// Frees the versions kept aside that nothing pins and that are older than the grace
    /// period; see the module doc.
    pub async fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let root = self.config().root.clone();
        let (mut pinned, files, errors) = blocking(move || scan_pins(&root)).await?;
        for p in crate::copytool::indexed_pins(self).await? {
            pinned.insert(p.version);
        }
        let mut report = GcReport {
            dry_run: opts.dry_run,
            files_scanned: files,
            pinned_versions: pinned.len() as u64,
            errors,
            ..Default::default()
        };
        let versions: Vec<_> = self
            .store()
            .list(Some(&self.store().versions_root()))
            .try_collect()
            .await?;
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let grace_ns = opts.grace.as_nanos().min(i64::MAX as u128) as i64;
        let mut doomed = Vec::new();
        for m in versions {
            report.versions_seen += 1;
            let Some(version) = m.location.filename().map(str::to_string) else {
                continue;
            };
            if pinned.contains(&version) {
                report.kept_pinned += 1;
                continue;
            }
            let modified = m.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX);
            if now_ns.saturating_sub(modified) < grace_ns {
                report.kept_in_grace += 1;
                continue;
            }
            report.freed += 1;
            report.bytes_freed += m.size;
            report.freed_versions.push(version);
            doomed.push(m.location);
        }
        if !report.errors.is_empty() {
            // An unreadable pin may be the one holding a version: free nothing.
            report.freed = 0;
            report.bytes_freed = 0;
            report.freed_versions.clear();
            return Ok(report);
        }
        if !opts.dry_run {
            for key in doomed {
                self.store().delete(&key).await?;
            }
        }
        tracing::info!(
            freed = report.freed,
            bytes = report.bytes_freed,
            dry_run = opts.dry_run,
            "hsm gc"
        );
        Ok(report)
    }
}
