//! The `lustre` backend's Persistent Client Cache commands against the [`FakeRunner`]: every
//! argv exactly as `shared/lustre-formats/pcc.md` (a) gives it, for a 2.15 and a 2.16+
//! client, outputs from (b)/(c); and the `local` backend says it has no client cache.

mod lustre_common;

use std::path::Path;
use std::sync::Arc;

use backend::lustre::FakeRunner;
use backend::{BackendError, Filesystem, Pcc};
use lustre_model::{Fid, PccAddParam, PccDialect, PccMode, PccRule, PccType, parse_lctl_pcc_list};

use lustre_common::fake::*;

const VERSION_215: &str = "version=2.15.4\n";
const VERSION_216: &str = "version=2.16.0_ddn56b\n";

fn version(fake: FakeRunner, text: &str) -> FakeRunner {
    fake.expect(["lctl", "get_param", "version"], text, "", 0)
}

fn param(rule: &str, mode: PccMode, id: u64, dialect: PccDialect) -> PccAddParam {
    let rule = PccRule::parse(rule, dialect).expect("valid rule");
    PccAddParam::for_volume(Some(&rule), 1001, mode, id, dialect).expect("valid param")
}

const MNT: &str = "/var/lib/lustrekit/mnt/testfs";
const CACHE: &str = "/csi-pcc/1001";

#[tokio::test]
async fn add_on_216_is_read_only_by_default_and_scoped_to_the_project() {
    let fake = Arc::new(version(FakeRunner::new(), VERSION_216).expect(
        [
            "lctl",
            "pcc",
            "add",
            MNT,
            CACHE,
            "--param",
            "projid={1001}&fname={*.h5} roid=1001 pccro=1",
        ],
        "",
        "",
        0,
    ));
    let b = backend(&fake);
    assert!(b.capabilities().pcc);
    let p = param("fname={*.h5}", PccMode::ReadOnly, 1001, PccDialect::V2_16);
    b.pcc_add(Path::new(MNT), Path::new(CACHE), &p)
        .await
        .expect("added");
    fake.assert_done();
}

#[tokio::test]
async fn add_on_215_is_read_write_with_the_215_keys_and_the_dialect_is_read_once() {
    let fake = Arc::new(
        version(FakeRunner::new(), VERSION_215)
            .expect(
                [
                    "lctl",
                    "pcc",
                    "add",
                    MNT,
                    CACHE,
                    "--param",
                    "projid={1001}&fname={*.h5},projid={1001}&uid={500} rwid=2 rwpcc=1",
                ],
                "",
                "",
                0,
            )
            .expect(
                ["lfs", "pcc", "attach", "-i", "2", "/mnt/testfs/v/a.h5"],
                "",
                "",
                0,
            ),
    );
    let b = backend(&fake);
    let p = param(
        "fname={*.h5},uid={500}",
        PccMode::ReadWrite,
        2,
        PccDialect::V2_15,
    );
    b.pcc_add(Path::new(MNT), Path::new(CACHE), &p)
        .await
        .expect("added");
    b.pcc_attach(Path::new("/mnt/testfs/v/a.h5"), 2, PccMode::ReadWrite)
        .await
        .expect("attached");
    fake.assert_done();
}

#[tokio::test]
async fn a_215_client_refuses_read_only_and_216_rules_before_running_anything() {
    let fake = Arc::new(version(FakeRunner::new(), VERSION_215));
    let b = backend(&fake);
    let p = param("size<{1M}", PccMode::ReadOnly, 7, PccDialect::V2_16);
    let err = b
        .pcc_add(Path::new(MNT), Path::new(CACHE), &p)
        .await
        .expect_err("2.16 rule on 2.15");
    assert!(
        matches!(&err, BackendError::Unsupported { .. }) && err.to_string().contains("2.16"),
        "{err}"
    );
    let err = b
        .pcc_attach(Path::new("/mnt/testfs/a"), 7, PccMode::ReadOnly)
        .await
        .expect_err("PCC-RO on 2.15");
    assert!(err.to_string().contains("read-only PCC"), "{err}");
    fake.assert_done();
}

#[tokio::test]
async fn add_again_with_the_same_rule_is_success_and_with_another_an_error() {
    let add = [
        "lctl",
        "pcc",
        "add",
        MNT,
        CACHE,
        "--param",
        "projid={1001} roid=1001 pccro=1",
    ];
    let listed = format!(
        "pcc:\n  -\n    pccpath: {CACHE}\n    hsmtool: posix_v2\n    rwid: 0\n    roid: 1001\n    flags: ae\n    autocache: projid={{1001}}\n"
    );
    let other = listed.replace("autocache: projid={1001}", "autocache: projid={9}");
    let eexist =
        "lctl pcc add: failed to run 'pcc add' on '/var/lib/lustrekit/mnt/testfs': File exists\n";
    let fake = Arc::new(
        version(FakeRunner::new(), VERSION_216)
            .expect(add, "", eexist, 17)
            .expect(["lctl", "pcc", "list", MNT], listed.as_str(), "", 0)
            .expect(add, "", eexist, 17)
            .expect(["lctl", "pcc", "list", MNT], other.as_str(), "", 0),
    );
    let b = backend(&fake);
    let p = PccAddParam::for_volume(None, 1001, PccMode::ReadOnly, 1001, PccDialect::V2_16)
        .expect("valid");
    b.pcc_add(Path::new(MNT), Path::new(CACHE), &p)
        .await
        .expect("same rule: success");
    let err = b
        .pcc_add(Path::new(MNT), Path::new(CACHE), &p)
        .await
        .expect_err("another rule");
    assert!(err.to_string().contains("projid={9}"), "{err}");
    fake.assert_done();
}

