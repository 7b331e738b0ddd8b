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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backend::Filesystem;
use hsm::restore_daemon::{DaemonConfig, RestoreDaemon};
use hsm::{ArchiveStore, EngineConfig, HsmEngine, RetryPolicy};
use lustre_model::RelPath;
use serde::{Deserialize, Serialize};

use crate::error::{CsiError, Result};
use crate::params::{ReadMode, scrub_secrets, store_options};
use crate::volume::NodeHsm;

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
    /// Publishes holding it (`<volume ID> <target>`).
    holders: BTreeSet<String>,
}

/// A running daemon and whether it has the volume's credentials.
struct Running {
    daemon: RestoreDaemon,
    with_secrets: bool,
}

/// The node's restore daemons; see the module doc.
pub struct NodeRestore {
    file: Option<PathBuf>,
    state: tokio::sync::Mutex<NodeState>,
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
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            file: dir.map(|d| d.join(FILE_NAME)),
            state: tokio::sync::Mutex::new(NodeState::default()),
        }
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
        // On Lustre the coordinator restores on access: nothing runs here.
        let daemon_needed = !backend.capabilities().restore_on_access;
        let mut state = self.state.lock().await;
        self.load(&mut state).await?;
        let has_daemon = state.running.get(volume_id).is_some_and(|r| r.with_secrets);
        if daemon_needed && !has_daemon {
            let fail_fast = hsm.read_mode == ReadMode::FailFast;
            let daemon = start(backend, share_path, &hsm.store, fail_fast, secrets)?;
            if let Some(old) = state.running.insert(
                volume_id.to_string(),
                Running {
                    daemon,
                    with_secrets: true,
                },
            ) {
                // The new one answers already: the old one may go.
                old.daemon.stop().await;
            }
            tracing::info!(volume_id, share = %share_path, "restore on access: watching");
        }
        let first = !state.watches.contains_key(volume_id);
        let watch = state
            .watches
            .entry(volume_id.to_string())
            .or_insert_with(|| Watch {
                share_path: share_path.as_str().to_string(),
                store: hsm.store.clone(),
                fail_fast: hsm.read_mode == ReadMode::FailFast,
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
                running.daemon.stop().await;
            }
            tracing::info!(volume_id, "restore on access: no longer watching");
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
                    start(
                        backend,
                        &path,
                        &watch.store,
                        watch.fail_fast,
                        &HashMap::new(),
                    )
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
                            daemon,
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
            running.daemon.stop().await;
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

/// A daemon rooted at the volume's directory, its store opened with `secrets` (scrubbed
/// from any error).
fn start(
    backend: &Arc<dyn Filesystem>,
    share_path: &RelPath,
    store: &str,
    fail_fast: bool,
    secrets: &HashMap<String, String>,
) -> Result<RestoreDaemon> {
    let store = ArchiveStore::open_with(store, &retry(), &store_options(secrets)).map_err(|e| {
        CsiError::invalid(format!(
            "volume context hsmStore: {}",
            scrub_secrets(&e.to_string(), secrets)
        ))
    })?;
    let root = backend.host_path(share_path);
    let engine = HsmEngine::new(
        store,
        Arc::clone(backend),
        EngineConfig {
            root: root.clone(),
            ..EngineConfig::default()
        },
    );
    let cfg = DaemonConfig {
        fail_fast,
        ..DaemonConfig::default()
    };
    RestoreDaemon::start(Arc::new(engine), cfg).map_err(|e| {
        CsiError::FailedPrecondition(format!(
            "restore on access for {}: {}",
            root.display(),
            scrub_secrets(&e.to_string(), secrets)
        ))
    })
}
