//! Purging a Persistent Client Cache: when the cache filesystem is fuller than a high
//! watermark, detach the least recently used cached files (oldest access time first) until
//! it is at most the low watermark full; and the PCC metrics (cache bytes, attaches,
//! detaches, hits).
//!
//! The cache directory is trusted configuration (a StorageClass's `pccCache`), the files in
//! it are not: they are the copies of tenants' files, so the walk resolves every entry from
//! the cache directory's descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! and never follows a symlink. How full the cache is comes from a [`UsageSource`] (the
//! cache filesystem's `statvfs`, or a test's numbers), and how a file leaves the cache from
//! a [`Detach`]: on Lustre `lfs pcc detach_fid` by the FID the cache file is named after,
//! elsewhere removing the file.
//!
//! Access times order the files: on a cache mounted `noatime` every file looks as old as
//! its creation (`relatime`, the default, is enough: a day's resolution).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend::local::beneath;
use lustre_model::{Fid, PccCounters};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::error::{HsmError, Result};

/// How full the cache filesystem is, as `df` counts it: `used` of `used + available`
/// (blocks reserved for root are neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CacheUsage {
    pub used_bytes: u64,
    pub total_bytes: u64,
}

impl CacheUsage {
    /// Used, in percent (0 for an empty filesystem).
    pub fn percent(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.used_bytes as f64 * 100.0 / self.total_bytes as f64
        }
    }

    /// Bytes to free to be at most `percent` full (0 when already there).
    pub fn excess_over(&self, percent: u8) -> u64 {
        let allowed = u128::from(self.total_bytes) * u128::from(percent) / 100;
        u64::try_from(u128::from(self.used_bytes).saturating_sub(allowed)).unwrap_or(u64::MAX)
    }
}

/// Where a purge reads how full the cache is. Called on a blocking thread.
pub trait UsageSource: Send + Sync {
    fn usage(&self) -> std::io::Result<CacheUsage>;
}

/// `statvfs` of the cache directory's filesystem.
#[derive(Debug, Clone)]
pub struct StatvfsUsage {
    pub dir: PathBuf,
}

impl UsageSource for StatvfsUsage {
    fn usage(&self) -> std::io::Result<CacheUsage> {
        let st = nix::sys::statvfs::statvfs(&self.dir)?;
        let unit = st.fragment_size() as u64;
        let used = (st.blocks() as u64).saturating_sub(st.blocks_free() as u64);
        let available = st.blocks_available() as u64;
        Ok(CacheUsage {
            used_bytes: used.saturating_mul(unit),
            total_bytes: used.saturating_add(available).saturating_mul(unit),
        })
    }
}

/// One file in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheFile {
    /// Below the cache directory, `/`-separated.
    pub rel: String,
    /// Allocated bytes (`st_blocks * 512`): what detaching it gives back.
    pub bytes: u64,
    /// Last access, ns since the Unix epoch.
    pub atime_ns: i128,
    /// The Lustre file it caches, when its name is a FID (PCC names cache files so).
    pub fid: Option<Fid>,
}

/// What the walk of a cache found.
#[derive(Debug, Default)]
pub struct CacheScan {
    /// Regular files, least recently used first.
    pub files: Vec<CacheFile>,
    /// Symlinks, devices, sockets, FIFOs, and entries that could not be read.
    pub skipped: u64,
}

fn errno_io(path: &Path, e: Errno) -> HsmError {
    HsmError::io(path, std::io::Error::from(e))
}

/// Walks `cache` (blocking): every regular file beneath it, oldest access first. Entries
/// that vanish or cannot be read are counted as skipped; an unreadable cache directory is
/// an error. One directory descriptor is open at a time, so a deep tree cannot exhaust
/// them.
pub fn scan_cache(cache: &Path) -> Result<CacheScan> {
    let root: OwnedFd = nix::fcntl::open(
        cache,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno_io(cache, e))?;
    let mut scan = CacheScan::default();
    let mut pending: Vec<String> = vec![".".to_string()];
    while let Some(dir_rel) = pending.pop() {
        let listed = beneath::open_dir_at(root.as_fd(), &dir_rel).and_then(|dir| {
            let names_fd = nix::unistd::dup(dir.as_fd())?;
            Ok((dir, beneath::read_dir_names(names_fd)?))
        });
        let (dir, names) = match listed {
            Ok(listed) => listed,
            Err(e) => {
                tracing::debug!(cache = %cache.display(), dir = %dir_rel, error = %e, "PCC purge: unreadable directory skipped");
                scan.skipped += 1;
                continue;
            }
        };
        for name in names {
            let rel = if dir_rel == "." {
                name.clone()
            } else {
                format!("{dir_rel}/{name}")
            };
            let Ok(st) =
                nix::sys::stat::fstatat(dir.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                scan.skipped += 1;
                continue;
            };
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => pending.push(rel),
                libc::S_IFREG => scan.files.push(CacheFile {
                    bytes: (st.st_blocks as u64).saturating_mul(512),
                    atime_ns: i128::from(st.st_atime) * 1_000_000_000
                        + i128::from(st.st_atime_nsec),
                    fid: name.parse().ok(),
                    rel,
                }),
                _ => scan.skipped += 1,
            }
        }
    }
    scan.files
        .sort_by(|a, b| a.atime_ns.cmp(&b.atime_ns).then_with(|| a.rel.cmp(&b.rel)));
    Ok(scan)
}