#[tokio::test]
async fn del_list_state_and_an_absent_cache() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["lctl", "pcc", "del", MNT, CACHE], "", "", 0)
            .expect(
                ["lctl", "pcc", "del", MNT, CACHE],
                "",
                "lctl pcc del: failed to run 'pcc del' on '/var/lib/lustrekit/mnt/testfs': No such file or directory\n",
                2,
            )
            .expect(
                ["lctl", "pcc", "list", MNT],
                "/mnt/pcc:\n  rwid: 2\n  flags: 3e\n  autocache: projid={500}\n",
                "",
                0,
            )
            .expect(
                ["lfs", "pcc", "state", "/mnt/lustre/test"],
                "file: /mnt/lustre/test, type: readwrite, PCC file: /mnt/pcc/0004/0000/0bd1/0000/0002/0000/0x200000bd1:0x4:0x0, user number: 1, flags: 4\n",
                "",
                0,
            ),
    );
    let b = backend(&fake);
    assert!(b.pcc_del(Path::new(MNT), Path::new(CACHE)).await.unwrap());
    assert!(!b.pcc_del(Path::new(MNT), Path::new(CACHE)).await.unwrap());
    let list = b.pcc_list(Path::new(MNT)).await.unwrap();
    assert_eq!(
        list,
        parse_lctl_pcc_list("/mnt/pcc:\n  rwid: 2\n  flags: 3e\n  autocache: projid={500}\n")
            .unwrap()
    );
    let state = b.pcc_state(Path::new("/mnt/lustre/test")).await.unwrap();
    assert_eq!(state.kind, PccType::ReadWrite);
    assert_eq!(state.open_count, Some(1));
    fake.assert_done();
}

#[tokio::test]
async fn detach_fid_per_dialect_and_attach_read_only_on_216() {
    let fid: Fid = "0x200000bd1:0x4:0x0".parse().unwrap();
    let fake = Arc::new(
        version(FakeRunner::new(), VERSION_216)
            .expect(
                [
                    "lfs",
                    "pcc",
                    "detach_fid",
                    "-m",
                    MNT,
                    "[0x200000bd1:0x4:0x0]",
                ],
                "",
                "",
                0,
            )
            .expect(
                [
                    "lfs",
                    "pcc",
                    "attach",
                    "-i",
                    "1001",
                    "-r",
                    "/mnt/testfs/v/a",
                ],
                "",
                "",
                0,
            )
            .expect(
                ["lfs", "pcc", "attach", "-i", "3", "-w", "/mnt/testfs/v/b"],
                "",
                "",
                0,
            ),
    );
    let b = backend(&fake);
    b.pcc_detach_fid(Path::new(MNT), &fid).await.unwrap();
    b.pcc_attach(Path::new("/mnt/testfs/v/a"), 1001, PccMode::ReadOnly)
        .await
        .unwrap();
    b.pcc_attach(Path::new("/mnt/testfs/v/b"), 3, PccMode::ReadWrite)
        .await
        .unwrap();
    fake.assert_done();

    let fake = Arc::new(version(FakeRunner::new(), VERSION_215).expect(
        ["lfs", "pcc", "detach_fid", MNT, "[0x200000bd1:0x4:0x0]"],
        "",
        "",
        0,
    ));
    backend(&fake)
        .pcc_detach_fid(Path::new(MNT), &fid)
        .await
        .unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn counters_come_from_llite_stats() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lctl", "get_param", "llite.testfs-*.stats"],
        "llite.testfs-ffff000189257000.stats=\nsnapshot_time             1790277040.611962111 secs.nsecs\npcc_attach                3 samples [reqs]\npcc_detach                1 samples [reqs]\npcc_hit_bytes             12 samples [bytes] 0 1048576 5000000 900000000\n",
        "",
        0,
    ));
    let c = backend(&fake).pcc_counters().await.unwrap();
    assert_eq!(
        (c[0].attach, c[0].detach, c[0].hits, c[0].hit_bytes),
        (3, 1, 12, 5_000_000)
    );
    fake.assert_done();
}

#[tokio::test]
async fn relative_paths_are_refused_before_running_anything() {
    let fake = Arc::new(FakeRunner::new());
    let b = backend(&fake);
    assert!(b.pcc_del(Path::new("mnt"), Path::new(CACHE)).await.is_err());
    assert!(b.pcc_list(Path::new("x/y")).await.is_err());
    // The kernel splits its command at spaces.
    assert!(
        b.pcc_del(Path::new(MNT), Path::new("/my cache"))
            .await
            .is_err()
    );
    fake.assert_done();
}

#[tokio::test]
async fn the_local_backend_has_no_client_cache() {
    let dir = tempfile::tempdir().expect("tmp");
    let local = backend::local::LocalBackend::open(dir.path())
        .await
        .expect("local backend");
    assert!(!local.capabilities().pcc);
    let p = PccAddParam::for_volume(None, 1, PccMode::ReadOnly, 1, PccDialect::V2_16).unwrap();
    let err = local
        .pcc_add(Path::new("/mnt"), Path::new("/pcc"), &p)
        .await
        .expect_err("unsupported");
    assert!(matches!(err, BackendError::Unsupported { .. }), "{err}");
    let err = local
        .pcc_attach(Path::new("/mnt/a"), 1, PccMode::ReadOnly)
        .await
        .expect_err("unsupported");
    assert!(matches!(err, BackendError::Unsupported { .. }), "{err}");
    assert!(local.pcc_dialect().await.is_err());
}
