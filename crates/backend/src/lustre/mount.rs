//! Client mounts on the node, in the two modes of ARCHITECTURE.md (CSI node model):
//! - **direct**: `mount -t lustre -o OPTS <mgs nodes>:/<fsname>/<share> TARGET`, a fileset
//!   sub-mount (`mount-lustre.md` (a): failover MGS nodes joined by `:`);
//! - **bind**: one client mount of the whole filesystem per node, `mount -t lustre
//!   [-o node_mount_options] <mgs nodes>:/<fsname> <node_mount_root>/<fsname>`, and a bind
//!   mount of `<shared>/<share>` at each target, made read-only by a remount.
//!
//! The shared mount is reference counted by the kernel's own mount table: its users are the
//! mounts in `/proc/self/mountinfo` with the shared mount's device whose root is a directory
//! beneath the shared mount's root, i.e. the bind mounts made from it. Nothing is counted in
//! memory, so a restarted node plugin sees exactly what is mounted, and the unmount that
//! leaves no user behind removes the shared mount.
//!
//! One async mutex per shared mount serialises "mount it if needed, then bind" against "count
//! its users, then unmount it". Every step taken under it is bounded (the runner's command
//! timeout, [`crate::mount`]'s step timeouts, [`bounded`] for the rest), so a hung server
//! delays other publishes of that filesystem by at most those timeouts and never wedges them.
//!
//! Unmounting a target is the shared bounded cascade of [`crate::mount::unmount_cascade`].

use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use lustre_model::RelPath;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::{LustreBackend, On};
use crate::fscrypt::KeyIdentifier;
use crate::mount::{
    MountInfoEntry, UNMOUNT_STEP_TIMEOUT, bind_flags, bind_mount, mount_table, top_mount,
    unmount_cascade,
};
use crate::{BackendError, MountMode, MountRequest, Result, VolumeStatfs};

/// `<mgs nodes>:/<fsname>/<path>`: the device of a direct (fileset) mount, where `path` is
/// the share as this node names it ([`path_on_node`]); `<mgs nodes>:/<fsname>` when the
/// share is the node's fileset itself.
pub(super) fn device(b: &LustreBackend, request: &MountRequest) -> Result<String> {
    let root = shared_device(b);
    Ok(match path_on_node(request)? {
        Some(path) => format!("{root}/{}", path.as_str()),
        None => root,
    })
}

/// The share as this node's client names it. A node in a tenant's nodemap has its mounts
/// rooted at the tenant's fileset by the server (`mount-lustre.md`, fileset behaviour): up
/// to 2.16 the server appends the requested path to the fileset, and 2.17 does too unless
/// the path is, or starts with, a fileset. So the share is named relative to the fileset
/// (`None`: the fileset itself, mounted by naming no path), and a relative path that would
/// itself start with the fileset is refused, since the two releases would read it apart.
pub(super) fn path_on_node(request: &MountRequest) -> Result<Option<RelPath>> {
    let Some(fileset) = &request.fileset else {
        return Ok(Some(request.share.clone()));
    };
    if request.share == *fileset {
        return Ok(None);
    }
    let relative = request.share.relative_to(fileset).ok_or_else(|| {
        BackendError::InvalidState(format!(
            "share {} is not under {}, the fileset this node's nodemap roots its mounts at",
            request.share, fileset
        ))
    })?;
    if relative.is_within(fileset) {
        return Err(BackendError::InvalidState(format!(
            "share {} is {} under the fileset {fileset}: Lustre 2.17 would mount that path as \
             it is and earlier releases beneath the fileset, so it is refused as ambiguous",
            request.share, relative
        )));
    }
    Ok(Some(relative))
}

/// Checks the share's root, open at `dir` on this node, against the project ID the request
/// expects. A root this node may not read (root squashed by its nodemap, a mode that
/// shuts the squash user out) is let through only under a fileset, which already confines
/// the mount to the node's own tenant, and said in the log; anything else unreadable fails.
fn verify_project(
    dir: std::os::fd::BorrowedFd<'_>,
    request: &MountRequest,
    shown_as: &Path,
) -> Result<()> {
    if request.expect_project.is_none() {
        return Ok(());
    }
    judge_project(crate::mount::project_id_of(dir), request, shown_as)
}