/// How a file leaves the cache.
#[async_trait]
pub trait Detach: Send + Sync {
    /// Detaches `file` (a file of the cache directory); gone already is success.
    async fn detach(&self, file: &CacheFile) -> Result<()>;
}

/// On Lustre: `lfs pcc detach_fid` of the file's FID on the client mount the cache is
/// registered on. A cache file not named by a FID is not Lustre's, and is refused.
pub struct LustreDetach {
    pub fs: Arc<dyn backend::Filesystem>,
    /// The client mount the cache is registered on.
    pub mount: PathBuf,
}

#[async_trait]
impl Detach for LustreDetach {
    async fn detach(&self, file: &CacheFile) -> Result<()> {
        let fid = file.fid.ok_or_else(|| {
            HsmError::refused(&file.rel, "not a PCC cache file (its name is not a FID)")
        })?;
        Ok(self.fs.pcc_detach_fid(&self.mount, &fid).await?)
    }
}

/// Where there is no client cache (`local`): removes the cache file, resolved beneath the
/// cache directory without following symlinks.
pub struct RemoveCacheFile {
    pub cache: PathBuf,
}

#[async_trait]
impl Detach for RemoveCacheFile {
    async fn detach(&self, file: &CacheFile) -> Result<()> {
        let cache = self.cache.clone();
        let rel = file.rel.clone();
        tokio::task::spawn_blocking(move || {
            let shown = cache.join(&rel);
            let (parent, name) = match rel.rsplit_once('/') {
                Some((parent, name)) => (parent, name),
                None => (".", rel.as_str()),
            };
            let root: OwnedFd = nix::fcntl::open(
                &cache,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| errno_io(&cache, e))?;
            let dir = match beneath::open_dir_at(root.as_fd(), parent) {
                Ok(dir) => dir,
                Err(Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(errno_io(&shown, e)),
            };
            match nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(errno_io(&shown, e)),
            }
        })
        .await
        .map_err(|e| HsmError::from_join("remove a cache file", e))?
    }
}

/// The detach of a backend: `lfs pcc detach_fid` where it has a client cache
/// ([`backend::Capabilities::pcc`]), removing the file elsewhere.
pub fn detach_for(
    fs: Arc<dyn backend::Filesystem>,
    mount: PathBuf,
    cache: PathBuf,
) -> Arc<dyn Detach> {
    if fs.capabilities().pcc {
        Arc::new(LustreDetach { fs, mount })
    } else {
        Arc::new(RemoveCacheFile { cache })
    }
}

/// The watermarks of a purge, in percent of the cache filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PurgePolicy {
    pub high_percent: u8,
    pub low_percent: u8,
}

impl PurgePolicy {
    /// Both 1 to 100, low below high.
    pub fn new(high_percent: u8, low_percent: u8) -> Result<Self> {
        if !(1..=100).contains(&high_percent) || low_percent == 0 || low_percent >= high_percent {
            return Err(HsmError::Policy(format!(
                "PCC purge watermarks high {high_percent}% and low {low_percent}%: both 1 to 100, low below high"
            )));
        }
        Ok(Self {
            high_percent,
            low_percent,
        })
    }
}

/// What one purge did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PurgeReport {
    pub cache: PathBuf,
    pub before: CacheUsage,
    pub after: CacheUsage,
    pub before_percent: f64,
    pub after_percent: f64,
    /// Files in the cache, and their bytes, before the purge.
    pub files: u64,
    pub cache_bytes: u64,
    pub detached: u64,
    pub detached_bytes: u64,
    pub failed: u64,
    pub skipped: u64,
}

/// Rounds of scan-and-detach in one purge: a detach frees about what the scan counted, and
/// a round that fell short (the estimate off, files written meanwhile) is followed by one
/// more from fresh numbers, up to this many.
const MAX_ROUNDS: usize = 3;

