//! Restore on access for the `local` backend: a fanotify pre-content listener.
//!
//! The daemon puts a filesystem mark for `FAN_PRE_ACCESS` (Linux 6.14+, ext4/btrfs/xfs) on
//! the filesystem of the namespace root. The kernel then holds every read of a marked file
//! until we answer:
//! - a file outside the root, or one that is not released: `FAN_ALLOW` at once. We also
//!   ask for an ignore mark on its inode (`FAN_MARK_IGNORE`, no `SURV_MODIFY`, so a
//!   modification such as a release's hole punch drops it), but on the 6.18 kernel of this
//!   workplace the kernel still sent later events for that inode, so each read chunk of a
//!   present file costs one quick answer (a readlink and an xattr read);
//! - a released file: its data is fetched with ranged GETs and written **in place** with
//!   `pwrite` through the event's own descriptor (whose I/O raises no events), the checksum
//!   verified, the stub's mtime put back and the state flipped to archived-and-present;
//!   then `FAN_ALLOW`, and the inode gets an ignore mark. The reader, which was blocked the
//!   whole time, reads the restored bytes. (The CLI's restore renames a temporary file over
//!   the stub, which a reader that already has the stub open would never see.)
//! - on an error: `FAN_DENY` with `EIO` (or a plain `FAN_DENY` on kernels without deny
//!   errnos), logged, and the file stays released, so the next read tries again.
//!
//! Several reads of one file while it is restored wait for the same restore. At most
//! `restores` restores run at once; answers to files that need none never wait for them.
//! When the daemon stops, closing the group lets every pending read through (as released
//! stubs, their holes read as zeros: run the daemon whenever released files are in use).
//!
//! **Known limitation: releasing while the daemon runs stalls.** The backend's release holds
//! a write lease (`F_SETLEASE`) while it punches the data out; the punch raises a
//! pre-content event, and the kernel's open of the event fd for us breaks that lease and
//! waits for the kernel's `lease-break-time` (45 s by default) before the release goes on.
//! The release completes correctly, only late. Fixes that belong outside this module: do the
//! mover's own I/O through a private bind mount that the daemon does not mark (a mount
//! mark on the users' mount instead of a filesystem mark), or release without a lease when a
//! pre-content watcher is known to run.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use crate::engine::HsmEngine;
use crate::error::{HsmError, Result};
use crate::fanotify::{self as fan, Event, Group};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Restores at once.
    pub restores: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self { restores: 4 }
    }
}

/// Counters of a running daemon.
#[derive(Debug, Default, Serialize)]
pub struct DaemonStats {
    pub events: AtomicU64,
    pub allowed_at_once: AtomicU64,
    pub restored: AtomicU64,
    pub denied: AtomicU64,
}

type InFlight = Mutex<HashMap<(u64, u64), Vec<OwnedFd>>>;

struct Shared {
    engine: Arc<HsmEngine>,
    group: Group,
    root: PathBuf,
    permits: Semaphore,
    restores: usize,
    in_flight: InFlight,
    stats: DaemonStats,
    deny_errno: AtomicBool,
}

/// A running restore-on-access daemon.
pub struct RestoreDaemon {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    dispatcher: tokio::task::JoinHandle<()>,
}

impl RestoreDaemon {
    /// Marks the root's filesystem and starts answering. `Err(Unsupported)` says why the
    /// kernel refused (not root, a kernel before 6.14, a filesystem without pre-content
    /// events).
    pub fn start(engine: Arc<HsmEngine>, cfg: DaemonConfig) -> Result<Self> {
        let root = engine.config().root.clone();
        let group = Group::init(
            fan::FAN_CLASS_PRE_CONTENT
                | fan::FAN_CLOEXEC
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
        let shared = Arc::new(Shared {
            engine,
            group,
            root,
            permits: Semaphore::new(cfg.restores.max(1)),
            restores: cfg.restores.max(1),
            in_flight: Mutex::new(HashMap::new()),
            stats: DaemonStats::default(),
            deny_errno: AtomicBool::new(true),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let reader = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("hsm-restore-events".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    while !stop.load(Ordering::Relaxed) {
                        match shared.group.read_events(&mut buf, 250) {
                            Ok(events) => {
                                for ev in events {
                                    // Every permission event must be answered: never drop.
                                    if let Err(mpsc::error::SendError(ev)) = tx.send(ev) {
                                        shared.answer_fd(ev.fd.as_ref(), fan::FAN_ALLOW);
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "fanotify read failed; restore daemon stops");
                                return;
                            }
                        }
                    }
                })
                .map_err(|e| HsmError::Unsupported(format!("cannot start a thread: {e}")))?
        };
        let dispatcher = {
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some(ev) = rx.recv().await {
                    let shared = shared.clone();
                    tokio::spawn(async move { shared.handle(ev).await });
                }
            })
        };
        tracing::info!(root = %shared.root.display(), "restore-on-access daemon started");
        Ok(Self {
            shared,
            stop,
            reader: Some(reader),
            dispatcher,
        })
    }

    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    pub fn stats(&self) -> &DaemonStats {
        &self.shared.stats
    }

