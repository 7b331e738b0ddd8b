//! Test filesystems: a btrfs image on a loop device when running as root with btrfs-progs
//! (so quotas are the kernel's), a temporary directory otherwise.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use backend::Filesystem;
use backend::local::LocalBackend;
use lustre_model::{FsName, LNet, ProjectId, ProjectRange, RelPath};
use share::{ShareService, ShareSettings};

pub struct TestRoot {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    mounted: bool,
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.root).status();
        }
    }
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// A btrfs loop mount, or `None` with the reason printed.
pub fn btrfs_root(size_mib: u64) -> Option<TestRoot> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: btrfs tests need root (loop devices, mount)");
        return None;
    }
    if !ok(Command::new("mkfs.btrfs").arg("--version")) {
        eprintln!("SKIP: mkfs.btrfs not installed (make test installs btrfs-progs)");
        return None;
    }
    let dir = tempfile::tempdir().ok()?;
    let image = dir.path().join("fs.img");
    let root = dir.path().join("mnt");
    std::fs::create_dir_all(&root).ok()?;
    std::fs::File::create(&image)
        .ok()?
        .set_len(size_mib << 20)
        .ok()?;
    if !ok(Command::new("mkfs.btrfs").arg("-q").arg(&image)) {
        eprintln!("SKIP: mkfs.btrfs failed");
        return None;
    }
    if !ok(Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(&image)
        .arg(&root))
    {
        eprintln!("SKIP: cannot mount a loop device here");
        return None;
    }
    Some(TestRoot {
        dir,
        root,
        mounted: true,
    })
}

pub fn plain_root() -> TestRoot {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    TestRoot {
        dir,
        root,
        mounted: false,
    }
}

pub fn settings(first: u32, last: u32) -> ShareSettings {
    ShareSettings {
        fsname: FsName::new("testfs").unwrap(),
        prefix: RelPath::parse("shares").unwrap(),
        project_ids: ProjectRange::new(
            ProjectId::new(first).unwrap(),
            ProjectId::new(last).unwrap(),
        )
        .unwrap(),
        export_nids: vec![
            "10.1.0.1@tcp".parse().unwrap(),
            "10.1.0.2@tcp".parse().unwrap(),
        ],
        nid_net: "tcp".parse::<LNet>().unwrap(),
        trash_ttl_secs: 3600,
        root_squash: true,
        activate_nodemaps: false,
        dir: backend::DirSpec::default(),
    }
}

pub async fn local(root: &Path) -> Arc<dyn Filesystem> {
    Arc::new(LocalBackend::open(root).await.expect("open local backend"))
}

pub async fn service(root: &Path) -> ShareService {
    ShareService::open(local(root).await, settings(1000, 1999))
        .await
        .expect("open service")
}
