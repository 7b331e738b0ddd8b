//! Import (objects → released stubs) and export (new or changed files → objects).
//!
//! Import never writes outside its target directory: every object name is checked first
//! (no `.`/`..`/empty segment, no `/` or NUL once decoded, at most 255 bytes a segment and
//! 4096 in all). A bad name is one error in the report; the import goes on until
//! `max_errors` is passed.
//!
//! **Object metadata is hostile input to root code.** Whoever can write to the store (or
//! to the tree a store was filled from) must not get a setuid-root program, a file
//! capability or a forged HSM record out of an import. So by default:
//! - owner and group are the target directory's (`fstat` of the opened target), or
//!   `default_uid`/`default_gid` when given; the object's own only with `preserve_owner`
//!   (and objects that name none still get the default, never root by accident);
//! - setuid and setgid bits, and the sticky bit of anything but a directory, are dropped
//!   unless `preserve_setid`;
//! - of the xattrs recorded in the object (`lustrekit_xattrs`) only `user.*` is applied;
//!   another name only when `xattr_allow` names it or its namespace (`security.selinux`,
//!   `trusted.`); our own records (`trusted.lustrekit.*`, `user.lustrekit.*`: the HSM state
//!   and the pin) never, as a forged one could point a root restore at any object.
//!
//! What was dropped is counted in the [`ImportReport`], never silently.
//!
//! **Nothing is reached by a path a tenant controls.** The target is opened beneath the
//! engine root one component at a time with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, so a symlinked target (or a symlink on the way) is refused, and
//! missing directories are made with `mkdirat`, owned like their parent. Every directory
//! and stub below it is made from that descriptor the same way; a stub is written as an
//! `O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK` temporary with a random name, marked, and
//! renamed into place, and each step checks that the name still holds our inode. A FIFO,
//! socket or device where a stub would go is refused and never opened; a symlink there is
//! never followed (only replaced, when the conflict mode says so).
//!
//! Conflict modes (as AMLFS has them), for an entry that already exists:
//! - `fail`: an error for that entry;
//! - `skip`: leave it;
//! - `overwrite_if_dirty`: replace it only when its HSM state is dirty (changed since
//!   archived); a clean or never-archived file is left;
//! - `overwrite_always`: replace it (an existing directory gets the object's metadata).
//!
//! An existing directory is otherwise left as it is.

use std::hash::{BuildHasher, Hasher};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use lustre_model::{HS_ARCHIVED, HS_DIRTY, HS_EXISTS, HS_RELEASED, HsmFlags};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use crate::engine::{HsmEngine, Outcome, PathError, blocking};
use crate::error::{HsmError, Result};
use crate::meta::{EntryKind, FileMeta};
use crate::posix;
use crate::store::ObjectInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConflictMode {
    #[default]
    Fail,
    Skip,
    OverwriteIfDirty,
    /// Replace unless the entry there is already the object's: same kind, size and
    /// modification time (a resumed copy skips what it did before).
    OverwriteIfChanged,
    OverwriteAlways,
}

impl ConflictMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Skip => "skip",
            Self::OverwriteIfDirty => "overwrite_if_dirty",
            Self::OverwriteIfChanged => "overwrite_if_changed",
            Self::OverwriteAlways => "overwrite_always",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportOptions {
    /// Object prefix below the store's prefix (`None`: everything).
    pub source_prefix: Option<String>,
    /// The directory the stubs go into (absolute, or relative to the engine root).
    pub target: PathBuf,
    pub conflict: ConflictMode,
    /// Stop once more than this many entries failed.
    pub max_errors: usize,
    /// Owner of the entries whose owner does not come from object metadata (all of them,
    /// unless `preserve_owner`). `None`: the target directory's owner.
    pub default_uid: Option<u32>,
    /// Group likewise. `None`: the target directory's group.
    pub default_gid: Option<u32>,
    /// Take owner and group from object metadata where it names them.
    pub preserve_owner: bool,
    /// Keep the setuid and setgid bits (and a file's sticky bit) from object metadata.
    pub preserve_setid: bool,
    /// Xattrs applied from object metadata besides `user.*`: exact names
    /// (`security.selinux`) or namespace prefixes (`trusted.`, or `security` for every
    /// `security.*`). Our own `trusted.lustrekit.*`/`user.lustrekit.*` are never applied.
    pub xattr_allow: Vec<String>,
    /// Write each file's data (a plain copy, verified against the recorded checksum)
    /// instead of a released stub; nothing is marked or pinned.
    pub with_data: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            source_prefix: None,
            target: PathBuf::from("."),
            conflict: ConflictMode::Fail,
            max_errors: 100,
            default_uid: None,
            default_gid: None,
            preserve_owner: false,
            preserve_setid: false,
            xattr_allow: Vec::new(),
            with_data: false,
        }
    }
}

/// At most this many distinct dropped xattr names are listed in a report.
pub const MAX_DROPPED_NAMES: usize = 32;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportReport {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub skipped: usize,
    pub bytes: u64,
    pub errors: Vec<PathError>,
    pub elapsed_ms: u64,
    /// True when `max_errors` stopped the import early.
    pub stopped: bool,
    /// Entries made without the setuid/setgid bits (or a file's sticky bit) that their
    /// object asked for (see `preserve_setid`).
    pub setid_dropped: usize,
    /// Xattrs recorded in objects and not applied: not `user.*` and not allowed by
    /// `xattr_allow`, or our own HSM records.
    pub xattrs_dropped: usize,
    /// Their names (the first [`MAX_DROPPED_NAMES`] distinct ones).
    pub xattrs_dropped_names: Vec<String>,
}

impl ImportReport {
    fn note(&mut self, dropped: Dropped) {
        if dropped.setid {
            self.setid_dropped += 1;
        }
        self.xattrs_dropped += dropped.xattrs.len();
        for name in dropped.xattrs {
            if self.xattrs_dropped_names.len() < MAX_DROPPED_NAMES
                && !self.xattrs_dropped_names.contains(&name)
            {
                self.xattrs_dropped_names.push(name);
            }
        }
    }
}

/// Checks the decoded segments of an object name.
pub fn validate_segments(
    key: &str,
    segs: &[std::result::Result<String, String>],
) -> Result<Vec<String>> {
    let bad = |why: &str| HsmError::HostileName {
        key: key.to_string(),
        why: why.to_string(),
    };
    let mut out = Vec::with_capacity(segs.len());
    let mut total = 0usize;
    for s in segs {
        let s = s.as_ref().map_err(|_| bad("not UTF-8"))?;
        if s.is_empty() {
            return Err(bad("empty segment (absolute or `//`)"));
        }
        if s == "." || s == ".." {
            return Err(bad("`.` or `..` segment"));
        }
        if s.contains('/') {
            return Err(bad("`/` inside a segment"));
        }
        if s.contains('\0') {
            return Err(bad("NUL in name"));
        }
        if s.len() > 255 {
            return Err(bad("segment longer than 255 bytes"));
        }
        total += s.len() + 1;
        out.push(s.clone());
    }
    if total > 4096 {
        return Err(bad("path longer than 4096 bytes"));
    }
    if out.is_empty() {
        return Err(bad("empty name"));
    }
    Ok(out)
}

