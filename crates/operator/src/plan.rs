//! The pure half of reconciling a `LustreFileSystem`: from the resource, the state of the
//! namespaces it lists and which of its PVCs are bound, the PV/PVC pairs that should exist
//! and the status to report. No I/O, so every rule here is unit-tested.
//!
//! Both kinds served (ours and HPE's, [`crate::hpe`]) are first turned into one [`Input`],
//! so they make the same pairs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use lustre_model::{FsName, Nid, RelPath};

use crate::crd::{
    AccessMode, AccessState, AccessStatus, LocalRef, LustreFileSystem, LustreFileSystemSpec,
    NamespaceStatus,
};

/// The label that marks a PV or PVC as made for a `LustreFileSystem` (its value: the name).
pub const FILESYSTEM_LABEL: &str = "lustrekit.io/filesystem";
/// Set on every object the operator makes; its watches select on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "lustrekit-operator";
/// The size PVs and PVCs carry. Kubernetes needs one for binding; a static Lustre volume has
/// no size of its own (quotas, if any, are the filesystem's), so it is only nominal.
pub const NOMINAL_CAPACITY: &str = "1Pi";

/// A spec the API server's schema let through but that cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("spec.fsName {0:?}: {1}")]
    FsName(String, String),
    #[error("spec.mgsNodes[{node}].nids[{index}] {nid:?}: {reason}")]
    Nid {
        node: usize,
        index: usize,
        nid: String,
        reason: String,
    },
    #[error("spec.mgsNodes[{0}] has no NIDs")]
    EmptyMgsNode(usize),
    #[error("spec.mgsNodes is empty")]
    NoMgs,
    #[error("spec.subDirectory {0:?}: {1}")]
    SubDirectory(String, String),
    #[error(
        "spec.subDirectory is required: the CSI driver serves static volumes below the filesystem root, not the root itself"
    )]
    NoSubDirectory,
    #[error("spec.namespaces[{0:?}] lists mode {1} twice")]
    DuplicateMode(String, AccessMode),
    #[error("spec.namespaces[{name:?}]: {reason}")]
    Namespace { name: String, reason: String },
    #[error("spec.mgsNids {nids:?}: {reason}")]
    MgsNids { nids: String, reason: String },
    #[error(
        "spec.namespaces[{namespace:?}].modes: {mode:?} is not served (only ReadWriteMany and ReadOnlyMany)"
    )]
    UnservedMode { namespace: String, mode: String },
    #[error(
        "no sub-directory for lus.cray.hpe.com resources: the CSI driver serves static volumes below the filesystem root, so the operator needs one (--hpe-sub-directory)"
    )]
    NoHpeSubDirectory,
}

/// What a plan is made from, whichever resource kind asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The resource's name: the first part of every PV and PVC name.
    pub name: String,
    /// The labels that mark the pairs made for this resource and no other one.
    pub owner: BTreeMap<String, String>,
    pub spec: LustreFileSystemSpec,
}

/// The labels of the pairs of the `LustreFileSystem` named `name`.
pub fn owner_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(FILESYSTEM_LABEL.to_string(), name.to_string())])
}

impl From<&LustreFileSystem> for Input {
    fn from(lfs: &LustreFileSystem) -> Self {
        let name = lfs.name_any();
        Input {
            owner: owner_labels(&name),
            name,
            spec: lfs.spec.clone(),
        }
    }
}

/// A listed namespace as the API server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespacePhase {
    Active,
    Terminating,
}

/// One pair the controller should make.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub namespace: String,
    pub mode: AccessMode,
    pub pv: PersistentVolume,
    pub pvc: PersistentVolumeClaim,
}

/// What a reconcile should converge to.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Pairs for the listed namespaces that exist and are not terminating.
    pub pairs: Vec<Pair>,
    pub namespaces: BTreeMap<String, NamespaceStatus>,
    /// `<ready>/<listed>`.
    pub ready_namespaces: String,
    pub all_ready: bool,
    pub mgs_spec: String,
}

