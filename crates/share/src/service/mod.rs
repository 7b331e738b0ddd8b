//! The share lifecycle. Each public method is one step list from the issue, and each is
//! idempotent: records carry a state (`creating`, `deleting`) so that a retry after a crash
//! finishes what the crashed call started instead of failing on its leftovers.
//!
//! This module opens the service and holds the queries, records and locks; each lifecycle
//! step has its own file: `create` (and adopt), `resize`, `access`, `delete` (and the
//! trash), `ensure`.

mod access;
mod create;
mod delete;
mod ensure;
mod resize;
mod tenant;

use std::sync::Arc;

use backend::{Filesystem, QuotaEnforcement};
use lustre_model::{QuotaLimits, ShareName, VolumeId};

use crate::allocator;
use crate::config::ShareSettings;
use crate::layout::{Layout, META_DIR};
use crate::lock::{Held, Locks};
use crate::model::*;
use crate::record::Record;
use crate::{Result, ShareError};

/// The one share service every front-end uses.
pub struct ShareService {
    fs: Arc<dyn Filesystem>,
    settings: ShareSettings,
    layout: Layout,
    locks: Locks,
}

const NODEMAP_LOCK: &str = ".nodemaps";

impl ShareService {
    /// Opens the service: makes its metadata directories and checks that the project-ID range
    /// does not overlap IDs that something other than lustrekit already uses.
    pub async fn open(fs: Arc<dyn Filesystem>, settings: ShareSettings) -> Result<Self> {
        let service = Self::open_for_adoption(fs, settings).await?;
        service.check_project_range().await?;
        Ok(service)
    }

    /// Opens the service without refusing project IDs in the range that directories not made
    /// by lustrekit use: only for [`ShareService::adopt`], which is how such a directory
    /// becomes a share (its ID claimed, so no create can ever reuse it).
    pub async fn open_for_adoption(
        fs: Arc<dyn Filesystem>,
        settings: ShareSettings,
    ) -> Result<Self> {
        let layout = Layout::new(settings.prefix.clone());
        for dir in [
            layout.records_dir()?,
            layout.projects_dir()?,
            layout.locks_dir()?,
            layout.trash_dir()?,
            layout.tenants_dir()?,
        ] {
            fs.ensure_dir(&dir).await?;
        }
        let service = Self {
            fs,
            settings,
            layout,
            locks: Locks::default(),
        };
        Ok(service)
    }

    pub fn backend(&self) -> &Arc<dyn Filesystem> {
        &self.fs
    }

    pub fn settings(&self) -> &ShareSettings {
        &self.settings
    }

    fn fs(&self) -> &dyn Filesystem {
        self.fs.as_ref()
    }

    /// Directories under the prefix that are not lustrekit shares but carry a project ID in
    /// our range would share quota with a new share: refuse to run over them.
    async fn check_project_range(&self) -> Result<()> {
        let ours = allocator::claimed(self.fs(), &self.layout).await?;
        let mut foreign = Vec::new();
        for entry in self.fs.list_dir(self.layout.prefix()).await? {
            if entry == META_DIR {
                continue;
            }
            let Ok(name) = ShareName::new(&entry) else {
                continue;
            };
            let dir = self.layout.share_dir(&name);
            if self.fs.stat_dir(&dir).await?.is_none() {
                continue; // a file, not a directory
            }
            if let Ok(Some(id)) = self.fs.project_of(&dir).await
                && self.settings.project_ids.contains(id)
                && !ours.contains(&id.get())
            {
                foreign.push(format!("{} (on {})", id.get(), dir.as_str()));
            }
        }
        if foreign.is_empty() {
            Ok(())
        } else {
            Err(ShareError::ProjectIdsInUse {
                range: self.range_text(),
                in_use: foreign.join(", "),
            })
        }
    }

    fn range_text(&self) -> String {
        let r = &self.settings.project_ids;
        format!("{}-{}", r.start.get(), r.end.get())
    }

    // ---------- records ----------

