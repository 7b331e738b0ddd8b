//! Creating a share (and rolling back a failed create), and adopting an existing directory as one.

use lustre_model::{ProjectId, ShareName};

use super::ShareService;
use crate::allocator;
use crate::lock::now_secs;
use crate::model::*;
use crate::record::Record;
use crate::{Result, ShareError};

impl ShareService {
    // ---------- create ----------

    /// Creates a share, or returns it when it exists with the same size and inode limit.
    pub async fn create(&self, request: CreateShare) -> Result<Share> {
        self.create_in(request, None).await
    }

    /// [`create`](Self::create) for a tenant: the share lives under the tenant's root, and
    /// the tenant's shares together stay within its quota.
    pub async fn create_in(&self, request: CreateShare, tenant: Option<&str>) -> Result<Share> {
        Self::check_name(&request.name)?;
        let tenant = match tenant {
            None => {
                self.check_not_a_tenant_root(&request.name)?;
                None
            }
            Some(name) => Some(self.settings.tenant(name).cloned().ok_or_else(|| {
                ShareError::invalid(format!("tenant {name:?} is not configured"))
            })?),
        };
        if request.size_bytes == 0 {
            return Err(ShareError::invalid("size must be greater than zero"));
        }
        if request.inode_limit == Some(0) {
            return Err(ShareError::invalid("inode limit must be greater than zero"));
        }
        // Refused before anything is made: a share without the layout asked for would be
        // a silent downgrade.
        if request.layout.is_some() && !self.fs.capabilities().striping {
            return Err(ShareError::Backend(backend::BackendError::unsupported(
                "striping",
                format!(
                    "share {} asks for a stripe layout, and the {} backend has no stripes (Lustre has)",
                    request.name,
                    self.fs.kind_name()
                ),
            )));
        }
        if let Some(compression) = &request.compression {
            self.fs.check_compression(compression)?;
        }
        let name = request.name.clone();
        self.locked(&name, async || {
            let mut existing = self.read_record(&name).await?;
            if let Some(record) = &existing
                && record.state == ShareState::Deleting
            {
                self.finish_delete(record.clone()).await?;
                existing = None;
            }
            let record = match existing {
                Some(record) => {
                    let wanted = tenant.as_ref().map(|t| &t.name);
                    if record.tenant.as_ref() != wanted {
                        return Err(ShareError::Conflict {
                            share: name.to_string(),
                            message: format!(
                                "it belongs to tenant {:?}, not {:?}",
                                record.tenant.as_ref().map(|t| t.as_str()),
                                wanted.map(|t| t.as_str())
                            ),
                        });
                    }
                    if record.compression != request.compression {
                        return Err(ShareError::Conflict {
                            share: name.to_string(),
                            message: format!(
                                "it has compression {:?}, not {:?}",
                                record.compression, request.compression
                            ),
                        });
                    }
                    if record.layout != request.layout {
                        return Err(ShareError::Conflict {
                            share: name.to_string(),
                            message: format!(
                                "it has layout {:?}, not {:?}",
                                record.layout, request.layout
                            ),
                        });
                    }
                    if record.size_bytes != request.size_bytes
                        || record.inode_limit != request.inode_limit
                    {
                        return Err(ShareError::Conflict {
                            share: name.to_string(),
                            message: format!(
                                "it has {} bytes and inode limit {:?}, not {} and {:?}",
                                record.size_bytes,
                                record.inode_limit,
                                request.size_bytes,
                                request.inode_limit
                            ),
                        });
                    }
                    if record.state == ShareState::Ready {
                        return Ok(self.to_share(&record));
                    }
                    record // creating: a crashed create, finished below
                }
                None => {
                    let tenant_root = match &tenant {
                        Some(t) => Some(self.ensure_tenant_root(t).await?.0),
                        None => None,
                    };
                    let dir = match &tenant_root {
                        Some(root) => root.join(&name),
                        None => self.layout.share_dir(&name),
                    };
                    if self.fs.stat_dir(&dir).await?.is_some() {
                        return Err(ShareError::Conflict {
                            share: name.to_string(),
                            message: "a directory of that name exists and is not a lustrekit share"
                                .into(),
                        });
                    }
                    // Held until the record is written, so two creates cannot both fit.
                    let tenant_lock = match &tenant {
                        Some(t) => Some(
                            self.check_tenant_room(&t.name, &name, request.size_bytes)
                                .await?,
                        ),
                        None => None,
                    };
                    let project =
                        allocator::allocate(self.fs(), &self.layout, &self.settings.project_ids)
                            .await;
                    let project = match project {
                        Ok(project) => project,
                        Err(e) => {
                            if let Some(held) = tenant_lock {
                                held.release().await?;
                            }
                            return Err(e);
                        }
                    };
                    let record = Record {
                        name: name.clone(),
                        project_id: project,
                        size_bytes: request.size_bytes,
                        inode_limit: request.inode_limit,
                        state: ShareState::Creating,
                        access: Vec::new(),
                        labels: request.labels.clone(),
                        created_at: now_secs(),
                        trash_id: None,
                        deleted_at: None,
                        expires_at: None,
                        layout: request.layout.clone(),
                        compression: request.compression,
                        tenant: tenant.as_ref().map(|t| t.name.clone()),
                        tenant_root,
                    };
                    let written = self.write_record(&record).await;
                    if let Some(held) = tenant_lock {
                        held.release().await?;
                    }
                    if let Err(e) = written {
                        let _ = allocator::release(self.fs(), &self.layout, project).await;
                        return Err(e);
                    }
                    record
                }
            };
            match self.finish_create(record.clone()).await {
                Ok(ready) => Ok(self.to_share(&ready)),
                Err(e) => {
                    tracing::warn!(share = %name, error = %e, "create failed; rolling back");
                    if let Err(rollback) = self.roll_back_create(&record).await {
                        tracing::error!(share = %name, error = %rollback,
                            "rollback failed; the next create or ensure finishes it");
                    }
                    Err(e)
                }
            }
        })
        .await
    }

