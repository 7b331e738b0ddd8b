//! The share lifecycle on the local backend (a plain directory: no root needed).

mod common;

use std::collections::BTreeMap;

use lustre_model::ShareName;
use share::{AccessLevel, CreateShare, DeleteMode, ShareError, ShareState};

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

#[tokio::test]
async fn create_is_idempotent_and_conflicts_on_different_size() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    let a = svc.create(req("a", 10 * MIB)).await.unwrap();
    assert_eq!(a.state, ShareState::Ready);
    assert_eq!(
        a.export_location,
        "10.1.0.1@tcp:10.1.0.2@tcp:/testfs/shares/a"
    );
    assert_eq!(a.volume_id.to_string().split('/').next(), Some("v1"));
    let again = svc.create(req("a", 10 * MIB)).await.unwrap();
    assert_eq!(a, again);
    let err = svc.create(req("a", 20 * MIB)).await.unwrap_err();
    assert!(matches!(err, ShareError::Conflict { .. }), "{err}");
    assert_eq!(svc.list().await.unwrap().len(), 1);
    // The project ID is on the directory.
    let info = svc.backend().stat_dir(&a.path).await.unwrap().unwrap();
    assert_eq!(info.project, Some(a.project_id));
}

#[tokio::test]
async fn project_ids_are_unique_survive_restarts_and_run_out_clearly() {
    let root = common::plain_root();
    let fs = common::local(&root.root).await;
    let svc = share::ShareService::open(fs.clone(), common::settings(1000, 1002))
        .await
        .unwrap();
    let a = svc.create(req("a", MIB)).await.unwrap();
    let b = svc.create(req("b", MIB)).await.unwrap();
    drop(svc);
    // A "restart": a new service over the same filesystem.
    let svc = share::ShareService::open(fs, common::settings(1000, 1002))
        .await
        .unwrap();
    let c = svc.create(req("c", MIB)).await.unwrap();
    let mut ids = vec![a.project_id.get(), b.project_id.get(), c.project_id.get()];
    ids.sort();
    assert_eq!(ids, vec![1000, 1001, 1002]);
    let err = svc.create(req("d", MIB)).await.unwrap_err();
    assert!(
        matches!(err, ShareError::ProjectIdsExhausted { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("1000-1002"), "{err}");
    assert!(svc.find(&name("d")).await.unwrap().is_none());
    // Deleting gives the ID back.
    svc.delete(&name("b"), DeleteMode::Purge).await.unwrap();
    assert_eq!(
        svc.create(req("d", MIB)).await.unwrap().project_id,
        b.project_id
    );
}

#[tokio::test]
async fn concurrent_creates_of_one_name_end_with_one_share() {
    let root = common::plain_root();
    // Two services over one root behave like two processes: separate in-memory locks.
    let one = common::service(&root.root).await;
    let two = common::service(&root.root).await;
    let (x, y) = tokio::join!(
        one.create(req("same", 5 * MIB)),
        two.create(req("same", 5 * MIB))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.project_id, y.project_id);
    assert_eq!(one.list().await.unwrap().len(), 1);
    let claims = std::fs::read_dir(root.root.join("shares/.lustrekit/projects"))
        .unwrap()
        .count();
    assert_eq!(claims, 1, "a losing racer must not leak a project ID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_creates_get_distinct_ids() {
    let root = common::plain_root();
    let one = std::sync::Arc::new(common::service(&root.root).await);
    let two = std::sync::Arc::new(common::service(&root.root).await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let svc = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            svc.create(req(&format!("s{i}"), MIB)).await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap().project_id.get());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
}

#[tokio::test]
async fn bad_names_and_sizes_are_refused_and_create_nothing() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    for bad in ["a/b", "..", ".", "", "nul\0x", "tab\tx", &"x".repeat(256)] {
        assert!(ShareName::new(bad).is_err(), "{bad:?} accepted");
    }
    let err = svc.create(req(".hidden", MIB)).await.unwrap_err();
    assert!(matches!(err, ShareError::InvalidArgument(_)), "{err}");
    let err = svc.create(req("zero", 0)).await.unwrap_err();
    assert!(matches!(err, ShareError::InvalidArgument(_)), "{err}");
    let mut r = req("zero-inodes", MIB);
    r.inode_limit = Some(0);
    assert!(svc.create(r).await.is_err());
    assert!(svc.list().await.unwrap().is_empty());
    let entries: Vec<_> = std::fs::read_dir(root.root.join("shares"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from(".lustrekit")]);
}

#[tokio::test]
async fn a_foreign_directory_is_never_taken_over() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    std::fs::create_dir_all(root.root.join("shares/theirs")).unwrap();
    std::fs::write(root.root.join("shares/theirs/file"), b"precious").unwrap();
    let err = svc.create(req("theirs", MIB)).await.unwrap_err();
    assert!(matches!(err, ShareError::Conflict { .. }), "{err}");
    assert_eq!(
        std::fs::read(root.root.join("shares/theirs/file")).unwrap(),
        b"precious"
    );
    svc.delete(&name("theirs"), DeleteMode::Purge)
        .await
        .unwrap();
    assert!(
        root.root.join("shares/theirs/file").exists(),
        "delete of an unknown share touched data"
    );
}

#[tokio::test]
async fn shrink_below_usage_is_refused_and_changes_nothing() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    let s = svc.create(req("full", 10 * MIB)).await.unwrap();
    let file = svc.backend().host_path(&s.path).join("data");
    std::fs::write(&file, vec![1u8; 3 * MIB as usize]).unwrap();
    let err = svc.shrink(&name("full"), MIB).await.unwrap_err();
    match err {
        ShareError::ShrinkBelowUsage {
            used_bytes,
            requested_bytes,
            ..
        } => {
            assert!(used_bytes >= 3 * MIB);
            assert_eq!(requested_bytes, MIB);
        }
        other => panic!("expected ShrinkBelowUsage, got {other}"),
    }
    assert_eq!(svc.get(&name("full")).await.unwrap().size_bytes, 10 * MIB);
    assert!(
        svc.shrink(&name("full"), 20 * MIB).await.is_err(),
        "shrink must not grow"
    );
    assert!(
        svc.extend(&name("full"), MIB).await.is_err(),
        "extend must not shrink"
    );
    assert_eq!(
        svc.extend(&name("full"), 20 * MIB)
            .await
            .unwrap()
            .size_bytes,
        20 * MIB
    );
    assert_eq!(
        svc.shrink(&name("full"), 5 * MIB).await.unwrap().size_bytes,
        5 * MIB
    );
    let usage = svc.usage(&name("full")).await.unwrap();
    assert_eq!(usage.limit_bytes, 5 * MIB);
    assert!(matches!(
        svc.extend(&name("nope"), MIB).await,
        Err(ShareError::NotFound { .. })
    ));
}

