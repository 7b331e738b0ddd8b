//! Restore on access for the `local` backend: a fanotify pre-content listener.
//!
//! The daemon puts a filesystem mark for `FAN_PRE_ACCESS` (Linux 6.14+, ext4/btrfs/xfs) on
//! the filesystem of the namespace root. The kernel then holds every read of a marked file
//! until we answer:
//! - a file outside the root, or one that is not released: `FAN_ALLOW` at once. Each read
//!   chunk of a present file costs one quick answer: an `fstat` and an xattr read through
//!   the event's own descriptor, in one blocking step (so it is that inode's state, never
//!   that of whatever its name leads to by then; a name is looked up only for a restore). We put
//!   no ignore mark on the inode of a present file: a release relies on every access of the
//!   file raising an event (below), and an ignore mark would let a write slip past it
//!   between the release's intent and its punch. (On the 6.18 kernel of this workplace the
//!   ignore marks we used to ask for did not stop later events anyway.)
//! - a released file: its data is fetched with ranged GETs and written **in place** with
//!   `pwrite` through the event's own descriptor (whose I/O raises no events), the checksum
//!   verified, the stub's mtime put back and the state flipped to archived-and-present;
//!   then `FAN_ALLOW`, and the inode gets an ignore mark. The reader, which was blocked the
//!   whole time, reads the restored bytes. (The CLI's restore renames a temporary file over
//!   the stub, which a reader that already has the stub open would never see.)
//! - on an error, or when its state cannot be read: `FAN_DENY` with `EIO` (or a plain
//!   `FAN_DENY` on kernels without deny errnos), logged, and the file stays released, so
//!   the next read tries again.
//! - a file **being released** (its HSM record carries a `releasing` marker: see the
//!   `local` backend's HSM module doc for the whole protocol):
//!   - the releaser's own access (its hole punch: the event's thread is the marker's, in
//!     our pid namespace, and the releaser still holds its lock on the file): `FAN_ALLOW`
//!     at once, no restore. The group reports thread IDs (`FAN_REPORT_TID`), so another
//!     thread of the releasing process is not the releaser;
//!   - anyone else's access (read, write, fallocate, truncate, mmap): held, the
//!     record read again every [`RELEASE_POLL`], until the marker is gone; then as any
//!     access (restored if released, allowed if the release was rolled back). A writer
//!     mid-release thus writes into the restored file, never into one punched after its
//!     write. Held at most [`DaemonConfig::restore_timeout`], then denied with `EBUSY`;
//!   - a marker whose releaser no longer holds its lock (it died midway): the file is
//!     treated as released and restored, never as present (the punch may have happened);
//!   - a marker from another pid namespace, whose thread IDs we cannot compare: denied with
//!     `EBUSY` at once while its releaser lives (its own punch included, so such a release
//!     fails and puts the old record back: run releases in the daemon's pid namespace).
//!
//!   A release without a daemon keeps its write lease for the whole release instead. The
//!   kernel opens an event's descriptor for us when we read the event, which breaks a
//!   lease and waits out `lease-break-time` (45 s): that is why a watched release drops
//!   its lease before it punches.
//!
//! # Bounds
//! - **Restores**: at most [`DaemonConfig::restores`] at once. Several reads of one file
//!   wait for the same restore; answers to files that need none never wait for restores.
//! - **Held events**: every event read is a descriptor in this process until it is answered.
//!   At most [`DaemonConfig::max_held_events`] are held (by default derived from
//!   `RLIMIT_NOFILE`, whose soft limit is first raised to the hard one). The reader threads
//!   take a slot per event *before* they read, and size each read so it cannot return more
//!   events than slots; when none is free they stop reading, and further events wait in the
//!   kernel's queue, not as descriptors here. (While every slot holds a read of a file
//!   being restored, reads of other files wait for a slot too: the kernel's queue is one.)
//! - **Time**: each restore, with its wait for a restore slot, has
//!   [`DaemonConfig::restore_timeout`] (10 minutes by default); then its reads are denied
//!   with `EIO` (the kernel accepts no `ETIMEDOUT` here) and their descriptors closed. A
//!   restore cut off leaves the file released (the state is flipped last).
//! - **Errors** of `read` on the group are retried, never the end of a reader: `EMFILE`,
//!   `ENFILE`, `ENOMEM` with a backoff up to one second; the errors of one event's open
//!   (the kernel denied that event already, e.g. `EROFS` for a read through a read-only
//!   mount) at once. Only a broken group descriptor (`EBADF`, `EFAULT`, a persistent
//!   `EINVAL`) or a panicking reader is fatal: then the daemon dies whole and loudly. It
//!   logs, drops its watch lock, denies every read it holds with `EIO`, closes the group,
//!   and [`RestoreDaemon::run_until`] (so `lustrekit hsm restore-daemon`, non-zero exit)
//!   returns the error, for a supervisor to restart it. There is no state where the group
//!   is open and nobody reads it.
//! - Several reader threads (each read takes at most a few events): the kernel opens an
//!   event's descriptor inside our `read`, and that open can block (below), so one stuck
//!   `read` does not stop the others.
//!
//! # The watch lock
//! Once its mark is in place the daemon holds the shared watch lock of its filesystem
//! ([`crate::guard`]), which is what lets `release` go on and keeps `hsm state` quiet. It
//! drops the lock before it closes its group. Several daemons may watch one filesystem at
//! once (each group is asked in turn): a restart starts the new daemon, then stops the old.
//! On stop, a daemon serves on for up to [`DaemonConfig::stop_grace`] while restores are in
//! flight, drops its lock, serves on (within the same grace, at least
//! [`MIN_RELEASE_WAIT`]) while releases that counted on a daemon are in flight
//! ([`guard::releases_in_flight_in`]), then stops reading, denies what it still holds, and
//! closes.
//!
//! # Known limitations
//! - **An unguarded release racing a daemon's start** (`--unguarded`, probed before the
//!   daemon watched) keeps its lease across the punch, and stalls for `lease-break-time`
//!   once; the daemon then restores the file before the punch goes on, and the file ends
//!   released all the same.
//! - **Read-only mounts.** Event descriptors are opened read-write (the restore writes
//!   through them), which the kernel cannot do for an access through a read-only mount of
//!   the filesystem: such reads are denied (`EPERM`) while the daemon runs.
//! - **A SIGKILL** closes the group in the kernel, which lets the reads it held go on: a read
//!   of a released file in that instant sees zeros. See [`crate::guard`] for what guards it.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, Semaphore, watch};

