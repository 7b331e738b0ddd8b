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
//!
//! Block volumes (an image file in the share on a loop device, bound at a target file) are
//! published, unpublished and grown in [`block`].

mod block;

use std::os::unix::fs::FileTypeExt;
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
use crate::volume::{
    AccessKind, access_kind, check_capability, is_read_only_mode, mount_flags, node_volume,
    share_of,
};

pub const CAPABILITIES: &[rpc::Type] = &[
    rpc::Type::GetVolumeStats,
    rpc::Type::VolumeCondition,
    rpc::Type::ExpandVolume,
];

/// What NodeGetVolumeStats finds at a volume path.
enum VolumeAt {
    Nothing,
    /// A directory volume: its filesystem's figures.
    Filesystem(FsStats),
    /// A block volume: the device's size in bytes.
    Device(u64),
}

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
        let placement = crate::tenancy::check_publish(
            settings,
            enforced,
            &self.driver.node_id,
            &volume.path,
            volume.project,
            &req.volume_context,
        )
        .await?;
        let read_only = req.readonly || is_read_only_mode(cap);
        if read_only
            && volume.hsm.is_some()
            && !self
                .driver
                .service
                .backend()
                .capabilities()
                .restore_on_access
        {
            // Said at publish rather than as EPERM on the first read of a released file.
            return Err(CsiError::FailedPrecondition(format!(
                "volume {:?} is an HSM volume: on this backend a read-only publish cannot restore \
                 released files (the restore daemon's fanotify event descriptors are opened \
                 read-write, which a read-only mount refuses, so such reads would fail with \
                 EPERM); publish it read-write",
                req.volume_id
            )));
        }
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
            fileset: placement.fileset,
            expect_project: placement.expect_project,
        };
        if backend.stat_dir(&volume.path).await?.is_none() {
            return Err(CsiError::NotFound(format!(
                "volume {:?}: its directory {} does not exist",
                req.volume_id,
                volume.path.as_str()
            )));
        }
        let asked = access_kind(cap);
        if asked != volume.kind {
            return Err(CsiError::invalid(format!(
                "volume {:?} is a {} volume, published as {}",
                req.volume_id,
                volume.kind.name(),
                asked.name()
            )));
        }
        if volume.kind == AccessKind::Block {
            return self
                .publish_block(&req.volume_id, &volume, target, read_only)
                .await;
        }
        if let Some(encryption) = &volume.encryption {
            // A static volume's context is not checked by CreateVolume.
            crate::encryption::check_mount_mode(
                backend.capabilities().bind_from_shared_client_mount,
                volume.mount_mode,
            )?;
            self.unlock(encryption, &req.secrets, &req.volume_id, &target)
                .await?;
        }
        let key_holder = NodeTunables::holder(&req.volume_id, &target);
        let published = self
            .publish_unlocked(&req, &volume, request, target, read_only)
            .await;
        if published.is_err() && volume.encryption.is_some() {
            // A publish that fails holds no key.
            if let Err(e) = self.release_keys(&key_holder).await {
                tracing::warn!(volume_id = %req.volume_id, error = %e,
                    "could not let go of the key after a failed publish");
            }
        }
        published
    }

    /// The rest of a publish, once the volume's key (if any) is on the node.
    async fn publish_unlocked(
        &self,
        req: &NodePublishVolumeRequest,
        volume: &crate::volume::NodeVolume,
        request: MountRequest,
        target: PathBuf,
        read_only: bool,
    ) -> Result<NodePublishVolumeResponse> {
        let backend = Arc::clone(self.driver.service.backend());
        let source = backend.host_path(&volume.path);
        let probe = target.clone();
        let (target, created) = match self
            .fs_call("inspect", &target, move || node_ops::inspect(&probe))
            .await?
        {
            Target::Dir {
                path,
                mounted: true,
            } => {
                // A bind from the node's shared client mount is not of the host path the
                // controller sees: the backend checks it against its mount table.
                let from_shared = volume.mount_mode == MountMode::Bind
                    && backend.capabilities().bind_from_shared_client_mount;
                let (s, t) = (source.clone(), path.clone());
                if !from_shared
                    && !self
                        .fs_call("stat", &path, move || {
                            node_ops::mount_matches(&s, &t, read_only)
                        })
                        .await?
                {
                    return Err(CsiError::AlreadyExists(format!(
                        "target {} already has another mount (another volume, or read-only differs)",
                        path.display()
                    )));
                }
                // With a project to check, the backend checks what is mounted (the node may
                // have no mount of the share's host path to compare with).
                if from_shared || request.expect_project.is_some() {
                    backend
                        .mount(&MountRequest {
                            target: path.clone(),
                            ..request
                        })
                        .await?;
                }
                self.hold_node_state(req, &path, volume, false).await?;
                return Ok(NodePublishVolumeResponse {});
            }
            Target::Dir {
                path,
                mounted: false,
            } => (path, false),
            Target::File { .. } => return Err(node_ops::not_a_directory(&target)),
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
        if let Err(e) = self.hold_node_state(req, &target, volume, true).await {
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

    /// Fetches an encrypted volume's key from its KMIP server and adds it to the filesystem
    /// on this node, held for the publish at `target`. The key must be the one the volume's
    /// policy names; it is in locked memory only, and dropped (zeroed) once added.
    async fn unlock(
        &self,
        encryption: &crate::encryption::NodeEncryption,
        secrets: &std::collections::HashMap<String, String>,
        volume_id: &str,
        target: &Path,
    ) -> Result<()> {
        let client = crate::encryption::kmip_client(
            &encryption.kmip_endpoint,
            secrets,
            "node publish",
            crate::kmip::DEFAULT_TIMEOUT,
        )?;
        let started = std::time::Instant::now();
        let key = Arc::new(client.get_key(&encryption.kmip_key_id).await?);
        let backend = Arc::clone(self.driver.service.backend());
        let expected = encryption.identifier;
        self.driver
            .tunables
            .hold_resource(
                &encryption.hold_name(),
                &NodeTunables::holder(volume_id, target),
                || async move {
                    let added = backend.add_encryption_key(key).await?;
                    if added != expected {
                        // Not ours to keep: some other key under this volume's KMIP ID.
                        let _ = backend.remove_encryption_key(&added).await;
                        return Err(CsiError::FailedPrecondition(format!(
                            "the KMIP key is not the one volume {volume_id:?} is encrypted with (identifier {added}, the volume's is {expected})"
                        )));
                    }
                    Ok(())
                },
            )
            .await?;
        tracing::info!(volume_id, key_identifier = %expected, kmip_key_id = %encryption.kmip_key_id,
            ms = started.elapsed().as_millis() as u64, "volume key added");
        Ok(())
    }

    /// Lets go of the keys the publish `holder` held; the last holder of a key removes it
    /// from the filesystem, and what it encrypts reads as "Required key not available".
    async fn release_keys(&self, holder: &str) -> Result<()> {
        let backend = Arc::clone(self.driver.service.backend());
        self.driver
            .tunables
            .release_resources(holder, |name| {
                let backend = Arc::clone(&backend);
                async move {
                    let Some(id) = crate::encryption::held_key(&name) else {
                        return Ok(());
                    };
                    let removal = backend.remove_encryption_key(&id).await?;
                    if removal.files_busy {
                        tracing::warn!(key_identifier = %id,
                            "volume key removed, but files still open keep it in use until closed");
                    }
                    tracing::info!(key_identifier = %id, "volume key removed");
                    Ok(())
                }
            })
            .await
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
                let backend = Arc::clone(self.driver.service.backend());
                self.driver
                    .pcc
                    .release(&backend, &req.volume_id, &target, false)
                    .await?;
                self.release_node_state(&req.volume_id, &target).await?;
                self.release_keys(&NodeTunables::holder(&req.volume_id, &target))
                    .await?;
                return Ok(NodeUnpublishVolumeResponse {});
            }
            Target::File { path } => {
                self.unpublish_unmounted_block(&req.volume_id, &path)
                    .await?;
                tracing::info!(volume_id = %req.volume_id, target = %path.display(),
                    "block volume unpublished");
                return Ok(NodeUnpublishVolumeResponse {});
            }
            Target::Dir { path, mounted } => (path, mounted),
        };
        if mounted {
            // A device bound on a target file (a block volume), told from the mount table
            // and, only for an in-memory /dev, a stat: a dead server's mount is never
            // stat'ed. Its own call name, so a stat still hung on this path does not make
            // the unpublish UNAVAILABLE.
            let p = path.clone();
            if let Some((rdev, key)) = self
                .fs_call("device", &path, move || node_ops::mounted_device(&p))
                .await?
            {
                self.unpublish_block(&path, rdev, key).await?;
                tracing::info!(volume_id = %req.volume_id, target = %path.display(),
                    "block volume unpublished");
                return Ok(NodeUnpublishVolumeResponse {});
            }
        }
        // A cache is removed from its client mount before the mount goes.
        let backend = Arc::clone(self.driver.service.backend());
        self.driver
            .pcc
            .release(&backend, &req.volume_id, &path, mounted)
            .await?;
        if mounted {
            backend.unmount(&path).await?;
        }
        let p = path.clone();
        self.fs_call("rmdir", &path, move || node_ops::remove_target(&p))
            .await?;
        self.release_node_state(&req.volume_id, &path).await?;
        self.release_keys(&NodeTunables::holder(&req.volume_id, &path))
            .await?;
        tracing::info!(volume_id = %req.volume_id, target = %path.display(), "volume unpublished");
        Ok(NodeUnpublishVolumeResponse {})
    }

    /// What a publish at `target` holds on this node beyond its mount: the volume's client
    /// tunables, its Persistent Client Cache (see [`crate::pcc_node`]) and, for an HSM
    /// volume, its restore daemon (see [`crate::hsm_node`]). A fresh publish is all or
    /// nothing: when a step fails it lets go of what it took. A republish of a mounted target
    /// (kubelet's) lets go of nothing: the pod still uses what it holds.
    async fn hold_node_state(
        &self,
        req: &NodePublishVolumeRequest,
        target: &Path,
        volume: &crate::volume::NodeVolume,
        fresh: bool,
    ) -> Result<()> {
        let holder = NodeTunables::holder(&req.volume_id, target);
        let backend = Arc::clone(self.driver.service.backend());
        let held = async {
            if !volume.tunables.is_empty() {
                self.driver
                    .tunables
                    .hold(backend.as_ref(), &holder, &volume.tunables)
                    .await?;
            }
            if let Some(pcc) = crate::volume::node_pcc(&req.volume_context)? {
                self.hold_pcc(req, target, volume, &pcc, &backend).await?;
            }
            if let Some(hsm) = &volume.hsm {
                self.driver
                    .restore
                    .hold(
                        &backend,
                        &req.volume_id,
                        &holder,
                        &volume.path,
                        hsm,
                        &req.secrets,
                    )
                    .await?;
            }
            Ok(())
        }
        .await;
        if held.is_err() && fresh {
            // Each release is a no-op for what this publish did not take.
            if let Err(undo) = self
                .driver
                .pcc
                .release(&backend, &req.volume_id, target, true)
                .await
            {
                tracing::warn!(error = %undo, "could not remove the PCC registration");
            }
            if let Err(undo) = self
                .driver
                .tunables
                .release(backend.as_ref(), &holder)
                .await
            {
                tracing::warn!(error = %undo, "could not let go of the client tunables");
            }
        }
        held
    }

    /// Registers the volume's PCC on the client mount at `target` (see [`crate::pcc_node`]).
    async fn hold_pcc(
        &self,
        req: &NodePublishVolumeRequest,
        target: &Path,
        volume: &crate::volume::NodeVolume,
        pcc: &crate::params::PccParams,
        backend: &Arc<dyn backend::Filesystem>,
    ) -> Result<()> {
        let project = volume.project.ok_or_else(|| {
            CsiError::invalid(format!(
                "volume {:?}: a Persistent Client Cache needs the volume's project ID",
                req.volume_id
            ))
        })?;
        let context = req
            .volume_context
            .iter()
            .filter(|(k, _)| crate::params::keys::PCC.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.driver
            .pcc
            .hold(backend, &req.volume_id, target, pcc, context, project)
            .await
    }

    /// Lets go of what the publish at `target` held: the last holder of a tunable puts the
    /// old values back, the last publish of an HSM volume stops its restore daemon.
    async fn release_node_state(&self, volume_id: &str, target: &Path) -> Result<()> {
        let holder = NodeTunables::holder(volume_id, target);
        let backend = Arc::clone(self.driver.service.backend());
        self.driver.restore.release(volume_id, &holder).await?;
        self.driver
            .tunables
            .release(backend.as_ref(), &holder)
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
                    Ok(meta) if meta.file_type().is_block_device() => {
                        node_ops::device_size(&probe).map(VolumeAt::Device)
                    }
                    Ok(_) => node_ops::fs_stats(&probe).map(VolumeAt::Filesystem),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(VolumeAt::Nothing),
                    Err(e) => Err(CsiError::io(&probe, e)),
                },
            )
            .await?
        {
            VolumeAt::Filesystem(fs) => fs,
            VolumeAt::Device(size) => {
                let stats = self.device_stats(&req.volume_id, size).await?;
                return Ok(NodeGetVolumeStatsResponse {
                    usage: stats.usage,
                    volume_condition: Some(VolumeCondition {
                        abnormal: stats.abnormal.is_some(),
                        message: stats.message,
                    }),
                });
            }
            VolumeAt::Nothing => {
                return Err(CsiError::NotFound(format!(
                    "volume {:?} is not at {:?}",
                    req.volume_id, req.volume_path
                )));
            }
        };
        let mut stats = self.volume_stats(&req.volume_id, &fs).await?;
        // An HSM volume's message says what its last policy pass found (released bytes
        // first). A status that cannot be read only leaves it out: stats stay answerable.
        match self.driver.restore.status(&req.volume_id).await {
            Ok(Some(status)) => stats.message = format!("{}; {}", stats.message, status.summary()),
            Ok(None) => {}
            Err(e) => tracing::debug!(volume_id = %req.volume_id, error = %e, "no HSM status"),
        }
        Ok(NodeGetVolumeStatsResponse {
            usage: stats.usage,
            volume_condition: Some(VolumeCondition {
                abnormal: stats.abnormal.is_some(),
                message: stats.message,
            }),
        })
    }

    /// A block volume's stats: the device's size, and as used what its image has allocated
    /// (the share's quota usage). A full image is a written device, not a full volume: no
    /// quota condition applies (the filesystem inside is the pod's).
    async fn device_stats(&self, volume_id: &str, size: u64) -> Result<VolumeStats> {
        let service = &self.driver.service;
        let Some((id, name)) = share_of(volume_id, service.settings()) else {
            return Ok(stats::device_stats(size, None, None));
        };
        let share = service
            .find(&name)
            .await?
            .filter(|s| s.project_id == id.project);
        if share.is_none() {
            return Ok(stats::device_stats(
                size,
                None,
                Some(format!("share {:?} is missing", name.as_str())),
            ));
        }
        let used = service.usage(&name).await?.used_bytes;
        Ok(stats::device_stats(size, Some(used), None))
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

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let subject = req.volume_id.clone();
        self.driver
            .call("NodeExpandVolume", &subject, self.expand(req))
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
