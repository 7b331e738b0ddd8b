//! Measuring a share's usage by walking it, for what the kernel does not count for us
//! (inodes everywhere, and bytes on filesystems without qgroups), and a small cache of the
//! inode counts, so that periodic stats calls do not walk a large share every time.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::SFlag;

/// Bytes allocated and inodes used beneath one directory (the directory included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    pub bytes: u64,
    pub inodes: u64,
}

/// At most this many directories of one walk are open at once, however wide or deep the
/// tree (plus the root and one listing): a tenant's `mkdir d{1..100000}` or a directory
/// chain 100,000 deep costs no more descriptors than a flat share.
pub const MAX_OPEN_DIRS: usize = 16;

/// One directory on the path from the root to where the walk is.
struct Frame {
    /// Open while some of `pending` may still need it; reopened from the nearest open
    /// ancestor (by name, checking the inode number) when it was closed to stay in budget.
    fd: Option<OwnedFd>,
    ino: u64,
    /// Its name in the parent (empty for the root).
    name: CString,
    /// Subdirectories not visited yet.
    pending: Vec<CString>,
}

fn open_child(parent: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, Errno> {
    // Beneath the parent, no symlink anywhere, and no mount crossed (a btrfs subvolume is
    // not a mount, so nested subvolumes are counted).
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    nix::fcntl::openat2(parent, name, how)
}

/// Counts the entries of one open directory into `total`; returns its subdirectories.
fn list(dir: BorrowedFd<'_>, total: &mut Walked) -> Result<Vec<CString>, Errno> {
    let mut listing = nix::dir::Dir::from_fd(dir.try_clone_to_owned().map_err(|_| Errno::EMFILE)?)?;
    let mut subdirs = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let st = match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue, // removed while we walked
            Err(e) => return Err(e),
        };
        total.inodes += 1;
        total.bytes = total
            .bytes
            .saturating_add((st.st_blocks as u64).saturating_mul(512));
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            subdirs.push(name.to_owned());
        }
    }
    Ok(subdirs)
}

/// Walks `dir` without following symlinks or crossing into other mounts, holding at most
/// [`MAX_OPEN_DIRS`] directories open. A directory a tenant moves or removes during the
/// walk is skipped, never followed elsewhere.
pub fn walk(dir: OwnedFd) -> Result<Walked, Errno> {
    let top = nix::sys::stat::fstat(dir.as_fd())?;
    let mut total = Walked {
        bytes: (top.st_blocks as u64).saturating_mul(512),
        inodes: 1,
    };
    let pending = list(dir.as_fd(), &mut total)?;
    let mut stack = vec![Frame {
        fd: Some(dir),
        ino: top.st_ino,
        name: CString::default(),
        pending,
    }];
    // Indexes of the open frames other than the root, shallowest first.
    let mut open: VecDeque<usize> = VecDeque::new();
    while let Some(depth) = stack.len().checked_sub(1) {
        let Some(name) = stack[depth].pending.pop() else {
            stack.pop();
            if open.back() == Some(&depth) {
                open.pop_back();
            }
            continue;
        };
        if stack[depth].fd.is_none() {
            if !reopen(&mut stack, depth)? {
                stack[depth].pending.clear(); // moved away under us: skip what is left of it
                continue;
            }
            // The deepest frame: every open one is shallower.
            open.push_back(depth);
        }
        let Some(parent) = stack[depth].fd.as_ref() else {
            continue;
        };
        let child = match open_child(parent.as_fd(), &name) {
            Ok(fd) => fd,
            // Gone, replaced by a non-directory or a symlink, or a mount point.
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV) => continue,
            Err(e) => return Err(e),
        };
        let ino = nix::sys::stat::fstat(child.as_fd())?.st_ino;
        let pending = list(child.as_fd(), &mut total)?;
        if stack[depth].pending.is_empty() && depth > 0 {
            // Nothing more to open from the parent; it stays on the stack only by name.
            stack[depth].fd = None;
            if open.back() == Some(&depth) {
                open.pop_back();
            }
        }
        if pending.is_empty() {
            continue;
        }
        stack.push(Frame {
            fd: Some(child),
            ino,
            name,
            pending,
        });
        open.push_back(depth + 1);
        while open.len() > MAX_OPEN_DIRS {
            if let Some(shallowest) = open.pop_front() {
                stack[shallowest].fd = None;
            }
        }
    }
    Ok(total)
}