async fn measure(usage: &Arc<dyn UsageSource>, cache: &Path) -> Result<CacheUsage> {
    let source = Arc::clone(usage);
    tokio::task::spawn_blocking(move || source.usage())
        .await
        .map_err(|e| HsmError::from_join("cache usage", e))?
        .map_err(|e| HsmError::io(cache, e))
}

async fn scan(cache: &Path) -> Result<CacheScan> {
    let dir = cache.to_path_buf();
    tokio::task::spawn_blocking(move || scan_cache(&dir))
        .await
        .map_err(|e| HsmError::from_join("scan the PCC cache", e))?
}

/// One purge of `cache`: nothing when it is at most `policy.high_percent` full; otherwise
/// the least recently used files are detached until it is at most `policy.low_percent`
/// full. A file that fails to detach is logged and counted, and the purge goes on.
pub async fn purge_once(
    cache: &Path,
    policy: PurgePolicy,
    usage: &Arc<dyn UsageSource>,
    detach: &dyn Detach,
    metrics: Option<&PccMetrics>,
) -> Result<PurgeReport> {
    let before = measure(usage, cache).await?;
    let mut report = PurgeReport {
        cache: cache.to_path_buf(),
        before,
        after: before,
        ..PurgeReport::default()
    };
    let mut now = before;
    let mut over_high = before.excess_over(policy.high_percent) > 0;
    for round in 0..MAX_ROUNDS {
        let found = scan(cache).await?;
        if round == 0 {
            report.files = found.files.len() as u64;
            report.cache_bytes = found.files.iter().map(|f| f.bytes).sum();
            report.skipped = found.skipped;
            if let Some(m) = metrics {
                m.cache_bytes
                    .set(i64::try_from(report.cache_bytes).unwrap_or(i64::MAX));
                m.cache_files
                    .set(i64::try_from(report.files).unwrap_or(i64::MAX));
            }
        }
        if !over_high {
            break;
        }
        let mut need = now.excess_over(policy.low_percent);
        let detached_before = report.detached;
        for file in &found.files {
            if need == 0 {
                break;
            }
            match detach.detach(file).await {
                Ok(()) => {
                    report.detached += 1;
                    report.detached_bytes += file.bytes;
                    need = need.saturating_sub(file.bytes);
                    if let Some(m) = metrics {
                        m.purge_detach(true);
                    }
                }
                Err(error) => {
                    report.failed += 1;
                    tracing::warn!(cache = %cache.display(), file = %file.rel, %error, "PCC purge: detach failed");
                    if let Some(m) = metrics {
                        m.purge_detach(false);
                    }
                }
            }
        }
        now = measure(usage, cache).await?;
        // Still above low: another round from fresh numbers, unless this one could detach
        // nothing (every file failing, or none left): the next would only fail again.
        over_high = now.excess_over(policy.low_percent) > 0 && report.detached > detached_before;
    }
    report.after = now;
    report.before_percent = before.percent();
    report.after_percent = now.percent();
    if let Some(m) = metrics {
        m.used_ratio.set(now.percent() / 100.0);
    }
    Ok(report)
}

/// Where the purge loop reads the client's PCC counters (`None`: a backend without).
pub type CounterSource = Option<Arc<dyn backend::Filesystem>>;

/// The node's purge of one cache: what [`PurgeTask::run`] needs.
pub struct PurgeTask {
    pub cache: PathBuf,
    pub policy: PurgePolicy,
    pub interval: Duration,
    pub usage: Arc<dyn UsageSource>,
    pub detach: Arc<dyn Detach>,
    /// Where to read the client's PCC counters (`None`: a backend without).
    pub counters: Option<Arc<dyn backend::Filesystem>>,
    pub metrics: Arc<PccMetrics>,
}

impl PurgeTask {
    /// The purge of `cache` on backend `fs`: `statvfs` usage, and the backend's detach
    /// ([`detach_for`]); `mount` is the client mount the cache is registered on.
    pub fn for_backend(
        fs: Arc<dyn backend::Filesystem>,
        mount: PathBuf,
        cache: PathBuf,
        policy: PurgePolicy,
        interval: Duration,
        metrics: Arc<PccMetrics>,
    ) -> Self {
        let counters = fs.capabilities().pcc.then(|| Arc::clone(&fs));
        Self {
            usage: Arc::new(StatvfsUsage { dir: cache.clone() }),
            detach: detach_for(fs, mount, cache.clone()),
            cache,
            policy,
            interval,
            counters,
            metrics,
        }
    }

