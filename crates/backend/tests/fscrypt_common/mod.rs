//! Shared by the fscrypt tests of both backends, and by the csi crate's (which includes this
//! file by path): an ext4 image made with `-O encrypt` on a loop device (needs root), the
//! one filesystem here the kernel's fscrypt ioctls work on.

#![allow(dead_code)]

use std::process::Command;

/// An ext4 made with `-O encrypt`, loop-mounted at `mnt` until dropped.
pub struct Ext4 {
    pub dir: tempfile::TempDir,
    pub mnt: std::path::PathBuf,
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        // Quietly: a test of the `lustre` backend may have unmounted it already. Recursively:
        // a CSI test may leave its bind mounts inside.
        let _ = Command::new("umount")
            .arg("-R")
            .arg(&self.mnt)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// An ext4 image with fscrypt, mounted at `<tempdir>/mnt`.
pub fn ext4_encrypt() -> Ext4 {
    ext4_encrypt_at("mnt")
}

/// The same, mounted at `<tempdir>/<mount>` (`mount` relative, made if missing).
pub fn ext4_encrypt_at(mount: &str) -> Ext4 {
    ext4_encrypt_sized(mount, 64 << 20)
}

/// The same, with an image of `size` bytes.
pub fn ext4_encrypt_sized(mount: &str, size: u64) -> Ext4 {
    let ok = |cmd: &mut Command| cmd.output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (loop devices, mount)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("fs.img");
    let mnt = dir.path().join(mount);
    std::fs::create_dir_all(&mnt).expect("mkdir");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(size))
        .expect("image");
    assert!(
        ok(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "encrypt"])
            .arg(&image)),
        "mkfs.ext4 -O encrypt failed (e2fsprogs)"
    );
    assert!(
        ok(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&image)
            .arg(&mnt)),
        "cannot mount a loop device here"
    );
    Ext4 { dir, mnt }
}
