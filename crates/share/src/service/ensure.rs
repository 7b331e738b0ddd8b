//! Re-verifying every share after a restart and repairing what can be repaired.

use backend::QuotaEnforcement;

use super::ShareService;
use crate::model::*;
use crate::record::Record;
use crate::{Result, ShareError};

impl ShareService {
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
        let dir = self.dir_of(&record);
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
