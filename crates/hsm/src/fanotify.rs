//! A thin, checked layer over the fanotify syscalls, shared by the policy watcher
//! (notification events) and the restore-on-access daemon (pre-content permission events).
//!
//! `libc` and `nix` lack the pre-content constants of Linux 6.14+, so they are defined here
//! (values from `include/uapi/linux/fanotify.h`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub const FAN_CLOEXEC: u32 = 0x0000_0001;
pub const FAN_NONBLOCK: u32 = 0x0000_0002;
pub const FAN_CLASS_NOTIF: u32 = 0x0000_0000;
pub const FAN_CLASS_PRE_CONTENT: u32 = 0x0000_0008;
pub const FAN_UNLIMITED_QUEUE: u32 = 0x0000_0010;
pub const FAN_UNLIMITED_MARKS: u32 = 0x0000_0020;
/// Report the directory's file handle and the entry name instead of opening an fd.
pub const FAN_REPORT_DFID_NAME: u32 = 0x0000_0400 | 0x0000_0800;

pub const FAN_MARK_ADD: u32 = 0x0000_0001;
pub const FAN_MARK_REMOVE: u32 = 0x0000_0002;
pub const FAN_MARK_IGNORED_MASK: u32 = 0x0000_0020;
pub const FAN_MARK_IGNORED_SURV_MODIFY: u32 = 0x0000_0040;
/// Linux 6.0+: an ignore mask with the new semantics.
pub const FAN_MARK_IGNORE: u32 = 0x0000_0400;
pub const FAN_MARK_MOUNT: u32 = 0x0000_0010;
pub const FAN_MARK_FILESYSTEM: u32 = 0x0000_0100;

pub const FAN_MODIFY: u64 = 0x0000_0002;
pub const FAN_CLOSE_WRITE: u64 = 0x0000_0008;
pub const FAN_Q_OVERFLOW: u64 = 0x0000_4000;
/// Pre-content access (Linux 6.14+): a read (or write, mmap) is about to touch the content.
pub const FAN_PRE_ACCESS: u64 = 0x0010_0000;

pub const FAN_ALLOW: u32 = 0x01;
pub const FAN_DENY: u32 = 0x02;
/// `FAN_DENY_ERRNO(e)`: deny with a chosen errno (pre-content groups, Linux 6.14+).
pub fn fan_deny_errno(errno: i32) -> u32 {
    FAN_DENY | (((errno as u32) & 0xff) << 24)
}

/// Info record type of a directory file handle and an entry name.
pub const FAN_EVENT_INFO_TYPE_DFID_NAME: u8 = 2;
/// Info record type of the byte range of a pre-content event.
pub const FAN_EVENT_INFO_TYPE_RANGE: u8 = 6;
pub const FANOTIFY_METADATA_VERSION: u8 = 3;
const FAN_NOFD: i32 = -1;

/// `struct fanotify_event_metadata`.
const METADATA_LEN: usize = 24;

/// One event read from a fanotify group.
#[derive(Debug)]
pub struct Event {
    pub mask: u64,
    /// The event's file (opened by the kernel for us; I/O through it raises no events).
    pub fd: Option<OwnedFd>,
    pub pid: i32,
    /// The byte range of a pre-content event (offset, count).
    pub range: Option<(u64, u64)>,
    /// FID-reporting groups: the directory's `struct file_handle` (header included) and
    /// the entry's name.
    pub dfid_name: Option<(Vec<u8>, Vec<u8>)>,
}

