//! The share service over the `lustre` backend, end to end: directory commands run for real
//! on a scratch directory standing in for the client mount, while every `lfs` and `lctl` call
//! goes to the fake runner, which asserts the exact argv and replays outputs in the formats of
//! `shared/lustre-formats/`.

use std::sync::Arc;

use backend::Filesystem;
use backend::lustre::{FakeRunner, LustreBackend, LustreConfig, ToolsFaked};
use lustre_model::{FsName, LNet, ProjectId, ProjectRange, RelPath, ShareName};
use share::{
    AccessLevel, CreateShare, DeleteMode, ShareError, ShareService, ShareSettings, ShareState,
};

/// Rendered ≤2.16 `lctl get_param nodemap.active nodemap.*.*` (lctl-nodemap.md (b); the
/// BirdResearchSite range is the manual's sample in (c)).
const LIVE_BEFORE: &str = "\
nodemap.active=1
nodemap.BirdResearchSite.admin_nodemap=0
nodemap.BirdResearchSite.deny_unknown=1
nodemap.BirdResearchSite.fileset=/tenants/bird
nodemap.BirdResearchSite.id=1
nodemap.BirdResearchSite.idmap=
[

]
nodemap.BirdResearchSite.ranges=
[
 { id: 11, start_nid: 192.168.0.100@tcp, end_nid: 192.168.0.100@tcp }
]
nodemap.BirdResearchSite.squash_gid=65534
nodemap.BirdResearchSite.squash_uid=65534
nodemap.BirdResearchSite.trusted_nodemap=0
nodemap.default.admin_nodemap=0
nodemap.default.fileset=

nodemap.default.id=0
nodemap.default.ranges=
[

]
nodemap.default.squash_uid=65534
nodemap.default.trusted_nodemap=0
";

fn live_after_grant() -> String {
    format!(
        "{LIVE_BEFORE}\
nodemap.lk1000ro.admin_nodemap=0
nodemap.lk1000ro.deny_unknown=1
nodemap.lk1000ro.fileset=/shares/web
nodemap.lk1000ro.id=2
nodemap.lk1000ro.ranges=
[
 {{ id: 12, start_nid: 10.0.0.0@tcp, end_nid: 10.0.0.255@tcp }}
]
nodemap.lk1000ro.readonly_mount=1
nodemap.lk1000ro.squash_gid=65534
nodemap.lk1000ro.squash_uid=65534
nodemap.lk1000ro.trusted_nodemap=0
"
    )
}

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

/// The share service over the `lustre` backend mounted (for directory commands) at `mnt`.
async fn service_over(mnt: &str, fake: &Arc<FakeRunner>) -> ShareService {
    let runner = Arc::new(ToolsFaked::new(fake.clone()));
    let config = LustreConfig::new(
        FsName::new("testfs").unwrap(),
        vec!["10.0.0.1@tcp".into()],
        mnt,
    );
    let fs: Arc<dyn Filesystem> = Arc::new(LustreBackend::with_runner(config, runner).unwrap());
    ShareService::open(fs, settings()).await.unwrap()
}

fn lctl(args: &[&str]) -> Vec<String> {
    std::iter::once("lctl")
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn share_lifecycle_drives_exact_lfs_and_lctl_commands() {
    let scratch = tempfile::tempdir().unwrap();
    let mnt = scratch.path().to_str().unwrap().to_string();
    let dir = format!("{mnt}/shares/web");
    let modify = |p: &str, v: &str| {
        lctl(&[
            "nodemap_modify",
            "--name",
            "lk1000ro",
            "--property",
            p,
            "--value",
            v,
        ])
    };
    let fake = Arc::new(
        FakeRunner::new()
            // create
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
                    "5000",
                    mnt.as_str(),
                ],
                "",
                "",
                0,
            )
            // a grant overlapping another nodemap's clients: read, refuse, change nothing
            .expect(
                lctl(&["get_param", "nodemap.active", "nodemap.*.*"]),
                LIVE_BEFORE,
                "",
                0,
            )
            // a good read-only grant: restrictions before the range
            .expect(
                lctl(&["get_param", "nodemap.active", "nodemap.*.*"]),
                LIVE_BEFORE,
                "",
                0,
            )
            .expect(lctl(&["nodemap_add", "lk1000ro"]), "", "", 0)
            .expect(
                lctl(&[
                    "nodemap_set_fileset",
                    "--name",
                    "lk1000ro",
                    "--fileset",
                    "/shares/web",
                ]),
                "",
                "",
                0,
            )
            .expect(modify("deny_unknown", "1"), "", "", 0)
            .expect(modify("admin", "0"), "", "", 0)
            .expect(modify("trusted", "0"), "", "", 0)
            .expect(modify("squash_uid", "65534"), "", "", 0)
            .expect(modify("squash_gid", "65534"), "", "", 0)
            .expect(modify("readonly_mount", "1"), "", "", 0)
            .expect(
                lctl(&[
                    "nodemap_add_range",
                    "--name",
                    "lk1000ro",
                    "--range",
                    "10.0.0.[0-255]@tcp",
                ]),
                "",
                "",
                0,
            )
            // delete: access goes first, then the tree, then the quota
            .expect(
                lctl(&["get_param", "nodemap.active", "nodemap.*.*"]),
                live_after_grant(),
                "",
                0,
            )
            .expect(
                lctl(&[
                    "nodemap_del_range",
                    "--name",
                    "lk1000ro",
                    "--range",
                    "10.0.0.[0-255]@tcp",
                ]),
                "",
                "",
                0,
            )
            .expect(lctl(&["nodemap_del", "lk1000ro"]), "", "", 0)
            .expect(
                [
                    "lfs",
                    "setquota",
                    "-p",
                    "1000",
                    "-b",
                    "0",
                    "-B",
                    "0",
                    "-i",
                    "0",
                    "-I",
                    "0",
                    mnt.as_str(),
                ],
                "",
                "",
                0,
            ),
    );
    let svc = service_over(&mnt, &fake).await;
    let name = ShareName::new("web").unwrap();

    let share = svc
        .create(CreateShare {
            name: name.clone(),
            size_bytes: 10 << 20,
            inode_limit: Some(5000),
            labels: Default::default(),
            layout: None,
            compression: None,
        })
        .await
        .unwrap();
    assert_eq!(share.export_location, "10.0.0.1@tcp:/testfs/shares/web");
    assert!(std::path::Path::new(&dir).is_dir());

    let err = svc
        .allow(&name, "192.168.0.0/24", AccessLevel::Rw)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ShareError::AccessConflict { nodemap, .. } if nodemap == "BirdResearchSite"),
        "{err}"
    );
    svc.allow(&name, "10.0.0.0/24", AccessLevel::Ro)
        .await
        .unwrap();

    svc.delete(&name, DeleteMode::Purge).await.unwrap();
    assert!(!std::path::Path::new(&dir).exists());
    fake.assert_done();
}

