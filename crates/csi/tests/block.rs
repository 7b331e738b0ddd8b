//! Block volumes end to end on the `local` backend over a btrfs loop image: a share's image
//! file on a loop device, bound at a target file, with ext4 made inside by the "pod" (needs
//! root: the tests are ignored unless run with `--include-ignored`).

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use backend::block::{self, BLOCK_IMAGE};
use common::*;
use csi::Mode;
use csi::grpc::*;
use tonic::Code;

const MIB: i64 = 1 << 20;

fn block_cap(mode: volume_capability::access_mode::Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Block(
            volume_capability::BlockVolume {},
        )),
        access_mode: Some(volume_capability::AccessMode { mode: mode as i32 }),
    }
}

fn rwo_block() -> VolumeCapability {
    block_cap(volume_capability::access_mode::Mode::SingleNodeWriter)
}

fn create_block(name: &str, bytes: i64) -> CreateVolumeRequest {
    let mut req = create_req(name, bytes, &[]);
    req.volume_capabilities = vec![rwo_block()];
    req
}

fn publish_req(
    volume: &Volume,
    target: &Path,
    cap: VolumeCapability,
    read_only: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap),
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

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The loop device bound at a target: its device number, after checking it is a block
/// device of the size expected.
fn device_at(target: &Path, size: u64) -> u64 {
    let meta = std::fs::metadata(target).expect("stat target");
    assert!(
        meta.file_type().is_block_device(),
        "{target:?} is no device"
    );
    let dev = std::fs::File::open(target).expect("open device");
    assert_eq!(
        block::device_size(std::os::fd::AsFd::as_fd(&dev), target).expect("size"),
        size
    );
    meta.rdev()
}

