//! The `DataMovement` controller's Job runner: each copy is a Job (see [`crate::copy_job`])
//! in the movement's namespace. The controller makes the Job, reads the copy's progress from
//! its pod's last output line, and its result from the pod's termination message. The Job
//! outlives an operator restart, so a restarted operator just goes on watching it; a Job
//! deleted under a running movement is made again (the copy skips what is there), up to the
//! attempt limit. Cancelling deletes the Job, whose pod stops on SIGTERM with no file
//! half-written.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::Utc;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::controller::OperatorError;
use crate::copy_job::{CopyOutcome, JobState, job_for, job_name, job_state};
use crate::crd::LustreFileSystem;
use crate::movement::{DataMovement, MoveResult, Phase, Step, decide, ends};
use crate::mover::{CANCELLED, finish, patch_status};

/// A running Job's progress is read this often.
const POLL: Duration = Duration::from_secs(3);
/// Each API call here is bounded by this.
const API_TIMEOUT: Duration = Duration::from_secs(20);

/// An Event to record: warning or not, the result it is about, and what to say.
pub(crate) type Note = (bool, MoveResult, String);

/// What a reconcile did: when to look again, an Event to record, and the result and bytes
/// of a movement it finished.
pub(crate) type Done = (Action, Option<Note>, Option<(MoveResult, u64)>);

async fn bounded<T>(
    action: &'static str,
    object: String,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, OperatorError> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(OperatorError::Kube {
            action,
            object,
            source,
        }),
        Err(_) => Err(OperatorError::Timeout { action, object }),
    }
}

pub(crate) async fn reconcile(
    dm: &DataMovement,
    client: &Client,
    image: &str,
    max_attempts: u32,
) -> Result<Done, OperatorError> {
    let status = dm.status.clone().unwrap_or_default();
    if status.phase == Some(Phase::Finished) {
        return Ok((Action::await_change(), None, None));
    }
    let namespace = dm.namespace().unwrap_or_default();
    let jobs = Api::<Job>::namespaced(client.clone(), &namespace);
    let name = job_name(dm);
    let object = format!("Job {namespace}/{name}");
    let job = bounded("get", object.clone(), jobs.get_opt(&name)).await?;
    // Only a Job this movement owns counts (one of a deleted namesake is not its copy).
    let job = job.filter(|j| {
        j.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == dm.uid().as_ref())
    });
    if let Some(job) = job {
        let outcome = outcome(client, &namespace, &name, job_state(&job)).await?;
        if dm.spec.cancel {
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..Default::default()
            };
            bounded("delete", object, jobs.delete(&name, &params)).await?;
            let progress = outcome.map(|o| o.progress);
            let bytes = progress.as_ref().map_or(0, |p| p.bytes_done);
            finish(client, dm, MoveResult::Cancelled, CANCELLED, progress).await?;
            return Ok((
                Action::await_change(),
                Some((true, MoveResult::Cancelled, CANCELLED.into())),
                Some((MoveResult::Cancelled, bytes)),
            ));
        }
        return match job_state(&job) {
            JobState::Active => {
                if let Some(o) = outcome {
                    patch_status(client, dm, json!({"progress": o.progress})).await?;
                }
                Ok((Action::requeue(POLL), None, None))
            }
            state => {
                let o = outcome.unwrap_or_default();
                let result = if state == JobState::Succeeded && o.success != Some(false) {
                    MoveResult::Success
                } else {
                    MoveResult::Failed
                };
                let message = o.message.clone().unwrap_or_else(|| match result {
                    MoveResult::Success => "copied".into(),
                    _ => format!("the copy Job {name} failed without a report"),
                });
                let bytes = o.progress.bytes_done;
                finish(client, dm, result, &message, Some(o.progress)).await?;
                Ok((
                    Action::await_change(),
                    Some((result != MoveResult::Success, result, message)),
                    Some((result, bytes)),
                ))
            }
        };
    }
    match decide(dm, false, max_attempts) {
        Step::Nothing | Step::Watch | Step::StopTask => Ok((Action::await_change(), None, None)),
        Step::Finish { result, message } => {
            finish(client, dm, result, &message, None).await?;
            Ok((
                Action::await_change(),
                Some((result != MoveResult::Success, result, message)),
                Some((result, 0)),
            ))
        }
        Step::Start { attempt } => start(dm, client, image, attempt, &jobs, &name).await,
    }
}

