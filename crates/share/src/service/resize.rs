//! Resizing a share: the record first, then the quota.

use lustre_model::ShareName;

use super::ShareService;
use crate::model::*;
use crate::{Result, ShareError};

impl ShareService {
    /// Sets a new size: the record first, then the quota, so a crash in between is finished
    /// by `ensure` rather than undone.
    pub async fn resize(&self, name: &ShareName, new_size: u64) -> Result<Share> {
        if new_size == 0 {
            return Err(ShareError::invalid("size must be greater than zero"));
        }
        self.locked(name, async || {
            let mut record = self.ready_record(name).await?;
            let dir = self.dir_of(&record);
            // Growing a tenant's share must keep the tenant under its quota; the tenant lock
            // is held until the record says the new size.
            let tenant_lock = match &record.tenant {
                Some(tenant) if new_size > record.size_bytes => {
                    Some(self.check_tenant_room(tenant, name, new_size).await?)
                }
                _ => None,
            };
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
            let written = self.write_record(&record).await;
            if let Some(held) = tenant_lock {
                held.release().await?;
            }
            written?;
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
}
