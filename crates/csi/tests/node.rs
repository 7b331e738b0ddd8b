//! The Node service end to end: real bind mounts on the `local` backend (needs root: the
//! tests are ignored unless run with `--include-ignored`).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use csi::Mode;
use csi::grpc::*;
use tonic::Code;

const MIB: i64 = 1 << 20;

fn publish_req(volume: &Volume, target: &Path, read_only: bool) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
        volume_capability: Some(rwx()),
        readonly: read_only,
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

fn unpublish_req(volume_id: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (bind mounts)"]
async fn publish_two_volumes_and_unpublish_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let pods = dir.path().join("pods");
    std::fs::create_dir(&pods).unwrap();
    let d = Running::start(&root, &dir.path().join("csi.sock"), Mode::All, false).await;
    let (mut c, mut n) = (d.controller(), d.node());

    let a = c
        .create_volume(create_req("pvc-a", 4 * MIB, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let b = c
        .create_volume(create_req("pvc-b", 4 * MIB, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let (ta, tb, ta_ro) = (pods.join("a"), pods.join("b"), pods.join("a-ro"));

    n.node_publish_volume(publish_req(&a, &ta, false))
        .await
        .unwrap();
    // Idempotent: the same publish again is fine.
    n.node_publish_volume(publish_req(&a, &ta, false))
        .await
        .unwrap();
    n.node_publish_volume(publish_req(&b, &tb, false))
        .await
        .unwrap();
    n.node_publish_volume(publish_req(&a, &ta_ro, true))
        .await
        .unwrap();

    std::fs::write(ta.join("hello"), b"from a").unwrap();
    std::fs::write(tb.join("hello"), b"from b").unwrap();
    assert_eq!(
        std::fs::read(root.join("shares/pvc-a/hello")).unwrap(),
        b"from a"
    );
    assert_eq!(std::fs::read(ta_ro.join("hello")).unwrap(), b"from a");
    let err = std::fs::write(ta_ro.join("nope"), b"x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "read-only publish must refuse writes"
    );

    // Another volume on a busy target, or the same with another read-only flag: ALREADY_EXISTS.
    let err = n
        .node_publish_volume(publish_req(&b, &ta, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    let err = n
        .node_publish_volume(publish_req(&a, &ta, true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");

    // Stats come from the share's quota.
    let stats = n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: a.volume_id.clone(),
            volume_path: ta.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bytes = stats
        .usage
        .iter()
        .find(|u| u.unit == volume_usage::Unit::Bytes as i32)
        .unwrap();
    assert_eq!(bytes.total, 4 * MIB);
    assert_eq!(bytes.available, bytes.total - bytes.used);
    assert!(!stats.volume_condition.unwrap().abnormal);

    // Unpublishing a leaves b working.
    n.node_unpublish_volume(unpublish_req(&a.volume_id, &ta))
        .await
        .unwrap();
    n.node_unpublish_volume(unpublish_req(&a.volume_id, &ta_ro))
        .await
        .unwrap();
    assert!(!ta.exists(), "the target directory is removed");
    n.node_unpublish_volume(unpublish_req(&a.volume_id, &ta))
        .await
        .unwrap();
    std::fs::write(tb.join("still"), b"works").unwrap();
    assert_eq!(
        std::fs::read(root.join("shares/pvc-b/still")).unwrap(),
        b"works"
    );
    assert!(backend::mount::is_mount_point(&tb.canonicalize().unwrap()).unwrap());
    n.node_unpublish_volume(unpublish_req(&b.volume_id, &tb))
        .await
        .unwrap();
    assert!(!tb.exists());
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (bind mounts)"]
async fn hostile_targets_static_volumes_and_missing_shares() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let pods = dir.path().join("pods");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&pods).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let d = Running::start(&root, &dir.path().join("csi.sock"), Mode::All, false).await;
    let (mut c, mut n) = (d.controller(), d.node());
    let a = c
        .create_volume(create_req("pvc-a", MIB, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();

    // A target that is a symlink pointing outside is refused, and nothing is mounted there.
    let link = pods.join("link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let err = n
        .node_publish_volume(publish_req(&a, &link, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(!backend::mount::is_mount_point(&outside).unwrap());
    let err = n
        .node_unpublish_volume(unpublish_req(&a.volume_id, &link))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    for bad in ["relative/target", "/a/../b"] {
        let mut req = publish_req(&a, Path::new("/x"), false);
        req.target_path = bad.into();
        assert_eq!(
            n.node_publish_volume(req).await.unwrap_err().code(),
            Code::InvalidArgument,
            "{bad}"
        );
    }
    // Block and missing arguments.
    let mut req = publish_req(&a, &pods.join("t"), false);
    req.volume_capability = Some(VolumeCapability {
        access_type: Some(volume_capability::AccessType::Block(
            volume_capability::BlockVolume {},
        )),
        access_mode: Some(volume_capability::AccessMode { mode: 1 }),
    });
    assert_eq!(
        n.node_publish_volume(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert!(!pods.join("t").exists());

    // A static volume: a PV naming an existing directory, mounted with no controller call.
    std::fs::create_dir_all(root.join("datasets/imagenet")).unwrap();
    std::fs::write(root.join("datasets/imagenet/README"), b"static").unwrap();
    let ctx = HashMap::from([
        ("static".to_string(), "true".to_string()),
        ("sharePath".to_string(), "datasets/imagenet".to_string()),
    ]);
    let stat = pods.join("static");
    n.node_publish_volume(NodePublishVolumeRequest {
        volume_id: "imagenet-pv".into(),
        target_path: stat.display().to_string(),
        volume_capability: Some(mount_cap(
            volume_capability::access_mode::Mode::MultiNodeReaderOnly,
        )),
        volume_context: ctx.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(std::fs::read(stat.join("README")).unwrap(), b"static");
    assert!(
        std::fs::write(stat.join("x"), b"x").is_err(),
        "reader-only access mode mounts read-only"
    );
    let stats = n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "imagenet-pv".into(),
            volume_path: stat.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage.len(), 2);
    n.node_unpublish_volume(unpublish_req("imagenet-pv", &stat))
        .await
        .unwrap();
    // Static paths that escape, and static volumes without a path, are refused.
    for path in ["../outside", "/etc", "datasets/../../outside"] {
        let mut bad = ctx.clone();
        bad.insert("sharePath".into(), path.into());
        let err = n
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: "evil".into(),
                target_path: pods.join("evil").display().to_string(),
                volume_capability: Some(rwx()),
                volume_context: bad,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err}");
    }
    // A static path that does not exist: NOT_FOUND.
    let mut gone = ctx.clone();
    gone.insert("sharePath".into(), "datasets/nothing".into());
    let err = n
        .node_publish_volume(NodePublishVolumeRequest {
            volume_id: "gone".into(),
            target_path: pods.join("gone").display().to_string(),
            volume_capability: Some(rwx()),
            volume_context: gone,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // Stats: unknown path NOT_FOUND; a published volume whose share vanished is abnormal.
    let ta = pods.join("a");
    n.node_publish_volume(publish_req(&a, &ta, false))
        .await
        .unwrap();
    let err = n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: a.volume_id.clone(),
            volume_path: pods.join("nowhere").display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    c.delete_volume(DeleteVolumeRequest {
        volume_id: a.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let stats = n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: a.volume_id.clone(),
            volume_path: ta.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let condition = stats.volume_condition.unwrap();
    assert!(condition.abnormal, "{condition:?}");
    assert!(condition.message.contains("missing"), "{condition:?}");
    n.node_unpublish_volume(unpublish_req(&a.volume_id, &ta))
        .await
        .unwrap();
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (bind mounts)"]
async fn stats_are_abnormal_over_quota() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let pods = dir.path().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let d = Running::start(&root, &dir.path().join("csi.sock"), Mode::All, false).await;
    let (mut c, mut n) = (d.controller(), d.node());
    let a = c
        .create_volume(create_req("pvc-small", MIB, &[("inodeLimit", "3")]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let ta = pods.join("a");
    n.node_publish_volume(publish_req(&a, &ta, false))
        .await
        .unwrap();
    // Over the inode limit (3) on any backend; bytes may be enforced (btrfs) or only counted.
    for i in 0..5 {
        let _ = std::fs::write(ta.join(format!("f{i}")), vec![7u8; 4096]);
    }
    let stats = n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: a.volume_id.clone(),
            volume_path: ta.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let inodes = stats
        .usage
        .iter()
        .find(|u| u.unit == volume_usage::Unit::Inodes as i32)
        .unwrap();
    assert_eq!(inodes.total, 3);
    let condition = stats.volume_condition.unwrap();
    assert!(condition.abnormal, "{condition:?} {inodes:?}");
    assert!(condition.message.contains("inodes"), "{condition:?}");
    n.node_unpublish_volume(unpublish_req(&a.volume_id, &ta))
        .await
        .unwrap();
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (bind mounts)"]
async fn bind_mount_mode_reaches_the_node_and_bad_modes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let pods = dir.path().join("pods");
    std::fs::create_dir(&pods).unwrap();
    let d = Running::start(&root, &dir.path().join("csi.sock"), Mode::All, false).await;
    let (mut c, mut n) = (d.controller(), d.node());
    let a = c
        .create_volume(create_req("pvc-a", MIB, &[("mountMode", "bind")]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(a.volume_context["mountMode"], "bind");

    // On `local` a bind-mode volume is a bind mount, like a direct one; retries are fine.
    let ta = pods.join("a");
    for _ in 0..2 {
        n.node_publish_volume(publish_req(&a, &ta, false))
            .await
            .unwrap();
    }
    std::fs::write(ta.join("hello"), b"bind").unwrap();
    assert_eq!(
        std::fs::read(root.join("shares/pvc-a/hello")).unwrap(),
        b"bind"
    );
    n.node_unpublish_volume(unpublish_req(&a.volume_id, &ta))
        .await
        .unwrap();
    assert!(!ta.exists());

    // A mode the driver does not know, in a volume context: INVALID_ARGUMENT, nothing mounted.
    let mut bad = a.clone();
    bad.volume_context
        .insert("mountMode".into(), "loopback".into());
    let tb = pods.join("b");
    let err = n
        .node_publish_volume(publish_req(&bad, &tb, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("mountMode"), "{err}");
    assert!(!tb.exists());
    d.stop().await.unwrap();
}
