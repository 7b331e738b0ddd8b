//! Share locks between independent lock tables (what separate processes have), on a
//! filesystem whose calls are slowed down at random, so that check-then-act races show.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use backend::{
    BackendKind, Capabilities, Capacity, DataVersion, DirInfo, DirSpec, Filesystem, Hsm,
    HsmAccessState, MountRequest, Mounts, Namespace, NodemapChange, Nodemaps, Quotas, Result,
};
use lustre_model::{
    HsmFlags, HsmState, NodemapState, ProjectId, QuotaLimits, QuotaReport, RelPath, ShareName,
};
use share::{CreateShare, ShareService};

const MIB: u64 = 1 << 20;

/// Delays lock-directory calls by 0-15 ms (a per-instance xorshift), and counts how many
/// callers are inside `set_quota` at once (which runs under the share's lock).
struct Jittery {
    inner: Arc<dyn Filesystem>,
    seed: Mutex<u64>,
    inside: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Jittery {
    async fn jitter(&self, path: &RelPath) {
        if !path.as_str().contains("/locks/") {
            return;
        }
        let ms = {
            let mut s = self.seed.lock().unwrap();
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            *s % 16
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

impl Filesystem for Jittery {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn host_path(&self, dir: &RelPath) -> PathBuf {
        self.inner.host_path(dir)
    }
}

#[async_trait]
impl Namespace for Jittery {
    async fn ensure_dir(&self, dir: &RelPath) -> Result<()> {
        self.inner.ensure_dir(dir).await
    }
    async fn create_share_dir(&self, dir: &RelPath, spec: &DirSpec) -> Result<bool> {
        self.inner.create_share_dir(dir, spec).await
    }
    async fn remove_share_dir(&self, dir: &RelPath) -> Result<bool> {
        self.inner.remove_share_dir(dir).await
    }
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<()> {
        self.jitter(from).await;
        self.inner.rename(from, to).await
    }
    async fn stat_dir(&self, dir: &RelPath) -> Result<Option<DirInfo>> {
        self.jitter(dir).await;
        let info = self.inner.stat_dir(dir).await;
        self.jitter(dir).await;
        info
    }
    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<String>> {
        self.jitter(dir).await;
        let names = self.inner.list_dir(dir).await;
        self.jitter(dir).await;
        names
    }
    async fn claim(&self, marker: &RelPath) -> Result<bool> {
        self.jitter(marker).await;
        self.inner.claim(marker).await
    }
    async fn unclaim(&self, marker: &RelPath) -> Result<()> {
        self.jitter(marker).await;
        self.inner.unclaim(marker).await
    }
    async fn read_file(&self, file: &RelPath) -> Result<Option<Vec<u8>>> {
        self.inner.read_file(file).await
    }
    async fn write_file(&self, file: &RelPath, content: &[u8]) -> Result<()> {
        self.jitter(file).await;
        self.inner.write_file(file, content).await
    }
    async fn remove_file(&self, file: &RelPath) -> Result<()> {
        self.jitter(file).await;
        self.inner.remove_file(file).await
    }
}

#[async_trait]
impl Quotas for Jittery {
    async fn set_project(&self, dir: &RelPath, id: ProjectId) -> Result<()> {
        self.inner.set_project(dir, id).await
    }
    async fn project_of(&self, dir: &RelPath) -> Result<Option<ProjectId>> {
        self.inner.project_of(dir).await
    }
    async fn set_quota(&self, dir: &RelPath, id: ProjectId, limits: &QuotaLimits) -> Result<()> {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        let result = self.inner.set_quota(dir, id, limits).await;
        self.inside.fetch_sub(1, Ordering::SeqCst);
        result
    }
    async fn quota(&self, dir: &RelPath, id: ProjectId) -> Result<QuotaReport> {
        self.inner.quota(dir, id).await
    }
    async fn quota_now(&self, dir: &RelPath, id: ProjectId) -> Result<QuotaReport> {
        self.inner.quota_now(dir, id).await
    }
    async fn capacity(&self) -> Result<Capacity> {
        self.inner.capacity().await
    }
}

#[async_trait]
impl Nodemaps for Jittery {
    async fn nodemaps(&self) -> Result<NodemapState> {
        self.inner.nodemaps().await
    }
    async fn apply_nodemap_changes(&self, changes: &[NodemapChange]) -> Result<()> {
        self.inner.apply_nodemap_changes(changes).await
    }
}

#[async_trait]
impl Hsm for Jittery {
    async fn hsm_state(&self, file: &Path) -> Result<HsmState> {
        self.inner.hsm_state(file).await
    }
    async fn hsm_mark(
        &self,
        file: &Path,
        set: HsmFlags,
        clear: HsmFlags,
        archive_id: Option<u32>,
    ) -> Result<()> {
        self.inner.hsm_mark(file, set, clear, archive_id).await
    }
    async fn hsm_release(&self, file: &Path) -> Result<()> {
        self.inner.hsm_release(file).await
    }
    async fn data_version(&self, file: &Path) -> Result<DataVersion> {
        self.inner.data_version(file).await
    }
    async fn hsm_release_watched(&self, file: &Path) -> Result<()> {
        self.inner.hsm_release_watched(file).await
    }
    async fn hsm_access_state(&self, file: &Path) -> Result<HsmAccessState> {
        self.inner.hsm_access_state(file).await
    }
}

impl backend::ClientParams for Jittery {}
impl backend::Encryption for Jittery {}

#[async_trait]
impl backend::Pcc for Jittery {}

#[async_trait]
impl Mounts for Jittery {
    async fn mount(&self, request: &MountRequest) -> Result<()> {
        self.inner.mount(request).await
    }
    async fn unmount(&self, target: &Path) -> Result<()> {
        self.inner.unmount(target).await
    }
    async fn volume_statfs(&self) -> Result<backend::VolumeStatfs> {
        self.inner.volume_statfs().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lock_is_broken_by_one_waiter_only() {
    let root = common::plain_root();
    let name = ShareName::new("contended").unwrap();
    common::service(&root.root)
        .await
        .create(CreateShare {
            name: name.clone(),
            size_bytes: MIB,
            inode_limit: None,
            labels: Default::default(),
            layout: None,
            compression: None,
        })
        .await
        .unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let seeds = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    for round in 0..3 {
        // A lock left by a holder that died an hour ago (the empty directory that older
        // versions made, which every version takes as a lock).
        let marker = root.root.join("shares/.lustrekit/locks/contended");
        let _ = std::fs::remove_dir_all(&marker);
        std::fs::create_dir(&marker).unwrap();
        std::fs::File::open(&marker)
            .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(3600)))
            .unwrap();
        // Six "processes": each its own service, so its own in-process lock table.
        let mut tasks = Vec::new();
        for i in 0..6u64 {
            let fs: Arc<dyn Filesystem> = Arc::new(Jittery {
                inner: common::local(&root.root).await,
                seed: Mutex::new(seeds.fetch_add(0x2545_f491_4f6c_dd1d, Ordering::SeqCst) | 1),
                inside: Arc::clone(&inside),
                most: Arc::clone(&most),
            });
            let svc = ShareService::open(fs, common::settings(1000, 1999))
                .await
                .unwrap();
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                svc.extend(&name, (2 + round * 6 + i) * MIB).await
            }));
        }
        for task in tasks {
            match task.await.unwrap() {
                // A larger extend that got in first makes a smaller one invalid: fine.
                Ok(_) | Err(share::ShareError::InvalidArgument(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "two holders were inside the same share's lock at once"
    );
}
