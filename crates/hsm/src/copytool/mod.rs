//! The Lustre copytool: the same engine serving the MDT coordinator's HSM actions.
//!
//! `lustrekit hsm copytool --mnt /mnt/lustre` loads `liblustreapi` at run time
//! ([`api::LustreApi`]), registers for the archive IDs given, and receives action lists
//! ([`hal`]). Each item:
//! - **ARCHIVE**: the file is read through `<mnt>/.lustre/fid/<fid>`, streamed to the
//!   path-based key of `fid2path` (with the engine's multipart upload and checksum), and
//!   `<store>/.lustrekit-fid/<fid>` records the key (so a REMOVE after an unlink finds it);
//! - **RESTORE**: ranged GETs written into the descriptor the coordinator gives
//!   (`llapi_hsm_action_get_fd`), checksum verified;
//! - **REMOVE**: the object and its FID record are deleted;
//! - **CANCEL**: the running action with that cookie is stopped and ended with ECANCELED.
//!
//! Progress goes to the coordinator while a copy runs (`llapi_hsm_action_progress`, at most
//! every 64 MiB or 10 s). The coordinator itself sets the HSM flags when an action ends, so
//! the copytool never marks state.
//!
//! The coordinator calls are behind the [`Coordinator`] trait, so the action mapping is
//! tested without Lustre.

pub mod api;
pub mod hal;

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjPath;

pub use api::LustreApi;
use hal::{Action, ActionItem, Fid};

use crate::engine::HsmEngine;
use crate::error::{HsmError, Result};
use crate::meta::FileMeta;
use crate::pin::Pin;
use crate::posix;
use crate::store::PinnedSource;

/// What the copytool needs from the coordinator and the filesystem.
pub trait Coordinator: Send + Sync + 'static {
    /// A begun action.
    type Action: Send + 'static;
    /// `llapi_hsm_action_begin` for `item`, at byte `item.at` of the list whose buffer
    /// starts at `base` (an address, valid until the next receive).
    fn begin(&self, item: &ActionItem, base: usize) -> std::io::Result<Self::Action>;
    fn progress(&self, action: &Self::Action, offset: u64, length: u64, total: u64);
    /// The descriptor restored data goes into (owned by the coordinator).
    fn restore_fd(&self, action: &Self::Action) -> std::io::Result<RawFd>;
    /// Ends the action; `errval` is 0 or a positive errno.
    fn end(
        &self,
        action: Self::Action,
        offset: u64,
        length: u64,
        errval: i32,
    ) -> std::io::Result<()>;
    /// The path of `fid` relative to the filesystem root.
    fn path_of(&self, fid: &Fid) -> std::io::Result<PathBuf>;
    /// A path that opens `fid`'s data for reading (`<mnt>/.lustre/fid/<fid>`).
    fn data_path(&self, fid: &Fid) -> PathBuf;
    /// The file's data version: any change of the data changes it. The default is the local
    /// one (size, mtime, inode, generation); Lustre has its own.
    fn data_version(&self, file: &std::fs::File) -> std::io::Result<String> {
        posix::DataVersion::of_file(file).map(|v| v.token())
    }
}

/// The real coordinator, through liblustreapi.
pub struct Lustre {
    ct: api::Copytool,
    api: Arc<LustreApi>,
    mnt: PathBuf,
}

impl Coordinator for Lustre {
    type Action = api::RawAction;

    fn begin(&self, item: &ActionItem, base: usize) -> std::io::Result<Self::Action> {
        // SAFETY: the dispatcher calls `begin` for items of the list just received (at
        // `base`), before the next receive; `item.at` comes from the bounds-checked parse.
        unsafe { self.ct.begin(base as *const u8, item.at, false) }
    }

    fn progress(&self, a: &Self::Action, offset: u64, length: u64, total: u64) {
        self.ct.progress(a, offset, length, total);
    }

    fn restore_fd(&self, a: &Self::Action) -> std::io::Result<RawFd> {
        self.ct.action_fd(a)
    }

    fn end(&self, a: Self::Action, offset: u64, length: u64, errval: i32) -> std::io::Result<()> {
        self.ct.end(a, offset, length, errval)
    }

    fn path_of(&self, fid: &Fid) -> std::io::Result<PathBuf> {
        self.api.fid2path(&self.mnt, fid)
    }

