//! The `LustreFileSystem` controller: applies the pairs [`crate::plan`] computes with
//! server-side apply, deletes the stale ones, reports status, and cleans up behind a
//! finalizer. Namespace events wake only the filesystems that list the namespace; PV/PVC
//! events wake the filesystem named in their label.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{LustreFileSystem, LustreFileSystemStatus};
use crate::metrics::Metrics;
use crate::plan::{self, FILESYSTEM_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NamespacePhase};

/// The field manager of every apply, so `kubectl` shows who owns which field.
pub const FIELD_MANAGER: &str = "lustrekit-operator";
/// Held on every `LustreFileSystem` until its pairs are deleted.
pub const FINALIZER: &str = "lustrekit.io/cleanup";
/// Re-checks every resource this often even with no event, to repair drift.
const RESYNC: Duration = Duration::from_secs(300);
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Binding 2N PVs and PVCs sends 4N events for one resource; gathering those that come within
/// this long into one reconcile saves re-applying every pair for each.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// Reconciles of different resources at once (never two of the same one).
const CONCURRENCY: u16 = 4;

/// What the operator needs to know that is not in the API.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// The CSI driver the PVs name (`csi::options::DEFAULT_DRIVER_NAME` unless renamed).
    pub driver_name: String,
}

/// A reconcile that failed; requeued with backoff.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer of LustreFileSystem {object}: {source}")]
    Finalizer {
        object: String,
        #[source]
        source: Box<finalizer::Error<OperatorError>>,
    },
}

impl OperatorError {
    /// A short, stable, bounded label for metrics and logs: the API call that failed
    /// (`get`, `list`, `apply`, `rebind`, `delete`, `status`), also when it failed inside
    /// the finalizer's apply or cleanup; `finalizer` when adding or removing the finalizer
    /// itself failed.
    pub fn metric_label(&self) -> &'static str {
        match self {
            OperatorError::Kube { action, .. } => action,
            OperatorError::Finalizer { source, .. } => match source.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.metric_label()
                }
                _ => "finalizer",
            },
        }
    }
}

fn kube_err(
    action: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(kube::Error) -> OperatorError {
    let object = object.into();
    move |source| OperatorError::Kube {
        action,
        object,
        source,
    }
}

struct Context {
    client: Client,
    recorder: Recorder,
    options: OperatorOptions,
    metrics: Arc<Metrics>,
    /// Consecutive failures per resource name, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// The `resource` label of this controller's metrics: the CRD's name.
const RESOURCE: &str = "lustrefilesystems.lustrekit.io";

/// Runs the controller until `shutdown` completes, counting into `metrics` (which turns
/// ready once the controller's cache is filled).
pub async fn run(
    client: Client,
    options: OperatorOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let controller = Controller::new(
        Api::<LustreFileSystem>::all(client.clone()),
        watcher::Config::default(),
    );
    let controller = controller.with_config(
        ControllerConfig::default()
            .debounce(DEBOUNCE)
            .concurrency(CONCURRENCY),
    );
    let store = controller.store();
    let ready_store = store.clone();
    let ready_metrics = Arc::clone(&metrics);
    // Only once: it ends when the first full list is in, or when the controller stops.
    tokio::spawn(async move {
        if ready_store.wait_until_ready().await.is_ok() {
            ready_metrics.set_ready(true);
        }
    });
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        options,
        metrics,
        failures: Mutex::new(HashMap::new()),
    });
    controller
        .watches(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            managed.clone(),
            |pvc| by_label(&pvc),
        )
        .watches(
            Api::<PersistentVolume>::all(client.clone()),
            managed,
            |pv| by_label(&pv),
        )
        .watches(
            Api::<Namespace>::all(client),
            watcher::Config::default(),
            move |ns| listing(&store, &ns.name_any()),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        })
        .await;
}

fn by_label<K: ResourceExt>(obj: &K) -> Option<ObjectRef<LustreFileSystem>> {
    obj.labels()
        .get(FILESYSTEM_LABEL)
        .map(|name| ObjectRef::new(name))
}

/// The filesystems that list `namespace`: only they are woken by its events.
fn listing(store: &Store<LustreFileSystem>, namespace: &str) -> Vec<ObjectRef<LustreFileSystem>> {
    store
        .state()
        .iter()
        .filter(|lfs| lfs.spec.namespaces.contains_key(namespace))
        .map(|lfs| ObjectRef::from_obj(lfs.as_ref()))
        .collect()
}

