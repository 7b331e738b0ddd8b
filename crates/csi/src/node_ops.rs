//! The node's filesystem steps, kept apart from the gRPC code: checking and making the target
//! directory, telling whether a mount there is ours, and statvfs.
//!
//! All of these block, and any of them can hang on a dead server, so callers run them in
//! [`backend::mount::FsCalls`] under a timeout. Whether a target is mounted is read from
//! the mount table alone: nothing here stats a path that is (or may be) a mount point just
//! to learn that.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use backend::mount::{mount_table, top_mount};

use crate::error::{CsiError, Result};
pub use crate::stats::FsStats;

/// A target path from the CO: absolute, no `..`, no NUL.
pub fn check_target(path: &str) -> Result<PathBuf> {
    if path.contains('\0') {
        return Err(CsiError::invalid("target path contains NUL"));
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(CsiError::invalid(format!(
            "target path {path:?} is not absolute"
        )));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(CsiError::invalid(format!(
            "target path {path:?} contains '..'"
        )));
    }
    Ok(p.to_path_buf())
}

/// What is at a target path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Nothing: the path does not exist.
    Absent,
    /// A directory, mounted on or not; the path is canonical (symlinks in the parents
    /// resolved, which is how mountinfo shows it). A mounted target is not stat'ed, so it
    /// may be a file with a device bound on it (a block volume).
    Dir { path: PathBuf, mounted: bool },
    /// A regular file with nothing mounted on it (a block volume's target); canonical path.
    File { path: PathBuf },
}

/// Looks at the target without following a symlink there: a target that is itself a symlink
/// is refused, wherever it points, since a mount would follow it out of kubelet's directory.
///
/// Mounted or not is decided from the mount table, under the target's path as given and
/// under its parent's canonical path (mountinfo lists resolved paths). Only a target that is
/// no mount point is stat'ed, so a dead server behind a mount there cannot block this.
pub fn inspect(target: &Path) -> Result<Target> {
    let table = mount_table()?;
    let listed = |path: &Path| top_mount(&table, path).is_some();
    if listed(target) {
        return Ok(Target::Dir {
            path: target.to_path_buf(),
            mounted: true,
        });
    }
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(CsiError::invalid(format!(
            "target path {} has no parent directory",
            target.display()
        )));
    };
    let parent = match std::fs::canonicalize(parent) {
        Ok(parent) => parent,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Target::Absent),
        Err(e) => return Err(CsiError::io(parent, e)),
    };
    let path = parent.join(name);
    if listed(&path) {
        return Ok(Target::Dir {
            path,
            mounted: true,
        });
    }
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Target::Absent),
        Err(e) => return Err(CsiError::io(&path, e)),
    };
    if meta.file_type().is_symlink() {
        return Err(CsiError::invalid(format!(
            "target path {} is a symlink; refused",
            target.display()
        )));
    }
    if meta.is_file() {
        return Ok(Target::File { path });
    }
    if !meta.is_dir() {
        return Err(not_a_directory(target));
    }
    Ok(Target::Dir {
        path,
        mounted: false,
    })
}

/// What a directory volume's publish says of a target that is not a directory.
pub fn not_a_directory(target: &Path) -> CsiError {
    CsiError::FailedPrecondition(format!(
        "target path {} exists and is not a directory",
        target.display()
    ))
}

/// Makes a block volume's target file (its parent must exist: the CO makes it), root-only,
/// never through a symlink. Returns its canonical path.
pub fn create_file_target(target: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(target)
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(CsiError::FailedPrecondition(format!(
                "the parent of target path {} does not exist",
                target.display()
            )));
        }
        Err(e) => return Err(CsiError::io(target, e)),
    }
    match inspect(target)? {
        Target::File { path } => Ok(path),
        Target::Dir { .. } => Err(CsiError::FailedPrecondition(format!(
            "target path {} is a directory; a block volume's target is a file",
            target.display()
        ))),
        Target::Absent => Err(CsiError::Internal(format!(
            "{} vanished after it was made",
            target.display()
        ))),
    }
}

/// Removes an (unmounted) block target file; gone already is fine. A file with data is
/// left alone: ours are empty (a device is bound over them), so it is not ours to remove.
pub fn remove_file_target(target: &Path) -> Result<()> {
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.is_file() && meta.len() > 0 => {
            return Err(CsiError::FailedPrecondition(format!(
                "target path {} is a file with data, not an unmounted block target; left in place",
                target.display()
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CsiError::io(target, e)),
    }
    match std::fs::remove_file(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CsiError::io(target, e)),
    }
}

/// The device bound at a mounted target, as mountinfo shows the mount: `Some((rdev, key))`
/// when the mount comes from an in-memory `/dev` (devtmpfs or tmpfs, which never hang, so
/// the target is stat'ed only then) and the target is a block device. `key` (the mount's
/// filesystem and root) is shared by every bind of that same device node.
pub fn mounted_device(target: &Path) -> Result<Option<(u64, (String, PathBuf))>> {
    use std::os::unix::fs::FileTypeExt;
    let table = mount_table()?;
    let Some(entry) = top_mount(&table, target) else {
        return Ok(None);
    };
    if !matches!(entry.fs_type.as_str(), "devtmpfs" | "tmpfs") {
        return Ok(None);
    }
    let meta = std::fs::metadata(target).map_err(|e| CsiError::io(target, e))?;
    if !meta.file_type().is_block_device() {
        return Ok(None);
    }
    Ok(Some((
        meta.rdev(),
        (entry.device.clone(), entry.root.clone()),
    )))
}

/// Whether any mount still shows the device node `key` names (see [`mounted_device`]).
pub fn device_still_bound(key: &(String, PathBuf)) -> Result<bool> {
    Ok(mount_table()?
        .iter()
        .any(|e| e.device == key.0 && e.root == key.1))
}

/// Makes the target directory (its parent must exist: the CO makes it). Returns its
/// canonical path.
pub fn create_target(target: &Path) -> Result<PathBuf> {
    match std::fs::create_dir(target) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(CsiError::FailedPrecondition(format!(
                "the parent of target path {} does not exist",
                target.display()
            )));
        }
        Err(e) => return Err(CsiError::io(target, e)),
    }
    match inspect(target)? {
        Target::Dir { path, .. } => Ok(path),
        Target::File { .. } => Err(not_a_directory(target)),
        Target::Absent => Err(CsiError::Internal(format!(
            "{} vanished after mkdir",
            target.display()
        ))),
    }
}

