//! Small POSIX helpers: data versions, metadata capture and application, xattrs, leases,
//! and creating paths beneath a directory without following symlinks.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{HsmError, Result};
use crate::meta::{EntryKind, FileMeta};

/// Our own HSM record xattrs (never archived or copied as user data).
pub const HSM_XATTRS: [&str; 2] = ["trusted.lustrekit.hsm", "user.lustrekit.hsm"];

/// The data version of a local file (shared with the local backend, so the mover and the
/// backend judge "unchanged since archived" the same way).
pub use backend::local::file_version::DataVersion;

/// The data version of an open file.
pub fn version_of(path: &Path, f: &File) -> Result<DataVersion> {
    DataVersion::of_file(f).map_err(|e| HsmError::io(path, e))
}

/// The data version of the file at `path` (not following a final symlink).
pub fn version_at(path: &Path) -> Result<DataVersion> {
    version_of(path, &open_nofollow(path, false)?)
}

pub fn open_nofollow(path: &Path, write: bool) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| HsmError::io(path, e))
}

/// Opens for reading without moving the atime (`O_NOATIME`, allowed to the owner and to
/// root), so archiving does not make a file look recently used to the release policy.
/// Falls back to a plain open where `O_NOATIME` is refused.
pub fn open_noatime(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOATIME)
        .open(path)
    {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_nofollow(path, false),
        Err(e) => Err(HsmError::io(path, e)),
    }
}

fn cstr(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| HsmError::HostileName {
        key: path.display().to_string(),
        why: "contains NUL".into(),
    })
}

/// Extended attributes of `path` (not following a final symlink), ours excluded.
pub fn list_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let c = cstr(path)?;
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: valid buffer and NUL-terminated path.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if names.len() < 1 << 20 => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(HsmError::io(path, e)),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if HSM_XATTRS.contains(&name)
            || name.starts_with("security.")
            || name.starts_with("system.")
        {
            continue;
        }
        let cname = CString::new(name).map_err(|_| HsmError::refused(path, "xattr name"))?;
        let mut val = vec![0u8; 1024];
        loop {
            // SAFETY: valid buffer and NUL-terminated strings.
            let m = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    val.as_mut_ptr().cast(),
                    val.len(),
                )
            };
            if m >= 0 {
                val.truncate(m as usize);
                out.push((name.to_string(), val));
                break;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if val.len() < 1 << 20 => val.resize(val.len() * 4, 0),
                Some(libc::ENODATA) => break,
                _ => return Err(HsmError::io(path, e)),
            }
        }
    }
    Ok(out)
}

