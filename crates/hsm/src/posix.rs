//! Small POSIX helpers: data versions, metadata capture and application, xattrs, leases,
//! and creating paths beneath a directory without following symlinks.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{HsmError, Result};
use crate::meta::{EntryKind, FileMeta};

/// Our own HSM record and pin xattrs (never archived or copied as user data).
pub const HSM_XATTRS: [&str; 4] = [
    "trusted.lustrekit.hsm",
    "user.lustrekit.hsm",
    crate::pin::PIN_XATTR_TRUSTED,
    crate::pin::PIN_XATTR_USER,
];

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
    collect_xattrs(
        path,
        // SAFETY: valid buffer and NUL-terminated path.
        |buf| unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: valid buffer and NUL-terminated strings.
        |name, buf| unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        },
    )
}

/// Extended attributes of an open file or directory, ours excluded: read through the
/// descriptor, so no path is resolved again.
pub fn list_xattrs_fd(fd: RawFd, shown: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    collect_xattrs(
        shown,
        // SAFETY: valid buffer and descriptor.
        |buf| unsafe { libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()) },
        // SAFETY: valid buffer, descriptor and NUL-terminated name.
        |name, buf| unsafe {
            libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        },
    )
}

/// The xattrs a `list` and a `get` call see (`security.*`, `system.*` and ours left out),
/// growing the buffers on `ERANGE`.
fn collect_xattrs(
    shown: &Path,
    list: impl Fn(&mut [u8]) -> isize,
    get: impl Fn(&std::ffi::CStr, &mut [u8]) -> isize,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        let n = list(&mut names);
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if names.len() < 1 << 20 => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(HsmError::io(shown, e)),
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
        let cname = CString::new(name).map_err(|_| HsmError::refused(shown, "xattr name"))?;
        let mut val = vec![0u8; 1024];
        loop {
            let m = get(&cname, &mut val);
            if m >= 0 {
                val.truncate(m as usize);
                out.push((name.to_string(), val));
                break;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if val.len() < 1 << 20 => val.resize(val.len() * 4, 0),
                Some(libc::ENODATA) => break,
                _ => return Err(HsmError::io(shown, e)),
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

fn ts(ns: i64) -> nix::sys::time::TimeSpec {
    nix::sys::time::TimeSpec::new(
        ns.div_euclid(1_000_000_000) as libc::time_t,
        ns.rem_euclid(1_000_000_000) as _,
    )
}

/// Applies owner, mode, xattrs and times to an open file or directory. Ownership changes
/// need privilege; without it they are skipped (the file keeps the caller's IDs).
pub fn apply_fd(path: &Path, fd: BorrowedFd<'_>, meta: &FileMeta) -> Result<()> {
    match nix::unistd::fchown(
        fd,
        Some(nix::unistd::Uid::from_raw(meta.uid)),
        Some(nix::unistd::Gid::from_raw(meta.gid)),
    ) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(e) => return Err(HsmError::io(path, e.into())),
    }
    nix::sys::stat::fchmod(
        fd,
        nix::sys::stat::Mode::from_bits_retain(meta.mode & 0o7777),
    )
    .map_err(|e| HsmError::io(path, e.into()))?;
    for (k, v) in &meta.xattrs {
        if let Err(e) = fset_xattr(fd.as_raw_fd(), k, v) {
            tracing::warn!(file = %path.display(), xattr = %k, error = %e, "cannot set xattr");
        }
    }
    set_times_fd(path, fd, meta.atime_ns, meta.mtime_ns)
}

pub fn set_times_fd(
    path: &Path,
    fd: BorrowedFd<'_>,
    atime_ns: Option<i64>,
    mtime_ns: i64,
) -> Result<()> {
    let atime = atime_ns
        .map(ts)
        .unwrap_or(nix::sys::time::TimeSpec::UTIME_OMIT);
    nix::sys::stat::futimens(fd, &atime, &ts(mtime_ns)).map_err(|e| HsmError::io(path, e.into()))
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

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`: `None` when absent.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<Option<libc::stat>> {
    match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
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

/// One entry of a tenant's namespace, opened beneath the namespace root without following a
/// symlink anywhere: its parent directory, its name there, and (for a regular file or a
/// directory) the open entry. Root code acts on these descriptors, never on the path again.
#[derive(Debug)]
pub struct Entry {
    /// For messages.
    pub abs: PathBuf,
    pub parent: OwnedFd,
    /// The name in `parent` (`.` for the root itself).
    pub name: String,
    pub kind: EntryKind,
    /// The open file or directory; `None` for a symlink.
    pub fd: Option<OwnedFd>,
}

impl Entry {
    /// The open regular file, or a refusal naming what it is instead.
    pub fn file(&self) -> Result<File> {
        match (&self.kind, &self.fd) {
            (EntryKind::File, Some(fd)) => fd
                .try_clone()
                .map(File::from)
                .map_err(|e| HsmError::io(&self.abs, e)),
            _ => Err(HsmError::refused(&self.abs, "not a regular file")),
        }
    }

    /// The path of another name in the same directory, for messages and backend calls.
    pub fn sibling(&self, name: &str) -> PathBuf {
        self.abs.with_file_name(name)
    }

    /// The data version of whatever the name holds now (a swapped name shows a new inode).
    pub fn version_by_name(&self) -> Result<DataVersion> {
        let fd = backend::local::beneath::open_regular(
            self.parent.as_fd(),
            &self.name,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
        )
        .map_err(|e| HsmError::io(&self.abs, e.into()))?;
        version_of(&self.abs, &File::from(fd))
    }
}

use std::os::fd::AsFd;

/// Opens `components` below `root` as an [`Entry`]. Symlinks on the way are refused; a
/// final symlink is returned as such (not followed); FIFOs, sockets and devices are
/// refused without being opened.
pub fn open_entry(root: &Path, components: &[String], abs: &Path) -> Result<Entry> {
    use backend::local::beneath;
    use nix::fcntl::OFlag;
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| HsmError::io(root, e.into()))?;
    let Some((name, dirs)) = components.split_last() else {
        let parent = root_fd.try_clone().map_err(|e| HsmError::io(root, e))?;
        return Ok(Entry {
            abs: abs.to_path_buf(),
            parent,
            name: ".".into(),
            kind: EntryKind::Dir,
            fd: Some(root_fd),
        });
    };
    let rel = if dirs.is_empty() {
        ".".to_string()
    } else {
        dirs.join("/")
    };
    let parent = beneath::open_dir_at(root_fd.as_fd(), &rel).map_err(|e| match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::EXDEV => {
            HsmError::refused(abs, "a directory on the way is a symlink")
        }
        e => HsmError::io(abs, e.into()),
    })?;
    let st = lstat_at(parent.as_fd(), name)
        .map_err(|e| HsmError::io(abs, e))?
        .ok_or_else(|| HsmError::io(abs, std::io::Error::from_raw_os_error(libc::ENOENT)))?;
    let (kind, fd) = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            let fd = beneath::open_regular(
                parent.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOATIME,
            )
            .map_err(|e| match e {
                beneath::OpenRegularError::NotRegular(fmt) => HsmError::refused(
                    abs,
                    format!("{} (swapped while opening)", beneath::file_type_name(fmt)),
                ),
                beneath::OpenRegularError::Errno(e) => HsmError::io(abs, e.into()),
            })?;
            (EntryKind::File, Some(fd))
        }
        libc::S_IFDIR => {
            let fd = beneath::open_dir_at(parent.as_fd(), name)
                .map_err(|e| HsmError::io(abs, e.into()))?;
            (EntryKind::Dir, Some(fd))
        }
        libc::S_IFLNK => (EntryKind::Symlink, None),
        other => {
            return Err(HsmError::refused(
                abs,
                format!(
                    "{}: only regular files, directories and symlinks are handled",
                    beneath::file_type_name(other)
                ),
            ));
        }
    };
    Ok(Entry {
        abs: abs.to_path_buf(),
        parent,
        name: name.clone(),
        kind,
        fd,
    })
}

/// The metadata of an opened entry as the archive records it.
pub fn capture_entry(e: &Entry) -> Result<FileMeta> {
    let st = match &e.fd {
        Some(fd) => {
            nix::sys::stat::fstat(fd.as_fd()).map_err(|x| HsmError::io(&e.abs, x.into()))?
        }
        None => lstat_at(e.parent.as_fd(), &e.name)
            .map_err(|x| HsmError::io(&e.abs, x))?
            .ok_or_else(|| HsmError::io(&e.abs, std::io::Error::from_raw_os_error(libc::ENOENT)))?,
    };
    let symlink_target = if e.kind == EntryKind::Symlink {
        let t = nix::fcntl::readlinkat(e.parent.as_fd(), e.name.as_str())
            .map_err(|x| HsmError::io(&e.abs, x.into()))?;
        Some(
            t.into_string()
                .map_err(|_| HsmError::refused(&e.abs, "symlink target is not UTF-8"))?,
        )
    } else {
        None
    };
    let xattrs = match &e.fd {
        Some(fd) => list_xattrs_fd(fd.as_raw_fd(), &e.abs)?,
        None => Vec::new(),
    };
    let ns = |s: i64, n: i64| s * 1_000_000_000 + n;
    Ok(FileMeta {
        kind: e.kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
        atime_ns: Some(ns(st.st_atime, st.st_atime_nsec)),
        ctime_ns: Some(ns(st.st_ctime, st.st_ctime_nsec)),
        size: (e.kind == EntryKind::File).then_some(st.st_size as u64),
        symlink_target,
        xattrs,
        checksum: None,
        data_version: None,
    })
}

/// A new temporary file in `dir`, with a random name, created exclusively (`O_EXCL`,
/// never following or reusing whatever a tenant put there): its name and descriptor.
pub fn create_temp_in(dir: &OwnedFd, prefix: &str, shown_dir: &Path) -> Result<(String, File)> {
    use nix::fcntl::OFlag;
    for _ in 0..8 {
        let mut b = [0u8; 12];
        getrandom::getrandom(&mut b).map_err(|e| {
            HsmError::Unsupported(format!("no randomness for a temporary name: {e}"))
        })?;
        let name = format!(
            "{prefix}{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        );
        match nix::fcntl::openat(
            dir.as_fd(),
            name.as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => return Ok((name, File::from(fd))),
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => return Err(HsmError::io(shown_dir.join(&name), e.into())),
        }
    }
    Err(HsmError::refused(
        shown_dir,
        "cannot find a free temporary name",
    ))
}

/// Why a directory could not be opened beneath a trusted one: a symlink or anything that
/// is not a directory is a refusal naming what it is, the rest an I/O error.
pub fn dir_refusal(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    shown: &Path,
    e: nix::errno::Errno,
) -> HsmError {
    use nix::errno::Errno;
    match e {
        Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV => {
            let what = lstat_at(dir.as_fd(), name)
                .ok()
                .flatten()
                .map(|st| backend::local::beneath::file_type_name(st.st_mode))
                .unwrap_or("not a directory");
            if what == "symlink" {
                HsmError::refused(shown, "a symlink: symlinks are never followed here")
            } else {
                HsmError::refused(shown, format!("a {what}, not a directory"))
            }
        }
        e => HsmError::io(shown, e.into()),
    }
}

/// The directory `name` in the trusted directory `dir`, made when missing: opened with
/// `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a symlink (planted, or swapped in
/// after the `mkdirat`) or anything else that is not a directory is refused. A directory we
/// made gets `mode` and, when given, `owner`. Returns the directory and whether we made it.
pub fn dir_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    mode: u32,
    owner: Option<(u32, u32)>,
    shown: &Path,
) -> Result<(OwnedFd, bool)> {
    use nix::errno::Errno;
    use nix::sys::stat::Mode;
    use std::os::fd::AsFd;
    let made = match nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(HsmError::io(shown, e.into())),
    };
    let fd = backend::local::beneath::open_dir_at(dir, name)
        .map_err(|e| dir_refusal(dir, name, shown, e))?;
    if made {
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| HsmError::io(shown, e.into()))?;
        // Only what is still the directory we made (a tenant may have swapped in their own
        // between mkdirat and open) gets our owner and mode.
        if st.st_uid == nix::unistd::geteuid().as_raw() && st.st_mode & 0o7777 == 0o700 {
            if let Some((uid, gid)) = owner {
                match nix::unistd::fchown(
                    fd.as_fd(),
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                ) {
                    Ok(()) | Err(Errno::EPERM) => {}
                    Err(e) => return Err(HsmError::io(shown, e.into())),
                }
            }
            nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode & 0o7777))
                .map_err(|e| HsmError::io(shown, e.into()))?;
        }
    }
    Ok((fd, made))
}

