//! Project-ID allocation: collision-free across processes and restarts because each ID is
//! claimed with one atomic `mkdir` on the filesystem itself; the claims directory is the
//! whole state, so a restart recovers it by listing.

use std::collections::HashSet;

use backend::Filesystem;
use lustre_model::{ProjectId, ProjectRange};

use crate::layout::Layout;
use crate::{Result, ShareError};

/// IDs currently claimed (whatever their range).
pub async fn claimed(fs: &dyn Filesystem, layout: &Layout) -> Result<HashSet<u32>> {
    Ok(fs
        .list_dir(&layout.projects_dir()?)
        .await?
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect())
}

/// Claims the first free ID of `range`. Another process may claim the same candidate first;
/// then the next one is tried.
pub async fn allocate(
    fs: &dyn Filesystem,
    layout: &Layout,
    range: &ProjectRange,
) -> Result<ProjectId> {
    let taken = claimed(fs, layout).await?;
    for id in range.iter() {
        if taken.contains(&id.get()) {
            continue;
        }
        if fs.claim(&layout.project_claim(id)?).await? {
            return Ok(id);
        }
    }
    Err(ShareError::ProjectIdsExhausted {
        range: format!("{}-{}", range.start.get(), range.end.get()),
    })
}

pub async fn release(fs: &dyn Filesystem, layout: &Layout, id: ProjectId) -> Result<()> {
    fs.unclaim(&layout.project_claim(id)?).await?;
    Ok(())
}