/// A fanotify group.
pub struct Group {
    fd: OwnedFd,
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

impl Group {
    /// `fanotify_init(flags, event_f_flags)`.
    pub fn init(flags: u32, event_f_flags: u32) -> std::io::Result<Self> {
        // SAFETY: plain syscall; the fd is owned right after.
        let fd = unsafe { libc::fanotify_init(flags, event_f_flags) };
        if fd < 0 {
            return Err(last_err());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `fanotify_mark(flags, mask, AT_FDCWD, path)`.
    pub fn mark_path(&self, flags: u32, mask: u64, path: &Path) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: valid fd and NUL-terminated path.
        let rc = unsafe {
            libc::fanotify_mark(self.fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, c.as_ptr())
        };
        if rc != 0 {
            return Err(last_err());
        }
        Ok(())
    }

    /// `fanotify_mark(flags, mask, fd, NULL)`: a mark on the inode of an open file.
    pub fn mark_fd(&self, flags: u32, mask: u64, fd: RawFd) -> std::io::Result<()> {
        // SAFETY: valid fds; a NULL path means "the object `fd` refers to".
        let rc =
            unsafe { libc::fanotify_mark(self.fd.as_raw_fd(), flags, mask, fd, std::ptr::null()) };
        if rc != 0 {
            return Err(last_err());
        }
        Ok(())
    }

    /// Answers a permission event.
    pub fn respond(&self, event_fd: RawFd, response: u32) -> std::io::Result<()> {
        let resp = libc::fanotify_response {
            fd: event_fd,
            response,
        };
        let n = std::mem::size_of::<libc::fanotify_response>();
        // SAFETY: writes one response struct from a valid buffer.
        let rc = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&resp as *const libc::fanotify_response).cast(),
                n,
            )
        };
        if rc != n as isize {
            return Err(last_err());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` for events, then reads what is there (empty on timeout).
    pub fn read_events(&self, buf: &mut [u8], timeout_ms: i32) -> std::io::Result<Vec<Event>> {
        if !self.wait_readable(timeout_ms)? {
            return Ok(Vec::new());
        }
        match nix::unistd::read(&self.fd, buf) {
            Ok(n) => Ok(parse_events(&buf[..n])),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits up to `timeout_ms` until events can be read. `Ok(false)` on timeout or a
    /// signal.
    pub fn wait_readable(&self, timeout_ms: i32) -> std::io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            let e = last_err();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        if rc > 0 && pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EBADF));
        }
        Ok(rc > 0)
    }

    /// One `read` of a group made with `FAN_NONBLOCK`: `Ok(None)` when no event is queued.
    /// At most `buf.len() / 24` events come back (the smallest event is 24 bytes), so the
    /// caller bounds the descriptors one read can hand it by the buffer it passes.
    ///
    /// An error is the kernel's: for a permission event whose descriptor the kernel could
    /// not open for us (`EMFILE`, `ENFILE`, `EROFS` on a read-only mount, a lease it could
    /// not break...), the kernel has already denied that one event.
    pub fn read_nonblock(&self, buf: &mut [u8]) -> std::io::Result<Option<Vec<Event>>> {
        match nix::unistd::read(&self.fd, buf) {
            Ok(n) => Ok(Some(parse_events(&buf[..n]))),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The smallest fanotify event (`struct fanotify_event_metadata`, no info records).
pub const MIN_EVENT_LEN: usize = METADATA_LEN;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses a buffer of events. Each event's fd is taken over (closed when dropped), so a
/// malformed tail never leaks descriptors of the events before it.
pub fn parse_events(buf: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + METADATA_LEN <= buf.len() {
        let b = &buf[off..];
        let Some(event_len) = u32_at(b, 0).map(|v| v as usize) else {
            break;
        };
        let vers = b[4];
        let metadata_len = u16::from_ne_bytes([b[6], b[7]]) as usize;
        if event_len < METADATA_LEN || event_len > b.len() || metadata_len < METADATA_LEN {
            break;
        }
        let mask = u64_at(b, 8).unwrap_or(0);
        let fd = u32_at(b, 16).map(|v| v as i32).unwrap_or(FAN_NOFD);
        let pid = u32_at(b, 20).map(|v| v as i32).unwrap_or(0);
        let fd = (fd >= 0).then(|| {
            // SAFETY: the kernel opened this fd for us; we own it from here.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        if vers != FANOTIFY_METADATA_VERSION {
            tracing::warn!(vers, "fanotify metadata version differs; parsing anyway");
        }
        // Info records: struct fanotify_event_info_header { u8 type; u8 pad; u16 len; }.
        let mut range = None;
        let mut dfid_name = None;
        let mut i = metadata_len.min(event_len);
        while i + 4 <= event_len {
            let info_type = b[i];
            let len = u16::from_ne_bytes([b[i + 2], b[i + 3]]) as usize;
            if len < 4 || i + len > event_len {
                break;
            }
            // struct fanotify_event_info_range { hdr; u32 pad; u64 offset; u64 count; }
            if info_type == FAN_EVENT_INFO_TYPE_RANGE
                && len >= 24
                && let (Some(o), Some(c)) = (u64_at(b, i + 8), u64_at(b, i + 16))
            {
                range = Some((o, c));
            }
            // struct fanotify_event_info_fid { hdr; __kernel_fsid_t fsid (8);
            //   struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
            //   then, for DFID_NAME, the NUL-terminated name }
            if info_type == FAN_EVENT_INFO_TYPE_DFID_NAME
                && let Some(hb) = u32_at(b, i + 12).map(|v| v as usize)
            {
                let h_end = i + 20 + hb;
                if h_end <= i + len {
                    let handle = b[i + 12..h_end].to_vec();
                    let rest = &b[h_end..i + len];
                    let name = rest.split(|c| *c == 0).next().unwrap_or_default().to_vec();
                    dfid_name = Some((handle, name));
                }
            }
            i += len;
        }
        out.push(Event {
            mask,
            fd,
            pid,
            range,
            dfid_name,
        });
        off += event_len;
    }
    out
}

/// The path of a directory file handle (as FID-reporting events carry it), opened through
/// `mount_fd` (any descriptor on the same filesystem). Needs CAP_DAC_READ_SEARCH.
pub fn handle_path(mount_fd: RawFd, handle: &[u8]) -> std::io::Result<PathBuf> {
    if handle.len() < 8 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // `struct file_handle` wants 4-byte alignment: copy into u32 words.
    let mut words = vec![0u32; handle.len().div_ceil(4)];
    for (i, chunk) in handle.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        words[i] = u32::from_ne_bytes(w);
    }
    // SAFETY: `words` holds a complete file_handle (header and handle_bytes of payload, as
    // the kernel reported it); the returned fd is owned right after.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_fd,
            words.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    fd_path(fd.as_raw_fd())
}

/// The path an open fd refers to (`/proc/self/fd/N`).
pub fn fd_path(fd: RawFd) -> std::io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
}

/// The path of the file behind `fd` as reached through the mount `mount_fd` is on: its
/// file handle (`name_to_handle_at`) opened again (`open_by_handle_at`, `O_PATH`, which
/// raises no event) through that mount, then named. A file read through another mount of
/// the same filesystem (a bind mount at a pod's target, in another mount namespace) names
/// itself by that mount; this names it by ours. Needs CAP_DAC_READ_SEARCH.
pub fn fd_path_via(mount_fd: RawFd, fd: RawFd) -> std::io::Result<PathBuf> {
    /// `MAX_HANDLE_SZ` of `<linux/exportfs.h>`.
    const MAX_HANDLE_SZ: usize = 128;
    #[repr(C)]
    struct Handle {
        header: libc::file_handle,
        bytes: [u8; MAX_HANDLE_SZ],
    }
    let mut handle = Handle {
        header: libc::file_handle {
            handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
            handle_type: 0,
            f_handle: [],
        },
        bytes: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    let empty = c"";
    // SAFETY: `handle` has room for MAX_HANDLE_SZ bytes after its header, as handle_bytes
    // says; the path is an empty C string with AT_EMPTY_PATH, so `fd` itself is named.
    let rc = unsafe {
        libc::name_to_handle_at(
            fd,
            empty.as_ptr(),
            &mut handle.header,
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the handle was filled in by the kernel above.
    let opened = unsafe {
        libc::open_by_handle_at(mount_fd, &mut handle.header, libc::O_PATH | libc::O_CLOEXEC)
    };
    if opened < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `opened` is a descriptor we own from here on.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(opened) };
    fd_path(std::os::fd::AsRawFd::as_raw_fd(&owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(mask: u64, fd: i32, pid: i32, range: Option<(u64, u64)>) -> Vec<u8> {
        let info_len = if range.is_some() { 24 } else { 0 };
        let mut b = Vec::new();
        b.extend_from_slice(&((METADATA_LEN + info_len) as u32).to_ne_bytes());
        b.push(FANOTIFY_METADATA_VERSION);
        b.push(0);
        b.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&fd.to_ne_bytes());
        b.extend_from_slice(&pid.to_ne_bytes());
        if let Some((o, c)) = range {
            b.push(FAN_EVENT_INFO_TYPE_RANGE);
            b.push(0);
            b.extend_from_slice(&24u16.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&o.to_ne_bytes());
            b.extend_from_slice(&c.to_ne_bytes());
        }
        b
    }

    #[test]
    fn parses_events_and_range_records() {
        let mut buf = event(FAN_PRE_ACCESS, -1, 42, Some((4096, 32768)));
        buf.extend(event(FAN_MODIFY, -1, 7, None));
        buf.extend_from_slice(&[1, 2, 3]); // a torn tail is ignored
        let ev = parse_events(&buf);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].mask, FAN_PRE_ACCESS);
        assert_eq!(ev[0].pid, 42);
        assert_eq!(ev[0].range, Some((4096, 32768)));
        assert!(ev[0].fd.is_none());
        assert_eq!(ev[1].range, None);
        // A length that points past the buffer stops parsing.
        let mut bad = event(FAN_MODIFY, -1, 1, None);
        bad[0] = 200;
        assert!(parse_events(&bad).is_empty());
        assert_eq!(fan_deny_errno(libc::EIO), 0x0500_0002);
    }

    #[test]
    fn parses_dfid_name_records() {
        let mut rec = vec![FAN_EVENT_INFO_TYPE_DFID_NAME, 0, 0, 0];
        rec.extend_from_slice(&[9u8; 8]); // fsid
        rec.extend_from_slice(&8u32.to_ne_bytes()); // handle_bytes
        rec.extend_from_slice(&1i32.to_ne_bytes()); // handle_type
        rec.extend_from_slice(&[7u8; 8]); // f_handle
        rec.extend_from_slice(b"file.dat\0\0\0");
        let len = rec.len() as u16;
        rec[2..4].copy_from_slice(&len.to_ne_bytes());
        let mut b = Vec::new();
        b.extend_from_slice(&((METADATA_LEN + rec.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&[FANOTIFY_METADATA_VERSION, 0]);
        b.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        b.extend_from_slice(&FAN_MODIFY.to_ne_bytes());
        b.extend_from_slice(&(-1i32).to_ne_bytes());
        b.extend_from_slice(&5i32.to_ne_bytes());
        b.extend_from_slice(&rec);
        let ev = parse_events(&b);
        assert_eq!(ev.len(), 1);
        let (handle, name) = ev[0].dfid_name.clone().expect("dfid");
        assert_eq!(handle.len(), 16);
        assert_eq!(name, b"file.dat");
        // A handle length past the record is ignored, not a panic.
        let mut bad = b.clone();
        bad[METADATA_LEN + 12..METADATA_LEN + 16].copy_from_slice(&999u32.to_ne_bytes());
        assert!(parse_events(&bad)[0].dfid_name.is_none());
    }
}

#[cfg(test)]
mod handle_tests {
    use std::os::fd::AsRawFd;

    /// A file reached through a bind mount is named through the mount of the descriptor
    /// given (needs root: a bind mount).
    #[test]
    #[ignore = "needs root"]
    fn a_file_read_through_a_bind_mount_is_named_through_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, bind) = (tmp.path().join("root"), tmp.path().join("bind"));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&bind).unwrap();
        std::fs::write(root.join("sub/f"), b"x").unwrap();
        nix::mount::mount(
            Some(&root.join("sub")),
            &bind,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let file = std::fs::File::open(bind.join("f")).unwrap();
        let dir = std::fs::File::open(&root).unwrap();
        let via = super::fd_path_via(dir.as_raw_fd(), file.as_raw_fd());
        drop(file);
        let _ = nix::mount::umount(&bind);
        assert_eq!(via.unwrap(), root.join("sub/f"));
    }
}