    pub(super) async fn finish_create(&self, mut record: Record) -> Result<Record> {
        let dir = self.dir_of(&record);
        self.fs
            .ensure_dir(&dir.parent().unwrap_or_else(|| self.layout.prefix().clone()))
            .await?;
        self.fs.create_share_dir(&dir, &self.settings.dir).await?;
        // Before anything is written inside, so every file gets it.
        if let Some(layout) = &record.layout {
            self.fs.set_default_layout(&dir, layout).await?;
        }
        if let Some(compression) = &record.compression {
            self.fs.set_compression(&dir, compression).await?;
        }
        self.fs.set_project(&dir, record.project_id).await?;
        self.fs
            .set_quota(&dir, record.project_id, &Self::limits(&record))
            .await?;
        record.state = ShareState::Ready;
        self.write_record(&record).await?;
        tracing::info!(share = %record.name, project = record.project_id.get(), size = record.size_bytes, "share created");
        Ok(record)
    }

    async fn roll_back_create(&self, record: &Record) -> Result<()> {
        self.fs.remove_share_dir(&self.dir_of(record)).await?;
        self.fs
            .remove_file(&self.layout.record(&record.name)?)
            .await?;
        allocator::release(self.fs(), &self.layout, record.project_id).await
    }

    // ---------- adopt ----------

    /// Takes over an existing share directory that has no lustrekit record (one made by
    /// Manila's own Lustre driver): its project ID, read from the directory, is claimed and its
    /// live quota becomes the share's size. Refused, with nothing changed, when the directory
    /// has no project ID, an ID outside the range, an ID another share holds, or no quota.
    /// Adopting a share already recorded with the directory's project ID returns it.
    pub async fn adopt(&self, name: &ShareName) -> Result<Share> {
        Self::check_name(name)?;
        self.locked(name, async || {
            let dir = self.layout.share_dir(name);
            let project = match self.fs.project_of(&dir).await {
                Ok(project) => project,
                Err(backend::BackendError::NotFound { .. }) => {
                    return Err(ShareError::NotFound {
                        share: format!("{name} (no directory {})", dir.as_str()),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            let Some(project) = project else {
                return Err(ShareError::invalid(format!(
                    "{} has no project ID: it is not a share to adopt",
                    dir.as_str()
                )));
            };
            if let Some(record) = self.read_record(name).await? {
                if record.project_id != project {
                    return Err(ShareError::Conflict {
                        share: name.to_string(),
                        message: format!(
                            "it is a lustrekit share with project ID {}, but its directory has {}",
                            record.project_id.get(),
                            project.get()
                        ),
                    });
                }
                return self.ready_record(name).await.map(|r| self.to_share(&r));
            }
            if !self.settings.project_ids.contains(project) {
                return Err(ShareError::invalid(format!(
                    "{} has project ID {}, outside the configured range {}",
                    dir.as_str(),
                    project.get(),
                    self.range_text()
                )));
            }
            if !self.fs.claim(&self.layout.project_claim(project)?).await? {
                return Err(ShareError::Conflict {
                    share: name.to_string(),
                    message: format!("project ID {} is claimed by another share", project.get()),
                });
            }
            match self.finish_adopt(name, &dir, project).await {
                Ok(record) => Ok(self.to_share(&record)),
                Err(e) => {
                    // Nothing half-made: no record (a failed write may have landed), no claim.
                    if let Ok(path) = self.layout.record(name)
                        && let Err(undo) = self.fs.remove_file(&path).await
                    {
                        tracing::error!(share = %name, error = %undo, "cannot remove the record of a failed adopt");
                    }
                    if let Err(undo) = allocator::release(self.fs(), &self.layout, project).await {
                        tracing::error!(share = %name, error = %undo, "cannot release the claim of a failed adopt");
                    }
                    Err(e)
                }
            }
        })
        .await
    }

    async fn finish_adopt(
        &self,
        name: &ShareName,
        dir: &lustre_model::RelPath,
        project: ProjectId,
    ) -> Result<Record> {
        let live = self.fs.quota(dir, project).await?.limits;
        if live.block_hard_bytes == 0 {
            return Err(ShareError::invalid(format!(
                "{} (project ID {}) has no block quota, so no size to adopt",
                dir.as_str(),
                project.get()
            )));
        }
        let record = Record {
            name: name.clone(),
            project_id: project,
            size_bytes: live.block_hard_bytes,
            inode_limit: (live.inode_hard > 0).then_some(live.inode_hard),
            state: ShareState::Ready,
            access: Vec::new(),
            labels: Default::default(),
            created_at: now_secs(),
            trash_id: None,
            deleted_at: None,
            expires_at: None,
            // An adopted directory keeps whatever layout it has.
            layout: None,
            compression: None,
            tenant: None,
            tenant_root: None,
        };
        self.write_record(&record).await?;
        tracing::info!(share = %name, project = project.get(), size = record.size_bytes, "share adopted");
        Ok(record)
    }
}
