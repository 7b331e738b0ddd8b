//! Change events for `policy watch`: a fanotify notification group with a filesystem mark
//! (or, where that is refused, a mount mark) for `FAN_MODIFY | FAN_CLOSE_WRITE`. A thread
//! reads events and sends the paths under the watched directory on a channel; events caused
//! by this process itself (our own archives and releases) are dropped, so a pass never
//! triggers the next one.
//!
//! The group reports directory handles and names (`FAN_REPORT_DFID_NAME`) rather than
//! opening every changed file: an fd-reporting group opens each file an event is about,
//! which costs an open per write on the whole filesystem and breaks other processes' file
//! leases. Kernels without FID reporting fall back to fd events.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::fanotify::{self as fan, Group};

/// A running watcher; dropping it stops its thread (within half a second).
pub struct ChangeWatcher {
    pub events: mpsc::Receiver<PathBuf>,
    /// `filesystem` or `mount`: which mark the kernel took.
    pub mark: &'static str,
    stop: Arc<AtomicBool>,
}

impl Drop for ChangeWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl ChangeWatcher {
    /// Starts watching `dir`; `Err` says why fanotify cannot be used (not root, kernel
    /// without fanotify, a filesystem that refuses marks).
    pub fn start(dir: &Path) -> Result<Self, String> {
        let base = fan::FAN_CLASS_NOTIF | fan::FAN_CLOEXEC | fan::FAN_NONBLOCK;
        let ev_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
        let group = Group::init(base | fan::FAN_REPORT_DFID_NAME, ev_flags)
            .or_else(|_| Group::init(base, ev_flags))
            .map_err(|e| format!("fanotify_init: {e}"))?;
        let mount = std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mask = fan::FAN_MODIFY | fan::FAN_CLOSE_WRITE;
        let mark = match group.mark_path(fan::FAN_MARK_ADD | fan::FAN_MARK_FILESYSTEM, mask, dir) {
            Ok(()) => "filesystem",
            Err(e1) => match group.mark_path(fan::FAN_MARK_ADD | fan::FAN_MARK_MOUNT, mask, dir) {
                Ok(()) => "mount",
                Err(e2) => {
                    return Err(format!(
                        "fanotify_mark on {}: filesystem mark: {e1}; mount mark: {e2}",
                        dir.display()
                    ));
                }
            },
        };
        let (tx, rx) = mpsc::channel(4096);
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, dir) = (stop.clone(), dir.to_path_buf());
        let me = std::process::id() as i32;
        std::thread::Builder::new()
            .name("hsm-policy-watch".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                while !stop2.load(Ordering::Relaxed) {
                    let events = match group.read_events(&mut buf, 500) {
                        Ok(ev) => ev,
                        Err(e) => {
                            tracing::warn!(error = %e, "fanotify read; watcher stops");
                            return;
                        }
                    };
                    for ev in events {
                        if ev.mask & fan::FAN_Q_OVERFLOW != 0 {
                            // Lost events: ask for a pass anyway.
                            let _ = tx.try_send(dir.clone());
                            continue;
                        }
                        if ev.pid == me {
                            continue;
                        }
                        use std::os::fd::AsRawFd;
                        let p = match (&ev.fd, &ev.dfid_name) {
                            (Some(fd), _) => fan::fd_path(fd.as_raw_fd()).ok(),
                            (None, Some((handle, name))) => {
                                fan::handle_path(mount.as_raw_fd(), handle)
                                    .ok()
                                    .map(|d| d.join(std::ffi::OsStr::from_bytes(name)))
                            }
                            (None, None) => None,
                        };
                        let Some(p) = p else { continue };
                        if p.starts_with(&dir) && tx.try_send(p).is_err() && tx.is_closed() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the watcher thread: {e}"))?;
        Ok(Self {
            events: rx,
            mark,
            stop,
        })
    }
}