    fn data_path(&self, fid: &Fid) -> PathBuf {
        self.mnt.join(".lustre/fid").join(fid.to_string())
    }

    fn data_version(&self, file: &std::fs::File) -> std::io::Result<String> {
        use std::os::fd::AsRawFd;
        Ok(format!(
            "lustre:{}",
            self.api.data_version(file.as_raw_fd())?
        ))
    }
}

/// Actions running, by cookie, for CANCEL.
type Running = Arc<Mutex<HashMap<u64, tokio::task::AbortHandle>>>;

/// The copytool loop over a coordinator: receives lists, dispatches items.
pub struct Dispatcher<C: Coordinator> {
    coord: Arc<C>,
    engine: Arc<HsmEngine>,
    running: Running,
    tasks: tokio::task::JoinSet<()>,
    /// Copies running at once: the engine's `file_concurrency`. An action waiting for a
    /// permit is begun already, and a CANCEL still reaches it.
    copies: Arc<tokio::sync::Semaphore>,
}

fn errno_of(e: &HsmError) -> i32 {
    match e {
        HsmError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        HsmError::NoArchive { .. } => libc::ENOENT,
        HsmError::Checksum { .. } => libc::EIO,
        HsmError::Refused { .. } | HsmError::OutsideRoot { .. } => libc::EINVAL,
        _ => libc::EIO,
    }
}

fn fid_key(engine: &HsmEngine, fid: &Fid) -> ObjPath {
    engine
        .store()
        .fid_index_key(&format!("{:x}-{:x}-{:x}", fid.seq, fid.oid, fid.ver))
}

/// One item of a received list, with the coordinator's part (`begin`) already done.
enum Step<A> {
    Cancel(ActionItem),
    Run(ActionItem, A),
}

/// Begins every action of `list` (received at `base`) with the coordinator. It must run
/// before the next receive, and `llapi_hsm_action_begin` opens files on the filesystem: the
/// real loop calls it on a blocking thread, together with the receive.
fn begin_list<C: Coordinator>(
    coord: &C,
    list: &hal::ActionList,
    base: usize,
) -> Vec<Step<C::Action>> {
    let mut steps = Vec::with_capacity(list.items.len());
    for item in &list.items {
        match item.action {
            Action::Cancel => steps.push(Step::Cancel(item.clone())),
            Action::Archive | Action::Restore | Action::Remove => match coord.begin(item, base) {
                Ok(a) => steps.push(Step::Run(item.clone(), a)),
                Err(e) => {
                    tracing::error!(fid = %item.fid, error = %e, "llapi_hsm_action_begin failed");
                }
            },
            other => tracing::warn!(action = ?other, fid = %item.fid, "ignoring action"),
        }
    }
    steps
}

impl<C: Coordinator> Dispatcher<C> {
    pub fn new(coord: Arc<C>, engine: Arc<HsmEngine>) -> Self {
        let copies = Arc::new(tokio::sync::Semaphore::new(
            engine.config().file_concurrency.max(1),
        ));
        Self {
            coord,
            engine,
            running: Arc::new(Mutex::new(HashMap::new())),
            tasks: tokio::task::JoinSet::new(),
            copies,
        }
    }

    /// Dispatches every item of one list: `begin` is called here, at once (the list's
    /// buffer is only valid until the next receive); the copies run as tasks.
    pub fn dispatch(&mut self, list: &hal::ActionList, base: usize) {
        let steps = begin_list(&*self.coord, list, base);
        self.apply(steps);
    }

    /// Carries out the steps of lists already begun (see [`begin_list`]), in order.
    fn apply(&mut self, steps: Vec<Step<C::Action>>) {
        for step in steps {
            match step {
                Step::Cancel(item) => {
                    let handle = self
                        .running
                        .lock()
                        .ok()
                        .and_then(|m| m.get(&item.cookie).cloned());
                    match handle {
                        Some(h) => {
                            tracing::info!(cookie = item.cookie, fid = %item.fid, "cancel");
                            h.abort();
                        }
                        None => {
                            tracing::info!(cookie = item.cookie, "cancel of an action not running")
                        }
                    }
                }
                Step::Run(item, action) => self.spawn(item, action),
            }
        }
    }

