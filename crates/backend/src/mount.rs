//! Mounting on the node: bind mounts for the local backend, and the bounded unmount cascade
//! every backend uses.
//!
//! A hung server can make `umount` block forever, so every step runs on the blocking pool
//! under a timeout and the cascade moves on (normal, then forced, then lazy) instead of
//! waiting. No lock is held across these calls.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::{BackendError, Result};

mod attach;

/// How long one unmount step may take before the cascade moves on.
pub const UNMOUNT_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Mount options the kernel applies to a bind mount; anything else is refused, not ignored.
pub fn bind_flags(read_only: bool, options: &[String]) -> Result<MsFlags> {
    let mut flags = MsFlags::empty();
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    for option in options {
        flags |= match option.as_str() {
            "ro" => MsFlags::MS_RDONLY,
            "rw" | "defaults" => MsFlags::empty(),
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            other => {
                return Err(BackendError::unsupported(
                    "mount option",
                    format!("{other:?} has no meaning for a bind mount"),
                ));
            }
        };
    }
    Ok(flags)
}

async fn blocking<T: Send + 'static>(
    what: String,
    timeout: Duration,
    f: impl FnOnce() -> std::result::Result<T, Errno> + Send + 'static,
) -> Result<std::result::Result<T, Errno>> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(join)) => Err(BackendError::InvalidState(format!("{what}: {join}"))),
        Err(_) => Err(BackendError::Timeout {
            command: what,
            after: timeout,
        }),
    }
}

/// True when `target` is a mount point (its device differs from its parent's, or it is a
/// bind mount listed in mountinfo).
pub fn is_mount_point(target: &Path) -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = target.to_string_lossy();
    mountinfo.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mount_point| unescape_mountinfo(mount_point) == wanted)
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let code = rest.get(pos + 1..pos + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[pos + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Bind-mounts `source` on `target` with read-only and the other flags in effect from the
/// moment it is attached, so every copy mount propagation makes has them too (see
/// [`attach`]; a bind then a remount would leave the propagated copies read-write). Already
/// mounted is success.
pub async fn bind_mount(source: PathBuf, target: PathBuf, flags: MsFlags) -> Result<()> {
    if is_mount_point(&target) {
        return Ok(());
    }
    let what = format!("bind mount {} on {}", source.display(), target.display());
    let (src, tgt) = (source.clone(), target.clone());
    blocking(what.clone(), UNMOUNT_STEP_TIMEOUT, move || {
        attach::bind_with_flags(&src, &tgt, flags)
    })
    .await?
    .map_err(|e| BackendError::io(target, std::io::Error::from(e)))
}

/// Unmounts `target`: normal, then forced, then lazy, each step bounded. Not mounted, or
/// not there at all, is success.
pub async fn unmount_cascade(target: &Path) -> Result<()> {
    for flags in [MntFlags::empty(), MntFlags::MNT_FORCE, MntFlags::MNT_DETACH] {
        if !is_mount_point(target) {
            return Ok(());
        }
        let tgt = target.to_path_buf();
        let what = format!("umount {} ({flags:?})", target.display());
        match blocking(what, UNMOUNT_STEP_TIMEOUT, move || {
            nix::mount::umount2(&tgt, flags)
        })
        .await
        {
            Ok(Ok(())) | Ok(Err(Errno::EINVAL)) | Ok(Err(Errno::ENOENT)) => {
                if !is_mount_point(target) {
                    return Ok(());
                }
            }
            Ok(Err(errno)) => {
                tracing::warn!(target = %target.display(), ?flags, %errno, "unmount step failed");
            }
            Err(timeout) => {
                tracing::warn!(target = %target.display(), ?flags, error = %timeout, "unmount step timed out");
            }
        }
    }
    if is_mount_point(target) {
        return Err(BackendError::InvalidState(format!(
            "{} is still mounted after normal, forced and lazy unmount",
            target.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/a\134b"), r"/a\b");
        assert_eq!(unescape_mountinfo(r"/a\9"), r"/a\9");
    }

    #[test]
    fn unknown_bind_options_are_refused() {
        assert!(bind_flags(false, &["nosuid".into(), "noexec".into()]).is_ok());
        let err = bind_flags(false, &["flock".into()]).unwrap_err();
        assert!(err.to_string().contains("flock"), "{err}");
        assert!(bind_flags(true, &[]).unwrap().contains(MsFlags::MS_RDONLY));
    }
}
