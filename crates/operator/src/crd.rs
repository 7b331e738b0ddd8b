//! The `LustreFileSystem` custom resource (`lustrekit.io/v1alpha1`): a global Lustre
//! filesystem exposed to chosen namespaces through pre-bound PV/PVC pairs.
//!
//! It is cluster-scoped, unlike HPE's namespaced `lus.cray.hpe.com` one: it makes
//! cluster-scoped PVs and PVCs in other namespaces, which a namespaced owner could neither own
//! nor be trusted to create, and its name is then unique, so the PV names
//! `<name>-<ns>-<mode>-pv` cannot collide between two resources.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every lustrekit resource.
pub const GROUP: &str = "lustrekit.io";

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lustrekit.io",
    version = "v1alpha1",
    kind = "LustreFileSystem",
    plural = "lustrefilesystems",
    shortname = "lfs",
    status = "LustreFileSystemStatus",
    printcolumn = r#"{"name":"FsName","type":"string","jsonPath":".spec.fsName"}"#,
    printcolumn = r#"{"name":"MGS","type":"string","jsonPath":".status.mgsSpec"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.readyNamespaces"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
// PV sources and PVC classes are immutable in Kubernetes, so what they are made of is too:
// a change would leave pairs that no apply can fix.
#[x_kube(validation = Rule::new(
    "has(self.subDirectory) == has(oldSelf.subDirectory) && (!has(self.subDirectory) || self.subDirectory == oldSelf.subDirectory)"
).message("subDirectory is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct LustreFileSystemSpec {
    /// The Lustre filesystem name: 1 to 8 of A-Z a-z 0-9 _ -.
    #[x_kube(validation = Rule::new("self == oldSelf").message("fsName is immutable"))]
    #[schemars(length(min = 1, max = 8), regex(pattern = r"^[A-Za-z0-9_-]{1,8}$"))]
    pub fs_name: String,
    /// The MGS nodes in failover order (a failover pair is two entries), each with its NIDs.
    #[schemars(length(min = 1))]
    pub mgs_nodes: Vec<MgsNode>,
    /// Where clients mount the filesystem (absolute).
    #[schemars(regex(pattern = r"^/"))]
    pub mount_root: String,
    /// The directory below the filesystem root that the volumes expose (relative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), regex(pattern = r"^[^/]"))]
    pub sub_directory: Option<String>,
    /// The storage class the PVs and PVCs carry (it need not exist: they are pre-bound).
    #[x_kube(validation = Rule::new("self == oldSelf").message("storageClassName is immutable"))]
    #[schemars(length(min = 1))]
    pub storage_class_name: String,
    /// The namespaces to expose the filesystem in, each with its access modes.
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceSpec>,
}

/// One MGS node: its NIDs, one per network (`10.0.0.1@tcp`, `10.1.0.1@o2ib`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct MgsNode {
    #[schemars(length(min = 1))]
    pub nids: Vec<String>,
}

/// The access modes a namespace gets; one PV/PVC pair each.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct NamespaceSpec {
    #[schemars(length(min = 1), extend("x-kubernetes-list-type" = "set"))]
    pub modes: Vec<AccessMode>,
}

/// The PV access modes the filesystem can be exposed with.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum AccessMode {
    ReadWriteMany,
    ReadOnlyMany,
}

impl AccessMode {
    /// The name Kubernetes uses (`ReadWriteMany`).
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteMany => "ReadWriteMany",
            AccessMode::ReadOnlyMany => "ReadOnlyMany",
        }
    }

    /// The lowercased name in PV/PVC names (HPE's naming: `readwritemany`).
    pub fn name_part(self) -> &'static str {
        match self {
            AccessMode::ReadWriteMany => "readwritemany",
            AccessMode::ReadOnlyMany => "readonlymany",
        }
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the controller last saw and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LustreFileSystemStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (every pair bound) and `SpecValid`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The MGS address as `mount -t lustre` takes it (`a@tcp,b@o2ib:c@tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mgs_spec: Option<String>,
    /// `<ready>/<listed>` namespaces, for the print column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_namespaces: Option<String>,
    /// Per namespace and mode: the pair and whether it is bound.
    #[serde(default)]
    pub namespaces: BTreeMap<String, NamespaceStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct NamespaceStatus {
    /// Keyed by access mode (`ReadWriteMany`).
    #[serde(default)]
    pub modes: BTreeMap<String, AccessStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessStatus {
    pub state: AccessState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_ref: Option<LocalRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_ref: Option<LocalRef>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessState {
    /// The namespace is missing or terminating, or the PVC is not bound yet.
    Pending,
    /// The PVC is bound to its PV.
    Ready,
}

/// A reference by name (the namespace is the map key above, or none for a PV).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalRef {
    pub name: String,
}

/// The CRD as YAML, as `lustrekit operator crdgen` prints it and deploy/crds/ holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&LustreFileSystem::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI's guard: the committed CRD is what the code generates (regenerate with
    /// `lustrekit operator crdgen > deploy/crds/lustrefilesystems.lustrekit.io.yaml`).
    #[test]
    fn committed_crd_matches_the_code() {
        let committed = include_str!("../../../deploy/crds/lustrefilesystems.lustrekit.io.yaml");
        let generated = crd_yaml().expect("CRD serializes");
        assert!(
            committed == generated,
            "deploy/crds/lustrefilesystems.lustrekit.io.yaml is stale: regenerate it with `lustrekit operator crdgen`"
        );
    }

    #[test]
    fn crd_carries_the_cel_rules_and_is_cluster_scoped() {
        let crd = serde_json::to_string(&LustreFileSystem::crd()).expect("json");
        assert!(crd.contains(r#""rule":"self == oldSelf""#), "{crd}");
        assert!(crd.contains("fsName is immutable"));
        assert!(crd.contains(r#""scope":"Cluster""#));
        assert!(crd.contains(r#""pattern":"^[A-Za-z0-9_-]{1,8}$""#));
    }
}