fn error_policy(lfs: Arc<LustreFileSystem>, error: &OperatorError, ctx: Arc<Context>) -> Action {
    let name = lfs.name_any();
    let failures = {
        let mut map = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(name.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(failures);
    ctx.metrics.failed(RESOURCE, error);
    tracing::warn!(filesystem = %name, error = %error, label = error.metric_label(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Doubles from [`BACKOFF_BASE`] with each consecutive failure, up to [`BACKOFF_MAX`].
fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << failures.min(8))
        .min(BACKOFF_MAX)
}

async fn reconcile(lfs: Arc<LustreFileSystem>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    let started = Instant::now();
    let result = reconcile_once(lfs, &ctx).await;
    ctx.metrics.reconciled(RESOURCE, started.elapsed());
    result
}

async fn reconcile_once(
    lfs: Arc<LustreFileSystem>,
    ctx: &Context,
) -> Result<Action, OperatorError> {
    let name = lfs.name_any();
    // Other finalizers first: their owners may still use the pairs.
    if lfs.meta().deletion_timestamp.is_some() && lfs.finalizers().iter().any(|f| f != FINALIZER) {
        tracing::info!(filesystem = %name, "deleting: waiting for the other finalizers");
        return Ok(Action::await_change());
    }
    let api = Api::<LustreFileSystem>::all(ctx.client.clone());
    let action = finalizer::finalizer(&api, FINALIZER, lfs, |event| async {
        match event {
            Event::Apply(lfs) => apply(&lfs, ctx).await,
            Event::Cleanup(lfs) => cleanup(&lfs, ctx).await,
        }
    })
    .await
    .map_err(|e| OperatorError::Finalizer {
        object: name.clone(),
        source: Box::new(e),
    })?;
    ctx.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&name);
    Ok(action)
}

/// Records an Event on the resource. Best effort: a lost event must not fail a reconcile.
async fn record(ctx: &Context, lfs: &LustreFileSystem, warning: bool, reason: &str, note: String) {
    let event = KubeEvent {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(note),
        action: reason.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &lfs.object_ref(&())).await {
        tracing::warn!(filesystem = %lfs.name_any(), error = %e, "cannot record an event");
    }
}

fn owned_by(name: &str) -> ListParams {
    ListParams::default().labels(&format!("{FILESYSTEM_LABEL}={name}"))
}

async fn apply(lfs: &LustreFileSystem, ctx: &Context) -> Result<Action, OperatorError> {
    let name = lfs.name_any();
    let client = &ctx.client;
    let namespaces_api = Api::<Namespace>::all(client.clone());
    let mut phases = BTreeMap::new();
    for ns in lfs.spec.namespaces.keys() {
        if let Some(found) = namespaces_api
            .get_opt(ns)
            .await
            .map_err(kube_err("get", format!("Namespace {ns}")))?
        {
            let terminating = found.metadata.deletion_timestamp.is_some()
                || found.status.and_then(|s| s.phase).as_deref() == Some("Terminating");
            let phase = if terminating {
                NamespacePhase::Terminating
            } else {
                NamespacePhase::Active
            };
            phases.insert(ns.clone(), phase);
        }
    }
    let driver = &ctx.options.driver_name;
    let desired = match plan::plan(lfs, &phases, &BTreeSet::new(), driver) {
        Ok(desired) => desired,
        Err(invalid) => {
            // Nothing is made for a spec that cannot be served; the condition says why.
            tracing::warn!(filesystem = %name, error = %invalid, "invalid spec");
            record(ctx, lfs, true, "InvalidSpec", invalid.to_string()).await;
            let status = LustreFileSystemStatus {
                observed_generation: lfs.metadata.generation,
                conditions: vec![
                    condition(lfs, "SpecValid", false, "InvalidSpec", &invalid.to_string()),
                    condition(lfs, "Ready", false, "InvalidSpec", &invalid.to_string()),
                ],
                ..LustreFileSystemStatus::default()
            };
            patch_status(lfs, ctx, &status).await?;
            ctx.metrics.set_ready_pairs(RESOURCE, &name, 0);
            return Ok(Action::await_change());
        }
    };
    let apply_params = PatchParams::apply(FIELD_MANAGER).force();
    let desired_pairs = desired.pairs.len();
    let mut bound = BTreeSet::new();
    for pair in &desired.pairs {
        let pv_name = pair.pv.name_any();
        let pv_api = Api::<PersistentVolume>::all(client.clone());
        let pv = pv_api
            .patch(&pv_name, &apply_params, &Patch::Apply(&pair.pv))
            .await
            .map_err(kube_err("apply", format!("PersistentVolume {pv_name}")))?;
        rebind_if_released(&pv_api, &pv).await?;
        let pvc_name = pair.pvc.name_any();
        let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &pair.namespace)
            .patch(&pvc_name, &apply_params, &Patch::Apply(&pair.pvc))
            .await
            .map_err(kube_err(
                "apply",
                format!("PersistentVolumeClaim {}/{pvc_name}", pair.namespace),
            ))?;
        if pvc.status.and_then(|s| s.phase).as_deref() == Some("Bound") {
            bound.insert((pair.namespace.clone(), pvc_name));
        }
    }
    delete_stale(lfs, ctx, &desired.pvc_keys(), &desired.pv_names()).await?;
    // Same inputs plus what is bound: only the states change.
    let observed = plan::plan(lfs, &phases, &bound, driver).unwrap_or(desired);
    let (ready_reason, ready_message) = if observed.all_ready {
        ("AllBound", "every PVC is bound to its PV".to_string())
    } else {
        (
            "Pending",
            format!(
                "{} namespaces ready; the others are missing, terminating or not bound yet",
                observed.ready_namespaces
            ),
        )
    };
    let was_ready = lfs.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    if observed.all_ready && !was_ready {
        record(
            ctx,
            lfs,
            false,
            "Ready",
            format!("{} PV/PVC pairs bound", desired_pairs),
        )
        .await;
    }
    let status = LustreFileSystemStatus {
        observed_generation: lfs.metadata.generation,
        conditions: vec![
            condition(lfs, "SpecValid", true, "Valid", "the spec is served"),
            condition(
                lfs,
                "Ready",
                observed.all_ready,
                ready_reason,
                &ready_message,
            ),
        ],
        mgs_spec: Some(observed.mgs_spec),
        ready_namespaces: Some(observed.ready_namespaces),
        namespaces: observed.namespaces,
    };
    patch_status(lfs, ctx, &status).await?;
    ctx.metrics.set_ready_pairs(RESOURCE, &name, bound.len());
    Ok(Action::requeue(RESYNC))
}

/// A PV whose PVC was deleted is `Released`, still naming the old claim's UID, so the PVC
/// recreated under the same name would never bind. Dropping the UID (only if it is still the
/// one we saw) lets the binder bind it to the new claim; the data is untouched (`Retain`).
async fn rebind_if_released(
    api: &Api<PersistentVolume>,
    pv: &PersistentVolume,
) -> Result<(), OperatorError> {
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let Some(uid) = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|c| c.uid.clone())
    else {
        return Ok(());
    };
    if !released {
        return Ok(());
    }
    let name = pv.name_any();
    tracing::info!(pv = %name, old_claim = %uid, "re-binding a released PV");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/claimRef/uid", "value": uid},
        {"op": "remove", "path": "/spec/claimRef/uid"},
        {"op": "remove", "path": "/spec/claimRef/resourceVersion"},
    ]))
    .map_err(|e| OperatorError::Kube {
        action: "rebind",
        object: format!("PersistentVolume {name}"),
        source: kube::Error::SerdeError(e),
    })?;
    api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(kube_err("rebind", format!("PersistentVolume {name}")))?;
    Ok(())
}

