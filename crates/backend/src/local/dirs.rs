//! The `local` backend's [`Namespace`]: share directories (btrfs subvolumes where it can),
//! claims and small state files, every path resolved beneath the root without symlinks.

use std::os::fd::{AsFd, OwnedFd};

use async_trait::async_trait;
use lustre_model::{Compression, CompressionAlgorithm, RelPath};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use super::{Inner, LocalBackend, beneath, btrfs, io, read_project};
use crate::block::BLOCK_IMAGE;
use crate::{BackendError, DirInfo, DirSpec, Namespace, Result};

#[async_trait]
impl Namespace for LocalBackend {
    async fn ensure_dir(&self, dir: &RelPath) -> Result<()> {
        let dir = dir.clone();
        self.run(move |inner| {
            beneath::mkdir_all(inner.root_fd.as_fd(), &dir)
                .map(drop)
                .map_err(|e| io(dir.as_str(), e))
        })
        .await
    }

    async fn create_share_dir(&self, dir: &RelPath, spec: &DirSpec) -> Result<bool> {
        let (dir, spec) = (dir.clone(), *spec);
        self.run(move |inner| {
            let (parent, name) = beneath::open_parent(inner.root_fd.as_fd(), &dir)
                .map_err(|e| io(dir.as_str(), e))?;
            let made = if inner.btrfs {
                btrfs::create_subvolume(parent.as_fd(), name)
            } else {
                nix::sys::stat::mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700))
            };
            match made {
                Ok(()) => {}
                Err(Errno::EEXIST) => return Ok(false),
                Err(e) => return Err(io(dir.as_str(), e)),
            }
            let fd = inner.open_dir(&dir)?;
            nix::unistd::fchown(
                fd.as_fd(),
                Some(Uid::from_raw(spec.uid)),
                Some(Gid::from_raw(spec.gid)),
            )
            .and_then(|()| nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(spec.mode)))
            .map_err(|e| io(dir.as_str(), e))?;
            Ok(true)
        })
        .await
    }

    async fn remove_share_dir(&self, dir: &RelPath) -> Result<bool> {
        let dir = dir.clone();
        self.run(move |inner| {
            let Some(fd) = inner.open_dir_opt(&dir)? else {
                return Ok(false);
            };
            let subvolume = inner.is_subvolume(&fd)?;
            let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| io(dir.as_str(), e))?;
            inner.inodes.forget((st.st_dev, st.st_ino));
            let (parent, name) = beneath::open_parent(inner.root_fd.as_fd(), &dir)
                .map_err(|e| io(dir.as_str(), e))?;
            if subvolume {
                let share_id = btrfs::subvolume_id(fd.as_fd()).map_err(|e| io(dir.as_str(), e))?;
                drop(fd);
                destroy_share_subvolume(inner, &parent, name, share_id, &dir)?;
            } else {
                // The parent was opened beneath the root without symlinks, and remove_dir_all
                // itself never follows symlinks.
                let path = inner.root.join(dir.as_str());
                std::fs::remove_dir_all(&path).map_err(|e| BackendError::io(path, e))?;
            }
            Ok(true)
        })
        .await
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<()> {
        let (from, to) = (from.clone(), to.clone());
        self.run(move |inner| {
            let (from_parent, from_name) = beneath::open_parent(inner.root_fd.as_fd(), &from)
                .map_err(|e| io(from.as_str(), e))?;
            let (to_parent, to_name) =
                beneath::open_parent(inner.root_fd.as_fd(), &to).map_err(|e| io(to.as_str(), e))?;
            nix::fcntl::renameat2(
                from_parent.as_fd(),
                from_name,
                to_parent.as_fd(),
                to_name,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(|e| match e {
                Errno::EEXIST => BackendError::AlreadyExists {
                    path: to.as_str().to_string(),
                },
                Errno::ENOENT => BackendError::NotFound {
                    path: from.as_str().to_string(),
                },
                e => io(from.as_str(), e),
            })
        })
        .await
    }

    async fn stat_dir(&self, dir: &RelPath) -> Result<Option<DirInfo>> {
        let dir = dir.clone();
        self.run(move |inner| {
            let Some(fd) = inner.open_dir_opt(&dir)? else {
                return Ok(None);
            };
            let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| io(dir.as_str(), e))?;
            let project = read_project(&fd, &dir)?;
            Ok(Some(DirInfo {
                modified: u64::try_from(st.st_mtime).unwrap_or(0),
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
                project,
            }))
        })
        .await
    }

    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<String>> {
        let dir = dir.clone();
        self.run(move |inner| match inner.open_dir_opt(&dir)? {
            None => Ok(Vec::new()),
            Some(fd) => beneath::read_dir_names(fd).map_err(|e| io(dir.as_str(), e)),
        })
        .await
    }

    async fn claim(&self, marker: &RelPath) -> Result<bool> {
        let marker = marker.clone();
        self.run(move |inner| {
            let (parent, name) = beneath::open_parent(inner.root_fd.as_fd(), &marker)
                .map_err(|e| io(marker.as_str(), e))?;
            match nix::sys::stat::mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)) {
                Ok(()) => Ok(true),
                Err(Errno::EEXIST) => Ok(false),
                Err(e) => Err(io(marker.as_str(), e)),
            }
        })
        .await
    }

    async fn unclaim(&self, marker: &RelPath) -> Result<()> {
        let marker = marker.clone();
        self.run(move |inner| {
            let (parent, name) = match beneath::open_parent(inner.root_fd.as_fd(), &marker) {
                Ok(p) => p,
                Err(Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(io(marker.as_str(), e)),
            };
            match nix::unistd::unlinkat(parent.as_fd(), name, UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(io(marker.as_str(), e)),
            }
        })
        .await
    }

    async fn read_file(&self, file: &RelPath) -> Result<Option<Vec<u8>>> {
        let file = file.clone();
        self.run(move |inner| {
            use std::io::Read;
            let fd = match beneath::open_file(inner.root_fd.as_fd(), &file, OFlag::O_RDONLY) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(io(file.as_str(), e)),
            };
            let mut content = Vec::new();
            std::fs::File::from(fd)
                .read_to_end(&mut content)
                .map_err(|e| BackendError::io(file.as_str(), e))?;
            Ok(Some(content))
        })
        .await
    }

    async fn write_file(&self, file: &RelPath, content: &[u8]) -> Result<()> {
        let (file, content) = (file.clone(), content.to_vec());
        self.run(move |inner| {
            beneath::write_atomic(inner.root_fd.as_fd(), &file, &content)
                .map_err(|e| BackendError::io(file.as_str(), e))
        })
        .await
    }

    async fn remove_file(&self, file: &RelPath) -> Result<()> {
        let file = file.clone();
        self.run(move |inner| {
            let (parent, name) = match beneath::open_parent(inner.root_fd.as_fd(), &file) {
                Ok(p) => p,
                Err(Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(io(file.as_str(), e)),
            };
            match nix::unistd::unlinkat(parent.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(io(file.as_str(), e)),
            }
        })
        .await
    }

    async fn ensure_block_image(&self, dir: &RelPath, size: u64) -> Result<u64> {
        let dir = dir.clone();
        self.run(move |inner| {
            let share = inner.open_dir(&dir)?;
            let name = format!("{}/{BLOCK_IMAGE}", dir.as_str());
            // O_EXCL with O_NOFOLLOW: a name already there (a symlink included) is never
            // created through; it is opened below as a regular file or refused.
            let image = match nix::fcntl::openat(
                share.as_fd(),
                BLOCK_IMAGE,
                OFlag::O_RDWR
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => fd,
                Err(Errno::EEXIST) => {
                    beneath::open_regular(share.as_fd(), BLOCK_IMAGE, OFlag::O_RDWR)
                        .map_err(|e| BackendError::io(&name, e.into()))?
                }
                Err(e) => return Err(io(&name, e)),
            };
            let st = nix::sys::stat::fstat(image.as_fd()).map_err(|e| io(&name, e))?;
            let current = u64::try_from(st.st_size).unwrap_or(0);
            if current < size {
                let len = i64::try_from(size).map_err(|_| {
                    BackendError::InvalidState(format!("{name}: size {size} is too large"))
                })?;
                nix::unistd::ftruncate(image.as_fd(), len).map_err(|e| io(&name, e))?;
            }
            // Root-only whoever made it: the device is the pod's way in, not the file.
            nix::sys::stat::fchmod(image.as_fd(), Mode::from_bits_truncate(0o600))
                .map_err(|e| io(&name, e))?;
            Ok(current.max(size))
        })
        .await
    }

    async fn open_block_image(&self, dir: &RelPath, read_only: bool) -> Result<Option<OwnedFd>> {
        let dir = dir.clone();
        self.run(move |inner| {
            let share = inner.open_dir(&dir)?;
            let flags = if read_only {
                OFlag::O_RDONLY
            } else {
                OFlag::O_RDWR
            };
            match beneath::open_regular(share.as_fd(), BLOCK_IMAGE, flags) {
                Ok(fd) => Ok(Some(fd)),
                Err(beneath::OpenRegularError::Errno(Errno::ENOENT)) => Ok(None),
                Err(e) => Err(BackendError::io(
                    format!("{}/{BLOCK_IMAGE}", dir.as_str()),
                    e.into(),
                )),
            }
        })
        .await
    }
    fn check_compression(&self, compression: &Compression) -> Result<()> {
        btrfs_compression(compression).map(drop)
    }

    /// btrfs's per-inode compression property (the `btrfs.compression` xattr, what
    /// `btrfs property set <dir> compression` writes), which files made below inherit.
    async fn set_compression(&self, dir: &RelPath, compression: &Compression) -> Result<()> {
        let value = btrfs_compression(compression)?;
        let dir = dir.clone();
        self.run(move |inner| {
            let fd = inner.open_dir(&dir)?;
            beneath::set_xattr(fd.as_fd(), BTRFS_COMPRESSION, value.as_bytes()).map_err(|e| {
                if e == Errno::EOPNOTSUPP || e == Errno::ENOTSUP {
                    BackendError::unsupported(
                        "compression",
                        format!(
                            "{}: the local root is not btrfs, which compresses",
                            dir.as_str()
                        ),
                    )
                } else {
                    io(dir.as_str(), e)
                }
            })?;
            let back = beneath::get_xattr(fd.as_fd(), BTRFS_COMPRESSION)
                .map_err(|e| io(dir.as_str(), e))?;
            if back.as_deref() != Some(value.as_bytes()) {
                return Err(BackendError::InvalidState(format!(
                    "{}: compression {value} did not take (read back {:?})",
                    dir.as_str(),
                    back.map(|b| String::from_utf8_lossy(&b).into_owned())
                )));
            }
            Ok(())
        })
        .await
    }
}