/// What [`verify_project`] makes of what it read.
fn judge_project(
    read: std::result::Result<u32, Errno>,
    request: &MountRequest,
    shown_as: &Path,
) -> Result<()> {
    let Some(expected) = request.expect_project else {
        return Ok(());
    };
    match read {
        Ok(found) if found == expected.get() => Ok(()),
        Ok(found) => Err(BackendError::WrongDirectory {
            path: shown_as.to_path_buf(),
            expected: expected.get(),
            found,
        }),
        Err(errno @ (Errno::EACCES | Errno::EPERM)) if request.fileset.is_some() => {
            tracing::warn!(share = %request.share, dir = %shown_as.display(), %errno,
                "cannot read the share root's project ID on this node (root squashed?); \
                 not verified, the tenant fileset alone confines this mount");
            Ok(())
        }
        Err(errno) => Err(BackendError::io(
            shown_as,
            std::io::Error::other(format!(
                "reading its project ID to check it is volume {}'s: {errno}",
                request.share
            )),
        )),
    }
}

/// Opens the directory mounted at `target` (no symlink followed) and checks its project ID,
/// on the bounded pool: the mount is a Lustre client's, and its server may hang.
async fn verify_mounted(request: &MountRequest, target: &Path, timeout: Duration) -> Result<()> {
    if request.expect_project.is_none() {
        return Ok(());
    }
    let (req, path) = (request.clone(), target.to_path_buf());
    crate::mount::FsCalls::global()
        .run("project check", target, timeout, move || {
            use std::os::fd::AsFd;
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = nix::fcntl::open(&path, flags, Mode::empty())
                .map_err(|e| BackendError::io(&path, e.into()))?;
            verify_project(fd.as_fd(), &req, &path)
        })
        .await?
}

/// `<mgs nodes>:/<fsname>`: the device of the shared client mount of bind mode.
pub(super) fn shared_device(b: &LustreBackend) -> String {
    format!("{}:/{}", b.inner.mgs_spec, b.inner.config.fsname.as_str())
}

/// Refuses an option that is not one word: it would smuggle others into the `-o` list.
fn check_option(option: &str) -> Result<()> {
    if option.is_empty() || option.contains([',', ' ', '\t', '\n', '\0']) {
        return Err(BackendError::InvalidState(format!(
            "mount option {option:?} is not one option"
        )));
    }
    Ok(())
}

/// The `-o` list of a direct mount: `ro` first when read-only, then the caller's options,
/// without repeats.
pub(super) fn options(request: &MountRequest) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    if request.read_only {
        out.push("ro".to_owned());
    }
    for option in &request.options {
        check_option(option)?;
        if request.read_only && option == "rw" {
            return Err(BackendError::InvalidState(
                "a read-only mount cannot also be `rw`".to_owned(),
            ));
        }
        if !out.contains(option) {
            out.push(option.clone());
        }
    }
    Ok(out)
}

/// The options a bind-mode volume applies to its own bind mount. One client mount serves
/// every bind volume of the node, so a Lustre client option cannot differ per volume: one
/// the shared mount already has (`node_mount_options`) is satisfied and dropped, and any
/// other is refused rather than silently ignored.
pub(super) fn bind_options(
    request: &MountRequest,
    shared_options: &[String],
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for option in &request.options {
        check_option(option)?;
        if request.read_only && option == "rw" {
            return Err(BackendError::InvalidState(
                "a read-only mount cannot also be `rw`".to_owned(),
            ));
        }
        if bind_flags(false, std::slice::from_ref(option)).is_ok() {
            out.push(option.clone());
        } else if !shared_options.contains(option) {
            return Err(BackendError::unsupported(
                "mount option",
                format!(
                    "{option:?} is a Lustre client option; in bind mode one client mount serves \
                     every volume of the node, so set it in the lustre backend's \
                     node_mount_options, or use mountMode direct"
                ),
            ));
        }
    }
    Ok(out)
}

