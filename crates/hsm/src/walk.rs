//! Directory walks for tree operations and policy scans.
//!
//! The walk is parallel and bounded: a fixed number of worker threads take directories from
//! one shared queue, list them, and queue the sub-directories they find. Memory is bounded by
//! the queue of directories still to list plus the entries kept; no recursion, so a deep tree
//! cannot overflow a stack. Symlinks are never followed, and our own temporaries are skipped.

use std::collections::VecDeque;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use crate::error::{HsmError, Result};

/// Worker threads of a walk when the caller does not say.
pub const DEFAULT_WALK_WORKERS: usize = 4;

/// Names of our own temporary files, never walked.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with(".lustrekit-restore.") || name.starts_with(".lustrekit-import")
}

/// Every entry under `root` (root included), parents before children, symlinks not
/// followed, our restore temporaries skipped.
pub fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let (mut out, errors) = walk_with(root, DEFAULT_WALK_WORKERS, |p, _| Some(p.to_path_buf()))?;
    if let Some((_, e)) = errors.into_iter().next() {
        return Err(e);
    }
    out.sort();
    Ok(out)
}

struct Queue {
    dirs: VecDeque<PathBuf>,
    /// Directories taken by a worker and not finished yet.
    busy: usize,
}

/// Entries a walk could not read, with why.
pub type WalkErrors = Vec<(PathBuf, HsmError)>;

/// Walks `root` with `workers` threads, calling `keep` on every entry (root included) with
/// its `lstat` metadata; the values it returns are collected, in no particular order.
/// Entries that vanish during the walk are skipped; other per-entry errors are collected
/// and the walk goes on. An unreadable `root` is an error.
pub fn walk_with<T, F>(root: &Path, workers: usize, keep: F) -> Result<(Vec<T>, WalkErrors)>
where
    T: Send,
    F: Fn(&Path, &Metadata) -> Option<T> + Sync,
{
    walk_inner(root, workers, true, keep)
}

/// [`walk_with`], but nothing skipped: a tenant can give any file a temporary's name, so
/// whatever must see every pin (gc) walks with this.
pub fn walk_every<T, F>(root: &Path, workers: usize, keep: F) -> Result<(Vec<T>, WalkErrors)>
where
    T: Send,
    F: Fn(&Path, &Metadata) -> Option<T> + Sync,
{
    walk_inner(root, workers, false, keep)
}

fn walk_inner<T, F>(
    root: &Path,
    workers: usize,
    skip_temporaries: bool,
    keep: F,
) -> Result<(Vec<T>, WalkErrors)>
where
    T: Send,
    F: Fn(&Path, &Metadata) -> Option<T> + Sync,
{
    let md = std::fs::symlink_metadata(root).map_err(|e| HsmError::io(root, e))?;
    let mut out = Vec::new();
    if let Some(v) = keep(root, &md) {
        out.push(v);
    }
    if !md.is_dir() {
        return Ok((out, Vec::new()));
    }
    let queue = Mutex::new(Queue {
        dirs: VecDeque::from([root.to_path_buf()]),
        busy: 0,
    });
    let cv = Condvar::new();
    let results = Mutex::new(out);
    let errors = Mutex::new(Vec::new());
    let workers = workers.clamp(1, 64);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    // Take a directory, or stop when the queue is empty and nobody can add.
                    let dir = {
                        let Ok(mut q) = queue.lock() else { return };
                        loop {
                            if let Some(d) = q.dirs.pop_front() {
                                q.busy += 1;
                                break d;
                            }
                            if q.busy == 0 {
                                cv.notify_all();
                                return;
                            }
                            q = match cv.wait(q) {
                                Ok(q) => q,
                                Err(_) => return,
                            };
                        }
                    };
                    let mut found = Vec::new();
                    let mut subdirs = Vec::new();
                    let mut errs = Vec::new();
                    match std::fs::read_dir(&dir) {
                        Ok(rd) => {
                            for entry in rd {
                                let entry = match entry {
                                    Ok(e) => e,
                                    Err(e) => {
                                        errs.push((dir.clone(), HsmError::io(&dir, e)));
                                        continue;
                                    }
                                };
                                if skip_temporaries
                                    && is_temporary(&entry.file_name().to_string_lossy())
                                {
                                    continue;
                                }
                                let p = entry.path();
                                let md = match std::fs::symlink_metadata(&p) {
                                    Ok(m) => m,
                                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                        continue;
                                    }
                                    Err(e) => {
                                        errs.push((p.clone(), HsmError::io(&p, e)));
                                        continue;
                                    }
                                };
                                if let Some(v) = keep(&p, &md) {
                                    found.push(v);
                                }
                                if md.is_dir() {
                                    subdirs.push(p);
                                }
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => errs.push((dir.clone(), HsmError::io(&dir, e))),
                    }
                    if !found.is_empty()
                        && let Ok(mut r) = results.lock()
                    {
                        r.extend(found);
                    }
                    if !errs.is_empty()
                        && let Ok(mut e) = errors.lock()
                    {
                        e.extend(errs);
                    }
                    let Ok(mut q) = queue.lock() else { return };
                    q.dirs.extend(subdirs);
                    q.busy -= 1;
                    cv.notify_all();
                }
            });
        }
    });
    let out = results.into_inner().unwrap_or_default();
    let errors = errors.into_inner().unwrap_or_default();
    Ok((out, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_everything_parents_first_without_following_symlinks() {
        let d = tempfile::tempdir().expect("tmp");
        let r = d.path();
        for i in 0..20 {
            let sub = r.join(format!("d{i}")).join("e");
            std::fs::create_dir_all(&sub).expect("mkdir");
            std::fs::write(sub.join("f"), b"x").expect("write");
        }
        std::fs::write(r.join(".lustrekit-restore.5"), b"tmp").expect("write");
        std::os::unix::fs::symlink("/", r.join("link")).expect("symlink");
        let all = walk(r).expect("walk");
        // root + 20 * (d, e, f) + link
        assert_eq!(all.len(), 1 + 60 + 1, "{all:?}");
        assert_eq!(all[0], r);
        for (i, p) in all.iter().enumerate() {
            if let Some(parent) = p.parent().filter(|_| p != r) {
                let pi = all.iter().position(|q| q == parent).expect("parent listed");
                assert!(pi < i);
            }
        }
        assert!(!all.iter().any(|p| p.to_string_lossy().contains("restore")));
    }

    #[test]
    fn one_worker_and_a_file_root() {
        let d = tempfile::tempdir().expect("tmp");
        let f = d.path().join("f");
        std::fs::write(&f, b"x").expect("write");
        assert_eq!(walk(&f).expect("walk"), vec![f.clone()]);
        let (v, e) =
            walk_with(d.path(), 1, |p, m| m.is_file().then(|| p.to_path_buf())).expect("walk");
        assert_eq!(v, vec![f]);
        assert!(e.is_empty());
        assert!(walk(&d.path().join("missing")).is_err());
    }
}
