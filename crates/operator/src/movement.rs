//! The `DataMovement` custom resource (`lustrekit.io/v1alpha1`, namespaced): one copy
//! between a path on a `LustreFileSystem` exposed to the namespace and an object-store URL,
//! and the pure decisions about it. The copy itself is [`crate::mover`]'s.
//!
//! A movement may only touch a filesystem listed for its own namespace (and only read one
//! exposed ReadOnlyMany), and only below the filesystem's exposed directory: the namespace
//! boundary the PV/PVC pairs draw holds for data movement too.

use std::path::{Component, Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::{AccessMode, LustreFileSystem};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lustrekit.io",
    version = "v1alpha1",
    kind = "DataMovement",
    plural = "datamovements",
    shortname = "dm",
    namespaced,
    status = "DataMovementStatus",
    printcolumn = r#"{"name":"Direction","type":"string","jsonPath":".spec.direction"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Result","type":"string","jsonPath":".status.result"}"#,
    printcolumn = r#"{"name":"Files","type":"string","jsonPath":".status.progress.files"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
// What a movement copies cannot change under a copy that may be running: only `cancel` can,
// and only from false to true.
#[x_kube(validation = Rule::new(
    "self.fileSystem == oldSelf.fileSystem && self.path == oldSelf.path && self.direction == oldSelf.direction && self.url == oldSelf.url"
).message("only spec.cancel can change"))]
#[x_kube(validation = Rule::new("!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)")
    .message("a cancelled movement stays cancelled"))]
#[serde(rename_all = "camelCase")]
pub struct DataMovementSpec {
    /// The `LustreFileSystem` (cluster-scoped) whose directory is one end of the copy; it
    /// must list this namespace.
    #[schemars(length(min = 1))]
    pub file_system: String,
    /// The directory on the filesystem, relative to the directory it exposes (no `..`).
    #[serde(default = "default_path")]
    #[schemars(length(min = 1), regex(pattern = r"^[^/]"))]
    pub path: String,
    /// `Out`: the filesystem's directory to the URL; `In`: the URL into the directory.
    pub direction: Direction,
    /// The other end: `az://container/prefix`, `s3://bucket/prefix?endpoint=…`,
    /// `gs://bucket/prefix`, or `file:///path` on the operator's node.
    #[schemars(length(min = 1))]
    pub url: String,
    /// A Secret in this namespace whose keys are store options (credentials such as
    /// `azure_storage_account_key` or `aws_secret_access_key`): never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// A cap on bytes per second for each file copied (none: as fast as it goes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes_per_second: Option<u64>,
    /// Set to stop the copy; what is copied stays, no file is left half-written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

fn default_path() -> String {
    ".".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Direction {
    In,
    Out,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataMovementStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Set once `phase` is `Finished`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<MoveResult>,
    /// What happened, in words (the first failures, or why it could not start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<MoveProgress>,
    /// How many times a copy was started; a copy interrupted by an operator restart is
    /// resumed, up to a limit.
    #[serde(default)]
    pub attempts: u32,
    /// Who runs it (the operator's identity), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Finished,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MoveResult {
    Success,
    Failed,
    Cancelled,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoveProgress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// `<done>/<total>` files, for the print column.
    pub files: String,
}

impl MoveProgress {
    pub fn new(files_done: u64, files_total: u64, bytes_done: u64, bytes_total: u64) -> Self {
        Self {
            files_done,
            files_total,
            bytes_done,
            bytes_total,
            files: format!("{files_done}/{files_total}"),
        }
    }
}

/// What the controller does with a movement now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Finished already: nothing.
    Nothing,
    /// Running here: let it run (its task reports progress).
    Watch,
    /// Running here and cancelled: stop the task (it reports `Cancelled`).
    StopTask,
    /// Start the copy (or resume it: a copy skips what is already there) as this attempt.
    Start { attempt: u32 },
    /// Write a final status without copying.
    Finish { result: MoveResult, message: String },
}

/// The next step for a movement, given whether this operator runs its copy now. A
/// movement `Running` that no task here runs was interrupted (the operator restarted, or
/// another one lost its lease): it is resumed up to `max_attempts` starts in all, then fails,
/// so none stays Running forever.
pub fn decide(dm: &DataMovement, running_here: bool, max_attempts: u32) -> Step {
    let status = dm.status.clone().unwrap_or_default();
    if status.phase == Some(Phase::Finished) {
        return Step::Nothing;
    }
    if running_here {
        return if dm.spec.cancel {
            Step::StopTask
        } else {
            Step::Watch
        };
    }
    if dm.spec.cancel {
        return Step::Finish {
            result: MoveResult::Cancelled,
            message: if status.phase == Some(Phase::Running) {
                "cancelled while its copy was interrupted; what was copied stays".into()
            } else {
                "cancelled before it started".into()
            },
        };
    }
    if status.phase == Some(Phase::Running) {
        if status.attempts >= max_attempts {
            return Step::Finish {
                result: MoveResult::Failed,
                message: format!(
                    "interrupted {} times (the operator stopped while it ran); not resumed again",
                    status.attempts
                ),
            };
        }
        return Step::Start {
            attempt: status.attempts + 1,
        };
    }
    Step::Start { attempt: 1 }
}

/// The checked ends of a movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ends {
    /// The directory the filesystem exposes on this node (`mountRoot[/subDirectory]`): the
    /// root the copy never leaves.
    pub root: PathBuf,
    /// The directory copied, below `root`.
    pub dir: PathBuf,
}

