//! HPE's `LustreFileSystem` (`lus.cray.hpe.com/v1beta1`, from NearNodeFlash's
//! lustre-fs-operator), served as it is, so a Rabbit site can swap operators without
//! rewriting its resources: the same fields, defaults and immutability rules (HPE's webhook
//! checks become CEL rules), the same status shape, the same PV/PVC names.
//!
//! Its spec becomes the plan's [`Input`], so it makes the same pairs as ours. Two things
//! differ from our kind and are handled here:
//! - it is namespaced while PVs are cluster-scoped, so its pairs are found by two labels
//!   (name and namespace) and deleted through the finalizer, never by ownerReferences
//!   (a namespaced owner of a cluster-scoped object is garbage-collected at once);
//! - it has no sub-directory, so the operator supplies one for every such resource.
//!
//! Its finalizer is HPE's own (`lus.cray.hpe.com/lustre_fs`): resources the other operator
//! left behind already carry it, and are then cleaned up here instead of hanging.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, CustomResource, CustomResourceExt, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::controller::{OperatorOptions, Served};
use crate::crd::{
    AccessMode, LustreFileSystemSpec, LustreFileSystemStatus, MgsNode, NamespaceSpec,
    NamespaceStatus,
};
use crate::plan::{Input, SpecError};

/// HPE's API group.
pub const GROUP: &str = "lus.cray.hpe.com";
/// HPE's finalizer, held until the pairs are deleted.
pub const FINALIZER: &str = "lus.cray.hpe.com/lustre_fs";
/// The labels that mark the pairs of one HPE resource (a name is unique only within its
/// namespace, and must not be confused with our cluster-scoped kind's).
pub const FILESYSTEM_LABEL: &str = "lustrekit.io/hpe-filesystem";
pub const NAMESPACE_LABEL: &str = "lustrekit.io/hpe-filesystem-namespace";
/// HPE's default storage class.
pub const DEFAULT_STORAGE_CLASS: &str = "nnf-lustre-fs";

fn default_storage_class() -> String {
    DEFAULT_STORAGE_CLASS.to_string()
}

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lus.cray.hpe.com",
    version = "v1beta1",
    kind = "LustreFileSystem",
    root = "HpeLustreFileSystem",
    plural = "lustrefilesystems",
    namespaced,
    status = "HpeLustreFileSystemStatus",
    printcolumn = r#"{"name":"FSNAME","type":"string","jsonPath":".spec.name","description":"Lustre file system name"}"#,
    printcolumn = r#"{"name":"MGSNIDS","type":"string","jsonPath":".spec.mgsNids","description":"List of MGS NIDs"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"MountRoot","type":"string","jsonPath":".spec.mountRoot","priority":1,"description":"Mount path used to mount filesystem"}"#,
    printcolumn = r#"{"name":"StorageClass","type":"string","jsonPath":".spec.storageClassName","priority":1,"description":"StorageClass to use"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HpeLustreFileSystemSpec {
    /// Name is the name of the Lustre file system.
    #[x_kube(validation = Rule::new("self == oldSelf").message("name is immutable"))]
    #[schemars(length(min = 1, max = 8))]
    pub name: String,
    /// MgsNids is the list of comma- and colon- separated NIDs of the MGS nodes to use for
    /// accessing the Lustre file system.
    #[x_kube(validation = Rule::new("self == oldSelf").message("mgsNids is immutable"))]
    pub mgs_nids: String,
    /// MountRoot is the mount path used to access the Lustre file system from a host.
    #[x_kube(validation = Rule::new("self == oldSelf").message("mountRoot is immutable"))]
    #[schemars(regex(pattern = r"^/"))]
    pub mount_root: String,
    /// StorageClassName refers to the StorageClass to use for this file system.
    #[x_kube(validation = Rule::new("self == oldSelf").message("storageClassName is immutable"))]
    #[serde(default = "default_storage_class")]
    pub storage_class_name: String,
    /// Namespaces defines a map of namespaces with access to the Lustre file systems.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, HpeNamespaceSpec>,
}

/// One namespace's access: HPE takes any PV access mode here; the ones not served are
/// refused by a condition, not by the schema, as HPE's schema lets them through.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct HpeNamespaceSpec {
    /// Modes list the persistent volume access modes for accessing the Lustre file system.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modes: Vec<String>,
}

/// HPE's status (`namespaces`, per namespace and mode: state and refs), plus our
/// `conditions`, which HPE's clients do not read and so do not mind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HpeLustreFileSystemStatus {
    /// Namespaces contains the namespaces supported for this Lustre file system and their
    /// corresponding status.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, NamespaceStatus>,
    /// `Ready` (every pair bound) and `SpecValid` (lustrekit's addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The labels of the pairs of the HPE resource `namespace/name`.
pub fn owner_labels(namespace: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (FILESYSTEM_LABEL.to_string(), name.to_string()),
        (NAMESPACE_LABEL.to_string(), namespace.to_string()),
    ])
}

