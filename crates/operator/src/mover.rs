//! The `DataMovement` controller and its copies.
//!
//! A copy runs as a task of this operator (the operator's own pod, which mounts the
//! filesystem at its `mountRoot`: the `local` case), through the HSM engine's parallel copy.
//! Copies at once are bounded by a slot count; a movement that finds none stays Pending.
//! The task writes progress to the status every few seconds, stops when `spec.cancel` is set
//! or the movement is deleted, and writes the result. A movement left `Running` by an
//! operator that stopped is resumed (the copy skips what is already there) a bounded number
//! of times, then failed with a message saying so.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hsm::{ArchiveStore, ConflictMode, CopyCounters, EngineConfig, HsmEngine, ImportOptions};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::Utc;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::controller::OperatorError;
use crate::crd::LustreFileSystem;
use crate::movement::{
    DataMovement, Direction, MoveProgress, MoveResult, Phase, Step, decide, ends,
};

/// How the operator runs copies.
#[derive(Debug, Clone)]
pub struct MoverOptions {
    /// Copies running at once.
    pub slots: usize,
    /// Starts of one movement in all (the first and the resumes after an interruption).
    pub max_attempts: u32,
    /// How often a running copy writes its progress.
    pub progress_every: Duration,
    /// Who this operator is, in `status.runner`.
    pub identity: String,
    /// A copy that moves nothing for this long (a hung filesystem or store) is failed, and
    /// its slot given back.
    pub stall_timeout: Duration,
    /// Where copies run.
    pub runner: Runner,
}

/// Where a copy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// A task of this operator, whose pod mounts every filesystem at its `mountRoot` (the
    /// `local` backend).
    InProcess,
    /// A Job in the movement's namespace, mounting the filesystem through the namespace's
    /// own PVC, with this image (see [`crate::copy_job`]).
    Job { image: String },
}

impl Default for MoverOptions {
    fn default() -> Self {
        Self {
            slots: 2,
            max_attempts: 3,
            progress_every: Duration::from_secs(2),
            identity: default_identity(),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            runner: Runner::InProcess,
        }
    }
}

/// The host name and process ID: unique among operators at one time.
pub fn default_identity() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}/{}", std::process::id())
}

/// See [`MoverOptions::stall_timeout`].
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Every call to the API server from a copy task is bounded by this.
const API_TIMEOUT: Duration = Duration::from_secs(20);
/// A running copy is looked at again this often even without an event.
const WATCH_EVERY: Duration = Duration::from_secs(30);
/// A movement waiting for a copy slot is tried again after this long.
const SLOT_WAIT: Duration = Duration::from_secs(5);
/// At most this many failed entries are named in `status.message`.
const ERRORS_SHOWN: usize = 3;

struct RunningCopy {
    cancel: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Context {
    client: Client,
    recorder: Recorder,
    options: MoverOptions,
    metrics: Arc<crate::metrics::Metrics>,
    slots: Arc<Semaphore>,
    /// The copies this operator runs, by namespace and name.
    running: Mutex<HashMap<(String, String), RunningCopy>>,
}

/// Runs the `DataMovement` controller until `shutdown` completes; running copies are
/// stopped then (their movements stay Running, and the next operator resumes them).
pub async fn run(
    client: Client,
    recorder: Recorder,
    options: MoverOptions,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics,
        slots: Arc::new(Semaphore::new(options.slots.max(1))),
        options,
        running: Mutex::new(HashMap::new()),
    });
    Controller::new(Api::<DataMovement>::all(client), watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "data movement reconcile");
            }
        })
        .await;
    let stopping: Vec<_> = match ctx.running.lock() {
        Ok(mut running) => running.drain().map(|(_, r)| r).collect(),
        Err(_) => Vec::new(),
    };
    for r in stopping {
        r.task.abort();
    }
}

