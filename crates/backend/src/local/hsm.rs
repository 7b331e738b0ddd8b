//! The HSM state of files on the `local` backend.
//!
//! A small JSON record in an xattr on the file holds the flags, the archive ID and the data
//! version the archive was taken at. The xattr is `trusted.lustrekit.hsm` when we may write
//! trusted xattrs (root), else `user.lustrekit.hsm`; reads try both.
//!
//! **Data version.** Lustre has a real data version; a plain Linux file does not, so ours is
//! (size, mtime, inode number, inode generation from `FS_IOC_GETVERSION`) plus the ctime. Our
//! own xattr writes move the ctime, so the record keeps `ok_until_ns`, a wall-clock bound just
//! after our last write: a ctime at or before it is ours, a later one is someone else's (a
//! write that put the mtime back, a chmod) and makes the file dirty. Data writes always move
//! the mtime, so they are seen at once; a metadata-only change in the 50 ms after our own
//! write may be missed, which can never lose data.
//!
//! **Dirty is computed.** Nothing in the kernel tells us a local file was written, so
//! [`hsm_state`] compares the recorded data version with the live one and reports `dirty`
//! when they differ, for archived and released files alike.
//!
//! **Release** frees the data of an archived, unchanged file with
//! `fallocate(PUNCH_HOLE | KEEP_SIZE)`, keeping size and metadata. It must never punch bytes
//! another process wrote, and never let another process read the file's zeros as data. It
//! writes the `released` intent first, so that a crash at any point leaves either the old
//! state or a file marked released, which restore repairs from the archive (the data
//! version was checked against the archived one first); never "archived" with zeros in it.
//! How it keeps other processes out depends on who holds reads of released files:
//!
//! - **Unguarded** ([`hsm_release`], no restore daemon watches the filesystem): a write lease
//!   (`F_SETLEASE`) for the whole release. It is refused while another process has the file
//!   open (read or write, an `mmap` included), and a new open waits until we drop it.
//! - **Watched** ([`hsm_release_watched`], a restore-on-access daemon watches the filesystem:
//!   the caller checked). The daemon's fanotify pre-content mark raises an event for every
//!   data access of a file on the filesystem (read, write, fallocate, truncate, mmap) and
//!   holds it until the daemon answers; our own hole punch raises one too. The kernel opens
//!   a descriptor of the file for the daemon when it reads the event, and that open breaks
//!   a write lease, then waits out the kernel's `lease-break-time` (45 s): a lease held
//!   across the punch cost every release 45 s. So the lease covers only the start, and the
//!   daemon the rest:
//!   1. The write lease (refused if the file is open elsewhere) and a lock of ours on the
//!      file (an OFD write lock on the byte at [`RELEASER_LOCK_START`], far past any data;
//!      the kernel drops it when our descriptor closes, so it proves the releaser alive).
//!   2. The data version is checked against the archived one; the intent is written:
//!      `released`, plus a `releasing` marker {pid, thread id, pid namespace, start time}.
//!   3. The lease is dropped. No other process had the file open while it was held, so no
//!      access granted before the marker can still be in flight (a writer that passed its
//!      permission check but had not written yet would otherwise land after our check). From
//!      here every access by another thread raises an event, and the daemon, seeing a
//!      marker whose releaser is alive, holds it (polling the record) until the marker is
//!      gone, then restores the file (it is released now) before letting it go on. The
//!      releaser's own punch (the marker's thread, in the daemon's pid namespace) is
//!      allowed at once.
//!   4. The data version is checked again (a change means someone got in: the old record is
//!      put back, which reads as dirty), the data punched, the mtime put back, and the
//!      final record written: released, no marker. Then our descriptor closes.
//!
//!   Failures: a punch that failed before changing anything (`EOPNOTSUPP`, `EPERM`,
//!   `EBUSY`, `ETXTBSY` ..., which includes a daemon's denial) puts the old record back;
//!   any other punch error (`EIO`, `ENOSPC` ..., after which some blocks may be gone) leaves
//!   the file released with the marker cleared, and a read restores it.
//!
//!   A **SIGKILL** of the releaser: before the intent, nothing changed. After it, the record
//!   says released with a marker, and our lock is gone with the process: the daemon (and
//!   [`hsm_mark`]) see a marker whose releaser is dead, and the daemon treats the file as
//!   released, restoring it from the archive on the next access whether or not the punch
//!   happened (the archived copy matches the data version checked in step 2, and every
//!   other access since was held by the daemon, then comes after that restore); the
//!   restore's record drops the marker. A crash after the final record leaves a released
//!   file, done. Never "present" with zeros in it. A marker's age decides nothing: a
//!   releaser that is alive but slow keeps other accesses held (up to the daemon's restore
//!   timeout, then denied with `EBUSY`), because restoring under a live releaser would let
//!   its punch destroy the restored bytes. (Nor does its pid: a pid can be reused, a lock
//!   cannot outlive its descriptor.)
//!
//!   While a live releaser's marker is on a file, [`hsm_mark`] refuses (busy), so the
//!   marker is only ever cleared by its releaser, or after its death.
//!
//! Without leases (`leases-enable` off, or not the owner without CAP_LEASE) both modes rely
//! on the data-version checks alone, and say so in the log.

