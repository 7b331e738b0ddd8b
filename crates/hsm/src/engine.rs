//! The engine: archive, release, restore, remove, state and dirty marking of single files,
//! over one archive store and one backend.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::Filesystem;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use lustre_model::{HS_ARCHIVED, HS_DIRTY, HS_EXISTS, HS_LOST, HS_RELEASED, HsmFlags, HsmState};
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use crate::error::{HsmError, Result};
use crate::meta::{EntryKind, FileMeta};
use crate::metrics::Metrics;
use crate::pin::{self, Pin};
use crate::posix::{self, DataVersion};
use crate::store::{ArchiveStore, PinnedSource, RetryPolicy};

/// How the engine moves data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// The namespace root: keys are `<store prefix>/<path below root>`.
    pub root: PathBuf,
    /// The HSM archive ID recorded on files (Lustre's `archive_id`).
    pub archive_id: u32,
    /// Multipart part size and ranged-GET size (bytes). S3 needs at least 5 MiB.
    pub part_size: usize,
    /// Parts in flight per file (upload and download).
    pub concurrency: usize,
    /// Files worked on at once by tree operations.
    pub file_concurrency: usize,
    /// Cap on bytes per second per file copy; `None` for no cap.
    pub rate_limit_bytes_per_sec: Option<u64>,
    pub retry: RetryPolicy,
    /// Release even where a released file would read as zeros: a backend whose reads are not
    /// held by the filesystem (`local`) with no restore daemon watching (see [`crate::guard`]).
    pub allow_unguarded_release: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            archive_id: 1,
            part_size: 8 << 20,
            concurrency: 4,
            file_concurrency: 8,
            rate_limit_bytes_per_sec: None,
            retry: RetryPolicy::default(),
            allow_unguarded_release: false,
        }
    }
}

/// Progress of a long copy.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub op: &'static str,
    pub path: PathBuf,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done,
    Skipped,
}

/// The report of one operation on one path (`--json` output).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpReport {
    pub op: String,
    pub path: PathBuf,
    pub key: String,
    pub outcome: Outcome,
    /// Why it was skipped, or notes (e.g. xattrs too big for the store's metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    pub elapsed_ms: u64,
}

/// The state of one file (`lustrekit hsm state --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateReport {
    pub path: PathBuf,
    pub state: HsmState,
    /// As `lfs hsm_state` prints it after `path: `.
    pub text: String,
    /// Released, and nothing keeps its reads from returning zeros (`local` with no restore
    /// daemon watching): see [`crate::guard`].
    #[serde(default)]
    pub unguarded: bool,
}

fn flags(bits: u32) -> HsmFlags {
    HsmFlags::from_bits(bits)
}

/// The name prefix of restore temporaries (the tree walk skips them).
const RESTORE_TEMP_PREFIX: &str = ".lustrekit-restore.";

/// Where a restore reads from, and what it must verify.
struct RestoreSource {
    source: PinnedSource,
    /// The checksum the data must have: the pinned one, else the object's own.
    expected: Option<String>,
    pin: Option<Pin>,
    state: HsmState,
}

/// The data mover.
pub struct HsmEngine {
    store: ArchiveStore,
    backend: Arc<dyn Filesystem>,
    cfg: EngineConfig,
    progress: Option<ProgressFn>,
    metrics: Arc<Metrics>,
}

impl HsmEngine {
    /// The process's signal dispositions are the caller's: a process that releases or
    /// restores calls [`ignore_lease_break_signal`] first.
    pub fn new(store: ArchiveStore, backend: Arc<dyn Filesystem>, cfg: EngineConfig) -> Self {
        let mut cfg = cfg;
        cfg.part_size = cfg.part_size.max(64 << 10);
        cfg.concurrency = cfg.concurrency.max(1);
        cfg.file_concurrency = cfg.file_concurrency.max(1);
        Self {
            store,
            backend,
            cfg,
            progress: None,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Calls `f` as long copies advance.
    pub fn with_progress(mut self, f: ProgressFn) -> Self {
        self.progress = Some(f);
        self
    }

    /// Shares a metrics registry.
    pub fn with_metrics(mut self, m: Arc<Metrics>) -> Self {
        self.metrics = m;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn store(&self) -> &ArchiveStore {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn backend(&self) -> &Arc<dyn Filesystem> {
        &self.backend
    }

    /// The absolute path and the components below the root; `path` may be relative to
    /// the root. `..` is refused outright.
    pub fn resolve(&self, path: &Path) -> Result<(PathBuf, Vec<String>)> {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.cfg.root.join(path)
        };
        let outside = || HsmError::OutsideRoot {
            path: abs.clone(),
            root: self.cfg.root.clone(),
        };
        let rel = abs.strip_prefix(&self.cfg.root).map_err(|_| outside())?;
        let mut comps = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => comps.push(
                    n.to_str()
                        .ok_or_else(|| HsmError::refused(&abs, "name is not UTF-8"))?
                        .to_string(),
                ),
                Component::CurDir => {}
                _ => return Err(outside()),
            }
        }
        Ok((abs, comps))
    }

    /// The object key of a path.
    pub fn key_of(&self, path: &Path) -> Result<ObjPath> {
        Ok(self.locate(path)?.1)
    }

    /// The absolute path and the object key of `path`, resolved once.
    fn locate(&self, path: &Path) -> Result<(PathBuf, ObjPath)> {
        let (abs, comps) = self.resolve(path)?;
        let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
        let key = self.store.key_for(&refs);
        Ok((abs, key))
    }

    /// Opens `path` beneath the root (see [`posix::open_entry`]) with its object key: every
    /// later step acts on the descriptors, so a tenant swapping a directory for a symlink
    /// mid-operation cannot point root at a file outside the namespace.
    async fn open(&self, path: &Path) -> Result<(posix::Entry, ObjPath)> {
        let (abs, comps) = self.resolve(path)?;
        let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
        let key = self.store.key_for(&refs);
        let root = self.cfg.root.clone();
        let entry = blocking(move || posix::open_entry(&root, &comps, &abs)).await?;
        Ok((entry, key))
    }
    fn emit(&self, op: &'static str, path: &Path, done: u64, total: u64) {
        if let Some(p) = &self.progress {
            p(&Progress {
                op,
                path: path.to_path_buf(),
                done_bytes: done,
                total_bytes: total,
            });
        }
    }

    async fn throttle(&self, started: Instant, done: u64) {
        if let Some(rate) = self.cfg.rate_limit_bytes_per_sec.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(done as f64 / rate as f64);
            let el = started.elapsed();
            if due > el {
                tokio::time::sleep(due - el).await;
            }
        }
    }