/// Waits (up to 5 s) for the loop device numbered `rdev` to be detached: a detach while
/// anything else has the device open (udev's probe, another test's search of the loop
/// devices) is deferred by the kernel to that last close.
fn assert_detached(rdev: u64) {
    for _ in 0..500 {
        if block::loop_device_of(rdev).expect("sysfs").is_none() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("loop device {rdev:#x} is still attached after 5 s");
}

fn with_ext4<T>(device: &Path, mnt: &Path, f: impl FnOnce(&Path) -> T) -> T {
    std::fs::create_dir_all(mnt).expect("mkdir");
    run(Command::new("mount")
        .arg("-t")
        .arg("ext4")
        .arg(device)
        .arg(mnt));
    let out = f(mnt);
    run(Command::new("umount").arg(mnt));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (loop devices, btrfs)"]
async fn block_volume_publish_write_republish_read_expand() {
    let fs = btrfs_root(512);
    let root = fs.root.join("root");
    let pods = fs.dir.path().join("pods");
    std::fs::create_dir(&pods).expect("mkdir");
    let d = Running::start(&root, &fs.dir.path().join("csi.sock"), Mode::All, false).await;
    let (mut c, mut n) = (d.controller(), d.node());

    let volume = c
        .create_volume(create_block("pvc-blk", 64 * MIB))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(
        volume.volume_context.get("volumeMode").map(String::as_str),
        Some("block")
    );
    let image = root.join("shares/pvc-blk").join(BLOCK_IMAGE);
    let meta = std::fs::metadata(&image).expect("image");
    assert_eq!(meta.len(), 64 << 20);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "sparse: {} blocks",
        meta.blocks()
    );
    // The same request again is the same volume; the same name as a Mount volume is not.
    let again = c
        .create_volume(create_block("pvc-blk", 64 * MIB))
        .await
        .expect("create again")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(again.volume_id, volume.volume_id);
    let err = c
        .create_volume(create_req("pvc-blk", 64 * MIB, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    let listed = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .expect("list")
        .into_inner();
    let entry = listed.entries[0].volume.as_ref().expect("entry");
    assert_eq!(entry.volume_context, volume.volume_context);

    // Publish: a device file at the target; a second publish finds it done.
    let target = pods.join("dev");
    n.node_publish_volume(publish_req(&volume, &target, rwo_block(), false))
        .await
        .expect("publish");
    n.node_publish_volume(publish_req(&volume, &target, rwo_block(), false))
        .await
        .expect("publish again");
    let rdev = device_at(&target, 64 << 20);
    let (loop_dev, backing) = block::loop_device_of(rdev)
        .expect("sysfs")
        .expect("a loop device");
    assert_eq!(backing, image);
    let dio_file = format!(
        "/sys/block/{}/loop/dio",
        loop_dev
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
    );
    let dio = std::fs::read_to_string(&dio_file).expect("dio");
    assert_eq!(dio.trim(), "1", "direct I/O on btrfs");

    // Stats: the device's size, bytes only, never "full".
    let stats = n
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: volume.volume_id.clone(),
            volume_path: target.display().to_string(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.usage.len(), 1);
    assert_eq!(stats.usage[0].total, 64 * MIB);
    let condition = stats.volume_condition.expect("condition");
    assert!(!condition.abnormal, "{}", condition.message);

    // The pod makes its filesystem on the device and writes.
    run(Command::new("mkfs.ext4").arg("-q").arg("-F").arg(&target));
    let mnt = fs.dir.path().join("pod-mnt");
    with_ext4(&target, &mnt, |m| {
        std::fs::write(m.join("hello"), b"block volumes work").expect("write")
    });
    n.node_unpublish_volume(unpublish_req(&volume.volume_id, &target))
        .await
        .expect("unpublish");
    assert!(!target.exists(), "the target file goes");
    assert_detached(loop_dev.rdev);
    n.node_unpublish_volume(unpublish_req(&volume.volume_id, &target))
        .await
        .expect("unpublish again");

    // Republish (a new device, the same data).
    n.node_publish_volume(publish_req(&volume, &target, rwo_block(), false))
        .await
        .expect("republish");
    device_at(&target, 64 << 20);
    let read = with_ext4(&target, &mnt, |m| {
        std::fs::read_to_string(m.join("hello")).expect("read")
    });
    assert_eq!(read, "block volumes work");

    // Expand: the controller grows the quota and the image, the node the device, the pod
    // its filesystem.
    let grown = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 128 * MIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(rwo_block()),
            ..Default::default()
        })
        .await
        .expect("expand")
        .into_inner();
    assert_eq!(grown.capacity_bytes, 128 * MIB);
    assert!(grown.node_expansion_required);
    assert_eq!(std::fs::metadata(&image).expect("image").len(), 128 << 20);
    device_at(&target, 64 << 20);
    let node_grown = n
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            volume_path: target.display().to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: 128 * MIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(rwo_block()),
            ..Default::default()
        })
        .await
        .expect("node expand")
        .into_inner();
    assert_eq!(node_grown.capacity_bytes, 128 * MIB);
    device_at(&target, 128 << 20);
    run(Command::new("e2fsck").arg("-f").arg("-y").arg(&target));
    run(Command::new("resize2fs").arg(&target));
    let (read, size) = with_ext4(&target, &mnt, |m| {
        let stats = nix::sys::statvfs::statvfs(m).expect("statvfs");
        (
            std::fs::read_to_string(m.join("hello")).expect("read"),
            stats.blocks() as u64 * stats.fragment_size() as u64,
        )
    });
    assert_eq!(read, "block volumes work");
    assert!(size > 100 << 20, "ext4 grew to {size} bytes");
    // A directory volume's expand needs nothing on the node.
    let plain = c
        .create_volume(create_req("pvc-dir", 4 * MIB, &[]))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    let plain_grown = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: plain.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 8 * MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("expand")
        .into_inner();
    assert!(!plain_grown.node_expansion_required);

    let rdev = device_at(&target, 128 << 20);
    n.node_unpublish_volume(unpublish_req(&volume.volume_id, &target))
        .await
        .expect("unpublish");
    assert_detached(rdev);
    c.delete_volume(DeleteVolumeRequest {
        volume_id: volume.volume_id.clone(),
        ..Default::default()
    })
    .await
    .expect("delete");
    assert!(!root.join("shares/pvc-blk").exists());
    d.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (loop devices, btrfs)"]
