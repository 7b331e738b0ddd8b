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
pub mod file_version;
mod hsm;
#[doc(hidden)]
pub use hsm::test_hooks as hsm_test_hooks;
mod nodemaps;
mod usage;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use usage::{InodeCache, Lookup, Walked};

use async_trait::async_trait;
use lustre_model::{
    Grace, HsmFlags, HsmState, NodemapState, ProjectId, QuotaLimits, QuotaReport, QuotaUsage,
    RelPath,
};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use crate::mount::{bind_flags, bind_mount, unmount_cascade};
use crate::{
    BackendError, BackendKind, Capabilities, Capacity, DirInfo, DirSpec, Filesystem, MountRequest,
    NodemapChange, QuotaEnforcement, Result, VolumeStatfs,
};

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
        tracing::info!(root = %root.display(), btrfs = is_btrfs, quota_enforced, node_size,
            "local backend open");
        Ok(Self {
            inner: Arc::new(Inner {
                given_root,
                root,
                root_fd,
                btrfs: is_btrfs,
                quota_enforced,
                node_size,
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

#[async_trait]
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
            encryption: false,
            restore_on_access: false,
            quota_write_reserve: if self.inner.quota_enforced {
                u64::from(self.inner.node_size)
            } else {
                0
            },
        }
    }

    fn host_path(&self, dir: &RelPath) -> PathBuf {
        self.inner.root.join(dir.as_str())
    }

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

    async fn set_project(&self, dir: &RelPath, id: ProjectId) -> Result<()> {
        let dir = dir.clone();
        self.run(move |inner| {
            let fd = inner.open_dir(&dir)?;
            beneath::set_xattr(fd.as_fd(), PROJECT_XATTR, id.get().to_string().as_bytes())
                .map_err(|e| io(dir.as_str(), e))
        })
        .await
    }

    async fn project_of(&self, dir: &RelPath) -> Result<Option<ProjectId>> {
        let dir = dir.clone();
        self.run(move |inner| match inner.open_dir_opt(&dir)? {
            None => Err(BackendError::NotFound {
                path: dir.as_str().to_string(),
            }),
            Some(fd) => read_project(&fd, &dir),
        })
        .await
    }

    async fn set_quota(&self, dir: &RelPath, _id: ProjectId, limits: &QuotaLimits) -> Result<()> {
        let (dir, limits) = (dir.clone(), *limits);
        self.run(move |inner| {
            let fd = inner.open_dir(&dir)?;
            if inner.quota_enforced {
                if !inner.is_subvolume(&fd)? {
                    return Err(BackendError::InvalidState(format!(
                        "{} is not a btrfs subvolume, so no qgroup can limit it",
                        dir.as_str()
                    )));
                }
                let hard = (limits.block_hard_bytes > 0).then_some(limits.block_hard_bytes);
                let err = |e| io(dir.as_str(), e);
                let share_id = btrfs::subvolume_id(fd.as_fd()).map_err(err)?;
                let group = btrfs::share_qgroup(share_id);
                // Every qgroup ioctl goes through the root's descriptor: its transaction
                // reserves metadata in the fd's own subvolume, which for a full share would
                // fail with EDQUOT, and a full share is when a resize is wanted.
                let root = inner.root_fd.as_fd();
                btrfs::create_qgroup(root, group).map_err(err)?;
                let joined = match btrfs::assign(root, share_id, group, true) {
                    Err(Errno::ENOENT) => {
                        btrfs::create_qgroup(root, share_id).map_err(err)?;
                        btrfs::assign(root, share_id, group, true).map_err(err)?
                    }
                    other => other.map_err(err)?,
                };
                inner.adopt_nested(&dir, share_id, joined)?;
                // The share-wide limit, and the same on the share's own subvolume.
                btrfs::set_limit(root, group, hard).map_err(err)?;
                btrfs::set_limit(root, share_id, hard).map_err(err)?;
            }
            let json = serde_json::to_vec(&limits)
                .map_err(|e| BackendError::InvalidState(format!("serialising limits: {e}")))?;
            beneath::set_xattr(fd.as_fd(), LIMITS_XATTR, &json).map_err(|e| io(dir.as_str(), e))
        })
        .await
    }

    async fn quota(&self, dir: &RelPath, _id: ProjectId) -> Result<QuotaReport> {
        let dir = dir.clone();
        self.run(move |inner| inner.report(&dir, false)).await
    }

    async fn quota_now(&self, dir: &RelPath, _id: ProjectId) -> Result<QuotaReport> {
        let dir = dir.clone();
        self.run(move |inner| inner.report(&dir, true)).await
    }

    async fn nodemaps(&self) -> Result<NodemapState> {
        self.run(|inner| nodemaps::load(inner.root_fd.as_fd()))
            .await
    }

    async fn apply_nodemap_changes(&self, changes: &[NodemapChange]) -> Result<()> {
        let changes = changes.to_vec();
        self.run(move |inner| nodemaps::apply(inner.root_fd.as_fd(), &changes))
            .await
    }

    async fn capacity(&self) -> Result<Capacity> {
        self.run(|inner| {
            let st = nix::sys::statvfs::fstatvfs(inner.root_fd.as_fd())
                .map_err(|e| io(&inner.root, e))?;
            let frag = st.fragment_size() as u64;
            let total = (st.blocks() as u64).saturating_mul(frag);
            let free = (st.blocks_free() as u64).saturating_mul(frag);
            let avail = (st.blocks_available() as u64).saturating_mul(frag);
            Ok(Capacity {
                total_bytes: total,
                used_bytes: total.saturating_sub(free),
                available_bytes: avail,
                total_inodes: st.files() as u64,
                used_inodes: (st.files() as u64).saturating_sub(st.files_free() as u64),
                free_inodes: st.files_free() as u64,
            })
        })
        .await
    }

    async fn hsm_state(&self, file: &Path) -> Result<HsmState> {
        let file = file.to_path_buf();
        self.run(move |inner| hsm::hsm_state(&inner.hsm_root(), &file))
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
        self.run(move |inner| hsm::hsm_mark(&inner.hsm_root(), &file, set, clear, archive_id))
            .await
    }

    async fn hsm_release(&self, file: &Path) -> Result<()> {
        let file = file.to_path_buf();
        self.run(move |inner| hsm::hsm_release(&inner.hsm_root(), &file))
            .await
    }

    async fn hsm_release_watched(&self, file: &Path) -> Result<()> {
        let file = file.to_path_buf();
        self.run(move |inner| hsm::hsm_release_watched(&inner.hsm_root(), &file))
            .await
    }

    async fn hsm_access_state(&self, file: &Path) -> Result<crate::HsmAccessState> {
        let file = file.to_path_buf();
        self.run(move |inner| hsm::hsm_access_state(&inner.hsm_root(), &file))
            .await
    }

    async fn mount(&self, request: &MountRequest) -> Result<()> {
        let flags = bind_flags(request.read_only, &request.options)?;
        let share = request.share.clone();
        // Resolve the source beneath the root without symlinks, then check it is a directory.
        let source = self
            .run(move |inner| {
                let fd = inner.open_dir(&share)?;
                let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| io(share.as_str(), e))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                    return Err(BackendError::InvalidState(format!(
                        "{} is not a directory",
                        share.as_str()
                    )));
                }
                Ok(inner.root.join(share.as_str()))
            })
            .await?;
        let target = request.target.clone();
        let st = nix::sys::stat::lstat(&target).map_err(|e| io(&target, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            return Err(BackendError::InvalidState(format!(
                "mount target {} is not a directory (symlinks are refused)",
                target.display()
            )));
        }
        bind_mount(source, target, flags).await
    }

    async fn unmount(&self, target: &Path) -> Result<()> {
        unmount_cascade(target).await
    }

    async fn volume_statfs(&self) -> Result<VolumeStatfs> {
        let why = if self.inner.btrfs {
            "btrfs statfs reports the whole filesystem: a qgroup limit is not what df shows"
        } else {
            "the local backend's volumes are plain directories: df shows their filesystem"
        };
        Ok(VolumeStatfs::Filesystem { why: why.into() })
    }
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
