//! Access rules: allow, deny, list, and reconciling the nodemaps they imply.

use lustre_model::{NidRange, ShareName};

use super::{NODEMAP_LOCK, ShareService};
use crate::Result;
use crate::access;
use crate::model::*;
use crate::record::Record;
use crate::sizes::normalize_cidr;

impl ShareService {
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
    pub(super) async fn reconcile_access(
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
            &self.dir_of(record),
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
}
