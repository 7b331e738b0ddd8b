//! The `lustre` backend against the [`FakeRunner`]: client mounts (direct and bind mode) and unmount. Every operation asserts the
//! exact argv sequence, and replays outputs copied from `shared/lustre-formats/` (each
//! fixture names its file and sample).

mod lustre_common;

use std::path::Path;
use std::sync::Arc;

use backend::Mounts;
use backend::lustre::{FakeRunner, LustreBackend, LustreConfig};
use backend::{BackendError, MountMode, MountRequest};

use lustre_common::fake::*;

#[tokio::test]
async fn mount_builds_the_fileset_device() {
    // mount-lustre.md (a): `MGSNODE[:MGSNODE]:/FSNAME[/SUBDIR]`.
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["mount", "-t", "lustre", "-o", "ro,flock", "10.0.0.1@tcp:10.0.0.2@tcp:/testfs/tenants/a", "/var/lib/kubelet/pods/x/mount"],
                "",
                "",
                0,
            )
            .expect(["mount", "-t", "lustre", "10.0.0.1@tcp:10.0.0.2@tcp:/testfs/tenants/b", "/mnt/b"], "", "", 0)
            .expect(
                ["mount", "-t", "lustre", "10.0.0.1@tcp:10.0.0.2@tcp:/testfs/tenants/c", "/mnt/c"],
                "",
                "mount.lustre: mount 10.0.0.1@tcp:10.0.0.2@tcp:/testfs/tenants/c at /mnt/c failed: No such file or directory\n",
                2,
            ),
    );
    let b = backend(&fake);
    let request = |share: &str, target: &str, read_only: bool, options: Vec<String>| MountRequest {
        share: rel(share),
        target: target.into(),
        read_only,
        options,
        mode: MountMode::Direct,
        fileset: None,
        expect_project: None,
    };
    b.mount(&request(
        "tenants/a",
        "/var/lib/kubelet/pods/x/mount",
        true,
        vec!["flock".into(), "ro".into()],
    ))
    .await
    .unwrap();
    b.mount(&request("tenants/b", "/mnt/b", false, vec![]))
        .await
        .unwrap();
    let err = b
        .mount(&request("tenants/c", "/mnt/c", false, vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("mount.lustre")),
        "{err}"
    );
    // Options are single words.
    assert!(
        b.mount(&request("tenants/d", "/mnt/d", false, vec!["a,b".into()]))
            .await
            .is_err()
    );
    fake.assert_done();
}