    fn spawn(&mut self, item: ActionItem, action: C::Action) {
        let (coord, engine, running) = (
            self.coord.clone(),
            self.engine.clone(),
            self.running.clone(),
        );
        let action = Arc::new(Mutex::new(Some(action)));
        let cookie = item.cookie;
        // The copy runs in its own task so CANCEL can abort it; this task ends the action
        // whatever happened to the copy.
        let copy = {
            let (coord, engine, action, item, copies) = (
                coord.clone(),
                engine.clone(),
                action.clone(),
                item.clone(),
                self.copies.clone(),
            );
            tokio::spawn(async move {
                let _permit = copies
                    .acquire_owned()
                    .await
                    .map_err(|_| HsmError::Unsupported("copytool stopped".into()))?;
                handle_item(&coord, &engine, &item, &action).await
            })
        };
        if let Ok(mut m) = running.lock() {
            m.insert(cookie, copy.abort_handle());
        }
        self.tasks.spawn(async move {
            let res = copy.await;
            if let Ok(mut m) = running.lock() {
                m.remove(&cookie);
            }
            let (errval, len) = match res {
                Ok(Ok(n)) => (0, n),
                Ok(Err(e)) => {
                    tracing::error!(fid = %item.fid, action = ?item.action, error = %e, "copytool action failed");
                    (errno_of(&e), 0)
                }
                Err(j) if j.is_cancelled() => (libc::ECANCELED, 0),
                Err(j) => {
                    tracing::error!(fid = %item.fid, error = %j, "copytool task failed");
                    (libc::EIO, 0)
                }
            };
            let taken = action.lock().ok().and_then(|mut a| a.take());
            if let Some(a) = taken
                && let Err(e) = coord.end(a, item.offset, len, errval)
            {
                tracing::error!(fid = %item.fid, error = %e, "llapi_hsm_action_end failed");
            }
        });
    }

