//! The `lustre` backend against the [`FakeRunner`]: every operation asserts the exact argv
//! sequence, and replays outputs copied from `shared/lustre-formats/` (each fixture names
//! its file and sample).

use backend::{Hsm, Mounts, Namespace, Nodemaps, Quotas};
use std::path::Path;
use std::sync::Arc;

use backend::lustre::{FakeRunner, LustreBackend, LustreConfig};
use backend::{
    BackendError, BackendKind, DirSpec, Filesystem, MountMode, MountRequest, NodemapChange,
    QuotaEnforcement,
};
use lustre_model::{
    FsName, Grace, HsmFlags, NidRange, NodemapName, ProjectId, QuotaLimits, RelPath,
};

const MOUNT: &str = "/mnt/testfs";

fn config(mount_point: &str) -> LustreConfig {
    LustreConfig::new(
        FsName::new("testfs").unwrap(),
        vec!["10.0.0.1@tcp".into(), "10.0.0.2@tcp".into()],
        mount_point,
    )
}

fn backend_at(fake: &Arc<FakeRunner>, mount_point: &str) -> LustreBackend {
    LustreBackend::with_runner(config(mount_point), fake.clone()).unwrap()
}

fn backend(fake: &Arc<FakeRunner>) -> LustreBackend {
    backend_at(fake, MOUNT)
}

fn rel(s: &str) -> RelPath {
    RelPath::parse(s).unwrap()
}

fn pid(id: u32) -> ProjectId {
    ProjectId::new(id).unwrap()
}

fn nm(name: &str) -> NodemapName {
    NodemapName::new(name).unwrap()
}

const ENOENT_STAT: &str = "stat: cannot statx '/mnt/testfs/t/a': No such file or directory\n";
const DIR_STAT: &str = "41f8 1000 2000 1700000000 directory\n";

// ---------------------------------------------------------------- directories

#[tokio::test]
async fn ensure_dir_is_mkdir_p() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["mkdir", "-p", "--", "/mnt/testfs/t/.trash"],
        "",
        "",
        0,
    ));
    backend(&fake).ensure_dir(&rel("t/.trash")).await.unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn create_share_dir_makes_owns_and_sets_mode() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["mkdir", "-m", "0700", "--", "/mnt/testfs/t/a"], "", "", 0)
            .expect(["chown", "--", "1000:2000", "/mnt/testfs/t/a"], "", "", 0)
            .expect(["chmod", "--", "2770", "/mnt/testfs/t/a"], "", "", 0),
    );
    let spec = DirSpec {
        mode: 0o2770,
        uid: 1000,
        gid: 2000,
    };
    assert!(
        backend(&fake)
            .create_share_dir(&rel("t/a"), &spec)
            .await
            .unwrap()
    );
    fake.assert_done();
}

#[tokio::test]
async fn create_share_dir_that_exists_is_false() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["mkdir", "-m", "0700", "--", "/mnt/testfs/t/a"],
        "",
        "mkdir: cannot create directory '/mnt/testfs/t/a': File exists\n",
        1,
    ));
    assert!(
        !backend(&fake)
            .create_share_dir(&rel("t/a"), &DirSpec::default())
            .await
            .unwrap()
    );
    fake.assert_done();
}

#[tokio::test]
async fn create_share_dir_without_parent_is_not_found() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["mkdir", "-m", "0700", "--", "/mnt/testfs/t/a"],
        "",
        "mkdir: cannot create directory '/mnt/testfs/t/a': No such file or directory\n",
        1,
    ));
    let err = backend(&fake)
        .create_share_dir(&rel("t/a"), &DirSpec::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::NotFound { ref path } if path == "t"),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn remove_share_dir_removes_within_one_filesystem() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["stat", "-c", "%f %u %g %Y %F", "--", "/mnt/testfs/t/a"],
                DIR_STAT,
                "",
                0,
            )
            .expect(
                ["rm", "-rf", "--one-file-system", "--", "/mnt/testfs/t/a"],
                "",
                "",
                0,
            )
            .expect(
                ["stat", "-c", "%f %u %g %Y %F", "--", "/mnt/testfs/t/a"],
                "",
                ENOENT_STAT,
                1,
            ),
    );
    let b = backend(&fake);
    assert!(b.remove_share_dir(&rel("t/a")).await.unwrap());
    assert!(!b.remove_share_dir(&rel("t/a")).await.unwrap());
    fake.assert_done();
}

