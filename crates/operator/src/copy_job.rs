//! The Job that runs a `DataMovement`'s copy on a node that mounts the filesystem (the
//! Lustre case): pure, so its shape is unit-tested.
//!
//! The Job runs in the movement's own namespace and mounts the filesystem through the
//! namespace's own PVC (the pair the `LustreFileSystem` controller made), so the copy can
//! reach only what the namespace was given, and the node plugin does the Lustre mount. The
//! Secret's keys reach the copy as environment variables with [`STORE_ENV_PREFIX`] (the
//! operator never reads them in this mode). The pod prints its progress as one JSON line at a
//! time and leaves its final [`CopyOutcome`] as its termination message.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    SecretEnvSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::crd::{AccessMode, LustreFileSystem};
use crate::movement::{DataMovement, Direction, MoveProgress};
use crate::plan::{MANAGED_BY, MANAGED_BY_LABEL, pvc_name};

/// Where the copy pod mounts the filesystem's directory.
pub const MOUNT_PATH: &str = "/lustre";
/// Secret keys reach the copy as `LUSTREKIT_STORE_<key>`.
pub const STORE_ENV_PREFIX: &str = "LUSTREKIT_STORE_";
/// The label naming the movement a Job copies for.
pub const MOVEMENT_LABEL: &str = "lustrekit.io/datamovement";
/// Pod retries of one Job: the copy skips what an earlier pod did, so a retry resumes.
pub const BACKOFF_LIMIT: i32 = 2;

/// One line of the copy pod's output, and its termination message at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyOutcome {
    pub progress: MoveProgress,
    /// Set on the last line: whether every entry was copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// The first failures, or why the copy could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CopyOutcome {
    /// The last JSON line of `text` that parses as an outcome (a log tail may start
    /// mid-line, and other output may come between).
    pub fn last_in(text: &str) -> Option<CopyOutcome> {
        text.lines()
            .rev()
            .find_map(|l| serde_json::from_str(l.trim()).ok())
    }
}

/// The name of the Job of a movement: `lustrekit-copy-<name>`, cut to the 63 characters a
/// label value (which the Job controller makes of it) allows.
pub fn job_name(dm: &DataMovement) -> String {
    let name = format!("lustrekit-copy-{}", dm.name_any());
    if name.len() <= 63 {
        return name;
    }
    // Unique still: a hash of the whole name replaces the end.
    let mut h: u32 = 2166136261;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16777619);
    }
    format!("{}-{h:08x}", name[..54].trim_end_matches('-'))
}

/// The namespace's PVC the copy mounts: ReadWriteMany to copy in; to copy out, ReadOnlyMany
/// when the namespace has it (least privilege), else ReadWriteMany mounted read-only.
fn claim(dm: &DataMovement, namespace: &str, lfs: &LustreFileSystem) -> Option<(String, bool)> {
    let modes = &lfs.spec.namespaces.get(namespace)?.modes;
    let fs = lfs.name_any();
    match dm.spec.direction {
        Direction::In => modes
            .contains(&AccessMode::ReadWriteMany)
            .then(|| (pvc_name(&fs, namespace, AccessMode::ReadWriteMany), false)),
        Direction::Out => [AccessMode::ReadOnlyMany, AccessMode::ReadWriteMany]
            .into_iter()
            .find(|m| modes.contains(m))
            .map(|m| (pvc_name(&fs, namespace, m), true)),
    }
}

