//! A tenant's node through the driver on the `lustre` backend (as root). The node plugin runs
//! in a network namespace whose address is in tenant alpha's range, so it is alpha's node;
//! the filesystem is the backend tests' stand-in (an XFS image, and a node runner that
//! roots client mounts at the node's nodemap fileset, as the servers do). NodePublishVolume
//! names alpha's volume from alpha's fileset, checks its project ID, refuses beta's volume
//! before mounting anything, and refuses (and unmounts) a same-named directory of beta's
//! when the servers still hold the node in beta's nodemap.

mod common;
#[path = "../../backend/tests/mount_common/mod.rs"]
mod mount_common;
#[path = "../../backend/tests/tenant_fs/mod.rs"]
mod tenant_fs;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use csi::grpc::*;
use csi::{Driver, DriverOptions, Mode};
use tenant_fs::{FilesetServer, MGS, TenantFs};
use tonic::Code;

fn settings() -> share::ShareSettings {
    share::Config::from_toml(
        "backend = \"local\"\nfsname = \"testfs\"\nshare_prefix = \"shares\"\n\
         project_ids = \"5000-5999\"\n[local]\nroot = \"/unused\"\n\
         [[tenants]]\nname = \"alpha\"\nranges = [\"10.250.8.0/24\"]\n\
         [[tenants]]\nname = \"beta\"\nranges = [\"10.250.9.0/24\"]\n",
    )
    .unwrap()
    .settings()
    .unwrap()
}

/// A static volume's context: the path, its project, the mount mode.
fn publish(share: &str, project: u32, mode: &str, target: &Path) -> NodePublishVolumeRequest {
    let context: HashMap<String, String> = [
        ("sharePath", share.to_string()),
        ("projectId", project.to_string()),
        ("mountMode", mode.to_string()),
        ("static", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    NodePublishVolumeRequest {
        volume_id: share.replace('/', "-"),
        target_path: target.display().to_string(),
        volume_capability: Some(rwx()),
        volume_context: context,
        ..Default::default()
    }
}

fn unpublish(share: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: share.replace('/', "-"),
        target_path: target.display().to_string(),
    }
}

fn mounted(path: &Path) -> bool {
    backend::mount::is_mount_point(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (an XFS loop image, a network namespace, real mounts)"]
async fn a_tenants_node_mounts_its_volumes_from_its_fileset_and_refuses_what_is_not_theirs() {
    assert!(is_root(), "needs root");
    let fs = TenantFs::new();
    let server = FilesetServer::new(&fs.fs, "shares/alpha");
    let backend = fs.backend(&server);
    let socket = fs.dir.path().join("node.sock");
    let ns = NetNs::new("10.250.8.8/24");
    let (stop, thread) = serve_in_netns(&ns.path(), {
        let socket = socket.clone();
        move |stopped, up| async move {
            let service = share::ShareService::open(Arc::new(backend), settings())
                .await
                .unwrap();
            let options = DriverOptions {
                name: "test.csi.lustrekit.io".into(),
                node_id: "node-alpha".into(),
                mode: Mode::Node,
                fs_timeout: csi::DEFAULT_FS_TIMEOUT,
                quota_margin: Default::default(),
                hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
                node_state_dir: None,
            };
            csi::server::serve(
                Driver::new(Arc::new(service), options),
                &socket,
                None,
                async move {
                    let _ = stopped.await;
                },
                move |_| {
                    let _ = up.send(());
                },
            )
            .await
            .unwrap();
        }
    })
    .await;
    let mut n = csi::grpc::node_client::NodeClient::new(connect(&socket).await);

    // alpha's volume, direct: asked for from alpha's fileset, checked, readable.
    let t1 = fs.dir.path().join("t1");
    n.node_publish_volume(publish("shares/alpha/pvc-1", 7, "direct", &t1))
        .await
        .unwrap();
    assert_eq!(server.devices(), [format!("{MGS}:/testfs/pvc-1")]);
    assert_eq!(
        std::fs::read_to_string(t1.join("data")).unwrap(),
        "alpha's volume"
    );
    // A retry checks what is mounted and mounts nothing more.
    n.node_publish_volume(publish("shares/alpha/pvc-1", 7, "direct", &t1))
        .await
        .unwrap();
    assert_eq!(server.calls().len(), 1);
    // Published with a project that is not the directory's: refused on the retry's check.
    let err = n
        .node_publish_volume(publish("shares/alpha/pvc-1", 8, "direct", &t1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(!mounted(&t1));
    n.node_unpublish_volume(unpublish("shares/alpha/pvc-1", &t1))
        .await
        .unwrap();

    // Bind mode: the shared client mount names no path (so it is alpha's root).
    let t2 = fs.dir.path().join("t2");
    n.node_publish_volume(publish("shares/alpha/pvc-1", 7, "bind", &t2))
        .await
        .unwrap();
    assert_eq!(
        server.devices().last().map(String::as_str),
        Some(format!("{MGS}:/testfs").as_str())
    );
    assert_eq!(
        std::fs::read_to_string(t2.join("data")).unwrap(),
        "alpha's volume"
    );
    n.node_unpublish_volume(unpublish("shares/alpha/pvc-1", &t2))
        .await
        .unwrap();
    assert!(!mounted(&t2));

    // beta's volume: refused before anything runs.
    let calls = server.calls().len();
    let t3 = fs.dir.path().join("t3");
    let err = n
        .node_publish_volume(publish("shares/beta/pvc-1", 9, "direct", &t3))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("beta"), "{err:?}");
    assert_eq!(server.calls().len(), calls);
    assert!(!t3.exists());

    // The servers still hold this node in beta's nodemap: beta's `pvc-1` answers for
    // alpha's, and is refused and unmounted, in both modes.
    *server.fileset.lock().unwrap() = "shares/beta".into();
    for mode in ["direct", "bind"] {
        let t4 = fs.dir.path().join(format!("t4-{mode}"));
        let err = n
            .node_publish_volume(publish("shares/alpha/pvc-1", 7, mode, &t4))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{mode}: {err:?}");
        assert!(err.message().contains("project ID 9"), "{mode}: {err:?}");
        assert!(!mounted(&t4), "{mode}");
        assert!(!t4.join("data").exists(), "{mode}");
    }

    let _ = stop.send(());
    thread.join().unwrap();
}
