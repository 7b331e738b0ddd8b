//! As root: a btrfs image on a loop device, a 10 MiB share, and the kernel stopping a write
//! past 10 MiB with EDQUOT. Skips with a printed reason elsewhere.

mod common;

use std::io::Write;

use lustre_model::ShareName;
use share::{CreateShare, DeleteMode};

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn a_write_past_the_quota_fails_with_edquot() {
    let Some(root) = common::btrfs_root(512) else {
        return;
    };
    let svc = common::service(&root.root).await;
    assert_eq!(
        svc.backend().capabilities().quota,
        backend::QuotaEnforcement::Enforced
    );
    let name = ShareName::new("ten").unwrap();
    let share = svc
        .create(CreateShare {
            name: name.clone(),
            size_bytes: 10 * MIB,
            inode_limit: None,
            labels: Default::default(),
        })
        .await
        .unwrap();
    let path = svc.backend().host_path(&share.path).join("fill");
    let written = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![7u8; MIB as usize];
        let mut written = 0u64;
        for _ in 0..20 {
            match file.write_all(&chunk).and_then(|()| file.sync_data()) {
                Ok(()) => written += MIB,
                Err(e) => return (written, Some(e)),
            }
        }
        (written, None)
    })
    .await
    .unwrap();
    let (bytes, error) = written;
    let error = error.expect("a 20 MiB write into a 10 MiB share must fail");
    assert_eq!(error.raw_os_error(), Some(libc_edquot()), "{error}");
    assert!(
        (8 * MIB..=10 * MIB).contains(&bytes),
        "stopped at {bytes} bytes"
    );
    let usage = svc.usage(&name).await.unwrap();
    assert!(usage.used_bytes >= 8 * MIB, "{usage:?}");
    assert!(usage.enforced);
    // Extending lets more in.
    svc.extend(&name, 30 * MIB).await.unwrap();
    let more = svc.backend().host_path(&share.path).join("more");
    std::fs::write(&more, vec![1u8; 5 * MIB as usize]).unwrap();
    svc.delete(&name, DeleteMode::Purge).await.unwrap();
    assert!(!svc.backend().host_path(&share.path).exists());
}

fn libc_edquot() -> i32 {
    nix::errno::Errno::EDQUOT as i32
}

#[tokio::test]
async fn subvolume_shares_trash_restore_purge_and_repair_on_btrfs() {
    let Some(root) = common::btrfs_root(512) else {
        return;
    };
    let svc = common::service(&root.root).await;
    let name = ShareName::new("sub").unwrap();
    let share = svc
        .create(CreateShare {
            name: name.clone(),
            size_bytes: 6 * MIB,
            inode_limit: Some(100),
            labels: Default::default(),
        })
        .await
        .unwrap();
    let dir = svc.backend().host_path(&share.path);
    std::fs::write(dir.join("a"), vec![3u8; 4 * MIB as usize]).unwrap();
    // Shrinking below real (kernel-counted) usage is refused.
    assert!(matches!(
        svc.shrink(&name, 2 * MIB).await,
        Err(share::ShareError::ShrinkBelowUsage { .. })
    ));
    // A lost qgroup limit is seen by ensure (it reads the kernel's limit) and restored.
    svc.backend()
        .set_quota(&share.path, share.project_id, &Default::default())
        .await
        .unwrap();
    let report = svc.ensure().await.unwrap();
    assert!(
        report.repaired.iter().any(|r| r.what.contains("quota")),
        "{report:?}"
    );
    let usage = svc.usage(&name).await.unwrap();
    assert_eq!(usage.limit_bytes, 6 * MIB);
    // Trash moves the subvolume; restore brings it back, still limited.
    svc.delete(&name, DeleteMode::Trash { ttl_secs: Some(0) })
        .await
        .unwrap();
    assert!(!dir.exists());
    svc.restore(&name).await.unwrap();
    assert_eq!(
        std::fs::read(dir.join("a")).unwrap().len(),
        4 * MIB as usize
    );
    let over = std::fs::write(dir.join("b"), vec![4u8; 4 * MIB as usize]);
    assert!(over.is_err(), "restored share lost its quota");
    // Purging expired trash destroys the subvolume.
    svc.delete(&name, DeleteMode::Trash { ttl_secs: Some(0) })
        .await
        .unwrap();
    assert_eq!(svc.purge_expired_trash().await.unwrap().len(), 1);
    let trash = root.root.join("shares/.lustrekit/trash");
    assert_eq!(std::fs::read_dir(trash).unwrap().count(), 0);
}