#[tokio::test]
async fn access_rules_become_nodemaps_with_fileset_and_squash() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    let s = svc.create(req("web", MIB)).await.unwrap();
    svc.allow(&name("web"), "10.0.0.9/24", AccessLevel::Rw)
        .await
        .unwrap();
    let after = svc
        .allow(&name("web"), "10.0.1.5", AccessLevel::Ro)
        .await
        .unwrap();
    assert_eq!(
        after
            .access
            .iter()
            .map(|r| r.to.as_str())
            .collect::<Vec<_>>(),
        vec!["10.0.0.0/24", "10.0.1.5/32"]
    );
    let live = svc.backend().nodemaps().await.unwrap();
    let rw = live
        .nodemaps
        .iter()
        .find(|m| m.name == format!("lk{}rw", s.project_id.get()))
        .expect("rw nodemap");
    let ro = live
        .nodemaps
        .iter()
        .find(|m| m.name == format!("lk{}ro", s.project_id.get()))
        .expect("ro nodemap");
    assert_eq!(rw.fileset.as_deref(), Some("/shares/web"));
    assert!(rw.deny_unknown && rw.trusted && !rw.admin);
    assert!(ro.deny_unknown && !ro.trusted && !ro.admin);
    assert_eq!(ro.readonly_mount, Some(true));
    assert_eq!(ro.squash_uid, Some(65534));
    // Granting the same rule again changes nothing; changing its level moves it.
    svc.allow(&name("web"), "10.0.1.5", AccessLevel::Ro)
        .await
        .unwrap();
    let moved = svc
        .allow(&name("web"), "10.0.1.5", AccessLevel::Rw)
        .await
        .unwrap();
    assert!(moved.access.iter().all(|r| r.level == AccessLevel::Rw));
    let live = svc.backend().nodemaps().await.unwrap();
    assert!(
        !live
            .nodemaps
            .iter()
            .any(|m| m.name == format!("lk{}ro", s.project_id.get())),
        "empty ro nodemap left behind"
    );
    // Deny of a rule never granted succeeds; denying all removes the nodemaps.
    svc.deny(&name("web"), "192.168.7.7").await.unwrap();
    svc.deny(&name("web"), "10.0.0.0/24").await.unwrap();
    svc.deny(&name("web"), "10.0.1.5").await.unwrap();
    let live = svc.backend().nodemaps().await.unwrap();
    assert_eq!(
        live.nodemaps.len(),
        1,
        "only the default nodemap should remain: {live:?}"
    );
}