#[tokio::test]
async fn remove_share_dir_refuses_a_symlink() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["stat", "-c", "%f %u %g %Y %F", "--", "/mnt/testfs/t/a"],
        "a1ff 0 0 1700000000 symbolic link\n",
        "",
        0,
    ));
    let err = backend(&fake)
        .remove_share_dir(&rel("t/a"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::InvalidState(ref m) if m.contains("symbolic link")),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn rename_checks_then_moves_without_clobbering() {
    let stat = |p: &'static str| ["stat", "-c", "%f %u %g %Y %F", "--", p];
    let fake = Arc::new(
        FakeRunner::new()
            .expect(stat("/mnt/testfs/t/.trash/a"), "", ENOENT_STAT, 1)
            .expect(stat("/mnt/testfs/t/a"), DIR_STAT, "", 0)
            .expect(
                [
                    "mv",
                    "-T",
                    "--no-clobber",
                    "--",
                    "/mnt/testfs/t/a",
                    "/mnt/testfs/t/.trash/a",
                ],
                "",
                "",
                0,
            )
            .expect(stat("/mnt/testfs/t/a"), "", ENOENT_STAT, 1)
            // Second rename: the destination exists.
            .expect(stat("/mnt/testfs/t/.trash/a"), DIR_STAT, "", 0),
    );
    let b = backend(&fake);
    b.rename(&rel("t/a"), &rel("t/.trash/a")).await.unwrap();
    let err = b.rename(&rel("t/a"), &rel("t/.trash/a")).await.unwrap_err();
    assert!(
        matches!(err, BackendError::AlreadyExists { ref path } if path == "t/.trash/a"),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn rename_that_lost_a_race_is_already_exists() {
    let stat = |p: &'static str| ["stat", "-c", "%f %u %g %Y %F", "--", p];
    let fake = Arc::new(
        FakeRunner::new()
            .expect(stat("/mnt/testfs/b"), "", ENOENT_STAT, 1)
            .expect(stat("/mnt/testfs/a"), DIR_STAT, "", 0)
            .expect(
                [
                    "mv",
                    "-T",
                    "--no-clobber",
                    "--",
                    "/mnt/testfs/a",
                    "/mnt/testfs/b",
                ],
                "",
                "",
                0,
            )
            // --no-clobber skipped silently: the source is still there.
            .expect(stat("/mnt/testfs/a"), DIR_STAT, "", 0),
    );
    let err = backend(&fake)
        .rename(&rel("a"), &rel("b"))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err}");
    fake.assert_done();
}

#[tokio::test]
async fn stat_dir_reads_mode_owner_and_project() {
    // lfs-project.md (c): NREL Eagle docs, `lfs project -d /projects/csc000`.
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["stat", "-c", "%f %u %g %Y %F", "--", "/projects/csc000"],
                DIR_STAT,
                "",
                0,
            )
            .expect(
                ["lfs", "project", "-d", "/projects/csc000"],
                "110255 P /projects/csc000\n",
                "",
                0,
            )
            .expect(
                ["stat", "-c", "%f %u %g %Y %F", "--", "/projects/gone"],
                "",
                ENOENT_STAT,
                1,
            ),
    );
    let b = backend_at(&fake, "/projects");
    let info = b.stat_dir(&rel("csc000")).await.unwrap().unwrap();
    assert_eq!(info.mode, 0o770);
    assert_eq!((info.uid, info.gid), (1000, 2000));
    assert_eq!(info.modified, 1_700_000_000);
    assert_eq!(info.project, Some(pid(110255)));
    assert_eq!(b.stat_dir(&rel("gone")).await.unwrap(), None);
    fake.assert_done();
}

#[tokio::test]
async fn list_dir_is_sorted_and_absent_is_empty() {
    let find = |p: &'static str| [p, "-mindepth", "1", "-maxdepth", "1", "-printf", "%f\\0"];
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                std::iter::once("find").chain(find("/mnt/testfs/t")),
                "b\0a b\0.lustrekit\0",
                "",
                0,
            )
            .expect(
                std::iter::once("find").chain(find("/mnt/testfs/none")),
                "",
                "find: '/mnt/testfs/none': No such file or directory\n",
                1,
            ),
    );
    let b = backend(&fake);
    assert_eq!(
        b.list_dir(&rel("t")).await.unwrap(),
        vec![".lustrekit", "a b", "b"]
    );
    assert!(b.list_dir(&rel("none")).await.unwrap().is_empty());
    fake.assert_done();
}

#[tokio::test]
async fn claim_is_one_mkdir() {
    let argv = [
        "mkdir",
        "-m",
        "0700",
        "--",
        "/mnt/testfs/.lustrekit/ids/1000",
    ];
    let fake = Arc::new(
        FakeRunner::new()
            .expect(argv, "", "", 0)
            .expect(argv, "", "mkdir: cannot create directory '/mnt/testfs/.lustrekit/ids/1000': File exists\n", 1)
            .expect(["rmdir", "--", "/mnt/testfs/.lustrekit/ids/1000"], "", "", 0)
            .expect(
                ["rmdir", "--", "/mnt/testfs/.lustrekit/ids/1000"],
                "",
                "rmdir: failed to remove '/mnt/testfs/.lustrekit/ids/1000': No such file or directory\n",
                1,
            ),
    );
    let b = backend(&fake);
    let marker = rel(".lustrekit/ids/1000");
    assert!(b.claim(&marker).await.unwrap());
    assert!(!b.claim(&marker).await.unwrap());
    b.unclaim(&marker).await.unwrap();
    b.unclaim(&marker).await.unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn state_files_read_write_remove() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["cat", "--", "/mnt/testfs/.lustrekit/state.json"], b"{\"a\":1}\xff", "", 0)
            .expect(
                ["cat", "--", "/mnt/testfs/.lustrekit/none"],
                "",
                "cat: /mnt/testfs/.lustrekit/none: No such file or directory\n",
                1,
            )
            .expect_stdin(
                [
                    "sh",
                    "-c",
                    r#"tmp="$1.tmp.$$"; { cat > "$tmp" && sync -- "$tmp" && mv -f -- "$tmp" "$1"; } || { rc=$?; rm -f -- "$tmp"; exit $rc; }"#,
                    "sh",
                    "/mnt/testfs/.lustrekit/state.json",
                ],
                b"{\"a\":2}",
                "",
                "",
                0,
            )
            .expect(["rm", "-f", "--", "/mnt/testfs/.lustrekit/state.json"], "", "", 0),
    );
    let b = backend(&fake);
    let file = rel(".lustrekit/state.json");
    assert_eq!(b.read_file(&file).await.unwrap().unwrap(), b"{\"a\":1}\xff");
    assert_eq!(b.read_file(&rel(".lustrekit/none")).await.unwrap(), None);
    b.write_file(&file, b"{\"a\":2}").await.unwrap();
    b.remove_file(&file).await.unwrap();
    fake.assert_done();
}

