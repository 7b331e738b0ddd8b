//! The `local` backend: the embedded default, on any Linux directory.
//!
//! - On btrfs, each share is a subvolume and its quota a qgroup limit on referenced bytes,
//!   which the kernel enforces (EDQUOT). Quotas are switched on when the backend opens.
//!   The limit sits on a level-1 qgroup per share (`1/<share subvolume ID>`) that holds the
//!   share's subvolume and every subvolume a tenant creates below it (no privilege is needed
//!   for `btrfs subvolume create`, and with full qgroups a new subvolume belongs to no
//!   group). See [`Inner::adopt_nested`] for when they join and the window before.
//! - Elsewhere, shares are plain directories; usage is measured by walking and limits are
//!   advisory, and [`Capabilities`] says so.
//! - The project ID and the requested limits live in xattrs on the share directory; nodemaps
//!   live in a state file under the root.

pub mod beneath;
mod btrfs;
mod dirs;
mod encryption;
pub mod file_version;
mod hsm;
#[doc(hidden)]
pub use hsm::test_hooks as hsm_test_hooks;
mod mount;
mod nodemaps;
mod quota;
mod usage;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use usage::{InodeCache, Lookup, Walked};

use lustre_model::{Grace, ProjectId, QuotaLimits, QuotaReport, QuotaUsage, RelPath};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::{BackendError, BackendKind, Capabilities, Filesystem, QuotaEnforcement, Result};

const PROJECT_XATTR: &str = "user.lustrekit.project";
const LIMITS_XATTR: &str = "user.lustrekit.limits";
/// On btrfs the root directory of a subvolume always has this inode number.
const BTRFS_SUBVOLUME_INO: u64 = 256;

/// A share filesystem on a local directory.
#[derive(Clone)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// The root as given (absolute), and canonical.
    given_root: PathBuf,
    root: PathBuf,
    root_fd: OwnedFd,
    btrfs: bool,
    quota_enforced: bool,
    /// The btrfs metadata node size (0 off btrfs): what a qgroup reserves per write.
    node_size: u32,
    /// The root's filesystem does fscrypt (probed at open).
    fscrypt: bool,
    /// Inode counts of btrfs shares, whose bytes the kernel counts (elsewhere the walk is the
    /// byte count too, and is done on every call so that usage is never stale).
    inodes: Arc<InodeCache>,
}

fn io(path: impl AsRef<Path>, e: Errno) -> BackendError {
    BackendError::io(path.as_ref(), std::io::Error::from(e))
}