impl Plan {
    /// The PV names this plan keeps; any other PV labelled for the filesystem is stale.
    pub fn pv_names(&self) -> BTreeSet<String> {
        self.pairs.iter().map(|p| p.pv.name_any()).collect()
    }

    /// The (namespace, name) of the PVCs this plan keeps.
    pub fn pvc_keys(&self) -> BTreeSet<(String, String)> {
        self.pairs
            .iter()
            .map(|p| (p.namespace.clone(), p.pvc.name_any()))
            .collect()
    }
}

/// `<name>-<ns>-<mode>-pv` (HPE's naming).
pub fn pv_name(fs: &str, namespace: &str, mode: AccessMode) -> String {
    format!("{fs}-{namespace}-{}-pv", mode.name_part())
}

/// `<name>-<ns>-<mode>-pvc`.
pub fn pvc_name(fs: &str, namespace: &str, mode: AccessMode) -> String {
    format!("{fs}-{namespace}-{}-pvc", mode.name_part())
}

/// The MGS address `mount -t lustre` takes: NIDs of one node joined by `,`, failover nodes
/// by `:`. Every NID is checked with [`Nid`].
pub fn mgs_spec(spec: &LustreFileSystemSpec) -> Result<String, SpecError> {
    if spec.mgs_nodes.is_empty() {
        return Err(SpecError::NoMgs);
    }
    let mut nodes = Vec::with_capacity(spec.mgs_nodes.len());
    for (node, mgs) in spec.mgs_nodes.iter().enumerate() {
        if mgs.nids.is_empty() {
            return Err(SpecError::EmptyMgsNode(node));
        }
        let mut nids = Vec::with_capacity(mgs.nids.len());
        for (index, text) in mgs.nids.iter().enumerate() {
            let nid: Nid = text
                .parse()
                .map_err(|e: lustre_model::ModelError| SpecError::Nid {
                    node,
                    index,
                    nid: text.clone(),
                    reason: e.to_string(),
                })?;
            nids.push(nid.to_string());
        }
        nodes.push(nids.join(","));
    }
    Ok(nodes.join(":"))
}

/// Checks what the schema cannot: the fs name's characters, the NIDs, the sub-directory.
fn validate(spec: &LustreFileSystemSpec) -> Result<(String, RelPath), SpecError> {
    FsName::new(&spec.fs_name)
        .map_err(|e| SpecError::FsName(spec.fs_name.clone(), e.to_string()))?;
    let mgs = mgs_spec(spec)?;
    let sub = spec
        .sub_directory
        .as_deref()
        .ok_or(SpecError::NoSubDirectory)?;
    let sub_path = RelPath::parse(sub.trim_end_matches('/'))
        .map_err(|e| SpecError::SubDirectory(sub.to_string(), e.to_string()))?;
    for (ns, access) in &spec.namespaces {
        // A DNS-1123 label, as Kubernetes requires of namespace names.
        let valid = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !valid {
            return Err(SpecError::Namespace {
                name: ns.clone(),
                reason: "not a valid namespace name".into(),
            });
        }
        let mut seen = BTreeSet::new();
        for mode in &access.modes {
            if !seen.insert(*mode) {
                return Err(SpecError::DuplicateMode(ns.clone(), *mode));
            }
        }
    }
    Ok((mgs, sub_path))
}

/// The plan for `lfs`, given the phases of the listed namespaces that exist (absent: missing)
/// and the `(namespace, pvc name)` of its PVCs that are bound.
pub fn plan(
    lfs: &LustreFileSystem,
    namespaces: &BTreeMap<String, NamespacePhase>,
    bound: &BTreeSet<(String, String)>,
    driver: &str,
) -> Result<Plan, SpecError> {
    plan_input(&Input::from(lfs), namespaces, bound, driver)
}