/// The device and inode of an open descriptor.
pub fn identity(fd: std::os::fd::BorrowedFd<'_>, shown: &Path) -> Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| HsmError::io(shown, e.into()))?;
    Ok((st.st_dev, st.st_ino))
}

/// Whether `name` in `dir` is still the entry with this device and inode (a tenant who owns
/// `dir` can rename something else over a name between two of our calls).
pub fn still_same(dir: std::os::fd::BorrowedFd<'_>, name: &str, id: (u64, u64)) -> bool {
    matches!(lstat_at(dir.as_fd(), name), Ok(Some(st)) if (st.st_dev, st.st_ino) == id)
}

/// A temporary file in `dir` with no name yet (`O_TMPFILE`), so a crash before it is named
/// leaves nothing behind; `None` where the filesystem has no unnamed files.
pub fn create_unnamed_in(dir: &OwnedFd, shown_dir: &Path) -> Result<Option<File>> {
    use nix::fcntl::OFlag;
    match nix::fcntl::openat(
        dir.as_fd(),
        ".",
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    ) {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(
            nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EISDIR | nix::errno::Errno::EINVAL,
        ) => Ok(None),
        Err(e) => Err(HsmError::io(shown_dir, e.into())),
    }
}

/// Gives an unnamed file (see [`create_unnamed_in`]) a random name in `dir`, never
/// replacing anything there. Through `/proc/self/fd`, which needs no
/// `CAP_DAC_READ_SEARCH` (unlike `AT_EMPTY_PATH`).
pub fn link_unnamed(dir: &OwnedFd, file: &File, prefix: &str, shown_dir: &Path) -> Result<String> {
    let from = format!("/proc/self/fd/{}", file.as_raw_fd());
    for _ in 0..8 {
        let mut b = [0u8; 12];
        getrandom::getrandom(&mut b).map_err(|e| {
            HsmError::Unsupported(format!("no randomness for a temporary name: {e}"))
        })?;
        let name = format!(
            "{prefix}{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        );
        match nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            from.as_str(),
            dir.as_fd(),
            name.as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        ) {
            Ok(()) => return Ok(name),
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => return Err(HsmError::io(shown_dir.join(&name), e.into())),
        }
    }
    Err(HsmError::refused(
        shown_dir,
        "cannot find a free temporary name",
    ))
}