fn error_policy(dm: Arc<DataMovement>, error: &OperatorError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(movement = %dm.name_any(), error = %error, label = error.metric_label(), "data movement reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

fn key_of(dm: &DataMovement) -> (String, String) {
    (dm.namespace().unwrap_or_default(), dm.name_any())
}

async fn reconcile(dm: Arc<DataMovement>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    if let Runner::Job { image } = &ctx.options.runner {
        let (action, event, finished) =
            crate::mover_job::reconcile(&dm, &ctx.client, image, ctx.options.max_attempts).await?;
        if let Some((result, bytes)) = finished {
            ctx.metrics.moved(dm.spec.direction, result, bytes);
        }
        if let Some((warning, result, note)) = event {
            record(&ctx, &dm, warning, result, note).await;
        }
        return Ok(action);
    }
    let key = key_of(&dm);
    let running_here = ctx
        .running
        .lock()
        .map(|r| r.get(&key).is_some_and(|c| !c.task.is_finished()))
        .unwrap_or(false);
    match decide(&dm, running_here, ctx.options.max_attempts) {
        Step::Nothing => Ok(Action::await_change()),
        Step::Watch => Ok(Action::requeue(WATCH_EVERY)),
        Step::StopTask => {
            if let Ok(running) = ctx.running.lock()
                && let Some(c) = running.get(&key)
            {
                let _ = c.cancel.send(true);
            }
            Ok(Action::requeue(SLOT_WAIT))
        }
        Step::Finish { result, message } => {
            finish(&ctx.client, &dm, result, &message, None).await?;
            ctx.metrics.moved(dm.spec.direction, result, 0);
            record(&ctx, &dm, result != MoveResult::Success, result, message).await;
            Ok(Action::await_change())
        }
        Step::Start { attempt } => start(dm, &ctx, attempt).await,
    }
}

/// Why a movement cannot start, as its final message.
type Refusal = String;

/// What a copy needs, checked: its ends, and the store with the Secret's options.
async fn prepare(
    dm: &DataMovement,
    ctx: &Context,
) -> Result<Result<CopyRequest, Refusal>, OperatorError> {
    let namespace = dm.namespace().unwrap_or_default();
    let lfs_name = &dm.spec.file_system;
    let lfs = Api::<LustreFileSystem>::all(ctx.client.clone())
        .get_opt(lfs_name)
        .await
        .map_err(|source| OperatorError::Kube {
            action: "get",
            object: format!("LustreFileSystem {lfs_name}"),
            source,
        })?;
    let Some(lfs) = lfs else {
        return Ok(Err(format!("LustreFileSystem {lfs_name} does not exist")));
    };
    let ends = match ends(dm, &namespace, &lfs) {
        Ok(e) => e,
        Err(why) => return Ok(Err(why)),
    };
    let mut options = Vec::new();
    if let Some(secret_ref) = &dm.spec.secret_ref {
        let secret = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(&secret_ref.name)
            .await
            .map_err(|source| OperatorError::Kube {
                action: "get",
                object: format!("Secret {namespace}/{}", secret_ref.name),
                source,
            })?;
        let Some(secret) = secret else {
            return Ok(Err(format!(
                "Secret {namespace}/{} does not exist",
                secret_ref.name
            )));
        };
        for (k, v) in secret.data.unwrap_or_default() {
            match String::from_utf8(v.0) {
                Ok(v) => options.push((k, v.trim_end_matches('\n').to_string())),
                Err(_) => {
                    return Ok(Err(format!(
                        "Secret {namespace}/{}: key `{k}` is not UTF-8 text",
                        secret_ref.name
                    )));
                }
            }
        }
    }
    let request = CopyRequest {
        root: ends.root,
        dir: ends.dir,
        direction: dm.spec.direction,
        url: dm.spec.url.clone(),
        store_options: options,
        max_bytes_per_second: dm.spec.max_bytes_per_second,
    };
    // Opened once here so a bad URL or option fails the movement before it starts. The
    // store's errors name the spec and option keys, never option values.
    match request.open_store() {
        Ok(_) => Ok(Ok(request)),
        Err(e) => Ok(Err(request.scrub(&e.to_string()))),
    }
}

async fn start(
    dm: Arc<DataMovement>,
    ctx: &Arc<Context>,
    attempt: u32,
) -> Result<Action, OperatorError> {
    let request = match prepare(&dm, ctx).await? {
        Ok(ready) => ready,
        Err(why) => {
            finish(&ctx.client, &dm, MoveResult::Failed, &why, None).await?;
            ctx.metrics.moved(dm.spec.direction, MoveResult::Failed, 0);
            record(ctx, &dm, true, MoveResult::Failed, why).await;
            return Ok(Action::await_change());
        }
    };
    let Ok(permit) = ctx.slots.clone().try_acquire_owned() else {
        patch_status(
            &ctx.client,
            &dm,
            json!({"phase": "Pending", "message": "waiting for a free copy slot"}),
        )
        .await?;
        return Ok(Action::requeue(SLOT_WAIT));
    };
    let start_time = dm
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or(Time(Utc::now()));
    let verb = if attempt > 1 { "resuming" } else { "copying" };
    patch_status(
        &ctx.client,
        &dm,
        json!({
            "phase": "Running",
            "attempts": attempt,
            "runner": ctx.options.identity,
            "startTime": start_time,
            "message": format!("{verb} (attempt {attempt})"),
            "observedGeneration": dm.meta().generation,
        }),
    )
    .await?;
    record(
        ctx,
        &dm,
        false,
        MoveResult::Success,
        format!("{verb} {} {}", direction_words(&dm), dm.spec.url),
    )
    .await;
    let (cancel, cancelled) = watch::channel(false);
    let task = tokio::spawn(copy_task(
        ctx.clone(),
        dm.clone(),
        request,
        cancelled,
        permit,
    ));
    if let Ok(mut running) = ctx.running.lock() {
        running.insert(key_of(&dm), RunningCopy { cancel, task });
    }
    Ok(Action::requeue(WATCH_EVERY))
}

fn direction_words(dm: &DataMovement) -> &'static str {
    match dm.spec.direction {
        Direction::Out => "out to",
        Direction::In => "in from",
    }
}

/// How a copy task ended.
enum Ended {
    Copied(Result<CopySummary, hsm::HsmError>),
    Cancelled,
    /// Nothing moved for this long: given up (the blocked calls are left to their own
    /// timeouts; the slot is freed now).
    Stalled(Duration),
    /// The movement was deleted: nobody to report to.
    Gone,
}

async fn copy_task(
    ctx: Arc<Context>,
    dm: Arc<DataMovement>,
    request: CopyRequest,
    mut cancelled: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let counters = Arc::new(CopyCounters::default());
    let ended = {
        let copy = request.run(&counters);
        tokio::pin!(copy);
        let mut tick = tokio::time::interval(ctx.options.progress_every);
        loop {
            tokio::select! {
                r = &mut copy => break Ended::Copied(r),
                _ = cancelled.changed() => break Ended::Cancelled,
                _ = tick.tick() => {
                    if counters.idle_for() > ctx.options.stall_timeout {
                        break Ended::Stalled(counters.idle_for());
                    }
                    let progress = progress_of(&counters);
                    match patch_status(&ctx.client, &dm, json!({"progress": progress})).await {
                        Err(OperatorError::Kube { source: kube::Error::Api(e), .. }) if e.code == 404 => break Ended::Gone,
                        Err(e) => tracing::warn!(movement = %dm.name_any(), error = %e, "progress not written"),
                        Ok(()) => {}
                    }
                }
            }
        }
    };
    let progress = progress_of(&counters);
    let (result, message) = match ended {
        Ended::Gone => {
            tracing::info!(movement = %dm.name_any(), "deleted while copying: stopped");
            forget(&ctx, &dm);
            return;
        }
        Ended::Cancelled => (MoveResult::Cancelled, CANCELLED.to_string()),
        Ended::Stalled(idle) => (MoveResult::Failed, stalled_words(idle)),
        Ended::Copied(r) => summary_words(&r, &progress),
    };
    let message = request.scrub(&message);
    // The final status must land, or the movement would be resumed for nothing: a few tries.
    for wait in [1u64, 2, 4, 8] {
        match finish(&ctx.client, &dm, result, &message, Some(progress.clone())).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(movement = %dm.name_any(), error = %e, "final status not written; retrying");
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
        }
    }
    ctx.metrics
        .moved(dm.spec.direction, result, progress.bytes_done);
    record(&ctx, &dm, result != MoveResult::Success, result, message).await;
    forget(&ctx, &dm);
}