#[tokio::test]
async fn overlapping_grants_across_shares_are_refused() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    svc.create(req("one", MIB)).await.unwrap();
    svc.create(req("two", MIB)).await.unwrap();
    svc.allow(&name("one"), "10.2.0.0/16", AccessLevel::Rw)
        .await
        .unwrap();
    let err = svc
        .allow(&name("two"), "10.2.3.4", AccessLevel::Ro)
        .await
        .unwrap_err();
    assert!(matches!(err, ShareError::AccessConflict { .. }), "{err}");
    assert!(
        svc.get(&name("two")).await.unwrap().access.is_empty(),
        "a refused rule was recorded"
    );
    for bad in ["10.0.0.300", "10.0.0.0/40", "not-an-ip", ""] {
        let err = svc
            .allow(&name("two"), bad, AccessLevel::Rw)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ShareError::InvalidArgument(_)),
            "{bad}: {err}"
        );
    }
}

#[tokio::test]
async fn trash_restore_and_ttl_purge() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    let s = svc.create(req("keep", 4 * MIB)).await.unwrap();
    svc.allow(&name("keep"), "10.3.0.1", AccessLevel::Rw)
        .await
        .unwrap();
    std::fs::write(svc.backend().host_path(&s.path).join("f"), b"data").unwrap();
    svc.delete(&name("keep"), DeleteMode::Trash { ttl_secs: None })
        .await
        .unwrap();
    assert!(svc.find(&name("keep")).await.unwrap().is_none());
    assert_eq!(svc.trash_list().await.unwrap().len(), 1);
    assert_eq!(
        svc.backend().nodemaps().await.unwrap().nodemaps.len(),
        1,
        "a trashed share keeps no access"
    );
    // Its project ID stays claimed while it is in the trash.
    let other = svc.create(req("other", MIB)).await.unwrap();
    assert_ne!(other.project_id, s.project_id);
    let back = svc.restore(&name("keep")).await.unwrap();
    assert_eq!(back.project_id, s.project_id);
    assert_eq!(back.size_bytes, 4 * MIB);
    assert_eq!(back.access.len(), 1);
    assert_eq!(
        std::fs::read(svc.backend().host_path(&s.path).join("f")).unwrap(),
        b"data"
    );
    assert_eq!(svc.backend().nodemaps().await.unwrap().nodemaps.len(), 2);
    assert!(matches!(
        svc.restore(&name("keep")).await,
        Err(ShareError::NotFound { .. })
    ));
    // A zero TTL expires at once and is purged, giving the project ID back.
    svc.delete(&name("keep"), DeleteMode::Trash { ttl_secs: Some(0) })
        .await
        .unwrap();
    let purged = svc.purge_expired_trash().await.unwrap();
    assert_eq!(purged.len(), 1);
    assert!(svc.trash_list().await.unwrap().is_empty());
    assert!(
        !root
            .root
            .join("shares/.lustrekit/projects")
            .join(s.project_id.get().to_string())
            .exists()
    );
}

