//! The Controller service: shares made, deleted, grown and listed through the share service.
//!
//! The filesystem is the only state. A volume ID names its share
//! (`v1/<fsname>/<project>/<prefix>/<name>`), and the share's record keeps the request name
//! and reclaim policy as labels, so a restarted or second replica answers every call the same.

use std::sync::Arc;

use share::{CreateShare, DeleteMode, Share};
use tonic::{Request, Response, Status};

use super::Driver;
use crate::capacity;
use crate::encryption;
use crate::error::{CsiError, Result};
use crate::grpc::controller_server::Controller;
use crate::grpc::controller_service_capability::{self, rpc};
use crate::grpc::*;
use crate::hsm_volume::{self, ImportSource};
use crate::params::{ReclaimPolicy, VolumeParams, labels};
use crate::volume::{
    AccessKind, access_kind, access_kind_of, block_context, check_capabilities, check_capability,
    context_for, hsm_context, pcc_context, share_of, tunables_context,
};

/// What the controller offers. No PUBLISH_UNPUBLISH (nothing to attach), no snapshots.
pub const CAPABILITIES: &[rpc::Type] = &[
    rpc::Type::CreateDeleteVolume,
    rpc::Type::ExpandVolume,
    rpc::Type::ListVolumes,
    rpc::Type::GetCapacity,
];

const TOKEN_PREFIX: &str = "v1:";

pub struct ControllerService {
    driver: Arc<Driver>,
}

