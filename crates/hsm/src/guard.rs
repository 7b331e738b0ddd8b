//! What keeps a read of a released file from returning zeros.
//!
//! A released file keeps its size with its data punched out. What happens when someone reads
//! it depends on the backend, as its [`Capabilities::restore_on_access`] says:
//!
//! - **Lustre** (`restore_on_access: true`): the kernel itself blocks the read, the
//!   coordinator sends RESTORE to a copytool, and the read goes on once the data is back (or
//!   fails). Nothing here is needed; a dead copytool makes reads wait, never return zeros.
//! - **local** (`restore_on_access: false`): nothing in the kernel knows the file is
//!   released. A read returns the holes as zeros **unless a restore daemon watches the
//!   filesystem** ([`crate::restore_daemon`]): its fanotify pre-content mark holds every read
//!   until the daemon has written the data back, or fails the read with `EIO`.
//!
//! So on `local` three things guard the gap:
//!
//! 1. **A watch lock per filesystem.** A running daemon holds a shared lock on
//!    `<run dir>/restore-watch-<major>:<minor>.lock` (the superblock's device, as
//!    `/proc/self/mountinfo` shows it, so every btrfs subvolume and bind mount of one
//!    filesystem has one name). The run dir is `$LUSTREKIT_RUN_DIR`, else `/run/lustrekit`.
//!    The daemon takes the lock only once its mark is in place and drops it before it closes
//!    its fanotify group; the kernel drops it when the process dies.
//! 2. **Release refuses** (`HsmError::Refused`) when no daemon holds the lock of the file's
//!    filesystem, unless the engine is configured with `allow_unguarded_release`
//!    (`--unguarded` on `hsm release` and `hsm policy`). The policy engine releases through
//!    the same check.
//! 3. **`hsm state` names the risk**: a released file that nothing guards reports
//!    `unguarded: true` and its text says reads return zeros until a daemon watches.
//!
//! Several daemons may watch one filesystem at once: each group is asked in turn, so a read
//! waits until every daemon answered, and the first one that finds the file released
//! restores it. A **restart without a window** starts the new daemon, waits until it
//! watches (its lock is held), then stops the old one.
//!
//! **What stays open.** The check is made when a file is released. A daemon that stops later
//! (or was never started after a reboot) leaves released files unguarded: `hsm state` says
//! so, and reads return zeros. A daemon killed with SIGKILL (or crashing) closes its group
//! in the kernel, which lets every read it was holding go on: a read of a released file in
//! that instant sees zeros. What we do about it: the daemon never exits on an error it can
//! retry (it dies only on a broken fanotify descriptor, and then it denies every read it
//! holds with `EIO` before closing the group, so only a SIGKILL or a crash has the window);
//! run it under a supervisor that restarts it; and where a crash must not show zeros, run
//! two daemons per filesystem: the survivor is asked next and restores.
//!
//! **Which release.** [`release_mode`] tells the engine how to release: where a daemon
//! watches, the backend's [`backend::Filesystem::hsm_release_watched`], which leaves the
//! exclusion of other processes during the punch to the daemon (see the `local` backend's
//! HSM module doc: a write lease across the punch would stall every release for the kernel's
//! `lease-break-time`); otherwise the plain release under a lease. A watched release holds a
//! shared lock on `<run dir>/restore-release-<major>:<minor>.lock` from before its probe until
//! it is done, and a daemon that stops drops its watch lock first, then waits (within its
//! stop grace) until no such lock is held: a release that counted on a daemon never loses
//! it midway to a clean stop. (A SIGKILL of the last daemon has the window described above.)
//!
//! The probe ([`watched`]) asks the kernel whether a write lock *could* be taken
//! (`F_OFD_GETLK`), without taking one, so two concurrent probes never see each other as a
//! daemon.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use backend::Capabilities;
use nix::fcntl::{FcntlArg, fcntl};

use crate::error::{HsmError, Result};

/// The environment variable naming the run directory of watch locks.
pub const RUN_DIR_ENV: &str = "LUSTREKIT_RUN_DIR";
/// The run directory when the environment names none.
pub const DEFAULT_RUN_DIR: &str = "/run/lustrekit";

/// What the state text of an unguarded released file says.
pub const UNGUARDED_TEXT: &str = "unguarded: reads return zeros until a restore daemon watches";

/// The directory the watch locks live in: `$LUSTREKIT_RUN_DIR`, else `/run/lustrekit`.
pub fn run_dir() -> PathBuf {
    match std::env::var_os(RUN_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(DEFAULT_RUN_DIR),
    }
}

/// Who keeps reads of a released file from returning zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadGuard {
    /// The filesystem blocks the read until it is restored (Lustre's coordinator).
    Kernel,
    /// A restore daemon of ours must watch the filesystem.
    Daemon,
}