#[tokio::test]
async fn delete_is_idempotent_and_removes_everything() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    let s = svc.create(req("gone", MIB)).await.unwrap();
    svc.allow(&name("gone"), "10.4.0.0/24", AccessLevel::Rw)
        .await
        .unwrap();
    svc.delete(&name("gone"), DeleteMode::Purge).await.unwrap();
    svc.delete(&name("gone"), DeleteMode::Purge).await.unwrap();
    svc.delete(&name("never-was"), DeleteMode::Trash { ttl_secs: None })
        .await
        .unwrap();
    assert!(!svc.backend().host_path(&s.path).exists());
    assert_eq!(svc.backend().nodemaps().await.unwrap().nodemaps.len(), 1);
    assert!(svc.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn ensure_repairs_quota_project_and_nodemaps_and_finishes_interrupted_work() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    let s = svc.create(req("fixme", 8 * MIB)).await.unwrap();
    svc.allow(&name("fixme"), "10.5.0.1", AccessLevel::Rw)
        .await
        .unwrap();
    let fs = svc.backend().clone();
    // Break things behind the service's back.
    fs.set_quota(&s.path, s.project_id, &Default::default())
        .await
        .unwrap();
    std::fs::remove_file(root.root.join(".lustrekit/nodemaps.json")).unwrap();
    let report = svc.ensure().await.unwrap();
    assert_eq!(report.checked, 1);
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(
        report.repaired.iter().any(|r| r.what.contains("quota")),
        "{report:?}"
    );
    assert!(
        report.repaired.iter().any(|r| r.what.contains("nodemap")),
        "{report:?}"
    );
    assert_eq!(
        fs.quota(&s.path, s.project_id)
            .await
            .unwrap()
            .limits
            .block_hard_bytes,
        8 * MIB
    );
    // Nothing left to repair the second time.
    let again = svc.ensure().await.unwrap();
    assert!(again.repaired.is_empty(), "{again:?}");
    // A missing directory is reported, not papered over.
    std::fs::remove_dir_all(fs.host_path(&s.path)).unwrap();
    let report = svc.ensure().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
}

#[tokio::test]
async fn a_create_interrupted_by_a_crash_is_finished_by_a_retry() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    // What a crash right after the record was written leaves: a claim and a `creating` record.
    let meta = root.root.join("shares/.lustrekit");
    std::fs::create_dir_all(meta.join("projects/1500")).unwrap();
    std::fs::write(
        meta.join("shares/half.json"),
        br#"{"name":"half","project_id":1500,"size_bytes":1048576,"inode_limit":null,"state":"creating","created_at":1}"#,
    )
    .unwrap();
    // Until then, calls that need a ready share say it is in progress (gRPC ABORTED, so the
    // sidecar retries), not that it exists with other parameters.
    let err = svc.extend(&name("half"), 2 * MIB).await.unwrap_err();
    assert!(
        matches!(&err, ShareError::InProgress { state, .. } if state == "creating"),
        "{err}"
    );
    assert_eq!(err.code(), "busy");
    let s = svc.create(req("half", MIB)).await.unwrap();
    assert_eq!(s.project_id.get(), 1500);
    assert_eq!(s.state, ShareState::Ready);
    assert!(svc.backend().host_path(&s.path).is_dir());
}

#[tokio::test]
async fn a_stale_lock_from_a_dead_process_is_broken() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    let lock = root.root.join("shares/.lustrekit/locks/stale");
    std::fs::create_dir_all(&lock).unwrap();
    // Age it past the lease.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    svc.create(req("stale", MIB)).await.unwrap();
}

#[tokio::test]
async fn a_range_overlapping_ids_in_use_is_refused() {
    let root = common::plain_root();
    let fs = common::local(&root.root).await;
    let svc = share::ShareService::open(fs.clone(), common::settings(1000, 1999))
        .await
        .unwrap();
    svc.create(req("mine", MIB)).await.unwrap();
    // Someone else's directory with a project ID in our range.
    let theirs = lustre_model::RelPath::parse("shares/theirs").unwrap();
    std::fs::create_dir_all(fs.host_path(&theirs)).unwrap();
    fs.set_project(&theirs, lustre_model::ProjectId::new(1500).unwrap())
        .await
        .unwrap();
    let err = share::ShareService::open(fs.clone(), common::settings(1000, 1999))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, ShareError::ProjectIdsInUse { .. }), "{err}");
    assert!(err.to_string().contains("1500"), "{err}");
    // A range clear of it is fine.
    share::ShareService::open(fs, common::settings(2000, 2999))
        .await
        .unwrap();
}

/// The local backend has no stripes: a share asking for a layout is refused before anything
/// is made (no directory, no record, no project ID claimed).
#[tokio::test]
async fn a_layout_on_a_backend_without_stripes_is_refused_and_nothing_is_made() {
    let root = common::plain_root();
    let svc = common::service(&root.root).await;
    let mut request = req("striped", 10 * MIB);
    request.layout = lustre_model::LayoutSpec::from_parts(Some("4"), None, None, None).unwrap();
    let err = svc.create(request).await.unwrap_err();
    assert!(err.to_string().contains("no stripes"), "{err}");
    assert!(svc.list().await.unwrap().is_empty());
    assert!(!root.root.join("shares/striped").exists());
    let created = svc.create(req("plain", 10 * MIB)).await.unwrap();
    // The refused create claimed no project ID: the next share gets the first one.
    assert_eq!(created.project_id.get(), 1000, "{created:?}");
}