#[tokio::test]
async fn a_tenants_node_names_the_share_from_its_fileset() {
    // mount-lustre.md, fileset behaviour: the server roots a tenant node's mounts at the
    // nodemap's fileset and puts the requested path beneath it (≤2.16 always; 2.17 unless
    // the path starts with a fileset). So `shares/alpha/pvc-1` on a node of the tenant whose
    // fileset is `/shares/alpha` is asked for as `pvc-1`, and the fileset itself as no path.
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                [
                    "mount",
                    "-t",
                    "lustre",
                    "10.0.0.1@tcp:10.0.0.2@tcp:/testfs/pvc-1",
                    "/mnt/a",
                ],
                "",
                "",
                0,
            )
            .expect(
                [
                    "mount",
                    "-t",
                    "lustre",
                    "-o",
                    "ro",
                    "10.0.0.1@tcp:10.0.0.2@tcp:/testfs",
                    "/mnt/root",
                ],
                "",
                "",
                0,
            ),
    );
    let b = backend(&fake);
    let request = |share: &str, target: &str, read_only: bool| MountRequest {
        share: rel(share),
        target: target.into(),
        read_only,
        options: vec![],
        mode: MountMode::Direct,
        fileset: Some(rel("shares/alpha")),
        expect_project: None,
    };
    b.mount(&request("shares/alpha/pvc-1", "/mnt/a", false))
        .await
        .unwrap();
    b.mount(&request("shares/alpha", "/mnt/root", true))
        .await
        .unwrap();
    // Outside the fileset, or ambiguous between releases: refused before anything runs.
    let err = b
        .mount(&request("shares/beta/pvc-1", "/mnt/b", false))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::InvalidState(_)), "{err}");
    let err = b
        .mount(&request("shares/alpha/shares/alpha/x", "/mnt/c", false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ambiguous"), "{err}");
    // Bind mode cannot bind the shared mount's own root as a volume.
    let err = b
        .mount(&MountRequest {
            mode: MountMode::Bind,
            ..request("shares/alpha", "/mnt/d", false)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Unsupported { ref why, .. } if why.contains("mountMode direct")),
        "{err}"
    );
    fake.assert_done();
}

/// A bind-mode request for `share` at `target`.
fn bind_request(share: &str, target: &Path, read_only: bool, options: &[&str]) -> MountRequest {
    MountRequest {
        share: rel(share),
        target: target.to_path_buf(),
        read_only,
        options: options.iter().map(|o| o.to_string()).collect(),
        mode: MountMode::Bind,
        fileset: None,
        expect_project: None,
    }
}

#[tokio::test]
async fn bind_mode_mounts_the_whole_filesystem_once_at_the_node_mount_root() {
    // mount-lustre.md (a): no SUBDIR, so the client mount is of the filesystem root; the
    // options are the node's, not the volume's.
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("mnt");
    let target = scratch.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let shared = root.join("testfs");
    let mut config = config(MOUNT);
    config.node_mount_root = root.clone();
    config.node_mount_options = vec!["flock".into(), "user_xattr".into()];
    let fake = Arc::new(FakeRunner::new().expect(
        [
            "mount",
            "-t",
            "lustre",
            "-o",
            "flock,user_xattr",
            "10.0.0.1@tcp:10.0.0.2@tcp:/testfs",
            shared.to_str().unwrap(),
        ],
        "",
        "",
        0,
    ));
    let b = LustreBackend::with_runner(config, fake.clone()).unwrap();
    assert_eq!(b.shared_mount_path(), shared);
    assert_eq!(b.shared_mount_users().unwrap(), None);
    // The fake "mounts" nothing, and the backend notices instead of binding from the empty
    // directory underneath. (tests/lustre_bind_mount.rs does it for real, as root.)
    let err = b
        .mount(&bind_request(
            "shares/a",
            &target,
            true,
            &["flock", "nosuid"],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::InvalidState(ref m) if m.contains("not a mount point after")),
        "{err}"
    );
    assert!(
        shared.is_dir(),
        "the mount point is made under node_mount_root"
    );
    fake.assert_done();
}

#[tokio::test]
async fn bind_mode_without_node_options_has_no_o_and_refuses_client_options() {
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let mut config = config(MOUNT);
    config.node_mount_root = scratch.path().join("mnt");
    let shared = config.node_mount_root.join("testfs");
    let fake = Arc::new(FakeRunner::new().expect(
        [
            "mount",
            "-t",
            "lustre",
            "10.0.0.1@tcp:10.0.0.2@tcp:/testfs",
            shared.to_str().unwrap(),
        ],
        "",
        "mount.lustre: mount 10.0.0.1@tcp:10.0.0.2@tcp:/testfs at /x failed: Input/output error\n",
        5,
    ));
    let b = LustreBackend::with_runner(config, fake.clone()).unwrap();
    // A Lustre client option the shared mount does not have: refused before anything runs.
    let err = b
        .mount(&bind_request("shares/a", &target, false, &["flock"]))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unsupported { .. }), "{err}");
    // Options a bind mount applies are fine; the failed client mount is reported as is.
    let err = b
        .mount(&bind_request("shares/a", &target, false, &["noatime"]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("mount.lustre")),
        "{err}"
    );
    // A symlink as the target is refused before any mount.
    let link = scratch.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = b
        .mount(&bind_request("shares/a", &link, false, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::InvalidState(ref m) if m.contains("symlinks are refused")),
        "{err}"
    );
    fake.assert_done();
}

#[test]
fn node_mount_settings_have_defaults_and_parse_from_toml() {
    let plain: LustreConfig = toml::from_str(
        "fsname = \"testfs\"\nmgs_nids = [\"10.0.0.1@tcp\"]\nmount_point = \"/mnt/testfs\"\n",
    )
    .unwrap();
    assert_eq!(plain.node_mount_root, Path::new("/var/lib/lustrekit/mnt"));
    assert!(plain.node_mount_options.is_empty());
    let set: LustreConfig = toml::from_str(
        "fsname = \"testfs\"\nmgs_nids = [\"10.0.0.1@tcp\"]\nmount_point = \"/mnt/testfs\"\n\
         node_mount_root = \"/run/lk\"\nnode_mount_options = [\"flock\"]\n",
    )
    .unwrap();
    assert_eq!(set.node_mount_root, Path::new("/run/lk"));
    assert_eq!(set.node_mount_options, vec!["flock".to_owned()]);
}

#[tokio::test]
async fn unmount_of_something_not_mounted_is_success() {
    let fake = Arc::new(FakeRunner::new());
    let dir = tempfile::tempdir().unwrap();
    backend(&fake).unmount(dir.path()).await.unwrap();
    backend(&fake)
        .unmount(Path::new("/nonexistent/lustrekit/target"))
        .await
        .unwrap();
    fake.assert_done();
}
