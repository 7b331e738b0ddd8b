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
