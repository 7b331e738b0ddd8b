//! The Persistent Client Caches of the volumes a node publishes (`hotNodes`), on top of
//! [`crate::pcc_volume`].
//!
//! A `direct` volume is one Lustre client mount per target, so each publish registers the
//! volume's cache on its own target (`lctl pcc add`), and its unpublish removes it
//! (`lctl pcc del`) before the target is unmounted. The purge of the volume's cache
//! directory runs once per volume on the node, from its first publish to its last
//! unpublish, detaching through any of its targets. (`bind` volumes share the node's one
//! client mount, which the node plugin does not name yet: CreateVolume refuses PCC with
//! `mountMode: bind`.)
//!
//! NodeUnpublishVolume names only the volume and the target, so the node keeps a record
//! (`pcc-volumes.json` in its state directory: the volume's PCC context entries, its
//! project and its targets) to know what to remove, also after a restart of its plugin,
//! which starts the purges again from the record.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend::Filesystem;
use hsm::pcc::PccMetrics;
use lustre_model::ProjectId;
use serde::{Deserialize, Serialize};

use crate::error::{CsiError, Result};
use crate::params::PccParams;

/// One volume's caches on the node, as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cached {
    /// The volume context's PCC entries (read back with [`PccParams::parse`]).
    context: BTreeMap<String, String>,
    project: u32,
    /// Targets whose client mount has the cache registered.
    targets: BTreeSet<PathBuf>,
}

struct Purge {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct State {
    loaded: bool,
    volumes: BTreeMap<String, Cached>,
    purges: HashMap<String, Purge>,
}

/// The node's PCC record and purge tasks; see the module doc.
pub struct NodePcc {
    file: Option<PathBuf>,
    state: tokio::sync::Mutex<State>,
    metrics: Arc<PccMetrics>,
}

/// The record file in the node state directory.
pub const FILE_NAME: &str = "pcc-volumes.json";

impl NodePcc {
    pub fn new(dir: Option<PathBuf>, metrics: Arc<PccMetrics>) -> Self {
        Self {
            file: dir.map(|d| d.join(FILE_NAME)),
            state: tokio::sync::Mutex::new(State::default()),
            metrics,
        }
    }

    /// Registers the volume's cache on the client mount at `target` and starts the
    /// volume's purge unless it runs.
    pub async fn hold(
        &self,
        backend: &Arc<dyn Filesystem>,
        volume_id: &str,
        target: &Path,
        pcc: &PccParams,
        context: BTreeMap<String, String>,
        project: ProjectId,
    ) -> Result<()> {
        let mut state = self.state.lock().await;
        self.load(&mut state).await?;
        crate::pcc_volume::register(backend.as_ref(), target, pcc, project).await?;
        let cached = state
            .volumes
            .entry(volume_id.to_string())
            .or_insert_with(|| Cached {
                context,
                project: project.get(),
                targets: BTreeSet::new(),
            });
        cached.targets.insert(target.to_path_buf());
        let record = state.volumes.clone();
        self.save(&record).await?;
        if !state.purges.contains_key(volume_id) {
            let purge = self.start_purge(backend, target, pcc, project)?;
            state.purges.insert(volume_id.to_string(), purge);
        }
        Ok(())
    }