/// The argv of the shared client mount.
pub(super) fn shared_mount_argv(b: &LustreBackend, shared: &Path) -> Result<Vec<String>> {
    let shared = utf8(shared, "shared mount point")?;
    let mut argv = vec![
        b.inner.config.mount.clone(),
        "-t".to_owned(),
        "lustre".to_owned(),
    ];
    let options = &b.inner.config.node_mount_options;
    for option in options {
        check_option(option)?;
    }
    if !options.is_empty() {
        argv.push("-o".to_owned());
        argv.push(options.join(","));
    }
    argv.push(shared_device(b));
    argv.push(shared.to_owned());
    Ok(argv)
}

fn utf8<'a>(path: &'a Path, what: &str) -> Result<&'a str> {
    path.to_str().ok_or_else(|| {
        BackendError::InvalidState(format!("{what} {} is not valid UTF-8", path.display()))
    })
}

pub(super) async fn mount(b: &LustreBackend, request: &MountRequest) -> Result<()> {
    let target = utf8(&request.target, "mount target")?;
    if !request.target.is_absolute() {
        return Err(BackendError::InvalidState(format!(
            "mount target {target:?} must be absolute"
        )));
    }
    match request.mode {
        MountMode::Direct => mount_direct(b, request, target).await,
        MountMode::Bind => mount_bind(b, request).await,
    }
}

async fn mount_direct(b: &LustreBackend, request: &MountRequest, target: &str) -> Result<()> {
    let timeout = b.runner(On::Node).default_timeout();
    if crate::mount::is_mount_point(&request.target)? {
        tracing::debug!(target, "already mounted");
        return verify_or_unmount(request, timeout).await;
    }
    let device = device(b, request)?;
    let options = options(request)?;
    let mut argv = vec![
        b.inner.config.mount.clone(),
        "-t".to_owned(),
        "lustre".to_owned(),
    ];
    if !options.is_empty() {
        argv.push("-o".to_owned());
        argv.push(options.join(","));
    }
    argv.push(device);
    argv.push(target.to_owned());
    b.run_ok(On::Node, &argv).await?;
    verify_or_unmount(request, timeout).await
}

/// The project check of a direct mount: what fails it is unmounted at once, so no pod ever
/// sees a directory that is not the volume.
async fn verify_or_unmount(request: &MountRequest, timeout: Duration) -> Result<()> {
    let Err(error) = verify_mounted(request, &request.target, timeout).await else {
        return Ok(());
    };
    tracing::warn!(share = %request.share, target = %request.target.display(), %error,
        "the mount is not the volume's directory: unmounting it");
    if let Err(undo) = unmount_cascade(&request.target).await {
        tracing::warn!(target = %request.target.display(), error = %undo,
            "could not unmount the refused mount");
    }
    Err(error)
}

/// Bind mode: make sure the shared client mount is there, then bind the share from it.
/// On a tenant's node the shared mount's root is the tenant's fileset (the server roots a
/// mount that names no path there), so the share is found relative to it.
async fn mount_bind(b: &LustreBackend, request: &MountRequest) -> Result<()> {
    let Some(on_node) = path_on_node(request)? else {
        return Err(BackendError::unsupported(
            "bind mode",
            format!(
                "{} is this node's whole tenant fileset, which is the shared client mount \
                 itself; publish it with mountMode direct",
                request.share
            ),
        ));
    };
    let shared = b.shared_mount_path();
    let bind_opts = bind_options(request, &b.inner.config.node_mount_options)?;
    let flags = bind_flags(request.read_only, &bind_opts)?;
    let read_only = flags.contains(nix::mount::MsFlags::MS_RDONLY);
    let target = request.target.clone();

    let lock = shared_lock(&shared);
    let _serialised = lock.lock().await;

    let entries = mount_table()?;
    if let Some(existing) = top_mount(&entries, &target) {
        // A retry of a publish that worked: it must be this share, with this read-only flag.
        return match top_mount(&entries, &shared) {
            Some(s)
                if existing.device == s.device
                    && existing.root == s.root.join(on_node.as_str())
                    && existing.read_only == read_only =>
            {
                tracing::debug!(target = %target.display(), "already bind-mounted");
                Ok(())
            }
            _ => Err(BackendError::AlreadyExists {
                path: format!(
                    "{} (mounted, but not as a {} bind mount of {})",
                    target.display(),
                    if read_only { "read-only" } else { "read-write" },
                    request.share.as_str()
                ),
            }),
        };
    }
    check_target_dir(&target)?;

    if top_mount(&entries, &shared).is_none() {
        mount_shared(b, &shared).await?;
    }
    let timeout = b.runner(On::Node).default_timeout();
    let result = bind_share(&shared, &on_node, request, flags, timeout).await;
    match &result {
        Ok(()) => tracing::info!(share = %request.share, target = %target.display(),
            shared = %shared.display(), read_only, "bind-mounted from the shared client mount"),
        Err(error) => {
            // The shared mount may have been made for this volume alone: do not leave it.
            if let Err(cleanup) = release_if_unused_locked(&shared).await {
                tracing::warn!(shared = %shared.display(), %cleanup,
                    "could not remove the unused shared client mount after a failed bind");
            }
            tracing::warn!(share = %request.share, target = %target.display(), %error,
                "bind mount failed");
        }
    }
    result
}

