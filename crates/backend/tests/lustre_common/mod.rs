//! Shared by the tests that run the `lustre` backend's directory commands for real (locally
//! and over SSH) on a plain directory standing in for the Lustre client mount.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use backend::lustre::{LustreBackend, LustreConfig};
use backend::{BackendError, DirSpec};
use backend::{Namespace, Quotas};
use lustre_model::{FsName, RelPath};

pub fn rel(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

/// A scratch "mount": `<dir>/fs` is the mount point, `<dir>/bin/lfs` a stub that answers
/// `lfs project -d DIR` with the `%5u %c %s` line of a directory without a project (the
/// machine has no Lustre; everything else these tests run is real coreutils).
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub lfs: PathBuf,
}

pub fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fs");
    std::fs::create_dir(&root).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let lfs = bin.join("lfs");
    std::fs::write(
        &lfs,
        "#!/bin/sh\n[ \"$1\" = project ] && [ \"$2\" = -d ] && [ -e \"$3\" ] || { echo \"lfs: failed to lstat '$3': No such file or directory\" >&2; exit 2; }\nprintf '%5u %c %s\\n' 0 - \"$3\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&lfs)
        .status()
        .unwrap();
    Scratch { dir, root, lfs }
}

pub fn config(scratch: &Scratch) -> LustreConfig {
    let mut config = LustreConfig::new(
        FsName::new("testfs").unwrap(),
        vec!["10.0.0.1@tcp".into()],
        &scratch.root,
    );
    config.lfs = scratch.lfs.display().to_string();
    config.command_timeout_secs = 20;
    config
}

/// Every directory operation, checked against what really happened on disk.
pub async fn exercise_dirs(b: &LustreBackend, root: &Path) {
    let me = std::fs::metadata(root).unwrap();
    let (uid, gid) = (me.uid(), me.gid());

    b.ensure_dir(&rel("tenants/.trash")).await.unwrap();
    b.ensure_dir(&rel("tenants/.trash")).await.unwrap();
    assert!(root.join("tenants/.trash").is_dir());

    // A name with a space, a quote and a `$` survives every layer of quoting.
    let share = rel("tenants/it's $HOME a");
    let spec = DirSpec {
        mode: 0o2750,
        uid,
        gid,
    };
    assert!(b.create_share_dir(&share, &spec).await.unwrap());
    assert!(!b.create_share_dir(&share, &spec).await.unwrap());
    let made = std::fs::metadata(root.join(share.as_str())).unwrap();
    assert_eq!(made.mode() & 0o7777, 0o2750);
    let err = b.create_share_dir(&rel("nope/x"), &spec).await.unwrap_err();
    assert!(
        matches!(err, BackendError::NotFound { ref path } if path == "nope"),
        "{err}"
    );

    let info = b.stat_dir(&share).await.unwrap().unwrap();
    assert_eq!(
        (info.mode, info.uid, info.gid, info.project),
        (0o2750, uid, gid, None)
    );
    assert!(info.modified > 1_600_000_000);
    assert_eq!(b.stat_dir(&rel("tenants/none")).await.unwrap(), None);
    assert_eq!(b.project_of(&share).await.unwrap(), None);

    assert_eq!(
        b.list_dir(&rel("tenants")).await.unwrap(),
        vec![".trash".to_owned(), "it's $HOME a".to_owned()]
    );
    assert!(b.list_dir(&rel("tenants/none")).await.unwrap().is_empty());

    // State files: atomic write from stdin, read back byte for byte, no temporary left.
    let file = share.join(&lustre_model::ShareName::new("state.json").unwrap());
    let content = b"{\"q\": \"it's \\\"$x\\\"\"}\n\x00\xff".to_vec();
    b.write_file(&file, &content).await.unwrap();
    b.write_file(&file, &content).await.unwrap();
    assert_eq!(b.read_file(&file).await.unwrap(), Some(content.clone()));
    assert_eq!(
        b.list_dir(&share).await.unwrap(),
        vec!["state.json".to_owned()]
    );
    assert_eq!(b.read_file(&rel("tenants/none")).await.unwrap(), None);
    let err = b
        .write_file(&rel("nope/state.json"), b"x")
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::NotFound { .. }), "{err}");
    b.remove_file(&file).await.unwrap();
    b.remove_file(&file).await.unwrap();
    assert!(!root.join(file.as_str()).exists());

    // Claims: one mkdir, exactly one winner.
    let marker = rel("tenants/.trash/claim-1");
    assert!(b.claim(&marker).await.unwrap());
    assert!(!b.claim(&marker).await.unwrap());
    b.unclaim(&marker).await.unwrap();
    b.unclaim(&marker).await.unwrap();
    assert!(!root.join(marker.as_str()).exists());

    // Rename into the trash; never over something that exists.
    let trashed = rel("tenants/.trash/it's $HOME a");
    b.rename(&share, &trashed).await.unwrap();
    assert!(root.join(trashed.as_str()).is_dir() && !root.join(share.as_str()).exists());
    let err = b.rename(&share, &trashed).await.unwrap_err();
    assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err}");
    let err = b
        .rename(&share, &rel("tenants/elsewhere"))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::NotFound { .. }), "{err}");
    b.ensure_dir(&rel("tenants/empty")).await.unwrap();
    let err = b.rename(&trashed, &rel("tenants/empty")).await.unwrap_err();
    assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err}");
    assert!(root.join(trashed.as_str()).is_dir());

    // Removal: recursive, idempotent, and a symlink is refused rather than followed.
    std::fs::write(root.join(trashed.as_str()).join("data"), b"x").unwrap();
    assert!(b.remove_share_dir(&trashed).await.unwrap());
    assert!(!b.remove_share_dir(&trashed).await.unwrap());
    assert!(!root.join(trashed.as_str()).exists());
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), b"x").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("tenants/link")).unwrap();
    let err = b.remove_share_dir(&rel("tenants/link")).await.unwrap_err();
    assert!(matches!(err, BackendError::InvalidState(_)), "{err}");
    assert!(outside.path().join("keep").exists());
}

