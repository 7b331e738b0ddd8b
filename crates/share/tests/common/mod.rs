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

/// A btrfs loop mount. Tests that call this are `#[ignore = "needs root ..."]`: when they
/// run (`--include-ignored`, as CI does as root) and cannot have one, they fail with the
/// reason rather than pass without testing anything.
pub fn btrfs_root(size_mib: u64) -> TestRoot {
    assert!(
        nix::unistd::geteuid().is_root(),
        "btrfs tests need root (loop devices, mount); run them as root or leave them ignored"
    );
    assert!(
        ok(Command::new("mkfs.btrfs").arg("--version")),
        "mkfs.btrfs not installed (scripts/install-deps.sh installs btrfs-progs)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("fs.img");
    let root = dir.path().join("mnt");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(size_mib << 20))
        .expect("image file");
    assert!(
        ok(Command::new("mkfs.btrfs").arg("-q").arg(&image)),
        "mkfs.btrfs failed"
    );
    assert!(
        ok(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&image)
            .arg(&root)),
        "cannot mount a loop device here"
    );
    TestRoot {
        dir,
        root,
        mounted: true,
    }
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
        tenants: Vec::new(),
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

/// A service whose share directories belong to `uid`/`gid` (a tenant), mode 0770.
pub async fn service_owned_by(root: &Path, uid: u32, gid: u32) -> ShareService {
    let mut settings = settings(1000, 1999);
    settings.dir = backend::DirSpec {
        mode: 0o770,
        uid,
        gid,
    };
    ShareService::open(local(root).await, settings)
        .await
        .expect("open service")
}