async fn block_volume_error_paths() {
    let fs = btrfs_root(512);
    let root = fs.root.join("root");
    let pods = fs.dir.path().join("pods");
    std::fs::create_dir(&pods).expect("mkdir");
    let d = Running::start(&root, &fs.dir.path().join("csi.sock"), Mode::All, false).await;
    let (mut c, mut n) = (d.controller(), d.node());
    let volume = c
        .create_volume(create_block("pvc-blk", 16 * MIB))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    let plain = c
        .create_volume(create_req("pvc-dir", 16 * MIB, &[]))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");

    // Block volumes take no HSM or Mount access; the kinds are checked everywhere.
    let mut hsm = create_block("pvc-hsm", 16 * MIB);
    hsm.parameters
        .insert("hsmStore".into(), "file:///tmp/nowhere".into());
    assert_eq!(
        c.create_volume(hsm).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let validate = |id: &str, cap: VolumeCapability| ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: vec![cap],
        ..Default::default()
    };
    let as_mount = c
        .validate_volume_capabilities(validate(&volume.volume_id, rwx()))
        .await
        .expect("validate")
        .into_inner();
    assert!(as_mount.confirmed.is_none() && as_mount.message.contains("Block"));
    let as_block = c
        .validate_volume_capabilities(validate(&volume.volume_id, rwo_block()))
        .await
        .expect("validate")
        .into_inner();
    assert!(as_block.confirmed.is_some(), "{}", as_block.message);
    let err = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 32 * MIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(rwx()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let target = pods.join("dev");
    let err = n
        .node_publish_volume(publish_req(&volume, &target, rwx(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = n
        .node_publish_volume(publish_req(&plain, &target, rwo_block(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(!target.exists());
    // A directory is no block target.
    let dir_target = pods.join("a-dir");
    std::fs::create_dir(&dir_target).expect("mkdir");
    let err = n
        .node_publish_volume(publish_req(&volume, &dir_target, rwo_block(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    // Read-only: the device refuses writes; a read-write publish beside it waits.
    let ro_target = pods.join("ro");
    n.node_publish_volume(publish_req(&volume, &ro_target, rwo_block(), true))
        .await
        .expect("read-only publish");
    let rdev = device_at(&ro_target, 16 << 20);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(&ro_target)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &[0u8; 4096]));
    assert!(written.is_err(), "a read-only device took a write");
    let err = n
        .node_publish_volume(publish_req(&volume, &target, rwo_block(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(!target.exists(), "a failed publish leaves no target file");
    // A second read-only target shares the device; the first unpublish keeps it.
    let ro_target2 = pods.join("ro2");
    n.node_publish_volume(publish_req(&volume, &ro_target2, rwo_block(), true))
        .await
        .expect("second read-only publish");
    assert_eq!(device_at(&ro_target2, 16 << 20), rdev);
    n.node_unpublish_volume(unpublish_req(&volume.volume_id, &ro_target))
        .await
        .expect("unpublish");
    assert!(block::loop_device_of(rdev).expect("sysfs").is_some());
    n.node_unpublish_volume(unpublish_req(&volume.volume_id, &ro_target2))
        .await
        .expect("unpublish");
    assert_detached(rdev);

    // An unpublish cut short after its unmount: the next one finds a plain target file,
    // and still detaches the volume's device (found from its image) and removes the file.
    n.node_publish_volume(publish_req(&volume, &target, rwo_block(), false))
        .await
        .expect("publish");
    let rdev = device_at(&target, 16 << 20);
    run(Command::new("umount").arg(&target));
    assert!(block::loop_device_of(rdev).expect("sysfs").is_some());
    n.node_unpublish_volume(unpublish_req(&volume.volume_id, &target))
        .await
        .expect("unpublish an unmounted target");
    assert!(!target.exists());
    assert_detached(rdev);

    // An image gone missing is a clear NOT_FOUND, and leaves no target file behind.
    std::fs::remove_file(root.join("shares/pvc-blk").join(BLOCK_IMAGE)).expect("rm");
    let err = n
        .node_publish_volume(publish_req(&volume, &target, rwo_block(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains("block image"), "{err}");
    assert!(!target.exists());
    d.stop().await.expect("stop");
}

/// Publishes of different block volumes at once do not turn each other away (each node step
/// is named by its own target in the bounded pool, not by the shared loop-control device).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root (loop devices, btrfs)"]
async fn block_volumes_publish_at_once() {
    let fs = btrfs_root(512);
    let root = fs.root.join("root");
    let pods = fs.dir.path().join("pods");
    std::fs::create_dir(&pods).expect("mkdir");
    let d = Running::start(&root, &fs.dir.path().join("csi.sock"), Mode::All, false).await;
    let mut c = d.controller();
    let mut volumes = Vec::new();
    for i in 0..4 {
        volumes.push(
            c.create_volume(create_block(&format!("pvc-{i}"), 8 * MIB))
                .await
                .expect("create")
                .into_inner()
                .volume
                .expect("volume"),
        );
    }
    let publishes = volumes.iter().enumerate().map(|(i, v)| {
        let mut n = d.node();
        let req = publish_req(v, &pods.join(format!("dev-{i}")), rwo_block(), false);
        async move { n.node_publish_volume(req).await }
    });
    for result in futures_join_all(publishes).await {
        result.expect("publish");
    }
    let mut rdevs: Vec<u64> = (0..4)
        .map(|i| device_at(&pods.join(format!("dev-{i}")), 8 << 20))
        .collect();
    rdevs.sort_unstable();
    rdevs.dedup();
    assert_eq!(rdevs.len(), 4, "one loop device each");
    let unpublishes = volumes.iter().enumerate().map(|(i, v)| {
        let mut n = d.node();
        let req = unpublish_req(&v.volume_id, &pods.join(format!("dev-{i}")));
        async move { n.node_unpublish_volume(req).await }
    });
    for result in futures_join_all(unpublishes).await {
        result.expect("unpublish");
    }
    for rdev in rdevs {
        assert_detached(rdev);
    }
    d.stop().await.expect("stop");
}

/// Runs the futures at once on the runtime and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