    /// Waits for every dispatched action to end.
    pub async fn drain(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Runs one item; returns the bytes moved.
async fn handle_item<C: Coordinator>(
    coord: &Arc<C>,
    engine: &Arc<HsmEngine>,
    item: &ActionItem,
    action: &Arc<Mutex<Option<C::Action>>>,
) -> Result<u64> {
    let started = Instant::now();
    // Progress to the coordinator, at most every 64 MiB or 10 s.
    let last = Arc::new(Mutex::new((0u64, Instant::now())));
    let report = {
        let (action, last) = (action.clone(), last.clone());
        move |done: u64, total: u64, coord: &C| {
            let Ok(mut l) = last.lock() else { return };
            if done >= l.0 + (64 << 20) || l.1.elapsed() >= Duration::from_secs(10) || done == total
            {
                if let Ok(a) = action.lock()
                    && let Some(a) = a.as_ref()
                {
                    coord.progress(a, l.0, done - l.0, total);
                }
                *l = (done, Instant::now());
            }
        }
    };
    let res = match item.action {
        Action::Archive => archive(coord, engine, item, &report).await,
        Action::Restore => restore(coord, engine, item, action, &report).await,
        Action::Remove => remove(coord, engine, item).await,
        other => Err(HsmError::Unsupported(format!("action {other:?}"))),
    };
    let op = match item.action {
        Action::Archive => "copytool_archive",
        Action::Restore => "copytool_restore",
        _ => "copytool_remove",
    };
    engine.metrics().record(
        op,
        res.is_ok(),
        *res.as_ref().unwrap_or(&0),
        started.elapsed(),
    );
    res
}

/// A view of the engine for one action (same store, backend, config and metrics), so its
/// progress callback can go to that action's coordinator.
fn mover(engine: &HsmEngine) -> HsmEngine {
    HsmEngine::new(
        engine.store().clone(),
        engine.backend().clone(),
        engine.config().clone(),
    )
    .with_metrics(engine.metrics().clone())
}

type Report<'a, C> = &'a (dyn Fn(u64, u64, &C) + Send + Sync);

async fn archive<C: Coordinator>(
    coord: &Arc<C>,
    engine: &Arc<HsmEngine>,
    item: &ActionItem,
    report: Report<'_, C>,
) -> Result<u64> {
    // fid2path, the open, the stats and the data-version ioctl all wait on the
    // filesystem: one blocking step.
    let (abs, key, data, file, v0, dv0, mut meta) = {
        let (coord, engine, fid) = (coord.clone(), engine.clone(), item.fid);
        crate::engine::blocking(move || {
            let rel = coord
                .path_of(&fid)
                .map_err(|e| HsmError::io(format!("fid {fid}"), e))?;
            let abs = engine
                .config()
                .root
                .join(rel.strip_prefix("/").unwrap_or(&rel));
            let key = engine.key_of(&abs)?;
            let data = coord.data_path(&fid);
            let file = Arc::new(posix::open_noatime(&data)?);
            let v0 = posix::version_of(&data, &file)?;
            let dv0 = coord
                .data_version(&file)
                .map_err(|e| HsmError::io(&data, e))?;
            let meta: FileMeta = posix::capture(&data)?;
            Ok((abs, key, data, file, v0, dv0, meta))
        })
        .await?
    };
    meta.size = Some(v0.size);
    meta.data_version = Some(dv0.clone());
    // The version now at the key may be pinned by another file (this path's previous
    // file, renamed): keep it aside, unless it is this FID's own previous version.
    let own = pin_from_index(engine, &item.fid)
        .await?
        .filter(|p| p.key == key.as_ref())
        .map(|p| p.version);
    let version = crate::pin::new_version_id()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    let mover = mover(engine).with_progress(Arc::new(move |p| {
        let _ = tx.send((p.done_bytes, p.total_bytes));
    }));
    let etag = {
        let upload = mover.upload_file(
            &abs,
            &key,
            &file,
            v0.size,
            &mut meta,
            &version,
            crate::engine::Previous::KeepAside {
                own_version: own.as_deref(),
            },
        );
        tokio::pin!(upload);
        loop {
            tokio::select! {
                r = &mut upload => break r?,
                Some((done, total)) = rx.recv() => report(done, total, coord),
            }
        }
    };
    while let Ok((done, total)) = rx.try_recv() {
        report(done, total, coord);
    }
    // The coordinator's data version decides (Lustre's own on Lustre).
    let dv1 = {
        let (coord, file, data) = (coord.clone(), file.clone(), data.clone());
        crate::engine::blocking(move || {
            coord
                .data_version(&file)
                .map_err(|e| HsmError::io(&data, e))
        })
        .await?
    };
    if dv1 != dv0 {
        return Err(HsmError::ModifiedDuringArchive { path: abs.clone() });
    }
    // The FID record is this file's pin: RESTORE reads exactly this version back.
    let pinned = Pin {
        key: key.to_string(),
        etag,
        version,
        checksum: meta.checksum.clone(),
        size: v0.size,
    };
    let idx = fid_key(engine, &item.fid);
    let record = serde_json::to_vec(&pinned).map_err(|e| HsmError::Metadata {
        key: idx.to_string(),
        field: "pin".into(),
        why: e.to_string(),
    })?;
    engine
        .store()
        .object_store()
        .put(&idx, Bytes::from(record).into())
        .await
        .map_err(|e| HsmError::Store {
            store: engine.store().name().to_string(),
            op: "put",
            key: idx.to_string(),
            source: Box::new(e),
        })?;
    Ok(v0.size)
}

async fn restore<C: Coordinator>(
    coord: &Arc<C>,
    engine: &Arc<HsmEngine>,
    item: &ActionItem,
    action: &Arc<Mutex<Option<C::Action>>>,
    report: Report<'_, C>,
) -> Result<u64> {
    let (source, expected) = match index_record(engine, &item.fid).await? {
        Some(IndexRecord::Pin(p)) => {
            let s = engine.store().locate_pinned(&p).await?;
            let expected = p
                .checksum
                .clone()
                .or_else(|| FileMeta::from_map(&s.info.meta, 0, 0, 0).checksum);
            (s, expected)
        }
        // A record from before pins names the key only; the object's own checksum is all
        // there is to verify. No record at all: this copytool never finished an archive of
        // the file, and guessing by its path could hand it another file's data.
        Some(IndexRecord::Key(key)) => {
            let info = engine
                .store()
                .head(&key)
                .await?
                .ok_or_else(|| HsmError::NoArchive {
                    store: engine.store().name().to_string(),
                    key: key.to_string(),
                })?;
            let expected = FileMeta::from_map(&info.meta, 0, 0, 0).checksum;
            (
                PinnedSource {
                    key,
                    if_match: info.e_tag.clone(),
                    info,
                    exact: true,
                },
                expected,
            )
        }
        None => {
            return Err(HsmError::NoArchive {
                store: engine.store().name().to_string(),
                key: fid_key(engine, &item.fid).to_string(),
            });
        }
    };
    let fd = {
        let a = action
            .lock()
            .map_err(|_| HsmError::Unsupported("action lock poisoned".into()))?;
        let a = a
            .as_ref()
            .ok_or_else(|| HsmError::Unsupported("action already ended".into()))?;
        coord
            .restore_fd(a)
            .map_err(|e| HsmError::io(format!("fid {}", item.fid), e))?
    };
    // Our own descriptor: the coordinator's stays its own.
    // SAFETY: the coordinator's descriptor is valid until the action ends, which is after
    // this function returns.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let file = Arc::new(std::fs::File::from(
        borrowed
            .try_clone_to_owned()
            .map_err(|e| HsmError::io(format!("fid {}", item.fid), e))?,
    ));
    let shown = PathBuf::from(format!("fid {}", item.fid));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    let mover = mover(engine).with_progress(Arc::new(move |p| {
        let _ = tx.send((p.done_bytes, p.total_bytes));
    }));
    let size = source.info.size;
    let actual = {
        let down = mover.download_into(
            &shown,
            &source.key,
            source.if_match.as_deref(),
            size,
            &file,
            &shown,
        );
        tokio::pin!(down);
        loop {
            tokio::select! {
                r = &mut down => break r?,
                Some((done, total)) = rx.recv() => report(done, total, coord),
            }
        }
    };
    if let Some(expected) = expected
        && expected != actual
    {
        return Err(HsmError::Checksum {
            path: shown,
            expected,
            actual,
        });
    }
    crate::engine::blocking(move || file.sync_data().map_err(|e| HsmError::io(&shown, e))).await?;
    Ok(size)
}