/// HPE's `mgsNids`: failover nodes separated by `:`, each node's NIDs by `,`
/// (`10.0.0.1@tcp,10.1.0.1@o2ib:10.0.0.2@tcp`). Every NID must parse as a
/// [`lustre_model::Nid`]; the plan then joins them back the same way.
pub fn mgs_nodes(nids: &str) -> Result<Vec<MgsNode>, SpecError> {
    let invalid = |reason: String| SpecError::MgsNids {
        nids: nids.to_string(),
        reason,
    };
    let mut nodes = Vec::new();
    for node in nids.trim().split(':') {
        let mut parsed = Vec::new();
        for nid in node.split(',') {
            let nid = nid.trim();
            if nid.is_empty() {
                return Err(invalid("an empty NID".into()));
            }
            let nid: lustre_model::Nid = nid
                .parse()
                .map_err(|e: lustre_model::ModelError| invalid(e.to_string()))?;
            parsed.push(nid.to_string());
        }
        nodes.push(MgsNode { nids: parsed });
    }
    Ok(nodes)
}

impl HpeLustreFileSystem {
    /// The plan's input: HPE's fields under our names, the operator's sub-directory, and
    /// labels naming this resource's namespace too.
    pub fn input(&self, sub_directory: Option<&str>) -> Result<Input, SpecError> {
        let name = self.name_any();
        let namespace = self.namespace().unwrap_or_default();
        let spec = &self.spec;
        let mgs_nodes = mgs_nodes(&spec.mgs_nids)?;
        let sub_directory = sub_directory.ok_or(SpecError::NoHpeSubDirectory)?;
        let mut namespaces = BTreeMap::new();
        for (ns, access) in &spec.namespaces {
            let mut modes = Vec::with_capacity(access.modes.len());
            for mode in &access.modes {
                let served = match mode.as_str() {
                    "ReadWriteMany" => AccessMode::ReadWriteMany,
                    "ReadOnlyMany" => AccessMode::ReadOnlyMany,
                    _ => {
                        return Err(SpecError::UnservedMode {
                            namespace: ns.clone(),
                            mode: mode.clone(),
                        });
                    }
                };
                modes.push(served);
            }
            namespaces.insert(ns.clone(), NamespaceSpec { modes });
        }
        Ok(Input {
            owner: owner_labels(&namespace, &name),
            name,
            spec: LustreFileSystemSpec {
                fs_name: spec.name.clone(),
                mgs_nodes,
                mount_root: spec.mount_root.clone(),
                sub_directory: Some(sub_directory.to_string()),
                storage_class_name: spec.storage_class_name.clone(),
                namespaces,
            },
        })
    }
}

impl Served for HpeLustreFileSystem {
    const RESOURCE: &'static str = "lustrefilesystems.lus.cray.hpe.com";
    const FINALIZER: &'static str = FINALIZER;

    fn api(&self, client: Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }

    fn owner(&self) -> BTreeMap<String, String> {
        owner_labels(&self.namespace().unwrap_or_default(), &self.name_any())
    }

    fn owner_of(labels: &BTreeMap<String, String>) -> Option<ObjectRef<Self>> {
        let name = labels.get(FILESYSTEM_LABEL)?;
        let namespace = labels.get(NAMESPACE_LABEL)?;
        Some(ObjectRef::new(name).within(namespace))
    }

    fn lists(&self, namespace: &str) -> bool {
        self.spec.namespaces.contains_key(namespace)
    }

    fn input(&self, options: &OperatorOptions) -> Result<Input, SpecError> {
        HpeLustreFileSystem::input(self, options.hpe_sub_directory.as_deref())
    }

    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default()
    }

    /// HPE's shape: the namespaces and our conditions; the MGS spec and the ready count
    /// have no place in it.
    fn status(&self, status: LustreFileSystemStatus) -> serde_json::Value {
        json!(HpeLustreFileSystemStatus {
            namespaces: status.namespaces,
            conditions: status.conditions,
        })
    }
}

/// The CRD as YAML, as `lustrekit operator crdgen` prints it and deploy/crds/ holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&HpeLustreFileSystem::crd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{self, NamespacePhase};
    use std::collections::BTreeSet;

    /// CI's guard: the committed CRD is what the code generates (regenerate with
    /// `lustrekit operator crdgen --group lus.cray.hpe.com > deploy/crds/lustrefilesystems.lus.cray.hpe.com.yaml`).
    #[test]
    fn committed_crd_matches_the_code() {
        let committed =
            include_str!("../../../deploy/crds/lustrefilesystems.lus.cray.hpe.com.yaml");
        let generated = crd_yaml().expect("CRD serializes");
        assert!(
            committed == generated,
            "deploy/crds/lustrefilesystems.lus.cray.hpe.com.yaml is stale: regenerate it with `lustrekit operator crdgen --group lus.cray.hpe.com`"
        );
    }

    /// HPE's own sample (config/samples/lus_v1beta1_lustrefilesystem.yaml), as a site
    /// writes it: no storage class, one namespace.
    const SAMPLE: &str = r#"
apiVersion: lus.cray.hpe.com/v1beta1
kind: LustreFileSystem
metadata:
  name: kauai
  namespace: nnf-lustre-fs-system