/// The target must be a real directory: a symlink there would carry the mount elsewhere.
fn check_target_dir(target: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(target).map_err(|e| BackendError::io(target, e))?;
    if !meta.file_type().is_dir() {
        return Err(BackendError::InvalidState(format!(
            "mount target {} is not a directory (symlinks are refused)",
            target.display()
        )));
    }
    Ok(())
}

/// Mounts the filesystem at `shared` and checks the kernel now lists a mount there (a
/// mount helper that exits 0 without mounting would otherwise leave us binding from the
/// empty directory underneath).
async fn mount_shared(b: &LustreBackend, shared: &Path) -> Result<()> {
    let dir = shared.to_path_buf();
    bounded(
        format!("mkdir -p {}", shared.display()),
        UNMOUNT_STEP_TIMEOUT,
        move || std::fs::create_dir_all(&dir).map_err(|e| BackendError::io(dir, e)),
    )
    .await??;
    let argv = shared_mount_argv(b, shared)?;
    tracing::info!(shared = %shared.display(), device = %shared_device(b),
        "mounting the shared client mount for bind-mode volumes");
    b.run_ok(On::Node, &argv).await?;
    if top_mount(&mount_table()?, shared).is_none() {
        return Err(BackendError::InvalidState(format!(
            "{} is not a mount point after `{}` succeeded",
            shared.display(),
            super::runner::display_argv(&argv)
        )));
    }
    Ok(())
}

/// Binds `<shared>/<on_node>` on the request's target. The share is opened beneath the
/// shared mount with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)`,
/// checked through that descriptor ([`verify_project`]), and the bind made from it, so a
/// symlink planted on the way (or swapped in meanwhile) cannot make us mount something
/// outside the filesystem into a pod, nor a directory other than the one checked.
async fn bind_share(
    shared: &Path,
    on_node: &RelPath,
    request: &MountRequest,
    flags: nix::mount::MsFlags,
    timeout: Duration,
) -> Result<()> {
    let (root, rel, req) = (shared.to_path_buf(), on_node.clone(), request.clone());
    let what = format!("open {} beneath {}", on_node.as_str(), shared.display());
    let fd = bounded(what, timeout, move || {
        use std::os::fd::AsFd;
        let fd = open_beneath(&root, &rel)?;
        verify_project(fd.as_fd(), &req, &root.join(rel.as_str()))?;
        Ok::<_, BackendError>(fd)
    })
    .await??;
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let result = bind_mount(source, request.target.clone(), flags).await;
    drop(fd);
    result
}

fn open_beneath(root: &Path, share: &RelPath) -> Result<OwnedFd> {
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root_fd = nix::fcntl::open(root, dir_flags, Mode::empty())
        .map_err(|e| BackendError::io(root, e.into()))?;
    // No O_NOFOLLOW here: with O_PATH it would open a final symlink itself (ENOTDIR), where
    // RESOLVE_NO_SYMLINKS refuses it, like every other symlink on the way, with ELOOP.
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    nix::fcntl::openat2(&root_fd, share.as_str(), how).map_err(|errno| match errno {
        Errno::ELOOP | Errno::EXDEV => BackendError::InvalidState(format!(
            "share {} crosses a symlink or another mount under {}; refused",
            share.as_str(),
            root.display()
        )),
        Errno::ENOTDIR => BackendError::InvalidState(format!(
            "share {} under {} is not a directory",
            share.as_str(),
            root.display()
        )),
        other => BackendError::io(root.join(share.as_str()), other.into()),
    })
}

