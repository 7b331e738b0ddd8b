//! Deleting a share (straight away or into the trash), the trash can, and restoring from it.

use lustre_model::{ProjectId, QuotaLimits, ShareName};

use super::ShareService;
use crate::allocator;
use crate::lock::now_secs;
use crate::model::*;
use crate::record::Record;
use crate::{Result, ShareError};

impl ShareService {
    /// Deletes a share; an unknown share is success (Manila and Kubernetes retry deletes).
    pub async fn delete(&self, name: &ShareName, mode: DeleteMode) -> Result<()> {
        self.locked(name, async || {
            let Some(mut record) = self.read_record(name).await? else {
                return Ok(());
            };
            if record.state != ShareState::Deleting {
                if let DeleteMode::Trash { ttl_secs } = mode {
                    let now = now_secs();
                    record.trash_id = Some(format!("{name}@{now}"));
                    record.deleted_at = Some(now);
                    record.expires_at =
                        Some(now.saturating_add(ttl_secs.unwrap_or(self.settings.trash_ttl_secs)));
                }
                record.state = ShareState::Deleting;
                self.write_record(&record).await?;
            }
            self.finish_delete(record).await
        })
        .await
    }

    pub(super) async fn finish_delete(&self, record: Record) -> Result<()> {
        let dir = self.dir_of(&record);
        self.reconcile_access(&record, false).await?;
        match &record.trash_id {
            Some(id) => {
                let trashed = self.layout.trash_entry(id)?;
                if self.fs.stat_dir(&dir).await?.is_some()
                    && self.fs.stat_dir(&trashed).await?.is_none()
                {
                    self.fs.rename(&dir, &trashed).await?;
                }
                let mut trash_record = record.clone();
                trash_record.state = ShareState::Trashed;
                let bytes = serde_json::to_vec_pretty(&trash_record)
                    .map_err(|e| ShareError::Config(format!("serialising record: {e}")))?;
                self.fs
                    .write_file(&self.layout.trash_record(id)?, &bytes)
                    .await?;
                self.fs
                    .remove_file(&self.layout.record(&record.name)?)
                    .await?;
                tracing::info!(share = %record.name, trash = %id, "share moved to the trash");
            }
            None => {
                self.purge(&dir, record.project_id).await?;
                self.fs
                    .remove_file(&self.layout.record(&record.name)?)
                    .await?;
                tracing::info!(share = %record.name, "share deleted");
            }
        }
        Ok(())
    }

    /// Removes a tree and gives back its project ID: the directory goes first, so no write
    /// can land between the quota going and the data going.
    async fn purge(&self, dir: &lustre_model::RelPath, project: ProjectId) -> Result<()> {
        self.fs.remove_share_dir(dir).await?;
        if self.fs.capabilities().quota_outlives_directory {
            self.fs
                .set_quota(dir, project, &QuotaLimits::default())
                .await?;
        }
        allocator::release(self.fs(), &self.layout, project).await
    }