/// What the FID index holds for a file: its pin, or (from before pins) a bare key.
enum IndexRecord {
    Pin(Pin),
    Key(ObjPath),
}

async fn index_record(engine: &HsmEngine, fid: &Fid) -> Result<Option<IndexRecord>> {
    record_at(engine, &fid_key(engine, fid)).await
}

async fn record_at(engine: &HsmEngine, idx: &ObjPath) -> Result<Option<IndexRecord>> {
    let store_err = |op, e| HsmError::Store {
        store: engine.store().name().to_string(),
        op,
        key: idx.to_string(),
        source: Box::new(e),
    };
    let bytes = match engine.store().object_store().get(idx).await {
        Ok(r) => r.bytes().await.map_err(|e| store_err("get", e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store_err("get", e)),
    };
    if bytes.first() == Some(&b'{') {
        let p: Pin = serde_json::from_slice(&bytes).map_err(|e| HsmError::Metadata {
            key: idx.to_string(),
            field: "pin".into(),
            why: e.to_string(),
        })?;
        return Ok(Some(IndexRecord::Pin(p)));
    }
    Ok(ObjPath::parse(String::from_utf8_lossy(&bytes).as_ref())
        .ok()
        .map(IndexRecord::Key))
}

async fn pin_from_index(engine: &HsmEngine, fid: &Fid) -> Result<Option<Pin>> {
    Ok(match index_record(engine, fid).await? {
        Some(IndexRecord::Pin(p)) => Some(p),
        _ => None,
    })
}

/// Every pin in the FID index (for gc).
pub async fn indexed_pins(engine: &HsmEngine) -> Result<Vec<Pin>> {
    use futures::TryStreamExt;
    let root = engine.store().fid_index_root();
    let store = engine.store().object_store().clone();
    let metas: Vec<_> =
        store
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| HsmError::Store {
                store: engine.store().name().to_string(),
                op: "list",
                key: root.to_string(),
                source: Box::new(e),
            })?;
    let mut pins = Vec::new();
    for m in metas {
        if let Some(IndexRecord::Pin(p)) = record_at(engine, &m.location).await? {
            pins.push(p);
        }
    }
    Ok(pins)
}

