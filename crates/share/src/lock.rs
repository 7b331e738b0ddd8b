//! Per-share locks that hold across processes and hosts, built only on `mkdir` (atomic on
//! every POSIX filesystem, Lustre included) and atomic file replacement.
//!
//! A lock is a directory `locks/<key>/` holding numbered *generations*. Whoever makes
//! generation `n + 1` with one `mkdir` holds the lock, and only when generation `n` (the
//! highest) is released or stale. Two waiters that both see `n` stale can both try to make
//! `n + 1`, and exactly one `mkdir` succeeds: breaking a stale lock cannot be won twice, and a
//! waiter that looked long ago cannot remove a newer holder's generation (numbers only grow,
//! and only generations below the winner's are ever removed, by the winner).
//!
//! - The holder renews its lease (rewrites `<n>/lease`, which moves the directory's mtime)
//!   every quarter [`LEASE`], in a background task that ends with the lock, so an operation
//!   may run far longer than one lease (a purge may take an hour).
//! - Release writes `<n>/released`; the generation stays as the highest until the next
//!   holder replaces it.
//! - Dropping a [`Held`] without releasing it (a cancelled gRPC call drops its future)
//!   releases it from a background task bounded by [`RELEASE_TIMEOUT`], so the share does
//!   not answer Busy for a whole lease.
//! - A holder that died stops renewing; after [`LEASE`] anyone may take the next generation.
//!
//! Within one process a mutex per name queues callers instead of polling.
//!
//! Upgrading from the one-`mkdir` lock: its marker was the empty directory `locks/<key>`; an
//! empty lock directory younger than the lease is taken as held by it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backend::Filesystem;
use lustre_model::{RelPath, ShareName};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;

use crate::{Result, ShareError};

/// How long a lock may go unrenewed before another process may consider it abandoned.
pub const LEASE: Duration = Duration::from_secs(600);
/// How long to wait for a lock another process holds before answering Busy.
pub const WAIT: Duration = Duration::from_secs(30);
/// How long one renewal or a release from `Drop` may take before it is given up.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

const LEASE_FILE: &str = "lease";
const RELEASED_FILE: &str = "released";

pub struct Locks {
    local: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
    lease: Duration,
    wait: Duration,
}

impl Default for Locks {
    fn default() -> Self {
        Self::with_timing(LEASE, WAIT)
    }
}

/// A held lock. Release it with [`Held::release`]; dropping it releases it in the
/// background (see the module documentation).
pub struct Held {
    fs: Arc<dyn Filesystem>,
    generation: RelPath,
    renewal: JoinHandle<()>,
    released: bool,
    _local: OwnedMutexGuard<()>,
}

/// Now, in Unix seconds (0 before the epoch).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn child(dir: &RelPath, name: &str) -> Result<RelPath> {
    Ok(dir.join(&ShareName::new(name)?))
}

/// The generation numbers in a lock directory, highest last.
fn generations(names: &[String]) -> Vec<u64> {
    let mut found: Vec<u64> = names
        .iter()
        .filter(|n| !n.starts_with('0'))
        .filter_map(|n| n.parse().ok())
        .collect();
    found.sort_unstable();
    found
}

impl Locks {
    pub fn with_timing(lease: Duration, wait: Duration) -> Self {
        Self {
            local: StdMutex::default(),
            lease,
            wait,
        }
    }

    fn is_stale(&self, modified: u64) -> bool {
        now_secs().saturating_sub(modified) > self.lease.as_secs()
    }