/// Our own xattr namespaces (the HSM record and the pin): never taken from an object.
pub const OWN_XATTR_PREFIXES: [&str; 2] = ["trusted.lustrekit.", "user.lustrekit."];

/// Whether import applies the xattr `name` recorded in an object: `user.*` always; any
/// other name only when an `allow` entry is that name, or a prefix of it ending in `.` or
/// followed by `.` in it (`security` and `security.` both allow `security.selinux`); our
/// own namespaces ([`OWN_XATTR_PREFIXES`]) never.
pub fn xattr_importable(name: &str, allow: &[String]) -> bool {
    if OWN_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    if name.starts_with("user.") {
        return true;
    }
    allow.iter().any(|a| {
        !a.is_empty()
            && name
                .strip_prefix(a.as_str())
                .is_some_and(|rest| rest.is_empty() || a.ends_with('.') || rest.starts_with('.'))
    })
}

/// What [`sanitize`] took out of one entry's metadata.
#[derive(Debug, Default, Clone)]
struct Dropped {
    setid: bool,
    xattrs: Vec<String>,
}

/// Makes an object's metadata safe to apply as root (see the module doc). `owner` is the
/// owner of entries whose owner does not come from the object.
fn sanitize(meta: &mut FileMeta, opts: &ImportOptions, owner: (u32, u32)) -> Dropped {
    let mut dropped = Dropped::default();
    if !opts.preserve_owner {
        (meta.uid, meta.gid) = owner;
    }
    meta.mode &= 0o7777;
    if !opts.preserve_setid {
        let mut bits = libc::S_ISUID | libc::S_ISGID;
        if meta.kind != EntryKind::Dir {
            bits |= libc::S_ISVTX;
        }
        if meta.mode & bits != 0 {
            meta.mode &= !bits;
            dropped.setid = true;
        }
    }
    let (keep, drop): (Vec<_>, Vec<_>) = std::mem::take(&mut meta.xattrs)
        .into_iter()
        .partition(|(k, _)| xattr_importable(k, &opts.xattr_allow));
    meta.xattrs = keep;
    dropped.xattrs = drop.into_iter().map(|(k, _)| k).collect();
    dropped
}

fn flags(bits: u32) -> HsmFlags {
    HsmFlags::from_bits(bits)
}

/// What a name in a directory holds before we import over it.
#[derive(Debug, Clone, Copy)]
enum Existing {
    None,
    Dir,
    File,
    Symlink,
    /// A FIFO, socket or device: its `S_IFMT` bits.
    Special(u32),
}

fn existing(dir: &OwnedFd, name: &str, at: &Path) -> Result<Existing> {
    let st = posix::lstat_at(dir.as_fd(), name).map_err(|e| HsmError::io(at, e))?;
    Ok(match st.map(|st| st.st_mode & libc::S_IFMT) {
        None => Existing::None,
        Some(libc::S_IFDIR) => Existing::Dir,
        Some(libc::S_IFREG) => Existing::File,
        Some(libc::S_IFLNK) => Existing::Symlink,
        Some(fmt) => Existing::Special(fmt),
    })
}

/// Whether `name` in `dir` already holds the entry `meta` describes (same kind, size and
/// modification time): what a resumed copy skips. Anything else there is not.
fn already_there(dir: &OwnedFd, name: &str, at: &Path, meta: &FileMeta) -> Result<bool> {
    let Some(st) = posix::lstat_at(dir.as_fd(), name).map_err(|e| HsmError::io(at, e))? else {
        return Ok(false);
    };
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => EntryKind::File,
        libc::S_IFDIR => EntryKind::Dir,
        libc::S_IFLNK => EntryKind::Symlink,
        _ => return Ok(false),
    };
    let have = FileMeta {
        kind,
        size: (kind == EntryKind::File).then_some(st.st_size as u64),
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        symlink_target: if kind == EntryKind::Symlink {
            nix::fcntl::readlinkat(dir.as_fd(), name)
                .ok()
                .and_then(|t| t.into_string().ok())
        } else {
            None
        },
        ..Default::default()
    };
    Ok(crate::engine::same_entry(&have, meta))
}

/// A fresh name for a temporary beside `name`: random (the process's randomly keyed
/// hasher over the time and a counter), so a tenant cannot plant anything there first.
fn temp_name(kind: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!(
        ".lustrekit-import-{kind}.{}.{:016x}",
        std::process::id(),
        h.finish()
    )
}

/// Tries `make` with fresh temporary names until one is free (a few times: a taken name
/// means someone guessed it, which should not happen).
fn with_temp_name<T>(
    kind: &str,
    shown_dir: &Path,
    mut make: impl FnMut(&str) -> std::result::Result<T, Errno>,
) -> Result<(String, T)> {
    for _ in 0..8 {
        let name = temp_name(kind);
        match make(&name) {
            Ok(t) => return Ok((name, t)),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(HsmError::io(shown_dir.join(&name), e.into())),
        }
    }
    Err(HsmError::refused(shown_dir, "no free temporary name"))
}

/// A new temporary file in `dir` under a fresh random name, never following or reusing what
/// is there (`O_CREAT | O_EXCL | O_NOFOLLOW`): the guard that removes it unless it is
/// placed, and the open file. Made on a blocking thread, the guard travels back in the
/// result, so a caller dropped while this runs still has the temporary removed.
fn exclusive_temp(
    dir: &Arc<OwnedFd>,
    kind: &str,
    shown_dir: &Path,
) -> Result<(TempGuard, std::fs::File)> {
    let (tmp, fd) = with_temp_name(kind, shown_dir, |tmp| {
        nix::fcntl::openat(
            dir.as_fd(),
            tmp,
            OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_RDWR
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
    })?;
    let file = std::fs::File::from(fd);
    let id = match posix::identity(file.as_fd(), &shown_dir.join(&tmp)) {
        Ok(id) => id,
        Err(e) => {
            let _ = nix::unistd::unlinkat(
                dir.as_fd(),
                tmp.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            return Err(e);
        }
    };
    let guard = TempGuard {
        dir: dir.clone(),
        name: tmp,
        id,
        armed: true,
    };
    Ok((guard, file))
}

/// Removes our temporary `name` from `dir` if it still holds our inode `id`.
fn drop_temp(dir: &OwnedFd, name: &str, id: (u64, u64)) {
    if posix::still_same(dir.as_fd(), name, id) {
        let _ = nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
}

/// Our temporary in `dir`, removed (if it still holds our inode) when this is dropped
/// while armed, on a blocking thread: a cancelled import (its future dropped at any
/// await) leaves no temporary behind.
struct TempGuard {
    dir: Arc<OwnedFd>,
    name: String,
    id: (u64, u64),
    armed: bool,
}

impl TempGuard {
    /// Removes the temporary now, on this (blocking) thread.
    fn remove_here(mut self) {
        self.armed = false;
        drop_temp(&self.dir, &self.name, self.id);
    }

    /// Removes the temporary before the caller answers (a step failed).
    async fn remove(mut self) {
        self.armed = false;
        let (d, t, id) = (self.dir.clone(), std::mem::take(&mut self.name), self.id);
        let _ = blocking(move || {
            drop_temp(&d, &t, id);
            Ok(())
        })
        .await;
    }

    /// The temporary was renamed into place: its name is gone, nothing to remove.
    fn placed(mut self) {
        self.armed = false;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (dir, name, id) = (self.dir.clone(), std::mem::take(&mut self.name), self.id);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || drop_temp(&dir, &name, id));
            }
            Err(_) => drop_temp(&dir, &name, id),
        }
    }
}

