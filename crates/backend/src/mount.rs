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
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::{BackendError, Result};

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

// ---------------------------------------------------------------- project IDs

/// `struct fsxattr` (`linux/fs.h`), what `FS_IOC_FSGETXATTR` fills in.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

nix::ioctl_read!(fs_ioc_fsgetxattr, b'X', 31, FsXattr);

/// The project ID of the directory open at `dir` (0: none). An `O_PATH` descriptor is
/// enough: the directory is reopened read-only through it (`openat(dir, ".")`), never by
/// path, so what is read is what `dir` holds.
pub fn project_id_of(dir: std::os::fd::BorrowedFd<'_>) -> std::result::Result<u32, Errno> {
    use std::os::fd::AsRawFd;
    let flags = nix::fcntl::OFlag::O_RDONLY
        | nix::fcntl::OFlag::O_DIRECTORY
        | nix::fcntl::OFlag::O_NOFOLLOW
        | nix::fcntl::OFlag::O_CLOEXEC;
    let readable = nix::fcntl::openat(dir, ".", flags, nix::sys::stat::Mode::empty())?;
    let mut attr = FsXattr::default();
    // SAFETY: `attr` is a `struct fsxattr` the ioctl fills; the descriptor is open.
    unsafe { fs_ioc_fsgetxattr(readable.as_raw_fd(), &mut attr) }?;
    Ok(attr.projid)
}

// ---------------------------------------------------------------- the mount table

/// This process's mount table, parsed. Reading it never waits on a filesystem server; a
/// table that cannot be read or parsed is an error.
pub fn mount_table() -> Result<Vec<MountInfoEntry>> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|e| BackendError::io(MOUNTINFO, e))?;
    parse_mountinfo(&text)
}

/// Whether something is mounted at `target`, as mountinfo lists it (a canonical path:
/// symlinks resolved). Touches no filesystem but procfs; an unreadable mount table is an
/// error, never "not mounted".
pub fn is_mount_point(target: &Path) -> Result<bool> {
    Ok(top_mount(&mount_table()?, target).is_some())
}

/// The fields of one `/proc/self/mountinfo` line that callers need
/// (`proc_pid_mountinfo(5)`: `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] -
/// FSTYPE SOURCE SUPER_OPTIONS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfoEntry {
    /// `MAJ:MIN` of the filesystem instance; every Lustre client mount is its own instance.
    pub device: String,
    /// The directory of that filesystem mounted here (`/` for a whole-filesystem mount,
    /// `/shares/a` for a bind mount of that directory), unescaped.
    pub root: PathBuf,
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
    /// The per-mount options (`rw`, `nosuid`, `relatime`, ...).
    pub options: Vec<String>,
    /// The per-mount options include `ro`.
    pub read_only: bool,
    pub fs_type: String,
}

