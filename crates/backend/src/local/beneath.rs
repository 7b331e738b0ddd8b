//! Path resolution that cannot leave the root.
//!
//! Every path the local backend touches is opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` from the root's descriptor, so a symlink planted anywhere on the way
//! (say, by a tenant inside a share) can never make us create, remove or mount something
//! outside the root.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use lustre_model::RelPath;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

fn how(flags: OFlag, mode: Mode) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

/// Opens `rel` (a directory) beneath `root`; `None` opens the root itself.
pub fn open_dir(root: BorrowedFd<'_>, rel: Option<&RelPath>) -> Result<OwnedFd, Errno> {
    let path = rel.map(|r| r.as_str()).unwrap_or(".");
    nix::fcntl::openat2(
        root,
        path,
        how(OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()),
    )
}

/// Opens a file beneath `root` with the given flags (create mode 0600).
pub fn open_file(root: BorrowedFd<'_>, rel: &RelPath, flags: OFlag) -> Result<OwnedFd, Errno> {
    // openat2 refuses a mode without O_CREAT.
    let mode = if flags.contains(OFlag::O_CREAT) {
        Mode::from_bits_truncate(0o600)
    } else {
        Mode::empty()
    };
    nix::fcntl::openat2(root, rel.as_str(), how(flags, mode))
}

/// Opens the parent directory of `rel` and returns it with the last component.
pub fn open_parent<'a>(
    root: BorrowedFd<'_>,
    rel: &'a RelPath,
) -> Result<(OwnedFd, &'a str), Errno> {
    let parent = rel.parent();
    let fd = open_dir(root, parent.as_ref())?;
    Ok((fd, rel.file_name()))
}

/// `mkdir -p` beneath the root, one component at a time.
pub fn mkdir_all(root: BorrowedFd<'_>, rel: &RelPath) -> Result<OwnedFd, Errno> {
    let mut dir = open_dir(root, None)?;
    for component in rel.components() {
        match nix::sys::stat::mkdirat(dir.as_fd(), component, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        dir = nix::fcntl::openat2(
            dir.as_fd(),
            component,
            how(OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()),
        )?;
    }
    Ok(dir)
}

fn c_name(name: &str) -> Result<CString, Errno> {
    CString::new(name).map_err(|_| Errno::EINVAL)
}

/// Reads an xattr of an open file; `None` when it is not set.
pub fn get_xattr(fd: BorrowedFd<'_>, name: &str) -> Result<Option<Vec<u8>>, Errno> {
    use std::os::fd::AsRawFd;
    let cname = c_name(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf is valid for buf.len() bytes, cname is NUL-terminated.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return match Errno::last() {
            Errno::ENODATA => Ok(None),
            e => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// Sets an xattr on an open file.
pub fn set_xattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let cname = c_name(name)?;
    // SAFETY: value is valid for value.len() bytes, cname is NUL-terminated.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// Names in an open directory, without `.` and `..`.
pub fn read_dir_names(dir: OwnedFd) -> Result<Vec<String>, Errno> {
    let mut listing = nix::dir::Dir::from_fd(dir)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy();
        if name != "." && name != ".." {
            names.push(name.into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Writes a file beneath the root atomically: a unique temporary file, then a rename.
pub fn write_atomic(root: BorrowedFd<'_>, file: &RelPath, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let (parent, name) = open_parent(root, file)?;
    let tmp_name = format!(".{name}.tmp.{}.{}", std::process::id(), unique());
    let tmp_fd = nix::fcntl::openat(
        parent.as_fd(),
        tmp_name.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut tmp = std::fs::File::from(tmp_fd);
    // A rename over an existing file makes ext4 (auto_da_alloc) and btrfs flush the new data
    // before the rename is committed, so a replace is never torn without an fsync. A first
    // write has no such guard: fsync it, or a crash could leave an empty file behind.
    let replacing = nix::sys::stat::fstatat(
        parent.as_fd(),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok();
    let written = tmp
        .write_all(content)
        .and_then(|()| if replacing { Ok(()) } else { tmp.sync_all() });
    if let Err(e) = written {
        let _ = nix::unistd::unlinkat(
            parent.as_fd(),
            tmp_name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        return Err(e);
    }
    nix::fcntl::renameat(parent.as_fd(), tmp_name.as_str(), parent.as_fd(), name)?;
    Ok(())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (nanos << 16) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Why [`open_regular`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenRegularError {
    /// The syscall failed (`ENOENT`, `ELOOP` for a symlink, `EXDEV` for an escape, ...).
    Errno(Errno),
    /// The entry is not a regular file: its `S_IFMT` bits.
    NotRegular(u32),
}

impl From<Errno> for OpenRegularError {
    fn from(e: Errno) -> Self {
        Self::Errno(e)
    }
}

impl std::fmt::Display for OpenRegularError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Errno(e) => write!(f, "{}", e.desc()),
            Self::NotRegular(fmt) => write!(f, "not a regular file ({})", file_type_name(*fmt)),
        }
    }
}

impl From<OpenRegularError> for std::io::Error {
    fn from(e: OpenRegularError) -> Self {
        match e {
            OpenRegularError::Errno(e) => e.into(),
            other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}

/// A short name of a file type, for messages.
pub fn file_type_name(fmt: u32) -> &'static str {
    match fmt & libc::S_IFMT {
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "FIFO",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFREG => "regular file",
        _ => "unknown type",
    }
}

/// Opens the regular file `rel` (relative to `dir`) with `flags`, never following a symlink,
/// never leaving `dir`, and never opening anything else: the entry is first pinned with
/// `O_PATH` and checked with `fstat`, and only a regular file is then reopened through its
/// descriptor. A FIFO (whose open would block), a device (whose open may act on hardware)
/// or a socket is refused without being opened.
pub fn open_regular(
    dir: BorrowedFd<'_>,
    rel: &str,
    flags: OFlag,
) -> Result<OwnedFd, OpenRegularError> {
    use std::os::fd::AsRawFd;
    let pinned = nix::fcntl::openat2(dir, rel, how(OFlag::O_PATH, Mode::empty()))?;
    let st = nix::sys::stat::fstat(pinned.as_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(OpenRegularError::NotRegular(st.st_mode & libc::S_IFMT));
    }
    // The magic link reopens exactly the pinned inode, whatever happened to the name since.
    let link = format!("/proc/self/fd/{}", pinned.as_raw_fd());
    let flags = (flags | OFlag::O_CLOEXEC) & !(OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW);
    let fd = match nix::fcntl::open(link.as_str(), flags, Mode::empty()) {
        // O_NOATIME is only for the owner (or root): retry without it.
        Err(Errno::EPERM) if flags.contains(OFlag::O_NOATIME) => {
            nix::fcntl::open(link.as_str(), flags & !OFlag::O_NOATIME, Mode::empty())?
        }
        other => other?,
    };
    Ok(fd)
}

/// `rel` below `root` when `path` lies beneath `root` (lexically; `..` is refused), for
/// callers that are handed absolute paths but must resolve them from a trusted descriptor.
pub fn relative_to(root: &std::path::Path, path: &std::path::Path) -> Option<String> {
    use std::path::Component;
    let rest = path.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for c in rest.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    })
}

/// Opens the directory `rel` (a `/`-separated relative path, `.` for `dir` itself) beneath
/// `dir`, never following a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat2(
        dir,
        rel,
        how(OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()),
    )
}