// ---------------------------------------------------------------- projects

#[tokio::test]
async fn set_project_uses_the_inherit_flag() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "project", "-p", "110255", "-s", "/projects/csc000"],
        "",
        "",
        0,
    ));
    backend_at(&fake, "/projects")
        .set_project(&rel("csc000"), pid(110255))
        .await
        .unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn set_project_failure_surfaces_lustre_stderr() {
    // lfs-project.md (b): `lfs: failed to set xattr for '<path>': <strerror>`.
    let stderr = "lfs: failed to set xattr for '/mnt/testfs/t/a': Operation not permitted\n";
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "project", "-p", "7", "-s", "/mnt/testfs/t/a"],
        "",
        stderr,
        1,
    ));
    let err = backend(&fake)
        .set_project(&rel("t/a"), pid(7))
        .await
        .unwrap_err();
    match err {
        BackendError::Command {
            command,
            status,
            stderr,
        } => {
            assert_eq!(command, "lfs project -p 7 -s /mnt/testfs/t/a");
            assert_eq!(status, "exit status 1");
            assert_eq!(
                stderr,
                "lfs: failed to set xattr for '/mnt/testfs/t/a': Operation not permitted"
            );
        }
        other => panic!("expected Command, got {other}"),
    }
    fake.assert_done();
}

#[tokio::test]
async fn project_of_reads_the_directory_entry() {
    let fake = Arc::new(
        FakeRunner::new()
            // lfs-project.md (c): the 5-wide format example, `   10 P /mnt/lustre/dir1`.
            .expect(
                ["lfs", "project", "-d", "/mnt/lustre/dir1"],
                "   10 P /mnt/lustre/dir1\n",
                "",
                0,
            )
            // ID 0 is "no project".
            .expect(
                ["lfs", "project", "-d", "/mnt/lustre/dir2"],
                "    0 - /mnt/lustre/dir2\n",
                "",
                0,
            )
            .expect(
                ["lfs", "project", "-d", "/mnt/lustre/dir3"],
                "",
                "lfs: failed to lstat '/mnt/lustre/dir3': No such file or directory\n",
                2,
            ),
    );
    let b = backend_at(&fake, "/mnt/lustre");
    assert_eq!(b.project_of(&rel("dir1")).await.unwrap(), Some(pid(10)));
    assert_eq!(b.project_of(&rel("dir2")).await.unwrap(), None);
    let err = b.project_of(&rel("dir3")).await.unwrap_err();
    assert!(
        matches!(err, BackendError::NotFound { ref path } if path == "dir3"),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn project_output_that_does_not_parse_is_a_typed_parse_error() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "project", "-d", "/mnt/testfs/a"],
        "garbage here\n",
        "",
        0,
    ));
    let err = backend(&fake).project_of(&rel("a")).await.unwrap_err();
    match err {
        BackendError::Parse { command, source } => {
            assert_eq!(command, "lfs project -d /mnt/testfs/a");
            assert_eq!(source.what, "lfs project");
        }
        other => panic!("expected Parse, got {other}"),
    }
    fake.assert_done();
}

// ---------------------------------------------------------------- quotas

#[tokio::test]
async fn set_quota_passes_kib_and_inode_counts() {
    // lfs-setquota.md (a): `lfs setquota -p 1000 -b 307200 -B 309200 -i 10000 -I 11000 /mnt/testfs`.
    let fake = Arc::new(FakeRunner::new().expect(
        [
            "lfs",
            "setquota",
            "-p",
            "1000",
            "-b",
            "307200",
            "-B",
            "309200",
            "-i",
            "10000",
            "-I",
            "11000",
            "/mnt/testfs",
        ],
        "",
        "",
        0,
    ));
    let limits = QuotaLimits {
        block_soft_bytes: 307_200 * 1024,
        block_hard_bytes: 309_200 * 1024,
        inode_soft: 10_000,
        inode_hard: 11_000,
    };
    backend(&fake)
        .set_quota(&rel("t/a"), pid(1000), &limits)
        .await
        .unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn set_quota_warning_is_not_an_error_but_a_refusal_is() {
    // lfs-setquota.md (b): the qunit warning (exit 0) and the root refusal.
    let warn = "lfs setquota: warning: block softlimit '1024' smaller than minimum qunit size\nSee 'lfs help setquota' or Lustre manual for details\n";
    let argv = [
        "lfs",
        "setquota",
        "-p",
        "5",
        "-b",
        "1024",
        "-B",
        "0",
        "-i",
        "0",
        "-I",
        "0",
        "/mnt/testfs",
    ];
    let fake = Arc::new(FakeRunner::new().expect(argv, "", warn, 0).expect(
        argv,
        "",
        "lfs setquota: quotactl failed: Operation not permitted\n",
        1,
    ));
    let limits = QuotaLimits {
        block_soft_bytes: 1024 * 1024 - 1,
        ..QuotaLimits::default()
    };
    let b = backend(&fake);
    b.set_quota(&rel("a"), pid(5), &limits).await.unwrap();
    let err = b.set_quota(&rel("a"), pid(5), &limits).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("Operation not permitted")),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn quota_parses_a_real_over_quota_project() {
    // lfs-quota.md (c) 1: NREL Eagle docs, over-quota project (≤2.15 format).
    let out = "Disk quotas for prj 110255 (pid 110255):\n       Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace\n/projects/csc000 3165308*   3072    4096       -      48  1073741824 2147483648       -\n";
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "quota", "-p", "110255", "/projects"],
        out,
        "",
        0,
    ));
    let report = backend_at(&fake, "/projects")
        .quota(&rel("csc000"), pid(110255))
        .await
        .unwrap();
    assert_eq!(report.usage.used_bytes, 3_165_308 * 1024);
    assert_eq!(report.usage.inodes, 48);
    assert_eq!(report.limits.block_soft_bytes, 3072 * 1024);
    assert_eq!(report.limits.block_hard_bytes, 4096 * 1024);
    assert_eq!(report.limits.inode_soft, 1_073_741_824);
    assert_eq!(report.limits.inode_hard, 2_147_483_648);
    assert!(report.block_exceeded);
    assert!(!report.inode_exceeded);
    assert!(!report.inaccurate);
    fake.assert_done();
}

