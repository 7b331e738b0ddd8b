//! The `lustre` backend against the [`FakeRunner`]: configuration, capabilities, `lctl get_param version`, and how commands are run (timeouts, unexpected commands, the MDS mount point). Every operation asserts the
//! exact argv sequence, and replays outputs copied from `shared/lustre-formats/` (each
//! fixture names its file and sample).

mod lustre_common;

use std::path::Path;
use std::sync::Arc;

use backend::lustre::{FakeRunner, LustreBackend, LustreConfig};
use backend::{BackendError, BackendKind, Filesystem, QuotaEnforcement};
use backend::{Hsm, Namespace, Quotas};

use lustre_common::fake::*;

#[tokio::test]
async fn version_reads_lctl_get_param_version() {
    // lctl-stats-lnet.md (c): 2.16.0 DDN client fixture, first line.
    let fake = Arc::new(FakeRunner::new().expect(
        ["lctl", "get_param", "version"],
        "version=2.16.0_ddn56b\n",
        "",
        0,
    ));
    let v = backend(&fake).version().await.unwrap();
    assert_eq!((v.major, v.minor, v.patch), (2, 16, 0));
    assert!(v.at_least(2, 16));
    fake.assert_done();
}

#[tokio::test]
async fn a_hung_command_is_a_timeout() {
    let fake = Arc::new(FakeRunner::new().expect_timeout(["lfs", "df", "/mnt/testfs"]));
    let err = backend(&fake).capacity().await.unwrap_err();
    assert!(matches!(err, BackendError::Timeout { .. }), "{err}");
    fake.assert_done();
}

#[tokio::test]
async fn an_unexpected_command_fails_and_is_reported() {
    let fake = Arc::new(FakeRunner::new().expect(["lfs", "df", "/mnt/testfs"], DF_216, "", 0));
    let err = backend(&fake).ensure_dir(&rel("a")).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("expected `lfs df /mnt/testfs`, got `mkdir -p -- /mnt/testfs/a`"),
        "{err}"
    );
    let report = fake.finish().unwrap_err();
    assert!(
        report.contains("never run: `lfs df /mnt/testfs`"),
        "{report}"
    );
}

#[test]
fn capabilities_and_paths() {
    let fake = Arc::new(FakeRunner::new());
    let b = backend(&fake);
    assert_eq!(b.kind(), BackendKind::Lustre);
    let caps = b.capabilities();
    assert_eq!(caps.quota, QuotaEnforcement::Enforced);
    assert_eq!(caps.inode_quota, QuotaEnforcement::Enforced);
    assert!(caps.nodemaps_enforced_by_server && caps.restore_on_access);
    assert!(
        caps.encryption,
        "commands run on this host: the ioctls go to its client mount"
    );
    assert!(caps.quota_outlives_directory && caps.bind_from_shared_client_mount);
    assert_eq!(
        b.host_path(&rel("tenants/a")),
        Path::new("/mnt/testfs/tenants/a")
    );
}

#[test]
fn config_from_toml_with_defaults_and_no_unknown_fields() {
    let text = r#"
fsname = "testfs"
mgs_nids = ["10.0.0.1@tcp", "10.0.0.2@tcp,10.1.0.2@o2ib"]
mount_point = "/mnt/testfs"

[mgs_host]
host = "mgs1"
key = "/etc/lustrekit/id_ed25519"
strict_host_key_checking = "accept-new"
"#;
    let config: LustreConfig = toml::from_str(text).unwrap();
    assert_eq!(config.lfs, "lfs");
    assert_eq!(config.lctl, "lctl");
    assert_eq!(config.command_timeout_secs, 60);
    assert!(config.mds_host.is_none());
    let mgs = config.mgs_host.as_ref().unwrap();
    assert_eq!((mgs.user.as_str(), mgs.port), ("root", 22));
    assert!(LustreBackend::new(config).is_ok());

    let typo = text.replace("mount_point", "mountpoint");
    assert!(toml::from_str::<LustreConfig>(&typo).is_err());
    let bad_fsname = text.replace("\"testfs\"", "\"much-too-long\"");
    assert!(toml::from_str::<LustreConfig>(&bad_fsname).is_err());
    let bad_nid = text.replace("10.0.0.1@tcp\"", "mgs1\"");
    let config: LustreConfig = toml::from_str(&bad_nid).unwrap();
    assert!(LustreBackend::new(config).is_err());
}

#[tokio::test]
async fn commands_on_the_mds_use_its_mount_point_and_host_paths_stay_local() {
    // Manila's layout: this host mounts the filesystem at /mnt/lustre, the MDS at /lustre/mds.
    let mut config = config("/mnt/lustre");
    config.mds_mount_point = Some("/lustre/mds".into());
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["lfs", "project", "-p", "7", "-s", "/lustre/mds/shares/a"],
                "",
                "",
                0,
            )
            .expect(
                ["lfs", "hsm_state", "/lustre/mds/shares/a/f"],
                "/lustre/mds/shares/a/f: (0x00000001) exists, archive_id:0\n",
                "",
                0,
            ),
    );
    let b = LustreBackend::with_runner(config, fake.clone()).unwrap();
    assert_eq!(
        b.host_path(&rel("shares/a")),
        Path::new("/mnt/lustre/shares/a")
    );
    b.set_project(&rel("shares/a"), pid(7)).await.unwrap();
    b.hsm_state(Path::new("/mnt/lustre/shares/a/f"))
        .await
        .unwrap();
    assert!(
        b.hsm_state(Path::new("/lustre/mds/shares/a/f"))
            .await
            .is_err(),
        "a path outside the local mount"
    );
    fake.assert_done();
}