/// Unmounts `target` (bounded cascade), then the shared client mount if no bind mount from
/// it is left. The target is unmounted without the lock: it is the caller's alone (the CSI
/// node serialises per volume), and only the shared mount is contended.
pub(super) async fn unmount(b: &LustreBackend, target: &Path) -> Result<()> {
    unmount_cascade(target).await?;
    let shared = b.shared_mount_path();
    let lock = shared_lock(&shared);
    let _serialised = lock.lock().await;
    release_if_unused_locked(&shared).await
}

/// With the shared mount's lock held: unmounts it when it has no user. Not mounted is fine.
async fn release_if_unused_locked(shared: &Path) -> Result<()> {
    match shared_mount_users(&mount_table()?, shared) {
        None => Ok(()),
        Some(0) if keys_held(shared) => {
            // A publish added its key and has not bound yet: a new client mount would lack it.
            tracing::debug!(shared = %shared.display(),
                "no bind mount is left, but a volume key added here is still held");
            Ok(())
        }
        Some(0) => {
            tracing::info!(shared = %shared.display(),
                "no bind mount is left: unmounting the shared client mount");
            unmount_cascade(shared).await
        }
        Some(users) => {
            tracing::debug!(shared = %shared.display(), users, "shared client mount still in use");
            Ok(())
        }
    }
}

/// The fscrypt keys this process added to each shared client mount and has not removed:
/// while one is held the mount stays, even with no bind mount yet, so the publish that added
/// the key binds from the mount that has it. Changed only under the mount's lock. After a
/// restart it is empty, and the bind mounts alone keep the mount (and its keys) up.
static HELD_KEYS: LazyLock<Mutex<HashMap<PathBuf, HashSet<KeyIdentifier>>>> =
    LazyLock::new(Mutex::default);

pub(super) fn hold_key(shared: &Path, id: KeyIdentifier) {
    let mut held = HELD_KEYS.lock().unwrap_or_else(PoisonError::into_inner);
    held.entry(shared.to_path_buf()).or_default().insert(id);
}

pub(super) fn forget_key(shared: &Path, id: &KeyIdentifier) {
    let mut held = HELD_KEYS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(ids) = held.get_mut(shared) {
        ids.remove(id);
        if ids.is_empty() {
            held.remove(shared);
        }
    }
}

fn keys_held(shared: &Path) -> bool {
    let held = HELD_KEYS.lock().unwrap_or_else(PoisonError::into_inner);
    held.get(shared).is_some_and(|ids| !ids.is_empty())
}

/// What [`on_shared_mount`] does with an fscrypt key, which decides what it does with the
/// mount itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyStep {
    /// Adding a key before the volume's bind: the shared mount is made when absent (and
    /// removed again when adding fails and nothing uses it).
    Add,
    /// Removing a key after the volume's unmount: nothing to do when the shared mount is
    /// gone (its keys went with it); an unused one is unmounted afterwards, so a mount made
    /// for a key whose publish then failed does not linger.
    Remove,
}

/// Runs `f` on the root of the shared client mount (opened without following symlinks),
/// under that mount's lock and on the blocking pool, bounded by the command timeout. `None`
/// when removing and nothing is mounted.
pub(super) async fn on_shared_mount<T: Send + 'static>(
    b: &LustreBackend,
    step: KeyStep,
    f: impl FnOnce(std::os::fd::BorrowedFd<'_>, &str) -> Result<T> + Send + 'static,
) -> Result<Option<T>> {
    let shared = b.shared_mount_path();
    let lock = shared_lock(&shared);
    let _serialised = lock.lock().await;
    let mut mounted_here = false;
    if top_mount(&mount_table()?, &shared).is_none() {
        if step == KeyStep::Remove {
            return Ok(None);
        }
        mount_shared(b, &shared).await?;
        mounted_here = true;
    }
    let timeout = b.runner(On::Node).default_timeout();
    let root = shared.clone();
    let result = bounded(
        format!("fscrypt on {}", shared.display()),
        timeout,
        move || {
            use std::os::fd::AsFd;
            let fd = super::encryption::open_mount_root(&root)?;
            f(fd.as_fd(), &root.display().to_string())
        },
    )
    .await
    .and_then(|r| r);
    let release = step == KeyStep::Remove || (mounted_here && result.is_err());
    if release && let Err(cleanup) = release_if_unused_locked(&shared).await {
        tracing::warn!(shared = %shared.display(), %cleanup,
            "could not remove the unused shared client mount");
    }
    result.map(Some)
}