/// The message of a cancelled copy.
pub const CANCELLED: &str = "cancelled; what was copied stays, and no file is left half-written";

/// The message of a copy given up for making no progress.
pub fn stalled_words(idle: Duration) -> String {
    format!(
        "stalled: nothing moved for {}s (a hung filesystem or store?); what was copied stays, no file is half-written",
        idle.as_secs()
    )
}

/// A snapshot of the counters as the status shows it.
pub fn progress_of(counters: &CopyCounters) -> MoveProgress {
    let p = counters.snapshot();
    MoveProgress::new(p.files_done, p.files_total, p.bytes_done, p.bytes_total)
}

/// The result and message of a finished copy.
pub fn summary_words(
    r: &Result<CopySummary, hsm::HsmError>,
    progress: &MoveProgress,
) -> (MoveResult, String) {
    match r {
        Ok(s) if s.failed == 0 => (
            MoveResult::Success,
            format!(
                "copied {} entries, {} bytes",
                progress.files_done, progress.bytes_done
            ),
        ),
        Ok(s) => (
            MoveResult::Failed,
            format!("{} entries failed: {}", s.failed, s.first_errors.join("; ")),
        ),
        Err(e) => (MoveResult::Failed, e.to_string()),
    }
}

fn forget(ctx: &Context, dm: &DataMovement) {
    if let Ok(mut running) = ctx.running.lock() {
        running.remove(&key_of(dm));
    }
}

