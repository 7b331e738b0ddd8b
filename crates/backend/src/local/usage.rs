//! Measuring a share's usage by walking it, for what the kernel does not count for us
//! (inodes everywhere, and bytes on filesystems without qgroups).

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

/// Bytes allocated and inodes used beneath one directory (the directory included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    pub bytes: u64,
    pub inodes: u64,
}

/// Walks `dir` without following symlinks or crossing into other filesystems' mounts.
pub fn walk(dir: OwnedFd) -> Result<Walked, Errno> {
    let top = nix::sys::stat::fstat(dir.as_fd())?;
    let mut total = Walked {
        bytes: (top.st_blocks as u64).saturating_mul(512),
        inodes: 1,
    };
    let mut stack = vec![dir];
    while let Some(fd) = stack.pop() {
        let mut listing = nix::dir::Dir::from_fd(fd)?;
        let parent = listing
            .as_fd()
            .try_clone_to_owned()
            .map_err(|_| Errno::EMFILE)?;
        for entry in listing.iter() {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let st =
                match nix::sys::stat::fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(Errno::ENOENT) => continue, // removed while we walked
                    Err(e) => return Err(e),
                };
            total.inodes += 1;
            total.bytes = total
                .bytes
                .saturating_add((st.st_blocks as u64).saturating_mul(512));
            let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
            if is_dir && st.st_dev == top.st_dev {
                match nix::fcntl::openat(
                    parent.as_fd(),
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(child) => stack.push(child),
                    Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(total)
}
