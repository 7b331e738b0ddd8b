//! Bind mounts whose flags hold everywhere the mount propagates.
//!
//! The classic way to make a read-only bind mount is `mount(MS_BIND)` then
//! `mount(MS_BIND|MS_REMOUNT|MS_RDONLY)`. Under mount propagation that is not enough: the
//! first call creates the mount, and its copies in every peer mount namespace, read-write; the
//! remount changes only the caller's copy, because per-mount flags do not propagate. A CSI
//! node plugin runs in its own mount namespace with the kubelet directory shared
//! (Bidirectional): its "read-only" target was read-only only inside the plugin's container,
//! and read-write for the kubelet and every pod (found by the cluster tests).
//!
//! So the bind is made with the new mount API instead: `open_tree(OPEN_TREE_CLONE)` makes a
//! detached copy of the source, `mount_setattr` sets its flags while nothing else can see it,
//! and `move_mount` attaches it at the target. Propagation then copies a mount that already has
//! its flags. Needs Linux 5.12; on an older kernel a bind without flags falls back to
//! `mount(MS_BIND)`, and one with flags is refused rather than made read-write.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;

/// The `mount_setattr` attributes to set and to clear for `flags` (the bind-mount flags
/// [`super::bind_flags`] accepts).
fn attributes(flags: MsFlags) -> (u64, u64) {
    let mut set = 0;
    let mut clear = 0;
    for (flag, attr) in [
        (MsFlags::MS_RDONLY, libc::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, libc::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, libc::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, libc::MOUNT_ATTR_NODIRATIME),
    ] {
        if flags.contains(flag) {
            set |= attr;
        }
    }
    // The access-time mode is one field: setting it means clearing the whole field first.
    if flags.contains(MsFlags::MS_NOATIME) {
        set |= libc::MOUNT_ATTR_NOATIME;
        clear |= libc::MOUNT_ATTR__ATIME;
    } else if flags.contains(MsFlags::MS_RELATIME) {
        set |= libc::MOUNT_ATTR_RELATIME;
        clear |= libc::MOUNT_ATTR__ATIME;
    }
    (set, clear)
}

fn c_path(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

/// Bind-mounts `source` (not recursively) on `target` with `flags` in effect from the moment
/// the mount is attached. Blocking; run it on the blocking pool.
pub fn bind_with_flags(source: &Path, target: &Path, flags: MsFlags) -> Result<(), Errno> {
    let src = c_path(source)?;
    let tgt = c_path(target)?;
    let empty = c"";
    // SAFETY: a NUL-terminated path and plain flags; the result is a new fd or -1.
    let fd = match check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint,
        )
    }) {
        Ok(fd) => fd,
        Err(Errno::ENOSYS) if flags.is_empty() => {
            return nix::mount::mount(
                Some(source),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            );
        }
        Err(e) => return Err(e),
    };
    let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: open_tree returned this fd and nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd) };
    let (set, clear) = attributes(flags);
    if set != 0 || clear != 0 {
        let attr = libc::mount_attr {
            attr_set: set,
            attr_clr: clear,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: the detached tree's fd, an empty path with AT_EMPTY_PATH, and a mount_attr
        // of the size passed.
        check(unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                empty.as_ptr(),
                libc::AT_EMPTY_PATH as libc::c_uint,
                &attr as *const libc::mount_attr,
                std::mem::size_of::<libc::mount_attr>(),
            )
        })?;
    }
    // SAFETY: attaches the detached tree (by fd, empty path) at a NUL-terminated path.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            tgt.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_mount_attributes() {
        assert_eq!(attributes(MsFlags::empty()), (0, 0));
        let (set, clear) =
            attributes(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOATIME);
        assert_eq!(
            set,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOATIME
        );
        assert_eq!(clear, libc::MOUNT_ATTR__ATIME);
    }

    fn options_of(mount_point: &Path) -> Option<String> {
        let table = crate::mount::mount_table().ok()?;
        crate::mount::top_mount(&table, mount_point).map(|e| e.options.join(","))
    }

    /// The copy of a read-only bind that propagation makes in a peer is read-only too (with
    /// bind-then-remount it stayed read-write). A shared tmpfs `a` and its peer `b` stand for
    /// the plugin's and the host's view of the kubelet directory.
    #[test]
    #[ignore = "needs root"]
    fn read_only_bind_is_read_only_in_peers() {
        use nix::mount::{MntFlags, mount, umount2};
        let dir = tempfile::tempdir().unwrap();
        let (a, b, src) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("src"),
        );
        for d in [&a, &b, &src] {
            std::fs::create_dir(d).unwrap();
        }
        mount(
            Some("tmpfs"),
            &a,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        mount(
            None::<&str>,
            &a,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        mount(Some(&a), &b, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        std::fs::create_dir(a.join("target")).unwrap();

        let result = bind_with_flags(
            &src,
            &a.join("target"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC,
        );
        let here = options_of(&a.join("target"));
        let peer = options_of(&b.join("target"));
        let write = std::fs::write(b.join("target/f"), b"x");
        for m in [b.join("target"), a.join("target"), b.clone(), a.clone()] {
            let _ = umount2(&m, MntFlags::MNT_DETACH);
        }
        result.unwrap();
        for (name, options) in [("here", here), ("peer", peer)] {
            let options = options.unwrap_or_else(|| panic!("{name}: not mounted"));
            let list: Vec<&str> = options.split(',').collect();
            assert!(
                list.contains(&"ro") && list.contains(&"noexec"),
                "{name}: {options}"
            );
        }
        assert_eq!(
            write.unwrap_err().raw_os_error(),
            Some(libc::EROFS),
            "a write through the peer's copy"
        );
    }
}
