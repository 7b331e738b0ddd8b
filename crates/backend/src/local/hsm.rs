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
//! **Release** holds a write lease on the file (so no other process has it open, and a new
//! open waits), re-checks the data version, writes the `released` intent first, punches the
//! data out with `fallocate(PUNCH_HOLE | KEEP_SIZE)`, puts the mtime back, then records the
//! new data version. A crash in between leaves the file "released" (and perhaps "dirty"),
//! which restore repairs from the archive; never "archived" with zeros in it.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use lustre_model::{HsmFlags, HsmState};
use serde::{Deserialize, Serialize};

use nix::fcntl::OFlag;

use super::beneath;
use crate::{BackendError, Result};

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

/// The HSM state of `file`, with `dirty` computed from the live data version.
pub(crate) fn hsm_state(root: &HsmRoot<'_>, path: &Path) -> Result<HsmState> {
    let f = open(root, path, false)?;
    let cur = data_version(path, &f)?;
    Ok(read_record(path, &f)?
        .map(|r| r.state(&cur))
        .unwrap_or_default())
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

/// Frees the data blocks of an archived, unchanged file, keeping its size and metadata.
pub(crate) fn hsm_release(root: &HsmRoot<'_>, path: &Path) -> Result<()> {
    let f = open(root, path, true)?;
    let md = f.metadata().map_err(|e| io_err(path, e))?;
    if !md.is_file() {
        return Err(BackendError::InvalidState(format!(
            "{}: only regular files can be released",
            path.display()
        )));
    }
    let _lease = lease(path, &f)?;
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
    // 1. Intent first: from here a crash leaves a released file, which restore repairs.
    let mut flags = HsmFlags::from_bits(rec.flags);
    flags.released = true;
    rec.flags = flags.bits();
    rec.dv = cur;
    write_record(path, &f, &mut rec)?;
    // 2. Punch the data out, keeping the size.
    if cur.size > 0 {
        // SAFETY: plain fallocate on a valid fd.
        let rc = unsafe {
            libc::fallocate(
                f.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                cur.size as libc::off_t,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // Nothing was punched: take the intent back.
            let mut flags = HsmFlags::from_bits(rec.flags);
            flags.released = false;
            rec.flags = flags.bits();
            rec.dv = data_version(path, &f)?;
            write_record(path, &f, &mut rec)?;
            if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP)) {
                return Err(BackendError::unsupported(
                    "hsm_release",
                    format!("{}: the filesystem cannot punch holes", path.display()),
                ));
            }
            return Err(io_err(path, e));
        }
    }
    // 3. Punching moved the mtime: put it back, so the stub shows the archived times.
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: cur.mtime_ns.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: cur.mtime_ns.rem_euclid(1_000_000_000) as _,
        },
    ];
    // SAFETY: `times` is a valid array of two timespecs.
    if unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(io_err(path, std::io::Error::last_os_error()));
    }
    // 4. The stub's own data version.
    rec.dv = data_version(path, &f)?;
    write_record(path, &f, &mut rec)?;
    tracing::info!(file = %path.display(), bytes = cur.size, "released");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lustre_model::{HS_ARCHIVED, HS_DIRTY, HS_EXISTS};
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

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