#[tokio::test]
async fn a_failing_lfs_command_rolls_the_create_back_and_surfaces_lustre_stderr() {
    let scratch = tempfile::tempdir().unwrap();
    let mnt = scratch.path().to_str().unwrap().to_string();
    let dir = format!("{mnt}/shares/bad");
    let stderr = "lfs setquota: quotactl failed: No such device\n";
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
                    "1024",
                    "-i",
                    "0",
                    "-I",
                    "0",
                    mnt.as_str(),
                ],
                "",
                stderr,
                19,
            ),
    );
    let svc = service_over(&mnt, &fake).await;
    let err = svc
        .create(CreateShare {
            name: ShareName::new("bad").unwrap(),
            size_bytes: 1 << 20,
            inode_limit: None,
            labels: Default::default(),
            layout: None,
            compression: None,
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("quotactl failed: No such device"),
        "{err}"
    );
    fake.assert_done();
    // Nothing is left half-made: no directory, no record, no project claim.
    assert!(!std::path::Path::new(&dir).exists());
    assert!(svc.list().await.unwrap().is_empty());
    let claims = std::fs::read_dir(format!("{mnt}/shares/.lustrekit/projects"))
        .unwrap()
        .count();
    assert_eq!(claims, 0);
}

/// A share with a stripe layout: `lfs setstripe` on its directory before the project and
/// quota, read back with `lfs getstripe -d`; a create asking for another layout conflicts;
/// a layout the filesystem did not take rolls the create back.
#[tokio::test]
async fn a_striped_share_sets_and_checks_its_layout_first() {
    let scratch = tempfile::tempdir().unwrap();
    let mnt = scratch.path().to_str().unwrap().to_string();
    let dir = format!("{mnt}/shares/wide");
    let bad = format!("{mnt}/shares/narrow");
    // lustre-formats/lfs-setstripe-getstripe.md (b), directory default layout.
    let four = "stripe_count:  4 stripe_size:   4194304 pattern:       raid0 stripe_offset: -1\n";
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["lfs", "setstripe", "-c", "4", "-S", "4194304", dir.as_str()],
                "",
                "",
                0,
            )
            .expect(["lfs", "getstripe", "-d", dir.as_str()], four, "", 0)
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
                    "1024",
                    "-i",
                    "0",
                    "-I",
                    "0",
                    mnt.as_str(),
                ],
                "",
                "",
                0,
            )
            // the other share: asked 8 stripes, 4 read back
            .expect(
                ["lfs", "setstripe", "-c", "8", "-S", "4194304", bad.as_str()],
                "",
                "",
                0,
            )
            .expect(["lfs", "getstripe", "-d", bad.as_str()], four, "", 0),
    );
    let svc = service_over(&mnt, &fake).await;
    let layout = |count: &str| {
        lustre_model::LayoutSpec::from_parts(Some(count), Some("4M"), None, None)
            .unwrap()
            .unwrap()
    };
    let req = |name: &str, count: &str| CreateShare {
        name: ShareName::new(name).unwrap(),
        size_bytes: 1 << 20,
        inode_limit: None,
        labels: Default::default(),
        layout: Some(layout(count)),
        compression: None,
    };
    let share = svc.create(req("wide", "4")).await.unwrap();
    assert_eq!(share.state, ShareState::Ready);
    // The same create again is the same share; another layout is a conflict.
    svc.create(req("wide", "4")).await.unwrap();
    let err = svc.create(req("wide", "2")).await.unwrap_err();
    assert!(matches!(err, ShareError::Conflict { .. }), "{err}");
    let err = svc.create(req("narrow", "8")).await.unwrap_err();
    assert!(err.to_string().contains("not applied"), "{err}");
    fake.assert_done();
    assert!(!std::path::Path::new(&bad).exists(), "rolled back");
    assert_eq!(svc.list().await.unwrap().len(), 1);
}