#[tokio::test]
async fn quota_parses_the_217_format() {
    // lfs-quota.md (b), "Rendered from the formats", `=== 2.17 / master` (trailing spaces kept).
    let out = "Disk quotas for prj 1000 (pid 1000):\n     Filesystem  kbytes  bquota  blimit  bgrace   files  iquota  ilimit  igrace \n    /mnt/testfs  30720*   30720   30920 6d23h56m44s  10101*   10000   11000 6d23h59m50s \n";
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "quota", "-p", "1000", "/mnt/testfs"],
        out,
        "",
        0,
    ));
    let report = backend(&fake).quota(&rel("t/a"), pid(1000)).await.unwrap();
    assert_eq!(report.usage.used_bytes, 30720 * 1024);
    assert_eq!(report.limits.inode_hard, 11000);
    assert!(report.block_exceeded && report.inode_exceeded);
    assert!(matches!(report.block_grace, Grace::Remaining(_)));
    fake.assert_done();
}

#[tokio::test]
async fn quota_with_an_unreachable_target_is_reported_inaccurate() {
    // lfs-quota.md (c) 4: OzSTAR docs, bracketed values; lfs exits non-zero (-EIO) then.
    let out = "Disk quotas for usr username (uid 1000):\n     Filesystem    kbytes    quota   limit   grace   files   quota   limit   grace\n          /fred [1041408]  5242880 6291456       -     [0]       0       0       -\n";
    let fake =
        Arc::new(FakeRunner::new().expect(["lfs", "quota", "-p", "1000", "/fred"], out, "", 5));
    let report = backend_at(&fake, "/fred")
        .quota(&rel("x"), pid(1000))
        .await
        .unwrap();
    assert!(report.inaccurate);
    assert_eq!(report.usage.used_bytes, 1_041_408 * 1024);
    fake.assert_done();
}

#[tokio::test]
async fn quota_failure_without_a_table_surfaces_stderr() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "quota", "-p", "1000", "/mnt/testfs"],
        "",
        "lfs quota: cannot resolve path '/mnt/testfs': No such file or directory\n",
        2,
    ));
    let err = backend(&fake)
        .quota(&rel("a"), pid(1000))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("cannot resolve path")),
        "{err}"
    );
    fake.assert_done();
}

// ---------------------------------------------------------------- nodemaps

/// Rendered ≤2.16 `lctl get_param nodemap.active nodemap.*.*` output: formats from
/// lctl-nodemap.md (b), the range/idmap entries from the manual's BirdResearchSite sample (c).
const NODEMAPS_216: &str = "\
nodemap.active=1
nodemap.BirdResearchSite.admin_nodemap=0
nodemap.BirdResearchSite.audit_mode=1
nodemap.BirdResearchSite.deny_unknown=1
nodemap.BirdResearchSite.exports=
[
 { nid: 192.168.0.100@tcp, uuid: 1a2b-c3d4 },
]
nodemap.BirdResearchSite.fileset=/tenants/bird
nodemap.BirdResearchSite.forbid_encryption=0
nodemap.BirdResearchSite.id=1
nodemap.BirdResearchSite.idmap=
[
 { idtype: uid, client_id: 530, fs_id: 11000 },
 { idtype: gid, client_id: 600, fs_id: 11000 }
]
nodemap.BirdResearchSite.map_mode=all
nodemap.BirdResearchSite.ranges=
[
 { id: 11, start_nid: 192.168.0.100@tcp, end_nid: 192.168.0.100@tcp }
]
nodemap.BirdResearchSite.rbac=file_perms,dne_ops,quota_ops,byfid_ops,chlg_ops,fscrypt_admin
nodemap.BirdResearchSite.readonly_mount=0
nodemap.BirdResearchSite.sepol=
nodemap.BirdResearchSite.squash_gid=65534
nodemap.BirdResearchSite.squash_projid=65534
nodemap.BirdResearchSite.squash_uid=65534
nodemap.BirdResearchSite.trusted_nodemap=0
nodemap.default.admin_nodemap=0
nodemap.default.fileset=

nodemap.default.id=0
nodemap.default.idmap=
[

]
nodemap.default.ranges=
[

]
nodemap.default.squash_uid=65534
nodemap.default.trusted_nodemap=0
";

