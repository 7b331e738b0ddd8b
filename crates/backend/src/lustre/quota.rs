//! Project quotas: `lfs setquota -p ID -b KiB -B KiB -i N -I N MOUNT` (plain numbers are KiB,
//! 0 is unlimited; see `lfs-setquota.md`) and `lfs quota -p ID MOUNT`, parsed whatever the
//! release's table format (`lfs-quota.md`). A project quota is filesystem-wide, so the share
//! directory only names the project in errors.

use async_trait::async_trait;
use lustre_model::{ProjectId, QuotaLimits, QuotaReport, RelPath};

use super::{LustreBackend, On, parse_error};
use crate::{Capacity, Result, RootProjectQuota};

/// Bytes to the KiB `lfs setquota` takes, rounded up so a limit is never below the request.
pub(super) fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

pub(super) async fn set_quota(
    b: &LustreBackend,
    dir: &RelPath,
    id: ProjectId,
    limits: &QuotaLimits,
) -> Result<()> {
    let id = id.get().to_string();
    let (bsoft, bhard) = (
        kib(limits.block_soft_bytes).to_string(),
        kib(limits.block_hard_bytes).to_string(),
    );
    let (isoft, ihard) = (limits.inode_soft.to_string(), limits.inode_hard.to_string());
    let mount = b.inner.mount_point.clone();
    let argv = b.lfs([
        "setquota", "-p", &id, "-b", &bsoft, "-B", &bhard, "-i", &isoft, "-I", &ihard, &mount,
    ]);
    tracing::debug!(dir = dir.as_str(), project = %id, "setting project quota");
    // Success prints nothing; the "smaller than minimum qunit size" warnings go to stderr
    // with exit 0 and are not errors.
    let out = b.run_ok(On::Mds, &argv).await?;
    let warning = out.stderr_text();
    if !warning.is_empty() {
        tracing::warn!(dir = dir.as_str(), project = %id, %warning, "lfs setquota warned");
    }
    Ok(())
}

pub(super) async fn quota(b: &LustreBackend, dir: &RelPath, id: ProjectId) -> Result<QuotaReport> {
    let id_text = id.get().to_string();
    let mount = b.inner.mount_point.clone();
    let argv = b.lfs(["quota", "-p", &id_text, &mount]);
    let out = b.run(On::Mds, &argv).await?;
    let parsed = lustre_model::parse_lfs_quota(&out.stdout_text());
    if !out.success() {
        // With an unreachable target `lfs quota` still prints the table, marks the values
        // `[...]` and exits non-zero: the report says `inaccurate`, which callers can judge.
        if let Ok(report) = parsed
            && report.inaccurate
        {
            tracing::warn!(
                dir = dir.as_str(),
                project = id.get(),
                "lfs quota: inaccurate values"
            );
            return Ok(report);
        }
        return Err(out.error(&argv));
    }
    parsed.map_err(|e| parse_error(&argv, e))
}

#[async_trait]
impl crate::Quotas for LustreBackend {
    async fn set_project(&self, dir: &RelPath, id: ProjectId) -> Result<()> {
        super::project::set_project(self, dir, id).await
    }

    async fn project_of(&self, dir: &RelPath) -> Result<Option<ProjectId>> {
        super::project::project_of(self, dir).await
    }

    async fn set_quota(&self, dir: &RelPath, id: ProjectId, limits: &QuotaLimits) -> Result<()> {
        set_quota(self, dir, id, limits).await
    }

    async fn quota(&self, dir: &RelPath, id: ProjectId) -> Result<QuotaReport> {
        quota(self, dir, id).await
    }

    async fn capacity(&self) -> Result<Capacity> {
        super::capacity::capacity(self).await
    }

    async fn root_project_quota(&self) -> Result<RootProjectQuota> {
        root_project_quota(self).await
    }
}

/// `lctl get_param osd-*.<fs>-*.quota_slave.root_prj_enable` on the MDS host: the targets
/// it serves. Before 2.16 the parameter does not exist, which is an answer, not an error.
pub(super) async fn root_project_quota(b: &LustreBackend) -> Result<RootProjectQuota> {
    let pattern = format!(
        "osd-*.{}-*.quota_slave.root_prj_enable",
        b.inner.config.fsname.as_str()
    );
    let argv = b.lctl(["get_param", &pattern]);
    let out = b.run(On::Mds, &argv).await?;
    if !out.success() {
        return Ok(RootProjectQuota::Unknown {
            why: format!(
                "{} failed ({}): root_prj_enable needs Lustre 2.16+ servers",
                argv.join(" "),
                out.stderr_text().trim()
            ),
        });
    }
    let targets = lustre_model::parse_root_prj_enable(&out.stdout_text())
        .map_err(|e| parse_error(&argv, e))?;
    if targets.is_empty() {
        return Ok(RootProjectQuota::Unknown {
            why: format!("{} named no target on the MDS host", argv.join(" ")),
        });
    }
    let off: Vec<String> = targets
        .iter()
        .filter(|(_, on)| !on)
        .map(|(t, _)| t.clone())
        .collect();
    Ok(if off.is_empty() {
        RootProjectQuota::Enforced {
            targets: targets.into_iter().map(|(t, _)| t).collect(),
        }
    } else {
        RootProjectQuota::NotEnforced { targets: off }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_round_up_to_kib() {
        assert_eq!(super::kib(0), 0);
        assert_eq!(super::kib(1), 1);
        assert_eq!(super::kib(1024), 1);
        assert_eq!(super::kib(1025), 2);
        assert_eq!(super::kib(10 << 30), 10 << 20);
    }
}