    /// Takes the lock of `key`, whose directory is `dir`.
    pub async fn acquire(&self, fs: &Arc<dyn Filesystem>, key: &str, dir: RelPath) -> Result<Held> {
        let mutex = {
            let mut map = self
                .local
                .lock()
                .map_err(|_| ShareError::Config("lock table poisoned".into()))?;
            // A long-running driver touches many names: drop the idle ones now and then.
            if map.len() > 1024 {
                map.retain(|_, m| Arc::strong_count(m) > 1);
            }
            Arc::clone(map.entry(key.to_string()).or_default())
        };
        let busy = || ShareError::Busy {
            share: key.to_string(),
        };
        let local = tokio::time::timeout(self.wait, mutex.lock_owned())
            .await
            .map_err(|_| busy())?;
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut pause = Duration::from_millis(10);
        let made_dir = fs.claim(&dir).await?;
        loop {
            if let Some(next) = self.next_generation(fs.as_ref(), &dir, made_dir).await?
                && fs.claim(&child(&dir, &next.to_string())?).await?
            {
                let generation = child(&dir, &next.to_string())?;
                self.remove_older(fs.as_ref(), &dir, next).await;
                let renewal = tokio::spawn(renew(
                    Arc::clone(fs),
                    dir.clone(),
                    generation.clone(),
                    next,
                    self.lease / 4,
                ));
                return Ok(Held {
                    fs: Arc::clone(fs),
                    generation,
                    renewal,
                    released: false,
                    _local: local,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(busy());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The generation a caller may try to make now, or `None` while the lock is held.
    async fn next_generation(
        &self,
        fs: &dyn Filesystem,
        dir: &RelPath,
        made_dir: bool,
    ) -> Result<Option<u64>> {
        let Some(&highest) = generations(&fs.list_dir(dir).await?).last() else {
            // Empty: new (made by us, or by another process about to make generation 1), or
            // the marker of an older lustrekit holding the one-mkdir lock.
            if made_dir {
                return Ok(Some(1));
            }
            return match fs.stat_dir(dir).await? {
                Some(info) if self.is_stale(info.modified) => Ok(Some(1)),
                Some(_) => Ok(None),
                None => Err(ShareError::Config(format!("lock directory {dir} vanished"))),
            };
        };
        let current = child(dir, &highest.to_string())?;
        // Released is the common case: answer it without a stat (on Lustre a stat runs a
        // command for the project ID).
        if fs
            .list_dir(&current)
            .await?
            .iter()
            .any(|n| n == RELEASED_FILE)
        {
            return Ok(Some(highest + 1));
        }
        let Some(info) = fs.stat_dir(&current).await? else {
            return Ok(None); // being cleaned up by a newer holder: look again
        };
        if self.is_stale(info.modified) {
            tracing::warn!(lock = %current, "taking over a lock not renewed within its lease");
            return Ok(Some(highest + 1));
        }
        Ok(None)
    }

    /// Removes the generations below `mine` (best effort: what fails now goes next time).
    async fn remove_older(&self, fs: &dyn Filesystem, dir: &RelPath, mine: u64) {
        let Ok(names) = fs.list_dir(dir).await else {
            return;
        };
        for old in generations(&names).into_iter().filter(|&g| g < mine) {
            let Ok(path) = child(dir, &old.to_string()) else {
                continue;
            };
            let removed = async {
                for file in fs.list_dir(&path).await? {
                    fs.remove_file(&child(&path, &file)?).await?;
                }
                fs.unclaim(&path).await?;
                Ok::<_, ShareError>(())
            }
            .await;
            if let Err(e) = removed {
                tracing::debug!(lock = %path, error = %e, "old lock generation left for later");
            }
        }
    }
}

/// Rewrites the lease file every `every` while the lock is held (the task is aborted on
/// release); warns once the generation is no longer the highest (someone took the lock
/// over after a lease went unrenewed, e.g. this process was stopped that long).
async fn renew(
    fs: Arc<dyn Filesystem>,
    dir: RelPath,
    generation: RelPath,
    number: u64,
    every: Duration,
) {
    let Ok(lease) = child(&generation, LEASE_FILE) else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let renewed = tokio::time::timeout(
            RELEASE_TIMEOUT,
            fs.write_file(&lease, now_secs().to_string().as_bytes()),
        )
        .await;
        match renewed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(lock = %generation, error = %e, "cannot renew a lock"),
            Err(_) => tracing::warn!(lock = %generation, "renewing a lock timed out"),
        }
        if let Ok(Ok(names)) = tokio::time::timeout(RELEASE_TIMEOUT, fs.list_dir(&dir)).await
            && generations(&names).last().is_some_and(|&g| g > number)
        {
            tracing::error!(lock = %generation,
                "this lock was taken over by another process while held; stop renewing");
            return;
        }
    }
}

impl Held {
    pub async fn release(mut self) -> Result<()> {
        self.renewal.abort();
        self.released = true;
        let marker = child(&self.generation, RELEASED_FILE)?;
        self.fs.write_file(&marker, b"").await?;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released {
            return;
        }
        let Ok(marker) = child(&self.generation, RELEASED_FILE) else {
            return;
        };
        let fs = Arc::clone(&self.fs);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                tracing::info!(lock = %self.generation, "lock dropped unreleased (cancelled call); releasing it");
                handle.spawn(async move {
                    match tokio::time::timeout(RELEASE_TIMEOUT, fs.write_file(&marker, b"")).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(lock = %marker, error = %e,
                            "cannot release a dropped lock; its lease will expire"),
                        Err(_) => tracing::warn!(lock = %marker,
                            "releasing a dropped lock timed out; its lease will expire"),
                    }
                });
            }
            Err(_) => tracing::warn!(lock = %self.generation,
                "lock dropped outside a runtime; its lease will expire"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend::local::LocalBackend;

    async fn fs(dir: &std::path::Path) -> Arc<dyn Filesystem> {
        let fs: Arc<dyn Filesystem> = Arc::new(LocalBackend::open(dir).await.expect("open"));
        fs.ensure_dir(&RelPath::parse("locks").expect("path"))
            .await
            .expect("locks dir");
        fs
    }

    fn lock_dir() -> RelPath {
        RelPath::parse("locks/share").expect("path")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lock_is_renewed_past_its_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = fs(dir.path()).await;
        let lease = Duration::from_secs(4);
        let holder = Locks::with_timing(lease, Duration::from_secs(1));
        let other = Locks::with_timing(lease, Duration::from_secs(2));
        let held = holder
            .acquire(&fs, "share", lock_dir())
            .await
            .expect("lock");
        // Well past the lease: without renewal the other process would take it over.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let err = other
            .acquire(&fs, "share", lock_dir())
            .await
            .err()
            .expect("a renewed lock is not taken over");
        assert!(matches!(err, ShareError::Busy { .. }), "{err}");
        held.release().await.expect("release");
        other
            .acquire(&fs, "share", lock_dir())
            .await
            .expect("released lock")
            .release()
            .await
            .expect("release");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_lock_is_released_without_waiting_for_the_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = fs(dir.path()).await;
        let first = Locks::default();
        let other = Locks::with_timing(LEASE, Duration::from_secs(10));
        let held = first.acquire(&fs, "share", lock_dir()).await.expect("lock");
        // What a cancelled call does: its future, and the guard in it, is dropped.
        drop(held);
        other
            .acquire(&fs, "share", lock_dir())
            .await
            .expect("a dropped lock must not stay held for its lease")
            .release()
            .await
            .expect("release");
        // Generations below the holder's are cleaned up; the highest stays.
        let names = fs.list_dir(&lock_dir()).await.expect("list");
        assert_eq!(names, ["2"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_old_style_marker_holds_until_its_lease_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = fs(dir.path()).await;
        // An older lustrekit's lock: the empty directory itself.
        assert!(fs.claim(&lock_dir()).await.expect("claim"));
        let locks = Locks::with_timing(LEASE, Duration::from_millis(300));
        let err = locks
            .acquire(&fs, "share", lock_dir())
            .await
            .err()
            .expect("held by the old marker");
        assert!(matches!(err, ShareError::Busy { .. }), "{err}");
        let old = SystemTime::now() - 2 * LEASE;
        let path = dir.path().join("locks/share");
        std::fs::File::open(&path)
            .and_then(|f| f.set_modified(old))
            .expect("age the marker");
        locks
            .acquire(&fs, "share", lock_dir())
            .await
            .expect("stale old marker")
            .release()
            .await
            .expect("release");
    }
}
