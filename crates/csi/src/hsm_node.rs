//! Restore on access for the HSM volumes a node publishes, where the filesystem does not do
//! it itself ([`backend::Capabilities::restore_on_access`] false: the `local` backend). On
//! Lustre the coordinator restores a released file on access and our copytool serves it,
//! so nothing runs here.
//!
//! The first publish of an HSM volume on the node starts a restore daemon
//! ([`hsm::RestoreDaemon`]) rooted at the volume's directory, with the store opened from
//! the node-publish secret; later publishes (other pods) count themselves in; the last
//! unpublish stops it. A read of a released file through any target then blocks until its
//! bytes are back, and gets exactly them or an error, never the zeros of a stub.
//!
//! A node plugin that restarts loses its daemons but not the volumes its pods have mounted.
//! The node therefore keeps a record of what it watches (`hsm-volumes.json` in its state
//! directory: volume, directory, store URL, never a credential) and, at start, watches those
//! volumes again with a store opened without credentials: until the volume is published again
//! with its secret (kubelet republishes periodically when the CSIDriver says
//! `requiresRepublish`), a read of a released file fails with EIO instead of returning
//! zeros, and the republish swaps in a daemon with credentials (the new one starts before the
//! old one stops, so no read goes unanswered).
//!
//! **The per-volume policy** (`hsmArchiveAfter`, `hsmRelease*`) runs here too, on a node
//! that publishes the volume, with the same engine and credentials, from the first publish
//! to the last unpublish. Not in the controller: the store's credentials reach the
//! controller only inside CreateVolume and DeleteVolume (the provisioner secret), and it
//! would have to keep them, on disk to survive a restart; the node gets them at every
//! publish and republish. A released file also needs the restore daemon, which runs here.
//! Among several nodes publishing one volume, one runs its policy: the first to take the
//! volume's `hsm-policy` role (a lock beside the share's, [`ShareService::hold_role`]); the
//! others stand by and ask again every minute, so the policy moves when its node lets go.
//! A volume published nowhere has no policy running: nothing writes to it. Each pass's
//! outcome is written to the volume's status ([`crate::hsm_status`]) and counted in the
//! node's per-volume metrics ([`hsm::metrics::VolumeMetrics`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backend::Filesystem;
use hsm::metrics::VolumeMetrics;
use hsm::restore_daemon::{DaemonConfig, RestoreDaemon};
use hsm::{ArchiveStore, EngineConfig, HsmEngine, Metrics, RetryPolicy};
use lustre_model::{RelPath, ShareName};
use serde::{Deserialize, Serialize};
use share::ShareService;

use crate::error::{CsiError, Result};
use crate::hsm_status::HsmStatus;
use crate::params::{ReadMode, scrub_secrets, store_options};
use crate::volume::{NodeHsm, VolumePolicy};

/// What the node watches for one volume, as kept on disk (no credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Watch {
    /// The volume's directory, relative to the filesystem root.
    share_path: String,
    /// The store URL (credential-free).
    store: String,
    /// Reads of released files fail with EAGAIN while they are restored (`fail-fast`).
    #[serde(default)]
    fail_fast: bool,
    /// How long a read of a released file waits for its restore (seconds; 0: the default).
    #[serde(default)]
    restore_timeout_secs: u64,
    /// Publishes holding it (`<volume ID> <target>`).
    holders: BTreeSet<String>,
}

/// What runs for one volume: its restore daemon (none where the filesystem restores on
/// access) and its policy, and whether they have the volume's credentials.
struct Running {
    daemon: Option<RestoreDaemon>,
    policy: Option<PolicyRun>,
    with_secrets: bool,
}

impl Running {
    /// Stops the policy first (its releases count on the daemon), then the daemon.
    async fn stop(self) {
        if let Some(policy) = self.policy {
            policy.stop().await;
        }
        if let Some(daemon) = self.daemon {
            daemon.stop().await;
        }
    }
}