    async fn trash_records(&self) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        for file in self.fs.list_dir(&self.layout.trash_dir()?).await? {
            let Some(id) = file.strip_suffix(".json") else {
                continue;
            };
            let Some(bytes) = self.fs.read_file(&self.layout.trash_record(id)?).await? else {
                continue;
            };
            match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) => records.push(r),
                Err(e) => tracing::warn!(trash = id, error = %e, "skipping a corrupt trash record"),
            }
        }
        Ok(records)
    }

    /// The labels of every share record there is: live in any state (deleting included) and
    /// in the trash. What a caller tied to a label (a volume's encryption key) is in use while
    /// one of these names it. Strict: a record that cannot be read is an error, not skipped,
    /// so no caller takes "unlisted" for "unused".
    pub async fn all_record_labels(
        &self,
    ) -> Result<Vec<std::collections::BTreeMap<String, String>>> {
        let mut out = Vec::new();
        let dirs = [
            (self.layout.records_dir()?, false),
            (self.layout.trash_dir()?, true),
        ];
        for (dir, trash) in dirs {
            for file in self.fs.list_dir(&dir).await? {
                let Some(stem) = file.strip_suffix(".json") else {
                    continue;
                };
                let path = if trash {
                    self.layout.trash_record(stem)?
                } else {
                    // Not a share's name: not a record (as `records` reads them).
                    let Ok(name) = ShareName::new(stem) else {
                        continue;
                    };
                    self.layout.record(&name)?
                };
                let Some(bytes) = self.fs.read_file(&path).await? else {
                    continue;
                };
                let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
                    ShareError::Config(format!("unreadable share record {}: {e}", path.as_str()))
                })?;
                out.push(record.labels);
            }
        }
        Ok(out)
    }

    pub async fn trash_list(&self) -> Result<Vec<TrashEntry>> {
        Ok(self
            .trash_records()
            .await?
            .into_iter()
            .filter_map(|r| {
                Some(TrashEntry {
                    id: r.trash_id.clone()?,
                    name: r.name,
                    project_id: r.project_id,
                    size_bytes: r.size_bytes,
                    deleted_at: r.deleted_at.unwrap_or(0),
                    expires_at: r.expires_at.unwrap_or(0),
                })
            })
            .collect())
    }

    /// Brings back the most recently trashed share of this name, with its quota and rules.
    pub async fn restore(&self, name: &ShareName) -> Result<Share> {
        self.locked(name, async || {
            let mut candidates: Vec<Record> = self
                .trash_records()
                .await?
                .into_iter()
                .filter(|r| &r.name == name)
                .collect();
            candidates.sort_by_key(|r| r.deleted_at);
            let Some(mut record) = candidates.pop() else {
                return Err(ShareError::NotFound {
                    share: format!("{name} (in the trash)"),
                });
            };
            let id = record
                .trash_id
                .clone()
                .ok_or_else(|| ShareError::Config("trash record without id".into()))?;
            if self.read_record(name).await?.is_some() {
                return Err(ShareError::Conflict {
                    share: name.to_string(),
                    message: "a share of that name exists; delete it before restoring".into(),
                });
            }
            let dir = self.dir_of(&record);
            let trashed = self.layout.trash_entry(&id)?;
            if self.fs.stat_dir(&trashed).await?.is_some() {
                self.fs.rename(&trashed, &dir).await?;
            } else if self.fs.project_of(&dir).await.ok().flatten() != Some(record.project_id) {
                return Err(ShareError::Conflict {
                    share: name.to_string(),
                    message: format!("the trashed data of {id} is gone"),
                });
            }
            record.state = ShareState::Ready;
            record.trash_id = None;
            record.deleted_at = None;
            record.expires_at = None;
            self.write_record(&record).await?;
            self.fs.remove_file(&self.layout.trash_record(&id)?).await?;
            self.fs
                .set_quota(&dir, record.project_id, &Self::limits(&record))
                .await?;
            self.reconcile_access(&record, true).await?;
            tracing::info!(share = %name, trash = %id, "share restored from the trash");
            Ok(self.to_share(&record))
        })
        .await
    }

    /// Purges trashed shares whose TTL has passed; returns their trash IDs.
    pub async fn purge_expired_trash(&self) -> Result<Vec<String>> {
        let now = now_secs();
        let mut purged = Vec::new();
        for record in self.trash_records().await? {
            let Some(id) = record.trash_id.clone() else {
                continue;
            };
            if record.expires_at.is_some_and(|t| t > now) {
                continue;
            }
            self.purge(&self.layout.trash_entry(&id)?, record.project_id)
                .await?;
            self.fs.remove_file(&self.layout.trash_record(&id)?).await?;
            tracing::info!(trash = %id, "expired trash purged");
            purged.push(id);
        }
        Ok(purged)
    }
}
