//! Where the share service keeps things on the filesystem. Everything lives under the share
//! prefix, so the filesystem alone is the source of truth and any replica can recover it:
//!
//! ```text
//! <prefix>/<share>                       the shares
//! <prefix>/.lustrekit/shares/<share>.json   one record per share
//! <prefix>/.lustrekit/projects/<id>         project-ID claims (made with one mkdir)
//! <prefix>/.lustrekit/locks/<share>/<n>     per-share locks: generation n (mkdir), renewed
//! <prefix>/.lustrekit/trash/<share>@<time>  trashed shares, and their .json records
//! <prefix>/.lustrekit/tenants/<tenant>.json tenant roots' project IDs
//! <prefix>/<tenant root>/<share>          the shares of a tenant
//! ```

use lustre_model::{ProjectId, RelPath, ShareName};

use crate::Result;

pub const META_DIR: &str = ".lustrekit";

#[derive(Debug, Clone)]
pub struct Layout {
    prefix: RelPath,
}

fn child(dir: &RelPath, name: &str) -> Result<RelPath> {
    Ok(dir.join(&ShareName::new(name)?))
}

impl Layout {
    pub fn new(prefix: RelPath) -> Self {
        Self { prefix }
    }

    pub fn prefix(&self) -> &RelPath {
        &self.prefix
    }

    pub fn meta(&self) -> Result<RelPath> {
        child(&self.prefix, META_DIR)
    }

    pub fn share_dir(&self, name: &ShareName) -> RelPath {
        self.prefix.join(name)
    }

    pub fn records_dir(&self) -> Result<RelPath> {
        child(&self.meta()?, "shares")
    }

    pub fn record(&self, name: &ShareName) -> Result<RelPath> {
        child(&self.records_dir()?, &format!("{name}.json"))
    }

    pub fn projects_dir(&self) -> Result<RelPath> {
        child(&self.meta()?, "projects")
    }

    pub fn project_claim(&self, id: ProjectId) -> Result<RelPath> {
        child(&self.projects_dir()?, &id.get().to_string())
    }

    pub fn locks_dir(&self) -> Result<RelPath> {
        child(&self.meta()?, "locks")
    }

    pub fn lock(&self, key: &str) -> Result<RelPath> {
        child(&self.locks_dir()?, key)
    }

    pub fn tenants_dir(&self) -> Result<RelPath> {
        child(&self.meta()?, "tenants")
    }

    pub fn tenant_record(&self, name: &str) -> Result<RelPath> {
        child(&self.tenants_dir()?, &format!("{name}.json"))
    }

    pub fn trash_dir(&self) -> Result<RelPath> {
        child(&self.meta()?, "trash")
    }

    pub fn trash_entry(&self, id: &str) -> Result<RelPath> {
        child(&self.trash_dir()?, id)
    }

    pub fn trash_record(&self, id: &str) -> Result<RelPath> {
        child(&self.trash_dir()?, &format!("{id}.json"))
    }
}
