//! Capacity: the `filesystem_summary:` rows of `lfs df MOUNT` (KiB) and `lfs df -i MOUNT`
//! (inodes); see `lfs-df.md`.

use lustre_model::{DfReport, ParseError};

use super::{LustreBackend, On, parse_error};
use crate::{Capacity, Result};

async fn df(b: &LustreBackend, inodes: bool) -> Result<DfReport> {
    let mount = b.inner.mount_point.clone();
    let argv = if inodes {
        b.lfs(["df", "-i", &mount])
    } else {
        b.lfs(["df", &mount])
    };
    let out = b.run_ok(On::Mds, &argv).await?;
    let reports =
        lustre_model::parse_lfs_df(&out.stdout_text()).map_err(|e| parse_error(&argv, e))?;
    reports.into_iter().next().ok_or_else(|| {
        parse_error(
            &argv,
            ParseError::new("lfs df", 0, "no filesystem_summary line"),
        )
    })
}

pub(super) async fn capacity(b: &LustreBackend) -> Result<Capacity> {
    let blocks = df(b, false).await?;
    let inodes = df(b, true).await?;
    let space = blocks.summary_bytes().ok_or_else(|| {
        parse_error(
            &b.lfs(["df", b.inner.mount_point.as_str()]),
            ParseError::new("lfs df", 0, "expected a block table, got an inode table"),
        )
    })?;
    Ok(Capacity {
        total_bytes: space.total_bytes,
        used_bytes: space.used_bytes,
        available_bytes: space.available_bytes,
        total_inodes: inodes.summary.total,
        used_inodes: inodes.summary.used,
        free_inodes: inodes.summary.available,
    })
}
