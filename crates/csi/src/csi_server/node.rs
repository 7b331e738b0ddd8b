//! The Node service: publish-only (no STAGE_UNSTAGE; see ARCHITECTURE.md, CSI node model).
//!
//! NodePublishVolume asks the backend to mount the share at the target in the volume's mount
//! mode (on `lustre`, a fileset mount for `direct` or a bind mount from the node's shared
//! client mount for `bind`; on `local`, a bind mount either way); NodeUnpublishVolume runs the
//! backend's bounded unmount cascade, which on `lustre` also drops the shared client mount
//! after its last bind. The target's own checks live in [`crate::node_ops`].
//!
//! A dead server behind a mount must not wedge the node: every step that touches a
//! filesystem runs in [`FsCalls::global`] under the driver's `fs_timeout` (the unmount steps
//! under the backend's own step timeout), whether a target is mounted is read from the mount
//! table only, and a call that gives no answer fails with DEADLINE_EXCEEDED (UNAVAILABLE
//! when the same call on that path is still stuck), which releases the volume's in-flight
//! claim so that the CO's retries are not ABORTED forever.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend::mount::FsCalls;
use backend::{MountMode, MountRequest, QuotaEnforcement, VolumeStatfs};
use lustre_model::VolumeId;
use tonic::{Request, Response, Status};

use super::Driver;
use crate::client_tunables::NodeTunables;
use crate::error::{CsiError, Result};
use crate::grpc::node_server::Node;
use crate::grpc::node_service_capability::{self, rpc};
use crate::grpc::*;
use crate::node_ops::{self, Target};
use crate::stats::{self, FsStats, QuotaFigures, VolumeStats};
use crate::volume::{check_capability, is_read_only_mode, mount_flags, node_volume, share_of};

pub const CAPABILITIES: &[rpc::Type] = &[rpc::Type::GetVolumeStats, rpc::Type::VolumeCondition];

pub struct NodeService {
    driver: Arc<Driver>,
}