use backend::{HsmAccessState, ReleaseInProgress};

use crate::engine::HsmEngine;
use crate::error::{HsmError, Result};
use crate::fanotify::{self as fan, Event, Group};
use crate::guard::{self, WatchLock};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Restores at once.
    pub restores: usize,
    /// Events (each an open descriptor) held at once; 0 derives it from `RLIMIT_NOFILE`.
    pub max_held_events: usize,
    /// How long one restore (with its wait for a restore slot) may take before its reads
    /// are denied with `EIO`.
    pub restore_timeout: Duration,
    /// Threads reading the fanotify group.
    pub readers: usize,
    /// On stop, how long restores in flight may finish while the daemon keeps serving.
    pub stop_grace: Duration,
    /// A read of a released file fails at once with `EAGAIN` while its restore runs in the
    /// background, instead of waiting for it (a workload that would rather retry than
    /// block). At most [`DaemonConfig::restores`] such restores run; a read when none is
    /// free fails with `EAGAIN` too and starts nothing.
    pub fail_fast: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            restores: 4,
            max_held_events: 0,
            restore_timeout: Duration::from_secs(600),
            readers: 4,
            stop_grace: Duration::from_secs(30),
            fail_fast: false,
        }
    }
}

/// Counters of a running daemon.
#[derive(Debug, Default, Serialize)]
pub struct DaemonStats {
    pub events: AtomicU64,
    pub allowed_at_once: AtomicU64,
    pub restored: AtomicU64,
    pub denied: AtomicU64,
    pub timed_out: AtomicU64,
    /// Failed `read`s of the group (each retried).
    pub read_errors: AtomicU64,
    /// The most events held at once.
    pub held_peak: AtomicU64,
    /// Accesses of a releaser to the file it releases (its punch), allowed at once.
    pub releaser_allowed: AtomicU64,
    /// Other accesses held while a release was in progress.
    pub held_for_release: AtomicU64,
}

/// The smallest number of slots a read is made with: a pre-content event (metadata and a
/// range record) is 48 bytes.
const MIN_READ_SLOTS: usize = 2;
/// The most events one read may return.
const MAX_READ_SLOTS: usize = 8;
/// How long a reader waits (for a slot or an event) before it looks at the stop flag.
const READER_TICK_MS: i32 = 250;
/// How long the check of one event (path, state) may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// The most events held when the descriptor limit would allow more.
const HELD_CEILING: usize = 16_384;
/// How often the record of a file being released is read again while an access is held.
pub const RELEASE_POLL: Duration = Duration::from_millis(20);
/// On stop, the least time given to releases in flight.
pub const MIN_RELEASE_WAIT: Duration = Duration::from_secs(5);
/// `FAN_REPORT_TID`: events name the thread, not the process.
const FAN_REPORT_TID: u32 = 0x0000_0100;

/// A counting semaphore for the reader threads (plain threads, no runtime).
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
    cap: usize,
}

impl Slots {
    fn new(cap: usize) -> Self {
        Self {
            free: Mutex::new(cap),
            cv: Condvar::new(),
            cap,
        }
    }

    /// Waits up to `wait` until `min` slots are free, then takes up to `max`; 0 on timeout.
    fn take(&self, min: usize, max: usize, wait: Duration) -> usize {
        let min = min.min(self.cap).max(1);
        let Ok(guard) = self.free.lock() else {
            return 0;
        };
        let Ok((mut free, _)) = self.cv.wait_timeout_while(guard, wait, |f| *f < min) else {
            return 0;
        };
        if *free < min {
            return 0;
        }
        let n = (*free).min(max);
        *free -= n;
        n
    }

    fn give(&self, n: usize) {
        if n == 0 {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            *free = (*free + n).min(self.cap);
        }
        self.cv.notify_all();
    }

    fn held(&self) -> usize {
        self.free
            .lock()
            .map(|f| self.cap.saturating_sub(*f))
            .unwrap_or(0)
    }
}

/// What we answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    /// `EIO`.
    Deny,
    /// `EBUSY`: the file is being released.
    Busy,
    /// `EAGAIN`: the file is being restored (fail-fast reads).
    Again,
}

/// The group, the events not answered yet, and the answers.
struct Responder {
    /// `None` once closed (the descriptor closes when the reader threads let go of it).
    group: RwLock<Option<Arc<Group>>>,
    /// Descriptors of events read and not answered yet.
    unanswered: Mutex<HashSet<RawFd>>,
    slots: Slots,
    deny_errno: AtomicBool,
    stats: DaemonStats,
}

