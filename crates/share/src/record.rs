//! The per-share record kept on the filesystem, and how a [`Share`] is derived from it.

use std::collections::BTreeMap;

use lustre_model::{ProjectId, ShareName};
use serde::{Deserialize, Serialize};

use crate::model::{AccessRule, ShareState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: ShareName,
    pub project_id: ProjectId,
    pub size_bytes: u64,
    pub inode_limit: Option<u64>,
    pub state: ShareState,
    #[serde(default)]
    pub access: Vec<AccessRule>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: u64,
    /// Set while a delete into the trash is under way, and on trash records.
    #[serde(default)]
    pub trash_id: Option<String>,
    #[serde(default)]
    pub deleted_at: Option<u64>,
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// The directory's default layout, as asked at create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<lustre_model::LayoutSpec>,
    /// The tenant the share belongs to, and the tenant's root when it was made (the share
    /// lives at `<tenant_root>/<name>`, wherever the configuration moves the root later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<crate::tenant::TenantName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_root: Option<lustre_model::RelPath>,
    /// The directory's compression, as asked at create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<lustre_model::Compression>,
}
