//! Mounting on the node: bind mounts for the local backend, the bounded unmount cascade
//! every backend uses, the mount table, and the bounded pool every call that can hang on a
//! filesystem server runs in.
//!
//! A hung server can make `umount`, `stat` or `statvfs` block forever, in the kernel, where
//! no signal reaches the thread (D state). So:
//! - whether something is mounted is read from `/proc/self/mountinfo` alone (procfs answers
//!   from the kernel's own tables, never from a filesystem server), and an unreadable
//!   mountinfo is an error, never "not mounted";
//! - every call that touches a mounted filesystem runs through [`FsCalls`]: a few dedicated
//!   threads (not tokio's blocking pool, which the rest of the process needs), each call
//!   under a timeout. A call that times out is left running in its thread, since a thread
//!   blocked in the kernel cannot be killed or cancelled; its caller gets an error naming the
//!   path at once, and until the call returns, the same call on the same path fails
//!   immediately instead of taking another thread. A dead server thus holds at most one
//!   thread per kind of call and path, and the pool's cap bounds them all;
//! - the unmount cascade moves on (normal, then forced, then lazy) instead of waiting. No
//!   lock is held across these calls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::{BackendError, Result};

pub use crate::lustre::{MountInfoEntry, parse_mountinfo, top_mount};
mod attach;

/// How long one unmount step may take before the cascade moves on.
pub const UNMOUNT_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many filesystem calls may run at once in the process-wide [`FsCalls::global`] pool,
/// hung ones included. Well under the binary's 16 blocking threads, and separate from them.
pub const FS_CALL_THREADS: usize = 8;

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Mount options the kernel applies to a bind mount; anything else is refused, not ignored.
pub fn bind_flags(read_only: bool, options: &[String]) -> Result<MsFlags> {
    let mut flags = MsFlags::empty();
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    for option in options {
        flags |= match option.as_str() {
            "ro" => MsFlags::MS_RDONLY,
            "rw" | "defaults" => MsFlags::empty(),
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            other => {
                return Err(BackendError::unsupported(
                    "mount option",
                    format!("{other:?} has no meaning for a bind mount"),
                ));
            }
        };
    }
    Ok(flags)
}

// ---------------------------------------------------------------- the mount table

/// This process's mount table, parsed. Reading it never waits on a filesystem server; a
/// table that cannot be read is an error.
pub fn mount_table() -> Result<Vec<MountInfoEntry>> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|e| BackendError::io(MOUNTINFO, e))?;
    Ok(parse_mountinfo(&text))
}

/// Whether something is mounted at `target`, as mountinfo lists it (a canonical path:
/// symlinks resolved). Touches no filesystem but procfs.
pub fn mounted(target: &Path) -> Result<bool> {
    Ok(top_mount(&mount_table()?, target).is_some())
}

/// [`mounted`], with an unreadable mount table taken as "not mounted". Only for callers
/// where that answer is harmless (an "already mounted?" shortcut, test assertions); anything
/// that unmounts or removes must use [`mounted`].
pub fn is_mount_point(target: &Path) -> bool {
    mounted(target).unwrap_or(false)
}

// ---------------------------------------------------------------- bounded calls

/// Why a call in [`FsCalls`] gave no answer. Every variant names the call and its path.
#[derive(Debug, Error)]
pub enum FsCallError {
    #[error(
        "{op} {path} did not return within {after:?} (the server behind it may be down); the \
         call is left blocked in its thread, which cannot be killed, and the same call on this \
         path fails at once until it returns"
    )]
    TimedOut {
        op: &'static str,
        path: PathBuf,
        after: Duration,
    },
    #[error(
        "{op} {path} not tried: an earlier {op} on it has not returned for {running_for:?} \
         (the server behind it may be down)"
    )]
    Hung {
        op: &'static str,
        path: PathBuf,
        running_for: Duration,
    },
    #[error(
        "{op} {path} not tried: all {capacity} filesystem-call threads stayed busy for {waited:?}"
    )]
    Busy {
        op: &'static str,
        path: PathBuf,
        capacity: usize,
        waited: Duration,
    },
    #[error("{op} {path}: the call's thread failed: {reason}")]
    Lost {
        op: &'static str,
        path: PathBuf,
        reason: String,
    },
}

impl From<FsCallError> for BackendError {
    fn from(error: FsCallError) -> Self {
        match error {
            FsCallError::TimedOut { op, path, after } => BackendError::Timeout {
                command: format!("{op} {}", path.display()),
                after,
            },
            FsCallError::Hung {
                op,
                path,
                running_for,
            } => BackendError::Timeout {
                command: format!(
                    "{op} {} (not tried again: an earlier one is still blocked)",
                    path.display()
                ),
                after: running_for,
            },
            FsCallError::Busy {
                op,
                path,
                capacity,
                waited,
            } => BackendError::Timeout {
                command: format!(
                    "{op} {} (waiting for one of {capacity} filesystem-call threads)",
                    path.display()
                ),
                after: waited,
            },
            lost @ FsCallError::Lost { .. } => BackendError::InvalidState(lost.to_string()),
        }
    }
}

