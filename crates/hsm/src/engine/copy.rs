//! Plain copies for the data mover: a tree out to a store prefix, with the same metadata
//! records archive writes, and (through [`HsmEngine::import_counted`] with
//! `with_data`) a prefix back into a tree as ordinary files.
//!
//! Unlike archive and import, a copy leaves no HSM trace: nothing is marked, pinned or kept
//! aside, and what a copy wrote may be overwritten by the next one. An entry the
//! destination already holds with the same kind, size and modification time is skipped, so
//! a copy that was interrupted (a restarted operator) is resumed by running it again.
//!
//! Every source entry is opened beneath the engine root (a tenant's symlink is copied as a
//! symlink, never followed), and a file that changes while it is read is an error for that
//! file, never a torn object.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{HsmEngine, Outcome, PathError, Previous, TreeReport, blocking};
use crate::error::{HsmError, Result};
use crate::meta::{EntryKind, FileMeta};
use crate::posix;

/// Totals and work done of one copy, shared with whoever reports its progress, and when
/// the copy last moved a byte (so a watcher can tell a stalled copy from a slow one).
#[derive(Debug)]
pub struct CopyCounters {
    files_total: AtomicU64,
    bytes_total: AtomicU64,
    files_done: AtomicU64,
    bytes_done: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` of the last activity.
    active_ms: AtomicU64,
}

impl Default for CopyCounters {
    fn default() -> Self {
        Self {
            files_total: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            started: Instant::now(),
            active_ms: AtomicU64::new(0),
        }
    }
}

/// A snapshot of [`CopyCounters`]. Entries skipped because the destination already had
/// them count as done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyProgress {
    pub files_total: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub bytes_done: u64,
}

impl CopyCounters {
    pub fn snapshot(&self) -> CopyProgress {
        CopyProgress {
            files_total: self.files_total.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_totals(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.touch();
    }

    pub(crate) fn add_done(&self, files: u64, bytes: u64) {
        self.files_done.fetch_add(files, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.touch();
    }

    /// Notes activity (a part of a file moved): see [`idle_for`](Self::idle_for).
    pub fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.active_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since the copy last did anything (started, listed, moved a part, finished
    /// an entry).
    pub fn idle_for(&self) -> Duration {
        let since = Duration::from_millis(self.active_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(since)
    }
}

/// Whether what the store holds is already this entry: same kind, size and modification
/// time (what a copy records). Another kind there, or no record, is not.
pub(crate) fn same_entry(have: &FileMeta, want: &FileMeta) -> bool {
    have.kind == want.kind
        && have.mtime_ns == want.mtime_ns
        && (want.kind != EntryKind::File || have.size == want.size)
        && (want.kind != EntryKind::Symlink || have.symlink_target == want.symlink_target)
}

impl HsmEngine {
    /// Copies what is in the directory `dir` (below the engine root) to the store: each
    /// file, directory and symlink to the key of its path below `dir` (so copying it back in
    /// to another directory gives the same tree there), with its metadata. `counters` are
    /// filled in as it goes. Per-entry failures are in the report; the copy goes on.
    pub async fn copy_out(&self, dir: &Path, counters: &CopyCounters) -> Result<TreeReport> {
        let (abs, top) = self.resolve(dir)?;
        let strip = top.len();
        let (entries, walk_errors) = {
            let abs = abs.clone();
            blocking(move || {
                crate::walk::walk_with(&abs, crate::walk::DEFAULT_WALK_WORKERS, |p, md| {
                    Some((p.to_path_buf(), if md.is_file() { md.len() } else { 0 }))
                })
            })
            .await?
        };
        let mut report = TreeReport::default();
        for (path, e) in walk_errors {
            report.errors.push(PathError {
                path,
                kind: e.kind().into(),
                error: e.to_string(),
            });
        }
        counters.set_totals(
            entries.len() as u64,
            entries.iter().map(|(_, size)| size).sum(),
        );
        let results: Vec<_> = futures::stream::iter(entries.into_iter().map(|(p, _)| async move {
            let r = self.copy_out_one(&p, strip).await;
            if let Ok((_, bytes)) = &r {
                counters.add_done(1, *bytes);
            }
            (p, r)
        }))
        .buffer_unordered(self.config().file_concurrency.max(1))
        .collect()
        .await;
        for (path, r) in results {
            match r {
                Ok((Outcome::Done, bytes)) => {
                    report.done += 1;
                    report.bytes += bytes;
                }
                Ok((Outcome::Skipped, _)) => report.skipped += 1,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "copy out");
                    report.errors.push(PathError {
                        path,
                        kind: e.kind().into(),
                        error: e.to_string(),
                    })
                }
            }
        }
        Ok(report)
    }

    /// One entry of [`copy_out`](Self::copy_out): what happened and the bytes it accounts
    /// for (a file's size, sent or already there).
    async fn copy_out_one(&self, path: &Path, strip: usize) -> Result<(Outcome, u64)> {
        let started = Instant::now();
        let (entry, _) = self.open(path).await?;
        let (_, comps) = self.resolve(path)?;
        let Some(below) = comps.get(strip..).filter(|c| !c.is_empty()) else {
            // The copied directory itself is the store prefix: nothing to write for it.
            return Ok((Outcome::Skipped, 0));
        };
        let refs: Vec<&str> = below.iter().map(String::as_str).collect();
        let key = self.store.key_for(&refs);
        let entry = Arc::new(entry);
        let mut meta = {
            let e = entry.clone();
            blocking(move || posix::capture_entry(&e)).await?
        };
        // A directory without folder objects (the local store) is only its metadata record.
        let have = if meta.kind == EntryKind::Dir && !self.store.folder_blobs() {
            self.store
                .sidecar_only(&key)
                .await?
                .map(|m| FileMeta::from_map(&m, i64::MIN, 0, 0))
        } else {
            self.store.head(&key).await?.map(|info| {
                let mut m = FileMeta::from_map(&info.meta, i64::MIN, 0, 0);
                if m.kind == EntryKind::File && m.size.is_none() {
                    m.size = Some(info.size);
                }
                m
            })
        };
        if have.as_ref().is_some_and(|h| same_entry(h, &meta)) {
            return Ok((Outcome::Skipped, meta.size.unwrap_or(0)));
        }
        let abs = entry.abs.clone();
        let bytes = match meta.kind {
            EntryKind::Dir => {
                let (map, _) = meta.to_map();
                self.store.put_folder(&key, &map).await?;
                0
            }
            EntryKind::Symlink => {
                let (map, _) = meta.to_map();
                self.store.put(&key, Bytes::new(), &map).await?;
                0
            }
            EntryKind::File => {
                let (file, v0) = {
                    let e = entry.clone();
                    blocking(move || {
                        let file = e.file()?;
                        let v0 = posix::version_of(&e.abs, &file)?;
                        Ok((Arc::new(file), v0))
                    })
                    .await?
                };
                let version = crate::pin::new_version_id()?;
                self.upload_file(
                    &abs,
                    &key,
                    &file,
                    v0.size,
                    &mut meta,
                    &version,
                    Previous::Replace,
                )
                .await?;
                let (v1, by_name) = {
                    let (e, f) = (entry.clone(), file.clone());
                    blocking(move || Ok((posix::version_of(&e.abs, &f)?, e.version_by_name()?)))
                        .await?
                };
                if v1 != v0 || !by_name.same_data(&v0) {
                    return Err(HsmError::ModifiedDuringArchive { path: abs });
                }
                v0.size
            }
        };
        tracing::debug!(path = %abs.display(), key = %key, bytes, ms = started.elapsed().as_millis() as u64, "copied out");
        Ok((Outcome::Done, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, mtime_ns: i64) -> FileMeta {
        FileMeta {
            kind: EntryKind::File,
            size: Some(size),
            mtime_ns,
            ..Default::default()
        }
    }

    #[test]
    fn same_entry_needs_kind_size_and_time() {
        assert!(same_entry(&file(10, 5), &file(10, 5)));
        assert!(!same_entry(&file(11, 5), &file(10, 5)));
        assert!(!same_entry(&file(10, 6), &file(10, 5)));
        let dir = FileMeta {
            kind: EntryKind::Dir,
            mtime_ns: 5,
            ..Default::default()
        };
        assert!(!same_entry(&dir, &file(10, 5)));
        assert!(same_entry(&dir, &dir));
        let link = |t: &str| FileMeta {
            kind: EntryKind::Symlink,
            mtime_ns: 5,
            symlink_target: Some(t.into()),
            ..Default::default()
        };
        assert!(same_entry(&link("a"), &link("a")));
        assert!(!same_entry(&link("a"), &link("b")));
    }

    #[test]
    fn activity_resets_the_idle_time() {
        let c = CopyCounters::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.idle_for() >= Duration::from_millis(30));
        c.touch();
        assert!(c.idle_for() < Duration::from_millis(30));
    }

    #[test]
    fn counters_add_up() {
        let c = CopyCounters::default();
        c.set_totals(3, 30);
        c.add_done(1, 10);
        c.add_done(1, 5);
        assert_eq!(
            c.snapshot(),
            CopyProgress {
                files_total: 3,
                bytes_total: 30,
                files_done: 2,
                bytes_done: 15
            }
        );
    }
}