/// One copy, as the in-process runner and `lustrekit operator copy` (the Job's pod) run it.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// The directory the copy never leaves (the filesystem's exposed directory).
    pub root: PathBuf,
    /// The directory copied, below `root`.
    pub dir: PathBuf,
    pub direction: Direction,
    pub url: String,
    /// Store options (credentials): never logged.
    pub store_options: Vec<(String, String)>,
    pub max_bytes_per_second: Option<u64>,
}

/// What a finished copy did wrong, if anything.
#[derive(Debug, Clone, Default)]
pub struct CopySummary {
    pub failed: usize,
    pub first_errors: Vec<String>,
}

impl CopyRequest {
    /// `text` with the store options' values (the Secret's) taken out: what a status, an
    /// event, a log line or a pod's output may show of a copy's errors.
    pub fn scrub(&self, text: &str) -> String {
        hsm::store::scrub(text, self.store_options.iter().map(|(_, v)| v.as_str()))
    }

    pub fn open_store(&self) -> Result<ArchiveStore, hsm::HsmError> {
        ArchiveStore::open_with(&self.url, &hsm::RetryPolicy::default(), &self.store_options)
    }

    /// Runs the copy (see [`hsm::HsmEngine::copy_out`] and `import` with data), filling in
    /// `counters`. The store is checked first, so a wrong key or an unreachable store is one
    /// error. Dropping the future stops the copy with no file half-written.
    pub async fn run(&self, counters: &Arc<CopyCounters>) -> Result<CopySummary, hsm::HsmError> {
        let root = self.root.clone();
        let is_dir =
            tokio::task::spawn_blocking(move || std::fs::metadata(&root).map(|m| m.is_dir()))
                .await
                .map_err(|e| hsm::HsmError::Unsupported(format!("stat task: {e}")))?;
        if !matches!(is_dir, Ok(true)) {
            return Err(hsm::HsmError::refused(
                &self.root,
                "the filesystem's directory is not here (not mounted at its mountRoot on this node?)",
            ));
        }
        let store = self.open_store()?;
        store.check_access().await?;
        let backend = backend::local::LocalBackend::open(&self.root).await?;
        let heartbeat = Arc::clone(counters);
        let engine = HsmEngine::new(
            store,
            Arc::new(backend),
            EngineConfig {
                root: self.root.clone(),
                rate_limit_bytes_per_sec: self.max_bytes_per_second,
                ..EngineConfig::default()
            },
        )
        // Every part moved counts as activity for the stall watch.
        .with_progress(Arc::new(move |_| heartbeat.touch()));
        let errors: Vec<String> = match self.direction {
            Direction::Out => engine
                .copy_out(&self.dir, counters)
                .await?
                .errors
                .into_iter()
                .map(|e| e.error)
                .collect(),
            Direction::In => {
                let opts = ImportOptions {
                    target: self.dir.clone(),
                    conflict: ConflictMode::OverwriteIfChanged,
                    with_data: true,
                    max_errors: usize::MAX,
                    ..Default::default()
                };
                engine
                    .import_counted(&opts, counters)
                    .await?
                    .errors
                    .into_iter()
                    .map(|e| {
                        if e.path == PathBuf::new() {
                            e.error
                        } else {
                            format!("{}: {}", e.path.display(), e.error)
                        }
                    })
                    .collect()
            }
        };
        Ok(CopySummary {
            failed: errors.len(),
            first_errors: errors.into_iter().take(ERRORS_SHOWN).collect(),
        })
    }
}

