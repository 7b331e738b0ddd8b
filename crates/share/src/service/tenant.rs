//! Tenants: their roots (a directory with its own project ID and, where the tenant's nodes
//! reach it, its own project quota), the room left in their quota, and reconciling their
//! nodemaps.

use backend::RootProjectQuota;
use lustre_model::{ProjectId, QuotaLimits, RelPath, ShareName};
use serde::{Deserialize, Serialize};

use super::{NODEMAP_LOCK, ShareService};
use crate::lock::Held;
use crate::model::*;
use crate::tenant::{self, Tenant, TenantName};
use crate::{Result, ShareError, allocator};

/// `<meta>/tenants/<name>.json`: the project ID claimed for the tenant's root.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TenantRecord {
    name: TenantName,
    project_id: ProjectId,
}

impl ShareService {
    /// A share outside any tenant may not take the name of a tenant's root directory.
    pub(super) fn check_not_a_tenant_root(&self, name: &ShareName) -> Result<()> {
        match self
            .settings
            .tenants
            .iter()
            .find(|t| t.root.as_str().split('/').next() == Some(name.as_str()))
        {
            Some(t) => Err(ShareError::Conflict {
                share: name.to_string(),
                message: format!("it is the root of tenant {}", t.name),
            }),
            None => Ok(()),
        }
    }

    async fn tenant_lock(&self, name: &TenantName) -> Result<Held> {
        let key = format!(".tenant_{name}");
        self.locks
            .acquire(&self.fs, &key, self.layout.lock(&key)?)
            .await
    }

