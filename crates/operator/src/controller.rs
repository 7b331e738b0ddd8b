//! The `LustreFileSystem` controllers (one per kind: ours and HPE's, one reconcile for
//! both through [`Served`]): apply the pairs [`crate::plan`] computes with server-side
//! apply, delete the stale ones, report status, and clean up behind a finalizer. Namespace
//! events wake only the filesystems that list the namespace; PV/PVC events wake the
//! filesystem named in their labels.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::OptionFuture;
use futures::{FutureExt, StreamExt};
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
use crate::hpe::HpeLustreFileSystem;
use crate::metrics::Metrics;
use crate::plan::{
    self, FILESYSTEM_LABEL, Input, MANAGED_BY, MANAGED_BY_LABEL, NamespacePhase, SpecError,
};

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
/// How often readiness looks again whether the caches are filled.
const READY_POLL: Duration = Duration::from_millis(500);

/// What the operator needs to know that is not in the API.
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// The CSI driver the PVs name (`csi::options::DEFAULT_DRIVER_NAME` unless renamed).
    pub driver_name: String,
    /// How `DataMovement` copies run.
    pub mover: crate::mover::MoverOptions,
    /// The directory below the filesystem root that HPE's resources expose (they have no
    /// field for it); `None` refuses them with a condition.
    pub hpe_sub_directory: Option<String>,
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
    #[error("{action} {object}: no answer in time")]
    Timeout {
        action: &'static str,
        object: String,
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
            OperatorError::Timeout { .. } => "timeout",
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

/// A resource kind the controller serves: ours and HPE's ([`crate::hpe`]). What differs
/// between them is here; the reconcile is written once.
pub trait Served:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    /// The CRD's name: the `resource` label of the metrics.
    const RESOURCE: &'static str;
    /// Held on every resource of the kind until its pairs are deleted.
    const FINALIZER: &'static str;
    /// The API this object is read and written through (namespaced or not).
    fn api(&self, client: Client) -> Api<Self>;
    /// `name`, or `namespace/name`: how logs, errors and metrics name the object.
    fn key(&self) -> String;
    /// The labels its pairs carry, whatever its spec says (so cleanup finds them).
    fn owner(&self) -> BTreeMap<String, String>;
    /// The resource a PV or PVC with these labels was made for.
    fn owner_of(labels: &BTreeMap<String, String>) -> Option<ObjectRef<Self>>;
    /// Whether its spec lists `namespace`.
    fn lists(&self, namespace: &str) -> bool;
    /// The plan's input, or why the spec cannot be served.
    fn input(&self, options: &OperatorOptions) -> Result<Input, SpecError>;
    /// The conditions it reports now, whose transition times are kept.
    fn conditions(&self) -> &[Condition];
    /// `status` in this kind's shape.
    fn status(&self, status: LustreFileSystemStatus) -> serde_json::Value;
}

impl Served for LustreFileSystem {
    const RESOURCE: &'static str = "lustrefilesystems.lustrekit.io";
    const FINALIZER: &'static str = FINALIZER;

    fn api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }

    fn key(&self) -> String {
        self.name_any()
    }

    fn owner(&self) -> BTreeMap<String, String> {
        plan::owner_labels(&self.name_any())
    }

    fn owner_of(labels: &BTreeMap<String, String>) -> Option<ObjectRef<Self>> {
        labels
            .get(FILESYSTEM_LABEL)
            .map(|name| ObjectRef::new(name))
    }

    fn lists(&self, namespace: &str) -> bool {
        self.spec.namespaces.contains_key(namespace)
    }

    fn input(&self, _: &OperatorOptions) -> Result<Input, SpecError> {
        Ok(Input::from(self))
    }

    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default()
    }

    fn status(&self, status: LustreFileSystemStatus) -> serde_json::Value {
        json!(status)
    }
}

struct Context {
    client: Client,
    recorder: Recorder,
    options: OperatorOptions,
    metrics: Arc<Metrics>,
    /// Consecutive failures per resource (`<crd>/<key>`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

/// Runs a controller for each kind (ours, and HPE's if its CRD is installed) until
/// `shutdown` completes, counting into `metrics` (which turns ready once every cache is
/// filled).
pub async fn run(
    client: Client,
    options: OperatorOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Not ready until the caches are filled (below); a standby that just took over too.
    metrics.set_ready(false);
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: std::env::var("POD_NAME").ok(),
    };
    // Both controllers stop on the same signal.
    let shutdown = shutdown.boxed().shared();
    let movements = crate::mover::run(
        client.clone(),
        Recorder::new(client.clone(), reporter.clone()),
        options.mover.clone(),
        Arc::clone(&metrics),
        shutdown.clone(),
    );
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        options,
        metrics: Arc::clone(&metrics),
        failures: Mutex::new(HashMap::new()),
    });
    let serve_hpe = is_served::<HpeLustreFileSystem>(&client).await;
    let (ours, ours_store) =
        controller::<LustreFileSystem>(&client, Arc::clone(&context), shutdown.clone());
    let (hpe, hpe_store) = match serve_hpe {
        true => {
            let (run, store) = controller::<HpeLustreFileSystem>(&client, context, shutdown);
            (Some(run), Some(store))
        }
        false => (None, None),
    };
    // Only once: it ends when every first full list is in, or when a controller stops.
    tokio::spawn(async move {
        let hpe_ready = match hpe_store {
            Some(store) => filled(&store).await,
            None => true,
        };
        if hpe_ready && filled(&ours_store).await {
            tracing::info!("caches filled: ready");
            metrics.set_ready(true);
        }
    });
    futures::join!(ours, OptionFuture::from(hpe), movements);
}

