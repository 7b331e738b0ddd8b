//! `adopt`: a share directory made by another tool (Manila's own Lustre driver: a directory
//! with a project ID and a project quota, no lustrekit record) becomes a lustrekit share.
//! On the local backend (a plain directory) and on the `lustre` backend through the fake
//! runner with the exact argv.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use backend::Filesystem;
use backend::lustre::{FakeRunner, LustreBackend, LustreConfig, ToolsFaked};
use lustre_model::{FsName, ProjectId, QuotaLimits, RelPath, ShareName};
use share::{CreateShare, DeleteMode, ShareError, ShareService, ShareState};

const MIB: u64 = 1 << 20;

fn name(s: &str) -> ShareName {
    ShareName::new(s).unwrap()
}

fn req(n: &str, size: u64) -> CreateShare {
    CreateShare {
        name: name(n),
        size_bytes: size,
        inode_limit: None,
        labels: BTreeMap::new(),
        layout: None,
        compression: None,
    }
}

/// What the upstream driver leaves: `mkdir`, `lfs project -p ID -s`, `lfs setquota -p ID -B`.
async fn upstream_share(fs: &Arc<dyn Filesystem>, n: &str, id: Option<u32>, bytes: u64) {
    let dir = RelPath::parse(&format!("shares/{n}")).unwrap();
    fs.ensure_dir(&dir).await.unwrap();
    if let Some(id) = id {
        let id = ProjectId::new(id).unwrap();
        fs.set_project(&dir, id).await.unwrap();
        let limits = QuotaLimits {
            block_hard_bytes: bytes,
            ..QuotaLimits::default()
        };
        fs.set_quota(&dir, id, &limits).await.unwrap();
    }
}

fn claims(root: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("shares/.lustrekit/projects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_upstream_share_is_adopted_once_and_then_is_a_share_like_any_other() {
    let root = common::plain_root();
    let fs = common::local(&root.root).await;
    let settings = || common::settings(1000, 1999);
    fs.ensure_dir(&RelPath::parse("shares").unwrap())
        .await
        .unwrap();
    upstream_share(&fs, "up", Some(1000), 10 * MIB).await;

    // Before: the strict service refuses to run over the foreign ID.
    let err = ShareService::open(fs.clone(), settings())
        .await
        .err()
        .expect("a foreign ID in the range");
    assert!(matches!(err, ShareError::ProjectIdsInUse { .. }), "{err}");

    let svc = ShareService::open_for_adoption(fs.clone(), settings())
        .await
        .unwrap();
    let share = svc.adopt(&name("up")).await.unwrap();
    assert_eq!(share.state, ShareState::Ready);
    assert_eq!(share.project_id.get(), 1000);
    assert_eq!(share.size_bytes, 10 * MIB);
    assert_eq!(share.inode_limit, None);
    assert!(share.access.is_empty());
    assert_eq!(claims(&root.root), ["1000"]);
    // Idempotent.
    assert_eq!(svc.adopt(&name("up")).await.unwrap(), share);

    // After: the strict service opens, ensure has nothing to repair, and the ID is never
    // handed out again.
    let svc = ShareService::open(fs.clone(), settings()).await.unwrap();
    let report = svc.ensure().await.unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(report.repaired.is_empty(), "{report:?}");
    let other = svc.create(req("new", MIB)).await.unwrap();
    assert_eq!(other.project_id.get(), 1001);
    let grown = svc.extend(&name("up"), 20 * MIB).await.unwrap();
    assert_eq!(grown.size_bytes, 20 * MIB);
    svc.delete(&name("up"), DeleteMode::Purge).await.unwrap();
    assert!(!root.root.join("shares/up").exists());
    assert_eq!(claims(&root.root), ["1001"]);
}

#[tokio::test]
async fn what_cannot_be_adopted_is_refused_and_leaves_nothing() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    let fs = svc.backend().clone();
    let a = svc.create(req("a", MIB)).await.unwrap();
    assert_eq!(a.project_id.get(), 1000);
    upstream_share(&fs, "plain", None, 0).await;
    upstream_share(&fs, "outside", Some(5), MIB).await;
    upstream_share(&fs, "stolen", Some(1000), MIB).await;
    upstream_share(&fs, "unlimited", Some(1001), 0).await;

    let cases: [(&str, &str); 6] = [
        ("plain", "invalid_argument"),
        ("outside", "invalid_argument"),
        ("stolen", "conflict"),
        ("unlimited", "invalid_argument"),
        ("absent", "not_found"),
        (".lustrekit", "invalid_argument"),
    ];
    for (n, code) in cases {
        let err = svc.adopt(&name(n)).await.unwrap_err();
        assert_eq!(err.code(), code, "{n}: {err}");
        assert!(svc.find(&name(n)).await.unwrap().is_none(), "{n}");
    }
    // The refused adopt of `unlimited` released its claim: 1001 is free.
    assert_eq!(claims(&root.root), ["1000"]);
    // A recorded share whose directory now carries another ID is not silently re-recorded.
    fs.set_project(&a.path, ProjectId::new(1002).unwrap())
        .await
        .unwrap();
    let err = svc.adopt(&name("a")).await.unwrap_err();
    assert!(matches!(err, ShareError::Conflict { .. }), "{err}");
    assert_eq!(svc.get(&name("a")).await.unwrap().project_id.get(), 1000);
}