impl Responder {
    fn group(&self) -> Option<Arc<Group>> {
        self.group.read().ok().and_then(|g| g.clone())
    }

    fn send(&self, group: &Group, fd: RawFd, v: Verdict) {
        let res = match v {
            Verdict::Allow => group.respond(fd, fan::FAN_ALLOW),
            Verdict::Busy | Verdict::Again if self.deny_errno.load(Ordering::Relaxed) => {
                let errno = if v == Verdict::Again {
                    libc::EAGAIN
                } else {
                    libc::EBUSY
                };
                match group.respond(fd, fan::fan_deny_errno(errno)) {
                    // A kernel that takes no EBUSY (or no deny errnos): as a plain denial.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        return self.send(group, fd, Verdict::Deny);
                    }
                    other => {
                        self.stats.denied.fetch_add(1, Ordering::Relaxed);
                        other
                    }
                }
            }
            Verdict::Deny | Verdict::Busy | Verdict::Again => {
                self.stats.denied.fetch_add(1, Ordering::Relaxed);
                if self.deny_errno.load(Ordering::Relaxed) {
                    match group.respond(fd, fan::fan_deny_errno(libc::EIO)) {
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                            // A kernel without deny errnos: plain denials from now on.
                            self.deny_errno.store(false, Ordering::Relaxed);
                            group.respond(fd, fan::FAN_DENY)
                        }
                        other => other,
                    }
                } else {
                    group.respond(fd, fan::FAN_DENY)
                }
            }
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, verdict = ?v, "fanotify response failed");
        }
    }

    /// Answers one event, once: an event already answered (by [`Self::deny_all_and_close`])
    /// is left alone.
    fn finish(&self, fd: RawFd, v: Verdict) {
        let Ok(mut open) = self.unanswered.lock() else {
            return;
        };
        if !open.remove(&fd) {
            return;
        }
        if let Some(g) = self.group() {
            self.send(&g, fd, v);
        }
    }

    /// Denies every event still held, then closes the group (for good).
    fn deny_all_and_close(&self) {
        let Ok(mut open) = self.unanswered.lock() else {
            return;
        };
        if let Some(g) = self.group() {
            for fd in open.drain() {
                self.send(&g, fd, Verdict::Deny);
            }
        }
        open.clear();
        if let Ok(mut g) = self.group.write() {
            g.take();
        }
    }
}

/// One event read and not answered yet. It holds one slot, and is denied (`EIO`) if it is
/// dropped unanswered (a panic, a cancelled task): a held read never waits for nothing.
struct Pending {
    fd: Option<OwnedFd>,
    raw: RawFd,
    mask: u64,
    pid: i32,
    range: Option<(u64, u64)>,
    resp: Arc<Responder>,
    /// When the event was read (a held read's wait is measured from here).
    received: Instant,
}

impl Pending {
    /// Takes over an event (and one slot). Events without a descriptor need no answer.
    fn new(ev: Event, resp: &Arc<Responder>) -> Option<Self> {
        let Some(fd) = ev.fd else {
            resp.slots.give(1);
            return None;
        };
        let raw = fd.as_raw_fd();
        if let Ok(mut open) = resp.unanswered.lock() {
            open.insert(raw);
        }
        let held = resp.slots.held() as u64;
        resp.stats.held_peak.fetch_max(held, Ordering::Relaxed);
        Some(Self {
            fd: Some(fd),
            raw,
            mask: ev.mask,
            pid: ev.pid,
            range: ev.range,
            resp: resp.clone(),
            received: Instant::now(),
        })
    }

    fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    fn answer(mut self, v: Verdict) {
        if let Some(fd) = self.fd.take() {
            self.resp.finish(self.raw, v);
            drop(fd);
        }
    }

    fn allow(self) {
        self.answer(Verdict::Allow)
    }

    fn deny(self) {
        self.answer(Verdict::Deny)
    }

    fn busy(self) {
        self.answer(Verdict::Busy)
    }

    fn again(self) {
        self.answer(Verdict::Again)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            tracing::warn!(
                pid = self.pid,
                "a held read was dropped unanswered; denied (EIO)"
            );
            self.resp.finish(self.raw, Verdict::Deny);
            drop(fd);
        }
        self.resp.slots.give(1);
    }
}

type InFlight = Mutex<HashMap<(u64, u64), Vec<Pending>>>;

struct Shared {
    engine: Arc<HsmEngine>,
    root: PathBuf,
    /// The root, open: files read through other mounts are named through its mount (see
    /// [`fan::fd_path_via`]).
    root_fd: std::os::fd::OwnedFd,
    resp: Arc<Responder>,
    restore_permits: Arc<Semaphore>,
    restore_timeout: Duration,
    /// See [`DaemonConfig::fail_fast`].
    fail_fast: bool,
    in_flight: InFlight,
    in_flight_changed: Notify,
    /// Readers stop reading.
    stop: AtomicBool,
    watch: Mutex<Option<WatchLock>>,
    /// Where the watch and release locks live.
    run_dir: PathBuf,
    /// Our pid namespace (the inode number of `/proc/self/ns/pid`), 0 if unknown.
    pid_ns: u64,
    /// Set (with the reason) when the daemon died.
    failed: watch::Sender<Option<String>>,
}

