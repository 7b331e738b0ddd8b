//! Client mounts on the node: `mount -t lustre -o OPTS <mgs nodes>:/<fsname>/<share> TARGET`
//! (`mount-lustre.md`: failover MGS nodes joined by `:`, the share a fileset sub-mount).
//! Unmounting is the shared bounded cascade of [`crate::mount::unmount_cascade`].

use super::{LustreBackend, On};
use crate::{BackendError, MountRequest, Result};

/// `<mgs nodes>:/<fsname>/<share>`.
pub(super) fn device(b: &LustreBackend, request: &MountRequest) -> String {
    format!(
        "{}:/{}/{}",
        b.inner.mgs_spec,
        b.inner.config.fsname.as_str(),
        request.share.as_str()
    )
}

/// The `-o` list: `ro` first when read-only, then the caller's options, without repeats.
pub(super) fn options(request: &MountRequest) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    if request.read_only {
        out.push("ro".to_owned());
    }
    for option in &request.options {
        if option.is_empty() || option.contains([',', ' ', '\t', '\n', '\0']) {
            return Err(BackendError::InvalidState(format!(
                "mount option {option:?} is not one option"
            )));
        }
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

pub(super) async fn mount(b: &LustreBackend, request: &MountRequest) -> Result<()> {
    let target = request.target.to_str().ok_or_else(|| {
        BackendError::InvalidState(format!(
            "mount target {} is not valid UTF-8",
            request.target.display()
        ))
    })?;
    if !request.target.is_absolute() {
        return Err(BackendError::InvalidState(format!(
            "mount target {target:?} must be absolute"
        )));
    }
    if crate::mount::is_mount_point(&request.target) {
        tracing::debug!(target, "already mounted");
        return Ok(());
    }
    let device = device(b, request);
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
    Ok(())
}
