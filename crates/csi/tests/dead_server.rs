//! A node whose filesystem server died. The dead server is a FUSE mount whose server never
//! answers a request (not even INIT): every stat or statvfs under it blocks in the kernel,
//! as it does on a Lustre or NFS client whose servers are gone. The node must answer anyway,
//! with clear errors, and go on serving the other volumes. Needs root and /dev/fuse.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use backend::mount::{FsCalls, is_mount_point};
use common::*;
use csi::Mode;
use csi::grpc::*;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use tonic::Code;

const MIB: i64 = 1 << 20;

/// Only turns a wedged call into a test failure instead of a test that never ends; no
/// duration is asserted.
const LIVENESS: Duration = Duration::from_secs(300);

async fn live<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIVENESS, call)
        .await
        .expect("the call never returned: the node is wedged")
}

/// A FUSE filesystem mounted at a directory, whose server never reads its requests.
/// Dropping it closes the device, which aborts the connection: every call blocked on it
/// returns (ENOTCONN), as when a dead server comes back or is evicted.
struct DeadFuse {
    device: Option<OwnedFd>,
    at: PathBuf,
}

impl DeadFuse {
    fn mount(at: &Path) -> DeadFuse {
        let device = nix::fcntl::open(
            "/dev/fuse",
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open /dev/fuse");
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            device.as_raw_fd()
        );
        nix::mount::mount(
            Some("lustrekit-dead"),
            at,
            Some("fuse.lustrekit-dead"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .expect("mount a FUSE filesystem");
        DeadFuse {
            device: Some(device),
            at: at.to_path_buf(),
        }
    }
}

impl Drop for DeadFuse {
    fn drop(&mut self) {
        drop(self.device.take());
        let _ = nix::mount::umount2(&self.at, MntFlags::MNT_DETACH);
    }
}

fn publish_req(volume: &Volume, target: &Path) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
        volume_capability: Some(rwx()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

fn unpublish_req(volume: &Volume, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
    }
}

fn stats_req(volume: &Volume, path: &Path) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: volume.volume_id.clone(),
        volume_path: path.display().to_string(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and /dev/fuse"]
async fn a_dead_server_under_a_target_does_not_wedge_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let pods = dir.path().join("pods");
    std::fs::create_dir(&pods).unwrap();
    let d = Running::start_with(
        &root,
        &dir.path().join("csi.sock"),
        Mode::All,
        false,
        Duration::from_secs(2),
    )
    .await;
    let (mut c, mut n) = (d.controller(), d.node());
    let mut volumes = Vec::new();
    for name in ["pvc-dead", "pvc-alive"] {
        let volume = c
            .create_volume(create_req(name, 4 * MIB, &[]))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        volumes.push(volume);
    }
    let (dead, alive) = (&volumes[0], &volumes[1]);
    let (td, ta) = (pods.join("dead"), pods.join("alive"));
    n.node_publish_volume(publish_req(alive, &ta))
        .await
        .unwrap();

    // The dead volume's target: a mount whose server never answers.
    std::fs::create_dir(&td).unwrap();
    let fuse = DeadFuse::mount(&td);
    let shown = td.display().to_string();

    // Stats: DEADLINE_EXCEEDED naming the path; then, while that statvfs is still blocked,
    // UNAVAILABLE at once instead of a second blocked thread.
    let err = live(n.node_get_volume_stats(stats_req(dead, &td)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains(&shown), "{err:?}");
    let err = live(n.node_get_volume_stats(stats_req(dead, &td)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&shown), "{err:?}");

    // A publish onto it cannot check what is mounted there: the same, and its in-flight
    // claim is released (a retry is not ABORTED).
    let err = live(n.node_publish_volume(publish_req(dead, &td)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains(&shown), "{err:?}");
    let err = live(n.node_publish_volume(publish_req(dead, &td)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(d.driver.in_flight().is_empty());
    let stuck = FsCalls::global().stuck();
    assert_eq!(
        stuck.len(),
        2,
        "one blocked thread per call and path: {stuck:?}"
    );

    // Meanwhile the other volumes are served: stats, publish, unpublish.
    let stats = live(n.node_get_volume_stats(stats_req(alive, &ta)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage.len(), 2);
    let ta2 = pods.join("alive-2");
    live(n.node_publish_volume(publish_req(alive, &ta2)))
        .await
        .unwrap();
    std::fs::write(ta2.join("still"), b"served").unwrap();
    live(n.node_unpublish_volume(unpublish_req(alive, &ta2)))
        .await
        .unwrap();
    assert!(!ta2.exists());

    // Unpublish of the dead volume is decided from the mount table, never by a stat of the
    // mount: the cascade gets the mount off (forced or lazy) and the target is removed.
    live(n.node_unpublish_volume(unpublish_req(dead, &td)))
        .await
        .unwrap();
    assert!(!is_mount_point(&td).unwrap(), "the dead mount is gone");
    assert!(!td.exists(), "the target directory is removed");
    live(n.node_unpublish_volume(unpublish_req(dead, &td)))
        .await
        .unwrap();
    assert!(d.driver.in_flight().is_empty());

    // When the connection is gone the blocked threads return and give their slots back.
    drop(fuse);
    for _ in 0..3000 {
        if FsCalls::global().stuck().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(FsCalls::global().stuck().is_empty());
    assert_eq!(FsCalls::global().in_use(), 0);

    n.node_unpublish_volume(unpublish_req(alive, &ta))
        .await
        .unwrap();
    d.stop().await.unwrap();
}