    async fn read_record(&self, name: &ShareName) -> Result<Option<Record>> {
        let Some(bytes) = self.fs.read_file(&self.layout.record(name)?).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ShareError::Config(format!("record of share {name} is corrupt: {e}")))
    }

    async fn write_record(&self, record: &Record) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| ShareError::Config(format!("serialising record: {e}")))?;
        self.fs
            .write_file(&self.layout.record(&record.name)?, &bytes)
            .await?;
        Ok(())
    }

    /// The share's directory: under its tenant's root, or the prefix.
    fn dir_of(&self, record: &Record) -> lustre_model::RelPath {
        match &record.tenant_root {
            Some(root) => root.join(&record.name),
            None => self.layout.share_dir(&record.name),
        }
    }

    fn to_share(&self, record: &Record) -> Share {
        let path = self.dir_of(record);
        let export_location = if self.settings.export_nids.is_empty() {
            self.fs.host_path(&path).display().to_string()
        } else {
            let nids: Vec<String> = self
                .settings
                .export_nids
                .iter()
                .map(|n| n.to_string())
                .collect();
            format!(
                "{}:/{}/{}",
                nids.join(":"),
                self.settings.fsname,
                path.as_str()
            )
        };
        Share {
            name: record.name.clone(),
            volume_id: VolumeId {
                fs_key: self.settings.fsname.to_string(),
                project: record.project_id,
                path: path.clone(),
            },
            path,
            project_id: record.project_id,
            size_bytes: record.size_bytes,
            inode_limit: record.inode_limit,
            state: record.state,
            export_location,
            access: record.access.clone(),
            labels: record.labels.clone(),
            created_at: record.created_at,
            tenant: record.tenant.as_ref().map(|t| t.to_string()),
        }
    }

    fn limits(record: &Record) -> QuotaLimits {
        QuotaLimits {
            block_soft_bytes: 0,
            block_hard_bytes: record.size_bytes,
            inode_soft: 0,
            inode_hard: record.inode_limit.unwrap_or(0),
        }
    }

    async fn lock(&self, name: &ShareName) -> Result<Held> {
        self.locks
            .acquire(&self.fs, name.as_str(), self.layout.lock(name.as_str())?)
            .await
    }

    /// Takes `role` for `name` (say `hsm-policy`): a lock of its own beside the share's, so
    /// one process among every node and controller does that work for the share at a time.
    /// Waits for a holder elsewhere as the share's lock does, then answers Busy.
    pub async fn hold_role(&self, role: &str, name: &ShareName) -> Result<Held> {
        let key = format!("{role}.{}", name.as_str());
        self.locks
            .acquire(&self.fs, &key, self.layout.lock(&key)?)
            .await
    }

    /// Runs `f` under the share's lock, releasing it whatever `f` returns (and, should this
    /// future be dropped midway, from the lock's `Drop`).
    async fn locked<T>(&self, name: &ShareName, f: impl AsyncFnOnce() -> Result<T>) -> Result<T> {
        let held = self.lock(name).await?;
        let result = f().await;
        let released = held.release().await;
        let value = result?;
        released?;
        Ok(value)
    }

    fn check_name(name: &ShareName) -> Result<()> {
        if name.as_str().starts_with('.') {
            return Err(ShareError::invalid(format!(
                "share name {name:?}: names starting with '.' are reserved"
            )));
        }
        Ok(())
    }

    // ---------- queries ----------

    pub async fn find(&self, name: &ShareName) -> Result<Option<Share>> {
        Ok(self
            .read_record(name)
            .await?
            .filter(|r| r.state != ShareState::Deleting)
            .map(|r| self.to_share(&r)))
    }

    pub async fn get(&self, name: &ShareName) -> Result<Share> {
        self.find(name).await?.ok_or_else(|| ShareError::NotFound {
            share: name.to_string(),
        })
    }

    async fn records(&self) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        for file in self.fs.list_dir(&self.layout.records_dir()?).await? {
            let Some(stem) = file.strip_suffix(".json") else {
                continue;
            };
            let Ok(name) = ShareName::new(stem) else {
                continue;
            };
            if let Some(record) = self.read_record(&name).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    pub async fn list(&self) -> Result<Vec<Share>> {
        Ok(self
            .records()
            .await?
            .iter()
            .filter(|r| r.state != ShareState::Deleting)
            .map(|r| self.to_share(r))
            .collect())
    }

    pub async fn usage(&self, name: &ShareName) -> Result<ShareUsage> {
        self.usage_with(name, false).await
    }

    /// [`usage`](Self::usage) as of now: the backend flushes and counts afresh (a btrfs
    /// commit, a walk for inodes) instead of answering from its last commit. For callers
    /// that must see a change they just made; stats polling uses [`usage`](Self::usage).
    pub async fn usage_now(&self, name: &ShareName) -> Result<ShareUsage> {
        self.usage_with(name, true).await
    }

    async fn usage_with(&self, name: &ShareName, now: bool) -> Result<ShareUsage> {
        let record = self.ready_record(name).await?;
        let dir = self.dir_of(&record);
        let report = if now {
            self.fs.quota_now(&dir, record.project_id).await?
        } else {
            self.fs.quota(&dir, record.project_id).await?
        };
        Ok(ShareUsage {
            used_bytes: report.usage.used_bytes,
            limit_bytes: record.size_bytes,
            used_inodes: report.usage.inodes,
            inode_limit: record.inode_limit,
            bytes_exceeded: report.block_exceeded,
            inodes_exceeded: report.inode_exceeded,
            enforced: self.fs.capabilities().quota == QuotaEnforcement::Enforced,
        })
    }

    pub async fn capacity(&self) -> Result<CapacityReport> {
        let capacity = self.fs.capacity().await?;
        let records = self.records().await?;
        Ok(CapacityReport {
            total_bytes: capacity.total_bytes,
            used_bytes: capacity.used_bytes,
            available_bytes: capacity.available_bytes,
            provisioned_bytes: records.iter().map(|r| r.size_bytes).sum(),
            share_count: records.len(),
            quota_enforced: self.fs.capabilities().quota == QuotaEnforcement::Enforced,
        })
    }

    async fn ready_record(&self, name: &ShareName) -> Result<Record> {
        match self.read_record(name).await? {
            Some(r) if r.state == ShareState::Ready => Ok(r),
            Some(r) => Err(ShareError::InProgress {
                share: name.to_string(),
                state: serde_json::to_value(r.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{:?}", r.state)),
            }),
            None => Err(ShareError::NotFound {
                share: name.to_string(),
            }),
        }
    }
}