impl ReadGuard {
    /// Asks the backend's capabilities, never its kind.
    pub fn of(caps: &Capabilities) -> Self {
        if caps.restore_on_access {
            Self::Kernel
        } else {
            Self::Daemon
        }
    }
}

/// A filesystem (superblock), named by its device numbers as `/proc/self/mountinfo` shows
/// them. Unlike `st_dev`, this is one name for every btrfs subvolume of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FsKey {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for FsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

fn mount_id(dirfd: i32, path: &std::ffi::CStr, flags: i32) -> io::Result<u64> {
    // SAFETY: a zeroed statx is a valid out-buffer.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd/path and out-buffer.
    let rc = unsafe { libc::statx(dirfd, path.as_ptr(), flags, libc::STATX_MNT_ID, &mut stx) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "statx did not report a mount ID (Linux 5.8+)",
        ));
    }
    Ok(stx.stx_mnt_id)
}

/// The superblock device of the mount with this ID, from `/proc/self/mountinfo`.
fn key_of_mount(mnt_id: u64) -> io::Result<FsKey> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    key_in_mountinfo(&info, mnt_id).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("mount {mnt_id} is not in /proc/self/mountinfo"),
        )
    })
}

fn key_in_mountinfo(info: &str, mnt_id: u64) -> Option<FsKey> {
    info.lines().find_map(|line| {
        let mut f = line.split(' ');
        let id: u64 = f.next()?.parse().ok()?;
        if id != mnt_id {
            return None;
        }
        let _parent = f.next()?;
        let (maj, min) = f.next()?.split_once(':')?;
        Some(FsKey {
            major: maj.parse().ok()?,
            minor: min.parse().ok()?,
        })
    })
}

/// The filesystem a path is on (the path itself, not a symlink's target).
pub fn fs_key_of_path(path: &Path) -> io::Result<FsKey> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    key_of_mount(mount_id(libc::AT_FDCWD, &c, libc::AT_SYMLINK_NOFOLLOW)?)
}

/// The filesystem an open file is on.
pub fn fs_key_of_fd(fd: BorrowedFd<'_>) -> io::Result<FsKey> {
    key_of_mount(mount_id(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)?)
}

/// The watch lock file of a filesystem.
pub fn lock_path(run_dir: &Path, key: FsKey) -> PathBuf {
    run_dir.join(format!("restore-watch-{key}.lock"))
}

fn whole_file_lock(kind: i32) -> libc::flock {
    // SAFETY: a zeroed flock is valid; the fields that matter are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0;
    fl
}

fn open_lock_file(path: &Path, create: bool) -> io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    if create {
        o.write(true).create(true).mode(0o644);
    }
    let f = o.open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(f)
}

/// The shared lock a daemon holds while it watches a filesystem. Dropping it (or the
/// process dying) releases it.
#[derive(Debug)]
pub struct WatchLock {
    file: File,
    path: PathBuf,
    key: FsKey,
}

impl WatchLock {
    /// Takes the shared watch lock of a filesystem in `run_dir` (made if missing).
    pub fn acquire(run_dir: &Path, key: FsKey) -> io::Result<Self> {
        make_run_dir(run_dir)?;
        let path = lock_path(run_dir, key);
        let file = open_lock_file(&path, true)?;
        // Probes never take locks, so nothing but a foreign writer can refuse a read lock.
        fcntl(
            file.as_fd(),
            FcntlArg::F_OFD_SETLK(&whole_file_lock(libc::F_RDLCK)),
        )
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        Ok(Self { file, path, key })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn key(&self) -> FsKey {
        self.key
    }
}

impl Drop for WatchLock {
    fn drop(&mut self) {
        // Closing the file releases the lock; unlock first all the same, so a clone of the
        // descriptor somewhere cannot keep it.
        let _ = fcntl(
            self.file.as_fd(),
            FcntlArg::F_OFD_SETLK(&whole_file_lock(libc::F_UNLCK)),
        );
    }
}

/// Makes the run dir (and its parents) if missing: `/run` is a tmpfs, empty after a boot.
fn make_run_dir(run_dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(run_dir)
}

/// The lock file of releases that count on a daemon of the filesystem.
pub fn release_lock_path(run_dir: &Path, key: FsKey) -> PathBuf {
    run_dir.join(format!("restore-release-{key}.lock"))
}

/// The shared lock a release that counts on a watching daemon holds until it is done; a
/// stopping daemon waits for it ([`releases_in_flight_in`]).
#[derive(Debug)]
pub struct ReleaseHold {
    file: File,
}

impl ReleaseHold {
    /// Takes a shared hold in `run_dir` (the file is made if it may be; a daemon makes it
    /// when it starts, for releasers that may not write there).
    pub fn take(run_dir: &Path, key: FsKey) -> io::Result<Self> {
        let path = release_lock_path(run_dir, key);
        let file = match open_lock_file(&path, true) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => open_lock_file(&path, false)?,
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => open_lock_file(&path, false)?,
            Err(e) => return Err(e),
        };
        fcntl(
            file.as_fd(),
            FcntlArg::F_OFD_SETLK(&whole_file_lock(libc::F_RDLCK)),
        )
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        Ok(Self { file })
    }