/// [`plan`] for either kind, from its [`Input`].
pub fn plan_input(
    input: &Input,
    namespaces: &BTreeMap<String, NamespacePhase>,
    bound: &BTreeSet<(String, String)>,
    driver: &str,
) -> Result<Plan, SpecError> {
    let (mgs, sub_path) = validate(&input.spec)?;
    let name = &input.name;
    let mut pairs = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut ready_count = 0;
    for (ns, access) in &input.spec.namespaces {
        let active = namespaces.get(ns) == Some(&NamespacePhase::Active);
        let mut status = NamespaceStatus::default();
        let mut ns_ready = true;
        for &mode in &access.modes {
            let pv = pv_name(name, ns, mode);
            let pvc = pvc_name(name, ns, mode);
            let ready = active && bound.contains(&(ns.clone(), pvc.clone()));
            ns_ready &= ready;
            status.modes.insert(
                mode.as_str().to_string(),
                AccessStatus {
                    state: if ready {
                        AccessState::Ready
                    } else {
                        AccessState::Pending
                    },
                    persistent_volume_ref: active.then(|| LocalRef { name: pv.clone() }),
                    persistent_volume_claim_ref: active.then(|| LocalRef { name: pvc.clone() }),
                },
            );
            if active {
                pairs.push(Pair {
                    namespace: ns.clone(),
                    mode,
                    pv: persistent_volume(input, &pv, &pvc, ns, mode, &sub_path, driver),
                    pvc: persistent_volume_claim(input, &pv, &pvc, ns, mode),
                });
            }
        }
        if ns_ready {
            ready_count += 1;
        }
        statuses.insert(ns.clone(), status);
    }
    let listed = input.spec.namespaces.len();
    Ok(Plan {
        pairs,
        namespaces: statuses,
        ready_namespaces: format!("{ready_count}/{listed}"),
        all_ready: ready_count == listed,
        mgs_spec: mgs,
    })
}

fn labels(input: &Input) -> BTreeMap<String, String> {
    let mut labels = input.owner.clone();
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    labels
}

/// A static volume of our CSI driver (see crates/csi/src/volume.rs `node_volume`): the
/// context names `static`, `sharePath` and `fsName`, so a driver serving another filesystem
/// refuses it instead of mounting the wrong one. The handle is the PV's name: unique, which
/// kubelet needs, and with no project ID to put in a `v1/...` handle.
fn persistent_volume(
    input: &Input,
    pv: &str,
    pvc: &str,
    ns: &str,
    mode: AccessMode,
    sub_path: &RelPath,
    driver: &str,
) -> PersistentVolume {
    let attributes = BTreeMap::from([
        (csi::volume::context::STATIC.to_string(), "true".to_string()),
        (
            csi::volume::context::SHARE_PATH.to_string(),
            sub_path.to_string(),
        ),
        (
            csi::volume::context::FS_NAME.to_string(),
            input.spec.fs_name.clone(),
        ),
    ]);
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv.to_string()),
            labels: Some(labels(input)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(vec![mode.as_str().to_string()]),
            capacity: Some(BTreeMap::from([(
                "storage".to_string(),
                Quantity(NOMINAL_CAPACITY.to_string()),
            )])),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(ns.to_string()),
                name: Some(pvc.to_string()),
                ..ObjectReference::default()
            }),
            csi: Some(CSIPersistentVolumeSource {
                driver: driver.to_string(),
                volume_handle: pv.to_string(),
                read_only: Some(mode == AccessMode::ReadOnlyMany),
                volume_attributes: Some(attributes),
                ..CSIPersistentVolumeSource::default()
            }),
            // Never Delete: the data belongs to the filesystem, not to the pair.
            persistent_volume_reclaim_policy: Some("Retain".into()),
            storage_class_name: Some(input.spec.storage_class_name.clone()),
            volume_mode: Some("Filesystem".into()),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