const BTRFS_COMPRESSION: &str = "btrfs.compression";

/// The `btrfs.compression` value for `compression`. btrfs has zlib (gzip's deflate) and zstd
/// but no lz4, and takes a level only as a mount option, never per directory: asking for
/// either is refused, not quietly given something else.
fn btrfs_compression(compression: &Compression) -> Result<&'static str> {
    let value = match compression.algorithm {
        CompressionAlgorithm::Gzip => "zlib",
        CompressionAlgorithm::Zstd => "zstd",
        CompressionAlgorithm::Lz4 => {
            return Err(BackendError::unsupported(
                "compression",
                "btrfs (the local backend) has no lz4: ask for zstd or gzip",
            ));
        }
    };
    if let Some(level) = compression.level {
        return Err(BackendError::unsupported(
            "compression",
            format!(
                "btrfs (the local backend) sets a compression level only for a whole mount, \
                 not per directory: leave out level {level}"
            ),
        ));
    }
    Ok(value)
}

/// Destroys a share subvolume with every subvolume a tenant made below it (deepest first,
/// each by ID, so no tenant-controlled path is resolved), then the share itself from its
/// trusted parent, then the share's level-1 qgroup. A subvolume created between the listing
/// and the destroy (ENOTEMPTY) makes it list again, a bounded number of times.
///
/// Destroying a nested subvolume changes a directory of the share, and the kernel reserves
/// metadata for that against the share's (full) qgroup: on EDQUOT the share's limits are
/// lifted, as the data is going anyway, and the destroy retried.
fn destroy_share_subvolume(
    inner: &Inner,
    parent: &OwnedFd,
    name: &str,
    share_id: u64,
    dir: &RelPath,
) -> Result<()> {
    const ATTEMPTS: usize = 5;
    let err = |e| io(dir.as_str(), e);
    let root = inner.root_fd.as_fd();
    let mut lifted = false;
    let mut lift = |why: Errno| -> Result<()> {
        if lifted || why != Errno::EDQUOT || !inner.quota_enforced {
            return Err(err(why));
        }
        tracing::info!(share = %dir, "share is full; lifting its limit to delete it");
        btrfs::set_limit(root, btrfs::share_qgroup(share_id), None).map_err(err)?;
        btrfs::set_limit(root, share_id, None).map_err(err)?;
        lifted = true;
        Ok(())
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut nested = btrfs::nested_subvolumes(root, share_id).map_err(err)?;
        nested.sort_by_key(|&(_, depth)| std::cmp::Reverse(depth));
        let mut retry = false;
        for (id, _) in nested {
            match btrfs::destroy_subvolume_by_id(root, id) {
                Ok(()) => {
                    tracing::info!(share = %dir, subvolume = id, "nested subvolume destroyed")
                }
                Err(e) => {
                    lift(e)?;
                    retry = true;
                    break;
                }
            }
        }
        if !retry {
            match btrfs::destroy_subvolume(parent.as_fd(), name) {
                Ok(()) => break,
                Err(Errno::ENOTEMPTY) => {}
                Err(e) => lift(e)?,
            }
        }
        if attempt >= ATTEMPTS {
            return Err(err(Errno::ENOTEMPTY));
        }
    }
    if inner.quota_enforced {
        // Best effort: a leftover empty qgroup limits nothing and costs a few bytes.
        let group = btrfs::share_qgroup(share_id);
        let root = inner.root_fd.as_fd();
        let removed = btrfs::relations(root, group).and_then(|(_, members)| {
            for member in members {
                btrfs::assign(root, member, group, false)?;
            }
            btrfs::remove_qgroup(root, group)
        });
        if let Err(e) = removed {
            tracing::warn!(share = %dir, qgroup = group, error = %e, "cannot remove the share's qgroup");
        }
    }
    Ok(())
}