    /// Makes the lock file, and the run dir if missing (a daemon, at its start).
    pub fn prepare(run_dir: &Path, key: FsKey) -> io::Result<()> {
        make_run_dir(run_dir)?;
        open_lock_file(&release_lock_path(run_dir, key), true).map(drop)
    }
}

impl Drop for ReleaseHold {
    fn drop(&mut self) {
        let _ = fcntl(
            self.file.as_fd(),
            FcntlArg::F_OFD_SETLK(&whole_file_lock(libc::F_UNLCK)),
        );
    }
}

/// Whether some release that counts on a daemon of `key` is in progress. Takes no lock.
pub fn releases_in_flight_in(run_dir: &Path, key: FsKey) -> io::Result<bool> {
    held_by_anyone(&release_lock_path(run_dir, key))
}

/// Whether some daemon holds the watch lock of `key` in `run_dir`. Takes no lock.
pub fn watched_in(run_dir: &Path, key: FsKey) -> io::Result<bool> {
    held_by_anyone(&lock_path(run_dir, key))
}

/// Whether anyone holds a lock on the lock file at `path` (absent: nobody). Asks the kernel
/// whether a write lock could be taken (`F_OFD_GETLK`), taking none.
fn held_by_anyone(path: &Path) -> io::Result<bool> {
    let file = match open_lock_file(path, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut fl = whole_file_lock(libc::F_WRLCK);
    fcntl(file.as_fd(), FcntlArg::F_OFD_GETLK(&mut fl))
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether a restore daemon watches the filesystem `path` is on. Any failure to tell counts
/// as "no".
pub fn watched(path: &Path) -> bool {
    fs_key_of_path(path)
        .and_then(|k| watched_in(&run_dir(), k))
        .unwrap_or_else(|e| {
            tracing::debug!(path = %path.display(), error = %e, "watch probe failed; counted as unwatched");
            false
        })
}

/// Whether a restore daemon watches the filesystem an open file is on.
pub fn watched_fd(fd: BorrowedFd<'_>) -> bool {
    fs_key_of_fd(fd)
        .and_then(|k| watched_in(&run_dir(), k))
        .unwrap_or(false)
}

/// How a release goes on (see the module doc).
#[derive(Debug)]
pub enum ReleaseMode {
    /// The filesystem holds reads of released files (Lustre): the backend's plain release.
    Kernel,
    /// A restore daemon watches the file's filesystem: the backend's watched release, with
    /// this hold kept until it is done (`None` when the hold could not be taken, which a
    /// warning says).
    Watched(Option<ReleaseHold>),
    /// Nothing guards reads of the released file, as the caller allowed: the backend's
    /// plain release.
    Unguarded,
}

/// How a release must go on, or why it must not: on a backend whose reads of released files
/// are not held by the filesystem, a restore daemon must watch the file's filesystem,
/// unless unguarded releases are allowed. Keep the result until the release is done.
/// `fd`, the open file when the caller has it, names the filesystem more surely than the
/// path (whose directories a tenant may swap).
pub fn release_mode(
    caps: &Capabilities,
    allow_unguarded: bool,
    path: &Path,
    fd: Option<BorrowedFd<'_>>,
) -> Result<ReleaseMode> {
    if ReadGuard::of(caps) == ReadGuard::Kernel {
        return Ok(ReleaseMode::Kernel);
    }
    let key = match fd {
        Some(fd) => fs_key_of_fd(fd),
        None => fs_key_of_path(path),
    };
    let run = run_dir();
    let watched = match key {
        Ok(key) => {
            // The hold comes first: a daemon that stops after our probe then waits for us.
            let hold = ReleaseHold::take(&run, key)
                .map_err(|e| {
                    tracing::debug!(path = %path.display(), error = %e, "no release hold");
                })
                .ok();
            match watched_in(&run, key) {
                Ok(true) => Some(hold),
                Ok(false) => None,
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "watch probe failed; counted as unwatched");
                    None
                }
            }
        }
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "watch probe failed; counted as unwatched");
            None
        }
    };
    if let Some(hold) = watched {
        if hold.is_none() {
            tracing::warn!(path = %path.display(), run_dir = %run.display(), "cannot hold the release lock: a daemon stopping now would not wait for this release");
        }
        return Ok(ReleaseMode::Watched(hold));
    }
    if allow_unguarded {
        return Ok(ReleaseMode::Unguarded);
    }
    Err(HsmError::refused(
        path,
        format!(
            "no restore daemon watches this filesystem, so the released file would read as zeros; \
             start `lustrekit hsm restore-daemon` (watch locks in {}), or pass --unguarded to accept the risk",
            run_dir().display()
        ),
    ))
}

