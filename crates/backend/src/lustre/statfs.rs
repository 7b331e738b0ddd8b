//! What `df` shows inside a volume. A Lustre client answers `statfs` of a directory with the
//! directory's project quota (its limit as the size, the limit less usage as free) when:
//! - 2.14 and 2.15: the directory has a project ID (LU-9555; always on, no tunable);
//! - 2.16 and later (from 2.15.60): also the project-inherit flag, and the client tunable
//!   `llite.<fsname>-*.statfs_project` is 1, its default (LU-16771).
//!
//! Share directories get both the ID and the inherit flag (`lfs project -p ID -s`), so what
//! is left to check on the node is the tunable, one `lctl get_param` line per client mount,
//! and, where the tunable does not exist, the client's version.

use lustre_model::{parse_lctl_version, parse_llite_param};

use super::{LustreBackend, On, is_enoent, parse_error};
use crate::{Result, VolumeStatfs};

const PARAM: &str = "statfs_project";

pub(super) async fn volume_statfs(b: &LustreBackend) -> Result<VolumeStatfs> {
    let fsname = b.inner.config.fsname.as_str();
    let pattern = format!("llite.{fsname}-*.{PARAM}");
    let argv = b.lctl(["get_param", pattern.as_str()]);
    let out = b.run(On::Node, &argv).await?;
    // No such parameter: `lctl` exits with ENOENT (2), and as root prints
    // `error: get_param: param_path 'llite/<fsname>-*/statfs_project': No such file or directory`.
    if !out.success() && (is_enoent(&out) || out.exit_code == Some(2)) {
        return without_tunable(b, &pattern).await;
    }
    let out = out.check(&argv)?;
    let values = parse_llite_param(&out.stdout_text(), PARAM).map_err(|e| parse_error(&argv, e))?;
    if values.is_empty() {
        return without_tunable(b, &pattern).await;
    }
    let off: Vec<&str> = values
        .iter()
        .filter(|v| v.value == 0)
        .map(|v| v.instance.as_str())
        .collect();
    if !off.is_empty() {
        return Ok(VolumeStatfs::Filesystem {
            why: format!(
                "llite.{}.{PARAM} is 0 on this node; `lctl set_param -P llite.*.{PARAM}=1` \
                 makes df show the quota",
                off.join(",")
            ),
        });
    }
    Ok(VolumeStatfs::ProjectQuota)
}

/// The tunable is missing: either the client predates it (2.14 and 2.15 report the quota
/// anyway, older clients never do) or nothing of `fsname` is mounted here.
async fn without_tunable(b: &LustreBackend, pattern: &str) -> Result<VolumeStatfs> {
    let argv = b.lctl(["get_param", "version"]);
    let out = b.run_ok(On::Node, &argv).await?;
    let version = parse_lctl_version(&out.stdout_text()).map_err(|e| parse_error(&argv, e))?;
    let has_tunable = version.numbers() >= (2, 15, 60, 0);
    Ok(if has_tunable {
        VolumeStatfs::Filesystem {
            why: format!("no {pattern} on this node: the filesystem is not mounted here"),
        }
    } else if version.at_least(2, 14) {
        VolumeStatfs::ProjectQuota
    } else {
        VolumeStatfs::Filesystem {
            why: format!(
                "this node's Lustre client {version} predates statfs of project quotas (2.14)"
            ),
        }
    })
}