impl LocalBackend {
    /// Opens (creating if needed) the root directory. On btrfs, quota accounting is switched
    /// on; if that is not possible (not root), quotas are reported as accounted only.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        tokio::task::spawn_blocking(move || Self::open_blocking(root))
            .await
            .map_err(|e| BackendError::from_join("open task", e))?
    }

    fn open_blocking(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(|e| BackendError::io(&root, e))?;
        let given_root = std::path::absolute(&root).map_err(|e| BackendError::io(&root, e))?;
        let root = root
            .canonicalize()
            .map_err(|e| BackendError::io(&root, e))?;
        let root_fd = nix::fcntl::open(
            &root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(&root, e))?;
        let is_btrfs = btrfs::is_btrfs(root_fd.as_fd()).map_err(|e| io(&root, e))?;
        let quota_enforced = is_btrfs
            && match btrfs::enable_quota(root_fd.as_fd()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(root = %root.display(), error = %e,
                        "cannot enable btrfs quotas; limits will be accounted only");
                    false
                }
            };
        let node_size = if is_btrfs {
            btrfs::node_size(root_fd.as_fd()).map_err(|e| io(&root, e))?
        } else {
            0
        };
        let fscrypt = crate::fscrypt::supported(root_fd.as_fd());
        tracing::info!(root = %root.display(), btrfs = is_btrfs, quota_enforced, node_size,
            fscrypt, "local backend open");
        Ok(Self {
            inner: Arc::new(Inner {
                given_root,
                root,
                root_fd,
                btrfs: is_btrfs,
                quota_enforced,
                node_size,
                fscrypt,
                inodes: Arc::default(),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn is_btrfs(&self) -> bool {
        self.inner.btrfs
    }

    /// Runs blocking filesystem work on the blocking pool with the root descriptor.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| BackendError::from_join("blocking task", e))?
    }
}

impl Inner {
    fn hsm_root(&self) -> hsm::HsmRoot<'_> {
        hsm::HsmRoot {
            fd: self.root_fd.as_fd(),
            paths: [&self.given_root, &self.root],
        }
    }

    fn open_dir(&self, dir: &RelPath) -> Result<OwnedFd> {
        beneath::open_dir(self.root_fd.as_fd(), Some(dir)).map_err(|e| io(dir.as_str(), e))
    }

    fn open_dir_opt(&self, dir: &RelPath) -> Result<Option<OwnedFd>> {
        match beneath::open_dir(self.root_fd.as_fd(), Some(dir)) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(io(dir.as_str(), e)),
        }
    }

    fn is_subvolume(&self, fd: &OwnedFd) -> Result<bool> {
        if !self.btrfs {
            return Ok(false);
        }
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| io(&self.root, e))?;
        Ok(st.st_ino == BTRFS_SUBVOLUME_INO)
    }

    /// Puts every subvolume below share subvolume `share_id` into the share's level-1
    /// qgroup (and out of any other group a tenant named when creating it), so the share's
    /// limit covers it. Returns whether a relation changed; when one did and the kernel
    /// marked its numbers inconsistent (shared extents), starts a rescan.
    ///
    /// Called by `set_quota` (create, resize, `ensure`) and by every `quota()` (stats):
    /// a subvolume a tenant creates is outside the limit until the next of those, which
    /// for a mounted CSI volume is the kubelet's next NodeGetVolumeStats (every minute by
    /// default). Writes into it before then are counted once it joins, so the share is
    /// then over its limit and further writes fail, but they were not refused when made.
    /// With full qgroups the kernel offers no way to make new subvolumes inherit a group
    /// without the creator asking for it.
    fn adopt_nested(&self, dir: &RelPath, share_id: u64, changed: bool) -> Result<()> {
        let err = |e| io(dir.as_str(), e);
        // The root's descriptor, not the share's: see `set_quota`.
        let fd = &self.root_fd;
        let group = btrfs::share_qgroup(share_id);
        let mut changed = changed;
        for (id, _) in btrfs::nested_subvolumes(fd.as_fd(), share_id).map_err(err)? {
            let (parents, _) = btrfs::relations(fd.as_fd(), id).map_err(err)?;
            if !parents.contains(&group) {
                let joined = match btrfs::assign(fd.as_fd(), id, group, true) {
                    Err(Errno::ENOENT) => {
                        btrfs::create_qgroup(fd.as_fd(), id).map_err(err)?;
                        btrfs::assign(fd.as_fd(), id, group, true).map_err(err)?
                    }
                    other => other.map_err(err)?,
                };
                tracing::info!(share = %dir, subvolume = id, "nested subvolume put under the share's quota");
                changed |= joined;
            }
            for foreign in parents.into_iter().filter(|&p| p != group) {
                tracing::warn!(share = %dir, subvolume = id, qgroup = foreign,
                    "nested subvolume taken out of a qgroup that is not its share's");
                changed |= btrfs::assign(fd.as_fd(), id, foreign, false).map_err(err)?;
            }
        }
        if changed {
            let status = btrfs::status(fd.as_fd()).map_err(err)?;
            if status.inconsistent && !status.rescanning {
                tracing::info!(share = %dir, "qgroup numbers inconsistent after a new relation; rescanning");
                btrfs::start_rescan(fd.as_fd()).map_err(err)?;
            }
        }
        Ok(())
    }

    /// Inode count (and walked bytes) of a share; on btrfs from the cache when it is fresh
    /// enough, see [`usage::FRESH`] and [`usage::USABLE`].
    fn walked(&self, fd: &OwnedFd, dir: &RelPath, cached: bool) -> Result<Walked> {
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| io(dir.as_str(), e))?;
        let key = (st.st_dev, st.st_ino);
        if cached {
            match self.inodes.lookup(key) {
                Lookup::Fresh(walked) => return Ok(walked),
                Lookup::Stale { walked, refresh } => {
                    if refresh {
                        self.refresh_in_background(fd, dir, key);
                    }
                    return Ok(walked);
                }
                Lookup::Missing => {}
            }
        }
        let dup = fd
            .try_clone()
            .map_err(|e| BackendError::io(dir.as_str(), e))?;
        let walked = usage::walk(dup).map_err(|e| io(dir.as_str(), e))?;
        if cached || self.btrfs {
            self.inodes.put(key, walked);
        }
        Ok(walked)
    }

    fn refresh_in_background(&self, fd: &OwnedFd, dir: &RelPath, key: (u64, u64)) {
        let cache = Arc::clone(&self.inodes);
        let (Ok(dup), Ok(handle)) = (fd.try_clone(), tokio::runtime::Handle::try_current()) else {
            cache.refreshed(key, None);
            return;
        };
        let dir = dir.clone();
        handle.spawn_blocking(move || match usage::walk(dup) {
            Ok(walked) => cache.refreshed(key, Some(walked)),
            Err(e) => {
                tracing::warn!(share = %dir, error = %e, "background inode count failed");
                cache.refreshed(key, None);
            }
        });
    }

    /// The quota report of one share. `exact` commits the running transaction first (a
    /// filesystem-wide sync) and walks afresh; otherwise the btrfs numbers are those of the
    /// last commit (at most one commit interval, 30 s by default, behind the writes) and the
    /// inode count may be as old as [`usage::USABLE`].
    fn report(&self, dir: &RelPath, exact: bool) -> Result<QuotaReport> {
        let fd = self
            .open_dir_opt(dir)?
            .ok_or_else(|| BackendError::NotFound {
                path: dir.as_str().to_string(),
            })?;
        let err = |e| io(dir.as_str(), e);
        let mut limits = self.limits_of(&fd, dir)?;
        let mut inaccurate = false;
        let kernel = self.quota_enforced && self.is_subvolume(&fd)?;
        let walked = self.walked(&fd, dir, kernel && !exact)?;
        let mut used_bytes = walked.bytes;
        if kernel {
            let share_id = btrfs::subvolume_id(fd.as_fd()).map_err(err)?;
            let group = btrfs::share_qgroup(share_id);
            let has_group = btrfs::qgroup(fd.as_fd(), group).map_err(err)?.is_some();
            if has_group {
                self.adopt_nested(dir, share_id, false)?;
            }
            if exact {
                btrfs::sync(fd.as_fd()).map_err(err)?;
            }
            let numbers = if has_group {
                btrfs::qgroup(fd.as_fd(), group).map_err(err)?
            } else {
                btrfs::qgroup(fd.as_fd(), share_id).map_err(err)?
            }
            .unwrap_or_default();
            used_bytes = numbers.referenced;
            // Report the limit the kernel enforces on the whole share, so a lost limit (or
            // a share from before the level-1 groups) shows as none and `ensure` repairs it.
            limits.block_hard_bytes = if has_group {
                numbers.max_referenced.unwrap_or(0)
            } else {
                0
            };
            let status = btrfs::status(fd.as_fd()).map_err(err)?;
            inaccurate = status.inconsistent || status.rescanning;
        }
        let block_exceeded = limits.block_hard_bytes > 0 && used_bytes >= limits.block_hard_bytes;
        let inode_exceeded = limits.inode_hard > 0 && walked.inodes >= limits.inode_hard;
        Ok(QuotaReport {
            usage: QuotaUsage {
                used_bytes,
                inodes: walked.inodes,
            },
            limits,
            block_exceeded,
            inode_exceeded,
            block_grace: Grace::None,
            inode_grace: Grace::None,
            inaccurate,
        })
    }

    fn limits_of(&self, fd: &OwnedFd, dir: &RelPath) -> Result<QuotaLimits> {
        match beneath::get_xattr(fd.as_fd(), LIMITS_XATTR).map_err(|e| io(dir.as_str(), e))? {
            None => Ok(QuotaLimits::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                BackendError::InvalidState(format!("{}: bad {LIMITS_XATTR}: {e}", dir.as_str()))
            }),
        }
    }
}