/// Reopens `stack[depth]` from its nearest open ancestor, one name at a time, checking each
/// inode number against the one seen on the way down. False when the tree changed.
fn reopen(stack: &mut [Frame], depth: usize) -> Result<bool, Errno> {
    let Some(base) = (0..depth).rev().find(|&i| stack[i].fd.is_some()) else {
        return Ok(false);
    };
    let mut current: Option<OwnedFd> = None;
    for i in base + 1..=depth {
        let opened = {
            let parent = match (&current, &stack[base].fd) {
                (Some(fd), _) => fd.as_fd(),
                (None, Some(fd)) => fd.as_fd(),
                (None, None) => return Ok(false),
            };
            match open_child(parent, &stack[i].name) {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV) => {
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        };
        if nix::sys::stat::fstat(opened.as_fd())?.st_ino != stack[i].ino {
            return Ok(false);
        }
        current = Some(opened);
    }
    stack[depth].fd = current;
    Ok(stack[depth].fd.is_some())
}

/// How long a cached inode count is served as is.
pub const FRESH: Duration = Duration::from_secs(30);
/// How long a cached count may be served while a background walk refreshes it; past this a
/// caller walks itself.
pub const USABLE: Duration = Duration::from_secs(600);
/// Shares remembered at most (the oldest entry goes first).
pub const CAPACITY: usize = 4096;
/// Background refresh walks running at most at once (each on a blocking thread).
pub const MAX_REFRESHES: usize = 2;

struct Entry {
    at: Instant,
    walked: Walked,
    refreshing: bool,
}

/// What the cache knows about one share.
pub enum Lookup {
    /// Younger than [`FRESH`].
    Fresh(Walked),
    /// Older, but younger than [`USABLE`]; when `refresh` is true the caller was chosen to
    /// start a background walk and must call [`InodeCache::refreshed`] when it ends.
    Stale {
        walked: Walked,
        refresh: bool,
    },
    Missing,
}

/// Inode counts by share directory (`st_dev`, `st_ino`: stable across a rename into the
/// trash, and distinct for every btrfs subvolume).
#[derive(Default)]
pub struct InodeCache {
    entries: Mutex<HashMap<(u64, u64), Entry>>,
    refreshes: AtomicUsize,
}

impl InodeCache {
    pub fn lookup(&self, key: (u64, u64)) -> Lookup {
        let Ok(mut entries) = self.entries.lock() else {
            return Lookup::Missing;
        };
        let Some(entry) = entries.get_mut(&key) else {
            return Lookup::Missing;
        };
        let age = entry.at.elapsed();
        if age < FRESH {
            return Lookup::Fresh(entry.walked);
        }
        if age >= USABLE {
            return Lookup::Missing;
        }
        let refresh = !entry.refreshing
            && self
                .refreshes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < MAX_REFRESHES).then_some(n + 1)
                })
                .is_ok();
        entry.refreshing |= refresh;
        Lookup::Stale {
            walked: entry.walked,
            refresh,
        }
    }

    pub fn put(&self, key: (u64, u64), walked: Walked) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            let oldest = entries
                .iter()
                .filter(|(_, e)| !e.refreshing)
                .min_by_key(|(_, e)| e.at)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        let refreshing = entries.get(&key).is_some_and(|e| e.refreshing);
        entries.insert(
            key,
            Entry {
                at: Instant::now(),
                walked,
                refreshing,
            },
        );
    }

    /// Ends a background refresh that [`InodeCache::lookup`] handed out, with its result.
    pub fn refreshed(&self, key: (u64, u64), walked: Option<Walked>) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(&key)
        {
            entry.refreshing = false;
            if let Some(walked) = walked {
                entry.walked = walked;
                entry.at = Instant::now();
            }
        }
        self.refreshes.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn forget(&self, key: (u64, u64)) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;

    fn open(path: &std::path::Path) -> OwnedFd {
        nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("open")
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").expect("fds").count()
    }

    #[test]
    fn counts_wide_and_deep_trees_with_few_descriptors() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..300 {
            let d = dir.path().join(format!("w{i}"));
            std::fs::create_dir(&d).expect("mkdir");
            std::fs::write(d.join("f"), b"x").expect("write");
        }
        // A comb: every level has a file, a leaf directory and the next level.
        let mut deep = dir.path().to_path_buf();
        for i in 0..200 {
            deep = deep.join(format!("c{i}"));
            std::fs::create_dir(&deep).expect("mkdir");
            std::fs::create_dir(deep.join("leaf")).expect("mkdir");
            std::fs::write(deep.join("f"), b"x").expect("write");
        }
        std::os::unix::fs::symlink("/", dir.path().join("escape")).expect("symlink");
        let walked = walk(open(dir.path())).expect("walk");
        // root + 300 dirs + 300 files + 200 * (dir, leaf, file) + the symlink
        assert_eq!(walked.inodes, 1 + 600 + 600 + 1);
        // The walk itself must not leave anything open. Other tests of this process open
        // and close descriptors meanwhile, so compare with a margin a leak would blow: one
        // descriptor per walk is 200 here.
        let before = open_fds();
        for _ in 0..200 {
            walk(open(dir.path())).expect("walk");
        }
        let after = open_fds();
        assert!(
            after < before + 50,
            "{before} descriptors open before, {after} after"
        );
    }

    #[test]
    fn a_directory_moved_during_the_walk_is_skipped_not_followed() {
        // reopen() refuses a frame whose inode changed.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        let root = open(dir.path());
        let a = open(&dir.path().join("a"));
        let a_ino = nix::sys::stat::fstat(a.as_fd()).expect("fstat").st_ino;
        let mut stack = vec![
            Frame {
                fd: Some(root),
                ino: 0,
                name: CString::default(),
                pending: Vec::new(),
            },
            Frame {
                fd: None,
                ino: a_ino,
                name: CString::new("a").expect("name"),
                pending: Vec::new(),
            },
        ];
        assert!(reopen(&mut stack, 1).expect("reopen"));
        stack[1].fd = None;
        std::fs::rename(dir.path().join("a"), dir.path().join("gone")).expect("rename");
        std::fs::create_dir(dir.path().join("a")).expect("mkdir");
        assert!(!reopen(&mut stack, 1).expect("reopen"));
    }

    #[test]
    fn the_cache_serves_fresh_then_stale_with_one_refresh() {
        let cache = InodeCache::default();
        let w = Walked {
            bytes: 1,
            inodes: 2,
        };
        assert!(matches!(cache.lookup((1, 1)), Lookup::Missing));
        cache.put((1, 1), w);
        assert!(matches!(cache.lookup((1, 1)), Lookup::Fresh(x) if x == w));
        if let Ok(mut entries) = cache.entries.lock() {
            entries.get_mut(&(1, 1)).expect("entry").at = Instant::now() - FRESH;
        }
        assert!(matches!(
            cache.lookup((1, 1)),
            Lookup::Stale { refresh: true, .. }
        ));
        assert!(matches!(
            cache.lookup((1, 1)),
            Lookup::Stale { refresh: false, .. }
        ));
        cache.refreshed(
            (1, 1),
            Some(Walked {
                bytes: 3,
                inodes: 4,
            }),
        );
        assert!(matches!(cache.lookup((1, 1)), Lookup::Fresh(x) if x.inodes == 4));
        cache.forget((1, 1));
        assert!(matches!(cache.lookup((1, 1)), Lookup::Missing));
    }
}