/// Whether `store` got its first full list (false: its controller stopped first).
/// `Store::wait_until_ready` wakes only the last task that polled it, and the controller
/// waits on it too, so it is polled again on a timer rather than awaited once.
async fn filled<K: Served>(store: &Store<K>) -> bool {
    loop {
        if let Ok(done) = tokio::time::timeout(READY_POLL, store.wait_until_ready()).await {
            return done.is_ok();
        }
    }
}

/// Whether the API server serves `K` (its CRD is installed). Checked once at start: a
/// controller for a kind that is not there would only log its watch failing, forever.
async fn is_served<K: Served>(client: &Client) -> bool {
    let plural = K::plural(&());
    match client.list_api_group_resources(&K::api_version(&())).await {
        Ok(list) if list.resources.iter().any(|r| r.name == plural) => true,
        Ok(_) => {
            tracing::info!(
                resource = K::RESOURCE,
                "not installed: not served (restart to serve it)"
            );
            false
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::info!(
                resource = K::RESOURCE,
                "not installed: not served (restart to serve it)"
            );
            false
        }
        Err(e) => {
            tracing::warn!(resource = K::RESOURCE, error = %e, "cannot tell whether it is installed: not served (restart to serve it)");
            false
        }
    }
}

/// The controller of one kind, and its cache.
fn controller<K: Served>(
    client: &Client,
    context: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> (impl Future<Output = ()>, Store<K>) {
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default())
        .with_config(
            ControllerConfig::default()
                .debounce(DEBOUNCE)
                .concurrency(CONCURRENCY),
        );
    let store = controller.store();
    let listing_store = store.clone();
    let run = controller
        .watches(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            managed.clone(),
            |pvc| K::owner_of(pvc.labels()),
        )
        .watches(
            Api::<PersistentVolume>::all(client.clone()),
            managed,
            |pv| K::owner_of(pv.labels()),
        )
        .watches(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            move |ns| listing(&listing_store, &ns.name_any()),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, error_policy::<K>, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        });
    (run, store)
}

/// The resources that list `namespace`: only they are woken by its events.
fn listing<K: Served>(store: &Store<K>, namespace: &str) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|lfs| lfs.lists(namespace))
        .map(|lfs| ObjectRef::from_obj(lfs.as_ref()))
        .collect()
}