    fn finish(
        &self,
        op: &'static str,
        started: Instant,
        res: Result<OpReport>,
    ) -> Result<OpReport> {
        let took = started.elapsed();
        match &res {
            Ok(r) => {
                self.metrics.record(op, true, r.bytes, took);
                tracing::info!(op, path = %r.path.display(), outcome = ?r.outcome, bytes = r.bytes, ms = took.as_millis() as u64, "hsm");
            }
            Err(e) => {
                self.metrics.record(op, false, 0, took);
                tracing::warn!(op, error = %e, "hsm operation failed");
            }
        }
        res.map(|mut r| {
            r.elapsed_ms = took.as_millis() as u64;
            r
        })
    }

    fn report(
        op: &str,
        path: &Path,
        key: &ObjPath,
        outcome: Outcome,
        detail: Option<String>,
    ) -> OpReport {
        OpReport {
            op: op.to_string(),
            path: path.to_path_buf(),
            key: key.to_string(),
            outcome,
            detail,
            bytes: 0,
            checksum: None,
            elapsed_ms: 0,
        }
    }

    // ---------------------------------------------------------------- state

    /// The HSM state of a file.
    pub async fn state(&self, path: &Path) -> Result<StateReport> {
        let (abs, _) = self.resolve(path)?;
        let state = self.backend.hsm_state(&abs).await?;
        let unguarded = crate::guard::unguarded(&self.backend.capabilities(), &state, &abs);
        let mut text = state.to_string();
        if unguarded {
            text = format!("{text}, {}", crate::guard::UNGUARDED_TEXT);
        }
        Ok(StateReport {
            text,
            path: abs,
            state,
            unguarded,
        })
    }

    /// Marks a file dirty (it changed since it was archived).
    pub async fn mark_dirty(&self, path: &Path) -> Result<OpReport> {
        let (abs, key) = self.locate(path)?;
        self.backend
            .hsm_mark(&abs, flags(HS_DIRTY), flags(0), None)
            .await?;
        Ok(Self::report("dirty", &abs, &key, Outcome::Done, None))
    }

    // ---------------------------------------------------------------- archive

    /// Archives a file, directory (its own metadata, not its content) or symlink.
    pub async fn archive(&self, path: &Path) -> Result<OpReport> {
        let started = Instant::now();
        let res = self.archive_inner(path).await;
        self.finish("archive", started, res)
    }

    async fn archive_inner(&self, path: &Path) -> Result<OpReport> {
        let (entry, key) = self.open(path).await?;
        let entry = Arc::new(entry);
        let meta = {
            let e = entry.clone();
            blocking(move || posix::capture_entry(&e)).await?
        };
        let abs = entry.abs.clone();
        if meta.kind != EntryKind::File && !key.as_ref().is_empty() {
            // A directory or symlink now where a file was: that file, renamed, may pin the
            // version at this key.
            self.store.preserve(&key, None).await?;
        }
        match meta.kind {
            EntryKind::Dir => {
                let (map, dropped) = meta.to_map();
                self.store.put_folder(&key, &map).await?;
                let mut r = Self::report("archive", &abs, &key, Outcome::Done, None);
                r.detail = dropped.then(|| "xattrs too large for object metadata; not kept".into());
                Ok(r)
            }
            EntryKind::Symlink => {
                let (map, _) = meta.to_map();
                self.store.put(&key, Bytes::new(), &map).await?;
                Ok(Self::report("archive", &abs, &key, Outcome::Done, None))
            }
            EntryKind::File => self.archive_file(&entry, &key, meta).await,
        }
    }