#[tokio::test]
async fn adopt_on_lustre_reads_the_project_id_and_quota_with_exact_commands() {
    let scratch = tempfile::tempdir().unwrap();
    let mnt = scratch.path().to_str().unwrap().to_string();
    let id = "5f1c7a3e-2b4d-4e6f-8a9b-0c1d2e3f4a5b";
    let dir = format!("{mnt}/shares/{id}");
    let plain = format!("{mnt}/shares/plain");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&plain).unwrap();
    // lfs-project.md (b): `%5u %c %s`; lfs-quota.md: the 2.16 table, limits in KiB.
    let listed = format!(" 1005 P {dir}\n");
    let quota = format!(
        "Disk quotas for prj 1005 (pid 1005):\n     Filesystem  kbytes  bquota  blimit  bgrace   files  iquota  ilimit  igrace \n{mnt:>15}    2048       0 1048576       -       3       0       0       - \n"
    );
    let fake = Arc::new(
        FakeRunner::new()
            .expect(
                ["lfs", "project", "-d", dir.as_str()],
                listed.as_str(),
                "",
                0,
            )
            .expect(
                ["lfs", "quota", "-p", "1005", mnt.as_str()],
                quota.as_str(),
                "",
                0,
            )
            // again: the record answers after the ID check
            .expect(
                ["lfs", "project", "-d", dir.as_str()],
                listed.as_str(),
                "",
                0,
            )
            // a directory without a project ID (0): refused before any claim
            .expect(
                ["lfs", "project", "-d", plain.as_str()],
                format!("    0 - {plain}\n").as_str(),
                "",
                0,
            ),
    );
    let runner = Arc::new(ToolsFaked::new(fake.clone()));
    let config = LustreConfig::new(
        FsName::new("testfs").unwrap(),
        vec!["10.0.0.1@tcp".into()],
        &mnt,
    );
    let fs: Arc<dyn Filesystem> = Arc::new(LustreBackend::with_runner(config, runner).unwrap());
    let svc = ShareService::open_for_adoption(fs, common::settings(1000, 1999))
        .await
        .unwrap();

    let share = svc.adopt(&name(id)).await.unwrap();
    assert_eq!(share.project_id.get(), 1005);
    assert_eq!(share.size_bytes, 1 << 30);
    assert_eq!(share.state, ShareState::Ready);
    assert_eq!(
        share.export_location,
        format!("10.1.0.1@tcp:10.1.0.2@tcp:/testfs/shares/{id}")
    );
    assert!(
        scratch
            .path()
            .join("shares/.lustrekit/projects/1005")
            .is_dir()
    );
    assert_eq!(svc.adopt(&name(id)).await.unwrap(), share);
    let err = svc.adopt(&name("plain")).await.unwrap_err();
    assert!(matches!(err, ShareError::InvalidArgument(_)), "{err}");
    fake.assert_done();
}