    async fn read_tenant_record(&self, name: &TenantName) -> Result<Option<TenantRecord>> {
        let Some(bytes) = self
            .fs
            .read_file(&self.layout.tenant_record(name.as_str())?)
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ShareError::Config(format!("record of tenant {name} is corrupt: {e}")))
    }

    /// Makes the tenant's root, idempotently: a project ID claimed once (kept in its
    /// record), the directory, the project on it, and its quota where the tenant's nodes
    /// mount the root itself (server-enforced nodemaps give them its fileset, so they can
    /// write there outside any share). Its shares are capped together by
    /// [`check_tenant_room`](Self::check_tenant_room) on every backend.
    pub(super) async fn ensure_tenant_root(&self, tenant: &Tenant) -> Result<(RelPath, ProjectId)> {
        let root = tenant::root_dir(self.layout.prefix(), tenant)?;
        let held = self.tenant_lock(&tenant.name).await?;
        let result = async {
            let project = match self.read_tenant_record(&tenant.name).await? {
                Some(record) => record.project_id,
                None => {
                    let project =
                        allocator::allocate(self.fs(), &self.layout, &self.settings.project_ids)
                            .await?;
                    let record = TenantRecord {
                        name: tenant.name.clone(),
                        project_id: project,
                    };
                    let written = match serde_json::to_vec_pretty(&record) {
                        Ok(bytes) => self
                            .fs
                            .write_file(&self.layout.tenant_record(tenant.name.as_str())?, &bytes)
                            .await
                            .map_err(ShareError::from),
                        Err(e) => Err(ShareError::Config(format!(
                            "serialising tenant record: {e}"
                        ))),
                    };
                    if let Err(e) = written {
                        let _ = allocator::release(self.fs(), &self.layout, project).await;
                        return Err(e);
                    }
                    project
                }
            };
            self.fs.ensure_dir(&root).await?;
            self.fs.set_project(&root, project).await?;
            if let Some(quota) = tenant.quota_bytes
                && self.fs.capabilities().nodemaps_enforced_by_server
            {
                let limits = QuotaLimits {
                    block_hard_bytes: quota,
                    ..QuotaLimits::default()
                };
                self.fs.set_quota(&root, project, &limits).await?;
            }
            Ok((root, project))
        }
        .await;
        held.release().await?;
        result
    }

    /// Bytes the shares of `tenant` other than `share` hold, and how many there are.
    async fn tenant_provisioned(
        &self,
        tenant: &TenantName,
        except: Option<&ShareName>,
    ) -> Result<(u64, usize)> {
        let mut bytes = 0u64;
        let mut count = 0;
        for record in self.records().await? {
            if record.tenant.as_ref() == Some(tenant)
                && record.state != ShareState::Deleting
                && Some(&record.name) != except
            {
                bytes = bytes.saturating_add(record.size_bytes);
                count += 1;
            }
        }
        Ok((bytes, count))
    }

    /// Takes the tenant's lock and checks that `share` at `size_bytes` keeps the tenant's
    /// shares within its quota. The caller holds the lock until its record is written.
    pub(super) async fn check_tenant_room(
        &self,
        tenant: &TenantName,
        share: &ShareName,
        size_bytes: u64,
    ) -> Result<Held> {
        let held = self.tenant_lock(tenant).await?;
        let quota = self
            .settings
            .tenant(tenant.as_str())
            .and_then(|t| t.quota_bytes);
        let Some(quota) = quota else {
            return Ok(held);
        };
        let checked = match self.tenant_provisioned(tenant, Some(share)).await {
            Ok((provisioned, _)) if provisioned.saturating_add(size_bytes) > quota => {
                Err(ShareError::TenantQuotaExceeded {
                    tenant: tenant.to_string(),
                    quota_bytes: quota,
                    provisioned_bytes: provisioned,
                    requested_bytes: size_bytes,
                })
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match checked {
            Ok(()) => Ok(held),
            Err(e) => {
                held.release().await?;
                Err(e)
            }
        }
    }

    async fn tenant_status(
        &self,
        tenant: &Tenant,
        root: RelPath,
        project: ProjectId,
    ) -> Result<TenantStatus> {
        let (provisioned_bytes, share_count) = self.tenant_provisioned(&tenant.name, None).await?;
        Ok(TenantStatus {
            name: tenant.name.to_string(),
            root,
            nodemap: tenant.name.nodemap()?.to_string(),
            project_id: project,
            quota_bytes: tenant.quota_bytes,
            provisioned_bytes,
            share_count,
        })
    }

    /// Makes every configured tenant's root, and the live nodemaps match the tenants: one
    /// `lkt_<name>` map each (a tenant no longer configured loses its map), in the safe
    /// order of [`crate::access::plan`]. Refused, with nothing applied, when a tenant's
    /// ranges are in a nodemap that is not a tenant's. Also reports whether project quotas
    /// bind root (`root_prj_enable`).
    pub async fn reconcile_tenants(&self) -> Result<TenantReport> {
        let mut tenants = Vec::new();
        for tenant in &self.settings.tenants {
            let (root, project) = self.ensure_tenant_root(tenant).await?;
            tenants.push(self.tenant_status(tenant, root, project).await?);
        }
        let held = self
            .locks
            .acquire(&self.fs, NODEMAP_LOCK, self.layout.lock(NODEMAP_LOCK)?)
            .await?;
        let applied = async {
            let live = self.fs.nodemaps().await?;
            let changes = tenant::plan(
                &live,
                self.layout.prefix(),
                &self.settings.tenants,
                self.settings.activate_nodemaps,
            )?;
            if !changes.is_empty() {
                self.fs.apply_nodemap_changes(&changes).await?;
            }
            Ok::<_, ShareError>(changes)
        }
        .await;
        held.release().await?;
        let changes = applied?;
        let root_project_quota = match self.fs.root_project_quota().await {
            Ok(state) => state,
            Err(e) => RootProjectQuota::Unknown { why: e.to_string() },
        };
        if !matches!(root_project_quota, RootProjectQuota::Enforced { .. })
            && self.settings.tenants.iter().any(|t| t.admin)
        {
            tracing::warn!(state = ?root_project_quota,
                "a tenant keeps root (admin), and project quotas may not bind root: it can write past its quota");
        }
        Ok(TenantReport {
            tenants,
            changes,
            root_project_quota,
            nodemaps_enforced_by_server: self.fs.capabilities().nodemaps_enforced_by_server,
        })
    }
}