    async fn archive_file(
        &self,
        entry: &Arc<posix::Entry>,
        key: &ObjPath,
        mut meta: FileMeta,
    ) -> Result<OpReport> {
        let abs = &entry.abs;
        let st = self.backend.hsm_state(abs).await?;
        if st.flags.no_archive {
            return Err(HsmError::refused(abs, "marked never_archive"));
        }
        if st.flags.released {
            return Ok(Self::report(
                "archive",
                abs,
                key,
                Outcome::Skipped,
                Some("released: the archive already holds its data".into()),
            ));
        }
        let file = Arc::new(entry.file()?);
        let old_pin = {
            let (f, a) = (file.clone(), abs.clone());
            blocking(move || pin::read(f.as_fd(), &a)).await?
        };
        if st.flags.archived
            && st.flags.exists
            && !st.flags.dirty
            && !st.flags.lost
            && old_pin.is_some()
        {
            return Ok(Self::report(
                "archive",
                abs,
                key,
                Outcome::Skipped,
                Some("already archived and unchanged".into()),
            ));
        }
        let v0 = posix::version_of(abs, &file)?;
        let size = v0.size;
        meta.size = Some(size);
        meta.data_version = Some(v0.token());
        // The version now at the key may be pinned by another stub (this path's previous
        // file, renamed): keep it aside first. This file's own previous version is not
        // kept: the file still has the data, and it is about to be archived anew.
        let own = old_pin.filter(|p| p.key == key.as_ref()).map(|p| p.version);
        let version = pin::new_version_id()?;
        let etag = self
            .upload_file(abs, key, &file, size, &mut meta, &version, own.as_deref())
            .await?;

        // The file must not have changed while we read it (fd and name both).
        let v1 = posix::version_of(abs, &file)?;
        let v1p = {
            let e = entry.clone();
            blocking(move || e.version_by_name()).await?
        };
        if v1 != v0 || !v1p.same_data(&v0) {
            return Err(HsmError::ModifiedDuringArchive { path: abs.clone() });
        }
        // Pin first: a file marked archived always names the version that holds its data.
        let pinned = Pin {
            key: key.to_string(),
            etag,
            version,
            checksum: meta.checksum.clone(),
            size,
        };
        {
            let (f, a, p) = (file.clone(), abs.clone(), pinned.clone());
            blocking(move || pin::write(f.as_fd(), &a, &p)).await?;
        }
        self.backend
            .hsm_mark(
                abs,
                flags(HS_ARCHIVED | HS_EXISTS),
                flags(HS_DIRTY | HS_LOST),
                Some(self.cfg.archive_id),
            )
            .await?;
        // A write between the check and the mark: take the mark back.
        let v2 = {
            let e = entry.clone();
            blocking(move || e.version_by_name()).await?
        };
        if !v2.same_data(&v0) {
            self.backend
                .hsm_mark(abs, flags(HS_DIRTY), flags(0), None)
                .await?;
            return Err(HsmError::ModifiedDuringArchive { path: abs.clone() });
        }
        let mut r = Self::report("archive", abs, key, Outcome::Done, None);
        r.bytes = size;
        r.checksum = meta.checksum;
        Ok(r)
    }