/// The Job copying for `dm` (checked already with [`crate::movement::ends`]), owned by it so
/// deleting the movement deletes the Job. `None` when the namespace has no PVC to mount.
pub fn job_for(dm: &DataMovement, lfs: &LustreFileSystem, image: &str) -> Option<Job> {
    let namespace = dm.namespace()?;
    let (claim_name, read_only) = claim(dm, &namespace, lfs)?;
    let name = job_name(dm);
    let labels: BTreeMap<String, String> = [
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (MOVEMENT_LABEL.to_string(), dm.name_any()),
    ]
    .into();
    let mut args: Vec<String> = [
        "operator",
        "copy",
        "--direction",
        match dm.spec.direction {
            Direction::In => "in",
            Direction::Out => "out",
        },
        "--root",
        MOUNT_PATH,
        "--path",
        &dm.spec.path,
        "--url",
        &dm.spec.url,
        "--report-file",
        "/dev/termination-log",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    if let Some(rate) = dm.spec.max_bytes_per_second {
        args.extend(["--max-bytes-per-second".to_string(), rate.to_string()]);
    }
    let owner = OwnerReference {
        api_version: DataMovement::api_version(&()).into_owned(),
        kind: DataMovement::kind(&()).into_owned(),
        name: dm.name_any(),
        uid: dm.uid()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let container = Container {
        name: "copy".into(),
        image: Some(image.to_string()),
        args: Some(args),
        env_from: dm.spec.secret_ref.as_ref().map(|s| {
            vec![EnvFromSource {
                prefix: Some(STORE_ENV_PREFIX.into()),
                secret_ref: Some(SecretEnvSource {
                    name: s.name.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "lustre".into(),
            mount_path: MOUNT_PATH.into(),
            read_only: Some(read_only),
            ..Default::default()
        }]),
        ..Default::default()
    };
    Some(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // SIGTERM lets the copy drop its temporaries; this bounds how long.
                    termination_grace_period_seconds: Some(30),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "lustre".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name,
                            read_only: Some(read_only),
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// Where a Job is: still running, or done with success or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Active,
    Succeeded,
    Failed,
}

/// The state of a Job from its conditions (`Complete`, `Failed`).
pub fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let holds = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if holds("Complete") {
        JobState::Succeeded
    } else if holds("Failed") {
        JobState::Failed
    } else {
        JobState::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{LustreFileSystemSpec, MgsNode, NamespaceSpec};
    use crate::movement::{DataMovementSpec, SecretRef};

    fn dm(name: &str, direction: Direction) -> DataMovement {
        let mut d = DataMovement::new(
            name,
            DataMovementSpec {
                file_system: "fs".into(),
                path: "runs/1".into(),
                direction,
                url: "s3://b/p".into(),
                secret_ref: Some(SecretRef {
                    name: "creds".into(),
                }),
                max_bytes_per_second: Some(1000),
                cancel: false,
            },
        );
        d.metadata.namespace = Some("team".into());
        d.metadata.uid = Some("uid-1".into());
        d
    }

    fn lfs(modes: &[AccessMode]) -> LustreFileSystem {
        LustreFileSystem::new(
            "fs",
            LustreFileSystemSpec {
                fs_name: "lfs1".into(),
                mgs_nodes: vec![MgsNode {
                    nids: vec!["10.0.0.1@tcp".into()],
                }],
                mount_root: "/lus/fs".into(),
                sub_directory: None,
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
    fn the_job_mounts_the_namespaces_own_claim_and_passes_the_secret_as_env() {
        let both = lfs(&[AccessMode::ReadWriteMany, AccessMode::ReadOnlyMany]);
        let job = job_for(&dm("m", Direction::Out), &both, "img:1").expect("job");
        assert_eq!(job.metadata.name.as_deref(), Some("lustrekit-copy-m"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("team"));
        let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("DataMovement", "uid-1")
        );
        let pod = job
            .spec
            .as_ref()
            .expect("spec")
            .template
            .spec
            .as_ref()
            .expect("pod");
        let vol = &pod.volumes.as_ref().expect("volumes")[0];
        let pvc = vol.persistent_volume_claim.as_ref().expect("pvc");
        // Out reads only: the read-only claim, mounted read-only.
        assert_eq!(pvc.claim_name, "fs-team-readonlymany-pvc");
        assert_eq!(pvc.read_only, Some(true));
        let c = &pod.containers[0];
        let args = c.args.as_ref().expect("args").join(" ");
        assert_eq!(
            args,
            "operator copy --direction out --root /lustre --path runs/1 --url s3://b/p --report-file /dev/termination-log --max-bytes-per-second 1000"
        );
        let env = &c.env_from.as_ref().expect("envFrom")[0];
        assert_eq!(env.prefix.as_deref(), Some(STORE_ENV_PREFIX));
        assert_eq!(
            env.secret_ref.as_ref().map(|s| s.name.as_str()),
            Some("creds")
        );

        let job = job_for(&dm("m", Direction::In), &both, "img:1").expect("job");
        let pod = job.spec.expect("spec").template.spec.expect("pod");
        let pvc = pod.volumes.expect("volumes")[0]
            .persistent_volume_claim
            .clone()
            .expect("pvc");
        assert_eq!(pvc.claim_name, "fs-team-readwritemany-pvc");
        assert_eq!(pvc.read_only, Some(false));
    }

    #[test]
    fn no_job_without_a_claim_that_allows_the_direction() {
        let ro = lfs(&[AccessMode::ReadOnlyMany]);
        assert!(job_for(&dm("m", Direction::In), &ro, "img").is_none());
        assert!(job_for(&dm("m", Direction::Out), &ro, "img").is_some());
        let mut elsewhere = dm("m", Direction::Out);
        elsewhere.metadata.namespace = Some("other".into());
        assert!(job_for(&elsewhere, &ro, "img").is_none());
    }

    #[test]
    fn long_names_are_cut_and_stay_unique() {
        let a = job_name(&dm(&"a".repeat(60), Direction::In));
        let b = job_name(&dm(&format!("{}b", "a".repeat(59)), Direction::In));
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
    }

    #[test]
    fn the_last_outcome_line_wins_and_garbage_is_skipped() {
        let text = "partial line}\n{\"progress\":{\"filesDone\":1,\"filesTotal\":2,\"bytesDone\":3,\"bytesTotal\":4,\"files\":\"1/2\"}}\nnoise\n{\"progress\":{\"filesDone\":2,\"filesTotal\":2,\"bytesDone\":4,\"bytesTotal\":4,\"files\":\"2/2\"},\"success\":true}\n";
        let o = CopyOutcome::last_in(text).expect("outcome");
        assert_eq!(o.success, Some(true));
        assert_eq!(o.progress.files_done, 2);
        assert_eq!(CopyOutcome::last_in("nothing here"), None);
    }
}
