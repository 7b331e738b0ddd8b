//! Block volumes on the node: the share's image file on a loop device, and that device node
//! bind-mounted onto the target file (a CSI block target is a file; the CO makes its
//! parent). One loop device per volume and node, shared by every target of that volume on
//! the node, detached when the last of them is unpublished.
//!
//! The device is found by the image's device and inode ([`block::find_attached`]) or by the
//! device number at the target, never by a name a tenant controls; before a detach the
//! device must hold a file named [`block::BLOCK_IMAGE`]. Every step runs in
//! [`backend::mount::FsCalls::global`] under the driver's `fs_timeout`.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend::block::{self, LoopDevice};
use backend::mount::{bind_flags, bind_mount, mount_table};

use super::NodeService;
use crate::error::{CsiError, Result};
use crate::grpc::*;
use crate::node_ops::{self, Target};
use crate::volume::{NodeVolume, share_of};

/// Whether the loop device holds a block image (by its file name: the device number came
/// from a target only we bind, this guards against a mistake, not a tenant).
fn holds_block_image(backing: &Path) -> bool {
    backing.file_name().and_then(|n| n.to_str()) == Some(block::BLOCK_IMAGE)
}

impl NodeService {
    pub(super) async fn publish_block(
        &self,
        volume_id: &str,
        volume: &NodeVolume,
        target: PathBuf,
        read_only: bool,
    ) -> Result<NodePublishVolumeResponse> {
        let backend = Arc::clone(self.driver.service.backend());
        if !backend.capabilities().block_volumes {
            return Err(CsiError::invalid(format!(
                "block volumes are not supported on the {} backend",
                backend.kind_name()
            )));
        }
        // Each call is named by its target, never by a shared device path: the pool refuses
        // a second call of one kind on one path while the first runs, and publishes of
        // different volumes must not turn each other away.
        let support = self
            .fs_call("probe", &target, || Ok(block::probe()))
            .await?;
        block::choose(support).map_err(CsiError::FailedPrecondition)?;
        let image = backend
            .open_block_image(&volume.path, read_only)
            .await?
            .ok_or_else(|| {
                CsiError::NotFound(format!(
                    "volume {volume_id:?}: its block image {}/{} is missing",
                    volume.path.as_str(),
                    block::BLOCK_IMAGE
                ))
            })?;
        let image = Arc::new(image);
        let probe = target.clone();
        let (target, created) = match self
            .fs_call("inspect", &target, move || node_ops::inspect(&probe))
            .await?
        {
            Target::Dir {
                path,
                mounted: true,
            } => {
                let (t, img) = (path.clone(), Arc::clone(&image));
                let same = self
                    .fs_call("device", &path, move || {
                        let at_target = node_ops::mounted_device(&t)?;
                        let attached = block::find_attached(img.as_fd())?;
                        Ok(match (at_target, attached) {
                            (Some((rdev, _)), Some(dev)) => {
                                dev.rdev == rdev && dev.read_only == read_only
                            }
                            _ => false,
                        })
                    })
                    .await?;
                return if same {
                    Ok(NodePublishVolumeResponse {})
                } else {
                    Err(CsiError::AlreadyExists(format!(
                        "target {} already has another mount (another volume, or read-only differs)",
                        path.display()
                    )))
                };
            }
            Target::Dir {
                path,
                mounted: false,
            } => {
                return Err(CsiError::FailedPrecondition(format!(
                    "target path {} is a directory; a block volume's target is a file",
                    path.display()
                )));
            }
            Target::File { path } => (path, false),
            Target::Absent => {
                let t = target.clone();
                let made = self
                    .fs_call("create", &target, move || node_ops::create_file_target(&t))
                    .await?;
                (made, true)
            }
        };
        let result = self
            .attach_and_bind(Arc::clone(&image), &target, read_only)
            .await;
        if let Err(e) = result {
            if created {
                let t = target.clone();
                let _ = self
                    .fs_call("unlink", &target, move || node_ops::remove_file_target(&t))
                    .await;
            }
            return Err(e);
        }
        tracing::info!(volume_id, share = %volume.path, target = %target.display(), read_only,
            "block volume published");
        Ok(NodePublishVolumeResponse {})
    }

    /// The image on its loop device (the one already attached on this node, or a new one),
    /// and the device node bound at `target`. A device this call attached is detached again
    /// if the bind fails.
    async fn attach_and_bind(
        &self,
        image: Arc<OwnedFd>,
        target: &Path,
        read_only: bool,
    ) -> Result<()> {
        let (device, attached_now): (LoopDevice, bool) = self
            .fs_call("attach", target, move || {
                match block::find_attached(image.as_fd())? {
                    Some(dev) => Ok((dev, false)),
                    None => Ok((block::attach(image.as_fd(), read_only)?, true)),
                }
            })
            .await?;
        if device.read_only != read_only {
            return Err(CsiError::FailedPrecondition(format!(
                "this volume is attached {} on this node ({}); a {} publish must wait until \
                 it is unpublished",
                if device.read_only {
                    "read-only"
                } else {
                    "read-write"
                },
                device.path.display(),
                if read_only { "read-only" } else { "read-write" },
            )));
        }
        let flags = bind_flags(read_only, &[])?;
        if let Err(e) = bind_mount(device.path.clone(), target.to_path_buf(), flags).await {
            if attached_now {
                let dev = device.clone();
                if let Err(detach) = self
                    .fs_call("detach", target, move || Ok(block::detach(&dev)?))
                    .await
                {
                    tracing::warn!(device = %device.path.display(), error = %detach,
                        "could not detach the loop device of a failed publish");
                }
            }
            return Err(e.into());
        }
        tracing::debug!(device = %device.path.display(), attached_now, "loop device bound");
        Ok(())
    }