/// Helpers of the tests that run the `lustre` backend against the [`FakeRunner`].
pub mod fake {
    use std::sync::Arc;

    use backend::lustre::{FakeRunner, LustreBackend, LustreConfig};
    use lustre_model::{FsName, NodemapName, ProjectId, RelPath};

    pub const MOUNT: &str = "/mnt/testfs";

    pub fn config(mount_point: &str) -> LustreConfig {
        LustreConfig::new(
            FsName::new("testfs").unwrap(),
            vec!["10.0.0.1@tcp".into(), "10.0.0.2@tcp".into()],
            mount_point,
        )
    }

    pub fn backend_at(fake: &Arc<FakeRunner>, mount_point: &str) -> LustreBackend {
        LustreBackend::with_runner(config(mount_point), fake.clone()).unwrap()
    }

    pub fn backend(fake: &Arc<FakeRunner>) -> LustreBackend {
        backend_at(fake, MOUNT)
    }

    pub fn rel(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    pub fn pid(id: u32) -> ProjectId {
        ProjectId::new(id).unwrap()
    }

    pub fn nm(name: &str) -> NodemapName {
        NodemapName::new(name).unwrap()
    }

    pub const ENOENT_STAT: &str =
        "stat: cannot statx '/mnt/testfs/t/a': No such file or directory\n";
    pub const DIR_STAT: &str = "41f8 1000 2000 1700000000 directory\n";

    /// lfs-df.md (b), "Rendered from the printf formats", `=== 2.12-2.16 format`.
    pub const DF_216: &str = "\
UUID                   1K-blocks        Used   Available Use% Mounted on
testfs-MDT0000_UUID      1251328       16384     1122304   2% /mnt/testfs[MDT:0]
testfs-OST0000_UUID   3905069824        3072  3905064704   1% /mnt/testfs[OST:0]
testfs-OST0001_UUID   3905069824     4194304  3900871424   1% /mnt/testfs[OST:1] D

filesystem_summary:   7810139648     4197376  7805936128   1% /mnt/testfs

";
}
