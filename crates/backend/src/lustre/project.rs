//! Project IDs: `lfs project -p ID -s DIR` sets the ID with the inherit flag, so everything
//! made inside counts against the project; `lfs project -d DIR` reads the directory's own
//! entry (`%5u %c %s`, see `lfs-project.md`).

use lustre_model::{ProjectId, RelPath};

use super::{LustreBackend, On, is_enoent, parse_error};
use crate::{BackendError, Result};

pub(super) async fn set_project(b: &LustreBackend, dir: &RelPath, id: ProjectId) -> Result<()> {
    let path = b.path(dir);
    let id = id.get().to_string();
    let argv = b.lfs(["project", "-p", &id, "-s", &path]);
    let out = b.run(On::Mds, &argv).await?;
    if !out.success() && is_enoent(&out) {
        return Err(BackendError::NotFound {
            path: dir.as_str().to_owned(),
        });
    }
    out.check(&argv)?;
    Ok(())
}

/// The project ID of `dir` itself; `None` when it has none (ID 0). An absent directory is
/// [`BackendError::NotFound`].
pub(super) async fn project_of(b: &LustreBackend, dir: &RelPath) -> Result<Option<ProjectId>> {
    let path = b.path(dir);
    let argv = b.lfs(["project", "-d", &path]);
    let out = b.run(On::Mds, &argv).await?;
    if !out.success() {
        if is_enoent(&out) {
            return Err(BackendError::NotFound {
                path: dir.as_str().to_owned(),
            });
        }
        return Err(out.error(&argv));
    }
    let entries =
        lustre_model::parse_lfs_project(&out.stdout_text()).map_err(|e| parse_error(&argv, e))?;
    // `-d` prints exactly the directory's own line.
    let Some(entry) = entries.first() else {
        return Err(parse_error(
            &argv,
            lustre_model::ParseError::new("lfs project", 0, "no entry for the directory"),
        ));
    };
    if entry.id == 0 {
        return Ok(None);
    }
    if !entry.inherit {
        tracing::warn!(
            dir = dir.as_str(),
            id = entry.id,
            "project ID set without the inherit flag"
        );
    }
    Ok(Some(ProjectId::new(entry.id)?))
}