async fn start(
    dm: &DataMovement,
    client: &Client,
    image: &str,
    attempt: u32,
    jobs: &Api<Job>,
    name: &str,
) -> Result<Done, OperatorError> {
    let namespace = dm.namespace().unwrap_or_default();
    let fs = &dm.spec.file_system;
    let lfs = bounded(
        "get",
        format!("LustreFileSystem {fs}"),
        Api::<LustreFileSystem>::all(client.clone()).get_opt(fs),
    )
    .await?;
    let refused = |why: String| async move {
        finish(client, dm, MoveResult::Failed, &why, None).await?;
        Ok((
            Action::await_change(),
            Some((true, MoveResult::Failed, why)),
            Some((MoveResult::Failed, 0)),
        ))
    };
    let Some(lfs) = lfs else {
        return refused(format!("LustreFileSystem {fs} does not exist")).await;
    };
    if let Err(why) = ends(dm, &namespace, &lfs) {
        return refused(why).await;
    }
    let Some(job) = job_for(dm, &lfs, image) else {
        return refused(format!(
            "LustreFileSystem {fs} gives namespace {namespace} no claim to copy {} with",
            match dm.spec.direction {
                crate::movement::Direction::In => "in",
                crate::movement::Direction::Out => "out",
            }
        ))
        .await;
    };
    let object = format!("Job {namespace}/{name}");
    match tokio::time::timeout(API_TIMEOUT, jobs.create(&PostParams::default(), &job)).await {
        Ok(Ok(_)) => {}
        // Made by an earlier reconcile whose status write was lost: it is ours, go on.
        Ok(Err(kube::Error::Api(e))) if e.code == 409 => {}
        Ok(Err(source)) => {
            return Err(OperatorError::Kube {
                action: "create",
                object,
                source,
            });
        }
        Err(_) => {
            return Err(OperatorError::Timeout {
                action: "create",
                object,
            });
        }
    }
    let start_time = dm
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or(Time(Utc::now()));
    let verb = if attempt > 1 { "resuming" } else { "copying" };
    patch_status(
        client,
        dm,
        json!({
            "phase": "Running",
            "attempts": attempt,
            "runner": format!("job/{name}"),
            "startTime": start_time,
            "message": format!("{verb} in Job {name} (attempt {attempt})"),
            "observedGeneration": dm.meta().generation,
        }),
    )
    .await?;
    Ok((
        Action::requeue(POLL),
        Some((false, MoveResult::Success, format!("{verb} in Job {name}"))),
        None,
    ))
}

/// The copy's latest outcome line: from the newest pod's termination message once the Job
/// ended, else from the tail of its output.
async fn outcome(
    client: &Client,
    namespace: &str,
    job: &str,
    state: JobState,
) -> Result<Option<CopyOutcome>, OperatorError> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let listed = bounded(
        "list",
        format!("pods of Job {namespace}/{job}"),
        pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))),
    )
    .await?;
    let Some(pod) = listed
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
    else {
        return Ok(None);
    };
    if state != JobState::Active {
        let message = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.message.clone());
        if let Some(o) = message.as_deref().and_then(CopyOutcome::last_in) {
            return Ok(Some(o));
        }
    }
    let params = LogParams {
        tail_lines: Some(5),
        ..Default::default()
    };
    // A pod not started yet has no log: no progress yet, not an error.
    match tokio::time::timeout(API_TIMEOUT, pods.logs(&pod.name_any(), &params)).await {
        Ok(Ok(text)) => Ok(CopyOutcome::last_in(&text)),
        Ok(Err(e)) => {
            tracing::debug!(pod = %pod.name_any(), error = %e, "copy log not readable yet");
            Ok(None)
        }
        Err(_) => Ok(None),
    }
}