    /// Streams `size` bytes of an open file to `key` with `meta` (the checksum is filled in
    /// first) as version `version`: one PUT for a small file, else a multipart upload with
    /// bounded memory and `concurrency` parts in flight. The version the key held is kept
    /// aside first unless it is `own_version` (see [`ArchiveStore::put_keeping`]). Returns
    /// the store's ETag. Used by archive and by the Lustre copytool.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_file(
        &self,
        abs: &Path,
        key: &ObjPath,
        file: &Arc<std::fs::File>,
        size: u64,
        meta: &mut FileMeta,
        version: &str,
        own_version: Option<&str>,
    ) -> Result<Option<String>> {
        let part = self.cfg.part_size;
        let started = Instant::now();
        let with_version = |meta: &FileMeta| {
            let (mut map, _) = meta.to_map();
            map.insert(pin::K_VERSION.into(), version.to_string());
            map
        };

        if size as usize <= part {
            // One PUT: read, hash, send.
            let (f, p) = (file.clone(), abs.to_path_buf());
            let data = blocking(move || {
                let mut buf = Vec::with_capacity(size as usize);
                (&*f)
                    .take(size)
                    .read_to_end(&mut buf)
                    .map_err(|e| HsmError::io(&p, e))?;
                Ok(buf)
            })
            .await?;
            meta.checksum = Some(format!("blake3:{}", blake3::hash(&data).to_hex()));
            let map = with_version(meta);
            self.throttle(started, data.len() as u64).await;
            let etag = self
                .store
                .put_keeping(key, Bytes::from(data), &map, own_version)
                .await?;
            self.emit("archive", abs, size, size);
            Ok(etag)
        } else {
            // Pass 1 hashes (stores want the metadata when the upload starts), pass 2
            // streams parts. A change between them is caught by the data-version check.
            let (f, p) = (file.clone(), abs.to_path_buf());
            let sum = blocking(move || {
                let mut h = blake3::Hasher::new();
                let mut r = std::io::BufReader::with_capacity(1 << 20, &*f);
                std::io::copy(&mut r, &mut h).map_err(|e| HsmError::io(&p, e))?;
                Ok(h.finalize().to_hex().to_string())
            })
            .await?;
            meta.checksum = Some(format!("blake3:{sum}"));
            let map = with_version(meta);
            self.store.preserve(key, own_version).await?;
            let mut up = self.store.start_upload(key, &map, part).await?;
            let mut off = 0u64;
            let res: Result<()> = async {
                while off < size {
                    let n = part.min((size - off) as usize);
                    let (f, p) = (file.clone(), abs.to_path_buf());
                    let chunk = blocking(move || {
                        let mut b = BytesMut::zeroed(n);
                        std::os::unix::fs::FileExt::read_exact_at(&*f, &mut b, off)
                            .map_err(|e| HsmError::io(&p, e))?;
                        Ok(b.freeze())
                    })
                    .await?;
                    up.write(&self.store, chunk, self.cfg.concurrency).await?;
                    off += n as u64;
                    self.emit("archive", abs, off, size);
                    self.throttle(started, off).await;
                }
                Ok(())
            }
            .await;
            match res {
                Ok(()) => self.store.finish_upload(up, &map).await,
                Err(e) => {
                    up.abort().await;
                    Err(e)
                }
            }
        }
    }

    // ---------------------------------------------------------------- release

    /// Frees the data of an archived, unchanged file. Refuses (changing nothing) unless the
    /// version the file pins exists in the store with the file's size.
    pub async fn release(&self, path: &Path) -> Result<OpReport> {
        let started = Instant::now();
        let res = self.release_inner(path).await;
        self.finish("release", started, res)
    }

    async fn release_inner(&self, path: &Path) -> Result<OpReport> {
        let (entry, key) = self.open(path).await?;
        let abs = entry.abs.clone();
        crate::guard::check_release(
            &self.backend.capabilities(),
            self.cfg.allow_unguarded_release,
            &abs,
            entry.fd.as_ref().map(std::os::fd::AsFd::as_fd),
        )?;
        let st = self.backend.hsm_state(&abs).await?;
        if st.flags.released && !st.flags.dirty {
            return Ok(Self::report(
                "release",
                &abs,
                &key,
                Outcome::Skipped,
                Some("already released".into()),
            ));
        }
        if !(st.flags.archived && st.flags.exists) {
            return Err(HsmError::refused(&abs, "not archived"));
        }
        if st.flags.dirty {
            return Err(HsmError::refused(
                &abs,
                "changed since it was archived (dirty)",
            ));
        }
        if st.flags.no_release {
            return Err(HsmError::refused(&abs, "marked never_release"));
        }
        let file = entry.file()?;
        let pinned = pin::read(file.as_fd(), &abs)?.ok_or_else(|| {
            HsmError::refused(
                &abs,
                "no archived version is pinned on the file (archived before pins); archive it again",
            )
        })?;
        let source = match self.store.locate_pinned(&pinned).await {
            Err(HsmError::NoArchive { key, store }) => {
                return Err(HsmError::refused(
                    &abs,
                    format!("the archived copy `{key}` is missing from {store}"),
                ));
            }
            other => other?,
        };
        let cur = posix::version_of(&abs, &file)?;
        if !source.exact || source.info.size != cur.size || pinned.size != cur.size {
            return Err(HsmError::refused(
                &abs,
                format!(
                    "the pinned archived version `{}` is missing or does not match the file",
                    pinned.key
                ),
            ));
        }
        // Where a restore daemon watches, the backend leaves the exclusion during the punch
        // to it (a write lease across the punch would stall for the kernel's
        // lease-break-time); the mode is kept until the release is done (see `guard`).
        let mode = crate::guard::release_mode(
            &self.backend.capabilities(),
            self.cfg.allow_unguarded_release,
            &abs,
            Some(file.as_fd()),
        )?;
        // The release takes a write lease, which our own open descriptor would refuse.
        drop((file, entry));
        match &mode {
            crate::guard::ReleaseMode::Watched(_) => self.backend.hsm_release_watched(&abs).await?,
            crate::guard::ReleaseMode::Kernel | crate::guard::ReleaseMode::Unguarded => {
                self.backend.hsm_release(&abs).await?
            }
        }
        drop(mode);
        let mut r = Self::report("release", &abs, &key, Outcome::Done, None);
        r.bytes = cur.size;
        Ok(r)
    }

    // ---------------------------------------------------------------- restore

    /// Brings a released file's data back: ranged parallel GETs of the version it pins into
    /// a temporary file beside it (random name, created exclusively), the pinned checksum
    /// verified, then an atomic rename over the stub. On a mismatch the stub is untouched
    /// and stays released.
    pub async fn restore(&self, path: &Path) -> Result<OpReport> {
        let started = Instant::now();
        let res = self.restore_inner(path).await;
        self.finish("restore", started, res)
    }

    /// Where both restores start: the file must be released, and the version it pins (or,
    /// for stubs from before pins, the object at its key) found. `Err(report)` is the
    /// "nothing to do" answer.
    async fn restore_source(
        &self,
        abs: &Path,
        key: &ObjPath,
        file: &Arc<std::fs::File>,
    ) -> Result<std::result::Result<RestoreSource, OpReport>> {
        let st = self.backend.hsm_state(abs).await?;
        if !st.flags.released {
            return Ok(Err(Self::report(
                "restore",
                abs,
                key,
                Outcome::Skipped,
                Some("not released".into()),
            )));
        }
        let pinned = {
            let (f, a) = (file.clone(), abs.to_path_buf());
            blocking(move || pin::read(f.as_fd(), &a)).await?
        };
        let (source, expected) = match &pinned {
            Some(p) => {
                let s = self.store.locate_pinned(p).await?;
                let expected = p
                    .checksum
                    .clone()
                    .or_else(|| FileMeta::from_map(&s.info.meta, 0, 0, 0).checksum);
                (s, expected)
            }
            None => {
                tracing::warn!(file = %abs.display(), "no pin on a released file; restoring from its key");
                let info = self
                    .store
                    .head(key)
                    .await?
                    .ok_or_else(|| HsmError::NoArchive {
                        store: self.store.name().to_string(),
                        key: key.to_string(),
                    })?;
                let expected = FileMeta::from_map(&info.meta, 0, 0, 0).checksum;
                (
                    PinnedSource {
                        key: key.clone(),
                        if_match: info.e_tag.clone(),
                        info,
                        exact: true,
                    },
                    expected,
                )
            }
        };
        Ok(Ok(RestoreSource {
            source,
            expected,
            pin: pinned,
            state: st,
        }))
    }

    fn check_stub_size(abs: &Path, archived: u64, stub: u64) -> Result<()> {
        if archived != stub {
            return Err(HsmError::refused(
                abs,
                format!("archived copy has {archived} bytes, the stub {stub}"),
            ));
        }
        Ok(())
    }

    fn verify(abs: &Path, src: &RestoreSource, actual: &str) -> Result<Option<String>> {
        match &src.expected {
            Some(expected) if expected != actual => Err(HsmError::Checksum {
                path: abs.to_path_buf(),
                expected: expected.clone(),
                actual: actual.to_string(),
            }),
            Some(_) => Ok(None),
            None => Ok(Some(
                "the archived copy has no checksum; size checked only".into(),
            )),
        }
    }

    async fn restore_inner(&self, path: &Path) -> Result<OpReport> {
        let (entry, key) = self.open(path).await?;
        let entry = Arc::new(entry);
        let abs = entry.abs.clone();
        let stub = Arc::new(entry.file()?);
        let src = match self.restore_source(&abs, &key, &stub).await? {
            Ok(source) => source,
            Err(skipped) => return Ok(skipped),
        };
        posix::try_flock(&abs, &stub)?;
        let stub_v0 = posix::version_of(&abs, &stub)?;
        Self::check_stub_size(&abs, src.source.info.size, stub_v0.size)?;
        // The data goes into an unnamed file where the filesystem has them (a kill before
        // the flip leaves nothing), else into a random name created exclusively.
        let (mut tmp_name, tmpf) = {
            let e = entry.clone();
            blocking(move || {
                let dir = e.abs.parent().unwrap_or(&e.abs).to_path_buf();
                match posix::create_unnamed_in(&e.parent, &dir)? {
                    Some(f) => Ok((None, f)),
                    None => posix::create_temp_in(&e.parent, RESTORE_TEMP_PREFIX, &dir)
                        .map(|(n, f)| (Some(n), f)),
                }
            })
            .await?
        };
        let res = self
            .restore_into(&entry, &key, &src, &mut tmp_name, tmpf, &stub, stub_v0)
            .await;
        if res.is_err()
            && let Some(tmp_name) = tmp_name
        {
            let e = entry.clone();
            let _ = blocking(move || {
                nix::unistd::unlinkat(
                    e.parent.as_fd(),
                    tmp_name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )
                .map_err(|x| HsmError::io(&e.abs, x.into()))
            })
            .await;
        }
        res
    }

    /// Fetches `size` bytes of `key` with ranged parallel GETs (each requiring ETag
    /// `if_match` when given) and writes them at the same offsets into `file` (shown as
    /// `write_path` in errors), hashing in order. Returns the `blake3:` checksum of what
    /// was written; the caller compares it with the pinned one.
    #[allow(clippy::too_many_arguments)]
    pub async fn download_into(
        &self,
        abs: &Path,
        key: &ObjPath,
        if_match: Option<&str>,
        size: u64,
        file: &Arc<std::fs::File>,
        write_path: &Path,
    ) -> Result<String> {
        let part = self.cfg.part_size as u64;
        let ranges: Vec<_> = (0..size.div_ceil(part))
            .map(|i| i * part..((i + 1) * part).min(size))
            .collect();
        let started = Instant::now();
        let mut hasher = blake3::Hasher::new();
        let mut gets = futures::stream::iter(ranges.into_iter().map(|r| {
            let store = self.store.clone();
            let key = key.clone();
            let if_match = if_match.map(str::to_string);
            async move {
                store
                    .get_range_if(&key, r.clone(), if_match.as_deref())
                    .await
                    .map(|b| (r, b))
            }
        }))
        .buffered(self.cfg.concurrency);
        while let Some((r, data)) = gets.try_next().await? {
            if data.len() as u64 != r.end - r.start {
                return Err(HsmError::refused(abs, "short read from the store"));
            }
            hasher.update(&data);
            let (f, p) = (file.clone(), write_path.to_path_buf());
            blocking(move || {
                std::os::unix::fs::FileExt::write_all_at(&*f, &data, r.start)
                    .map_err(|e| HsmError::io(&p, e))
            })
            .await?;
            self.emit("restore", abs, r.end, size);
            self.throttle(started, r.end).await;
        }
        drop(gets);
        let actual = format!("blake3:{}", hasher.finalize().to_hex());
        Ok(actual)
    }

    #[allow(clippy::too_many_arguments)]
    async fn restore_into(
        &self,
        entry: &Arc<posix::Entry>,
        key: &ObjPath,
        src: &RestoreSource,
        tmp_name: &mut Option<String>,
        tmpf: std::fs::File,
        stub: &Arc<std::fs::File>,
        stub_v0: DataVersion,
    ) -> Result<OpReport> {
        let abs = &entry.abs;
        let size = stub_v0.size;
        let tmpf = Arc::new(tmpf);
        let shown = entry.sibling(tmp_name.as_deref().unwrap_or(RESTORE_TEMP_PREFIX));
        let actual = self
            .download_into(
                abs,
                &src.source.key,
                src.source.if_match.as_deref(),
                size,
                &tmpf,
                &shown,
            )
            .await?;
        let detail = Self::verify(abs, src, &actual)?;
        // Metadata comes from the stub (it may have been chmod'ed since the archive); the
        // restored file pins the same version. Then it gets its (temporary) name.
        let name = {
            let (f, p, e, pinned, named) = (
                tmpf.clone(),
                shown.clone(),
                entry.clone(),
                src.pin.clone(),
                tmp_name.clone(),
            );
            blocking(move || {
                f.set_len(size).map_err(|x| HsmError::io(&p, x))?;
                let mut m = posix::capture_entry(&e)?;
                m.atime_ns = None;
                posix::apply_fd(&p, f.as_raw_fd(), &m)?;
                if let Some(pinned) = &pinned {
                    pin::write(f.as_fd(), &p, pinned)?;
                }
                f.sync_all().map_err(|x| HsmError::io(&p, x))?;
                match named {
                    Some(n) => Ok(n),
                    None => {
                        let dir = e.abs.parent().unwrap_or(&e.abs).to_path_buf();
                        posix::link_unnamed(&e.parent, &f, RESTORE_TEMP_PREFIX, &dir)
                    }
                }
            })
            .await?
        };
        *tmp_name = Some(name.clone());
        let tmp = entry.sibling(&name);
        self.backend
            .hsm_mark(
                &tmp,
                flags(HS_ARCHIVED | HS_EXISTS),
                flags(HS_RELEASED | HS_DIRTY),
                src.state.archive_id.or(Some(self.cfg.archive_id)),
            )
            .await?;
        // The flip: nobody else may have the stub open, and the name must still hold the
        // stub we saw (a tenant may have renamed or replaced it meanwhile).
        {
            let (stub, e, t) = (stub.clone(), entry.clone(), name);
            blocking(move || {
                let _lease = posix::lease(&e.abs, &stub)?;
                let now = posix::version_of(&e.abs, &stub)?;
                // By name without opening it: an open would break our own lease.
                let by_name = posix::lstat_at(e.parent.as_raw_fd(), &e.name)
                    .map_err(|x| HsmError::io(&e.abs, x))?
                    .map(|st| st.st_ino);
                if !now.same_data(&stub_v0) || by_name != Some(stub_v0.ino) {
                    return Err(HsmError::refused(&e.abs, "the stub changed during restore"));
                }
                nix::fcntl::renameat(
                    e.parent.as_fd(),
                    t.as_str(),
                    e.parent.as_fd(),
                    e.name.as_str(),
                )
                .map_err(|x| HsmError::io(&e.abs, x.into()))?;
                let _ = nix::unistd::fsync(e.parent.as_fd());
                Ok(())
            })
            .await?;
        }
        // The rename moved the ctime: take the data version afresh.
        self.backend
            .hsm_mark(abs, flags(0), flags(HS_DIRTY), None)
            .await?;
        let mut r = Self::report("restore", abs, key, Outcome::Done, detail);
        r.bytes = size;
        r.checksum = Some(actual);
        Ok(r)
    }

    /// Restores a released file **in place**, through an already open descriptor (the
    /// restore-on-access daemon's event fd, whose I/O raises no fanotify events): ranged
    /// GETs of the pinned version written with `pwrite` at their offsets, the pinned
    /// checksum verified, the stub's mtime put back, then the state flipped to
    /// archived-and-present. The inode stays the same, so a process blocked reading it sees
    /// the data when it is let go.
    ///
    /// A crash or an error leaves the file released (the state is flipped last), so the
    /// next access restores it again; on a checksum mismatch the written range is punched
    /// out again.
    pub async fn restore_in_place(
        &self,
        path: &Path,
        file: Arc<std::fs::File>,
    ) -> Result<OpReport> {
        let started = Instant::now();
        let res = self.restore_in_place_inner(path, file).await;
        self.finish("restore", started, res)
    }

    async fn restore_in_place_inner(
        &self,
        path: &Path,
        file: Arc<std::fs::File>,
    ) -> Result<OpReport> {
        let (abs, key) = self.locate(path)?;
        let src = match self.restore_source(&abs, &key, &file).await? {
            Ok(source) => source,
            Err(skipped) => return Ok(skipped),
        };
        let v0 = posix::version_of(&abs, &file)?;
        Self::check_stub_size(&abs, src.source.info.size, v0.size)?;
        let res = self
            .download_into(
                &abs,
                &src.source.key,
                src.source.if_match.as_deref(),
                v0.size,
                &file,
                &abs,
            )
            .await;
        let punch_back = |file: Arc<std::fs::File>, abs: PathBuf| {
            blocking(move || {
                if v0.size > 0 {
                    nix::fcntl::fallocate(
                        file.as_fd(),
                        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                        0,
                        v0.size as libc::off_t,
                    )
                    .map_err(|e| HsmError::io(&abs, e.into()))?;
                }
                posix::set_times_fd(&abs, file.as_raw_fd(), None, v0.mtime_ns)
            })
        };
        let verified =
            res.and_then(|actual| Self::verify(&abs, &src, &actual).map(|d| (actual, d)));
        let (actual, detail) = match verified {
            Ok(v) => v,
            Err(e) => {
                let _ = punch_back(file.clone(), abs.clone()).await;
                return Err(e);
            }
        };
        {
            let (f, a) = (file.clone(), abs.clone());
            blocking(move || {
                f.sync_data().map_err(|e| HsmError::io(&a, e))?;
                // Our writes moved the mtime: the stub shows the archived times again.
                posix::set_times_fd(&a, f.as_raw_fd(), None, v0.mtime_ns)
            })
            .await?;
        }
        self.backend
            .hsm_mark(&abs, flags(0), flags(HS_RELEASED | HS_DIRTY), None)
            .await?;
        let mut r = Self::report("restore", &abs, &key, Outcome::Done, detail);
        r.bytes = v0.size;
        r.checksum = Some(actual);
        Ok(r)
    }

    // ---------------------------------------------------------------- remove

    /// Deletes the archived copy of a file that still has its data. Refuses for a released
    /// file (the archive holds its only copy). Only the version the file itself pins is
    /// deleted: a key now holding another file's version is left alone. For a path that no
    /// longer exists, the object at its key may be pinned by a renamed stub, so it is moved
    /// aside (gc frees it once nothing pins it) rather than deleted.
    pub async fn remove(&self, path: &Path) -> Result<OpReport> {
        let started = Instant::now();
        let res = self.remove_inner(path).await;
        self.finish("remove", started, res)
    }

    async fn remove_inner(&self, path: &Path) -> Result<OpReport> {
        let (abs, key) = self.locate(path)?;
        let entry = match self.open(path).await {
            Ok((entry, _)) => entry,
            Err(HsmError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                self.store.preserve(&key, None).await?;
                self.store.delete(&key).await?;
                return Ok(Self::report(
                    "remove",
                    &abs,
                    &key,
                    Outcome::Done,
                    Some("no file at this path: the object was moved aside for gc".into()),
                ));
            }
            Err(e) => return Err(e),
        };
        if entry.kind != EntryKind::File {
            self.store.delete(&key).await?;
            return Ok(Self::report("remove", &abs, &key, Outcome::Done, None));
        }
        let st = self.backend.hsm_state(&abs).await?;
        if st.flags.released {
            return Err(HsmError::refused(
                &abs,
                "released: the archive holds its only copy; restore it first",
            ));
        }
        let file = entry.file()?;
        let mut detail = None;
        match pin::read(file.as_fd(), &abs)? {
            Some(p) => {
                let pinned_key = p.object_key()?;
                match self.store.head(&pinned_key).await? {
                    Some(info) if info.version_id(&pinned_key) == p.version => {
                        self.store.delete(&pinned_key).await?;
                    }
                    _ => {
                        detail = Some(format!(
                            "`{}` holds another file's version now; left in place (gc frees this file's old version)",
                            p.key
                        ));
                    }
                }
            }
            None => self.store.delete(&key).await?,
        }
        pin::clear(file.as_fd(), &abs)?;
        self.backend
            .hsm_mark(
                &abs,
                flags(0),
                flags(HS_ARCHIVED | HS_EXISTS | HS_DIRTY),
                None,
            )
            .await?;
        Ok(Self::report("remove", &abs, &key, Outcome::Done, detail))
    }
    // ---------------------------------------------------------------- trees

    /// Archives everything under `dir` (directories first), `file_concurrency` at a time.
    /// Errors are collected per path, not fatal.
    pub async fn archive_tree(&self, dir: &Path) -> Result<TreeReport> {
        let (abs, _) = self.resolve(dir)?;
        let paths = {
            let abs = abs.clone();
            blocking(move || crate::walk::walk(&abs)).await?
        };
        let mut report = TreeReport::default();
        let results: Vec<_> = futures::stream::iter(paths.into_iter().map(|p| async move {
            let r = self.archive(&p).await;
            (p, r)
        }))
        .buffer_unordered(self.cfg.file_concurrency)
        .collect()
        .await;
        for (p, r) in results {
            report.add(p, r);
        }
        Ok(report)
    }

    /// Applies `op` to every regular file under `dir`.
    pub async fn tree_op(&self, dir: &Path, op: TreeOp) -> Result<TreeReport> {
        let (abs, _) = self.resolve(dir)?;
        let paths = {
            let abs = abs.clone();
            blocking(move || crate::walk::walk(&abs)).await?
        };
        let mut report = TreeReport::default();
        let results: Vec<_> = futures::stream::iter(
            paths
                .into_iter()
                .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
                .map(|p| async move {
                    let r = match op {
                        TreeOp::Release => self.release(&p).await,
                        TreeOp::Restore => self.restore(&p).await,
                        TreeOp::Remove => self.remove(&p).await,
                    };
                    (p, r)
                }),
        )
        .buffer_unordered(self.cfg.file_concurrency)
        .collect()
        .await;
        for (p, r) in results {
            report.add(p, r);
        }
        Ok(report)
    }
}