/// What a stub made from `info` at `key` pins: the exact version it was made from, so a
/// later archive of another file at this key (or an out-of-band overwrite) can never change
/// what it restores.
fn stub_pin(key: &ObjPath, info: &ObjectInfo, meta: &FileMeta) -> crate::pin::Pin {
    crate::pin::Pin {
        key: key.to_string(),
        etag: info.e_tag.clone(),
        version: info.version_id(key),
        checksum: meta.checksum.clone(),
        size: info.size,
    }
}

/// A released stub's temporary in `dir`, not yet marked: a fresh exclusive file of the
/// pinned size with the (sanitized) metadata and the pin. On a blocking thread; failing,
/// it removes what it made.
fn stub_temp(
    dir: &Arc<OwnedFd>,
    shown_dir: &Path,
    meta: &FileMeta,
    pinned: &crate::pin::Pin,
) -> Result<(TempGuard, std::fs::File)> {
    let (guard, file) = exclusive_temp(dir, "stub", shown_dir)?;
    let tmp_path = shown_dir.join(&guard.name);
    let made = file
        .set_len(pinned.size)
        .map_err(|e| HsmError::io(&tmp_path, e))
        .and_then(|()| posix::apply_fd(&tmp_path, file.as_fd(), meta))
        .and_then(|()| crate::pin::write(file.as_fd(), &tmp_path, pinned));
    if let Err(e) = made {
        guard.remove_here();
        return Err(e);
    }
    Ok((guard, file))
}

/// Renames our temporary `tmp` (inode `id`) to `name` in `dir`: over what is there only
/// when `replace`, else the name must still be free (`RENAME_NOREPLACE`).
fn place(
    dir: &OwnedFd,
    tmp: &str,
    name: &str,
    id: (u64, u64),
    replace: bool,
    path: &Path,
) -> Result<()> {
    if !posix::still_same(dir.as_fd(), tmp, id) {
        return Err(HsmError::refused(
            path,
            "the temporary was replaced while the stub was made",
        ));
    }
    let res = if replace {
        nix::fcntl::renameat(dir.as_fd(), tmp, dir.as_fd(), name)
    } else {
        match nix::fcntl::renameat2(
            dir.as_fd(),
            tmp,
            dir.as_fd(),
            name,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            // Filesystems without RENAME_NOREPLACE: link (which never replaces) and unlink.
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) => nix::unistd::linkat(
                dir.as_fd(),
                tmp,
                dir.as_fd(),
                name,
                nix::fcntl::AtFlags::empty(),
            )
            .and_then(|()| {
                nix::unistd::unlinkat(dir.as_fd(), tmp, nix::unistd::UnlinkatFlags::NoRemoveDir)
            }),
            other => other,
        }
    };
    match res {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => Err(HsmError::Conflict {
            path: path.to_path_buf(),
            mode: "appeared while importing",
        }),
        Err(e) => Err(HsmError::io(path, e.into())),
    }
}

/// Opens the import target beneath the engine root, making what is missing (each new
/// directory owned like its parent). A symlink below the root, the target itself
/// included, is refused: root creates files there, and whoever can plant a symlink must
/// not choose where they land.
fn open_target(root: &Path, comps: &[String]) -> Result<OwnedFd> {
    let mut cur = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| HsmError::io(root, e.into()))?;
    let mut at = root.to_path_buf();
    for c in comps {
        at.push(c);
        let st = nix::sys::stat::fstat(cur.as_fd()).map_err(|e| HsmError::io(&at, e.into()))?;
        cur = posix::dir_at(cur.as_fd(), c, 0o755, Some((st.st_uid, st.st_gid)), &at)?.0;
    }
    Ok(cur)
}

/// The directories one import made (their components below the target), under the one lock
/// that every directory creation and every directory's metadata takes: a child that makes
/// its missing parent must not put the default owner and mode back over the metadata the
/// parent's own entry just applied (workers run at once, in any order).
#[derive(Default)]
struct MadeDirs(std::sync::Mutex<std::collections::HashSet<Vec<String>>>);

impl MadeDirs {
    /// The set, locked: poisoned only by a panic in another worker, and the set is still
    /// whole then (only inserts happen under it).
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<Vec<String>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The directory `parents` below the target, made where missing (0755, owned by `owner`),
/// never through a symlink. Where it exists (nearly always) that is one `openat2` of the
/// whole relative path beneath the target; a missing component is made under `made`'s lock
/// and recorded there.
fn parent_dir(
    target: &Arc<OwnedFd>,
    shown: &Path,
    parents: &[String],
    owner: (u32, u32),
    made: &MadeDirs,
) -> Result<Arc<OwnedFd>> {
    if parents.is_empty() {
        return Ok(target.clone());
    }
    // Failing, a component is missing (made below) or not a directory (refused below,
    // by name).
    if let Ok(fd) = backend::local::beneath::open_dir_at(target.as_fd(), &parents.join("/")) {
        return Ok(Arc::new(fd));
    }
    let mut cur = target.clone();
    let mut at = shown.to_path_buf();
    for (i, c) in parents.iter().enumerate() {
        at.push(c);
        let mut made_dirs = made.lock();
        let (fd, new) = posix::dir_at(cur.as_fd(), c, 0o755, Some(owner), &at)?;
        if new {
            made_dirs.insert(parents[..=i].to_vec());
        }
        drop(made_dirs);
        cur = Arc::new(fd);
    }
    Ok(cur)
}

/// Sets the archived times of the directories an import made, once their children are in
/// (making a child moves a directory's mtime). Each failure is one error of the report.
fn restore_dir_times(
    target: &Arc<OwnedFd>,
    shown: &Path,
    owner: (u32, u32),
    made: &MadeDirs,
    dirs: Vec<DirTimes>,
) -> Vec<PathError> {
    let mut failed = Vec::new();
    for d in dirs {
        let path = posix::display_join(shown, &d.comps);
        let set = parent_dir(target, shown, &d.comps, owner, made)
            .and_then(|fd| posix::set_times_fd(&path, fd.as_fd(), d.atime_ns, d.mtime_ns));
        if let Err(e) = set {
            failed.push(PathError {
                path,
                kind: e.kind().into(),
                error: e.to_string(),
            });
        }
    }
    failed
}

/// Objects whose metadata is being fetched at once (a HEAD each on a cloud store).
pub const DESCRIBES_IN_FLIGHT: usize = 64;
/// Commits of the target's filesystem an entry refused with EDQUOT waits for before it
/// fails (see `import_entry`).
const QUOTA_RETRIES: usize = 3;

/// Whether `e` is, at its root, EDQUOT.
fn quota_exceeded(e: &HsmError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EDQUOT))
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Listed keys waiting for their metadata: the listing runs at most this far ahead.
const LISTED_AHEAD: usize = 4096;

