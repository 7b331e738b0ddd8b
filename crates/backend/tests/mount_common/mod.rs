//! Shared by the tests that make real mounts under a temporary directory: running a setup
//! command, and detaching whatever is still mounted there when a test ends, pass or fail.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Runs a setup command and fails the test unless it succeeds.
pub fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/install-deps.sh installs it)"));
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// Detaches every mount below `dir`, the deepest (latest) first.
pub fn detach_mounts_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Ok(entries) = backend::mount::parse_mountinfo(&info) else {
        return;
    };
    let mut ours: Vec<PathBuf> = entries
        .into_iter()
        .map(|e| e.mount_point)
        .filter(|m| m.starts_with(dir))
        .collect();
    ours.reverse();
    for m in ours {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// What a stand-in for `mount -t lustre` answers when it makes the client mount as a real
/// `mount --bind source target`: that command's own status and output.
pub async fn bind_as_client_mount(
    source: &Path,
    target: &str,
) -> backend::Result<backend::lustre::CommandOutput> {
    let out = tokio::process::Command::new("mount")
        .arg("--bind")
        .arg(source)
        .arg(target)
        .output()
        .await
        .map_err(|e| backend::BackendError::io("mount", e))?;
    Ok(backend::lustre::CommandOutput {
        exit_code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
    })
}