/// A volume's policy task (see the module doc).
struct PolicyRun {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PolicyRun {
    async fn stop(self) {
        let _ = self.stop.send(true);
        // A pass in progress ends at its next step; one stuck in a hung store or
        // filesystem is left behind (its engine's calls have their own timeouts).
        if tokio::time::timeout(POLICY_STOP_GRACE, self.task)
            .await
            .is_err()
        {
            tracing::warn!(
                "a policy pass did not stop within {POLICY_STOP_GRACE:?}; left to finish"
            );
        }
    }
}

/// How long a stopping policy may take to finish its pass.
const POLICY_STOP_GRACE: Duration = Duration::from_secs(30);
/// How often a node that stands by asks again for a volume's policy role.
const POLICY_STANDBY: Duration = Duration::from_secs(60);
/// How long a store check or a status write may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);

/// The node's restore daemons and policies; see the module doc.
pub struct NodeRestore {
    file: Option<PathBuf>,
    state: tokio::sync::Mutex<NodeState>,
    service: Arc<ShareService>,
    node_id: String,
    volumes: Arc<VolumeMetrics>,
    /// The last status of each volume whose policy runs here.
    statuses: Arc<std::sync::Mutex<HashMap<String, HsmStatus>>>,
}

#[derive(Default)]
struct NodeState {
    loaded: bool,
    watches: BTreeMap<String, Watch>,
    running: HashMap<String, Running>,
}

/// The record file in the node state directory.
pub const FILE_NAME: &str = "hsm-volumes.json";

/// Store requests of a restore: a few retries, each bounded.
fn retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(5),
        timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(10),
    }
}

impl NodeRestore {
    pub fn new(
        dir: Option<PathBuf>,
        service: Arc<ShareService>,
        node_id: &str,
        volumes: Arc<VolumeMetrics>,
    ) -> Self {
        Self {
            file: dir.map(|d| d.join(FILE_NAME)),
            state: tokio::sync::Mutex::new(NodeState::default()),
            service,
            node_id: node_id.to_string(),
            volumes,
            statuses: Arc::default(),
        }
    }

    /// The status of `volume_id`'s policy: this node's last pass, or the one another node
    /// wrote (`None` when no pass ran yet, or the volume has no policy).
    pub async fn status(&self, volume_id: &str) -> Result<Option<HsmStatus>> {
        let here = self
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(volume_id)
            .cloned();
        if here.is_some() {
            return Ok(here);
        }
        let Some((_, share)) = crate::volume::share_of(volume_id, self.service.settings()) else {
            return Ok(None);
        };
        Ok(crate::hsm_status::read(&self.service, &share)
            .await?
            .filter(|s| s.volume_id == volume_id))
    }

    /// Watches `share_path` for `holder` (a publish of `volume_id`): starts its daemon
    /// with `secrets` unless one with credentials runs already.
    pub async fn hold(
        &self,
        backend: &Arc<dyn Filesystem>,
        volume_id: &str,
        holder: &str,
        share_path: &RelPath,
        hsm: &NodeHsm,
        secrets: &HashMap<String, String>,
    ) -> Result<()> {
        // On Lustre the coordinator restores on access: no daemon runs here.
        let daemon_needed = !backend.capabilities().restore_on_access;
        let mut state = self.state.lock().await;
        self.load(&mut state).await?;
        let running_with_secrets = state.running.get(volume_id).is_some_and(|r| r.with_secrets);
        if (daemon_needed || hsm.policy.is_some()) && !running_with_secrets {
            let fail_fast = hsm.read_mode == ReadMode::FailFast;
            let engine = self.engine(backend, volume_id, share_path, &hsm.store, secrets)?;
            let daemon = if daemon_needed {
                tracing::info!(volume_id, share = %share_path, "restore on access: watching");
                Some(start(&engine, fail_fast, hsm.restore_timeout, secrets)?)
            } else {
                None
            };
            let policy = hsm
                .policy
                .as_ref()
                .and_then(|p| self.start_policy(&engine, volume_id, share_path, p));
            if let Some(old) = state.running.insert(
                volume_id.to_string(),
                Running {
                    daemon,
                    policy,
                    with_secrets: true,
                },
            ) {
                // The new one answers already: the old one may go.
                old.stop().await;
            }
        }
        let first = !state.watches.contains_key(volume_id);
        let watch = state
            .watches
            .entry(volume_id.to_string())
            .or_insert_with(|| Watch {
                share_path: share_path.as_str().to_string(),
                store: hsm.store.clone(),
                fail_fast: hsm.read_mode == ReadMode::FailFast,
                restore_timeout_secs: hsm.restore_timeout.as_secs(),
                holders: BTreeSet::new(),
            });
        watch.holders.insert(holder.to_string());
        let record = state.watches.clone();
        self.save(&record).await?;
        drop(state);
        if first && !hsm.prefetch.is_empty() {
            let (root, globs) = (backend.host_path(share_path), hsm.prefetch.clone());
            tokio::spawn(prefetch(root, globs));
        }
        Ok(())
    }