spec:
  name: kauai
  mgsNids: 172.0.0.1@tcp
  mountRoot: /lus/kauai
  namespaces:
    default:
      modes:
        - ReadWriteMany
"#;

    fn sample() -> HpeLustreFileSystem {
        serde_yaml::from_str(SAMPLE).expect("HPE's sample parses")
    }

    #[test]
    fn hpe_sample_converts_to_the_same_pairs_as_ours() {
        let hpe = sample();
        assert_eq!(hpe.spec.storage_class_name, DEFAULT_STORAGE_CLASS);
        let input = hpe.input(Some("lustre")).expect("converts");
        assert_eq!(input.name, "kauai");
        assert_eq!(input.spec.fs_name, "kauai");
        assert_eq!(
            input.owner,
            owner_labels("nnf-lustre-fs-system", "kauai"),
            "its pairs carry its namespace too"
        );
        let phases = BTreeMap::from([("default".to_string(), NamespacePhase::Active)]);
        let p = plan::plan_input(&input, &phases, &BTreeSet::new(), "drv").expect("plan");
        assert_eq!(p.pairs.len(), 1);
        let pair = &p.pairs[0];
        assert_eq!(pair.pv.name_any(), "kauai-default-readwritemany-pv");
        assert_eq!(pair.pvc.name_any(), "kauai-default-readwritemany-pvc");
        let csi = pair
            .pv
            .spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .expect("csi");
        assert_eq!(csi.volume_handle, "kauai-default-readwritemany-pv");
        let labels = pair.pv.labels();
        assert_eq!(labels[FILESYSTEM_LABEL], "kauai");
        assert_eq!(labels[NAMESPACE_LABEL], "nnf-lustre-fs-system");
        assert!(!labels.contains_key(plan::FILESYSTEM_LABEL));
        assert_eq!(p.mgs_spec, "172.0.0.1@tcp");
        // HPE's status shape: namespaces.<ns>.modes.<mode>.{state,persistentVolumeRef}.
        let status = HpeLustreFileSystemStatus {
            namespaces: p.namespaces,
            conditions: vec![],
        };
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(
            json["namespaces"]["default"]["modes"]["ReadWriteMany"]["persistentVolumeRef"]["name"],
            "kauai-default-readwritemany-pv"
        );
        assert_eq!(
            json["namespaces"]["default"]["modes"]["ReadWriteMany"]["state"],
            "Pending"
        );
        assert!(json.get("conditions").is_none());
    }

    #[test]
    fn failover_nids_keep_their_nodes() {
        let nodes = mgs_nodes("10.0.0.1@tcp,10.1.0.1@o2ib:10.0.0.2@tcp").expect("parses");
        assert_eq!(
            nodes,
            vec![
                MgsNode {
                    nids: vec!["10.0.0.1@tcp".into(), "10.1.0.1@o2ib".into()]
                },
                MgsNode {
                    nids: vec!["10.0.0.2@tcp".into()]
                },
            ]
        );
    }

    #[test]
    fn bad_input_is_refused_with_the_field() {
        for nids in [
            "172.0.0.1",
            "mgs@tcp",
            "10.0.0.1@tcp,",
            "10.0.0.1@tcp::10.0.0.2@tcp",
            "",
        ] {
            let mut hpe = sample();
            hpe.spec.mgs_nids = nids.into();
            let e = hpe.input(Some("lustre")).expect_err(nids);
            assert!(matches!(e, SpecError::MgsNids { .. }), "{nids}: {e}");
            assert!(e.to_string().starts_with("spec.mgsNids"), "{e}");
        }
        let mut hpe = sample();
        hpe.spec.namespaces.insert(
            "other".into(),
            HpeNamespaceSpec {
                modes: vec!["ReadWriteOnce".into()],
            },
        );
        assert!(matches!(
            hpe.input(Some("lustre")),
            Err(SpecError::UnservedMode { .. })
        ));
        assert_eq!(sample().input(None), Err(SpecError::NoHpeSubDirectory));
        // What the schema lets through and our checks refuse: the plan says so.
        let mut hpe = sample();
        hpe.spec.name = "a.b".into();
        let input = hpe.input(Some("lustre")).expect("converts");
        assert!(matches!(
            plan::plan_input(&input, &BTreeMap::new(), &BTreeSet::new(), "drv"),
            Err(SpecError::FsName(..))
        ));
    }

    #[test]
    fn crd_is_hpes_namespaced_v1beta1_with_its_rules() {
        let crd = serde_json::to_value(HpeLustreFileSystem::crd()).expect("json");
        assert_eq!(
            crd["metadata"]["name"],
            "lustrefilesystems.lus.cray.hpe.com"
        );
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["versions"][0]["name"], "v1beta1");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["storageClassName"]["default"],
            "nnf-lustre-fs"
        );
        assert_eq!(spec["properties"]["name"]["maxLength"], 8);
        let required: Vec<&str> = spec["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(required, ["mgsNids", "mountRoot", "name"]);
        let text = crd.to_string();
        assert!(text.contains("mgsNids is immutable"), "{text}");
    }
}
