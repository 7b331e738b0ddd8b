//! The `local` backend's [`Quotas`]: the project ID and limits in xattrs, btrfs qgroup limits
//! where the kernel enforces them, and statvfs for the capacity.

use std::os::fd::AsFd;

use async_trait::async_trait;
use lustre_model::{ProjectId, QuotaLimits, QuotaReport, RelPath};
use nix::errno::Errno;

use super::{LIMITS_XATTR, LocalBackend, PROJECT_XATTR, beneath, btrfs, io, read_project};
use crate::{BackendError, Capacity, Quotas, Result, RootProjectQuota};

#[async_trait]
impl Quotas for LocalBackend {
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

    async fn root_project_quota(&self) -> Result<RootProjectQuota> {
        Ok(if self.inner.quota_enforced {
            // A qgroup limit stops every writer, root included.
            RootProjectQuota::Enforced {
                targets: vec!["btrfs qgroups".into()],
            }
        } else {
            RootProjectQuota::NotEnforced {
                targets: vec!["local (accounted only)".into()],
            }
        })
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
}