    /// Lets go of `holder`'s watch; the last one out stops the volume's daemon.
    pub async fn release(&self, volume_id: &str, holder: &str) -> Result<()> {
        let mut state = self.state.lock().await;
        self.load(&mut state).await?;
        let Some(watch) = state.watches.get_mut(volume_id) else {
            return Ok(());
        };
        if !watch.holders.remove(holder) {
            return Ok(());
        }
        if watch.holders.is_empty() {
            state.watches.remove(volume_id);
            if let Some(running) = state.running.remove(volume_id) {
                running.stop().await;
            }
            self.statuses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(volume_id);
            self.volumes.forget(volume_id);
            tracing::info!(volume_id, "restore on access and policy: no longer running");
        }
        let record = state.watches.clone();
        self.save(&record).await
    }

    /// At start: watches again every volume the record lists, without credentials (see
    /// the module doc). A volume that cannot be watched is logged and left to its next
    /// publish.
    pub async fn resume(&self, backend: &Arc<dyn Filesystem>) -> Result<()> {
        // Lustre: nothing to watch again (the coordinator restores).
        if backend.capabilities().restore_on_access {
            return Ok(());
        }
        let mut state = self.state.lock().await;
        self.load(&mut state).await?;
        let watches = state.watches.clone();
        for (volume_id, watch) in watches {
            if state.running.contains_key(&volume_id) {
                continue;
            }
            let started = RelPath::parse(&watch.share_path)
                .map_err(CsiError::from)
                .and_then(|path| {
                    let engine =
                        self.engine(backend, &volume_id, &path, &watch.store, &HashMap::new())?;
                    let timeout = match watch.restore_timeout_secs {
                        0 => Duration::from_secs(crate::params::DEFAULT_RESTORE_TIMEOUT_SECS),
                        secs => Duration::from_secs(secs),
                    };
                    start(&engine, watch.fail_fast, timeout, &HashMap::new())
                });
            match started {
                Ok(daemon) => {
                    tracing::warn!(volume_id, share = %watch.share_path,
                        "restore on access: watching again without the store's credentials \
                         until the volume is published again; reads of released files fail \
                         with EIO until then");
                    state.running.insert(
                        volume_id,
                        Running {
                            daemon: Some(daemon),
                            policy: None,
                            with_secrets: false,
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(volume_id, error = %e,
                        "restore on access: cannot watch a published volume again");
                }
            }
        }
        Ok(())
    }

    /// The volumes watched now, and whether each daemon has credentials (tests).
    pub async fn watching(&self) -> BTreeMap<String, bool> {
        let state = self.state.lock().await;
        state
            .running
            .iter()
            .map(|(k, r)| (k.clone(), r.with_secrets))
            .collect()
    }

    /// Stops every daemon (the plugin is shutting down; the record stays for the next one).
    pub async fn stop_all(&self) {
        let mut state = self.state.lock().await;
        for (_, running) in state.running.drain() {
            running.stop().await;
        }
    }

    async fn load(&self, state: &mut NodeState) -> Result<()> {
        if !state.loaded {
            state.watches = crate::node_record::read(self.file.clone(), "HSM watch record").await?;
            state.loaded = true;
        }
        Ok(())
    }

    async fn save(&self, watches: &BTreeMap<String, Watch>) -> Result<()> {
        crate::node_record::write(self.file.clone(), watches, "HSM watch record").await
    }
}

/// Files prefetched at once.
const PREFETCH_AT_ONCE: usize = 4;
/// How long one prefetched file may take to come back.
const PREFETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// `hsmPrefetch`, in the background of a volume's first publish on the node: the first
/// byte of every regular file whose path below the volume matches a glob is read, a few at
/// once, so whatever restores on access (the daemon here, the coordinator on Lustre) brings
/// a released one back before the pod asks. Names come from a walk that follows no
/// symlink, and each file is opened from the volume's descriptor beneath it, pinned and
/// checked to be a regular file first (a tenant's FIFO or device is never opened).
async fn prefetch(root: PathBuf, globs: Vec<String>) {
    let set = match hsm::policy::config::globset("hsmPrefetch", &globs) {
        Ok(Some(set)) => set,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "hsmPrefetch: not prefetching");
            return;
        }
    };
    let walk_root = root.clone();
    let listed = tokio::task::spawn_blocking(move || {
        hsm::walk::walk_with(&walk_root, 2, |path, meta| {
            let rel = path.strip_prefix(&walk_root).ok()?;
            (meta.is_file() && set.is_match(rel)).then(|| rel.to_path_buf())
        })
    })
    .await;
    let files = match listed {
        Ok(Ok((files, _))) => files,
        Ok(Err(e)) => {
            tracing::warn!(root = %root.display(), error = %e, "hsmPrefetch: cannot walk the volume");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "hsmPrefetch: the walk failed");
            return;
        }
    };
    let dir = match nix::fcntl::open(
        &root,
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            tracing::warn!(root = %root.display(), error = %e, "hsmPrefetch: cannot open the volume");
            return;
        }
    };
    let total = files.len();
    let mut pending = files.into_iter();
    let mut running = tokio::task::JoinSet::new();
    let (mut done, mut failed) = (0usize, 0usize);
    loop {
        while running.len() < PREFETCH_AT_ONCE {
            let Some(rel) = pending.next() else { break };
            let dir = Arc::clone(&dir);
            running.spawn(async move {
                let read = tokio::task::spawn_blocking(move || first_byte(&dir, &rel));
                matches!(
                    tokio::time::timeout(PREFETCH_TIMEOUT, read).await,
                    Ok(Ok(Ok(())))
                )
            });
        }
        match running.join_next().await {
            Some(Ok(true)) => done += 1,
            Some(_) => failed += 1,
            None => break,
        }
    }
    tracing::info!(root = %root.display(), files = total, done, failed, "hsmPrefetch finished");
}

