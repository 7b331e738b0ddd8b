//! The share lifecycle. Each public method is one step list from the issue, and each is
//! idempotent: records carry a state (`creating`, `deleting`) so that a retry after a crash
//! finishes what the crashed call started instead of failing on its leftovers.

use std::sync::Arc;

use backend::{Filesystem, QuotaEnforcement};
use lustre_model::{NidRange, ProjectId, QuotaLimits, ShareName, VolumeId};

use crate::access;
use crate::allocator;
use crate::config::ShareSettings;
use crate::layout::{Layout, META_DIR};
use crate::lock::{Held, Locks, now_secs};
use crate::model::*;
use crate::record::Record;
use crate::sizes::normalize_cidr;
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

    fn to_share(&self, record: &Record) -> Share {
        let path = self.layout.share_dir(&record.name);
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
        let dir = self.layout.share_dir(name);
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

    // ---------- create ----------

    /// Creates a share, or returns it when it exists with the same size and inode limit.
    pub async fn create(&self, request: CreateShare) -> Result<Share> {
        Self::check_name(&request.name)?;
        if request.size_bytes == 0 {
            return Err(ShareError::invalid("size must be greater than zero"));
        }
        if request.inode_limit == Some(0) {
            return Err(ShareError::invalid("inode limit must be greater than zero"));
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
                    if self
                        .fs
                        .stat_dir(&self.layout.share_dir(&name))
                        .await?
                        .is_some()
                    {
                        return Err(ShareError::Conflict {
                            share: name.to_string(),
                            message: "a directory of that name exists and is not a lustrekit share"
                                .into(),
                        });
                    }
                    let project =
                        allocator::allocate(self.fs(), &self.layout, &self.settings.project_ids)
                            .await?;
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
                    };
                    if let Err(e) = self.write_record(&record).await {
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

    async fn finish_create(&self, mut record: Record) -> Result<Record> {
        let dir = self.layout.share_dir(&record.name);
        self.fs.ensure_dir(self.layout.prefix()).await?;
        self.fs.create_share_dir(&dir, &self.settings.dir).await?;
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
        self.fs
            .remove_share_dir(&self.layout.share_dir(&record.name))
            .await?;
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
        };
        self.write_record(&record).await?;
        tracing::info!(share = %name, project = project.get(), size = record.size_bytes, "share adopted");
        Ok(record)
    }

    // ---------- resize ----------

    /// Sets a new size: the record first, then the quota, so a crash in between is finished
    /// by `ensure` rather than undone.
    pub async fn resize(&self, name: &ShareName, new_size: u64) -> Result<Share> {
        if new_size == 0 {
            return Err(ShareError::invalid("size must be greater than zero"));
        }
        self.locked(name, async || {
            let mut record = self.ready_record(name).await?;
            let dir = self.layout.share_dir(name);
            if new_size < record.size_bytes {
                // Current numbers, not the cheap (possibly a little stale) stats ones.
                let report = self.fs.quota_now(&dir, record.project_id).await?;
                if report.usage.used_bytes > new_size {
                    return Err(ShareError::ShrinkBelowUsage {
                        share: name.to_string(),
                        used_bytes: report.usage.used_bytes,
                        requested_bytes: new_size,
                    });
                }
            }
            record.size_bytes = new_size;
            self.write_record(&record).await?;
            self.fs
                .set_quota(&dir, record.project_id, &Self::limits(&record))
                .await?;
            Ok(self.to_share(&record))
        })
        .await
    }

    /// Grows a share; a size below the current one is refused (use shrink).
    pub async fn extend(&self, name: &ShareName, new_size: u64) -> Result<Share> {
        let current = self.ready_record(name).await?;
        if new_size < current.size_bytes {
            return Err(ShareError::invalid(format!(
                "extend to {new_size} bytes is smaller than the current {} bytes; use shrink",
                current.size_bytes
            )));
        }
        self.resize(name, new_size).await
    }

    /// Shrinks a share; refused, with nothing changed, while it uses more than `new_size`.
    pub async fn shrink(&self, name: &ShareName, new_size: u64) -> Result<Share> {
        let current = self.ready_record(name).await?;
        if new_size > current.size_bytes {
            return Err(ShareError::invalid(format!(
                "shrink to {new_size} bytes is larger than the current {} bytes; use extend",
                current.size_bytes
            )));
        }
        self.resize(name, new_size).await
    }

    // ---------- access ----------

    pub async fn allow(&self, name: &ShareName, to: &str, level: AccessLevel) -> Result<Share> {
        let cidr = normalize_cidr(to)?;
        let nid_range = NidRange::from_cidr(&cidr, self.settings.nid_net)?;
        // Fail now, before anything is recorded, if Lustre cannot express the range.
        nid_range.to_lctl_expr()?;
        self.locked(name, async || {
            let mut record = self.ready_record(name).await?;
            record.access.retain(|r| r.to != cidr);
            record.access.push(AccessRule {
                to: cidr.clone(),
                level,
                nid_range,
            });
            record.access.sort();
            self.reconcile_access(&record, true).await?;
            self.write_record(&record).await?;
            Ok(self.to_share(&record))
        })
        .await
    }

    /// Revokes the rule for `to`; a rule that was never granted is not an error.
    pub async fn deny(&self, name: &ShareName, to: &str) -> Result<Share> {
        let cidr = normalize_cidr(to)?;
        self.locked(name, async || {
            let mut record = self.ready_record(name).await?;
            record.access.retain(|r| r.to != cidr);
            self.write_record(&record).await?;
            self.reconcile_access(&record, false).await?;
            Ok(self.to_share(&record))
        })
        .await
    }

    pub async fn access_list(&self, name: &ShareName) -> Result<Vec<AccessRule>> {
        Ok(self.get(name).await?.access)
    }

    /// Makes the live nodemaps of one share match its rules (none if `record` is being
    /// deleted); returns the changes applied. With `check_only_conflicts` false this never
    /// refuses, so revoking always works.
    async fn reconcile_access(
        &self,
        record: &Record,
        check_conflicts: bool,
    ) -> Result<Vec<backend::NodemapChange>> {
        let rules: &[AccessRule] = if record.state == ShareState::Ready {
            &record.access
        } else {
            &[]
        };
        let own = [
            access::nodemap_name(record.project_id, AccessLevel::Rw)?,
            access::nodemap_name(record.project_id, AccessLevel::Ro)?,
        ];
        let desired = access::desired(
            record.project_id,
            &self.layout.share_dir(&record.name),
            rules,
            self.settings.root_squash,
        )?;
        let held = self
            .locks
            .acquire(&self.fs, NODEMAP_LOCK, self.layout.lock(NODEMAP_LOCK)?)
            .await?;
        let result = async {
            let live = self.fs.nodemaps().await?;
            if check_conflicts {
                access::check_conflicts(&live, &own, &desired)?;
            }
            let changes = access::plan(&live, &own, &desired, self.settings.activate_nodemaps);
            if !changes.is_empty() {
                self.fs.apply_nodemap_changes(&changes).await?;
            }
            Ok(changes)
        }
        .await;
        held.release().await?;
        result
    }

    // ---------- delete and trash ----------

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

    async fn finish_delete(&self, record: Record) -> Result<()> {
        let dir = self.layout.share_dir(&record.name);
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
            let dir = self.layout.share_dir(name);
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

    // ---------- ensure ----------

    /// Re-verifies every share after a restart: finishes interrupted creates and deletes,
    /// repairs a missing project ID, quota or nodemap, reports what it cannot repair (a
    /// missing directory), and purges expired trash.
    pub async fn ensure(&self) -> Result<EnsureReport> {
        self.ensure_with_progress(|_, _, _| {}).await
    }

    /// [`ShareService::ensure`], calling `progress(done, total, share)` before each share.
    pub async fn ensure_with_progress(
        &self,
        progress: impl Fn(usize, usize, &str),
    ) -> Result<EnsureReport> {
        let mut report = EnsureReport {
            checked: 0,
            repaired: Vec::new(),
            problems: Vec::new(),
            purged_trash: Vec::new(),
        };
        let records = self.records().await?;
        let total = records.len();
        for record in records {
            progress(report.checked, total, record.name.as_str());
            report.checked += 1;
            let name = record.name.clone();
            let outcome = self
                .locked(&name, async || {
                    self.ensure_one(record.clone(), &mut report.repaired).await
                })
                .await;
            if let Err(e) = outcome {
                report.problems.push(Problem {
                    share: name.to_string(),
                    problem: e.to_string(),
                });
            }
        }
        report.purged_trash = self.purge_expired_trash().await?;
        Ok(report)
    }

    async fn ensure_one(&self, record: Record, repaired: &mut Vec<Repair>) -> Result<()> {
        let name = record.name.to_string();
        let mut note = |what: String| {
            repaired.push(Repair {
                share: name.clone(),
                what,
            })
        };
        match record.state {
            ShareState::Creating => {
                self.finish_create(record).await?;
                note("finished an interrupted create".into());
                return Ok(());
            }
            ShareState::Deleting => {
                self.finish_delete(record).await?;
                note("finished an interrupted delete".into());
                return Ok(());
            }
            ShareState::Trashed | ShareState::Ready => {}
        }
        let dir = self.layout.share_dir(&record.name);
        if self.fs.stat_dir(&dir).await?.is_none() {
            return Err(ShareError::NotFound {
                share: format!(
                    "{} (its directory {} is missing)",
                    record.name,
                    dir.as_str()
                ),
            });
        }
        if self.fs.project_of(&dir).await? != Some(record.project_id) {
            self.fs.set_project(&dir, record.project_id).await?;
            note(format!("set project ID {}", record.project_id.get()));
        }
        let want = Self::limits(&record);
        let live = self.fs.quota(&dir, record.project_id).await?.limits;
        if live.block_hard_bytes != want.block_hard_bytes
            || (self.fs.capabilities().inode_quota == QuotaEnforcement::Enforced
                && live.inode_hard != want.inode_hard)
        {
            self.fs.set_quota(&dir, record.project_id, &want).await?;
            note(format!(
                "restored the quota of {} bytes",
                want.block_hard_bytes
            ));
        }
        for change in self.reconcile_access(&record, false).await? {
            note(format!(
                "nodemap: {}",
                serde_json::to_string(&change).unwrap_or_default()
            ));
        }
        Ok(())
    }
}
