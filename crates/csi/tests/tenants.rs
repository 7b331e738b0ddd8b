//! Tenants through the driver: a volume is placed under its tenant's root (by the class's
//! `tenant` or its PVC namespace's), the tenant's quota caps its volumes together, and
//! NodePublishVolume refuses a tenant's volume on a node that is not the tenant's, and a
//! volume of no tenant on a tenant's node (on `local` nothing else would). The root test gives a node plugin its own network
//! namespace with its own address (a veth end), as a node of the other tenant.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use csi::grpc::*;
use csi::{Driver, DriverOptions, Mode};
use tokio::sync::oneshot;
use tonic::Code;

/// Tenant `far` has TEST-NET-3 (RFC 5737), which no host here has (checked, see
/// [`far_is_not_this_host`]); `beta` is the node in the network namespace.
fn config(root: &Path) -> String {
    format!(
        "{}\n[[tenants]]\nname = \"far\"\nranges = [\"203.0.113.0/24\"]\nquota = \"3MiB\"\n\
         namespaces = [\"team-far\"]\n\
         [[tenants]]\nname = \"beta\"\nranges = [\"10.250.7.7\"]\nnamespaces = [\"team-b\"]\n",
        config_text(root)
    )
}

/// Fails with the reason if this host happens to have an address of `far`'s range.
fn far_is_not_this_host() {
    let far: lustre_model::NidRange =
        lustre_model::NidRange::from_cidr("203.0.113.0/24", lustre_model::LNet::TCP).unwrap();
    for addr in csi::tenancy::node_addresses().unwrap() {
        let nid = lustre_model::Nid {
            addr,
            net: lustre_model::LNet::TCP,
        };
        assert!(
            !far.contains(&nid),
            "this host has {addr}, in the test tenant's range"
        );
    }
}

fn options(mode: Mode, node_id: &str) -> DriverOptions {
    DriverOptions {
        name: "test.csi.lustrekit.io".into(),
        node_id: node_id.into(),
        mode,
        fs_timeout: csi::DEFAULT_FS_TIMEOUT,
        quota_margin: Default::default(),
        hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
        node_state_dir: None,
    }
}

/// Serves a driver for `root` (with the tenants) on `socket` until `stop` fires.
async fn serve(
    root: &Path,
    socket: &Path,
    options: DriverOptions,
    stop: oneshot::Receiver<()>,
    ready: oneshot::Sender<()>,
) {
    let config = share::Config::from_toml(&config(root)).unwrap();
    let fs = config.open_backend().await.unwrap();
    let service = Arc::new(
        share::ShareService::open(fs, config.settings().unwrap())
            .await
            .unwrap(),
    );
    let driver = Driver::new(service, options);
    csi::server::serve(
        driver,
        socket,
        None,
        async move {
            let _ = stop.await;
        },
        move |_| {
            let _ = ready.send(());
        },
    )
    .await
    .unwrap();
}