/// The lock of one shared mount. Process-wide and keyed by path, so two backends on the same
/// filesystem (or a backend rebuilt after a configuration reload) still exclude each other.
fn shared_lock(shared: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Mutex::default);
    let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(locks.entry(shared.to_path_buf()).or_default())
}

/// Runs a blocking step on the blocking pool under a timeout: a path lookup on a hung Lustre
/// server blocks in the kernel, and the caller (holding a lock) must not wait for it.
pub(super) async fn bounded<T: Send + 'static>(
    what: String,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(join)) => Err(BackendError::from_join(&what, join)),
        Err(_) => Err(BackendError::Timeout {
            command: what,
            after: timeout,
        }),
    }
}

/// How many bind mounts use the shared client mount at `shared`: mounts of the same
/// filesystem instance (device) whose root is a directory strictly beneath the shared
/// mount's root, wherever they are mounted. `None` when nothing is mounted at `shared`.
///
/// Another mount of the whole filesystem instance (its root equal to the shared mount's) is
/// not a user: only bind mounts of sub-directories, which is what bind mode makes, count.
pub fn shared_mount_users(entries: &[MountInfoEntry], shared: &Path) -> Option<usize> {
    let top = top_mount(entries, shared)?;
    Some(
        entries
            .iter()
            .filter(|e| {
                e.device == top.device
                    && e.mount_point != shared
                    && e.root != top.root
                    && e.root.starts_with(&top.root)
            })
            .count(),
    )
}

#[async_trait]
impl crate::Mounts for LustreBackend {
    async fn mount(&self, request: &MountRequest) -> Result<()> {
        mount(self, request).await
    }

    /// The bounded cascade on the target, then the shared client mount of bind mode if that
    /// was its last user (whatever mode the target was: this also removes a shared mount a
    /// crash left without users).
    async fn unmount(&self, target: &Path) -> Result<()> {
        unmount(self, target).await
    }