/// One operation on many paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOp {
    Archive,
    Release,
    Restore,
    Remove,
    Dirty,
}

impl FileOp {
    pub fn name(self) -> &'static str {
        match self {
            Self::Archive => "archive",
            Self::Release => "release",
            Self::Restore => "restore",
            Self::Remove => "remove",
            Self::Dirty => "dirty",
        }
    }
}

impl HsmEngine {
    /// Runs `op` on one path.
    pub async fn run_op(&self, op: FileOp, path: &Path) -> Result<OpReport> {
        match op {
            FileOp::Archive => self.archive(path).await,
            FileOp::Release => self.release(path).await,
            FileOp::Restore => self.restore(path).await,
            FileOp::Remove => self.remove(path).await,
            FileOp::Dirty => self.mark_dirty(path).await,
        }
    }

    /// Runs `op` on every path, `file_concurrency` at a time, calling `each` as each one
    /// finishes. Stops starting new ones once more than `max_errors` failed (`None`: never);
    /// `TreeReport::stopped` says so.
    pub async fn apply(
        &self,
        op: FileOp,
        paths: Vec<PathBuf>,
        max_errors: Option<usize>,
        each: &(dyn Fn(&Path, &Result<OpReport>) + Send + Sync),
    ) -> TreeReport {
        let mut report = TreeReport::default();
        let errors = std::sync::atomic::AtomicUsize::new(0);
        let over =
            || max_errors.is_some_and(|m| errors.load(std::sync::atomic::Ordering::Relaxed) > m);
        let mut stream = futures::stream::iter(paths.into_iter().map(|p| {
            let errors = &errors;
            async move {
                if over() {
                    return None;
                }
                let r = self.run_op(op, &p).await;
                if r.is_err() {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                each(&p, &r);
                Some((p, r))
            }
        }))
        .buffer_unordered(self.cfg.file_concurrency);
        while let Some(item) = stream.next().await {
            match item {
                Some((p, r)) => report.add(p, r),
                None => report.stopped = true,
            }
        }
        report
    }
}

/// Tree-wide operations other than archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeOp {
    Release,
    Restore,
    Remove,
}