/// Reads the first byte of the regular file `rel` beneath `dir` (see [`prefetch`]).
fn first_byte(dir: &std::os::fd::OwnedFd, rel: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let rel = rel
        .to_str()
        .ok_or_else(|| std::io::Error::other("not UTF-8"))?;
    let fd = backend::local::beneath::open_regular(
        dir.as_fd(),
        rel,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NOATIME,
    )
    .map_err(|e| std::io::Error::other(format!("{rel}: {e}")))?;
    let mut byte = [0u8; 1];
    nix::sys::uio::pread(fd.as_fd(), &mut byte, 0)
        .map(drop)
        .map_err(std::io::Error::from)
}

/// A daemon rooted at the engine's root (the volume's directory); `secrets` are scrubbed
/// from any error.
fn start(
    engine: &Arc<HsmEngine>,
    fail_fast: bool,
    restore_timeout: Duration,
    secrets: &HashMap<String, String>,
) -> Result<RestoreDaemon> {
    let cfg = DaemonConfig {
        fail_fast,
        restore_timeout,
        ..DaemonConfig::default()
    };
    RestoreDaemon::start(Arc::clone(engine), cfg).map_err(|e| {
        CsiError::FailedPrecondition(format!(
            "restore on access for {}: {}",
            engine.config().root.display(),
            scrub_secrets(&e.to_string(), secrets)
        ))
    })
}

impl NodeRestore {
    /// The volume's engine: rooted at its directory, its store opened with `secrets`
    /// (scrubbed from any error), its operations counted under the volume's ID.
    fn engine(
        &self,
        backend: &Arc<dyn Filesystem>,
        volume_id: &str,
        share_path: &RelPath,
        store: &str,
        secrets: &HashMap<String, String>,
    ) -> Result<Arc<HsmEngine>> {
        let store =
            ArchiveStore::open_with(store, &retry(), &store_options(secrets)).map_err(|e| {
                CsiError::invalid(format!(
                    "volume context hsmStore: {}",
                    scrub_secrets(&e.to_string(), secrets)
                ))
            })?;
        let engine = HsmEngine::new(
            store,
            Arc::clone(backend),
            EngineConfig {
                root: backend.host_path(share_path),
                ..EngineConfig::default()
            },
        )
        .with_metrics(Arc::new(Metrics::for_volume(
            Arc::clone(&self.volumes),
            volume_id,
        )));
        Ok(Arc::new(engine))
    }

