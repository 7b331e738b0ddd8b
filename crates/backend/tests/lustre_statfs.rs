//! What `df` in a pod shows on the `lustre` backend (`Mounts::volume_statfs`), against
//! the [`FakeRunner`]. `lctl get_param` prints `<param>=<value>` lines (`lctl-stats-lnet.md`
//! shows the form for `version`); `statfs_project` prints `%u` of a bit (lustre-release
//! `lustre/llite/lproc_llite.c`, `statfs_project_show`, LU-16771, 2.16). A parameter that
//! does not exist makes `lctl` exit 2 with `error: get_param: param_path '<path>': No such
//! file or directory` (`lustre/utils/lustre_param.c`, `do_param_op`).

use std::sync::Arc;

use backend::Mounts;
use backend::VolumeStatfs;
use backend::lustre::{FakeRunner, LustreBackend, LustreConfig};
use lustre_model::FsName;

const PARAM: [&str; 3] = ["lctl", "get_param", "llite.testfs-*.statfs_project"];
const VERSION: [&str; 3] = ["lctl", "get_param", "version"];
const MISSING: &str =
    "error: get_param: param_path 'llite/testfs-*/statfs_project': No such file or directory\n";

fn backend(fake: &Arc<FakeRunner>) -> LustreBackend {
    let config = LustreConfig::new(
        FsName::new("testfs").unwrap(),
        vec!["10.0.0.1@tcp".into()],
        "/mnt/testfs",
    );
    LustreBackend::with_runner(config, fake.clone()).unwrap()
}

async fn statfs(fake: FakeRunner) -> VolumeStatfs {
    let fake = Arc::new(fake);
    let view = backend(&fake).volume_statfs().await.unwrap();
    fake.assert_done();
    view
}

#[tokio::test]
async fn every_mount_with_statfs_project_on_shows_the_quota() {
    let out = "llite.testfs-ffff8e4b9a3c2800.statfs_project=1\n\
               llite.testfs-ffff8e4b9a3c6000.statfs_project=1\n";
    let view = statfs(FakeRunner::new().expect(PARAM, out, "", 0)).await;
    assert_eq!(view, VolumeStatfs::ProjectQuota);
}

#[tokio::test]
async fn one_mount_with_statfs_project_off_is_named() {
    let out = "llite.testfs-ffff8e4b9a3c2800.statfs_project=1\n\
               llite.testfs-ffff8e4b9a3c6000.statfs_project=0\n";
    let view = statfs(FakeRunner::new().expect(PARAM, out, "", 0)).await;
    let VolumeStatfs::Filesystem { why } = view else {
        panic!("{view:?}");
    };
    assert!(
        why.contains("llite.testfs-ffff8e4b9a3c6000.statfs_project is 0"),
        "{why}"
    );
    assert!(!why.contains("2800"), "{why}");
    assert!(
        why.contains("lctl set_param -P llite.*.statfs_project=1"),
        "{why}"
    );
}

#[tokio::test]
async fn a_215_client_without_the_tunable_reports_project_quotas_anyway() {
    let view = statfs(FakeRunner::new().expect(PARAM, "", MISSING, 2).expect(
        VERSION,
        "version=2.15.4\n",
        "",
        0,
    ))
    .await;
    assert_eq!(view, VolumeStatfs::ProjectQuota);
}

#[tokio::test]
async fn an_older_client_never_does() {
    let view = statfs(FakeRunner::new().expect(PARAM, "", MISSING, 2).expect(
        VERSION,
        "version=2.12.9\n",
        "",
        0,
    ))
    .await;
    let VolumeStatfs::Filesystem { why } = view else {
        panic!("{view:?}");
    };
    assert!(why.contains("2.12.9 predates"), "{why}");
}

#[tokio::test]
async fn a_216_client_without_the_parameter_has_no_mount_here() {
    // As a non-root caller, 2.16 prints nothing for ENOENT; the exit status still says it.
    let view = statfs(FakeRunner::new().expect(PARAM, "", "", 2).expect(
        VERSION,
        "version=2.16.0_ddn56b\n",
        "",
        0,
    ))
    .await;
    let VolumeStatfs::Filesystem { why } = view else {
        panic!("{view:?}");
    };
    assert!(why.contains("not mounted here"), "{why}");
}

#[tokio::test]
async fn other_failures_and_garbage_are_errors() {
    let fake = Arc::new(FakeRunner::new().expect(
        PARAM,
        "",
        "error: get_param: param_path 'llite/testfs-*/statfs_project': Permission denied\n",
        13,
    ));
    let e = backend(&fake).volume_statfs().await.unwrap_err();
    assert!(e.to_string().contains("Permission denied"), "{e}");
    fake.assert_done();

    let fake = Arc::new(FakeRunner::new().expect(PARAM, "statfs_project=on\n", "", 0));
    let e = backend(&fake).volume_statfs().await.unwrap_err();
    assert!(e.to_string().contains("statfs_project=on"), "{e}");
    fake.assert_done();
}