/// The check `release` makes before it frees anything ([`release_mode`], its result dropped).
pub fn check_release(
    caps: &Capabilities,
    allow_unguarded: bool,
    path: &Path,
    fd: Option<BorrowedFd<'_>>,
) -> Result<()> {
    release_mode(caps, allow_unguarded, path, fd).map(drop)
}

/// Whether a file in this state is released with nothing guarding its reads.
pub fn unguarded(caps: &Capabilities, state: &lustre_model::HsmState, path: &Path) -> bool {
    state.flags.released && ReadGuard::of(caps) == ReadGuard::Daemon && !watched(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_starts_on_a_fresh_boot_without_its_run_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("run/lustrekit");
        let key = FsKey {
            major: 0,
            minor: 40,
        };
        // In the daemon's order: the release lock file first, then the watch lock.
        ReleaseHold::prepare(&run_dir, key).unwrap();
        let lock = WatchLock::acquire(&run_dir, key).unwrap();
        assert!(watched_in(&run_dir, key).unwrap());
        drop(lock);
        assert!(!watched_in(&run_dir, key).unwrap());
    }

    #[test]
    fn mountinfo_names_the_superblock() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n\
                    46 27 0:40 / /mnt/b rw,relatime - btrfs /dev/loop0 rw,subvol=/\n\
                    45 27 0:40 /sv /mnt/bind rw - btrfs /dev/loop0 rw,subvol=/sv\n\
                    47 27 7:3 / /mnt/e rw - ext4 /dev/loop3 rw\n";
        assert_eq!(
            key_in_mountinfo(info, 45),
            Some(FsKey {
                major: 0,
                minor: 40
            })
        );
        assert_eq!(
            key_in_mountinfo(info, 47).map(|k| k.to_string()),
            Some("7:3".into())
        );
        assert_eq!(key_in_mountinfo(info, 99), None);
        assert_eq!(key_in_mountinfo("garbage\n4x 1 a:b\n", 4), None);
    }

    #[test]
    fn a_probe_sees_a_holder_and_never_itself() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = FsKey {
            major: 250,
            minor: 7,
        };
        assert!(
            !watched_in(dir.path(), key).expect("probe"),
            "no lock file yet"
        );
        let a = WatchLock::acquire(dir.path(), key).expect("lock a");
        assert!(watched_in(dir.path(), key).expect("probe"));
        // A second daemon overlaps (a rolling restart); probes take nothing.
        let b = WatchLock::acquire(dir.path(), key).expect("lock b");
        assert!(watched_in(dir.path(), key).expect("probe"));
        drop(a);
        assert!(watched_in(dir.path(), key).expect("probe"));
        drop(b);
        assert!(!watched_in(dir.path(), key).expect("probe"));
        let other = FsKey {
            major: 250,
            minor: 8,
        };
        let _c = WatchLock::acquire(dir.path(), other).expect("lock c");
        assert!(!watched_in(dir.path(), key).expect("probe"));
    }

    #[test]
    fn release_holds_are_seen_by_daemons_and_never_look_like_one() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = FsKey {
            major: 250,
            minor: 9,
        };
        assert!(!releases_in_flight_in(dir.path(), key).expect("probe"));
        let a = ReleaseHold::take(dir.path(), key).expect("hold a");
        let b = ReleaseHold::take(dir.path(), key).expect("hold b");
        assert!(releases_in_flight_in(dir.path(), key).expect("probe"));
        assert!(
            !watched_in(dir.path(), key).expect("probe"),
            "a hold is no daemon"
        );
        drop(a);
        assert!(releases_in_flight_in(dir.path(), key).expect("probe"));
        drop(b);
        assert!(!releases_in_flight_in(dir.path(), key).expect("probe"));
    }

    #[test]
    fn a_path_has_the_key_of_its_mount() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").expect("write");
        let by_path = fs_key_of_path(&f).expect("key");
        let file = File::open(&f).expect("open");
        assert_eq!(fs_key_of_fd(file.as_fd()).expect("key"), by_path);
        assert_eq!(fs_key_of_path(dir.path()).expect("key"), by_path);
    }
}
