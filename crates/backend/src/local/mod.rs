//! The `local` backend: the embedded default, on any Linux directory.
//!
//! - On btrfs, each share is a subvolume and its quota a qgroup limit on referenced bytes,
//!   which the kernel enforces (EDQUOT). Quotas are switched on when the backend opens.
//! - Elsewhere, shares are plain directories; usage is measured by walking and limits are
//!   advisory, and [`Capabilities`] says so.
//! - The project ID and the requested limits live in xattrs on the share directory; nodemaps
//!   live in a state file under the root.

pub mod beneath;
mod btrfs;
pub mod file_version;
mod hsm;
mod nodemaps;
mod usage;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    NodemapChange, QuotaEnforcement, Result,
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
            .map_err(|e| BackendError::InvalidState(format!("open task failed: {e}")))?
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
        tracing::info!(root = %root.display(), btrfs = is_btrfs, quota_enforced, "local backend open");
        Ok(Self {
            inner: Arc::new(Inner {
                given_root,
                root,
                root_fd,
                btrfs: is_btrfs,
                quota_enforced,
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
            .map_err(|e| BackendError::InvalidState(format!("blocking task failed: {e}")))?
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
            drop(fd);
            let (parent, name) = beneath::open_parent(inner.root_fd.as_fd(), &dir)
                .map_err(|e| io(dir.as_str(), e))?;
            if subvolume {
                btrfs::destroy_subvolume(parent.as_fd(), name).map_err(|e| io(dir.as_str(), e))?;
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
                btrfs::set_limit(fd.as_fd(), hard).map_err(|e| io(dir.as_str(), e))?;
            }
            let json = serde_json::to_vec(&limits)
                .map_err(|e| BackendError::InvalidState(format!("serialising limits: {e}")))?;
            beneath::set_xattr(fd.as_fd(), LIMITS_XATTR, &json).map_err(|e| io(dir.as_str(), e))
        })
        .await
    }

    async fn quota(&self, dir: &RelPath, _id: ProjectId) -> Result<QuotaReport> {
        let dir = dir.clone();
        self.run(move |inner| {
            let fd = inner
                .open_dir_opt(&dir)?
                .ok_or_else(|| BackendError::NotFound {
                    path: dir.as_str().to_string(),
                })?;
            let mut limits = inner.limits_of(&fd, &dir)?;
            let walked = usage::walk(
                fd.try_clone()
                    .map_err(|e| BackendError::io(dir.as_str(), e))?,
            )
            .map_err(|e| io(dir.as_str(), e))?;
            let mut used_bytes = walked.bytes;
            if inner.quota_enforced && inner.is_subvolume(&fd)? {
                // The kernel's numbers are the ones it enforces; commit first so they are current.
                btrfs::sync(fd.as_fd()).map_err(|e| io(dir.as_str(), e))?;
                let subvol = btrfs::subvolume_id(fd.as_fd()).map_err(|e| io(dir.as_str(), e))?;
                let group = btrfs::qgroup(fd.as_fd(), subvol)
                    .map_err(|e| io(dir.as_str(), e))?
                    .unwrap_or_default();
                used_bytes = group.referenced;
                // Report the limit the kernel enforces, so a lost limit shows as one.
                limits.block_hard_bytes = group.max_referenced.unwrap_or(0);
            }
            let block_exceeded =
                limits.block_hard_bytes > 0 && used_bytes >= limits.block_hard_bytes;
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
                inaccurate: false,
            })
        })
        .await
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