    /// Stops reading events; the ones already read are answered first.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
        // The reader's sender is gone: the dispatcher drains and ends.
        let _ = (&mut self.dispatcher).await;
        // Wait for restores in flight (each holds a permit).
        let _ = self
            .shared
            .permits
            .acquire_many(self.shared.restores as u32)
            .await;
    }
}

impl Shared {
    fn answer_fd(&self, fd: Option<&OwnedFd>, response: u32) {
        let Some(fd) = fd else { return };
        if let Err(e) = self.group.respond(fd.as_raw_fd(), response) {
            tracing::warn!(error = %e, "fanotify response failed");
        }
    }

    fn deny(&self, fd: &OwnedFd) {
        self.stats.denied.fetch_add(1, Ordering::Relaxed);
        if self.deny_errno.load(Ordering::Relaxed) {
            match self
                .group
                .respond(fd.as_raw_fd(), fan::fan_deny_errno(libc::EIO))
            {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.deny_errno.store(false, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "fanotify deny failed"),
            }
        }
        self.answer_fd(Some(fd), fan::FAN_DENY);
    }

    /// Lets reads of this inode through without asking us, until it is modified.
    fn ignore(&self, fd: &OwnedFd) {
        if let Err(e) = self.group.mark_fd(
            fan::FAN_MARK_ADD | fan::FAN_MARK_IGNORE,
            fan::FAN_PRE_ACCESS,
            fd.as_raw_fd(),
        ) {
            tracing::debug!(error = %e, "ignore mark refused; later reads will ask again");
        }
    }

    fn allow_now(&self, fd: &OwnedFd) {
        self.stats.allowed_at_once.fetch_add(1, Ordering::Relaxed);
        self.answer_fd(Some(fd), fan::FAN_ALLOW);
        self.ignore(fd);
    }

    async fn handle(self: Arc<Self>, ev: Event) {
        let Some(fd) = ev.fd else { return };
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        if ev.mask & fan::FAN_PRE_ACCESS == 0 {
            self.answer_fd(Some(&fd), fan::FAN_ALLOW);
            return;
        }
        let path = match fan::fd_path(fd.as_raw_fd()) {
            Ok(p) if p.starts_with(&self.root) => p,
            _ => return self.allow_now(&fd),
        };
        let released = match self.engine.backend().hsm_state(&path).await {
            Ok(st) => st.flags.released,
            Err(_) => false,
        };
        if !released {
            return self.allow_now(&fd);
        }
        // One restore per inode; later readers wait for it.
        // SAFETY: a zeroed stat is a valid out-buffer; fd is valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return self.deny(&fd);
        }
        let id = (st.st_dev, st.st_ino);
        {
            let Ok(mut inflight) = self.in_flight.lock() else {
                return self.deny(&fd);
            };
            if let Some(waiters) = inflight.get_mut(&id) {
                waiters.push(fd);
                return;
            }
            inflight.insert(id, Vec::new());
        }
        tracing::info!(file = %path.display(), range = ?ev.range, pid = ev.pid, "restore on access");
        let res = match self.permits.acquire().await {
            Ok(_permit) => self.restore(&path, &fd).await,
            Err(_) => Err(HsmError::Unsupported("daemon stopping".into())),
        };
        let waiters = self
            .in_flight
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&id))
            .unwrap_or_default();
        match res {
            Ok(()) => {
                self.stats.restored.fetch_add(1, Ordering::Relaxed);
                self.ignore(&fd);
                self.answer_fd(Some(&fd), fan::FAN_ALLOW);
                for w in &waiters {
                    self.answer_fd(Some(w), fan::FAN_ALLOW);
                }
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "restore on access failed; read denied (EIO)");
                self.deny(&fd);
                for w in &waiters {
                    self.deny(w);
                }
            }
        }
    }

    async fn restore(&self, path: &Path, fd: &OwnedFd) -> Result<()> {
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