    /// Purges every `interval` until `shutdown` completes; also follows the client's PCC
    /// counters when there are any. Errors are logged and the loop goes on (a full cache
    /// must not stop it).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.interval.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let cache = &self.cache;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            let purged = purge_once(
                cache,
                self.policy,
                &self.usage,
                self.detach.as_ref(),
                Some(&self.metrics),
            )
            .await;
            match purged {
                Ok(r) if r.detached > 0 || r.failed > 0 => tracing::info!(
                    cache = %cache.display(), before = r.before_percent, after = r.after_percent,
                    detached = r.detached, bytes = r.detached_bytes, failed = r.failed,
                    "PCC purge"),
                Ok(_) => {}
                Err(error) => tracing::warn!(cache = %cache.display(), %error, "PCC purge failed"),
            }
            if let Some(fs) = &self.counters {
                match fs.pcc_counters().await {
                    Ok(c) => self.metrics.observe_counters(&c),
                    Err(error) => tracing::debug!(%error, "PCC counters unavailable"),
                }
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The PCC metrics of a node. The kernel's counters (`pcc_attach`, `pcc_detach`,
/// `pcc_hit_bytes`, summed over the client mounts) are followed by their increase, so a
/// counter reset (a remount) never makes ours go back.
#[derive(Debug)]
pub struct PccMetrics {
    registry: Registry,
    cache_bytes: Gauge,
    cache_files: Gauge,
    used_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    purge_detaches: Family<ResultLabel, Counter>,
    attaches: Counter,
    detaches: Counter,
    hits: Counter,
    hit_bytes: Counter,
    last: std::sync::Mutex<PccCounters>,
}

impl Default for PccMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PccMetrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::default(),
            cache_bytes: Gauge::default(),
            cache_files: Gauge::default(),
            used_ratio: Gauge::default(),
            purge_detaches: Family::default(),
            attaches: Counter::default(),
            detaches: Counter::default(),
            hits: Counter::default(),
            hit_bytes: Counter::default(),
            last: std::sync::Mutex::new(PccCounters::default()),
        };
        let mut registry = Registry::default();
        m.register(&mut registry);
        Self { registry, ..m }
    }

    /// Registers these metrics in another registry as well (the node plugin's).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "lustrekit_pcc_cache_bytes",
            "Bytes of the files in the PCC cache directory, at the last purge check",
            self.cache_bytes.clone(),
        );
        registry.register(
            "lustrekit_pcc_cache_files",
            "Files in the PCC cache directory, at the last purge check",
            self.cache_files.clone(),
        );
        registry.register(
            "lustrekit_pcc_cache_used_ratio",
            "How full the PCC cache filesystem is (0 to 1)",
            self.used_ratio.clone(),
        );
        registry.register(
            "lustrekit_pcc_purge_detaches",
            "Files the PCC purge detached, by result",
            self.purge_detaches.clone(),
        );
        registry.register(
            "lustrekit_pcc_attaches",
            "Files attached to the PCC by the client (llite pcc_attach)",
            self.attaches.clone(),
        );
        registry.register(
            "lustrekit_pcc_detaches",
            "Files detached from the PCC by the client (llite pcc_detach)",
            self.detaches.clone(),
        );
        registry.register(
            "lustrekit_pcc_hits",
            "Reads served from the PCC (llite pcc_hit_bytes samples)",
            self.hits.clone(),
        );
        registry.register(
            "lustrekit_pcc_hit_bytes",
            "Bytes read from the PCC (llite pcc_hit_bytes sum)",
            self.hit_bytes.clone(),
        );
    }

    fn purge_detach(&self, ok: bool) {
        let (counted, other) = if ok { ("ok", "error") } else { ("error", "ok") };
        self.purge_detaches
            .get_or_create(&ResultLabel { result: counted })
            .inc();
        self.purge_detaches
            .get_or_create(&ResultLabel { result: other })
            .inc_by(0);
    }

    /// Follows the client's counters (summed over its mounts).
    pub fn observe_counters(&self, mounts: &[PccCounters]) {
        let sum = mounts.iter().fold(PccCounters::default(), |mut s, c| {
            s.attach += c.attach;
            s.detach += c.detach;
            s.hits += c.hits;
            s.hit_bytes += c.hit_bytes;
            s
        });
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // A value below the last one is a reset: all of it is new.
        let grow = |counter: &Counter, now: u64, before: u64| {
            counter.inc_by(if now >= before { now - before } else { now });
        };
        grow(&self.attaches, sum.attach, last.attach);
        grow(&self.detaches, sum.detach, last.detach);
        grow(&self.hits, sum.hits, last.hits);
        grow(&self.hit_bytes, sum.hit_bytes, last.hit_bytes);
        *last = sum;
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        telemetry::encode(&self.registry)
    }
}

impl telemetry::Exposition for PccMetrics {
    fn registry(&self) -> &Registry {
        &self.registry
    }
}