    async fn volume_statfs(&self) -> Result<VolumeStatfs> {
        super::statfs::volume_statfs(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mount::parse_mountinfo;
    use crate::mount::tests::MOUNTINFO;

    fn shared_mount_users(mountinfo: &str, shared: &Path) -> Option<usize> {
        super::shared_mount_users(&parse_mountinfo(mountinfo).unwrap(), shared)
    }

    #[test]
    fn users_are_the_bind_mounts_of_the_shared_instance() {
        let shared = Path::new("/var/lib/lustrekit/mnt/testfs");
        assert_eq!(shared_mount_users(MOUNTINFO, shared), Some(3));
        // Not mounted: None, whatever else is there.
        assert_eq!(
            shared_mount_users(MOUNTINFO, Path::new("/var/lib/lustrekit/mnt/other")),
            None
        );
        // After unmounting two of the three: one user left; after the last: zero.
        let fewer: String = MOUNTINFO
            .lines()
            .filter(|l| !l.starts_with("70 ") && !l.starts_with("71 "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(shared_mount_users(&fewer, shared), Some(1));
        let none: String = fewer
            .lines()
            .filter(|l| !l.starts_with("72 "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(shared_mount_users(&none, shared), Some(0));
    }

    #[test]
    fn a_shared_mount_with_an_escaped_path_is_found() {
        let text = "\
61 27 0:53 / /var/lib/lustre\\040kit/mnt/testfs rw - lustre m:/testfs rw
70 27 0:53 /shares/a /k/p1 rw - lustre m:/testfs rw
";
        assert_eq!(
            shared_mount_users(text, Path::new("/var/lib/lustre kit/mnt/testfs")),
            Some(1)
        );
    }

    #[test]
    fn stacked_mounts_count_from_the_visible_one() {
        // Two client mounts stacked on the shared path: the later one is what binds see.
        let text = "\
61 27 0:53 / /m/testfs rw - lustre m:/testfs rw
62 61 0:54 / /m/testfs rw - lustre m:/testfs rw
70 27 0:53 /shares/a /k/p1 rw - lustre m:/testfs rw
71 27 0:54 /shares/b /k/p2 rw - lustre m:/testfs rw
72 27 0:54 /shares/c /k/p3 rw - lustre m:/testfs rw
";
        assert_eq!(shared_mount_users(text, Path::new("/m/testfs")), Some(2));
    }

    fn request(options: &[&str], read_only: bool) -> MountRequest {
        MountRequest {
            share: RelPath::parse("shares/a").unwrap(),
            target: "/t".into(),
            read_only,
            options: options.iter().map(|o| o.to_string()).collect(),
            mode: MountMode::Bind,
            fileset: None,
            expect_project: None,
        }
    }

    #[test]
    fn the_project_check_refuses_another_directory_and_an_unreadable_one_outside_a_fileset() {
        let shown = Path::new("/t");
        let mut req = request(&[], false);
        req.expect_project = Some(lustre_model::ProjectId::new(7).unwrap());
        judge_project(Ok(7), &req, shown).unwrap();
        let err = judge_project(Ok(9), &req, shown).unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::WrongDirectory {
                    expected: 7,
                    found: 9,
                    ..
                }
            ),
            "{err}"
        );
        // Unreadable (root squashed): refused unless a fileset confines the mount anyway.
        assert!(judge_project(Err(Errno::EACCES), &req, shown).is_err());
        assert!(judge_project(Err(Errno::ENOTTY), &req, shown).is_err());
        req.fileset = Some(RelPath::parse("shares").unwrap());
        judge_project(Err(Errno::EACCES), &req, shown).unwrap();
        let err = judge_project(Err(Errno::ENOTTY), &req, shown).unwrap_err();
        assert!(err.to_string().contains("project ID"), "{err}");
        // Nothing expected: nothing checked.
        req.expect_project = None;
        judge_project(Ok(9), &req, shown).unwrap();
    }

    #[test]
    fn the_share_is_named_from_the_nodes_fileset() {
        let mut req = request(&[], false);
        req.share = RelPath::parse("shares/alpha/pvc-1").unwrap();
        assert_eq!(path_on_node(&req).unwrap(), Some(req.share.clone()));
        req.fileset = Some(RelPath::parse("shares/alpha").unwrap());
        assert_eq!(
            path_on_node(&req).unwrap(),
            Some(RelPath::parse("pvc-1").unwrap())
        );
        req.share = RelPath::parse("shares/alpha").unwrap();
        assert_eq!(path_on_node(&req).unwrap(), None);
        req.share = RelPath::parse("shares/beta/pvc-1").unwrap();
        let err = path_on_node(&req).unwrap_err();
        assert!(err.to_string().contains("not under"), "{err}");
        // 2.17 would take `shares/alpha/...` as it is, earlier releases beneath the fileset.
        req.share = RelPath::parse("shares/alpha/shares/alpha/x").unwrap();
        let err = path_on_node(&req).unwrap_err();
        assert!(err.to_string().contains("ambiguous"), "{err}");
    }

    #[test]
    fn bind_options_keep_bind_flags_and_refuse_other_client_options() {
        let shared = vec!["flock".to_owned()];
        assert_eq!(
            bind_options(&request(&["nosuid", "flock", "noatime"], false), &shared).unwrap(),
            vec!["nosuid".to_owned(), "noatime".to_owned()]
        );
        let err = bind_options(&request(&["user_xattr"], false), &shared).unwrap_err();
        assert!(matches!(err, BackendError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("node_mount_options"), "{err}");
        assert!(bind_options(&request(&["ro,suid"], false), &shared).is_err());
        assert!(bind_options(&request(&["rw"], true), &shared).is_err());
    }
}