/// What an access needs.
#[derive(Debug)]
enum Access {
    /// Nothing: allowed at once.
    Allow,
    /// The releaser's own access to the file it releases: allowed at once, no restore.
    Releaser,
    /// Someone else's access to a file being released: held until the release is done.
    MidRelease(ReleaseInProgress),
    /// A release from another pid namespace: denied while it lasts.
    OtherNamespace(ReleaseInProgress),
    /// Released (or a release died midway): restore this file (path, identity).
    Restore(PathBuf, (u64, u64)),
}

/// The inode number of our pid namespace, 0 if it cannot be read.
fn own_pid_ns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// A running restore-on-access daemon.
pub struct RestoreDaemon {
    shared: Arc<Shared>,
    readers: Vec<std::thread::JoinHandle<()>>,
    stop_grace: Duration,
    held_cap: usize,
}

/// Raises the soft descriptor limit to the hard one and returns it.
fn raise_nofile() -> usize {
    // SAFETY: a zeroed rlimit is a valid out-buffer.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
    }
    usize::try_from(rl.rlim_cur).unwrap_or(usize::MAX)
}

/// How many events may be held: half of what the descriptor limit leaves after a reserve
/// for the restores (their own descriptors, store connections) and the rest of the process;
/// the other half covers the descriptor each event's check opens.
fn held_cap(cfg: &DaemonConfig, nofile: usize) -> usize {
    let reserve = 64 + 8 * cfg.restores;
    let budget = (nofile.saturating_sub(reserve) / 2).clamp(MIN_READ_SLOTS, HELD_CEILING);
    if cfg.max_held_events == 0 {
        return budget;
    }
    if cfg.max_held_events > budget {
        tracing::warn!(
            asked = cfg.max_held_events,
            allowed = budget,
            nofile,
            "max held events above what the descriptor limit allows; lowered"
        );
    }
    cfg.max_held_events.clamp(MIN_READ_SLOTS, budget)
}