/// Deletes this filesystem's PVCs and PVs that are not in `keep` (all of them when `keep`
/// is empty). A PVC goes before its PV; an object already gone is not an error.
async fn delete_stale(
    lfs: &LustreFileSystem,
    ctx: &Context,
    keep_pvcs: &BTreeSet<(String, String)>,
    keep_pvs: &BTreeSet<String>,
) -> Result<(), OperatorError> {
    let name = &lfs.name_any();
    let client = &ctx.client;
    let pvcs = Api::<PersistentVolumeClaim>::all(client.clone())
        .list_metadata(&owned_by(name))
        .await
        .map_err(kube_err(
            "list",
            format!("PersistentVolumeClaims of {name}"),
        ))?;
    for pvc in pvcs {
        let ns = pvc.namespace().unwrap_or_default();
        let pvc_name = pvc.name_any();
        if keep_pvcs.contains(&(ns.clone(), pvc_name.clone()))
            || pvc.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        tracing::info!(filesystem = %name, namespace = %ns, pvc = %pvc_name, "deleting PVC");
        delete_if_present(
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns),
            &pvc_name,
            format!("PersistentVolumeClaim {ns}/{pvc_name}"),
        )
        .await?;
        record(
            ctx,
            lfs,
            false,
            "DeletedClaim",
            format!("deleted PVC {ns}/{pvc_name}"),
        )
        .await;
    }
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list_metadata(&owned_by(name))
        .await
        .map_err(kube_err("list", format!("PersistentVolumes of {name}")))?;
    for pv in pvs {
        let pv_name = pv.name_any();
        if keep_pvs.contains(&pv_name) || pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        tracing::info!(filesystem = %name, pv = %pv_name, "deleting PV");
        delete_if_present(
            Api::<PersistentVolume>::all(client.clone()),
            &pv_name,
            format!("PersistentVolume {pv_name}"),
        )
        .await?;
        record(
            ctx,
            lfs,
            false,
            "DeletedVolume",
            format!("deleted PV {pv_name}"),
        )
        .await;
    }
    Ok(())
}