impl NodeService {
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }

    fn volume_key(volume_id: &str) -> String {
        format!("volume:{volume_id}")
    }

    /// Runs one blocking filesystem step (`op` on `path`) in the bounded pool.
    async fn fs_call<T: Send + 'static>(
        &self,
        op: &'static str,
        path: &Path,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        FsCalls::global()
            .run(op, path, self.driver.fs_timeout, f)
            .await?
    }

    async fn publish(&self, req: NodePublishVolumeRequest) -> Result<NodePublishVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::Missing("volume_id"));
        }
        if req.target_path.is_empty() {
            return Err(CsiError::Missing("target_path"));
        }
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or(CsiError::Missing("volume_capability"))?;
        check_capability(cap)?;
        let target = node_ops::check_target(&req.target_path)?;
        let settings = self.driver.service.settings();
        let volume = node_volume(&req.volume_id, &req.volume_context, settings)?;
        let enforced = self
            .driver
            .service
            .backend()
            .capabilities()
            .nodemaps_enforced_by_server;
        crate::tenancy::check_publish(
            settings,
            enforced,
            &self.driver.node_id,
            &volume.path,
            &req.volume_context,
        )
        .await?;
        let read_only = req.readonly || is_read_only_mode(cap);
        let options = mount_flags(cap)?;
        let _guard = self
            .driver
            .inflight
            .claim([Self::volume_key(&req.volume_id)])?;

        let backend = Arc::clone(self.driver.service.backend());
        let request = MountRequest {
            share: volume.path.clone(),
            target: target.clone(),
            read_only,
            options,
            mode: volume.mount_mode,
        };
        if backend.stat_dir(&volume.path).await?.is_none() {
            return Err(CsiError::NotFound(format!(
                "volume {:?}: its directory {} does not exist",
                req.volume_id,
                volume.path.as_str()
            )));
        }
        let source = backend.host_path(&volume.path);
        let probe = target.clone();
        let (target, created) = match self
            .fs_call("inspect", &target, move || node_ops::inspect(&probe))
            .await?
        {
            Target::Dir {
                path,
                mounted: true,
            } if volume.mount_mode == MountMode::Bind
                && backend.capabilities().bind_from_shared_client_mount =>
            {
                // The bind comes from the node's shared client mount, not from the host path
                // the controller sees: the backend checks it against its mount table.
                backend
                    .mount(&MountRequest {
                        target: path.clone(),
                        ..request
                    })
                    .await?;
                self.hold_tunables(&req.volume_id, &path, &volume.tunables)
                    .await?;
                return Ok(NodePublishVolumeResponse {});
            }
            Target::Dir {
                path,
                mounted: true,
            } => {
                let (s, t) = (source.clone(), path.clone());
                return if self
                    .fs_call("stat", &path, move || {
                        node_ops::mount_matches(&s, &t, read_only)
                    })
                    .await?
                {
                    self.hold_tunables(&req.volume_id, &path, &volume.tunables)
                        .await?;
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
            } => (path, false),
            Target::Absent => {
                let t = target.clone();
                let made = self
                    .fs_call("mkdir", &target, move || node_ops::create_target(&t))
                    .await?;
                (made, true)
            }
        };
        let request = MountRequest {
            target: target.clone(),
            ..request
        };
        if let Err(e) = backend.mount(&request).await {
            if created {
                let t = target.clone();
                let _ = self
                    .fs_call("rmdir", &target, move || node_ops::remove_target(&t))
                    .await;
            }
            return Err(e.into());
        }
        if let Err(e) = self
            .hold_tunables(&req.volume_id, &target, &volume.tunables)
            .await
        {
            // A publish that fails leaves nothing mounted or made.
            if let Err(undo) = backend.unmount(&target).await {
                tracing::warn!(target = %target.display(), error = %undo,
                    "could not unmount after the tunables were refused");
            } else if created {
                let t = target.clone();
                let _ = self
                    .fs_call("rmdir", &target, move || node_ops::remove_target(&t))
                    .await;
            }
            return Err(e);
        }
        // A failed check costs the pod nothing but an explanation of its `df`.
        if let Err(e) = self.refresh_statfs().await {
            tracing::warn!(error = %e, "cannot tell what df shows in this node's volumes");
        }
        tracing::info!(volume_id = %req.volume_id, share = %volume.path, target = %target.display(),
            read_only, is_static = volume.is_static, mount_mode = volume.mount_mode.as_str(),
            "volume published");
        Ok(NodePublishVolumeResponse {})
    }

    async fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::Missing("volume_id"));
        }
        if req.target_path.is_empty() {
            return Err(CsiError::Missing("target_path"));
        }
        let target = node_ops::check_target(&req.target_path)?;
        let _guard = self
            .driver
            .inflight
            .claim([Self::volume_key(&req.volume_id)])?;
        // Mounted or not comes from the mount table; only a target that is no mount point is
        // stat'ed (see node_ops::inspect).
        let probe = target.clone();
        let (path, mounted): (PathBuf, bool) = match self
            .fs_call("inspect", &target, move || node_ops::inspect(&probe))
            .await?
        {
            Target::Absent => {
                self.release_tunables(&req.volume_id, &target).await?;
                return Ok(NodeUnpublishVolumeResponse {});
            }
            Target::Dir { path, mounted } => (path, mounted),
        };
        if mounted {
            self.driver.service.backend().unmount(&path).await?;
        }
        let p = path.clone();
        self.fs_call("rmdir", &path, move || node_ops::remove_target(&p))
            .await?;
        self.release_tunables(&req.volume_id, &path).await?;
        tracing::info!(volume_id = %req.volume_id, target = %path.display(), "volume unpublished");
        Ok(NodeUnpublishVolumeResponse {})
    }

    /// Holds the volume's client tunables on this node for the publish at `target`.
    async fn hold_tunables(
        &self,
        volume_id: &str,
        target: &Path,
        tunables: &lustre_model::ClientTunables,
    ) -> Result<()> {
        if tunables.is_empty() {
            return Ok(());
        }
        let backend = Arc::clone(self.driver.service.backend());
        self.driver
            .tunables
            .hold(
                backend.as_ref(),
                &NodeTunables::holder(volume_id, target),
                tunables,
            )
            .await
    }

    /// Lets go of what the publish at `target` held; the last holder of a tunable puts the
    /// old values back.
    async fn release_tunables(&self, volume_id: &str, target: &Path) -> Result<()> {
        let backend = Arc::clone(self.driver.service.backend());
        self.driver
            .tunables
            .release(backend.as_ref(), &NodeTunables::holder(volume_id, target))
            .await
    }

    async fn stats(&self, req: NodeGetVolumeStatsRequest) -> Result<NodeGetVolumeStatsResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::Missing("volume_id"));
        }
        if req.volume_path.is_empty() {
            return Err(CsiError::Missing("volume_path"));
        }
        let volume_path = PathBuf::from(&req.volume_path);
        let probe = volume_path.clone();
        let fs = match self
            .fs_call(
                "statvfs",
                &volume_path,
                move || match std::fs::symlink_metadata(&probe) {
                    Ok(_) => node_ops::fs_stats(&probe).map(Some),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(CsiError::io(&probe, e)),
                },
            )
            .await?
        {
            Some(fs) => fs,
            None => {
                return Err(CsiError::NotFound(format!(
                    "volume {:?} is not at {:?}",
                    req.volume_id, req.volume_path
                )));
            }
        };
        let stats = self.volume_stats(&req.volume_id, &fs).await?;
        Ok(NodeGetVolumeStatsResponse {
            usage: stats.usage,
            volume_condition: Some(VolumeCondition {
                abnormal: stats.abnormal.is_some(),
                message: stats.message,
            }),
        })
    }

    /// What `df` in this node's volumes shows, asked of the backend (and logged when it is
    /// not the quota) at each publish, and at the first stats call after a restart.
    async fn refresh_statfs(&self) -> Result<VolumeStatfs> {
        let view = self.driver.service.backend().volume_statfs().await?;
        if let VolumeStatfs::Filesystem { why } = &view {
            tracing::warn!(%why, "df in a pod shows the filesystem, not the volume's quota");
        }
        *self.driver.statfs.lock().unwrap_or_else(|p| p.into_inner()) = Some(view.clone());
        Ok(view)
    }

    async fn statfs(&self) -> Result<VolumeStatfs> {
        let known = self
            .driver
            .statfs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match known {
            Some(view) => Ok(view),
            None => self.refresh_statfs().await,
        }
    }

    /// The share's project quota; the filesystem's own numbers when the volume has no quota
    /// we know of (a static volume with a handle of its own).
    async fn volume_stats(&self, volume_id: &str, fs: &FsStats) -> Result<VolumeStats> {
        let service = &self.driver.service;
        let settings = service.settings();
        let capabilities = service.backend().capabilities();
        let inodes_enforced = capabilities.inode_quota == QuotaEnforcement::Enforced;
        let quota = if let Some((id, name)) = share_of(volume_id, settings) {
            let share = service
                .find(&name)
                .await?
                .filter(|s| s.project_id == id.project);
            if share.is_none() {
                return Ok(stats::filesystem_stats(
                    fs,
                    Some(format!("share {:?} is missing", name.as_str())),
                ));
            }
            let u = service.usage(&name).await?;
            QuotaFigures {
                project: id.project.get(),
                used_bytes: u.used_bytes,
                limit_bytes: u.limit_bytes,
                used_inodes: u.used_inodes,
                inode_limit: u.inode_limit,
                bytes_exceeded: u.bytes_exceeded,
                inodes_exceeded: u.inodes_exceeded,
                inodes_enforced,
            }
        } else if let Ok(id) = volume_id.parse::<VolumeId>()
            && id.fs_key == settings.fsname.as_str()
        {
            // A static volume named by a v1 ID: its directory and project quota, no record.
            let backend = service.backend();
            if backend.stat_dir(&id.path).await?.is_none() {
                return Ok(stats::filesystem_stats(
                    fs,
                    Some(format!("directory {} is missing", id.path.as_str())),
                ));
            }
            let q = backend.quota(&id.path, id.project).await?;
            QuotaFigures {
                project: id.project.get(),
                used_bytes: q.usage.used_bytes,
                limit_bytes: q.limits.block_hard_bytes,
                used_inodes: q.usage.inodes,
                inode_limit: (q.limits.inode_hard > 0).then_some(q.limits.inode_hard),
                bytes_exceeded: q.block_exceeded,
                inodes_exceeded: q.inode_exceeded,
                inodes_enforced,
            }
        } else {
            return Ok(stats::filesystem_stats(fs, None));
        };
        Ok(stats::quota_stats(
            fs,
            &quota,
            capabilities.quota_write_reserve,
            self.driver.quota_margin,
            &self.statfs().await?,
        ))
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let subject = req.volume_id.clone();
        self.driver
            .call("NodePublishVolume", &subject, self.publish(req))
            .await
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let subject = req.volume_id.clone();
        self.driver
            .call("NodeUnpublishVolume", &subject, self.unpublish(req))
            .await
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        let subject = req.volume_id.clone();
        self.driver
            .call("NodeGetVolumeStats", &subject, self.stats(req))
            .await
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        self.driver
            .call("NodeGetCapabilities", "", async {
                Ok(NodeGetCapabilitiesResponse {
                    capabilities: CAPABILITIES
                        .iter()
                        .map(|t| NodeServiceCapability {
                            r#type: Some(node_service_capability::Type::Rpc(
                                node_service_capability::Rpc { r#type: *t as i32 },
                            )),
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        let d = &self.driver;
        d.call("NodeGetInfo", "", async {
            Ok(NodeGetInfoResponse {
                node_id: d.node_id.clone(),
                max_volumes_per_node: 0,
                accessible_topology: None,
            })
        })
        .await
    }
}