impl RestoreDaemon {
    /// Marks the root's filesystem, takes its watch lock and starts answering (call it
    /// inside a tokio runtime). `Err(Unsupported)` says why the kernel refused (not root,
    /// a kernel before 6.14, a filesystem without pre-content events).
    pub fn start(engine: Arc<HsmEngine>, cfg: DaemonConfig) -> Result<Self> {
        let rt = tokio::runtime::Handle::try_current().map_err(|e| {
            HsmError::Unsupported(format!("the restore daemon needs a tokio runtime: {e}"))
        })?;
        let root = engine.config().root.clone();
        let group = Group::init(
            fan::FAN_CLASS_PRE_CONTENT
                | FAN_REPORT_TID
                | fan::FAN_CLOEXEC
                | fan::FAN_NONBLOCK
                | fan::FAN_UNLIMITED_QUEUE
                | fan::FAN_UNLIMITED_MARKS,
            (libc::O_RDWR | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32,
        )
        .map_err(|e| {
            HsmError::Unsupported(format!(
                "fanotify_init(FAN_CLASS_PRE_CONTENT): {e} (needs CAP_SYS_ADMIN)"
            ))
        })?;
        group
            .mark_path(
                fan::FAN_MARK_ADD | fan::FAN_MARK_FILESYSTEM,
                fan::FAN_PRE_ACCESS,
                &root,
            )
            .map_err(|e| {
                HsmError::Unsupported(format!(
                    "fanotify_mark(FAN_PRE_ACCESS) on {}: {e} (needs Linux 6.14+ and a filesystem with pre-content events, such as ext4 or btrfs)",
                    root.display()
                ))
            })?;
        // The mark is in place: from now on reads are held, so we may say we watch.
        let run_dir = guard::run_dir();
        let lock = guard::fs_key_of_path(&root)
            .and_then(|key| {
                guard::ReleaseHold::prepare(&run_dir, key)?;
                WatchLock::acquire(&run_dir, key)
            })
            .map_err(|e| {
                HsmError::io(
                    &run_dir,
                    std::io::Error::new(e.kind(), format!("taking the watch lock: {e}")),
                )
            })?;
        let nofile = raise_nofile();
        let cap = held_cap(&cfg, nofile);
        let group = Arc::new(group);
        let resp = Arc::new(Responder {
            group: RwLock::new(Some(group.clone())),
            unanswered: Mutex::new(HashSet::new()),
            slots: Slots::new(cap),
            deny_errno: AtomicBool::new(true),
            stats: DaemonStats::default(),
        });
        let root_fd = nix::fcntl::open(
            &root,
            // Not O_PATH: open_by_handle_at takes no O_PATH descriptor as its mount.
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| HsmError::io(&root, e.into()))?;
        let shared = Arc::new(Shared {
            engine,
            root,
            root_fd,
            resp,
            restore_permits: Arc::new(Semaphore::new(cfg.restores.max(1))),
            restore_timeout: cfg.restore_timeout,
            fail_fast: cfg.fail_fast,
            in_flight: Mutex::new(HashMap::new()),
            in_flight_changed: Notify::new(),
            stop: AtomicBool::new(false),
            watch: Mutex::new(Some(lock)),
            run_dir,
            pid_ns: own_pid_ns(),
            failed: watch::channel(None).0,
        });
        let mut readers = Vec::new();
        for i in 0..cfg.readers.max(1) {
            let (shared2, group2, rt2) = (shared.clone(), group.clone(), rt.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("hsm-restore-events-{i}"))
                .spawn(move || reader_thread(shared2, group2, rt2));
            match spawned {
                Ok(h) => readers.push(h),
                Err(e) => {
                    shared.die(format!("cannot start a reader thread: {e}"));
                    return Err(HsmError::Unsupported(format!(
                        "cannot start a reader thread: {e}"
                    )));
                }
            }
        }
        drop(group);
        tracing::info!(
            root = %shared.root.display(),
            held_events = cap,
            nofile,
            restores = cfg.restores.max(1),
            restore_timeout_s = cfg.restore_timeout.as_secs(),
            watch_lock = %shared.watch.lock().ok().and_then(|w| w.as_ref().map(|w| w.path().display().to_string())).unwrap_or_default(),
            "restore-on-access daemon started"
        );
        Ok(Self {
            shared,
            readers,
            stop_grace: cfg.stop_grace,
            held_cap: cap,
        })
    }

    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    pub fn stats(&self) -> &DaemonStats {
        &self.shared.resp.stats
    }

    /// The most events this daemon holds at once.
    pub fn held_cap(&self) -> usize {
        self.held_cap
    }

    /// Resolves with the reason once the daemon has died (it has then dropped its watch
    /// lock, denied what it held, and closed its group).
    pub async fn failed(&self) -> String {
        let mut rx = self.shared.failed.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return "the restore daemon is gone".into();
            }
        }
    }

    /// Serves until `shutdown` resolves (then stops cleanly: `Ok`), or until the daemon
    /// dies (`Err`, for the process to exit non-zero and a supervisor to restart it).
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let failure = tokio::select! {
            _ = shutdown => None,
            why = self.failed() => Some(why),
        };
        match failure {
            None => {
                self.stop().await;
                Ok(())
            }
            Some(why) => {
                self.stop().await;
                Err(HsmError::Unsupported(format!("restore daemon died: {why}")))
            }
        }
    }

    /// Stops: serves on while restores are in flight (up to the stop grace), then stops
    /// reading, drops the watch lock, denies what it still holds (`EIO`) and closes the
    /// group.
    pub async fn stop(mut self) {
        let deadline = Instant::now() + self.stop_grace;
        loop {
            let notified = self.shared.in_flight_changed.notified();
            let busy = self
                .shared
                .in_flight
                .lock()
                .map(|m| !m.is_empty())
                .unwrap_or(false);
            if !busy || Instant::now() >= deadline || self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
        }
        // No release may count on us from here; those that did finish first (their punch
        // needs our answer, and a writer they hold must not be let go unwatched).
        let lock = self.shared.watch.lock().ok().and_then(|mut w| w.take());
        if let Some(lock) = lock {
            let key = lock.key();
            tracing::info!(lock = %lock.path().display(), why = "stopping", "restore daemon no longer watches");
            drop(lock);
            let until = deadline.max(Instant::now() + MIN_RELEASE_WAIT);
            while !self.shared.stop.load(Ordering::Relaxed)
                && guard::releases_in_flight_in(&self.shared.run_dir, key).unwrap_or(false)
            {
                if Instant::now() >= until {
                    tracing::warn!(
                        "releases still in flight at the end of the stop grace; stopping"
                    );
                    break;
                }
                tokio::time::sleep(RELEASE_POLL).await;
            }
        }
        self.shared.stop.store(true, Ordering::Relaxed);
        // Readers notice within a tick, unless the kernel holds one inside an open (a
        // lease break): then we go on without it; it exits when the open ends.
        let readers = std::mem::take(&mut self.readers);
        let joined = tokio::task::spawn_blocking(move || {
            for r in readers {
                let _ = r.join();
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(2), joined).await;
        self.shared.close("stopped");
        let s = &self.shared.resp.stats;
        tracing::info!(
            root = %self.shared.root.display(),
            events = s.events.load(Ordering::Relaxed),
            allowed_at_once = s.allowed_at_once.load(Ordering::Relaxed),
            restored = s.restored.load(Ordering::Relaxed),
            denied = s.denied.load(Ordering::Relaxed),
            timed_out = s.timed_out.load(Ordering::Relaxed),
            read_errors = s.read_errors.load(Ordering::Relaxed),
            held_peak = s.held_peak.load(Ordering::Relaxed),
            held_cap = self.held_cap,
            releaser_allowed = s.releaser_allowed.load(Ordering::Relaxed),
            held_for_release = s.held_for_release.load(Ordering::Relaxed),
            "restore-on-access daemon stopped"
        );
    }

    /// Dies as on an unrecoverable error: drops the watch lock, denies every read it holds
    /// (`EIO`), closes the group, and [`Self::failed`] / [`Self::run_until`] report `why`.
    pub fn die_now(&self, why: impl Into<String>) {
        self.shared.die(why.into());
    }
}

impl Drop for RestoreDaemon {
    fn drop(&mut self) {
        // Stopped or not, a dropped daemon watches nothing.
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.close("dropped");
    }
}

/// What to do after a failed `read` of the group.
#[derive(Debug, PartialEq, Eq)]
enum OnReadError {
    /// The kernel denied one event it could not open for us; read on at once.
    Next,
    /// Out of descriptors or memory: wait, then read on.
    Backoff,
    /// A read buffer too small for an event: read on with a larger one.
    Grow,
    /// The group's descriptor is broken.
    Fatal,
}

fn classify(e: &std::io::Error) -> OnReadError {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS) => OnReadError::Backoff,
        Some(libc::EINVAL) => OnReadError::Grow,
        Some(libc::EBADF | libc::EFAULT) => OnReadError::Fatal,
        _ => OnReadError::Next,
    }
}