/// One import, set up: the options, the target opened beneath the root, and the owner of
/// entries whose owner does not come from their object.
struct Ctx<'a> {
    opts: &'a ImportOptions,
    /// The target as resolved (for messages and backend calls).
    target: PathBuf,
    /// The target directory: every entry is made from this descriptor.
    dir: Arc<OwnedFd>,
    /// Key segments of the source prefix, left out of the paths made.
    strip: usize,
    owner: (u32, u32),
    /// The directories this import made.
    made: Arc<MadeDirs>,
}

/// What the listing found: an object, a key known only from a sidecar (a directory on the
/// local store), or a listing error.
enum Listed {
    Object(ObjPath),
    SidecarOnly(ObjPath),
    Failed(HsmError),
}

/// One listed key, decoded: where it goes and what it is.
#[derive(Clone)]
struct Described {
    key: ObjPath,
    /// Its path components below the target.
    comps: Vec<String>,
    /// Its metadata, sanitized.
    meta: FileMeta,
    /// What its HEAD said (`None` for a directory known only from its sidecar).
    info: Option<ObjectInfo>,
    dropped: Dropped,
}

/// One entry made.
struct Imported {
    kind: EntryKind,
    bytes: u64,
    dropped: Dropped,
    /// A directory made (or replaced): its path below the target and its archived times,
    /// set again once the import is over, since every child made in it moves its mtime.
    dir_times: Option<DirTimes>,
}

struct DirTimes {
    comps: Vec<String>,
    atime_ns: Option<i64>,
    mtime_ns: i64,
}

/// A released stub just made for one object version: at its final name, still open.
/// This is where the version it stands for (`key` and `info`: ETag, metadata, size) can be
/// recorded on `file`.
pub struct NewStub {
    pub file: std::fs::File,
    pub path: PathBuf,
    pub key: ObjPath,
    pub info: ObjectInfo,
}

impl HsmEngine {
    /// Imports a container or prefix as released stubs under `opts.target` (or as plain
    /// files, with `opts.with_data`).
    pub async fn import(&self, opts: &ImportOptions) -> Result<ImportReport> {
        self.import_counted(opts, &crate::CopyCounters::default())
            .await
    }

