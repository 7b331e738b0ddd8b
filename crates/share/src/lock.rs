//! Per-share locks that hold across processes and hosts: a lock is a directory made with one
//! `mkdir` (atomic on every POSIX filesystem, Lustre included). A holder that died leaves its
//! lock behind; after [`LEASE`] anyone may break it, so a crash never blocks a retry for long.
//! Within one process a mutex per name queues callers instead of polling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backend::Filesystem;
use lustre_model::RelPath;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{Result, ShareError};

/// How long a lock may be held before another process may consider it abandoned.
pub const LEASE: Duration = Duration::from_secs(600);
/// How long to wait for a lock another process holds before answering Busy.
pub const WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Locks {
    local: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// A held lock; release it with [`Held::release`] (dropping it without release leaves the
/// marker for the lease to expire, which is what a crash does too).
pub struct Held {
    marker: RelPath,
    _local: OwnedMutexGuard<()>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Locks {
    pub async fn acquire(&self, fs: &dyn Filesystem, key: &str, marker: RelPath) -> Result<Held> {
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
        let local = match tokio::time::timeout(WAIT, mutex.lock_owned()).await {
            Ok(guard) => guard,
            Err(_) => {
                return Err(ShareError::Busy {
                    share: key.to_string(),
                });
            }
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut pause = Duration::from_millis(10);
        loop {
            if fs.claim(&marker).await? {
                return Ok(Held {
                    marker,
                    _local: local,
                });
            }
            if let Some(info) = fs.stat_dir(&marker).await?
                && now_secs().saturating_sub(info.modified) > LEASE.as_secs()
            {
                tracing::warn!(lock = %marker, "breaking a lock older than its lease");
                fs.unclaim(&marker).await?;
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ShareError::Busy {
                    share: key.to_string(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

impl Held {
    pub async fn release(self, fs: &dyn Filesystem) -> Result<()> {
        fs.unclaim(&self.marker).await?;
        Ok(())
    }
}