#[tokio::test]
async fn nodemaps_reads_active_and_every_map() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lctl", "get_param", "nodemap.active", "nodemap.*.*"],
        NODEMAPS_216,
        "",
        0,
    ));
    let state = backend(&fake).nodemaps().await.unwrap();
    assert!(state.active);
    assert_eq!(state.nodemaps.len(), 2);
    let bird = state
        .nodemaps
        .iter()
        .find(|n| n.name == "BirdResearchSite")
        .unwrap();
    assert_eq!(bird.fileset.as_deref(), Some("/tenants/bird"));
    assert!(bird.deny_unknown);
    assert_eq!(
        bird.ranges,
        vec![NidRange::single("192.168.0.100@tcp".parse().unwrap())]
    );
    assert_eq!(bird.squash_uid, Some(65534));
    fake.assert_done();
}

#[tokio::test]
async fn nodemap_output_that_does_not_parse_is_a_typed_parse_error() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lctl", "get_param", "nodemap.active", "nodemap.*.*"],
        "this is not get_param output\n",
        "",
        0,
    ));
    let err = backend(&fake).nodemaps().await.unwrap_err();
    assert!(
        matches!(err, BackendError::Parse { ref command, .. } if command == "lctl get_param nodemap.active 'nodemap.*.*'"),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn nodemap_changes_use_the_positional_syntax_in_order() {
    let range: NidRange = "192.168.0.[1-10]@tcp".parse().unwrap();
    let changes = vec![
        NodemapChange::Create { name: nm("t1") },
        NodemapChange::AddRange {
            name: nm("t1"),
            range,
        },
        NodemapChange::SetProperty {
            name: nm("t1"),
            property: "deny_unknown".into(),
            value: "1".into(),
        },
        NodemapChange::SetProperty {
            name: nm("t1"),
            property: "squash_uid".into(),
            value: "65534".into(),
        },
        NodemapChange::SetFileset {
            name: nm("t1"),
            fileset: Some("/tenants/t1".into()),
        },
        NodemapChange::Activate { active: true },
        NodemapChange::DelRange {
            name: nm("t1"),
            range,
        },
        NodemapChange::SetFileset {
            name: nm("t1"),
            fileset: None,
        },
        NodemapChange::Delete { name: nm("t1") },
    ];
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["lctl", "nodemap_add", "t1"], "", "", 0)
            .expect(
                [
                    "lctl",
                    "nodemap_add_range",
                    "--name",
                    "t1",
                    "--range",
                    "192.168.0.[1-10]@tcp",
                ],
                "",
                "",
                0,
            )
            .expect(
                [
                    "lctl",
                    "nodemap_modify",
                    "--name",
                    "t1",
                    "--property",
                    "deny_unknown",
                    "--value",
                    "1",
                ],
                "",
                "",
                0,
            )
            .expect(
                [
                    "lctl",
                    "nodemap_modify",
                    "--name",
                    "t1",
                    "--property",
                    "squash_uid",
                    "--value",
                    "65534",
                ],
                "",
                "",
                0,
            )
            .expect(
                [
                    "lctl",
                    "nodemap_set_fileset",
                    "--name",
                    "t1",
                    "--fileset",
                    "/tenants/t1",
                ],
                "",
                "",
                0,
            )
            .expect(["lctl", "nodemap_activate", "1"], "", "", 0)
            .expect(
                [
                    "lctl",
                    "nodemap_del_range",
                    "--name",
                    "t1",
                    "--range",
                    "192.168.0.[1-10]@tcp",
                ],
                "",
                "",
                0,
            )
            .expect(
                [
                    "lctl",
                    "nodemap_set_fileset",
                    "--name",
                    "t1",
                    "--fileset",
                    "",
                ],
                "",
                "",
                0,
            )
            .expect(["lctl", "nodemap_del", "t1"], "", "", 0),
    );
    backend(&fake)
        .apply_nodemap_changes(&changes)
        .await
        .unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn nodemap_add_and_del_are_idempotent_on_216_and_217() {
    // lctl-nodemap.md (b) "Errors / messages worth matching": the 2.16 and 2.17 texts.
    let changes = vec![
        NodemapChange::Create { name: nm("t1") },
        NodemapChange::Create { name: nm("t2") },
        NodemapChange::Delete { name: nm("t3") },
        NodemapChange::Delete { name: nm("t4") },
    ];
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["lctl", "nodemap_add", "t1"],
                "",
                "error: t1 existing nodemap name\n",
                239,
            )
            .expect(
                ["lctl", "nodemap_add", "t2"],
                "",
                "error: nodemap 't2' already exists\n",
                239,
            )
            .expect(
                ["lctl", "nodemap_del", "t3"],
                "",
                "error: t3 not existing nodemap name\n",
                254,
            )
            .expect(
                ["lctl", "nodemap_del", "t4"],
                "",
                "error: nodemap 't4' does not exist\n",
                254,
            ),
    );
    backend(&fake)
        .apply_nodemap_changes(&changes)
        .await
        .unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn nodemap_failure_stops_and_surfaces_stderr() {
    // lctl-nodemap.md: the 2.17 nodemap_modify error, and a message naming another map is
    // not mistaken for "already exists".
    let changes = vec![
        NodemapChange::SetProperty {
            name: nm("t1"),
            property: "squash_uid".into(),
            value: "0".into(),
        },
        NodemapChange::Activate { active: true },
    ];
    let stderr = "error: nodemap_modify: cannot modify nodemap 't1' to param 'squash_uid': value '0': Invalid argument\n";
    let fake = Arc::new(FakeRunner::new().expect(
        [
            "lctl",
            "nodemap_modify",
            "--name",
            "t1",
            "--property",
            "squash_uid",
            "--value",
            "0",
        ],
        "",
        stderr,
        234,
    ));
    let err = backend(&fake)
        .apply_nodemap_changes(&changes)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.ends_with("Invalid argument")),
        "{err}"
    );
    fake.assert_done();

    let fake = Arc::new(FakeRunner::new().expect(
        ["lctl", "nodemap_add", "t1"],
        "",
        "error: nodemap_add: non-dynamic nodemap only allowed on MGS node\n",
        1,
    ));
    let err = backend(&fake)
        .apply_nodemap_changes(&[NodemapChange::Create { name: nm("t1") }])
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("only allowed on MGS")),
        "{err}"
    );
    fake.assert_done();
}

