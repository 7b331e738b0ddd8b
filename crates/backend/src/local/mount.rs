//! The `local` backend's [`Mounts`]: bind mounts of share directories (both mount modes are
//! bind mounts here), and why `df` shows the whole filesystem.

use std::os::fd::AsFd;
use std::path::Path;

use async_trait::async_trait;
use nix::sys::stat::SFlag;

use super::{LocalBackend, io};
use crate::mount::{bind_flags, bind_mount, unmount_cascade};
use crate::{BackendError, MountRequest, Mounts, Result, VolumeStatfs};

#[async_trait]
impl Mounts for LocalBackend {
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