/// Checks a movement against its filesystem: listed for the namespace (writable for `In`),
/// and a path that stays below what the filesystem exposes. The message says what is
/// wrong.
pub fn ends(dm: &DataMovement, namespace: &str, lfs: &LustreFileSystem) -> Result<Ends, String> {
    let Some(listed) = lfs.spec.namespaces.get(namespace) else {
        return Err(format!(
            "LustreFileSystem {} is not exposed to namespace {namespace}",
            dm.spec.file_system
        ));
    };
    if dm.spec.direction == Direction::In && !listed.modes.contains(&AccessMode::ReadWriteMany) {
        return Err(format!(
            "LustreFileSystem {} is exposed to namespace {namespace} read-only: nothing can be copied in",
            dm.spec.file_system
        ));
    }
    let mut root = PathBuf::from(&lfs.spec.mount_root);
    if !root.is_absolute() {
        return Err(format!(
            "LustreFileSystem {} has a relative mountRoot",
            dm.spec.file_system
        ));
    }
    if let Some(sub) = &lfs.spec.sub_directory {
        root.push(below("subDirectory", sub)?);
    }
    let dir = root.join(below("path", &dm.spec.path)?);
    Ok(Ends { root, dir })
}

/// `p` as a relative path of plain names (`.` allowed), or why not.
pub fn below(field: &str, p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "{field} `{p}` must stay below the filesystem's directory (relative, no `..`)"
                ));
            }
        }
    }
    Ok(out)
}