#[tokio::test]
async fn nodemap_property_must_be_a_word() {
    let fake = Arc::new(FakeRunner::new());
    let err = backend(&fake)
        .apply_nodemap_changes(&[NodemapChange::SetProperty {
            name: nm("t1"),
            property: "--evil".into(),
            value: "1".into(),
        }])
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::InvalidState(_)), "{err}");
    fake.assert_done();
}

// ---------------------------------------------------------------- capacity

/// lfs-df.md (b), "Rendered from the printf formats", `=== 2.12-2.16 format`.
const DF_216: &str = "\
UUID                   1K-blocks        Used   Available Use% Mounted on
testfs-MDT0000_UUID      1251328       16384     1122304   2% /mnt/testfs[MDT:0]
testfs-OST0000_UUID   3905069824        3072  3905064704   1% /mnt/testfs[OST:0]
testfs-OST0001_UUID   3905069824     4194304  3900871424   1% /mnt/testfs[OST:1] D

filesystem_summary:   7810139648     4197376  7805936128   1% /mnt/testfs

";

/// `lfs df -i`: the `-i` header of lfs-df.md (b) (`UUID Inodes IUsed IFree IUse% Mounted on`)
/// with the 2.12–2.16 row format, rendered.
const DF_I_216: &str = "\
UUID                      Inodes       IUsed       IFree IUse% Mounted on
testfs-MDT0000_UUID       838864         272      838592   1% /mnt/testfs[MDT:0]
testfs-OST0000_UUID       262144         301      261843   1% /mnt/testfs[OST:0]
testfs-OST0001_UUID       262144         301      261843   1% /mnt/testfs[OST:1]

filesystem_summary:       838864         272      838592   1% /mnt/testfs

";

#[tokio::test]
async fn capacity_reads_the_df_summaries() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["lfs", "df", "/mnt/testfs"], DF_216, "", 0)
            .expect(["lfs", "df", "-i", "/mnt/testfs"], DF_I_216, "", 0),
    );
    let cap = backend(&fake).capacity().await.unwrap();
    assert_eq!(cap.total_bytes, 7_810_139_648 * 1024);
    assert_eq!(cap.used_bytes, 4_197_376 * 1024);
    assert_eq!(cap.available_bytes, 7_805_936_128 * 1024);
    assert_eq!(
        (cap.total_inodes, cap.used_inodes, cap.free_inodes),
        (838_864, 272, 838_592)
    );
    fake.assert_done();
}

#[tokio::test]
async fn capacity_with_the_217_format_and_overflowing_columns() {
    // lfs-df.md (b) `=== 2.17.0 / master format` (trailing spaces kept), and (c) 2: the
    // DDN EXAScaler summary whose numbers overflow the 11-char columns.
    let blocks = "UUID                   1K-blocks        Used   Available Use%  Mounted on \ntestfs-MDT0000_UUID      1251328       16384     1122304   2%  /mnt/testfs[MDT:0] \ntestfs-OST0000_UUID   3905069824        3072  3905064704   1%  /mnt/testfs[OST:0] \n\nfilesystem_summary:  12706795008       30348 12577522452   1%  /mnt/testfs \n";
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["lfs", "df", "/mnt/testfs"], blocks, "", 0)
            .expect(["lfs", "df", "-i", "/mnt/testfs"], DF_I_216, "", 0),
    );
    let cap = backend(&fake).capacity().await.unwrap();
    assert_eq!(cap.total_bytes, 12_706_795_008 * 1024);
    assert_eq!(cap.available_bytes, 12_577_522_452 * 1024);
    fake.assert_done();
}

#[tokio::test]
async fn capacity_failure_surfaces_stderr() {
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "df", "/mnt/testfs"],
        "",
        "lfs df: cannot resolve path '/mnt/testfs': No such device\n",
        19,
    ));
    let err = backend(&fake).capacity().await.unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("No such device")),
        "{err}"
    );
    fake.assert_done();
}

// ---------------------------------------------------------------- HSM

#[tokio::test]
async fn hsm_state_parses_the_manual_sample() {
    // lfs-hsm.md (c): manual, `lfs hsm_state /mnt/lustre/foo`.
    let fake = Arc::new(FakeRunner::new().expect(
        ["lfs", "hsm_state", "/mnt/lustre/foo"],
        "/mnt/lustre/foo: (0x00000009) exists archived, archive_id:5\n",
        "",
        0,
    ));
    let state = backend_at(&fake, "/mnt/lustre")
        .hsm_state(Path::new("/mnt/lustre/foo"))
        .await
        .unwrap();
    assert!(state.flags.exists && state.flags.archived && !state.flags.released);
    assert_eq!(state.archive_id, Some(5));
    fake.assert_done();
}