    /// Starts `volume_id`'s policy task (see the module doc); `None` for a volume this
    /// driver did not make (a static one: no share name to hold its role by).
    fn start_policy(
        &self,
        engine: &Arc<HsmEngine>,
        volume_id: &str,
        share_path: &RelPath,
        policy: &VolumePolicy,
    ) -> Option<PolicyRun> {
        let Some((_, share)) = crate::volume::share_of(volume_id, self.service.settings()) else {
            tracing::warn!(
                volume_id,
                "the HSM policy runs only for volumes this driver made; not for this static one"
            );
            return None;
        };
        // Passes at least every half of the archive age (ages pass without events), within
        // 10 s and 5 min.
        let interval = policy
            .archive_after_secs
            .map_or(300, |secs| (secs / 2).clamp(10, 300));
        let job = PolicyJob {
            service: Arc::clone(&self.service),
            engine: Arc::clone(engine),
            volume_id: volume_id.to_string(),
            node_id: self.node_id.clone(),
            share,
            config: policy.config(share_path.as_str(), interval),
            volumes: Arc::clone(&self.volumes),
            statuses: Arc::clone(&self.statuses),
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(job.run(stopped));
        Some(PolicyRun { stop, task })
    }
}

/// What one volume's policy task needs.
struct PolicyJob {
    service: Arc<ShareService>,
    engine: Arc<HsmEngine>,
    volume_id: String,
    node_id: String,
    share: ShareName,
    config: hsm::policy::PolicyConfig,
    volumes: Arc<VolumeMetrics>,
    statuses: Arc<std::sync::Mutex<HashMap<String, HsmStatus>>>,
}

/// The role a node holds while it runs a volume's policy.
const POLICY_ROLE: &str = "hsm-policy";

impl PolicyJob {
    /// Takes the volume's policy role (standing by while another node holds it), then runs
    /// the policy until `stop`.
    async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let volume_id = self.volume_id.as_str();
        let held = loop {
            let taken = tokio::select! {
                taken = self.service.hold_role(POLICY_ROLE, &self.share) => taken,
                _ = stop.changed() => return,
            };
            match taken {
                Ok(held) => break held,
                Err(share::ShareError::Busy { .. }) => {
                    tracing::info!(
                        volume_id,
                        "another node runs this volume's HSM policy; standing by"
                    );
                }
                Err(e) => {
                    tracing::warn!(volume_id, error = %e, "cannot take the volume's HSM policy role; asking again later");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLICY_STANDBY) => {}
                _ = stop.changed() => return,
            }
        };
        let policy = match hsm::policy::Policy::new(Arc::clone(&self.engine), self.config.clone()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(volume_id, error = %e, "the volume's HSM policy cannot run");
                if let Err(e) = held.release().await {
                    tracing::warn!(volume_id, error = %e, "could not let go of the policy role");
                }
                return;
            }
        };
        tracing::info!(volume_id, "running the volume's HSM policy");
        // Passes hand their outcome to a writer that checks the store and writes the
        // status, so a slow store never holds the next pass.
        let (outcomes, latest) = tokio::sync::watch::channel(None::<HsmStatus>);
        let writer = tokio::spawn(self.write_statuses(latest));
        let each = |outcome: hsm::policy::PassOutcome<'_>| {
            let now = crate::hsm_status::now_secs();
            match outcome {
                Ok(report) => {
                    let clean = report.errors.is_empty();
                    self.volumes.pass_done(
                        volume_id,
                        Duration::from_millis(report.elapsed_ms),
                        clean,
                        Some(&report.states.as_array()),
                        now,
                    );
                    let status = HsmStatus::of_pass(volume_id, &self.node_id, report, true, now);
                    outcomes.send_replace(Some(status));
                }
                Err((_, took)) => self.volumes.pass_done(volume_id, took, false, None, now),
            }
        };
        let stopping = async {
            let _ = stop.changed().await;
        };
        if let Err(e) = policy.watch_outcomes(stopping, &each).await {
            tracing::error!(volume_id, error = %e, "the volume's HSM policy stopped");
        }
        drop(outcomes);
        let _ = tokio::time::timeout(STATUS_TIMEOUT * 2, writer).await;
        if let Err(e) = held.release().await {
            tracing::warn!(volume_id, error = %e, "could not let go of the policy role");
        }
    }

    /// Writes each pass's status (after checking the store), until the passes end.
    fn write_statuses(
        &self,
        mut latest: tokio::sync::watch::Receiver<Option<HsmStatus>>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (service, engine, volumes, statuses, share) = (
            Arc::clone(&self.service),
            Arc::clone(&self.engine),
            Arc::clone(&self.volumes),
            Arc::clone(&self.statuses),
            self.share.clone(),
        );
        async move {
            while latest.changed().await.is_ok() {
                let Some(mut status) = latest.borrow_and_update().clone() else {
                    continue;
                };
                let reachable = matches!(
                    tokio::time::timeout(STATUS_TIMEOUT, engine.store().check_access()).await,
                    Ok(Ok(()))
                );
                status.store_reachable = reachable;
                volumes.store_reachable(&status.volume_id, reachable);
                statuses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(status.volume_id.clone(), status.clone());
                match tokio::time::timeout(
                    STATUS_TIMEOUT,
                    crate::hsm_status::write(&service, &share, &status),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(volume_id = %status.volume_id, error = %e, "could not write the HSM status")
                    }
                    Err(_) => {
                        tracing::warn!(volume_id = %status.volume_id, "writing the HSM status timed out")
                    }
                }
            }
        }
    }
}