fn reader_thread(shared: Arc<Shared>, group: Arc<Group>, rt: tokio::runtime::Handle) {
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_loop(&shared, &group, &rt)
    }));
    drop(group);
    let why = match res {
        Ok(Ok(())) => return,
        Ok(Err(why)) => why,
        Err(panic) => format!(
            "reader thread panicked: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        ),
    };
    shared.die(why);
}

fn read_loop(
    shared: &Arc<Shared>,
    group: &Group,
    rt: &tokio::runtime::Handle,
) -> std::result::Result<(), String> {
    let resp = &shared.resp;
    let mut buf = vec![0u8; 4096];
    let mut min_slots = MIN_READ_SLOTS;
    let mut backoff = Duration::from_millis(10);
    let tick = Duration::from_millis(READER_TICK_MS as u64);
    while !shared.stop.load(Ordering::Relaxed) {
        let k = resp
            .slots
            .take(min_slots, MAX_READ_SLOTS.max(min_slots), tick);
        if k == 0 {
            continue;
        }
        let len = (k * fan::MIN_EVENT_LEN).min(buf.len());
        match group.read_nonblock(&mut buf[..len]) {
            Ok(None) => {
                resp.slots.give(k);
                if let Err(e) = group.wait_readable(READER_TICK_MS)
                    && classify(&e) == OnReadError::Fatal
                {
                    return Err(format!("poll of the fanotify group failed: {e}"));
                }
            }
            Ok(Some(events)) => {
                backoff = Duration::from_millis(10);
                min_slots = MIN_READ_SLOTS;
                let n = events.len();
                // The buffer holds at most k events; give back the slots not used.
                resp.slots.give(k.saturating_sub(n));
                for ev in events {
                    if let Some(p) = Pending::new(ev, resp) {
                        let shared = shared.clone();
                        rt.spawn(async move { shared.handle(p).await });
                    }
                }
            }
            Err(e) => {
                resp.slots.give(k);
                resp.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                match classify(&e) {
                    OnReadError::Next => {
                        let hint = if e.raw_os_error() == Some(libc::EROFS) {
                            " (an access through a read-only mount: event descriptors are opened read-write)"
                        } else {
                            ""
                        };
                        tracing::warn!(error = %e, "fanotify read failed; the kernel denied that one access{hint}; reading on");
                    }
                    OnReadError::Backoff => {
                        tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, held = resp.slots.held(), "fanotify read failed (out of descriptors or memory; the kernel denied that one access); retrying");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    OnReadError::Grow if len < buf.len() && min_slots < resp.slots.cap => {
                        tracing::warn!(error = %e, len, "fanotify event larger than the read buffer; reading with a larger one");
                        min_slots = (buf.len() / fan::MIN_EVENT_LEN).min(resp.slots.cap);
                    }
                    OnReadError::Grow | OnReadError::Fatal => {
                        return Err(format!("fanotify read failed: {e}"));
                    }
                }
            }
        }
    }
    Ok(())
}

impl Shared {
    /// Stops serving for good: drops the watch lock first (no release may count on us any
    /// more), then denies what is held and closes the group.
    fn close(&self, why: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let lock = self.watch.lock().ok().and_then(|mut w| w.take());
        if let Some(lock) = lock {
            tracing::info!(lock = %lock.path().display(), why, "restore daemon no longer watches");
            drop(lock);
        }
        self.resp.deny_all_and_close();
    }

    /// Dies whole and loudly.
    fn die(&self, why: String) {
        tracing::error!(root = %self.root.display(), error = %why, "restore daemon dies: it stops watching, denies the reads it holds (EIO) and closes its fanotify group; restart it");
        self.close("died");
        self.failed.send_replace(Some(why));
    }