/// Parses mountinfo text. A line that does not have the kernel's shape is an error naming
/// it: a mount the parser cannot read might be the one a caller asks about.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountInfoEntry>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(index, line)| {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.iter().position(|f| *f == "-") {
                Some(separator) if separator >= 6 && fields.len() >= separator + 2 => {
                    Ok(MountInfoEntry {
                        device: fields[2].to_owned(),
                        root: unescape(fields[3]),
                        mount_point: unescape(fields[4]),
                        options: fields[5].split(',').map(str::to_owned).collect(),
                        read_only: fields[5].split(',').any(|o| o == "ro"),
                        fs_type: fields[separator + 1].to_owned(),
                    })
                }
                _ => Err(BackendError::InvalidState(format!(
                    "{MOUNTINFO} line {}: not a mountinfo line: {line:?}",
                    index + 1
                ))),
            }
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` (octal); the other bytes of
/// a path, UTF-8 or not, are as they are.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The mount visible at `mount_point`: the last one listed there (mounts stack).
pub fn top_mount<'a>(
    entries: &'a [MountInfoEntry],
    mount_point: &Path,
) -> Option<&'a MountInfoEntry> {
    entries.iter().rev().find(|e| e.mount_point == mount_point)
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
    if is_mount_point(&target)? {
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
        if !is_mount_point(target)? {
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
    if !is_mount_point(target)? {
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
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_mount_table_is_read_and_lists_the_root() {
        let table = mount_table().unwrap();
        assert!(table.iter().any(|e| e.mount_point == Path::new("/")));
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(!is_mount_point(Path::new("/nonexistent/lustrekit/target")).unwrap());
    }

    /// A node with the shared mount of `testfs` and three bind mounts from it (one with a
    /// space and one with a backslash in its paths), plus mounts that must not count: the
    /// controller-style client mount of the same filesystem (another instance), a direct
    /// fileset mount, and a second mount of the shared instance's root.
    pub(crate) const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw
27 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
60 27 0:52 / /mnt/lustre rw,relatime shared:30 - lustre 10.0.0.1@tcp:/testfs rw,flock,lazystatfs
61 27 0:53 / /var/lib/lustrekit/mnt/testfs rw,relatime shared:31 - lustre 10.0.0.1@tcp:/testfs rw,flock,lazystatfs
70 27 0:53 /shares/a /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pv-a/mount rw,relatime shared:31 - lustre 10.0.0.1@tcp:/testfs rw,flock
71 27 0:53 /shares/my\\040vol /var/lib/kubelet/pods/p2/volumes/kubernetes.io~csi/pv\\040b/mount ro,relatime shared:31 - lustre 10.0.0.1@tcp:/testfs rw,flock
72 27 0:53 /shares/back\\134slash /var/lib/kubelet/pods/p3/mount rw,nosuid,relatime - lustre 10.0.0.1@tcp:/testfs rw
80 27 0:54 / /var/lib/kubelet/pods/p4/mount rw,relatime - lustre 10.0.0.1@tcp:/testfs/shares/c rw
81 27 0:53 / /srv/whole rw,relatime - lustre 10.0.0.1@tcp:/testfs rw
";

    #[test]
    fn mountinfo_fields_are_parsed_and_unescaped() {
        let entries = parse_mountinfo(MOUNTINFO).unwrap();
        assert_eq!(entries.len(), 9);
        let b = &entries[5];
        assert_eq!(b.device, "0:53");
        assert_eq!(b.root, Path::new("/shares/my vol"));
        assert_eq!(
            b.mount_point,
            Path::new("/var/lib/kubelet/pods/p2/volumes/kubernetes.io~csi/pv b/mount")
        );
        assert!(b.read_only);
        assert_eq!(b.fs_type, "lustre");
        assert_eq!(entries[6].root, Path::new(r"/shares/back\slash"));
        assert!(!entries[6].read_only);
        // No optional fields at all is a line; garbage is an error naming its line.
        assert_eq!(
            parse_mountinfo("1 2 0:1 / /x rw - tmpfs t rw\n")
                .unwrap()
                .len(),
            1
        );
        let err = parse_mountinfo("1 2 0:1 / /x rw - tmpfs t rw\nnot a line\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse_mountinfo("1 2 0:1 / /x rw tmpfs t rw\n").is_err());
        assert_eq!(entries[5].options, ["ro", "relatime"]);
    }

    #[test]
    fn escapes_follow_the_kernel() {
        assert_eq!(
            unescape(r"/a\040b\011c\012d\134e"),
            Path::new("/a b\tc\nd\\e")
        );
        // Not an escape: kept as written.
        assert_eq!(unescape(r"/a\9"), Path::new(r"/a\9"));
        assert_eq!(unescape(r"/a\"), Path::new(r"/a\"));
        assert_eq!(unescape(r"/a\777"), Path::new(r"/a\777"));
        // Non-UTF-8 and UTF-8 bytes pass through unchanged.
        assert_eq!(unescape("/données"), Path::new("/données"));
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