/// Merge-patches `status` (the status subresource), bounded by [`API_TIMEOUT`].
pub(crate) async fn patch_status(
    client: &Client,
    dm: &DataMovement,
    status: serde_json::Value,
) -> Result<(), OperatorError> {
    let api = Api::<DataMovement>::namespaced(client.clone(), &dm.namespace().unwrap_or_default());
    let name = dm.name_any();
    let object = || format!("DataMovement {}/{name}", dm.namespace().unwrap_or_default());
    let patch = Patch::Merge(json!({ "status": status }));
    let params = PatchParams::default();
    match tokio::time::timeout(API_TIMEOUT, api.patch_status(&name, &params, &patch)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(OperatorError::Kube {
            action: "patch status",
            object: object(),
            source,
        }),
        Err(_) => Err(OperatorError::Timeout {
            action: "patch status",
            object: object(),
        }),
    }
}

pub(crate) async fn finish(
    client: &Client,
    dm: &DataMovement,
    result: MoveResult,
    message: &str,
    progress: Option<MoveProgress>,
) -> Result<(), OperatorError> {
    let mut status = json!({
        "phase": Phase::Finished,
        "result": result,
        "message": message,
        "runner": null,
        "completionTime": Time(Utc::now()),
        "observedGeneration": dm.meta().generation,
    });
    if let Some(p) = progress {
        status["progress"] = json!(p);
    }
    patch_status(client, dm, status).await
}

async fn record(ctx: &Context, dm: &DataMovement, warning: bool, result: MoveResult, note: String) {
    let reason = match (warning, result) {
        (false, MoveResult::Success) => "Copy",
        (_, MoveResult::Cancelled) => "Cancelled",
        (_, MoveResult::Failed) => "Failed",
        (true, MoveResult::Success) => "Copy",
    };
    let event = KubeEvent {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "DataMovement".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &dm.object_ref(&())).await {
        tracing::debug!(error = %e, "event not recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copys_messages_never_carry_its_secret_values() {
        let request = CopyRequest {
            root: PathBuf::from("/r"),
            dir: PathBuf::from("/r/d"),
            direction: Direction::Out,
            url: "az://c/p".into(),
            store_options: vec![("azure_storage_sas_key".into(), "sv=1&sig=SECRETSIG".into())],
            max_bytes_per_second: None,
        };
        let said = request.scrub("GET http://x/c/p/f?sv=1&sig=SECRETSIG: 403");
        assert!(!said.contains("SECRETSIG"), "{said}");
        assert!(said.contains("<redacted>"), "{said}");
    }
}