    async fn handle(self: Arc<Self>, p: Pending) {
        self.resp.stats.events.fetch_add(1, Ordering::Relaxed);
        if p.mask & fan::FAN_PRE_ACCESS == 0 {
            return p.allow();
        }
        // Held while the file is being released by someone else, at most the restore
        // timeout.
        let hold_until = Instant::now() + self.restore_timeout;
        let mut held = false;
        let (path, id) = loop {
            let checked = tokio::time::timeout(CHECK_TIMEOUT, self.check(&p)).await;
            match checked {
                Ok(Ok(Access::Allow)) => {
                    self.resp
                        .stats
                        .allowed_at_once
                        .fetch_add(1, Ordering::Relaxed);
                    return p.allow();
                }
                Ok(Ok(Access::Releaser)) => {
                    self.resp
                        .stats
                        .releaser_allowed
                        .fetch_add(1, Ordering::Relaxed);
                    return p.allow();
                }
                Ok(Ok(Access::MidRelease(r))) => {
                    if !held {
                        held = true;
                        self.resp
                            .stats
                            .held_for_release
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            pid = p.pid,
                            releaser = r.tid,
                            "access held: the file is being released"
                        );
                    }
                    if self.resp.group().is_none() {
                        // Closed: the event was denied with the rest (this answer is none).
                        return p.busy();
                    }
                    if Instant::now() >= hold_until {
                        self.resp.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            pid = p.pid,
                            releaser_pid = r.pid,
                            releaser_tid = r.tid,
                            "a release of the accessed file did not finish within the restore timeout; access denied (EBUSY)"
                        );
                        return p.busy();
                    }
                    tokio::time::sleep(RELEASE_POLL).await;
                }
                Ok(Ok(Access::OtherNamespace(r))) => {
                    tracing::error!(
                        pid = p.pid,
                        releaser_pid = r.pid,
                        "the accessed file is being released from another pid namespace, whose threads the daemon cannot tell apart; access denied (EBUSY): run releases in the daemon's pid namespace"
                    );
                    return p.busy();
                }
                Ok(Ok(Access::Restore(path, id))) => break (path, id),
                Ok(Err(e)) => {
                    tracing::error!(pid = p.pid, error = %e, "cannot tell whether a read file is released; read denied (EIO)");
                    return p.deny();
                }
                Err(_) => {
                    tracing::error!(
                        pid = p.pid,
                        "checking a read file took over {CHECK_TIMEOUT:?}; read denied (EIO)"
                    );
                    return p.deny();
                }
            }
        };
        if self.fail_fast {
            return self.restore_in_background(path, id, p);
        }
        // One restore per inode; later readers wait for it.
        {
            let Ok(mut inflight) = self.in_flight.lock() else {
                return p.deny();
            };
            if let Some(waiters) = inflight.get_mut(&id) {
                waiters.push(p);
                return;
            }
            inflight.insert(id, Vec::new());
        }
        tracing::info!(file = %path.display(), range = ?p.range, pid = p.pid, "restore on access");
        let started = Instant::now();
        let res = tokio::time::timeout(self.restore_timeout, async {
            let _permit = self
                .restore_permits
                .acquire()
                .await
                .map_err(|_| HsmError::Unsupported("daemon stopping".into()))?;
            self.restore(&path, &p).await
        })
        .await;
        let waiters = self
            .in_flight
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&id))
            .unwrap_or_default();
        self.in_flight_changed.notify_waiters();
        let metrics = self.engine.metrics();
        for held in std::iter::once(&p).chain(&waiters) {
            metrics.record_read_wait(held.received.elapsed());
        }
        match res {
            Ok(Ok(())) => {
                self.resp.stats.restored.fetch_add(1, Ordering::Relaxed);
                p.allow();
                for w in waiters {
                    w.allow();
                }
            }
            Ok(Err(e)) => {
                tracing::error!(file = %path.display(), error = %e, readers = waiters.len() + 1, "restore on access failed; reads denied (EIO)");
                p.deny();
                for w in waiters {
                    w.deny();
                }
            }
            Err(_) => {
                self.resp.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %path.display(), after_s = started.elapsed().as_secs(), readers = waiters.len() + 1, "restore on access timed out; reads denied (EIO), the file stays released");
                p.deny();
                for w in waiters {
                    w.deny();
                }
            }
        }
    }

    /// What an access needs (see the module doc).
    fn judge(&self, p: &Pending, a: &HsmAccessState) -> Access {
        match a.releasing {
            None if !a.state.flags.released => Access::Allow,
            None => Access::Restore(PathBuf::new(), (0, 0)),
            Some(r) if !r.releaser_alive => {
                tracing::warn!(
                    releaser_pid = r.pid,
                    started_ns = r.started_ns,
                    "a release died midway; the file is treated as released"
                );
                Access::Restore(PathBuf::new(), (0, 0))
            }
            Some(r) if r.pid_ns != 0 && self.pid_ns != 0 && r.pid_ns != self.pid_ns => {
                Access::OtherNamespace(r)
            }
            Some(r) if r.tid == p.pid => Access::Releaser,
            Some(r) => Access::MidRelease(r),
        }
    }

    /// What the access of an event needs; a restore names the released file's path and
    /// identity.
    async fn check(&self, p: &Pending) -> Result<Access> {
        let Some(fd) = p.fd() else {
            return Ok(Access::Allow);
        };
        // The event's descriptor stays open while `p` lives, which outlasts these blocking
        // steps unless this future is dropped, and then their answers are dropped with it.
        let raw = fd.as_raw_fd();
        // One blocking step answers the common case, a present file: its type and its state,
        // both read through the event's own descriptor, so from the very inode being read,
        // whatever its name is by now.
        let backend = Arc::clone(self.engine.backend());
        let (st, by_fd) = crate::engine::blocking(move || {
            // SAFETY: `raw` is the event's descriptor, open for as long as `p` is (above).
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
            let shown_as = || PathBuf::from(format!("fanotify event fd {raw}"));
            let st = nix::sys::stat::fstat(fd).map_err(|e| HsmError::io(shown_as(), e.into()))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Ok((st, None));
            }
            let state = backend.hsm_access_state_of_open(&shown_as(), fd)?;
            Ok((st, state))
        })
        .await?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(Access::Allow);
        }
        let present = |a: &HsmAccessState| a.releasing.is_none() && !a.state.flags.released;
        if by_fd.as_ref().is_some_and(present) {
            return Ok(Access::Allow);
        }
        let id = (st.st_dev, st.st_ino);
        // A restore needs the file's name. The path may move under us (a rename): one more
        // try on a fresh readlink.
        let mut last = None;
        for _ in 0..2 {
            let (mount, root) = (self.root_fd.as_raw_fd(), self.root.clone());
            let named = crate::engine::blocking(move || {
                Ok(match fan::fd_path(raw) {
                    Ok(p) if p.starts_with(&root) => Some(p),
                    // Read through another mount (a pod's bind mount, maybe in another
                    // mount namespace): named through ours.
                    _ => fan::fd_path_via(mount, raw)
                        .ok()
                        .filter(|p| p.starts_with(&root)),
                })
            })
            .await?;
            let Some(path) = named else {
                // Outside our root: another daemon's file, if anyone's.
                return Ok(Access::Allow);
            };
            match self.engine.backend().hsm_access_state(&path).await {
                // Only a backend that could not tell by the descriptor is taken at its
                // name's word for a present file: the descriptor said otherwise, and the
                // name may by now lead to another file.
                Ok(a) if by_fd.is_none() && present(&a) => {
                    return Ok(Access::Allow);
                }
                Ok(a) => {
                    // The name must still be the file accessed (a rename or a swapped
                    // directory could point it at another file, whose data we would write
                    // here, or whose release we would take for this one's).
                    use std::os::unix::fs::MetadataExt;
                    let probe = path.clone();
                    let named =
                        crate::engine::blocking(move || Ok(std::fs::symlink_metadata(&probe)))
                            .await?;
                    match named {
                        Ok(m) if (m.dev(), m.ino()) == id => {
                            return Ok(match self.judge(p, &a) {
                                Access::Restore(..) => Access::Restore(path, id),
                                other => other,
                            });
                        }
                        Ok(_) => {
                            last = Some(HsmError::refused(
                                &path,
                                "the name no longer leads to the file being read",
                            ))
                        }
                        Err(e) => last = Some(HsmError::io(&path, e)),
                    }
                }
                Err(e) => last = Some(HsmError::from(e)),
            }
        }
        Err(last.unwrap_or_else(|| HsmError::Unsupported("no state".into())))
    }

    /// Fail-fast: the read is denied with `EAGAIN` at once, and the file restored behind
    /// it (once per inode, within the restore slots) through a copy of the event's
    /// descriptor, whose writes raise no events.
    fn restore_in_background(self: Arc<Self>, path: PathBuf, id: (u64, u64), p: Pending) {
        // Fail-fast reads never wait for a slot: none free, nothing starts.
        let Ok(permit) = Arc::clone(&self.restore_permits).try_acquire_owned() else {
            return p.again();
        };
        {
            let Ok(mut inflight) = self.in_flight.lock() else {
                return p.deny();
            };
            if inflight.contains_key(&id) {
                return p.again();
            }
            inflight.insert(id, Vec::new());
        }
        let file = p.fd().and_then(|fd| fd.try_clone().ok());
        p.again();
        let Some(file) = file else {
            self.forget_in_flight(id);
            return;
        };
        tracing::info!(file = %path.display(), "restore on access (fail-fast: the read got EAGAIN)");
        let me = Arc::clone(&self);
        tokio::spawn(async move {
            let _permit = permit;
            let res = tokio::time::timeout(
                me.restore_timeout,
                me.engine
                    .restore_in_place(&path, Arc::new(std::fs::File::from(file))),
            )
            .await;
            me.forget_in_flight(id);
            match res {
                Ok(Ok(_)) => {
                    me.resp.stats.restored.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    tracing::error!(file = %path.display(), error = %e, "background restore failed; the next read tries again");
                }
                Err(_) => {
                    me.resp.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(file = %path.display(), "background restore timed out; the next read tries again");
                }
            }
        });
    }

    fn forget_in_flight(&self, id: (u64, u64)) {
        if let Ok(mut inflight) = self.in_flight.lock() {
            inflight.remove(&id);
        }
        self.in_flight_changed.notify_waiters();
    }

    async fn restore(&self, path: &Path, p: &Pending) -> Result<()> {
        let fd = p
            .fd()
            .ok_or_else(|| HsmError::Unsupported("event already answered".into()))?;
        let file = fd
            .try_clone()
            .map(std::fs::File::from)
            .map_err(|e| HsmError::io(path, e))?;
        self.engine
            .restore_in_place(path, Arc::new(file))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_bound_and_return() {
        let s = Slots::new(5);
        assert_eq!(s.take(2, 8, Duration::ZERO), 5);
        assert_eq!(s.held(), 5);
        assert_eq!(s.take(2, 8, Duration::from_millis(1)), 0);
        s.give(3);
        assert_eq!(s.take(2, 2, Duration::ZERO), 2);
        assert_eq!(s.take(2, 8, Duration::ZERO), 0, "one left, two wanted");
        s.give(100);
        assert_eq!(s.held(), 0, "never more than the cap");
    }

    #[test]
    fn held_events_fit_the_descriptor_limit() {
        let cfg = DaemonConfig::default();
        // 256 descriptors: a reserve for 4 restores, then half for held events.
        assert_eq!(held_cap(&cfg, 256), (256 - 96) / 2);
        assert_eq!(held_cap(&cfg, 50), MIN_READ_SLOTS);
        assert_eq!(held_cap(&cfg, 1 << 30), HELD_CEILING);
        let asked = DaemonConfig {
            max_held_events: 1000,
            ..DaemonConfig::default()
        };
        assert_eq!(held_cap(&asked, 256), 80, "lowered to the budget");
        let small = DaemonConfig {
            max_held_events: 10,
            ..DaemonConfig::default()
        };
        assert_eq!(held_cap(&small, 256), 10);
    }

    #[test]
    fn read_errors_are_retried_unless_the_group_is_broken() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(classify(&e(libc::EMFILE)), OnReadError::Backoff);
        assert_eq!(classify(&e(libc::ENFILE)), OnReadError::Backoff);
        assert_eq!(classify(&e(libc::ENOMEM)), OnReadError::Backoff);
        assert_eq!(classify(&e(libc::EROFS)), OnReadError::Next);
        assert_eq!(classify(&e(libc::EACCES)), OnReadError::Next);
        assert_eq!(classify(&e(libc::EINVAL)), OnReadError::Grow);
        assert_eq!(classify(&e(libc::EBADF)), OnReadError::Fatal);
    }
}