    /// [`import`](Self::import), filling in `counters` as it goes: the totals as the source
    /// is listed, then each entry (made, skipped or failed) as it is done.
    ///
    /// A pipeline in one future (dropping it stops everything, and every temporary is
    /// removed by its guard): the listing feeds a bounded channel ([`LISTED_AHEAD`]) while
    /// [`DESCRIBES_IN_FLIGHT`] keys are decoded at once (name checks, the HEAD or sidecar,
    /// the metadata); then the directories are made in key order, one at a time, and the
    /// other entries `file_concurrency` at once, every syscall on a blocking thread, in
    /// any order (each makes its missing parents; directory times are set at the end).
    /// The report lists errors in key order, as a sequential import would.
    ///
    /// **Durability.** No stub is fsynced: a stub is renamed into place only once its
    /// size, metadata, pin and HSM record are set, and the filesystems we run on (ext4,
    /// XFS and btrfs journal or commit metadata in order; a Lustre MDT commits its
    /// transactions in order) never keep a rename without what was done to the inode
    /// before it. So a crash leaves, per entry: nothing; a temporary
    /// (`.lustrekit-import-*`, never the object's name, possibly without all its
    /// attributes); or the whole stub at its name. A stub renamed but not yet re-marked
    /// (the rename moved its ctime) may read as released and dirty: restore still fetches
    /// its pinned version, and it is never released again without an archive. A resumed import (`ConflictMode::Skip`) keeps what is at a name, so
    /// it never keeps a half-made stub; temporaries a crash left are not swept (a tenant
    /// could name a file like one). Before it returns, the import `syncfs`es the target's
    /// filesystem once, so a caller that records completion (CreateVolume's marker) never
    /// records an import whose stubs a crash could still take back.
    pub async fn import_counted(
        &self,
        opts: &ImportOptions,
        counters: &crate::CopyCounters,
    ) -> Result<ImportReport> {
        let started = Instant::now();
        let (target, comps) = self.resolve(&opts.target)?;
        let root = self.config().root.clone();
        let (dir, st) = {
            let shown = target.clone();
            blocking(move || {
                let dir = open_target(&root, &comps)?;
                let st = nix::sys::stat::fstat(dir.as_fd())
                    .map_err(|e| HsmError::io(&shown, e.into()))?;
                Ok((Arc::new(dir), st))
            })
            .await?
        };
        let owner = (
            opts.default_uid.unwrap_or(st.st_uid),
            opts.default_gid.unwrap_or(st.st_gid),
        );
        let src_segs: Vec<String> = opts
            .source_prefix
            .as_deref()
            .map(|p| {
                p.split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let src_refs: Vec<&str> = src_segs.iter().map(String::as_str).collect();
        let list_prefix = self.store().key_for(&src_refs);
        let ctx = Ctx {
            opts,
            target,
            dir,
            strip: src_segs.len(),
            owner,
            made: Arc::new(MadeDirs::default()),
        };
        let mut report = ImportReport::default();
        let mut made_dirs: Vec<DirTimes> = Vec::new();
        // Errors of entries, keyed for the report's order.
        let mut failed: Vec<(String, PathError)> = Vec::new();
        let at_once = self.config().file_concurrency.max(1);
        let (listed_tx, listed_rx) = tokio::sync::mpsc::channel(LISTED_AHEAD);
        let lister = self.list_for_import(&list_prefix, counters, listed_tx);
        let ctx = &ctx;
        let collect = async {
            let listed = futures::stream::unfold(listed_rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let mut described: Vec<_> = listed
                .map(|item| self.describe_for_import(ctx, item))
                .buffer_unordered(DESCRIBES_IN_FLIGHT)
                .collect()
                .await;
            // Directories first, one at a time, parents before children: each gets its
            // metadata as it is made, before anything is made in it, so an import cut
            // anywhere (and resumed with `skip`, which leaves an existing directory) never
            // keeps a directory a child made with the defaults.
            described.sort_by(|a, b| a.0.cmp(&b.0));
            let (dirs, rest): (Vec<_>, Vec<_>) = described
                .into_iter()
                .partition(|(_, d)| matches!(d, Ok(Some(d)) if d.meta.kind == EntryKind::Dir));
            let make = |(key, described): (Option<ObjPath>, Result<Option<Described>>)| async move {
                let res = match described {
                    Ok(Some(d)) => self.import_entry(ctx, d).await,
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                };
                (key, res)
            };
            let results = futures::stream::iter(dirs).then(make).chain(
                futures::stream::iter(rest)
                    .map(make)
                    .buffer_unordered(at_once),
            );
            let mut results = std::pin::pin!(results);
            while let Some((key, mut res)) = results.next().await {
                if failed.len() > opts.max_errors {
                    report.stopped = true;
                    break;
                }
                if let Ok(Some(done)) = &mut res
                    && let Some(times) = done.dir_times.take()
                {
                    made_dirs.push(times);
                }
                if key.is_some() {
                    counters.add_done(
                        1,
                        match &res {
                            Ok(Some(done)) => done.bytes,
                            _ => 0,
                        },
                    );
                }
                match res {
                    Ok(Some(done)) => {
                        match done.kind {
                            EntryKind::File => {
                                report.files += 1;
                                report.bytes += done.bytes;
                            }
                            EntryKind::Dir => report.dirs += 1,
                            EntryKind::Symlink => report.symlinks += 1,
                        }
                        report.note(done.dropped);
                    }
                    Ok(None) => report.skipped += 1,
                    Err(e) => {
                        let key = key.map(|k| k.to_string()).unwrap_or_default();
                        tracing::warn!(key = %key, error = %e, "import");
                        failed.push((
                            key.clone(),
                            PathError {
                                path: PathBuf::from(key),
                                kind: e.kind().into(),
                                error: e.to_string(),
                            },
                        ))
                    }
                }
            }
        };
        // The listing stops at its next send once the collector is gone.
        futures::join!(lister, collect);
        // Key order (listing errors, which have no key, first): the order a sequential
        // import reported them in.
        failed.sort_by(|a, b| a.0.cmp(&b.0));
        report.errors.extend(failed.into_iter().map(|(_, e)| e));
        let target_fd = ctx.dir.clone();
        if !made_dirs.is_empty() {
            let (target, shown, owner, made) = (
                ctx.dir.clone(),
                ctx.target.clone(),
                ctx.owner,
                ctx.made.clone(),
            );
            let failed =
                blocking(move || Ok(restore_dir_times(&target, &shown, owner, &made, made_dirs)))
                    .await?;
            report.errors.extend(failed);
        }
        if report.files + report.dirs + report.symlinks > 0 {
            let shown = ctx.target.clone();
            let synced = blocking(move || {
                nix::unistd::syncfs(target_fd.as_fd()).map_err(|e| HsmError::io(&shown, e.into()))
            })
            .await;
            if let Err(e) = synced {
                report.errors.push(PathError {
                    path: ctx.target.clone(),
                    kind: e.kind().into(),
                    error: e.to_string(),
                });
            }
        }
        if report.errors.len() > opts.max_errors {
            report.stopped = true;
        }
        if report.setid_dropped > 0 || report.xattrs_dropped > 0 {
            tracing::info!(
                setid_dropped = report.setid_dropped,
                xattrs_dropped = report.xattrs_dropped,
                names = ?report.xattrs_dropped_names,
                "import: object metadata not applied"
            );
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        self.metrics().record(
            "import",
            report.errors.is_empty(),
            report.bytes,
            started.elapsed(),
        );
        Ok(report)
    }

    /// The listing stage: every object under `prefix`, then (local store) the keys known
    /// only from sidecars, which are directories or nothing, into `out`. The totals grow as
    /// it goes. An object listing error ends the object listing (what was listed is still
    /// imported); a sidecar listing error is one error and the listing goes on.
    async fn list_for_import(
        &self,
        prefix: &ObjPath,
        counters: &crate::CopyCounters,
        out: tokio::sync::mpsc::Sender<Listed>,
    ) {
        let sidecars_too = !self.store().folder_blobs();
        // Objects listed, so that a file's sidecar is not taken for a directory's.
        let mut objects = std::collections::HashSet::new();
        let (mut count, mut bytes) = (0u64, 0u64);
        let mut listing = self.store().list(Some(prefix));
        while let Some(m) = listing.next().await {
            let item = match m {
                Ok(m) => {
                    count += 1;
                    bytes += m.size;
                    counters.set_totals(count, bytes);
                    if sidecars_too {
                        objects.insert(m.location.clone());
                    }
                    Listed::Object(m.location)
                }
                Err(e) => {
                    let _ = out.send(Listed::Failed(e)).await;
                    break;
                }
            };
            if out.send(item).await.is_err() {
                return;
            }
        }
        drop(listing);
        if !sidecars_too {
            return;
        }
        let under = (!prefix.as_ref().is_empty()).then_some(prefix);
        let mut sidecars = self.store().list_sidecars(under);
        while let Some(k) = sidecars.next().await {
            let item = match k {
                Ok(k) if !objects.contains(&k) => {
                    count += 1;
                    counters.set_totals(count, bytes);
                    Listed::SidecarOnly(k)
                }
                Ok(_) => continue,
                Err(e) => Listed::Failed(e),
            };
            if out.send(item).await.is_err() {
                return;
            }
        }
    }

    /// The decoding stage: a listed key's place below the target (its name checked) and
    /// its sanitized metadata (a HEAD, or the sidecar of a directory). `Ok(None)`: nothing
    /// to make (outside the source prefix, our own records, a file's sidecar). An error is
    /// this key's alone.
    async fn describe_for_import(
        &self,
        ctx: &Ctx<'_>,
        item: Listed,
    ) -> (Option<ObjPath>, Result<Option<Described>>) {
        let (key, listed) = match item {
            Listed::Object(k) => (k, true),
            Listed::SidecarOnly(k) => (k, false),
            Listed::Failed(e) => return (None, Err(e)),
        };
        let res = self.describe(ctx, &key, listed).await;
        (Some(key), res)
    }

    async fn describe(
        &self,
        ctx: &Ctx<'_>,
        key: &ObjPath,
        listed: bool,
    ) -> Result<Option<Described>> {
        let Some(segs) = self.store().rel_of(key) else {
            return Ok(None);
        };
        let comps = validate_segments(key.as_ref(), &segs)?;
        if comps.len() <= ctx.strip {
            return Ok(None);
        }
        let comps = comps[ctx.strip..].to_vec();
        let (uid, gid) = ctx.owner;
        let (mut meta, info) = if listed {
            let info = self
                .store()
                .head(key)
                .await?
                .ok_or_else(|| HsmError::NoArchive {
                    store: self.store().name().to_string(),
                    key: key.to_string(),
                })?;
            let mut m = FileMeta::from_map(&info.meta, info.last_modified_ns, uid, gid);
            // A zero-byte blob ending in `/` is a folder marker too.
            if key.as_ref().ends_with('/') && info.size == 0 {
                m.kind = EntryKind::Dir;
            }
            (m, Some(info))
        } else {
            let raw = self.store().sidecar_only(key).await?.unwrap_or_default();
            let m = FileMeta::from_map(&raw, 0, uid, gid);
            if m.kind != EntryKind::Dir {
                return Ok(None); // a file's sidecar: the object itself comes too
            }
            (m, None)
        };
        let dropped = sanitize(&mut meta, ctx.opts, ctx.owner);
        Ok(Some(Described {
            key: key.clone(),
            comps,
            meta,
            info,
            dropped,
        }))
    }

    /// [`import_described`](Self::import_described), tried again (at most
    /// [`QUOTA_RETRIES`] times) after a commit of the target's filesystem when it failed
    /// with EDQUOT: btrfs charges a subvolume's qgroup with the metadata its running
    /// transaction has reserved until that transaction commits, so entries made many at
    /// once into a small volume can be refused for room a commit gives back. A failed
    /// attempt leaves no temporary; a stub it already renamed into place is found there
    /// and handled by the conflict mode like any existing entry.
    async fn import_entry(&self, ctx: &Ctx<'_>, d: Described) -> Result<Option<Imported>> {
        let mut tries = 0;
        loop {
            match self.import_described(ctx, d.clone()).await {
                Err(e) if tries < QUOTA_RETRIES && quota_exceeded(&e) => {
                    tries += 1;
                    tracing::debug!(key = %d.key, error = %e, "import: committing, then again");
                    let (dir, shown) = (ctx.dir.clone(), ctx.target.clone());
                    blocking(move || {
                        nix::unistd::syncfs(dir.as_fd()).map_err(|e| HsmError::io(&shown, e.into()))
                    })
                    .await?;
                }
                other => return other,
            }
        }
    }

    /// The making stage: one decoded entry made below the target (a directory, a symlink,
    /// a released stub or, with data, a plain file), as the conflict mode says.
    async fn import_described(&self, ctx: &Ctx<'_>, d: Described) -> Result<Option<Imported>> {
        let Described {
            key,
            comps,
            meta,
            info,
            dropped,
        } = d;
        let key = &key;
        let (uid, gid) = ctx.owner;
        let (parents, name) = comps.split_at(comps.len() - 1);
        let name = name[0].clone();
        let path = posix::display_join(&ctx.target, &comps);
        // A stub's temporary is made in the same trip to a blocking thread when the name
        // is free (the usual case: one hand-over less per stub); anything else there goes
        // through the conflict rules below first.
        let fresh_stub = match &info {
            Some(info) if meta.kind == EntryKind::File && !ctx.opts.with_data => {
                Some((stub_pin(key, info, &meta), meta.clone()))
            }
            _ => None,
        };
        let (dir, ex, temp) = {
            let (target, shown, parents) = (ctx.dir.clone(), ctx.target.clone(), parents.to_vec());
            let (name, path, made) = (name.clone(), path.clone(), ctx.made.clone());
            blocking(move || {
                let dir = parent_dir(&target, &shown, &parents, (uid, gid), &made)?;
                let ex = existing(&dir, &name, &path)?;
                let temp = match (&ex, fresh_stub) {
                    (Existing::None, Some((pinned, meta))) => {
                        let shown_dir = path.parent().unwrap_or(&path);
                        Some(stub_temp(&dir, shown_dir, &meta, &pinned)?)
                    }
                    _ => None,
                };
                Ok((dir, ex, temp))
            })
            .await?
        };
        let conflict = ctx.opts.conflict;
        let done = |kind, bytes, dropped| {
            Ok(Some(Imported {
                kind,
                bytes,
                dropped,
                dir_times: None,
            }))
        };

        if meta.kind == EntryKind::Dir {
            match ex {
                Existing::None | Existing::Dir => {}
                _ => {
                    return Err(HsmError::Conflict {
                        path,
                        mode: "directory over a file",
                    });
                }
            }
            let (p, m, c, made) = (path.clone(), meta.clone(), comps.clone(), ctx.made.clone());
            let overwrite = conflict == ConflictMode::OverwriteAlways;
            let applied = blocking(move || {
                let mut made_dirs = made.lock();
                let (fd, new) = posix::dir_at(dir.as_fd(), &name, 0o700, None, &p)?;
                // A directory that was there before this import is left (unless
                // overwrite_always); one a child made in this import gets its metadata.
                if !new && !overwrite && !made_dirs.contains(&c) {
                    return Ok(false);
                }
                posix::apply_fd(&p, fd.as_fd(), &m)?;
                made_dirs.insert(c);
                Ok(true)
            })
            .await?;
            if !applied {
                return Ok(None);
            }
            return Ok(Some(Imported {
                kind: EntryKind::Dir,
                bytes: 0,
                dropped,
                dir_times: Some(DirTimes {
                    comps,
                    atime_ns: meta.atime_ns,
                    mtime_ns: meta.mtime_ns,
                }),
            }));
        }

        let replace = match ex {
            Existing::None => false,
            Existing::Dir => {
                return Err(HsmError::Conflict {
                    path,
                    mode: "file over a directory",
                });
            }
            Existing::Special(_) if conflict == ConflictMode::Skip => return Ok(None),
            Existing::Special(fmt) => {
                return Err(HsmError::refused(
                    &path,
                    format!(
                        "a {} is where the stub would go: left alone, never opened",
                        backend::local::beneath::file_type_name(fmt)
                    ),
                ));
            }
            Existing::File | Existing::Symlink => match conflict {
                ConflictMode::Fail => {
                    return Err(HsmError::Conflict {
                        path,
                        mode: conflict.name(),
                    });
                }
                ConflictMode::Skip => return Ok(None),
                ConflictMode::OverwriteIfDirty => {
                    if !matches!(ex, Existing::File) || !self.dirty_at(&dir, &name, &path).await? {
                        return Ok(None);
                    }
                    true
                }
                ConflictMode::OverwriteIfChanged => {
                    let same = {
                        let (dir, name, path, meta) =
                            (dir.clone(), name.clone(), path.clone(), meta.clone());
                        blocking(move || already_there(&dir, &name, &path, &meta)).await?
                    };
                    if same {
                        return Ok(None);
                    }
                    true
                }
                ConflictMode::OverwriteAlways => true,
            },
        };
        let Some(info) = info else {
            return Ok(None);
        };
        if ctx.opts.with_data && meta.kind == EntryKind::File {
            let bytes = info.size;
            self.make_copy(&dir, &name, &path, key, info, &meta, replace)
                .await?;
            return done(EntryKind::File, bytes, dropped);
        }
        if meta.kind == EntryKind::Symlink {
            self.make_symlink(&dir, &name, &path, key, &info, &meta, replace)
                .await?;
            return done(EntryKind::Symlink, 0, dropped);
        }
        let stub = self
            .make_stub(&dir, &name, &path, key, info, &meta, replace, temp)
            .await?;
        done(EntryKind::File, stub.info.size, dropped)
    }

    /// Writes the object version `info` of `key` as a plain file at `name` in `dir`: its
    /// data (ranged GETs pinned to the ETag, checked against the recorded checksum) into an
    /// exclusive temporary, flushed, given the (sanitized) metadata, then renamed into
    /// place, so the name holds the old entry or the whole new file, never a part.
    #[allow(clippy::too_many_arguments)]
    async fn make_copy(
        &self,
        dir: &Arc<OwnedFd>,
        name: &str,
        path: &Path,
        key: &ObjPath,
        info: ObjectInfo,
        meta: &FileMeta,
        replace: bool,
    ) -> Result<()> {
        let shown_dir = path.parent().unwrap_or(path).to_path_buf();
        let (guard, file) = {
            let (dir, shown_dir) = (dir.clone(), shown_dir.clone());
            blocking(move || {
                let (guard, file) = exclusive_temp(&dir, "copy", &shown_dir)?;
                Ok((guard, Arc::new(file)))
            })
            .await?
        };
        let (tmp, id) = (guard.name.clone(), guard.id);
        let tmp_path = shown_dir.join(&tmp);
        let res = async {
            let actual = self
                .download_into(
                    path,
                    key,
                    info.e_tag.as_deref(),
                    info.size,
                    &file,
                    &tmp_path,
                )
                .await?;
            if let Some(expected) = meta.checksum.clone()
                && expected != actual
            {
                return Err(HsmError::Checksum {
                    path: path.to_path_buf(),
                    expected,
                    actual,
                });
            }
            let (d, t, n, p, tp, m, f) = (
                dir.clone(),
                tmp.clone(),
                name.to_string(),
                path.to_path_buf(),
                tmp_path.clone(),
                meta.clone(),
                file.clone(),
            );
            blocking(move || {
                f.sync_all().map_err(|e| HsmError::io(&tp, e))?;
                posix::apply_fd(&tp, f.as_fd(), &m)?;
                place(&d, &t, &n, id, replace, &p)
            })
            .await
        }
        .await;
        // Placed, the temporary's name is gone; failed, it is removed before we answer.
        match res {
            Ok(()) => guard.placed(),
            Err(_) => guard.remove().await,
        }
        res
    }

    /// Whether the regular file `name` in `dir` is dirty (changed since archived). Anything
    /// else there now is not (and is left); a name swapped while its state was read is an
    /// error.
    async fn dirty_at(&self, dir: &Arc<OwnedFd>, name: &str, path: &Path) -> Result<bool> {
        let id = {
            let (dir, name, path) = (dir.clone(), name.to_string(), path.to_path_buf());
            blocking(move || {
                match backend::local::beneath::open_regular(
                    dir.as_fd(),
                    &name,
                    OFlag::O_RDONLY | OFlag::O_NONBLOCK,
                ) {
                    Ok(fd) => posix::identity(fd.as_fd(), &path).map(Some),
                    Err(backend::local::beneath::OpenRegularError::NotRegular(_)) => Ok(None),
                    Err(e) => Err(HsmError::io(&path, e.into())),
                }
            })
            .await?
        };
        let Some(id) = id else { return Ok(false) };
        let state = self.backend().hsm_state(path).await?;
        if !still_same(dir, name, id).await? {
            return Err(HsmError::refused(
                path,
                "replaced while its HSM state was read",
            ));
        }
        Ok(state.flags.dirty)
    }

    /// Makes the symlink an object stands for (target from our metadata, or the object's
    /// content as azcopy stores it), owned like a stub, without ever following it.
    #[allow(clippy::too_many_arguments)]
    async fn make_symlink(
        &self,
        dir: &Arc<OwnedFd>,
        name: &str,
        path: &Path,
        key: &ObjPath,
        info: &ObjectInfo,
        meta: &FileMeta,
        replace: bool,
    ) -> Result<()> {
        let target = match &meta.symlink_target {
            Some(t) => t.clone(),
            None => {
                if info.size > 4096 {
                    return Err(HsmError::HostileName {
                        key: key.to_string(),
                        why: "symlink target longer than 4096 bytes".into(),
                    });
                }
                let bytes = self.store().get_range(key, 0..info.size).await?;
                String::from_utf8(bytes.to_vec()).map_err(|_| HsmError::HostileName {
                    key: key.to_string(),
                    why: "symlink target is not UTF-8".into(),
                })?
            }
        };
        if target.is_empty() || target.contains('\0') || target.len() > 4095 {
            return Err(HsmError::HostileName {
                key: key.to_string(),
                why: "symlink target empty, too long or with a NUL".into(),
            });
        }
        let (dir, name, path) = (dir.clone(), name.to_string(), path.to_path_buf());
        let (uid, gid) = (meta.uid, meta.gid);
        blocking(move || {
            let shown_dir = path.parent().unwrap_or(&path).to_path_buf();
            let (tmp, ()) = with_temp_name("link", &shown_dir, |tmp| {
                nix::unistd::symlinkat(target.as_str(), dir.as_fd(), tmp)
            })?;
            let id = posix::lstat_at(dir.as_fd(), &tmp)
                .map_err(|e| HsmError::io(&path, e))?
                .map(|st| (st.st_dev, st.st_ino))
                .ok_or_else(|| HsmError::refused(&path, "the temporary symlink vanished"))?;
            let res = match nix::unistd::fchownat(
                dir.as_fd(),
                tmp.as_str(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(()) | Err(Errno::EPERM) => place(&dir, &tmp, &name, id, replace, &path),
                Err(e) => Err(HsmError::io(&path, e.into())),
            };
            if res.is_err() {
                drop_temp(&dir, &tmp, id);
            }
            res
        })
        .await
    }

    /// Makes the released stub of one object version at `name` in `dir`: a sparse file of
    /// the object's size under a fresh exclusive temporary name, with the (sanitized)
    /// metadata (made here unless `temp` is that temporary, [`stub_temp`]), marked archived
    /// and released, then renamed into place (over an existing entry only when `replace`).
    /// Every step checks that the names still hold our inode.
    #[allow(clippy::too_many_arguments)]
    async fn make_stub(
        &self,
        dir: &Arc<OwnedFd>,
        name: &str,
        path: &Path,
        key: &ObjPath,
        info: ObjectInfo,
        meta: &FileMeta,
        replace: bool,
        temp: Option<(TempGuard, std::fs::File)>,
    ) -> Result<NewStub> {
        let shown_dir = path.parent().unwrap_or(path).to_path_buf();
        let (guard, file) = match temp {
            Some(made) => made,
            None => {
                let (dir, meta, shown_dir) = (dir.clone(), meta.clone(), shown_dir.clone());
                let pinned = stub_pin(key, &info, &meta);
                blocking(move || stub_temp(&dir, &shown_dir, &meta, &pinned)).await?
            }
        };
        let (tmp, id) = (guard.name.clone(), guard.id);
        let tmp_path = shown_dir.join(&tmp);
        let res = async {
            self.backend()
                .hsm_mark(
                    &tmp_path,
                    flags(HS_ARCHIVED | HS_EXISTS | HS_RELEASED),
                    flags(HS_DIRTY),
                    Some(self.config().archive_id),
                )
                .await?;
            let (d, t, n, p, tp) = (
                dir.clone(),
                tmp.clone(),
                name.to_string(),
                path.to_path_buf(),
                tmp_path.clone(),
            );
            blocking(move || {
                if !posix::still_same(d.as_fd(), &t, id) {
                    return Err(HsmError::refused(
                        &tp,
                        "replaced while the stub was being marked",
                    ));
                }
                place(&d, &t, &n, id, replace, &p)
            })
            .await?;
            // The rename moved the ctime: take the stub's data version afresh.
            self.backend()
                .hsm_mark(path, flags(0), flags(HS_DIRTY), None)
                .await?;
            if !still_same(dir, name, id).await? {
                return Err(HsmError::refused(
                    path,
                    "replaced while the stub was being made",
                ));
            }
            Ok(())
        }
        .await;
        // Dropped after the rename, the guard finds its name gone and removes nothing.
        match res {
            Ok(()) => guard.placed(),
            Err(e) => {
                guard.remove().await;
                return Err(e);
            }
        }
        Ok(NewStub {
            file,
            path: path.to_path_buf(),
            key: key.clone(),
            info,
        })
    }

    /// Exports what is new or changed under `dir` since the last export: files never
    /// archived or dirty, and directories and symlinks whose object is missing or older.
    /// An object that exists for a file we never archived is a conflict.
    pub async fn export(&self, dir: &Path, conflict: ConflictMode) -> Result<crate::TreeReport> {
        let (abs, _) = self.resolve(dir)?;
        let paths = {
            let abs = abs.clone();
            blocking(move || crate::walk::walk(&abs)).await?
        };
        let mut report = crate::TreeReport::default();
        let results: Vec<_> = futures::stream::iter(paths.into_iter().map(|p| async move {
            let r = self.export_one(&p, conflict).await;
            (p, r)
        }))
        .buffer_unordered(self.config().file_concurrency)
        .collect()
        .await;
        for (p, r) in results {
            match r {
                Ok(Some(rep)) => {
                    if rep.outcome == Outcome::Done {
                        report.done += 1;
                    } else {
                        report.skipped += 1;
                    }
                    report.bytes += rep.bytes;
                    report.items.push(rep);
                }
                Ok(None) => report.skipped += 1,
                Err(e) => report.errors.push(PathError {
                    path: p,
                    kind: e.kind().into(),
                    error: e.to_string(),
                }),
            }
        }
        Ok(report)
    }

    async fn export_one(
        &self,
        p: &Path,
        conflict: ConflictMode,
    ) -> Result<Option<crate::OpReport>> {
        let md = {
            let p = p.to_path_buf();
            blocking(move || std::fs::symlink_metadata(&p).map_err(|e| HsmError::io(&p, e))).await?
        };
        let key = self.key_of(p)?;
        if md.is_file() {
            let st = self.backend().hsm_state(p).await?;
            if st.flags.archived && st.flags.exists && !st.flags.dirty {
                return Ok(None);
            }
            if st.flags.released {
                return Ok(None);
            }
            if !st.flags.archived && self.store().head(&key).await?.is_some() {
                match conflict {
                    ConflictMode::Fail => {
                        return Err(HsmError::Conflict {
                            path: p.to_path_buf(),
                            mode: conflict.name(),
                        });
                    }
                    ConflictMode::Skip => return Ok(None),
                    ConflictMode::OverwriteIfDirty
                    | ConflictMode::OverwriteIfChanged
                    | ConflictMode::OverwriteAlways => {}
                }
            }
            return self.archive(p).await.map(Some);
        }
        // Directories and symlinks: compare the recorded mtime.
        let cur = {
            let p = p.to_path_buf();
            blocking(move || posix::capture(&p)).await?
        };
        let have = if self.store().folder_blobs() || cur.kind == EntryKind::Symlink {
            self.store().head(&key).await?.map(|i| i.meta)
        } else {
            self.store().sidecar_only(&key).await?
        };
        if let Some(m) = have {
            let old = FileMeta::from_map(&m, i64::MIN, 0, 0);
            if old.mtime_ns == cur.mtime_ns && old.mode == cur.mode && old.uid == cur.uid {
                return Ok(None);
            }
        }
        self.archive(p).await.map(Some)
    }
}

/// [`posix::still_same`] on a blocking thread (it stats the name).
async fn still_same(dir: &Arc<OwnedFd>, name: &str, id: (u64, u64)) -> Result<bool> {
    let (dir, name) = (dir.clone(), name.to_string());
    blocking(move || Ok(posix::still_same(dir.as_fd(), &name, id))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(v: &[&str]) -> Vec<std::result::Result<String, String>> {
        v.iter().map(|s| Ok(s.to_string())).collect()
    }

    #[test]
    fn only_user_xattrs_unless_allowed_and_never_ours() {
        let none: Vec<String> = Vec::new();
        assert!(xattr_importable("user.foo", &none));
        for name in [
            "security.capability",
            "security.selinux",
            "trusted.foo",
            "system.posix_acl_access",
            "trusted.lustrekit.pin",
            "user.lustrekit.hsm",
            "user.lustrekit.pin",
        ] {
            assert!(!xattr_importable(name, &none), "{name}");
        }
        let allow = vec!["security.selinux".to_string(), "trusted".to_string()];
        assert!(xattr_importable("security.selinux", &allow));
        assert!(!xattr_importable("security.capability", &allow));
        assert!(!xattr_importable("security.selinuxx", &allow));
        assert!(xattr_importable("trusted.foo", &allow));
        assert!(!xattr_importable("trustedfoo.x", &allow));
        let all = vec!["trusted.".to_string(), "user.".to_string(), String::new()];
        assert!(!xattr_importable("trusted.lustrekit.hsm", &all));
        assert!(!xattr_importable("user.lustrekit.pin", &all));
        assert!(!xattr_importable("system.x", &all));
    }

    #[test]
    fn sanitize_drops_setid_owner_and_xattrs_by_default() {
        let meta = FileMeta {
            kind: EntryKind::File,
            mode: 0o7755,
            uid: 0,
            gid: 0,
            xattrs: vec![
                ("security.capability".into(), vec![1]),
                ("user.keep".into(), vec![2]),
                ("trusted.lustrekit.pin".into(), vec![3]),
            ],
            ..Default::default()
        };
        let mut m = meta.clone();
        let d = sanitize(&mut m, &ImportOptions::default(), (1234, 5678));
        assert_eq!((m.mode, m.uid, m.gid), (0o755, 1234, 5678));
        assert_eq!(m.xattrs, vec![("user.keep".to_string(), vec![2])]);
        assert!(d.setid);
        assert_eq!(
            d.xattrs,
            vec!["security.capability", "trusted.lustrekit.pin"]
        );

        let opts = ImportOptions {
            preserve_owner: true,
            preserve_setid: true,
            xattr_allow: vec!["security.capability".into(), "trusted.".into()],
            ..Default::default()
        };
        let mut m = meta.clone();
        let d = sanitize(&mut m, &opts, (1234, 5678));
        assert_eq!((m.mode, m.uid, m.gid), (0o7755, 0, 0));
        assert_eq!(m.xattrs.len(), 2);
        assert_eq!(d.xattrs, vec!["trusted.lustrekit.pin"]);
        assert!(!d.setid);

        // A directory keeps its sticky bit; setgid goes.
        let mut dir = FileMeta {
            kind: EntryKind::Dir,
            mode: 0o3777,
            ..Default::default()
        };
        assert!(sanitize(&mut dir, &ImportOptions::default(), (1, 1)).setid);
        assert_eq!(dir.mode, 0o1777);
        let mut dir = FileMeta {
            kind: EntryKind::Dir,
            mode: 0o1777,
            ..Default::default()
        };
        assert!(!sanitize(&mut dir, &ImportOptions::default(), (1, 1)).setid);
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            vec![".."],
            vec!["a", "..", "b"],
            vec!["."],
            vec!["", "etc", "passwd"],
            vec!["a", "b/c"],
            vec!["nul\0here"],
        ] {
            assert!(validate_segments("k", &segs(&bad)).is_err(), "{bad:?}");
        }
        let long = "x".repeat(256);
        assert!(validate_segments("k", &segs(&[&long])).is_err());
        let many: Vec<String> = (0..20).map(|_| "y".repeat(250)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(validate_segments("k", &segs(&many)).is_err());
        assert!(validate_segments("k", &[Err("%FF".into())]).is_err());
        assert_eq!(
            validate_segments("k", &segs(&["a", "b c", "ü%"])).expect("ok"),
            vec!["a", "b c", "ü%"]
        );
    }
}