fn error_policy<K: Served>(lfs: Arc<K>, error: &OperatorError, ctx: Arc<Context>) -> Action {
    let key = lfs.key();
    let failures = {
        let mut map = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(format!("{}/{key}", K::RESOURCE)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(failures);
    ctx.metrics.failed(K::RESOURCE, error);
    tracing::warn!(resource = K::RESOURCE, filesystem = %key, error = %error, label = error.metric_label(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Doubles from [`BACKOFF_BASE`] with each consecutive failure, up to [`BACKOFF_MAX`].
fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << failures.min(8))
        .min(BACKOFF_MAX)
}

async fn reconcile<K: Served>(lfs: Arc<K>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    let started = Instant::now();
    let result = reconcile_once(lfs, &ctx).await;
    ctx.metrics.reconciled(K::RESOURCE, started.elapsed());
    result
}

async fn reconcile_once<K: Served>(lfs: Arc<K>, ctx: &Context) -> Result<Action, OperatorError> {
    let key = lfs.key();
    // Other finalizers first: their owners may still use the pairs.
    if lfs.meta().deletion_timestamp.is_some() && lfs.finalizers().iter().any(|f| f != K::FINALIZER)
    {
        tracing::info!(filesystem = %key, "deleting: waiting for the other finalizers");
        return Ok(Action::await_change());
    }
    let api = lfs.api(ctx.client.clone());
    let action = finalizer::finalizer(&api, K::FINALIZER, lfs, |event| async {
        match event {
            Event::Apply(lfs) => apply(lfs.as_ref(), ctx).await,
            Event::Cleanup(lfs) => cleanup(lfs.as_ref(), ctx).await,
        }
    })
    .await
    .map_err(|e| OperatorError::Finalizer {
        object: key.clone(),
        source: Box::new(e),
    })?;
    ctx.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&format!("{}/{key}", K::RESOURCE));
    Ok(action)
}

/// Records an Event on the resource. Best effort: a lost event must not fail a reconcile.
async fn record<K: Served>(ctx: &Context, lfs: &K, warning: bool, reason: &str, note: String) {
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
        tracing::warn!(filesystem = %lfs.key(), error = %e, "cannot record an event");
    }
}

/// Selects the objects carrying every one of `owner`'s labels.
fn owned_by(owner: &BTreeMap<String, String>) -> ListParams {
    let selector: Vec<String> = owner.iter().map(|(k, v)| format!("{k}={v}")).collect();
    ListParams::default().labels(&selector.join(","))
}

async fn apply<K: Served>(lfs: &K, ctx: &Context) -> Result<Action, OperatorError> {
    let key = lfs.key();
    let client = &ctx.client;
    let input = lfs.input(&ctx.options);
    let listed: Vec<String> = match &input {
        Ok(input) => input.spec.namespaces.keys().cloned().collect(),
        Err(_) => Vec::new(),
    };
    let namespaces_api = Api::<Namespace>::all(client.clone());
    let mut phases = BTreeMap::new();
    for ns in &listed {
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
    let planned = input.and_then(|input| {
        let desired = plan::plan_input(&input, &phases, &BTreeSet::new(), driver)?;
        Ok((input, desired))
    });
    let (input, desired) = match planned {
        Ok(planned) => planned,
        Err(invalid) => {
            // Nothing is made for a spec that cannot be served; the condition says why.
            tracing::warn!(filesystem = %key, error = %invalid, "invalid spec");
            record(ctx, lfs, true, "InvalidSpec", invalid.to_string()).await;
            let status = LustreFileSystemStatus {
                observed_generation: lfs.meta().generation,
                conditions: vec![
                    condition(lfs, "SpecValid", false, "InvalidSpec", &invalid.to_string()),
                    condition(lfs, "Ready", false, "InvalidSpec", &invalid.to_string()),
                ],
                ..LustreFileSystemStatus::default()
            };
            patch_status(lfs, ctx, status).await?;
            ctx.metrics.set_ready_pairs(K::RESOURCE, &key, 0);
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
    let observed = plan::plan_input(&input, &phases, &bound, driver).unwrap_or(desired);
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
    let was_ready = lfs
        .conditions()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
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
        observed_generation: lfs.meta().generation,
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
    patch_status(lfs, ctx, status).await?;
    ctx.metrics.set_ready_pairs(K::RESOURCE, &key, bound.len());
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

/// Deletes this resource's PVCs and PVs that are not in `keep` (all of them when `keep`
/// is empty). A PVC goes before its PV; an object already gone is not an error.
async fn delete_stale<K: Served>(
    lfs: &K,
    ctx: &Context,
    keep_pvcs: &BTreeSet<(String, String)>,
    keep_pvs: &BTreeSet<String>,
) -> Result<(), OperatorError> {
    let name = &lfs.key();
    let owner = owned_by(&lfs.owner());
    let client = &ctx.client;
    let pvcs = Api::<PersistentVolumeClaim>::all(client.clone())
        .list_metadata(&owner)
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
        .list_metadata(&owner)
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

async fn cleanup<K: Served>(lfs: &K, ctx: &Context) -> Result<Action, OperatorError> {
    let key = lfs.key();
    tracing::info!(filesystem = %key, "deleting its PV/PVC pairs");
    delete_stale(lfs, ctx, &BTreeSet::new(), &BTreeSet::new()).await?;
    ctx.metrics.forget(K::RESOURCE, &key);
    Ok(Action::await_change())
}

/// A condition for the current generation; its transition time moves only when its status
/// does.
fn condition<K: Served>(lfs: &K, type_: &str, ok: bool, reason: &str, message: &str) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = lfs
        .conditions()
        .iter()
        .find(|c| c.type_ == type_)
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Utc::now()));
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: lfs.meta().generation,
        last_transition_time: since,
    }
}

async fn patch_status<K: Served>(
    lfs: &K,
    ctx: &Context,
    status: LustreFileSystemStatus,
) -> Result<(), OperatorError> {
    let name = lfs.name_any();
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": lfs.status(status),
    });
    lfs.api(ctx.client.clone())
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(kube_err(
            "status",
            format!("{} {}", K::kind(&()), lfs.key()),
        ))?;
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

    /// Two tasks wait for the same store (here and in kube's controller): both see it
    /// filled, though only the last one to poll is woken.
    #[tokio::test]
    async fn filled_sees_a_store_another_task_also_waits_for() {
        let (store, mut writer) = kube::runtime::reflector::store::<LustreFileSystem>();
        let other = store.clone();
        let mine = tokio::spawn(async move { filled(&store).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Polled after ours: its waker replaces ours.
        let theirs = tokio::spawn(async move { other.wait_until_ready().await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let mine = tokio::time::timeout(Duration::from_secs(5), mine).await;
        assert!(matches!(mine, Ok(Ok(true))), "{mine:?}");
        assert!(theirs.await.unwrap_or(false));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(4));
        assert_eq!(backoff(2), Duration::from_secs(8));
        assert_eq!(backoff(20), BACKOFF_MAX);
    }
}