    /// Before `target` is unmounted: removes the volume's cache from its client mount
    /// (unless the target is no mount any more: then its cache went with it); the last
    /// target of the volume stops its purge. Nothing recorded is a no-op.
    pub async fn release(
        &self,
        backend: &Arc<dyn Filesystem>,
        volume_id: &str,
        target: &Path,
        mounted: bool,
    ) -> Result<()> {
        let mut state = self.state.lock().await;
        self.load(&mut state).await?;
        let Some(cached) = state.volumes.get(volume_id).cloned() else {
            return Ok(());
        };
        if !cached.targets.contains(target) {
            return Ok(());
        }
        let (pcc, project) = parse(&cached)?;
        if mounted {
            crate::pcc_volume::unregister(backend.as_ref(), target, &pcc, project).await?;
        }
        let remaining: Vec<PathBuf> = cached
            .targets
            .iter()
            .filter(|t| t.as_path() != target)
            .cloned()
            .collect();
        if let Some(purge) = state.purges.remove(volume_id) {
            stop(purge).await;
        }
        match remaining.first() {
            None => {
                state.volumes.remove(volume_id);
            }
            Some(other) => {
                // Its purge detaches through a mount that stays.
                let purge = self.start_purge(backend, other, &pcc, project)?;
                state.purges.insert(volume_id.to_string(), purge);
                if let Some(c) = state.volumes.get_mut(volume_id) {
                    c.targets.remove(target);
                }
            }
        }
        let record = state.volumes.clone();
        self.save(&record).await
    }

    /// At start: the purges of the volumes the record lists (their caches stay registered
    /// on their mounts across a restart of the plugin).
    pub async fn resume(&self, backend: &Arc<dyn Filesystem>) -> Result<()> {
        let mut state = self.state.lock().await;
        self.load(&mut state).await?;
        let volumes = state.volumes.clone();
        for (volume_id, cached) in volumes {
            let Some(target) = cached.targets.iter().next() else {
                continue;
            };
            match parse(&cached)
                .and_then(|(pcc, project)| self.start_purge(backend, target, &pcc, project))
            {
                Ok(purge) => {
                    state.purges.insert(volume_id, purge);
                }
                Err(e) => {
                    tracing::error!(volume_id, error = %e, "PCC: cannot start a volume's purge again")
                }
            }
        }
        Ok(())
    }

    /// Stops every purge (the plugin is shutting down; the record stays).
    pub async fn stop_all(&self) {
        let mut state = self.state.lock().await;
        for (_, purge) in state.purges.drain() {
            stop(purge).await;
        }
    }

    /// Volumes with a purge running, and their registered targets (tests).
    pub async fn cached(&self) -> BTreeMap<String, BTreeSet<PathBuf>> {
        let state = self.state.lock().await;
        state
            .volumes
            .iter()
            .filter(|(id, _)| state.purges.contains_key(*id))
            .map(|(id, c)| (id.clone(), c.targets.clone()))
            .collect()
    }

    fn start_purge(
        &self,
        backend: &Arc<dyn Filesystem>,
        mount: &Path,
        pcc: &PccParams,
        project: ProjectId,
    ) -> Result<Purge> {
        let task = crate::pcc_volume::purge_task(
            Arc::clone(backend),
            mount.to_path_buf(),
            pcc,
            project,
            Arc::clone(&self.metrics),
        )?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        // The first check one interval after the publish: a cache just registered is empty.
        let first = std::time::Duration::from_secs(pcc.purge.interval_secs.max(1));
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = &mut stopped => {}
                _ = tokio::time::sleep(first) => {
                    task.run(async move {
                        let _ = stopped.await;
                    })
                    .await
                }
            }
        });
        Ok(Purge { stop, task })
    }

    async fn load(&self, state: &mut State) -> Result<()> {
        if !state.loaded {
            state.volumes = crate::node_record::read(self.file.clone(), "PCC record").await?;
            state.loaded = true;
        }
        Ok(())
    }

    async fn save(&self, volumes: &BTreeMap<String, Cached>) -> Result<()> {
        crate::node_record::write(self.file.clone(), volumes, "PCC record").await
    }
}

fn parse(cached: &Cached) -> Result<(PccParams, ProjectId)> {
    let map: HashMap<String, String> = cached.context.clone().into_iter().collect();
    let pcc = PccParams::parse(&map)?
        .ok_or_else(|| CsiError::Internal("a PCC record without hotNodes".into()))?;
    Ok((pcc, ProjectId::new(cached.project)?))
}

async fn stop(purge: Purge) {
    let _ = purge.stop.send(());
    let _ = purge.task.await;
}