impl ControllerService {
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }

    fn volume_key(volume_id: &str) -> String {
        format!("volume:{volume_id}")
    }

    /// The share a volume ID names, if it exists and is the same share (same project) the ID
    /// was made for: a later share that reused the name is not this volume.
    async fn lookup(&self, volume_id: &str) -> Result<Option<Share>> {
        let Some((id, name)) = share_of(volume_id, self.driver.service.settings()) else {
            return Ok(None);
        };
        Ok(self
            .driver
            .service
            .find(&name)
            .await?
            .filter(|share| share.project_id == id.project))
    }

    async fn lookup_existing(&self, volume_id: &str) -> Result<Share> {
        self.lookup(volume_id)
            .await?
            .ok_or_else(|| CsiError::NotFound(format!("volume {volume_id:?} does not exist")))
    }

    fn volume(&self, share: &Share, mount_mode: &str, extra: Vec<(String, String)>) -> Volume {
        Volume {
            capacity_bytes: capacity::to_i64(share.size_bytes),
            volume_id: share.volume_id.to_string(),
            volume_context: context_for(share, self.driver.service.settings(), mount_mode, extra),
            content_source: None,
            accessible_topology: Vec::new(),
        }
    }

    async fn create(&self, req: CreateVolumeRequest) -> Result<CreateVolumeResponse> {
        if req.name.is_empty() {
            return Err(CsiError::Missing("name"));
        }
        let kind = access_kind_of(&req.volume_capabilities)?;
        if req.volume_content_source.is_some() {
            return Err(CsiError::invalid(
                "volume content sources (snapshots, clones) are not supported",
            ));
        }
        if !req.mutable_parameters.is_empty() {
            return Err(CsiError::invalid(
                "mutable parameters (VolumeAttributesClass) are not supported",
            ));
        }
        let params = VolumeParams::parse(&req.parameters)?;
        if !params.tunables.is_empty()
            && !self.driver.service.backend().capabilities().client_tunables
        {
            return Err(CsiError::Unsupported(format!(
                "{} needs a filesystem client with tunables (Lustre); the {} backend has none",
                crate::params::keys::CLIENT_TUNABLES,
                self.driver.service.backend().kind_name()
            )));
        }
        if params.pcc.is_some() && !self.driver.service.backend().capabilities().pcc {
            return Err(CsiError::Unsupported(format!(
                "{}=\"true\" asks for a Persistent Client Cache, which this driver's {} \
                 backend has not (Lustre clients only)",
                crate::params::keys::HOT_NODES,
                self.driver.service.backend().kind_name()
            )));
        }
        if params.encryption.is_some() && !self.driver.service.backend().capabilities().encryption {
            return Err(CsiError::Unsupported(format!(
                "{}: the {} backend's filesystem has no fscrypt here (on local: ext4 made with \
                 -O encrypt)",
                crate::params::keys::ENCRYPTION,
                self.driver.service.backend().kind_name()
            )));
        }
        if params.encryption.is_some() {
            // Before a key or a share is made: a Lustre client older than 2.14, say.
            self.driver.service.backend().check_encryption().await?;
            encryption::check_mount_mode(
                self.driver
                    .service
                    .backend()
                    .capabilities()
                    .bind_from_shared_client_mount,
                params.mount_mode,
            )?;
        }
        let size = capacity::size_for(req.capacity_range.as_ref())?;
        let (required, limit) = match &req.capacity_range {
            Some(range) => capacity::validate(range)?,
            None => (0, 0),
        };
        if kind == AccessKind::Block {
            check_block_possible(
                &self.driver,
                params.hsm.is_some(),
                params.layout.is_some(),
                params.encryption.is_some(),
            )?;
        }
        let tenant = crate::tenancy::volume_tenant(
            &req.parameters,
            &params.metadata,
            self.driver.service.settings(),
            self.driver.namespace_tenants.get().map(|t| t.as_ref()),
        )?
        .map(|t| t.name.to_string());
        let name = params.share_name(&req.name)?;
        let mut wanted_labels = params.labels(&req.name);
        if kind == AccessKind::Block {
            wanted_labels.insert(labels::VOLUME_MODE.into(), AccessKind::BLOCK.into());
        }
        let claims = self
            .driver
            .inflight
            .claim([format!("create:{}", req.name), format!("share:{name}")])?;
        let service = &self.driver.service;
        let existing = service.find(&name).await?;
        // The volume's key first: the one its share names when an earlier call made the
        // share, else found by name (a call cut short after making it) or made; so a retry
        // never makes a second key, and the labels come out the same. From here on, a
        // failure undoes what this call made: its share, then the key unless a share
        // (finished earlier, or in the trash) names it.
        let mut claims = Some(claims);
        let mut undo = None;
        let kmip = match &params.encryption {
            Some(encryption) => {
                let client = encryption::kmip_client(
                    &encryption.kmip_endpoint,
                    &req.secrets,
                    "provisioner",
                    crate::kmip::DEFAULT_TIMEOUT,
                )?;
                // Only a key of the same server: an ID means nothing on another one.
                let recorded = existing
                    .as_ref()
                    .filter(|s| s.labels.get(labels::REQUEST_NAME) == Some(&req.name))
                    .filter(|s| {
                        s.labels.get(encryption::labels::KMIP_ENDPOINT)
                            == Some(&encryption.kmip_endpoint)
                    })
                    .and_then(|s| s.labels.get(encryption::labels::KMIP_KEY_ID))
                    .cloned();
                let key_id = match recorded {
                    Some(id) => id,
                    None => {
                        let key = client
                            .find_or_create_key(&encryption::kmip_key_name(&req.name))
                            .await?;
                        tracing::info!(request = %req.name, kmip_key_id = %key.id,
                            created = key.created, "volume key");
                        key.id
                    }
                };
                wanted_labels.insert(encryption::labels::KMIP_KEY_ID.into(), key_id.clone());
                if let Some(claims) = claims.take() {
                    undo = Some(encryption::CreateUndo::new(
                        Arc::clone(service),
                        client.clone(),
                        key_id.clone(),
                        req.name.clone(),
                        claims,
                    ));
                }
                Some((client, key_id))
            }
            None => None,
        };
        let result: Result<CreateVolumeResponse> = async {
            let import = match &params.hsm {
                Some(hsm) => hsm.import_from.as_deref().map(|prefix| ImportSource {
                    hsm,
                    prefix,
                    secrets: &req.secrets,
                    metrics: self.driver.metrics.hsm_volumes(),
                }),
                None => None,
            };
            let mut import_done = false;
            if let Some(source) = &import {
                import_done = match &existing {
                    Some(share) if share.state == share::ShareState::Ready => {
                        hsm_volume::imported(service, share).await?
                    }
                    _ => false,
                };
                if !import_done {
                    // Before anything is made: a wrong prefix or an unreachable store leaves
                    // nothing behind.
                    source.check().await?;
                }
            }
            if let Some(undo) = undo.as_mut()
                && existing
                    .as_ref()
                    .is_none_or(|s| s.state != share::ShareState::Ready)
            {
                // Made (or finished) by this call: a failure from here removes it.
                undo.share_made(name.clone());
            }
            let share = match existing {
                Some(existing) => {
                    check_compatible(
                        &existing,
                        &req.name,
                        &wanted_labels,
                        required,
                        limit,
                        params.inode_limit,
                    )?;
                    if existing.state == share::ShareState::Ready {
                        existing
                    } else {
                        // A create that crashed half-way: the share service finishes it.
                        service
                            .create_in(
                                CreateShare {
                                    name: name.clone(),
                                    size_bytes: existing.size_bytes,
                                    inode_limit: existing.inode_limit,
                                    labels: existing.labels.clone(),
                                    layout: params.layout.clone(),
                                    compression: params.compression,
                                },
                                tenant.as_deref(),
                            )
                            .await?
                    }
                }
                None => {
                    service
                        .create_in(
                            CreateShare {
                                name: name.clone(),
                                size_bytes: size,
                                inode_limit: params.inode_limit,
                                labels: wanted_labels.clone(),
                                layout: params.layout.clone(),
                                compression: params.compression,
                            },
                            tenant.as_deref(),
                        )
                        .await?
                }
            };
            // Another replica may have made the share first, for another request.
            check_compatible(
                &share,
                &req.name,
                &wanted_labels,
                required,
                limit,
                params.inode_limit,
            )?;
            let encryption_context = match (&params.encryption, &kmip) {
                (Some(encryption), Some((client, key_id))) => {
                    let backend = service.backend();
                    let identifier = match backend.encryption_policy(&share.path).await? {
                        Some(identifier) => identifier,
                        None => {
                            let key = std::sync::Arc::new(client.get_key(key_id).await?);
                            backend.encrypt_empty_dir(&share.path, key).await?
                        }
                    };
                    tracing::info!(request = %req.name, share = %name, kmip_key_id = %key_id,
                        key_identifier = %identifier, "volume directory encrypted");
                    encryption::volume_context(encryption, key_id, &identifier)
                }
                _ => Vec::new(),
            };
            if let Some(source) = import.as_ref().filter(|_| !import_done) {
                match hsm_volume::import(service, &share, source, self.driver.hsm_import_timeout).await
                {
                    Ok(report) => {
                        tracing::info!(request = %req.name, share = %name, files = report.files,
                            dirs = report.dirs, symlinks = report.symlinks, skipped = report.skipped,
                            bytes = report.bytes, ms = report.elapsed_ms, "volume imported as released stubs");
                    }
                    Err(error) if error.code() == tonic::Code::InvalidArgument => {
                        // A final error: the provisioner takes it that no volume exists, so the
                        // half-filled share (never returned to anyone) goes.
                        if let Err(purge) = service.delete(&share.name, DeleteMode::Purge).await {
                            tracing::warn!(share = %name, error = %purge,
                                "could not remove the share of a failed import");
                        }
                        return Err(error);
                    }
                    Err(error) => return Err(error),
                }
            }
            if kind == AccessKind::Block {
                // After the share (and its quota), so the image is inside the quota from the
                // start; a retry after a crash between the two makes it here.
                service
                    .backend()
                    .ensure_block_image(&share.path, share.size_bytes)
                    .await?;
            }
            let mut extra = hsm_context(params.hsm.as_ref());
            extra.extend(block_context(kind));
            extra.extend(tunables_context(&params.tunables));
            extra.extend(pcc_context(params.pcc.as_ref()));
            extra.extend(encryption_context);
            let volume = self.volume(&share, params.mount_mode.as_str(), extra);
            if volume.volume_id.len() > 128 {
                tracing::warn!(volume_id = %volume.volume_id,
                    "volume ID is longer than the 128 bytes the CSI spec recommends; use a shorter subdirTemplate");
            }
            tracing::info!(request = %req.name, share = %name, volume_id = %volume.volume_id,
                size = share.size_bytes, "volume ready");
            Ok(CreateVolumeResponse {
                volume: Some(volume),
            })
        }
        .await;
        drop(claims);
        match (result, undo) {
            (Ok(response), Some(undo)) => {
                undo.keep();
                Ok(response)
            }
            (Err(error), Some(undo)) => Err(undo.undo(error).await),
            (result, None) => result,
        }
    }

    async fn delete(&self, req: DeleteVolumeRequest) -> Result<DeleteVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::Missing("volume_id"));
        }
        let _guard = self
            .driver
            .inflight
            .claim([Self::volume_key(&req.volume_id)])?;
        let Some(share) = self.lookup(&req.volume_id).await? else {
            // Its data is gone; its key may still wait for the erase (the key server failed).
            if let Some((_, name)) = share_of(&req.volume_id, self.driver.service.settings()) {
                let service = &self.driver.service;
                if let Some(erase) =
                    encryption::PendingErase::find(service, &name, &req.volume_id).await?
                {
                    erase.finish(service, &name, &req.secrets).await?;
                    return Ok(DeleteVolumeResponse {});
                }
            }
            tracing::info!(volume_id = %req.volume_id, "volume does not exist (or is not ours): nothing to delete");
            return Ok(DeleteVolumeResponse {});
        };
        let _share_guard = self
            .driver
            .inflight
            .claim([format!("share:{}", share.name)])?;
        let service = &self.driver.service;
        match ReclaimPolicy::from_labels(&share.labels)? {
            ReclaimPolicy::Retain => {
                tracing::info!(volume_id = %req.volume_id, share = %share.name,
                    "reclaim policy retain: the share and its data are kept");
            }
            ReclaimPolicy::Delete => {
                let erase = match (
                    share.labels.get(encryption::labels::KMIP_ENDPOINT),
                    share.labels.get(encryption::labels::KMIP_KEY_ID),
                ) {
                    (Some(endpoint), Some(key_id)) => {
                        // The credentials are checked before any data goes.
                        encryption::kmip_client(
                            endpoint,
                            &req.secrets,
                            "provisioner",
                            crate::kmip::DEFAULT_TIMEOUT,
                        )?;
                        let erase = encryption::PendingErase {
                            volume_id: req.volume_id.clone(),
                            kmip_endpoint: endpoint.clone(),
                            kmip_key_id: key_id.clone(),
                        };
                        erase.record(service, &share.name).await?;
                        Some(erase)
                    }
                    _ => None,
                };
                service.delete(&share.name, DeleteMode::Purge).await?;
                if share.labels.contains_key(labels::HSM_STORE) {
                    crate::hsm_status::remove(service, &share.name).await?;
                    // The import's series on the controller's /metrics go with the volume.
                    self.driver.metrics.hsm_volumes().forget(&req.volume_id);
                }
                if share.labels.contains_key(labels::HSM_IMPORT_FROM) {
                    hsm_volume::forget(service, &share.name).await?;
                }
                if let Some(erase) = erase {
                    // Crypto-erase, after the data is gone: any copy left is unreadable.
                    erase.finish(service, &share.name, &req.secrets).await?;
                }
            }
            ReclaimPolicy::Trash { ttl_secs } => {
                if let (Some(endpoint), Some(key_id)) = (
                    share.labels.get(encryption::labels::KMIP_ENDPOINT),
                    share.labels.get(encryption::labels::KMIP_KEY_ID),
                ) {
                    // The key stays while the trashed data may come back; this record lets
                    // the controller destroy it once the trash is purged (whoever purges).
                    encryption::PendingErase {
                        volume_id: req.volume_id.clone(),
                        kmip_endpoint: endpoint.clone(),
                        kmip_key_id: key_id.clone(),
                    }
                    .record_for_trash(service, share.project_id)
                    .await?;
                }
                service
                    .delete(&share.name, DeleteMode::Trash { ttl_secs })
                    .await?
            }
        }
        Ok(DeleteVolumeResponse {})
    }

    async fn expand(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::Missing("volume_id"));
        }
        let range = req
            .capacity_range
            .as_ref()
            .ok_or(CsiError::Missing("capacity_range"))?;
        let (required, limit) = capacity::validate(range)?;
        if let Some(cap) = &req.volume_capability {
            check_capability(cap)?;
        }
        let _guard = self
            .driver
            .inflight
            .claim([Self::volume_key(&req.volume_id)])?;
        let share = self.lookup_existing(&req.volume_id).await?;
        let kind = kind_of_share(&share);
        if let Some(cap) = &req.volume_capability
            && access_kind(cap) != kind
        {
            return Err(CsiError::invalid(format!(
                "volume {:?} is a {} volume, not {}",
                req.volume_id,
                kind.name(),
                access_kind(cap).name()
            )));
        }
        let grown = if required <= share.size_bytes {
            share
        } else {
            let size = capacity::fit(required, limit)?;
            let grown = self.driver.service.extend(&share.name, size).await?;
            tracing::info!(volume_id = %req.volume_id, from = share.size_bytes, to = grown.size_bytes, "volume expanded");
            grown
        };
        if kind == AccessKind::Block {
            // The quota first, then the image, so the image never outgrows its quota; also
            // on a retry that finds the quota grown already.
            self.driver
                .service
                .backend()
                .ensure_block_image(&grown.path, grown.size_bytes)
                .await?;
        }
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: capacity::to_i64(grown.size_bytes),
            // A directory's quota is its size; a block device must learn its new size on
            // the node (LOOP_SET_CAPACITY), and its filesystem is the pod's to resize.
            node_expansion_required: kind == AccessKind::Block,
        })
    }

    async fn validate(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::Missing("volume_id"));
        }
        if req.volume_capabilities.is_empty() {
            return Err(CsiError::Missing("volume_capabilities"));
        }
        let share = self.lookup_existing(&req.volume_id).await?;
        let kind = kind_of_share(&share);
        let problem = access_kind_of(&req.volume_capabilities)
            .and_then(|asked| {
                if asked == kind {
                    Ok(())
                } else {
                    Err(CsiError::invalid(format!(
                        "volume {:?} is a {} volume, not {}",
                        req.volume_id,
                        kind.name(),
                        asked.name()
                    )))
                }
            })
            .err()
            .or_else(|| {
                (!req.parameters.is_empty())
                    .then(|| VolumeParams::parse(&req.parameters).err())
                    .flatten()
            })
            .or_else(|| {
                (!req.mutable_parameters.is_empty())
                    .then(|| CsiError::invalid("mutable parameters are not supported"))
            });
        Ok(match problem {
            Some(problem) => ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: problem.to_string(),
            },
            None => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            },
        })
    }

    async fn list(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse> {
        if req.max_entries < 0 {
            return Err(CsiError::invalid(format!(
                "max_entries {} is negative",
                req.max_entries
            )));
        }
        let after = if req.starting_token.is_empty() {
            None
        } else {
            Some(decode_token(&req.starting_token).ok_or_else(|| {
                CsiError::Aborted(format!(
                    "starting_token {:?} is not one this driver issued",
                    req.starting_token
                ))
            })?)
        };
        let mut shares: Vec<Share> = self
            .driver
            .service
            .list()
            .await?
            .into_iter()
            .filter(|s| s.state == share::ShareState::Ready)
            .filter(|s| after.as_deref().is_none_or(|a| s.name.as_str() > a))
            .collect();
        shares.sort_by(|a, b| a.name.cmp(&b.name));
        let max = if req.max_entries == 0 {
            usize::MAX
        } else {
            req.max_entries as usize
        };
        let next_token = if shares.len() > max {
            shares.truncate(max);
            shares
                .last()
                .map(|s| encode_token(s.name.as_str()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let entries = shares
            .iter()
            .map(|share| {
                let mode = share
                    .labels
                    .get(labels::MOUNT_MODE)
                    .map_or("direct", String::as_str);
                list_volumes_response::Entry {
                    volume: Some(self.volume(share, mode, block_context(kind_of_share(share)))),
                    status: None,
                }
            })
            .collect();
        Ok(ListVolumesResponse {
            entries,
            next_token,
        })
    }

    async fn capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse> {
        let block_impossible = || {
            req.volume_capabilities
                .iter()
                .any(|c| access_kind(c) == AccessKind::Block)
                && !self.driver.service.backend().capabilities().block_volumes
        };
        if !req.volume_capabilities.is_empty()
            && (check_capabilities(&req.volume_capabilities).is_err() || block_impossible())
        {
            // Capacity for volumes we cannot make is none.
            return Ok(GetCapacityResponse {
                available_capacity: 0,
                maximum_volume_size: None,
                minimum_volume_size: None,
            });
        }
        if !req.parameters.is_empty() {
            VolumeParams::parse(&req.parameters)?;
        }
        let report = self.driver.service.capacity().await?;
        Ok(GetCapacityResponse {
            available_capacity: capacity::to_i64(report.available_bytes),
            maximum_volume_size: None,
            minimum_volume_size: Some(capacity::KIB as i64),
        })
    }
}

/// A share's access kind, from the label CreateVolume put on it.
fn kind_of_share(share: &Share) -> AccessKind {
    match share.labels.get(labels::VOLUME_MODE).map(String::as_str) {
        Some(AccessKind::BLOCK) => AccessKind::Block,
        _ => AccessKind::Mount,
    }
}

/// Whether a block volume can be made here: the backend keeps block images, and the
/// volume asks for nothing that only a directory has.
fn check_block_possible(driver: &Driver, hsm: bool, layout: bool, encryption: bool) -> Result<()> {
    if !driver.service.backend().capabilities().block_volumes {
        return Err(CsiError::invalid(format!(
            "block volumes are not supported on the {} backend",
            driver.service.backend().kind_name()
        )));
    }
    if hsm {
        return Err(CsiError::invalid(
            "hsm* parameters are for directory volumes: a block volume's data is one image file",
        ));
    }
    if layout {
        return Err(CsiError::invalid(
            "stripe parameters are for directory volumes, not block volumes",
        ));
    }
    if encryption {
        // The image would have to be made in the encrypted directory, which the
        // controller never unlocks (ENOKEY, every retry).
        return Err(CsiError::invalid(
            "encryption is for directory volumes: a block volume's image cannot be made in \
             its encrypted directory",
        ));
    }
    Ok(())
}

/// Whether an existing share can answer a create: the same request, the same parameters,
/// and a size inside the requested range. Anything else is ALREADY_EXISTS.
fn check_compatible(
    share: &Share,
    request_name: &str,
    wanted_labels: &std::collections::BTreeMap<String, String>,
    required: u64,
    limit: u64,
    inode_limit: Option<u64>,
) -> Result<()> {
    let owner = share.labels.get(labels::REQUEST_NAME).map(String::as_str);
    if owner != Some(request_name) {
        return Err(CsiError::AlreadyExists(format!(
            "share {:?} already exists for {}; pick a subdirTemplate that gives each volume its own name",
            share.name.as_str(),
            owner.map_or_else(
                || "something other than this driver".to_string(),
                |o| format!("volume request {o:?}")
            ),
        )));
    }
    if &share.labels != wanted_labels {
        return Err(CsiError::AlreadyExists(format!(
            "volume {request_name:?} already exists with other parameters"
        )));
    }
    if share.size_bytes < required || (limit > 0 && share.size_bytes > limit) {
        return Err(CsiError::AlreadyExists(format!(
            "volume {request_name:?} already exists with {} bytes, outside the requested range",
            share.size_bytes
        )));
    }
    if share.inode_limit != inode_limit {
        return Err(CsiError::AlreadyExists(format!(
            "volume {request_name:?} already exists with inode limit {:?}",
            share.inode_limit
        )));
    }
    Ok(())
}

fn encode_token(name: &str) -> String {
    let mut out = String::from(TOKEN_PREFIX);
    for b in name.bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn decode_token(token: &str) -> Option<String> {
    let hex = token.strip_prefix(TOKEN_PREFIX)?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        let subject = req.name.clone();
        self.driver
            .call("CreateVolume", &subject, self.create(req))
            .await
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        let subject = req.volume_id.clone();
        self.driver
            .call("DeleteVolume", &subject, self.delete(req))
            .await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        let subject = req.volume_id.clone();
        self.driver
            .call("ValidateVolumeCapabilities", &subject, self.validate(req))
            .await
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        self.driver
            .call("ListVolumes", "", self.list(request.into_inner()))
            .await
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        self.driver
            .call("GetCapacity", "", self.capacity(request.into_inner()))
            .await
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        self.driver
            .call("ControllerGetCapabilities", "", async {
                Ok(ControllerGetCapabilitiesResponse {
                    capabilities: CAPABILITIES
                        .iter()
                        .map(|t| ControllerServiceCapability {
                            r#type: Some(controller_service_capability::Type::Rpc(
                                controller_service_capability::Rpc { r#type: *t as i32 },
                            )),
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let subject = req.volume_id.clone();
        self.driver
            .call("ControllerExpandVolume", &subject, self.expand(req))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        for name in ["pvc-1", "team a", "ünï"] {
            assert_eq!(decode_token(&encode_token(name)).as_deref(), Some(name));
        }
        for bad in ["invalid-token", "v1:", "v1:zz", "v1:abc", "v1:ff"] {
            assert_eq!(decode_token(bad), None, "{bad}");
        }
    }
}