/// One failed path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathError {
    pub path: PathBuf,
    pub kind: String,
    pub error: String,
}

/// The report of a tree operation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TreeReport {
    pub done: usize,
    pub skipped: usize,
    pub bytes: u64,
    pub errors: Vec<PathError>,
    pub items: Vec<OpReport>,
    /// True when `max_errors` stopped the operation early.
    #[serde(default)]
    pub stopped: bool,
}

impl TreeReport {
    fn add(&mut self, p: PathBuf, r: Result<OpReport>) {
        match r {
            Ok(rep) => {
                match rep.outcome {
                    Outcome::Done => self.done += 1,
                    Outcome::Skipped => self.skipped += 1,
                }
                self.bytes += rep.bytes;
                self.items.push(rep);
            }
            Err(e) => self.errors.push(PathError {
                path: p,
                kind: e.kind().into(),
                error: e.to_string(),
            }),
        }
    }
}

/// Release and restore hold write leases (`F_SETLEASE`). When another open breaks one, the
/// kernel signals the holder with SIGIO, whose default action ends the process: a reader
/// opening a file mid-release (or a fanotify listener opening an event fd) would kill the
/// mover. Ignoring SIGIO keeps lease breaks working (the kernel still waits for us to let
/// go, up to `lease-break-time`). A handler someone else installed is left alone.
///
/// It changes the whole process, so the library never calls it: the `lustrekit` binary
/// does (its `hsm` commands and the demo), and so must any other program that uses an
/// [`HsmEngine`] or runs a restore daemon.
pub fn ignore_lease_break_signal() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: reading and setting the disposition of SIGIO; SIG_IGN needs no handler.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGIO, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_DFL
            {
                libc::signal(libc::SIGIO, libc::SIG_IGN);
            }
        }
    });
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HsmError::from_join("blocking task", e))?
}
