//! A tenant's node on the `lustre` backend, for real (as root; see [`tenant_fs`] for the
//! stand-ins): the path it asks for, the project check of what got mounted, and the unmount
//! of what fails it.
//!
//! The server's fileset for the node can differ from the one the node plugin believes in
//! (a node moved between tenants before the nodemaps were reconciled): then a same-named
//! directory the other tenant made stands in for the volume, and must be refused.

mod mount_common;
mod tenant_fs;

use std::path::Path;

use backend::Mounts;
use backend::{BackendError, MountMode, MountRequest};
use lustre_model::{ProjectId, RelPath};
use tenant_fs::{FilesetServer, MGS, TenantFs};

/// alpha's `pvc-1` (project 7), published on a node that believes it is alpha's.
fn request(target: &Path, mode: MountMode) -> MountRequest {
    MountRequest {
        share: RelPath::parse("shares/alpha/pvc-1").unwrap(),
        target: target.to_path_buf(),
        read_only: false,
        options: vec![],
        mode,
        fileset: Some(RelPath::parse("shares/alpha").unwrap()),
        expect_project: Some(ProjectId::new(7).unwrap()),
    }
}

fn mounted(path: &Path) -> bool {
    backend::mount::is_mount_point(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (an XFS loop image, real mounts)"]
async fn direct_a_tenants_node_mounts_the_path_beneath_its_fileset_and_checks_the_project() {
    let node = TenantFs::new();
    let server = FilesetServer::new(&node.fs, "shares/alpha");
    let b = node.backend(&server);
    let target = node.target("t1");

    b.mount(&request(&target, MountMode::Direct)).await.unwrap();
    assert_eq!(server.devices(), [format!("{MGS}:/testfs/pvc-1")]);
    assert_eq!(
        std::fs::read_to_string(target.join("data")).unwrap(),
        "alpha's volume"
    );
    // A retry checks what is there and runs nothing.
    b.mount(&request(&target, MountMode::Direct)).await.unwrap();
    assert_eq!(server.calls().len(), 1);
    b.unmount(&target).await.unwrap();
    assert!(!mounted(&target));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (an XFS loop image, real mounts)"]
async fn direct_another_tenants_same_named_directory_is_refused_and_unmounted() {
    let node = TenantFs::new();
    // The servers still hold this node in beta's nodemap.
    let server = FilesetServer::new(&node.fs, "shares/beta");
    let b = node.backend(&server);
    let target = node.target("t1");

    let err = b
        .mount(&request(&target, MountMode::Direct))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::WrongDirectory {
                expected: 7,
                found: 9,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not the volume's"), "{err}");
    // It ran, and nothing of it is left: the target is the empty directory again.
    assert_eq!(server.calls().len(), 1);
    assert!(!mounted(&target));
    assert!(!target.join("data").exists());
    // A volume that is not there at all under the server's fileset: mount.lustre's ENOENT.
    *server.fileset.lock().unwrap() = "shares".into();
    let err = b
        .mount(&request(&target, MountMode::Direct))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("No such file")),
        "{err}"
    );
    assert!(!mounted(&target));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (an XFS loop image, real mounts)"]
async fn bind_the_shared_mount_is_the_tenants_root_and_the_share_is_checked_before_binding() {
    let node = TenantFs::new();
    let server = FilesetServer::new(&node.fs, "shares/alpha");
    let b = node.backend(&server);
    let shared = b.shared_mount_path();
    let (t1, t2) = (node.target("t1"), node.target("t2"));

    // The shared mount names no path, so the server roots it at alpha's fileset.
    b.mount(&request(&t1, MountMode::Bind)).await.unwrap();
    assert_eq!(server.devices(), [format!("{MGS}:/testfs")]);
    assert_eq!(
        std::fs::read_to_string(t1.join("data")).unwrap(),
        "alpha's volume"
    );
    assert_eq!(b.shared_mount_users().unwrap(), Some(1));
    // A retry recognises its own bind.
    b.mount(&request(&t1, MountMode::Bind)).await.unwrap();
    assert_eq!(server.calls().len(), 1);
    b.unmount(&t1).await.unwrap();
    assert_eq!(b.shared_mount_users().unwrap(), None);

    // The servers root the node at beta's fileset: the check refuses beta's directory
    // before any bind, and the shared mount made for it is not left behind.
    *server.fileset.lock().unwrap() = "shares/beta".into();
    let err = b.mount(&request(&t2, MountMode::Bind)).await.unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::WrongDirectory {
                expected: 7,
                found: 9,
                ..
            }
        ),
        "{err}"
    );
    assert!(!mounted(&t2));
    assert!(!t2.join("data").exists());
    assert!(!mounted(&shared));
}