    /// Unbinds the device at a mounted block target and detaches it unless another target
    /// on this node still shows it; then removes the target file.
    pub(super) async fn unpublish_block(
        &self,
        path: &Path,
        rdev: u64,
        key: (String, PathBuf),
    ) -> Result<()> {
        self.driver.service.backend().unmount(path).await?;
        let still = self
            .fs_call("mounts", path, move || node_ops::device_still_bound(&key))
            .await?;
        if !still {
            self.detach_device(rdev, path).await?;
        }
        let p = path.to_path_buf();
        self.fs_call("unlink", path, move || node_ops::remove_file_target(&p))
            .await
    }

    /// Detaches the loop device numbered `rdev` if it holds a block image.
    async fn detach_device(&self, rdev: u64, target: &Path) -> Result<()> {
        let t = target.to_path_buf();
        self.fs_call("detach", target, move || {
            match block::loop_device_of(rdev)? {
                Some((dev, backing)) if holds_block_image(&backing) => {
                    block::detach(&dev)?;
                    tracing::info!(device = %dev.path.display(), "loop device detached");
                }
                Some((dev, backing)) => tracing::warn!(device = %dev.path.display(),
                    backing = %backing.display(), target = %t.display(),
                    "the device at a block target holds no block image; left attached"),
                None => {}
            }
            Ok(())
        })
        .await
    }

    /// An unmounted block target (a publish cut short, or an unpublish cut after its
    /// unmount): the volume's loop device, if still attached and bound nowhere, is
    /// detached, found from the image the volume ID names; then the file goes.
    pub(super) async fn unpublish_unmounted_block(
        &self,
        volume_id: &str,
        path: &Path,
    ) -> Result<()> {
        let settings = self.driver.service.settings();
        let backend = self.driver.service.backend();
        if let Some((id, _)) = share_of(volume_id, settings)
            && backend.capabilities().block_volumes
            && backend.stat_dir(&id.path).await?.is_some()
            && let Some(image) = backend.open_block_image(&id.path, true).await?
        {
            let p = path.to_path_buf();
            let device = self
                .fs_call("find device", path, move || {
                    let Some(dev) = block::find_attached(image.as_fd())? else {
                        return Ok(None);
                    };
                    // Bound at another target still: leave it.
                    let table = mount_table()?;
                    let name = dev.path.file_name().map(PathBuf::from);
                    let bound = table.iter().any(|e| {
                        e.mount_point != p
                            && matches!(e.fs_type.as_str(), "devtmpfs" | "tmpfs")
                            && e.root.file_name().map(PathBuf::from) == name
                    });
                    Ok((!bound).then_some(dev))
                })
                .await?;
            if let Some(dev) = device {
                self.detach_device(dev.rdev, path).await?;
            }
        }
        let p = path.to_path_buf();
        self.fs_call("unlink", path, move || node_ops::remove_file_target(&p))
            .await
    }

    pub(super) async fn expand(
        &self,
        req: NodeExpandVolumeRequest,
    ) -> Result<NodeExpandVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::Missing("volume_id"));
        }
        if req.volume_path.is_empty() {
            return Err(CsiError::Missing("volume_path"));
        }
        if req.volume_path.contains('\0') {
            return Err(CsiError::invalid("volume path contains NUL"));
        }
        // Not check_target: a path that is not there (relative ones included) is NOT_FOUND,
        // as in NodeGetVolumeStats.
        let path = PathBuf::from(&req.volume_path);
        let required = match &req.capacity_range {
            Some(range) => crate::capacity::validate(range)?.0,
            None => 0,
        };
        let _guard = self
            .driver
            .inflight
            .claim([Self::volume_key(&req.volume_id)])?;
        let probe = path.clone();
        let target = self
            .fs_call("inspect", &path, move || node_ops::inspect(&probe))
            .await?;
        let path = match target {
            Target::Absent => {
                return Err(CsiError::NotFound(format!(
                    "volume {:?} is not at {}",
                    req.volume_id,
                    path.display()
                )));
            }
            // A directory volume's size is its quota, grown by the controller.
            Target::Dir { mounted: false, .. } | Target::File { .. } => {
                return Ok(NodeExpandVolumeResponse {
                    capacity_bytes: crate::capacity::to_i64(required),
                });
            }
            Target::Dir {
                path,
                mounted: true,
            } => path,
        };
        let p = path.clone();
        let size = self
            .fs_call("expand", &path, move || {
                let Some((rdev, _)) = node_ops::mounted_device(&p)? else {
                    return Ok(None);
                };
                match block::loop_device_of(rdev)? {
                    Some((dev, backing)) if holds_block_image(&backing) => {
                        Ok(Some(block::refresh_capacity(&dev)?))
                    }
                    _ => Err(CsiError::FailedPrecondition(format!(
                        "the device at {} is not a block volume's loop device",
                        p.display()
                    ))),
                }
            })
            .await?;
        let Some(size) = size else {
            // A mounted directory volume: nothing to do on the node.
            return Ok(NodeExpandVolumeResponse {
                capacity_bytes: crate::capacity::to_i64(required),
            });
        };
        if size < required {
            return Err(CsiError::FailedPrecondition(format!(
                "the device at {} has {size} bytes, less than the {required} asked: \
                 ControllerExpandVolume has not grown its image",
                path.display()
            )));
        }
        tracing::info!(volume_id = %req.volume_id, path = %path.display(), size,
            "block device grown");
        Ok(NodeExpandVolumeResponse {
            capacity_bytes: crate::capacity::to_i64(size),
        })
    }
}