async fn delete_if_present<K>(api: Api<K>, name: &str, object: String) -> Result<(), OperatorError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(OperatorError::Kube {
            action: "delete",
            object,
            source,
        }),
    }
}

async fn cleanup(lfs: &LustreFileSystem, ctx: &Context) -> Result<Action, OperatorError> {
    let name = lfs.name_any();
    tracing::info!(filesystem = %name, "deleting its PV/PVC pairs");
    delete_stale(lfs, ctx, &BTreeSet::new(), &BTreeSet::new()).await?;
    ctx.metrics.forget(RESOURCE, &name);
    Ok(Action::await_change())
}

/// A condition for the current generation; its transition time moves only when its status
/// does.
fn condition(
    lfs: &LustreFileSystem,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = lfs
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Utc::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: lfs.metadata.generation,
        last_transition_time: since,
    }
}

async fn patch_status(
    lfs: &LustreFileSystem,
    ctx: &Context,
    status: &LustreFileSystemStatus,
) -> Result<(), OperatorError> {
    let name = lfs.name_any();
    let body = json!({
        "apiVersion": LustreFileSystem::api_version(&()),
        "kind": LustreFileSystem::kind(&()),
        "status": status,
    });
    Api::<LustreFileSystem>::all(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(kube_err("status", format!("LustreFileSystem {name}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::LustreFileSystemSpec;
    use k8s_openapi::chrono::TimeZone;

    fn with_ready(status: &str) -> LustreFileSystem {
        let mut lfs = LustreFileSystem::new(
            "lus",
            LustreFileSystemSpec {
                fs_name: "lfs1".into(),
                mgs_nodes: vec![],
                mount_root: "/lus".into(),
                sub_directory: None,
                storage_class_name: "c".into(),
                namespaces: BTreeMap::new(),
            },
        );
        lfs.metadata.generation = Some(3);
        lfs.status = Some(LustreFileSystemStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: "r".into(),
                message: "m".into(),
                observed_generation: Some(2),
                last_transition_time: Time(Utc.timestamp_opt(1_000, 0).unwrap()),
            }],
            ..LustreFileSystemStatus::default()
        });
        lfs
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let same = condition(&with_ready("True"), "Ready", true, "AllBound", "ok");
        assert_eq!(same.last_transition_time.0.timestamp(), 1_000);
        assert_eq!(same.observed_generation, Some(3));
        let flipped = condition(&with_ready("False"), "Ready", true, "AllBound", "ok");
        assert!(flipped.last_transition_time.0.timestamp() > 1_000);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(4));
        assert_eq!(backoff(2), Duration::from_secs(8));
        assert_eq!(backoff(20), BACKOFF_MAX);
    }
}
