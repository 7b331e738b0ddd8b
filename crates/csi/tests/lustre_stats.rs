//! NodeGetVolumeStats on the `lustre` backend: the share service runs its directory commands
//! for real on a scratch directory standing in for the client mount, and every `lfs` and
//! `lctl` call goes to the fake runner, which asserts the exact argv and replays outputs in
//! the formats of `shared/lustre-formats/` (`lfs-quota.md` (b), the 2.16 rendering, where a
//! long mount point and the numbers share one line; `statfs_project` as
//! `lustre/llite/lproc_llite.c` prints it).

use std::sync::Arc;

use backend::Filesystem;
use backend::lustre::{FakeRunner, LustreBackend, LustreConfig, ToolsFaked};
use csi::csi_server::NodeService;
use csi::grpc::node_server::Node;
use csi::grpc::{NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, volume_usage};
use csi::{Driver, DriverOptions, Mode};
use lustre_model::{FsName, LNet, ProjectId, ProjectRange, RelPath, ShareName};
use share::{CreateShare, ShareService, ShareSettings};

const MIB: i64 = 1 << 20;

fn settings() -> ShareSettings {
    ShareSettings {
        tenants: Vec::new(),
        fsname: FsName::new("testfs").unwrap(),
        prefix: RelPath::parse("shares").unwrap(),
        project_ids: ProjectRange::new(
            ProjectId::new(1000).unwrap(),
            ProjectId::new(1999).unwrap(),
        )
        .unwrap(),
        export_nids: vec!["10.0.0.1@tcp".parse().unwrap()],
        nid_net: LNet::TCP,
        trash_ttl_secs: 60,
        root_squash: true,
        activate_nodemaps: false,
        dir: backend::DirSpec::default(),
    }
}

/// `lfs quota -p 1000` in the 2.16 format: `kbytes` used of a `limit` (KiB), `files` of an
/// inode `limit`.
fn quota_output(mnt: &str, kbytes: u64, files: u64) -> String {
    format!(
        "Disk quotas for prj 1000 (pid 1000):\n      Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace\n\
         {mnt}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}\n",
        kbytes, 0, 10240, "-", files, 0, 3, "-"
    )
}

async fn stats(node: &NodeService, id: &str, path: &str) -> NodeGetVolumeStatsResponse {
    node.node_get_volume_stats(tonic::Request::new(NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.into(),
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner()
}

fn usage(r: &NodeGetVolumeStatsResponse, unit: volume_usage::Unit) -> (i64, i64, i64) {
    let u = r
        .usage
        .iter()
        .find(|u| u.unit == unit as i32)
        .unwrap_or_else(|| panic!("no {unit:?} in {r:?}"));
    (u.total, u.used, u.available)
}

#[tokio::test]
async fn project_quota_and_inode_limit_reach_the_stats_and_the_condition() {
    let scratch = tempfile::tempdir().unwrap();
    let mnt = scratch.path().to_str().unwrap().to_string();
    let dir = format!("{mnt}/shares/vol");
    let statfs_off = "llite.testfs-ffff8e4b9a3c2800.statfs_project=0\n";
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["lfs", "project", "-p", "1000", "-s", dir.as_str()],
                "",
                "",
                0,
            )
            .expect(
                [
                    "lfs",
                    "setquota",
                    "-p",
                    "1000",
                    "-b",
                    "0",
                    "-B",
                    "10240",
                    "-i",
                    "0",
                    "-I",
                    "3",
                    mnt.as_str(),
                ],
                "",
                "",
                0,
            )
            // a volume with room
            .expect(
                ["lfs", "quota", "-p", "1000", mnt.as_str()],
                quota_output(&mnt, 2048, 2),
                "",
                0,
            )
            .expect(
                ["lctl", "get_param", "llite.testfs-*.statfs_project"],
                statfs_off,
                "",
                0,
            )
            // 2 KiB left: less than one 4 KiB block; and the third of 3 inodes used
            .expect(
                ["lfs", "quota", "-p", "1000", mnt.as_str()],
                quota_output(&mnt, 10238, 3),
                "",
                0,
            ),
    );
    let config = LustreConfig::new(
        FsName::new("testfs").unwrap(),
        vec!["10.0.0.1@tcp".into()],
        &mnt,
    );
    let fs: Arc<dyn Filesystem> = Arc::new(
        LustreBackend::with_runner(config, Arc::new(ToolsFaked::new(fake.clone()))).unwrap(),
    );
    let service = Arc::new(ShareService::open(fs, settings()).await.unwrap());
    let share = service
        .create(CreateShare {
            name: ShareName::new("vol").unwrap(),
            size_bytes: 10 * MIB as u64,
            inode_limit: Some(3),
            labels: Default::default(),
            layout: None,
            compression: None,
        })
        .await
        .unwrap();
    let driver = Driver::new(
        service,
        DriverOptions {
            name: "test.csi.lustrekit.io".into(),
            node_id: "node-1".into(),
            mode: Mode::Node,
            fs_timeout: csi::DEFAULT_FS_TIMEOUT,
            quota_margin: Default::default(),
            hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
            node_state_dir: None,
        },
    );
    let node = NodeService::new(driver);
    let id = share.volume_id.to_string();

    let roomy = stats(&node, &id, &dir).await;
    assert_eq!(
        usage(&roomy, volume_usage::Unit::Bytes),
        (10 * MIB, 2 * MIB, 8 * MIB)
    );
    assert_eq!(usage(&roomy, volume_usage::Unit::Inodes), (3, 2, 1));
    let condition = roomy.volume_condition.unwrap();
    assert!(!condition.abnormal, "{condition:?}");
    assert!(
        condition
            .message
            .starts_with("ok; df in a pod shows the filesystem, not the 10MiB quota")
            && condition
                .message
                .contains("llite.testfs-ffff8e4b9a3c2800.statfs_project is 0"),
        "{condition:?}"
    );

    let full = stats(&node, &id, &dir).await;
    assert_eq!(usage(&full, volume_usage::Unit::Bytes).2, 2048);
    assert_eq!(usage(&full, volume_usage::Unit::Inodes), (3, 3, 0));
    let condition = full.volume_condition.unwrap();
    assert!(condition.abnormal, "{condition:?}");
    assert!(
        condition.message.contains("project 1000 byte quota 10MiB is full")
            && condition.message.contains("2048 left, less than one write needs")
            && condition
                .message
                .contains("project 1000 inode quota 3 is full: 3 inodes used; creating a file fails with EDQUOT"),
        "{condition:?}"
    );
    fake.assert_done();
}