use async_trait::async_trait;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use lustre_model::{HsmFlags, HsmState};
use serde::{Deserialize, Serialize};

use nix::fcntl::OFlag;

use super::{LocalBackend, beneath};
use crate::{BackendError, HsmAccessState, ReleaseInProgress, Result};

const TRUSTED_XATTR: &str = "trusted.lustrekit.hsm";
const USER_XATTR: &str = "user.lustrekit.hsm";
/// How long after our own xattr write a ctime still counts as ours.
const CTIME_MARGIN_NS: i64 = 50_000_000;

use super::file_version::{DataVersion, Lease, LeaseRefused};

/// The xattr content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    v: u32,
    flags: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    archive_id: Option<u32>,
    dv: DataVersion,
    /// A ctime up to this wall-clock time (ns) comes from our own write.
    ok_until_ns: i64,
    /// Set while a watched release is in progress (records without it stay valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    releasing: Option<Releasing>,
}

/// Who is releasing the file, and since when (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Releasing {
    pid: i32,
    tid: i32,
    /// The inode number of the releaser's `/proc/self/ns/pid`; 0 if unknown.
    #[serde(default)]
    pid_ns: u64,
    started_ns: i64,
}

impl Releasing {
    /// This thread, now.
    fn me() -> Self {
        Self {
            pid: std::process::id() as i32,
            tid: nix::unistd::gettid().as_raw(),
            pid_ns: own_pid_ns(),
            started_ns: now_ns(),
        }
    }
}

/// The inode number of this process's pid namespace, 0 if it cannot be read.
fn own_pid_ns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// Where the releaser's lock sits: one byte far past any data (locks beyond the end of a
/// file are allowed), so that it never meets a lock a tenant's program takes on its data.
pub const RELEASER_LOCK_START: i64 = i64::MAX - 1;

fn releaser_lock(kind: i32) -> libc::flock {
    // SAFETY: a zeroed flock is valid; the fields that matter are set below (and `l_pid`
    // must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = RELEASER_LOCK_START as libc::off_t;
    fl.l_len = 1;
    fl
}

/// Takes the releaser's lock on the file (see the module doc); held until the descriptor
/// closes.
fn take_releaser_lock(path: &Path, file: &File) -> Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    match fcntl(file, FcntlArg::F_OFD_SETLK(&releaser_lock(libc::F_WRLCK))) {
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
            Err(BackendError::InvalidState(format!(
                "{}: busy: another release of the file is in progress",
                path.display()
            )))
        }
        Err(e) => Err(io_err(path, e.into())),
    }
}

/// Whether some releaser holds its lock on the file (seen through any other descriptor).
fn releaser_alive(path: &Path, file: &File) -> Result<bool> {
    use nix::fcntl::{FcntlArg, fcntl};
    let mut fl = releaser_lock(libc::F_WRLCK);
    fcntl(file, FcntlArg::F_OFD_GETLK(&mut fl)).map_err(|e| io_err(path, e.into()))?;
    // Only an OFD lock (l_pid -1) on exactly our byte is a releaser's: a tenant's lock over
    // the whole file is not.
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short
        && fl.l_start == RELEASER_LOCK_START as libc::off_t
        && fl.l_len == 1
        && fl.l_pid == -1)
}

impl Record {
    fn matches(&self, cur: &DataVersion) -> bool {
        self.dv.same_data(cur)
            && (cur.ctime_ns == self.dv.ctime_ns || cur.ctime_ns <= self.ok_until_ns)
    }

    fn state(&self, cur: &DataVersion) -> HsmState {
        let mut flags = HsmFlags::from_bits(self.flags);
        if (flags.archived || flags.released) && !self.matches(cur) {
            flags.dirty = true;
        }
        HsmState {
            flags,
            archive_id: self.archive_id.filter(|id| *id != 0),
        }
    }
}