/// The CRD as YAML, as deploy/crds/ holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&DataMovement::crd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{LustreFileSystemSpec, MgsNode, NamespaceSpec};

    fn dm(direction: Direction, path: &str) -> DataMovement {
        DataMovement::new(
            "m",
            DataMovementSpec {
                file_system: "fs".into(),
                path: path.into(),
                direction,
                url: "az://c/p".into(),
                secret_ref: None,
                max_bytes_per_second: None,
                cancel: false,
            },
        )
    }

    fn with_status(mut d: DataMovement, phase: Phase, attempts: u32) -> DataMovement {
        d.status = Some(DataMovementStatus {
            phase: Some(phase),
            attempts,
            ..Default::default()
        });
        d
    }

    fn lfs(modes: &[AccessMode], sub: Option<&str>) -> LustreFileSystem {
        LustreFileSystem::new(
            "fs",
            LustreFileSystemSpec {
                fs_name: "lfs1".into(),
                mgs_nodes: vec![MgsNode {
                    nids: vec!["10.0.0.1@tcp".into()],
                }],
                mount_root: "/lus/fs".into(),
                sub_directory: sub.map(str::to_string),
                storage_class_name: "lustre".into(),
                namespaces: [(
                    "team".to_string(),
                    NamespaceSpec {
                        modes: modes.to_vec(),
                    },
                )]
                .into(),
            },
        )
    }

    #[test]
    fn new_movements_start_and_finished_ones_rest() {
        let d = dm(Direction::Out, ".");
        assert_eq!(decide(&d, false, 3), Step::Start { attempt: 1 });
        let done = with_status(d.clone(), Phase::Finished, 1);
        assert_eq!(decide(&done, false, 3), Step::Nothing);
        assert_eq!(decide(&done, true, 3), Step::Nothing);
        let running = with_status(d, Phase::Running, 1);
        assert_eq!(decide(&running, true, 3), Step::Watch);
    }

    #[test]
    fn an_interrupted_copy_resumes_then_fails_clearly() {
        let d = with_status(dm(Direction::Out, "."), Phase::Running, 1);
        assert_eq!(decide(&d, false, 3), Step::Start { attempt: 2 });
        let d = with_status(dm(Direction::Out, "."), Phase::Running, 3);
        match decide(&d, false, 3) {
            Step::Finish {
                result: MoveResult::Failed,
                message,
            } => assert!(message.contains("interrupted 3 times"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cancel_stops_a_task_or_finishes_one_that_has_none() {
        let mut d = with_status(dm(Direction::In, "."), Phase::Running, 1);
        d.spec.cancel = true;
        assert_eq!(decide(&d, true, 3), Step::StopTask);
        assert!(matches!(
            decide(&d, false, 3),
            Step::Finish {
                result: MoveResult::Cancelled,
                ..
            }
        ));
        let mut pending = dm(Direction::In, ".");
        pending.spec.cancel = true;
        assert!(matches!(
            decide(&pending, false, 3),
            Step::Finish {
                result: MoveResult::Cancelled,
                ..
            }
        ));
    }

    #[test]
    fn ends_stay_below_the_exposed_directory_of_a_listed_namespace() {
        let rw = lfs(&[AccessMode::ReadWriteMany], Some("projects"));
        let e = ends(&dm(Direction::In, "a/b"), "team", &rw).expect("ok");
        assert_eq!(e.root, PathBuf::from("/lus/fs/projects"));
        assert_eq!(e.dir, PathBuf::from("/lus/fs/projects/a/b"));
        let e = ends(&dm(Direction::Out, "."), "team", &rw).expect("ok");
        assert_eq!(e.dir, e.root);
        for bad in ["../x", "a/../../x", "/etc"] {
            let err = ends(&dm(Direction::Out, bad), "team", &rw).expect_err(bad);
            assert!(err.contains("must stay below"), "{err}");
        }
        let err = ends(&dm(Direction::Out, "."), "other", &rw).expect_err("not listed");
        assert!(err.contains("not exposed to namespace other"), "{err}");
        let ro = lfs(&[AccessMode::ReadOnlyMany], None);
        assert!(ends(&dm(Direction::Out, "."), "team", &ro).is_ok());
        let err = ends(&dm(Direction::In, "."), "team", &ro).expect_err("read-only");
        assert!(err.contains("read-only"), "{err}");
    }

    #[test]
    fn crd_is_namespaced_and_keeps_the_spec_fixed() {
        let crd = serde_json::to_string(&DataMovement::crd()).expect("json");
        assert!(crd.contains(r#""scope":"Namespaced""#), "{crd}");
        assert!(crd.contains("only spec.cancel can change"));
        assert!(crd.contains("a cancelled movement stays cancelled"));
    }

    /// CI's guard: the committed CRD is what the code generates.
    #[test]
    fn committed_crd_matches_the_code() {
        let committed = include_str!("../../../deploy/crds/datamovements.lustrekit.io.yaml");
        let generated = crd_yaml().expect("CRD serializes");
        assert!(
            committed == generated,
            "deploy/crds/datamovements.lustrekit.io.yaml is stale: regenerate it with `lustrekit operator crdgen`"
        );
    }
}