struct Served {
    channel: tonic::transport::Channel,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(root: &Path, socket: &Path, options: DriverOptions) -> Served {
    let (stop, stopped) = oneshot::channel();
    let (ready, is_ready) = oneshot::channel();
    let (root, sock) = (root.to_path_buf(), socket.to_path_buf());
    tokio::spawn(async move { serve(&root, &sock, options, stopped, ready).await });
    is_ready.await.expect("driver did not start");
    Served {
        channel: connect(socket).await,
        stop: Some(stop),
    }
}

fn create(name: &str, mib: i64, params: &[(&str, &str)]) -> CreateVolumeRequest {
    create_req(name, mib << 20, params)
}

fn publish(volume: &Volume, target: &Path) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
        volume_capability: Some(rwx()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_tenant_volume_lives_under_its_root_and_is_refused_on_a_node_not_its_own() {
    far_is_not_this_host();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let served = start(
        &root,
        &dir.path().join("csi.sock"),
        options(Mode::All, "node-1"),
    )
    .await;
    let mut c = csi::grpc::controller_client::ControllerClient::new(served.channel.clone());
    let mut n = csi::grpc::node_client::NodeClient::new(served.channel.clone());

    let far = c
        .create_volume(create("pvc-far", 2, &[("tenant", "far")]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        far.volume_context.get("tenant").map(String::as_str),
        Some("far")
    );
    assert_eq!(
        far.volume_context.get("sharePath").map(String::as_str),
        Some("shares/far/pvc-far")
    );
    assert!(root.join("shares/far/pvc-far").is_dir());
    // By namespace, and the namespace's tenant wins over no class parameter only.
    let by_ns = create(
        "pvc-ns",
        1,
        &[("csi.storage.k8s.io/pvc/namespace", "team-far")],
    );
    let by_ns = c
        .create_volume(by_ns)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        by_ns.volume_context.get("tenant").map(String::as_str),
        Some("far")
    );
    let mismatch = create(
        "pvc-x",
        1,
        &[
            ("tenant", "beta"),
            ("csi.storage.k8s.io/pvc/namespace", "team-far"),
        ],
    );
    assert_eq!(
        c.create_volume(mismatch).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // 2 + 1 MiB hold the 3 MiB quota: one more byte is RESOURCE_EXHAUSTED.
    let over = c
        .create_volume(create("pvc-over", 1, &[("tenant", "far")]))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("far"), "{over:?}");

    // This host is not a node of `far`: refused before anything is mounted.
    let target = dir.path().join("target");
    let err = n
        .node_publish_volume(publish(&far, &target))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("far") && err.message().contains("node-1"),
        "{err:?}"
    );
    assert!(!target.exists());
    // A static PV naming a path under the root, without the context's tenant, is checked too.
    let mut bare = far.clone();
    bare.volume_context.remove("tenant");
    let err = n
        .node_publish_volume(publish(&bare, &target))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Deleting a tenant volume finds it under the root.
    c.delete_volume(DeleteVolumeRequest {
        volume_id: far.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!root.join("shares/far/pvc-far").exists());
}

/// Runs a node plugin on `socket` in the network namespace at the path `ns`.
async fn node_in_netns(
    ns: &str,
    root: &Path,
    socket: &Path,
    node_id: &str,
) -> (oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let (root, socket, node_id) = (
        root.to_path_buf(),
        socket.to_path_buf(),
        node_id.to_string(),
    );
    serve_in_netns(ns, move |stopped, up| async move {
        serve(&root, &socket, options(Mode::Node, &node_id), stopped, up).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (a network namespace, a veth pair, bind mounts)"]
async fn a_volume_of_one_tenant_is_refused_on_the_other_tenants_node() {
    assert!(is_root(), "needs root");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let controller = start(
        &root,
        &dir.path().join("ctl.sock"),
        options(Mode::Controller, "ctl"),
    )
    .await;
    let mut c = csi::grpc::controller_client::ControllerClient::new(controller.channel.clone());
    let far = c
        .create_volume(create("pvc-far", 1, &[("tenant", "far")]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let beta = c
        .create_volume(create(
            "pvc-beta",
            1,
            &[("csi.storage.k8s.io/pvc/namespace", "team-b")],
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        beta.volume_context.get("tenant").map(String::as_str),
        Some("beta")
    );

    let ns = NetNs::new("10.250.7.7/24");
    let socket = dir.path().join("node-beta.sock");
    let (stop, thread) = node_in_netns(&ns.path(), &root, &socket, "node-beta").await;
    let mut n = csi::grpc::node_client::NodeClient::new(connect(&socket).await);

    let far_target = dir.path().join("far-target");
    let err = n
        .node_publish_volume(publish(&far, &far_target))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("far") && err.message().contains("node-beta"),
        "{err:?}"
    );
    assert!(!far_target.exists());

    // A volume of no tenant: beta's node sees only beta's volumes.
    let plain = c
        .create_volume(create("pvc-plain", 1, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let plain_target = dir.path().join("plain-target");
    let err = n
        .node_publish_volume(publish(&plain, &plain_target))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("beta") && err.message().contains("no tenant"),
        "{err:?}"
    );
    assert!(!plain_target.exists());

    let beta_target = dir.path().join("beta-target");
    n.node_publish_volume(publish(&beta, &beta_target))
        .await
        .unwrap();
    std::fs::write(beta_target.join("hello"), b"from beta's node").unwrap();
    assert_eq!(
        std::fs::read(root.join("shares/beta/pvc-beta/hello")).unwrap(),
        b"from beta's node"
    );
    n.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: beta.volume_id.clone(),
        target_path: beta_target.display().to_string(),
    })
    .await
    .unwrap();

    // The same volume on a node outside the namespace (this host) is refused.
    let host = start(
        &root,
        &dir.path().join("host.sock"),
        options(Mode::Node, "node-host"),
    )
    .await;
    let mut h = csi::grpc::node_client::NodeClient::new(host.channel.clone());
    let err = h
        .node_publish_volume(publish(&beta, &dir.path().join("host-target")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let _ = stop.send(());
    thread.join().unwrap();
}