/// Removes the (unmounted) target directory; gone already is fine. A directory that still
/// has entries is left alone: it is not ours to empty.
pub fn remove_target(target: &Path) -> Result<()> {
    match std::fs::remove_dir(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            Err(CsiError::FailedPrecondition(format!(
                "target path {} is not empty after unmount; left in place",
                target.display()
            )))
        }
        Err(e) => Err(CsiError::io(target, e)),
    }
}

/// Whether the mount at `target` shows `source` with the wanted read-only flag. A bind mount
/// (or a Lustre fileset mount seen from the same client) has the source's device and inode.
/// When the source is not visible on this host, only the read-only flag is compared.
pub fn mount_matches(source: &Path, target: &Path, read_only: bool) -> Result<bool> {
    let target_meta = std::fs::metadata(target).map_err(|e| CsiError::io(target, e))?;
    if let Ok(source_meta) = std::fs::metadata(source)
        && (source_meta.dev(), source_meta.ino()) != (target_meta.dev(), target_meta.ino())
    {
        return Ok(false);
    }
    let flags = nix::sys::statvfs::statvfs(target).map_err(|e| CsiError::io(target, e))?;
    let is_ro = flags
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    Ok(is_ro == read_only)
}

/// The size in bytes of the block device at `path`.
pub fn device_size(path: &Path) -> Result<u64> {
    use std::os::fd::AsFd;
    let dev = std::fs::File::open(path).map_err(|e| CsiError::io(path, e))?;
    Ok(backend::block::device_size(dev.as_fd(), path)?)
}

/// Bytes, inodes and block size of the filesystem under `path`.
pub fn fs_stats(path: &Path) -> Result<FsStats> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| CsiError::io(path, e))?;
    let frag = match s.fragment_size() as u64 {
        0 => s.block_size() as u64,
        frag => frag,
    };
    let total_bytes = (s.blocks() as u64).saturating_mul(frag);
    let free_bytes = (s.blocks_free() as u64).saturating_mul(frag);
    Ok(FsStats {
        total_bytes,
        available_bytes: (s.blocks_available() as u64).saturating_mul(frag),
        used_bytes: total_bytes.saturating_sub(free_bytes),
        total_inodes: s.files() as u64,
        free_inodes: s.files_free() as u64,
        block_size: frag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_absolute_without_dotdot() {
        assert!(check_target("/var/lib/kubelet/pods/x/mount").is_ok());
        for bad in ["relative/path", "/a/../b", "/a/\0b", ""] {
            assert_eq!(
                check_target(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn symlinked_targets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let link = dir.path().join("mount");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        assert_eq!(
            inspect(&link).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            create_target(&link).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // A dangling symlink is refused too.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("/nonexistent/x", &dangling).unwrap();
        assert_eq!(
            inspect(&dangling).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn targets_are_made_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        assert_eq!(inspect(&target).unwrap(), Target::Absent);
        let made = create_target(&target).unwrap();
        assert!(made.is_dir());
        assert!(matches!(
            inspect(&target).unwrap(),
            Target::Dir { mounted: false, .. }
        ));
        remove_target(&target).unwrap();
        remove_target(&target).unwrap();
        assert_eq!(
            create_target(&dir.path().join("missing/t"))
                .unwrap_err()
                .code(),
            tonic::Code::FailedPrecondition
        );
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(inspect(&file).unwrap(), Target::File { .. }));
        let made = create_file_target(&dir.path().join("dev")).unwrap();
        assert!(made.is_file());
        assert_eq!(create_file_target(&made).unwrap(), made, "made already");
        let a_dir = dir.path().join("d");
        std::fs::create_dir(&a_dir).unwrap();
        assert_eq!(
            create_file_target(&a_dir).unwrap_err().code(),
            tonic::Code::FailedPrecondition,
            "a directory is no block target"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        assert!(create_file_target(&link).is_err());
        remove_file_target(&made).unwrap();
        remove_file_target(&made).unwrap();
        assert_eq!(
            remove_file_target(&file).unwrap_err().code(),
            tonic::Code::FailedPrecondition,
            "a file with data is not ours"
        );
        assert!(file.exists());
        assert_eq!(mounted_device(dir.path()).unwrap(), None);
        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("data"), b"x").unwrap();
        assert_eq!(
            remove_target(&full).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
        assert!(fs_stats(dir.path()).unwrap().total_bytes > 0);
    }

    #[test]
    fn io_errors_name_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let e = fs_stats(&gone).unwrap_err();
        assert!(
            matches!(&e, CsiError::Io { path, .. } if path == &gone),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(&gone.display().to_string()),
            "{e}"
        );
        assert_eq!(e.code(), tonic::Code::Internal);
        let e = mount_matches(&gone, &gone, false).unwrap_err();
        assert!(e.to_string().contains("gone"), "{e}");
    }
}