#[tokio::test]
async fn data_version_runs_lfs_data_version_read() {
    // lfs-hsm.md (a): `lfs data_version {--nosync|--read|--write} FILE` prints "%ju\n".
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["lfs", "data_version", "--read", "/mnt/lustre/foo"],
                "12884901890\n",
                "",
                0,
            )
            .expect(
                ["lfs", "data_version", "--read", "/mnt/lustre/gone"],
                "",
                "lfs data_version: /mnt/lustre/gone: No such file or directory\n",
                2,
            ),
    );
    let b = backend_at(&fake, "/mnt/lustre");
    let version = b.data_version(Path::new("/mnt/lustre/foo")).await.unwrap();
    assert_eq!(
        version,
        backend::DataVersion::Lustre {
            version: 12_884_901_890
        }
    );
    assert_eq!(version.token(), "lustre:12884901890");
    let gone = b.data_version(Path::new("/mnt/lustre/gone")).await;
    assert!(
        matches!(gone, Err(BackendError::NotFound { .. })),
        "{gone:?}"
    );
    assert!(b.data_version(Path::new("/elsewhere/foo")).await.is_err());
    fake.assert_done();
}

#[tokio::test]
async fn hsm_mark_sets_then_clears_and_release() {
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                [
                    "lfs",
                    "hsm_set",
                    "--exists",
                    "--archived",
                    "--archive-id",
                    "3",
                    "/mnt/testfs/t/f",
                ],
                "",
                "",
                0,
            )
            .expect(
                ["lfs", "hsm_clear", "--dirty", "/mnt/testfs/t/f"],
                "",
                "",
                0,
            )
            .expect(["lfs", "hsm_release", "/mnt/testfs/t/f"], "", "", 0)
            .expect(
                ["lfs", "hsm_set", "--norelease", "/mnt/testfs/t/f"],
                "",
                "",
                0,
            ),
    );
    let b = backend(&fake);
    let file = Path::new("/mnt/testfs/t/f");
    let set = HsmFlags {
        exists: true,
        archived: true,
        ..HsmFlags::default()
    };
    let clear = HsmFlags {
        dirty: true,
        ..HsmFlags::default()
    };
    b.hsm_mark(file, set, clear, Some(3)).await.unwrap();
    b.hsm_release(file).await.unwrap();
    let set = HsmFlags {
        no_release: true,
        ..HsmFlags::default()
    };
    b.hsm_mark(file, set, HsmFlags::default(), None)
        .await
        .unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn hsm_errors() {
    // lfs-hsm.md (a): `lfs hsm_set: change hsm flags for 'F' failed: <strerror>`.
    let stderr =
        "lfs hsm_set: change hsm flags for '/mnt/testfs/f' failed: Operation not permitted\n";
    let fake = Arc::new(
        FakeRunner::new()
            .expect(["lfs", "hsm_set", "--archived", "/mnt/testfs/f"], "", stderr, 1)
            .expect(
                ["lfs", "hsm_state", "/mnt/testfs/none"],
                "",
                "lfs hsm_state: get HSM state for '/mnt/testfs/none' failed: No such file or directory\n",
                2,
            ),
    );
    let b = backend(&fake);
    let set = HsmFlags {
        archived: true,
        ..HsmFlags::default()
    };
    let err = b
        .hsm_mark(Path::new("/mnt/testfs/f"), set, HsmFlags::default(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.ends_with("Operation not permitted")),
        "{err}"
    );
    let err = b
        .hsm_state(Path::new("/mnt/testfs/none"))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::NotFound { .. }), "{err}");
    // Outside the mount, or "released" as a flag to set: refused before anything runs.
    assert!(b.hsm_release(Path::new("/etc/passwd")).await.is_err());
    assert!(
        b.hsm_release(Path::new("/mnt/testfs/../etc/passwd"))
            .await
            .is_err()
    );
    let released = HsmFlags {
        released: true,
        ..HsmFlags::default()
    };
    assert!(matches!(
        b.hsm_mark(
            Path::new("/mnt/testfs/f"),
            released,
            HsmFlags::default(),
            None
        )
        .await,
        Err(BackendError::Unsupported { .. })
    ));
    fake.assert_done();
}

// ---------------------------------------------------------------- mounts, version, misc

#[tokio::test]
async fn mount_builds_the_fileset_device() {
    // mount-lustre.md (a): `MGSNODE[:MGSNODE]:/FSNAME[/SUBDIR]`.
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["mount", "-t", "lustre", "-o", "ro,flock", "10.0.0.1@tcp:10.0.0.2@tcp:/testfs/tenants/a", "/var/lib/kubelet/pods/x/mount"],
                "",
                "",
                0,
            )
            .expect(["mount", "-t", "lustre", "10.0.0.1@tcp:10.0.0.2@tcp:/testfs/tenants/b", "/mnt/b"], "", "", 0)
            .expect(
                ["mount", "-t", "lustre", "10.0.0.1@tcp:10.0.0.2@tcp:/testfs/tenants/c", "/mnt/c"],
                "",
                "mount.lustre: mount 10.0.0.1@tcp:10.0.0.2@tcp:/testfs/tenants/c at /mnt/c failed: No such file or directory\n",
                2,
            ),
    );
    let b = backend(&fake);
    let request = |share: &str, target: &str, read_only: bool, options: Vec<String>| MountRequest {
        share: rel(share),
        target: target.into(),
        read_only,
        options,
        mode: MountMode::Direct,
    };
    b.mount(&request(
        "tenants/a",
        "/var/lib/kubelet/pods/x/mount",
        true,
        vec!["flock".into(), "ro".into()],
    ))
    .await
    .unwrap();
    b.mount(&request("tenants/b", "/mnt/b", false, vec![]))
        .await
        .unwrap();
    let err = b
        .mount(&request("tenants/c", "/mnt/c", false, vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("mount.lustre")),
        "{err}"
    );
    // Options are single words.
    assert!(
        b.mount(&request("tenants/d", "/mnt/d", false, vec!["a,b".into()]))
            .await
            .is_err()
    );
    fake.assert_done();
}