type CallKey = (&'static str, PathBuf);

#[derive(Debug)]
struct Running {
    started: Instant,
    abandoned: bool,
}

type RunningCalls = Arc<Mutex<HashMap<CallKey, Running>>>;

/// Removes a call from the running set when its thread is done with it (or never started).
struct Registered {
    running: RunningCalls,
    key: CallKey,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.remove(&self.key);
    }
}

/// A bounded pool of threads for blocking filesystem calls (see the module docs).
#[derive(Debug)]
pub struct FsCalls {
    capacity: usize,
    slots: Arc<Semaphore>,
    running: RunningCalls,
}

impl FsCalls {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            slots: Arc::new(Semaphore::new(capacity)),
            running: Arc::default(),
        }
    }

    /// The process-wide pool, of [`FS_CALL_THREADS`] threads.
    pub fn global() -> &'static FsCalls {
        static POOL: LazyLock<FsCalls> = LazyLock::new(|| FsCalls::new(FS_CALL_THREADS));
        &POOL
    }

    /// Runs `f` (a call of kind `op` on `path`) on a thread of its own, holding one of the
    /// pool's slots until `f` returns, and waits at most `timeout` (for a slot and the call
    /// together). A call of the same kind on the same path that is still running, timed out
    /// or not, makes this one fail at once with [`FsCallError::Hung`].
    pub async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        path: &Path,
        timeout: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::result::Result<T, FsCallError> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let key: CallKey = (op, path.to_path_buf());
        {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(earlier) = running.get(&key) {
                return Err(FsCallError::Hung {
                    op,
                    path: path.to_path_buf(),
                    running_for: earlier.started.elapsed(),
                });
            }
            running.insert(
                key.clone(),
                Running {
                    started: Instant::now(),
                    abandoned: false,
                },
            );
        }
        let registered = Registered {
            running: Arc::clone(&self.running),
            key: key.clone(),
        };
        let permit = match tokio::time::timeout_at(
            deadline,
            Arc::clone(&self.slots).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(closed)) => {
                return Err(FsCallError::Lost {
                    op,
                    path: path.to_path_buf(),
                    reason: closed.to_string(),
                });
            }
            Err(_) => {
                return Err(FsCallError::Busy {
                    op,
                    path: path.to_path_buf(),
                    capacity: self.capacity,
                    waited: started.elapsed(),
                });
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("fs-call {op}"))
            .spawn(move || {
                let value = f();
                // Free the path and the slot before answering, so that a caller that goes
                // on with the same call at once is not refused.
                drop(registered);
                drop(permit);
                let _ = tx.send(value);
            });
        if let Err(e) = spawned {
            return Err(FsCallError::Lost {
                op,
                path: path.to_path_buf(),
                reason: format!("cannot start a thread: {e}"),
            });
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(FsCallError::Lost {
                op,
                path: path.to_path_buf(),
                reason: "it panicked".into(),
            }),
            Err(_) => {
                let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(call) = running.get_mut(&key) {
                    call.abandoned = true;
                }
                drop(running);
                tracing::warn!(op, path = %path.display(), ?timeout,
                    "filesystem call timed out; its thread stays blocked until the call returns");
                Err(FsCallError::TimedOut {
                    op,
                    path: path.to_path_buf(),
                    after: timeout,
                })
            }
        }
    }

    /// The calls that timed out and have not returned yet: kind, path, and for how long.
    pub fn stuck(&self) -> Vec<(&'static str, PathBuf, Duration)> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running
            .iter()
            .filter(|(_, call)| call.abandoned)
            .map(|((op, path), call)| (*op, path.clone(), call.started.elapsed()))
            .collect()
    }

    /// Slots taken now (calls running, stuck ones included).
    pub fn in_use(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Bind-mounts `source` on `target` with read-only and the other flags in effect from the
/// moment it is attached, so every copy mount propagation makes has them too (see
/// [`attach`]; a bind then a remount would leave the propagated copies read-write). Already
/// mounted is success.
pub async fn bind_mount(source: PathBuf, target: PathBuf, flags: MsFlags) -> Result<()> {
    if mounted(&target)? {
        return Ok(());
    }
    let tgt = target.clone();
    FsCalls::global()
        .run("bind mount", &target, UNMOUNT_STEP_TIMEOUT, move || {
            attach::bind_with_flags(&source, &tgt, flags)
        })
        .await?
        .map_err(|e: Errno| BackendError::io(target, std::io::Error::from(e)))
}

/// Unmounts `target` (its path as mountinfo lists it): normal, then forced, then lazy, each
/// step bounded by [`UNMOUNT_STEP_TIMEOUT`] in [`FsCalls::global`]. Not mounted, or not there
/// at all, is success; whether it is mounted is read from mountinfo only, so a dead server
/// behind the mount cannot block the decision.
pub async fn unmount_cascade(target: &Path) -> Result<()> {
    let steps = [
        ("umount", MntFlags::empty()),
        ("umount -f", MntFlags::MNT_FORCE),
        ("umount -l", MntFlags::MNT_DETACH),
    ];
    let mut timed_out = None;
    for (op, flags) in steps {
        if !mounted(target)? {
            return Ok(());
        }
        let tgt = target.to_path_buf();
        match FsCalls::global()
            .run(op, target, UNMOUNT_STEP_TIMEOUT, move || {
                nix::mount::umount2(&tgt, flags)
            })
            .await
        {
            // Done, or gone meanwhile: the next turn reads the table again (mounts stack).
            Ok(Ok(())) | Ok(Err(Errno::EINVAL)) | Ok(Err(Errno::ENOENT)) => {}
            Ok(Err(errno)) => {
                tracing::warn!(target = %target.display(), op, %errno, "unmount step failed");
            }
            Err(error) => {
                tracing::warn!(target = %target.display(), op, %error, "unmount step gave no answer");
                timed_out = Some(error);
            }
        }
    }
    if !mounted(target)? {
        return Ok(());
    }
    match timed_out {
        Some(error) => Err(error.into()),
        None => Err(BackendError::InvalidState(format!(
            "{} is still mounted after normal, forced and lazy unmount",
            target.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_table_is_read_and_lists_the_root() {
        let table = mount_table().unwrap();
        assert!(table.iter().any(|e| e.mount_point == Path::new("/")));
        assert!(mounted(Path::new("/")).unwrap());
        assert!(!mounted(Path::new("/nonexistent/lustrekit/target")).unwrap());
    }

    /// A call that blocks until the test lets it go: a hung server, without a server.
    fn hang() -> (
        std::sync::mpsc::Sender<()>,
        impl FnOnce() -> u32 + Send + 'static,
    ) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        (release, move || {
            let _ = wait.recv();
            7
        })
    }

    #[tokio::test]
    async fn a_hung_call_times_out_holds_one_slot_and_refuses_its_path_until_it_returns() {
        let pool = FsCalls::new(2);
        let short = Duration::from_millis(50);
        let dead = Path::new("/dead/server/mount");
        let (release, call) = hang();
        let err = pool.run("statvfs", dead, short, call).await.unwrap_err();
        assert!(matches!(err, FsCallError::TimedOut { .. }), "{err}");
        assert!(err.to_string().contains("/dead/server/mount"), "{err}");
        assert_eq!(pool.in_use(), 1);
        assert_eq!(pool.stuck().len(), 1);

        // The same call on the same path fails at once and takes no thread.
        let (_never, call) = hang();
        let err = pool.run("statvfs", dead, short, call).await.unwrap_err();
        assert!(matches!(err, FsCallError::Hung { .. }), "{err}");
        assert_eq!(pool.in_use(), 1);

        // Other paths, and other calls on the dead one (a lazy unmount), still run.
        let ok = pool
            .run("statvfs", Path::new("/healthy"), short * 100, || 1)
            .await
            .unwrap();
        assert_eq!(ok, 1);
        let ok = pool
            .run("umount -l", dead, short * 100, || 2)
            .await
            .unwrap();
        assert_eq!(ok, 2);

        // Once the server answers, the path is free again and the slot is back.
        release.send(()).unwrap();
        let mut again = pool.run("statvfs", dead, short * 100, || 3).await;
        while matches!(again, Err(FsCallError::Hung { .. })) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            again = pool.run("statvfs", dead, short * 100, || 3).await;
        }
        assert_eq!(again.unwrap(), 3);
        assert_eq!(pool.in_use(), 0);
        assert!(pool.stuck().is_empty());
    }

    #[tokio::test]
    async fn a_full_pool_refuses_with_busy_instead_of_queueing_forever() {
        let pool = FsCalls::new(1);
        let short = Duration::from_millis(50);
        let (release, call) = hang();
        let err = pool
            .run("statvfs", Path::new("/a"), short, call)
            .await
            .unwrap_err();
        assert!(matches!(err, FsCallError::TimedOut { .. }), "{err}");
        let err = pool
            .run("statvfs", Path::new("/b"), short, || 0)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FsCallError::Busy { capacity: 1, .. }),
            "{err}"
        );
        // Mapped for the backend's callers: a timeout naming the path.
        let mapped = BackendError::from(err);
        assert!(matches!(mapped, BackendError::Timeout { .. }), "{mapped}");
        assert!(mapped.to_string().contains("/b"), "{mapped}");
        release.send(()).unwrap();
    }

    #[tokio::test]
    async fn a_panicking_call_frees_its_slot_and_path() {
        let pool = FsCalls::new(1);
        let long = Duration::from_secs(60);
        let err = pool
            .run("stat", Path::new("/p"), long, || -> u32 { panic!("boom") })
            .await
            .unwrap_err();
        assert!(matches!(err, FsCallError::Lost { .. }), "{err}");
        assert_eq!(
            pool.run("stat", Path::new("/p"), long, || 5).await.unwrap(),
            5
        );
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn unknown_bind_options_are_refused() {
        assert!(bind_flags(false, &["nosuid".into(), "noexec".into()]).is_ok());
        let err = bind_flags(false, &["flock".into()]).unwrap_err();
        assert!(err.to_string().contains("flock"), "{err}");
        assert!(bind_flags(true, &[]).unwrap().contains(MsFlags::MS_RDONLY));
    }
}
