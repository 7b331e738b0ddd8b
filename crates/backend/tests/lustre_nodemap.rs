//! The `lustre` backend against the [`FakeRunner`]: nodemaps (`lctl get_param nodemap.*`, `lctl nodemap_*`). Every operation asserts the
//! exact argv sequence, and replays outputs copied from `shared/lustre-formats/` (each
//! fixture names its file and sample).

mod lustre_common;

use std::sync::Arc;

use backend::Nodemaps;
use backend::lustre::FakeRunner;
use backend::{BackendError, NodemapChange};
use lustre_model::NidRange;

use lustre_common::fake::*;

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

#[tokio::test]
async fn idmap_changes_name_the_type_and_the_pair() {
    // lctl-nodemap.md (a): `nodemap_add_idmap --name NAME --idtype {uid|gid|projid} --idmap CLIENTID:FSID`.
    let idmap = lustre_model::IdMap {
        idtype: lustre_model::IdType::Projid,
        client_id: 33,
        fs_id: 1,
    };
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                [
                    "lctl",
                    "nodemap_add_idmap",
                    "--name",
                    "t1",
                    "--idtype",
                    "projid",
                    "--idmap",
                    "33:1",
                ],
                "",
                "",
                0,
            )
            .expect(
                [
                    "lctl",
                    "nodemap_del_idmap",
                    "--name",
                    "t1",
                    "--idtype",
                    "projid",
                    "--idmap",
                    "33:1",
                ],
                "",
                "",
                0,
            ),
    );
    backend(&fake)
        .apply_nodemap_changes(&[
            NodemapChange::AddIdmap {
                name: nm("t1"),
                idmap,
            },
            NodemapChange::DelIdmap {
                name: nm("t1"),
                idmap,
            },
        ])
        .await
        .unwrap();
    fake.assert_done();
}

#[tokio::test]
async fn root_prj_enable_is_read_on_the_mds_and_missing_means_unknown() {
    use backend::{Quotas, RootProjectQuota};
    // INDEX.md, Lustre 2.16 features: one `"%d\n"` value per MDT and OST.
    let pattern = "osd-*.testfs-*.quota_slave.root_prj_enable";
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["lctl", "get_param", pattern],
                "osd-ldiskfs.testfs-MDT0000.quota_slave.root_prj_enable=1\n",
                "",
                0,
            )
            .expect(
                ["lctl", "get_param", pattern],
                "",
                "error: get_param: param_path 'osd-*/testfs-*/quota_slave/root_prj_enable': No such file or directory\n",
                2,
            ),
    );
    let b = backend(&fake);
    assert_eq!(
        b.root_project_quota().await.unwrap(),
        RootProjectQuota::Enforced {
            targets: vec!["testfs-MDT0000".into()]
        }
    );
    assert!(matches!(
        b.root_project_quota().await.unwrap(),
        RootProjectQuota::Unknown { why } if why.contains("2.16")
    ));
    fake.assert_done();
}