/// Sets one xattr on an open file.
pub fn fset_xattr(fd: RawFd, name: &str, value: &[u8]) -> std::io::Result<()> {
    let cname = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid buffer and NUL-terminated name.
    let rc = unsafe { libc::fsetxattr(fd, cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The metadata of `path` as the archive records it (no checksum or data version yet).
pub fn capture(path: &Path) -> Result<FileMeta> {
    let md = std::fs::symlink_metadata(path).map_err(|e| HsmError::io(path, e))?;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_file() {
        EntryKind::File
    } else {
        return Err(HsmError::refused(
            path,
            "not a regular file, directory or symlink",
        ));
    };
    let symlink_target = if kind == EntryKind::Symlink {
        let t = std::fs::read_link(path).map_err(|e| HsmError::io(path, e))?;
        Some(
            t.into_os_string()
                .into_string()
                .map_err(|_| HsmError::refused(path, "symlink target is not UTF-8"))?,
        )
    } else {
        None
    };
    Ok(FileMeta {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        atime_ns: Some(md.atime() * 1_000_000_000 + md.atime_nsec()),
        ctime_ns: Some(md.ctime() * 1_000_000_000 + md.ctime_nsec()),
        size: (kind == EntryKind::File).then_some(md.size()),
        symlink_target,
        xattrs: if kind == EntryKind::Symlink {
            Vec::new()
        } else {
            list_xattrs(path)?
        },
        checksum: None,
        data_version: None,
    })
}

fn ts(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// Applies owner, mode, xattrs and times to an open file or directory. Ownership changes
/// need privilege; without it they are skipped (the file keeps the caller's IDs).
pub fn apply_fd(path: &Path, fd: RawFd, meta: &FileMeta) -> Result<()> {
    // SAFETY: plain syscalls on a valid fd.
    unsafe {
        if libc::fchown(fd, meta.uid, meta.gid) != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(HsmError::io(path, e));
            }
        }
        if libc::fchmod(fd, meta.mode & 0o7777) != 0 {
            return Err(HsmError::io(path, std::io::Error::last_os_error()));
        }
    }
    for (k, v) in &meta.xattrs {
        if let Err(e) = fset_xattr(fd, k, v) {
            tracing::warn!(file = %path.display(), xattr = %k, error = %e, "cannot set xattr");
        }
    }
    set_times_fd(path, fd, meta.atime_ns, meta.mtime_ns)
}

pub fn set_times_fd(path: &Path, fd: RawFd, atime_ns: Option<i64>, mtime_ns: i64) -> Result<()> {
    let times = [
        atime_ns.map(ts).unwrap_or(libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        }),
        ts(mtime_ns),
    ];
    // SAFETY: two valid timespecs.
    if unsafe { libc::futimens(fd, times.as_ptr()) } != 0 {
        return Err(HsmError::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

pub use backend::local::file_version::Lease;

/// A write lease on `file`, refused while another process has it open.
pub fn lease<'a>(path: &Path, file: &'a File) -> Result<Lease<'a>> {
    let lease = Lease::take(file)
        .map_err(|_| HsmError::refused(path, "busy: another process has it open"))?;
    if !lease.held() {
        tracing::warn!(file = %path.display(), "no write lease");
    }
    Ok(lease)
}

/// Exclusive advisory lock (flock) so two movers never work on one file at once.
pub fn try_flock(path: &Path, f: &File) -> Result<()> {
    // SAFETY: plain flock on a valid fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(HsmError::refused(path, "another mover is working on it"));
        }
        return Err(HsmError::io(path, e));
    }
    Ok(())
}

/// Opens (creating as needed) the directory `components` beneath `base`, never following
/// a symlink and never leaving `base`. Components must already be validated names.
pub fn open_dir_beneath(base: &Path, components: &[String], create_mode: u32) -> Result<OwnedFd> {
    let cbase = cstr(base)?;
    // SAFETY: NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            cbase.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(HsmError::io(base, std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let mut cur = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut at = base.to_path_buf();
    for c in components {
        at.push(c);
        let cc = CString::new(c.as_bytes()).map_err(|_| HsmError::HostileName {
            key: c.clone(),
            why: "contains NUL".into(),
        })?;
        // SAFETY: valid dirfd and NUL-terminated name.
        let rc =
            unsafe { libc::mkdirat(cur.as_raw_fd(), cc.as_ptr(), create_mode as libc::mode_t) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(HsmError::io(&at, e));
            }
        }
        // SAFETY: valid dirfd and NUL-terminated name.
        let next = unsafe {
            libc::openat(
                cur.as_raw_fd(),
                cc.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if next < 0 {
            return Err(HsmError::io(&at, std::io::Error::last_os_error()));
        }
        // SAFETY: fresh descriptor we own.
        cur = unsafe { OwnedFd::from_raw_fd(next) };
    }
    Ok(cur)
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`: `None` when absent.
pub fn lstat_at(dir: RawFd, name: &str) -> std::io::Result<Option<libc::stat>> {
    let c = CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: zeroed stat is a valid out-buffer; valid dirfd and name.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        Ok(Some(st))
    } else {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

/// Path join for messages.
pub fn display_join(base: &Path, comps: &[String]) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in comps {
        p.push(OsStr::from_bytes(c.as_bytes()));
    }
    p
}

/// `OsString` from a validated name.
pub fn os(name: &str) -> OsString {
    OsString::from_vec(name.as_bytes().to_vec())
}