fn io_err(path: &Path, e: std::io::Error) -> BackendError {
    BackendError::io(path, e)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Where the HSM operations may act: the backend root's descriptor, and the root's paths
/// (as given and canonical) for turning absolute paths into paths below it.
pub(crate) struct HsmRoot<'a> {
    pub fd: BorrowedFd<'a>,
    pub paths: [&'a Path; 2],
}

/// Opens the regular file `path` from the root's descriptor: never following a symlink (on
/// the way or at the end), never leaving the root, and refusing anything but a regular file
/// before opening it (a tenant's FIFO would block us, a device node would be acted on).
fn open(root: &HsmRoot<'_>, path: &Path, write: bool) -> Result<File> {
    let rel = root
        .paths
        .iter()
        .find_map(|r| beneath::relative_to(r, path))
        .ok_or_else(|| {
            BackendError::InvalidState(format!(
                "{}: not beneath the backend root {}",
                path.display(),
                root.paths[1].display()
            ))
        })?;
    let mode = if write {
        OFlag::O_RDWR
    } else {
        OFlag::O_RDONLY
    };
    match beneath::open_regular(root.fd, &rel, mode | OFlag::O_NONBLOCK) {
        Ok(fd) => Ok(File::from(fd)),
        Err(beneath::OpenRegularError::NotRegular(fmt)) => {
            Err(BackendError::InvalidState(format!(
                "{}: {}: only regular files have an HSM state",
                path.display(),
                beneath::file_type_name(fmt)
            )))
        }
        Err(beneath::OpenRegularError::Errno(e)) => Err(io_err(path, e.into())),
    }
}

/// Whether this process may write `trusted.*` xattrs, and so trusts only those: a tenant
/// can set `user.*` xattrs on its own files, and a forged HSM record must never steer what
/// root does.
fn privileged() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The live data version of an open file.
fn data_version(path: &Path, file: &File) -> Result<DataVersion> {
    DataVersion::of_file(file).map_err(|e| io_err(path, e))
}

fn cname(name: &str) -> CString {
    // The names are constants without NUL.
    CString::new(name).unwrap_or_default()
}

fn fget(fd: RawFd, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let cname = cname(name);
    let mut buf = vec![0u8; 512];
    loop {
        // SAFETY: the buffer is valid for `buf.len()` bytes; the name is NUL-terminated.
        let n = unsafe { libc::fgetxattr(fd, cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            // No permission to read trusted.* is the same as absent for us.
            Some(libc::EPERM) | Some(libc::EACCES) if name.starts_with("trusted.") => {
                return Ok(None);
            }
            Some(libc::ERANGE) if buf.len() < 65536 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

fn fset(fd: RawFd, name: &str, value: &[u8]) -> std::io::Result<()> {
    let cname = cname(name);
    // SAFETY: value is valid for its length; the name is NUL-terminated.
    let rc = unsafe { libc::fsetxattr(fd, cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn fremove(fd: RawFd, name: &str) {
    let cname = cname(name);
    // SAFETY: the name is NUL-terminated. A missing xattr is fine.
    unsafe { libc::fremovexattr(fd, cname.as_ptr()) };
}

fn read_record(path: &Path, file: &File) -> Result<Option<Record>> {
    let fd = file.as_raw_fd();
    let raw = if privileged() {
        fget(fd, TRUSTED_XATTR).map_err(|e| io_err(path, e))?
    } else {
        fget(fd, USER_XATTR).map_err(|e| io_err(path, e))?
    };
    match raw {
        None => Ok(None),
        Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| {
            BackendError::InvalidState(format!(
                "{}: unreadable HSM record in xattr: {e}",
                path.display()
            ))
        }),
    }
}

/// Writes the record, preferring the trusted namespace; the other copy is dropped so that
/// reads never see a stale one.
fn write_record(path: &Path, file: &File, rec: &mut Record) -> Result<()> {
    rec.ok_until_ns = now_ns() + CTIME_MARGIN_NS;
    let raw = serde_json::to_vec(rec)
        .map_err(|e| BackendError::InvalidState(format!("HSM record: {e}")))?;
    let fd = file.as_raw_fd();
    match fset(fd, TRUSTED_XATTR, &raw) {
        Ok(()) => {
            fremove(fd, USER_XATTR);
            Ok(())
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            fset(fd, USER_XATTR, &raw).map_err(|e| io_err(path, e))
        }
        Err(e) => Err(io_err(path, e)),
    }
}

/// The live data version of `file`, from a descriptor opened beneath the root.
pub(crate) fn data_version_of(root: &HsmRoot<'_>, path: &Path) -> Result<DataVersion> {
    let f = open(root, path, false)?;
    data_version(path, &f)
}

/// The HSM state of `file`, with `dirty` computed from the live data version.
pub(crate) fn hsm_state(root: &HsmRoot<'_>, path: &Path) -> Result<HsmState> {
    let f = open(root, path, false)?;
    let cur = data_version(path, &f)?;
    Ok(read_record(path, &f)?
        .map(|r| r.state(&cur))
        .unwrap_or_default())
}

/// The HSM state of `file` with the release in progress on it, if any.
pub(crate) fn hsm_access_state(root: &HsmRoot<'_>, path: &Path) -> Result<HsmAccessState> {
    let f = open(root, path, false)?;
    access_state_of(path, &f)
}

/// [`hsm_access_state`] of the file open at `f` (`path` names it in errors).
fn access_state_of(path: &Path, f: &File) -> Result<HsmAccessState> {
    let cur = data_version(path, f)?;
    let Some(rec) = read_record(path, f)? else {
        return Ok(HsmAccessState {
            state: HsmState::default(),
            releasing: None,
        });
    };
    let releasing = match rec.releasing {
        None => None,
        Some(r) => Some(ReleaseInProgress {
            pid: r.pid,
            tid: r.tid,
            pid_ns: r.pid_ns,
            started_ns: r.started_ns,
            releaser_alive: releaser_alive(path, f)?,
        }),
    };
    Ok(HsmAccessState {
        state: rec.state(&cur),
        releasing,
    })
}

fn merge(old: HsmFlags, set: HsmFlags, clear: HsmFlags) -> HsmFlags {
    HsmFlags::from_bits((old.bits() | set.bits()) & !clear.bits())
}

/// Sets and clears flags; records `archive_id` when given. See the module doc for when the
/// data version is taken afresh.
pub(crate) fn hsm_mark(
    root: &HsmRoot<'_>,
    path: &Path,
    set: HsmFlags,
    clear: HsmFlags,
    archive_id: Option<u32>,
) -> Result<()> {
    let f = open(root, path, false)?;
    let cur = data_version(path, &f)?;
    let old = read_record(path, &f)?;
    if let Some(r) = old.as_ref().and_then(|r| r.releasing)
        && releaser_alive(path, &f)?
    {
        return Err(BackendError::InvalidState(format!(
            "{}: busy: being released (pid {}, thread {})",
            path.display(),
            r.pid,
            r.tid
        )));
    }
    let old_state = old.as_ref().map(|r| r.state(&cur)).unwrap_or_default();
    let flags = merge(old_state.flags, set, clear);
    // Setting `archived`, or clearing `dirty`/`released`, asserts that the content now on
    // disk is the archived one: the data version is taken afresh.
    let rebaseline = set.archived || clear.dirty || clear.released;
    let dv = match (&old, rebaseline) {
        (Some(r), false) => r.dv,
        _ => cur,
    };
    let mut rec = Record {
        v: 1,
        flags: flags.bits(),
        archive_id: archive_id.or(old_state.archive_id),
        dv,
        ok_until_ns: 0,
        // A marker whose releaser is dead goes (see the module doc).
        releasing: None,
    };
    write_record(path, &f, &mut rec)?;
    tracing::debug!(file = %path.display(), flags = format_args!("{:#x}", rec.flags), "hsm mark");
    Ok(())
}

/// A write lease for the release, refusing while another process has the file open.
fn lease<'a>(path: &Path, file: &'a File) -> Result<Lease<'a>> {
    let lease = Lease::take(file).map_err(|LeaseRefused::Busy| {
        BackendError::InvalidState(format!(
            "{}: busy: another process has the file open",
            path.display()
        ))
    })?;
    if !lease.held() {
        tracing::warn!(file = %path.display(), "no write lease; relying on the data-version check");
    }
    Ok(lease)
}

/// Frees the data blocks of an archived, unchanged file, keeping its size and metadata,
/// under a write lease for the whole release (no restore daemon watches).
pub(crate) fn hsm_release(root: &HsmRoot<'_>, path: &Path) -> Result<()> {
    release(root, path, false)
}

/// [`hsm_release`] while a restore daemon watches the filesystem: the lease covers only the
/// intent, the daemon the punch (see the module doc).
pub(crate) fn hsm_release_watched(root: &HsmRoot<'_>, path: &Path) -> Result<()> {
    release(root, path, true)
}

/// Punch errors after which nothing was freed: the old record can go back.
fn nothing_punched(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EOPNOTSUPP
                | libc::EPERM
                | libc::EBUSY
                | libc::ETXTBSY
                | libc::EBADF
                | libc::EINVAL
                | libc::ENODEV
                | libc::EFBIG
                | libc::ESPIPE
        )
    )
}

fn release(root: &HsmRoot<'_>, path: &Path, watched: bool) -> Result<()> {
    let f = open(root, path, true)?;
    let md = f.metadata().map_err(|e| io_err(path, e))?;
    if !md.is_file() {
        return Err(BackendError::InvalidState(format!(
            "{}: only regular files can be released",
            path.display()
        )));
    }
    let lease = lease(path, &f)?;
    if watched {
        take_releaser_lock(path, &f)?;
    }
    let cur = data_version(path, &f)?;
    let Some(mut rec) = read_record(path, &f)? else {
        return Err(BackendError::InvalidState(format!(
            "{}: not archived; refusing to release",
            path.display()
        )));
    };
    let state = rec.state(&cur);
    if state.flags.released && !state.flags.dirty {
        return Ok(());
    }
    if !state.flags.archived || !state.flags.exists {
        return Err(BackendError::InvalidState(format!(
            "{}: not archived; refusing to release",
            path.display()
        )));
    }
    if state.flags.no_release {
        return Err(BackendError::InvalidState(format!(
            "{}: marked never_release",
            path.display()
        )));
    }
    if state.flags.dirty || state.flags.released {
        return Err(BackendError::InvalidState(format!(
            "{}: data version changed since it was archived; refusing to release",
            path.display()
        )));
    }
    // What goes back if the release stops before anything was freed: the archived data
    // version, so that a change since reads as dirty.
    let mut before = rec.clone();
    before.releasing = None;
    // 1. Intent first: from here a crash leaves a released file, which restore repairs.
    let mut flags = HsmFlags::from_bits(rec.flags);
    flags.released = true;
    rec.flags = flags.bits();
    rec.dv = cur;
    rec.releasing = watched.then(Releasing::me);
    write_record(path, &f, &mut rec)?;
    if watched {
        // The daemon holds every other access from here; the lease must go before the
        // punch, whose event makes the kernel open the file for the daemon.
        drop(lease);
        test_hooks::before_punch(&f);
    }
    // 2. Nothing may have changed since the check (it can, without a lease).
    let now = data_version(path, &f)?;
    if !now.same_data(&cur) {
        write_record(path, &f, &mut before)?;
        return Err(BackendError::InvalidState(format!(
            "{}: written to while being released; refusing to release",
            path.display()
        )));
    }
    // 3. Punch the data out, keeping the size.
    if cur.size > 0
        && let Err(e) = nix::fcntl::fallocate(
            &f,
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            0,
            cur.size as libc::off_t,
        )
    {
        let e = std::io::Error::from(e);
        if nothing_punched(&e) {
            write_record(path, &f, &mut before)?;
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                return Err(BackendError::unsupported(
                    "hsm_release",
                    format!("{}: the filesystem cannot punch holes", path.display()),
                ));
            }
            return Err(io_err(path, e));
        }
        // Some blocks may be gone: the file stays released, and a read restores it.
        rec.releasing = None;
        write_record(path, &f, &mut rec)?;
        tracing::error!(file = %path.display(), error = %e, "hole punch failed midway; the file is left released (a read restores it)");
        return Err(io_err(path, e));
    }
    // 4. Punching moved the mtime: put it back, so the stub shows the archived times.
    let mtime = nix::sys::time::TimeSpec::new(
        cur.mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
        cur.mtime_ns.rem_euclid(1_000_000_000) as _,
    );
    if let Err(errno) = nix::sys::stat::futimens(&f, &nix::sys::time::TimeSpec::UTIME_OMIT, &mtime)
    {
        let e = std::io::Error::from(errno);
        // Released all the same (with the punch's mtime, so it reads as dirty as well).
        rec.releasing = None;
        write_record(path, &f, &mut rec)?;
        return Err(io_err(path, e));
    }
    // 5. The stub's own data version; the marker goes.
    rec.dv = data_version(path, &f)?;
    rec.releasing = None;
    write_record(path, &f, &mut rec)?;
    tracing::info!(file = %path.display(), bytes = cur.size, watched, "released");
    Ok(())
}

/// Test hooks (hidden): a pause in a watched release between its intent and its punch, so
/// that a test can touch the file mid-release.
#[doc(hidden)]
pub mod test_hooks {
    use std::fs::File;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    type Hook = Arc<dyn Fn() + Send + Sync>;
    static BEFORE_PUNCH: Mutex<Vec<((u64, u64), Hook)>> = Mutex::new(Vec::new());

    /// Removes its hook when dropped.
    pub struct HookGuard((u64, u64));

    impl Drop for HookGuard {
        fn drop(&mut self) {
            if let Ok(mut hooks) = BEFORE_PUNCH.lock() {
                hooks.retain(|(id, _)| *id != self.0);
            }
        }
    }

    /// Calls `f` in every watched release of the file `path` names (by inode), after the
    /// intent is written and the lease dropped, before the punch.
    pub fn pause_before_punch(
        path: &Path,
        f: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<HookGuard> {
        let md = std::fs::metadata(path)?;
        let id = (md.dev(), md.ino());
        if let Ok(mut hooks) = BEFORE_PUNCH.lock() {
            hooks.push((id, Arc::new(f)));
        }
        Ok(HookGuard(id))
    }

    pub(super) fn before_punch(file: &File) {
        let Ok(md) = file.metadata() else { return };
        let id = (md.dev(), md.ino());
        let hook = BEFORE_PUNCH
            .lock()
            .ok()
            .and_then(|hooks| hooks.iter().find(|(i, _)| *i == id).map(|(_, h)| h.clone()));
        if let Some(h) = hook {
            h();
        }
    }
}

#[async_trait]
impl crate::Hsm for LocalBackend {
    async fn hsm_state(&self, file: &Path) -> Result<HsmState> {
        let file = file.to_path_buf();
        self.run(move |inner| hsm_state(&inner.hsm_root(), &file))
            .await
    }

    async fn hsm_mark(
        &self,
        file: &Path,
        set: HsmFlags,
        clear: HsmFlags,
        archive_id: Option<u32>,
    ) -> Result<()> {
        let file = file.to_path_buf();
        self.run(move |inner| hsm_mark(&inner.hsm_root(), &file, set, clear, archive_id))
            .await
    }

    async fn hsm_release(&self, file: &Path) -> Result<()> {
        let file = file.to_path_buf();
        self.run(move |inner| hsm_release(&inner.hsm_root(), &file))
            .await
    }

    async fn data_version(&self, file: &Path) -> Result<crate::DataVersion> {
        let file = file.to_path_buf();
        self.run(move |inner| data_version_of(&inner.hsm_root(), &file))
            .await
            .map(crate::DataVersion::Local)
    }

    /// Reads the record and the data version through a copy of the descriptor: no path,
    /// so no name a tenant can swap between the event and the answer.
    fn hsm_access_state_of_open(
        &self,
        shown_as: &Path,
        file: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Option<crate::HsmAccessState>> {
        let own = file.try_clone_to_owned().map_err(|e| io_err(shown_as, e))?;
        access_state_of(shown_as, &File::from(own)).map(Some)
    }

    async fn hsm_release_watched(&self, file: &Path) -> Result<()> {
        let file = file.to_path_buf();
        self.run(move |inner| hsm_release_watched(&inner.hsm_root(), &file))
            .await
    }

    async fn hsm_access_state(&self, file: &Path) -> Result<crate::HsmAccessState> {
        let file = file.to_path_buf();
        self.run(move |inner| hsm_access_state(&inner.hsm_root(), &file))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lustre_model::{HS_ARCHIVED, HS_DIRTY, HS_EXISTS};
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn with_root<T>(p: &Path, f: impl FnOnce(&HsmRoot<'_>) -> T) -> T {
        let dir = p.parent().expect("parent");
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open root");
        f(&HsmRoot {
            fd: std::os::fd::AsFd::as_fd(&fd),
            paths: [dir, dir],
        })
    }

    #[test]
    fn refuses_fifo_symlink_and_outside_paths_without_blocking() {
        let (d, p) = tmpfile(b"x");
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .expect("mkfifo");
        let err = with_root(&p, |r| hsm_state(r, &fifo)).expect_err("fifo");
        assert!(err.to_string().contains("FIFO"), "{err}");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&p, &link).expect("symlink");
        assert!(with_root(&p, |r| hsm_state(r, &link)).is_err());
        let outside = tempfile::NamedTempFile::new().expect("outside");
        let err = with_root(&p, |r| hsm_state(r, outside.path())).expect_err("outside");
        assert!(err.to_string().contains("not beneath"), "{err}");
    }

    fn flags(bits: u32) -> HsmFlags {
        HsmFlags::from_bits(bits)
    }

    fn tmpfile(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = File::create(&path).expect("create");
        f.write_all(content).expect("write");
        (dir, path)
    }

    /// The local backend keeps HSM state in a user xattr: a filesystem without them is not
    /// one it supports, so the test fails there (with the reason) rather than pass untested.
    /// Every filesystem the backend targets has them (ext4, xfs, btrfs, tmpfs since 6.6).
    fn require_xattr(path: &Path) {
        let f = File::open(path).expect("open");
        if let Err(e) = fset(f.as_raw_fd(), USER_XATTR, b"{}") {
            panic!(
                "no user xattrs on {} (set TMPDIR to a filesystem with them): {e}",
                path.display()
            );
        }
        fremove(f.as_raw_fd(), USER_XATTR);
    }

    /// The trait's data version on `local` is the descriptor-based one, read beneath the root:
    /// a write moves it, and a path outside the root is refused.
    #[tokio::test]
    async fn data_version_is_the_descriptor_version() {
        use crate::Hsm;
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = LocalBackend::open(dir.path()).await.expect("open backend");
        let path = backend.root().join("f");
        std::fs::write(&path, b"hello").expect("write");
        let v0 = backend.data_version(&path).await.expect("data version");
        let crate::DataVersion::Local(local) = v0 else {
            panic!("local backend gave {v0:?}");
        };
        let direct = DataVersion::of_file(&File::open(&path).expect("open")).expect("of_file");
        assert!(local.same_data(&direct));
        assert_eq!(local.size, 5);
        assert_eq!(v0.token(), direct.token());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b" world"))
            .expect("append");
        let v1 = backend.data_version(&path).await.expect("data version");
        assert!(!v1.same_data(&v0));
        let outside = tempfile::NamedTempFile::new().expect("outside");
        assert!(backend.data_version(outside.path()).await.is_err());
    }

    #[test]
    fn fresh_file_has_no_state() {
        let (_d, p) = tmpfile(b"hello");
        assert_eq!(
            with_root(&p, |r| hsm_state(r, &p)).expect("state"),
            HsmState::default()
        );
    }

    #[test]
    fn archive_then_write_is_dirty_and_release_refuses() {
        let (_d, p) = tmpfile(b"hello world");
        require_xattr(&p);
        with_root(&p, |r| {
            hsm_mark(r, &p, flags(HS_ARCHIVED | HS_EXISTS), flags(0), Some(3))
        })
        .expect("mark");
        let st = with_root(&p, |r| hsm_state(r, &p)).expect("state");
        assert!(st.flags.archived && st.flags.exists && !st.flags.dirty);
        assert_eq!(st.archive_id, Some(3));
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .and_then(|mut f| f.write_all(b"!"))
            .expect("append");
        let st = with_root(&p, |r| hsm_state(r, &p)).expect("state");
        assert!(st.flags.dirty, "{st}");
        let before = std::fs::read(&p).expect("read");
        assert!(with_root(&p, |r| hsm_release(r, &p)).is_err());
        assert_eq!(std::fs::read(&p).expect("read"), before);
    }

    #[test]
    fn release_punches_and_keeps_size_and_mtime() {
        let content = vec![7u8; 1 << 20];
        let (_d, p) = tmpfile(&content);
        require_xattr(&p);
        let mtime_before = std::fs::metadata(&p).expect("md").mtime_nsec();
        with_root(&p, |r| {
            hsm_mark(r, &p, flags(HS_ARCHIVED | HS_EXISTS), flags(0), Some(1))
        })
        .expect("mark");
        with_root(&p, |r| hsm_release(r, &p)).expect("release");
        let md = std::fs::metadata(&p).expect("md");
        assert_eq!(md.len(), content.len() as u64);
        assert_eq!(md.mtime_nsec(), mtime_before);
        assert!(md.blocks() < 64, "blocks still allocated: {}", md.blocks());
        let st = with_root(&p, |r| hsm_state(r, &p)).expect("state");
        assert!(
            st.flags.released && st.flags.archived && !st.flags.dirty,
            "{st}"
        );
        // Idempotent.
        with_root(&p, |r| hsm_release(r, &p)).expect("release again");
    }

    #[test]
    fn release_refuses_unarchived_and_changes_nothing() {
        let (_d, p) = tmpfile(b"data");
        assert!(with_root(&p, |r| hsm_release(r, &p)).is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"data");
    }

    #[test]
    fn records_without_a_marker_stay_valid() {
        let old = br#"{"v":1,"flags":9,"archive_id":2,"dv":{"size":3,"mtime_ns":4,"ctime_ns":5,"ino":6,"generation":7},"ok_until_ns":8}"#;
        let rec: Record = serde_json::from_slice(old).expect("old record");
        assert!(rec.releasing.is_none());
        let out = serde_json::to_string(&rec).expect("json");
        assert!(!out.contains("releasing"), "{out}");
    }

    fn archived(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let (d, p) = tmpfile(content);
        require_xattr(&p);
        with_root(&p, |r| {
            hsm_mark(r, &p, flags(HS_ARCHIVED | HS_EXISTS), flags(0), Some(1))
        })
        .expect("mark");
        (d, p)
    }

    #[test]
    fn watched_release_punches_and_leaves_no_marker() {
        let (_d, p) = archived(&vec![5u8; 1 << 20]);
        with_root(&p, |r| hsm_release_watched(r, &p)).expect("release");
        assert!(std::fs::metadata(&p).expect("md").blocks() < 64);
        let a = with_root(&p, |r| hsm_access_state(r, &p)).expect("state");
        assert!(a.state.flags.released && !a.state.flags.dirty, "{a:?}");
        assert_eq!(a.releasing, None);
        with_root(&p, |r| hsm_release_watched(r, &p)).expect("idempotent");
    }

    #[test]
    fn mid_release_the_marker_names_a_live_releaser_and_marks_wait() {
        let (_d, p) = archived(&vec![6u8; 300_000]);
        let seen = Arc::new(std::sync::Mutex::new(None));
        let _hook = {
            let (p, seen) = (p.clone(), seen.clone());
            test_hooks::pause_before_punch(&p.clone(), move || {
                let a = with_root(&p, |r| hsm_access_state(r, &p));
                let m = with_root(&p, |r| hsm_mark(r, &p, flags(HS_DIRTY), flags(0), None));
                *seen.lock().expect("seen") = Some((a, m, nix::unistd::gettid().as_raw()));
            })
            .expect("hook")
        };
        with_root(&p, |r| hsm_release_watched(r, &p)).expect("release");
        let (a, m, tid) = seen.lock().expect("seen").take().expect("hook ran");
        let a = a.expect("access state");
        let r = a.releasing.expect("a marker mid-release");
        assert!(r.releaser_alive, "{r:?}");
        assert_eq!((r.pid, r.tid), (std::process::id() as i32, tid));
        assert_eq!(r.pid_ns, own_pid_ns());
        assert!(a.state.flags.released, "the intent is written first");
        let err = m.expect_err("a mark mid-release");
        assert!(err.to_string().contains("being released"), "{err}");
        let a = with_root(&p, |r| hsm_access_state(r, &p)).expect("state");
        assert_eq!(a.releasing, None);
        assert!(a.state.flags.released && !a.state.flags.dirty, "{a:?}");
    }

    #[test]
    fn a_dead_releasers_marker_reads_released_and_a_mark_drops_it() {
        let (_d, p) = archived(b"some data");
        // The intent of a releaser that died before its punch (no lock holds the file).
        let f = File::open(&p).expect("open");
        let mut rec = read_record(&p, &f).expect("read").expect("record");
        rec.flags |= lustre_model::HS_RELEASED;
        rec.releasing = Some(Releasing {
            pid: 1,
            tid: 1,
            pid_ns: own_pid_ns(),
            started_ns: 0,
        });
        write_record(&p, &f, &mut rec).expect("write");
        let a = with_root(&p, |r| hsm_access_state(r, &p)).expect("state");
        assert!(a.state.flags.released, "{a:?}");
        assert_eq!(a.releasing.map(|r| r.releaser_alive), Some(false));
        // What a restore writes at its end.
        with_root(&p, |r| {
            hsm_mark(r, &p, flags(0), flags(lustre_model::HS_RELEASED), None)
        })
        .expect("mark");
        let a = with_root(&p, |r| hsm_access_state(r, &p)).expect("state");
        assert!(!a.state.flags.released && a.releasing.is_none(), "{a:?}");
    }

    /// Without a daemon nothing holds a writer mid-release; the second data-version check
    /// catches it, and the old record goes back (so the file reads as dirty).
    #[test]
    fn a_write_before_the_punch_is_caught_and_nothing_is_punched() {
        let (_d, p) = archived(&vec![8u8; 200_000]);
        let _hook = {
            let p = p.clone();
            test_hooks::pause_before_punch(&p.clone(), move || {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&p)
                    .and_then(|mut f| f.write_all(b"late"))
                    .expect("append");
            })
            .expect("hook")
        };
        let err = with_root(&p, |r| hsm_release_watched(r, &p)).expect_err("release");
        assert!(err.to_string().contains("written to while"), "{err}");
        let mut want = vec![8u8; 200_000];
        want.extend_from_slice(b"late");
        assert!(std::fs::read(&p).expect("read") == want);
        let a = with_root(&p, |r| hsm_access_state(r, &p)).expect("state");
        assert!(
            !a.state.flags.released && a.state.flags.dirty && a.releasing.is_none(),
            "{a:?}"
        );
    }

    #[test]
    fn a_tenants_lock_is_not_a_releaser() {
        let (_d, p) = archived(b"locked");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .expect("open");
        let mut whole = releaser_lock(libc::F_WRLCK);
        whole.l_start = 0;
        whole.l_len = 0;
        nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_OFD_SETLK(&whole)).expect("lock");
        let other = File::open(&p).expect("open");
        assert!(!releaser_alive(&p, &other).expect("probe"));
    }

    #[test]
    fn clear_dirty_rebaselines() {
        let (_d, p) = tmpfile(b"abc");
        require_xattr(&p);
        with_root(&p, |r| {
            hsm_mark(r, &p, flags(HS_ARCHIVED | HS_EXISTS), flags(0), None)
        })
        .expect("mark");
        with_root(&p, |r| hsm_mark(r, &p, flags(HS_DIRTY), flags(0), None)).expect("dirty");
        assert!(
            with_root(&p, |r| hsm_state(r, &p))
                .expect("state")
                .flags
                .dirty
        );
        with_root(&p, |r| hsm_mark(r, &p, flags(0), flags(HS_DIRTY), None)).expect("clean");
        assert!(
            !with_root(&p, |r| hsm_state(r, &p))
                .expect("state")
                .flags
                .dirty
        );
    }
}