fn key_of_fid<C: Coordinator>(coord: &C, engine: &HsmEngine, fid: &Fid) -> Result<ObjPath> {
    let rel = coord
        .path_of(fid)
        .map_err(|e| HsmError::io(format!("fid {fid}"), e))?;
    engine.key_of(
        &engine
            .config()
            .root
            .join(rel.strip_prefix("/").unwrap_or(&rel)),
    )
}

async fn remove<C: Coordinator>(
    coord: &Arc<C>,
    engine: &Arc<HsmEngine>,
    item: &ActionItem,
) -> Result<u64> {
    match index_record(engine, &item.fid).await? {
        // Only this FID's own version goes; a key that now holds another file's version is
        // left alone (gc frees this one's once nothing pins it).
        Some(IndexRecord::Pin(p)) => {
            let key = p.object_key()?;
            if let Some(info) = engine.store().head(&key).await?
                && info.version_id(&key) == p.version
            {
                engine.store().delete(&key).await?;
            }
        }
        Some(IndexRecord::Key(key)) => engine.store().delete(&key).await?,
        None => {
            let key = {
                let (coord, engine, fid) = (coord.clone(), engine.clone(), item.fid);
                crate::engine::blocking(move || key_of_fid(&*coord, &engine, &fid)).await?
            };
            engine.store().preserve(&key, None).await?;
            engine.store().delete(&key).await?;
        }
    }
    let idx = fid_key(engine, &item.fid);
    match engine.store().object_store().delete(&idx).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(key = %idx, error = %e, "cannot delete the fid record"),
    }
    Ok(0)
}

/// Runs the copytool until `stop` resolves.
pub async fn run(
    api: LustreApi,
    engine: Arc<HsmEngine>,
    mnt: &Path,
    archives: &[u32],
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let api = Arc::new(api);
    let ct = api
        .register(mnt, archives)
        .map_err(|e| HsmError::io(mnt, e))?;
    let pollfd = ct.fd().map_err(|e| HsmError::io(mnt, e))?;
    let coord = Arc::new(Lustre {
        ct,
        api,
        mnt: mnt.to_path_buf(),
    });
    tracing::info!(mnt = %mnt.display(), ?archives, "copytool registered");
    let mut disp = Dispatcher::new(coord.clone(), engine);
    // The copytool descriptor (a pipe from the kernel, registered non-blocking) wakes
    // us through the runtime's reactor.
    // SAFETY: the descriptor belongs to the registered copytool, which `CopytoolFd` keeps
    // alive (it holds the coordinator) for as long as the registration lasts.
    let ready = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            CopytoolFd {
                _registered: coord.clone(),
                fd: pollfd,
            },
            tokio::io::Interest::READABLE,
        )
    }
    .map_err(|e| HsmError::io(mnt, e.into()))?;
    tokio::pin!(stop);
    loop {
        let mut guard = tokio::select! {
            _ = &mut stop => break,
            g = ready.readable() => g.map_err(|e| HsmError::io(mnt, e))?,
        };
        // Receive every waiting list and begin its actions on a blocking thread: a list's
        // buffer lives only until the next receive, and beginning opens files.
        let steps = {
            let (coord, mnt) = (coord.clone(), mnt.to_path_buf());
            crate::engine::blocking(move || {
                let mut steps = Vec::new();
                while let Some((bytes, base)) = coord.ct.recv().map_err(|e| HsmError::io(&mnt, e))? {
                    match hal::parse(&bytes) {
                        Ok(list) => {
                            tracing::info!(items = list.items.len(), archive_id = list.archive_id, fs = %list.fsname, "action list");
                            steps.extend(begin_list(&*coord, &list, base as usize));
                        }
                        Err(e) => tracing::error!(error = %e, "unreadable action list; skipped"),
                    }
                }
                Ok(steps)
            })
            .await?
        };
        // Drained to EAGAIN: the next list raises readiness again.
        guard.clear_ready();
        disp.apply(steps);
    }
    tracing::info!("copytool stopping; waiting for running actions");
    disp.drain().await;
    Ok(())
}

/// The copytool's descriptor, owned by liblustreapi: holding the coordinator keeps the
/// copytool registered, so the descriptor open.
struct CopytoolFd {
    _registered: Arc<Lustre>,
    fd: RawFd,
}

impl std::os::fd::AsRawFd for CopytoolFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}