fn persistent_volume_claim(
    input: &Input,
    pv: &str,
    pvc: &str,
    ns: &str,
    mode: AccessMode,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(pvc.to_string()),
            namespace: Some(ns.to_string()),
            labels: Some(labels(input)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![mode.as_str().to_string()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(NOMINAL_CAPACITY.to_string()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            storage_class_name: Some(input.spec.storage_class_name.clone()),
            volume_mode: Some("Filesystem".into()),
            volume_name: Some(pv.to_string()),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{LustreFileSystemSpec, MgsNode, NamespaceSpec};
    use std::collections::HashMap;

    fn lfs(namespaces: &[(&str, &[AccessMode])]) -> LustreFileSystem {
        LustreFileSystem::new(
            "lus",
            LustreFileSystemSpec {
                fs_name: "lfs1".into(),
                mgs_nodes: vec![
                    MgsNode {
                        nids: vec!["10.0.0.1@tcp".into(), "10.1.0.1@o2ib".into()],
                    },
                    MgsNode {
                        nids: vec!["10.0.0.2@tcp".into()],
                    },
                ],
                mount_root: "/lus/lfs1".into(),
                sub_directory: Some("projects".into()),
                storage_class_name: "lustre".into(),
                namespaces: namespaces
                    .iter()
                    .map(|(ns, modes)| {
                        (
                            ns.to_string(),
                            NamespaceSpec {
                                modes: modes.to_vec(),
                            },
                        )
                    })
                    .collect(),
            },
        )
    }

    const RWX: AccessMode = AccessMode::ReadWriteMany;
    const ROX: AccessMode = AccessMode::ReadOnlyMany;

    #[test]
    fn one_prebound_pair_per_active_namespace_and_mode() {
        let lfs = lfs(&[("a", &[RWX, ROX]), ("b", &[RWX])]);
        let phases = BTreeMap::from([
            ("a".to_string(), NamespacePhase::Active),
            ("b".to_string(), NamespacePhase::Active),
        ]);
        let p = plan(&lfs, &phases, &BTreeSet::new(), "drv").unwrap();
        let names: Vec<_> = p.pairs.iter().map(|p| p.pv.name_any()).collect();
        assert_eq!(
            names,
            [
                "lus-a-readwritemany-pv",
                "lus-a-readonlymany-pv",
                "lus-b-readwritemany-pv"
            ]
        );
        let pair = &p.pairs[1];
        let pv = pair.pv.spec.as_ref().unwrap();
        let claim = pv.claim_ref.as_ref().unwrap();
        assert_eq!(claim.namespace.as_deref(), Some("a"));
        assert_eq!(claim.name.as_deref(), Some("lus-a-readonlymany-pvc"));
        let pvc = pair.pvc.spec.as_ref().unwrap();
        assert_eq!(pvc.volume_name.as_deref(), Some("lus-a-readonlymany-pv"));
        assert_eq!(pair.pvc.namespace().as_deref(), Some("a"));
        assert_eq!(pv.access_modes, Some(vec!["ReadOnlyMany".to_string()]));
        assert_eq!(
            pv.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        let csi = pv.csi.as_ref().unwrap();
        assert_eq!(csi.driver, "drv");
        assert_eq!(csi.read_only, Some(true));
        assert_eq!(p.mgs_spec, "10.0.0.1@tcp,10.1.0.1@o2ib:10.0.0.2@tcp");
        assert_eq!(p.ready_namespaces, "0/2");
        assert!(!p.all_ready);
        assert_eq!(
            p.pv_names().len() + p.pvc_keys().len(),
            6,
            "names are unique"
        );
    }

    /// The PV is a valid static volume for our CSI driver's node side.
    #[test]
    fn pv_is_a_static_volume_the_csi_driver_accepts() {
        let lfs = lfs(&[("a", &[RWX])]);
        let phases = BTreeMap::from([("a".to_string(), NamespacePhase::Active)]);
        let p = plan(
            &lfs,
            &phases,
            &BTreeSet::new(),
            csi::options::DEFAULT_DRIVER_NAME,
        )
        .unwrap();
        let csi_src = p.pairs[0].pv.spec.as_ref().unwrap().csi.clone().unwrap();
        let ctx: HashMap<String, String> = csi_src.volume_attributes.unwrap().into_iter().collect();
        let settings = share::Config::from_toml(
            "backend = \"local\"\nfsname = \"lfs1\"\nproject_ids = \"1000-1999\"\n[local]\nroot = \"/tmp/x\"\n",
        )
        .unwrap()
        .settings()
        .unwrap();
        let v = csi::volume::node_volume(&csi_src.volume_handle, &ctx, &settings).unwrap();
        assert!(v.is_static);
        assert_eq!(v.path.to_string(), "projects");
        assert_eq!(csi_src.driver, "lustre.csi.lustrekit.io");
    }

    #[test]
    fn missing_and_terminating_namespaces_stay_pending_without_pairs() {
        let lfs = lfs(&[("gone", &[RWX]), ("dying", &[RWX]), ("ok", &[RWX])]);
        let phases = BTreeMap::from([
            ("dying".to_string(), NamespacePhase::Terminating),
            ("ok".to_string(), NamespacePhase::Active),
        ]);
        let bound = BTreeSet::from([("ok".to_string(), "lus-ok-readwritemany-pvc".to_string())]);
        let p = plan(&lfs, &phases, &bound, "drv").unwrap();
        assert_eq!(p.pairs.len(), 1);
        assert_eq!(p.pairs[0].namespace, "ok");
        let state = |ns: &str| p.namespaces[ns].modes["ReadWriteMany"].state;
        assert_eq!(state("gone"), AccessState::Pending);
        assert_eq!(state("dying"), AccessState::Pending);
        assert_eq!(state("ok"), AccessState::Ready);
        assert!(
            p.namespaces["gone"].modes["ReadWriteMany"]
                .persistent_volume_ref
                .is_none()
        );
        assert_eq!(p.ready_namespaces, "1/3");
    }

    #[test]
    fn all_bound_is_ready() {
        let lfs = lfs(&[("a", &[RWX])]);
        let phases = BTreeMap::from([("a".to_string(), NamespacePhase::Active)]);
        let bound = BTreeSet::from([("a".to_string(), "lus-a-readwritemany-pvc".to_string())]);
        let p = plan(&lfs, &phases, &bound, "drv").unwrap();
        assert!(p.all_ready);
        assert_eq!(p.ready_namespaces, "1/1");
    }

    #[test]
    fn bad_specs_are_refused_with_the_field() {
        let phases = BTreeMap::new();
        let none = BTreeSet::new();
        let mut bad = lfs(&[]);
        bad.spec.mgs_nodes[1].nids[0] = "10.0.0.2".into();
        let e = plan(&bad, &phases, &none, "drv").unwrap_err();
        assert!(e.to_string().contains("spec.mgsNodes[1].nids[0]"), "{e}");

        let mut bad = lfs(&[]);
        bad.spec.fs_name = "a.b".into();
        assert!(matches!(
            plan(&bad, &phases, &none, "drv"),
            Err(SpecError::FsName(..))
        ));

        let mut bad = lfs(&[]);
        bad.spec.sub_directory = Some("a/../b".into());
        assert!(matches!(
            plan(&bad, &phases, &none, "drv"),
            Err(SpecError::SubDirectory(..))
        ));

        let mut bad = lfs(&[]);
        bad.spec.sub_directory = None;
        assert_eq!(
            plan(&bad, &phases, &none, "drv"),
            Err(SpecError::NoSubDirectory)
        );

        let bad = lfs(&[("a", &[RWX, RWX])]);
        assert_eq!(
            plan(&bad, &phases, &none, "drv"),
            Err(SpecError::DuplicateMode("a".into(), RWX))
        );

        let bad = lfs(&[("Not_A_Namespace", &[RWX])]);
        assert!(matches!(
            plan(&bad, &phases, &none, "drv"),
            Err(SpecError::Namespace { .. })
        ));
    }
}
