//! The share as callers see it, and the requests that change it. These types are the stable
//! `--json` schema (see docs/json-schema.md): add fields, never rename or remove them.

use std::collections::BTreeMap;

use lustre_model::{NidRange, ProjectId, RelPath, ShareName, VolumeId};
use serde::{Deserialize, Serialize};

/// Read-write or read-only access for a range of clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    Rw,
    Ro,
}

impl AccessLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rw => "rw",
            Self::Ro => "ro",
        }
    }
}

impl std::str::FromStr for AccessLevel {
    type Err = crate::ShareError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rw" | "read-write" => Ok(Self::Rw),
            "ro" | "read-only" => Ok(Self::Ro),
            other => Err(crate::ShareError::InvalidArgument(format!(
                "access level {other:?}: expected rw or ro"
            ))),
        }
    }
}

/// One access rule: clients in `to` (an IP or CIDR, as given) get `level`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccessRule {
    /// The IP address or CIDR, normalised (`10.0.0.0/24`, `10.0.0.5/32`).
    pub to: String,
    pub level: AccessLevel,
    /// The same clients as a Lustre NID range on the configured network.
    pub nid_range: NidRange,
}

/// Where a share is in its lifecycle. Anything but `Ready` is an operation that a crash
/// interrupted; the next call on the share (or `ensure`) finishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareState {
    Creating,
    Ready,
    Deleting,
    Trashed,
}

/// A share: a sub-directory under the prefix with its own project ID and quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub name: ShareName,
    /// Relative to the filesystem root: `<prefix>/<name>`.
    pub path: RelPath,
    pub project_id: ProjectId,
    pub size_bytes: u64,
    pub inode_limit: Option<u64>,
    pub state: ShareState,
    /// `<nid>[:<nid>...]:/<fsname>/<prefix>/<name>`
    pub export_location: String,
    pub volume_id: VolumeId,
    pub access: Vec<AccessRule>,
    /// Free-form labels from the caller (the CSI driver keeps the request name here).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// The tenant the share belongs to (its directory is under the tenant's root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Space and inodes used by one share, from its project quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareUsage {
    pub used_bytes: u64,
    pub limit_bytes: u64,
    pub used_inodes: u64,
    pub inode_limit: Option<u64>,
    pub bytes_exceeded: bool,
    pub inodes_exceeded: bool,
    /// Whether the backend enforces the byte limit or only accounts it.
    pub enforced: bool,
}

/// A request to create a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateShare {
    pub name: ShareName,
    pub size_bytes: u64,
    pub inode_limit: Option<u64>,
    pub labels: BTreeMap<String, String>,
    /// The default layout of the share's directory (stripes, PFL), where the backend has
    /// stripes ([`backend::Capabilities::striping`]); refused elsewhere.
    pub layout: Option<lustre_model::LayoutSpec>,
    /// Compression of what is written in the share, where the backend has it
    /// ([`backend::Namespace::check_compression`]); refused elsewhere.
    pub compression: Option<lustre_model::Compression>,
}

/// What `delete` does with the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Remove the tree now.
    Purge,
    /// Move it to the trash, to be purged after `ttl_secs` (the configured TTL when `None`).
    Trash { ttl_secs: Option<u64> },
}

/// A share in the trash can.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrashEntry {
    pub name: ShareName,
    /// The trash directory name, unique per deletion: `<name>@<deleted_at>`.
    pub id: String,
    pub project_id: ProjectId,
    pub size_bytes: u64,
    pub deleted_at: u64,
    pub expires_at: u64,
}

/// Capacity of the filesystem and how much of it shares have been promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityReport {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub provisioned_bytes: u64,
    pub share_count: usize,
    pub quota_enforced: bool,
}

/// One tenant as the service keeps it: its root, project and how much its shares hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantStatus {
    pub name: String,
    /// Relative to the filesystem root.
    pub root: RelPath,
    pub nodemap: String,
    pub project_id: ProjectId,
    pub quota_bytes: Option<u64>,
    pub provisioned_bytes: u64,
    pub share_count: usize,
}

/// What a tenant reconcile found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantReport {
    pub tenants: Vec<TenantStatus>,
    /// The nodemap changes applied, in order.
    pub changes: Vec<backend::NodemapChange>,
    /// Whether project quotas bind root (Lustre 2.16+ `root_prj_enable`): without it root on
    /// a tenant's node (with `admin`) can write past the tenant's quota.
    pub root_project_quota: backend::RootProjectQuota,
    /// Whether the servers enforce the nodemaps (Lustre) or the node plugin checks them.
    pub nodemaps_enforced_by_server: bool,
}

/// What `ensure` found and did, share by share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnsureReport {
    pub checked: usize,
    pub repaired: Vec<Repair>,
    pub problems: Vec<Problem>,
    pub purged_trash: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    pub share: String,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub share: String,
    pub problem: String,
}