/// No filesystem client here: every [`crate::ClientParams`] call says so.
impl crate::ClientParams for LocalBackend {}
/// No client cache: every PCC call is unsupported ([`Capabilities::pcc`] is false).
impl crate::Pcc for LocalBackend {}

impl Filesystem for LocalBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            quota: if self.inner.quota_enforced {
                QuotaEnforcement::Enforced
            } else {
                QuotaEnforcement::AccountedOnly
            },
            inode_quota: QuotaEnforcement::AccountedOnly,
            nodemaps_enforced_by_server: false,
            encryption: self.inner.fscrypt,
            restore_on_access: false,
            quota_write_reserve: if self.inner.quota_enforced {
                u64::from(self.inner.node_size)
            } else {
                0
            },
            quota_outlives_directory: false,
            bind_from_shared_client_mount: false,
            striping: false,
            client_tunables: false,
            block_volumes: true,
            pcc: false,
        }
    }

    fn host_path(&self, dir: &RelPath) -> PathBuf {
        self.inner.root.join(dir.as_str())
    }
}

fn read_project(fd: &OwnedFd, dir: &RelPath) -> Result<Option<ProjectId>> {
    let Some(raw) =
        beneath::get_xattr(fd.as_fd(), PROJECT_XATTR).map_err(|e| io(dir.as_str(), e))?
    else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&raw);
    let id: u32 = text.trim().parse().map_err(|_| {
        BackendError::InvalidState(format!(
            "{}: bad {PROJECT_XATTR} value {text:?}",
            dir.as_str()
        ))
    })?;
    Ok(Some(ProjectId::new(id)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The local backend keeps limits on the share directory and binds from the host path:
    /// what the share service and the node plugin ask instead of the backend's kind.
    #[tokio::test]
    async fn limits_go_with_the_directory_and_binds_come_from_the_host_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let caps = LocalBackend::open(dir.path())
            .await
            .expect("open")
            .capabilities();
        assert!(!caps.quota_outlives_directory);
        assert!(!caps.bind_from_shared_client_mount);
    }

    /// A block image is made root-only, grown but never shrunk, and never reached through a
    /// symlink planted at its name.
    #[tokio::test]
    async fn block_images_grow_and_refuse_symlinks() {
        use crate::Namespace;
        use crate::block::BLOCK_IMAGE;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let b = LocalBackend::open(dir.path()).await.expect("open");
        let share = RelPath::parse("a").expect("path");
        std::fs::create_dir(dir.path().join("a")).expect("mkdir");
        assert!(
            b.open_block_image(&share, true)
                .await
                .expect("open")
                .is_none()
        );
        assert_eq!(
            b.ensure_block_image(&share, 1 << 20).await.expect("make"),
            1 << 20
        );
        let meta = std::fs::metadata(dir.path().join("a").join(BLOCK_IMAGE)).expect("stat");
        assert_eq!(meta.len(), 1 << 20);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            b.ensure_block_image(&share, 4 << 20).await.expect("grow"),
            4 << 20
        );
        assert_eq!(
            b.ensure_block_image(&share, 2 << 20).await.expect("keep"),
            4 << 20
        );
        assert!(
            b.open_block_image(&share, false)
                .await
                .expect("open")
                .is_some()
        );

        let evil = RelPath::parse("b").expect("path");
        std::fs::create_dir(dir.path().join("b")).expect("mkdir");
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"x").expect("write");
        std::os::unix::fs::symlink(&outside, dir.path().join("b").join(BLOCK_IMAGE))
            .expect("symlink");
        assert!(b.ensure_block_image(&evil, 1 << 20).await.is_err());
        assert!(b.open_block_image(&evil, false).await.is_err());
        assert_eq!(std::fs::metadata(&outside).expect("stat").len(), 1);
    }
}