/// A bind-mode request for `share` at `target`.
fn bind_request(share: &str, target: &Path, read_only: bool, options: &[&str]) -> MountRequest {
    MountRequest {
        share: rel(share),
        target: target.to_path_buf(),
        read_only,
        options: options.iter().map(|o| o.to_string()).collect(),
        mode: MountMode::Bind,
    }
}

#[tokio::test]
async fn bind_mode_mounts_the_whole_filesystem_once_at_the_node_mount_root() {
    // mount-lustre.md (a): no SUBDIR, so the client mount is of the filesystem root; the
    // options are the node's, not the volume's.
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("mnt");
    let target = scratch.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let shared = root.join("testfs");
    let mut config = config(MOUNT);
    config.node_mount_root = root.clone();
    config.node_mount_options = vec!["flock".into(), "user_xattr".into()];
    let fake = Arc::new(FakeRunner::new().expect(
        [
            "mount",
            "-t",
            "lustre",
            "-o",
            "flock,user_xattr",
            "10.0.0.1@tcp:10.0.0.2@tcp:/testfs",
            shared.to_str().unwrap(),
        ],
        "",
        "",
        0,
    ));
    let b = LustreBackend::with_runner(config, fake.clone()).unwrap();
    assert_eq!(b.shared_mount_path(), shared);
    assert_eq!(b.shared_mount_users().unwrap(), None);
    // The fake "mounts" nothing, and the backend notices instead of binding from the empty
    // directory underneath. (tests/lustre_bind_mount.rs does it for real, as root.)
    let err = b
        .mount(&bind_request(
            "shares/a",
            &target,
            true,
            &["flock", "nosuid"],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::InvalidState(ref m) if m.contains("not a mount point after")),
        "{err}"
    );
    assert!(
        shared.is_dir(),
        "the mount point is made under node_mount_root"
    );
    fake.assert_done();
}

#[tokio::test]
async fn bind_mode_without_node_options_has_no_o_and_refuses_client_options() {
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let mut config = config(MOUNT);
    config.node_mount_root = scratch.path().join("mnt");
    let shared = config.node_mount_root.join("testfs");
    let fake = Arc::new(FakeRunner::new().expect(
        [
            "mount",
            "-t",
            "lustre",
            "10.0.0.1@tcp:10.0.0.2@tcp:/testfs",
            shared.to_str().unwrap(),
        ],
        "",
        "mount.lustre: mount 10.0.0.1@tcp:10.0.0.2@tcp:/testfs at /x failed: Input/output error\n",
        5,
    ));
    let b = LustreBackend::with_runner(config, fake.clone()).unwrap();
    // A Lustre client option the shared mount does not have: refused before anything runs.
    let err = b
        .mount(&bind_request("shares/a", &target, false, &["flock"]))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unsupported { .. }), "{err}");
    // Options a bind mount applies are fine; the failed client mount is reported as is.
    let err = b
        .mount(&bind_request("shares/a", &target, false, &["noatime"]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("mount.lustre")),
        "{err}"
    );
    // A symlink as the target is refused before any mount.
    let link = scratch.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = b
        .mount(&bind_request("shares/a", &link, false, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::InvalidState(ref m) if m.contains("symlinks are refused")),
        "{err}"
    );
    fake.assert_done();
}

#[test]
fn node_mount_settings_have_defaults_and_parse_from_toml() {
    let plain: LustreConfig = toml::from_str(
        "fsname = \"testfs\"\nmgs_nids = [\"10.0.0.1@tcp\"]\nmount_point = \"/mnt/testfs\"\n",
    )
    .unwrap();
    assert_eq!(plain.node_mount_root, Path::new("/var/lib/lustrekit/mnt"));
    assert!(plain.node_mount_options.is_empty());
    let set: LustreConfig = toml::from_str(
        "fsname = \"testfs\"\nmgs_nids = [\"10.0.0.1@tcp\"]\nmount_point = \"/mnt/testfs\"\n\
         node_mount_root = \"/run/lk\"\nnode_mount_options = [\"flock\"]\n",
    )
    .unwrap();
    assert_eq!(set.node_mount_root, Path::new("/run/lk"));
    assert_eq!(set.node_mount_options, vec!["flock".to_owned()]);
}

#[tokio::test]
async fn unmount_of_something_not_mounted_is_success() {
    let fake = Arc::new(FakeRunner::new());
    let dir = tempfile::tempdir().unwrap();
    backend(&fake).unmount(dir.path()).await.unwrap();
    backend(&fake)
        .unmount(Path::new("/nonexistent/lustrekit/target"))
        .await
        .unwrap();
    fake.assert_done();
}

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
    assert!(caps.nodemaps_enforced_by_server && caps.encryption && caps.restore_on_access);
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
