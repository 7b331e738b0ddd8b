//! As root: a btrfs image on a loop device, a 10 MiB share, and the kernel stopping a write
//! past 10 MiB with EDQUOT, also from a subvolume a tenant made inside the share. Ignored
//! unless run as root with `--include-ignored` (as CI does).

mod common;

use std::io::Write;

use lustre_model::ShareName;
use share::{CreateShare, DeleteMode};

const MIB: u64 = 1 << 20;

#[tokio::test]
#[ignore = "needs root and btrfs-progs (a loop-mounted btrfs image)"]
async fn a_write_past_the_quota_fails_with_edquot() {
    let root = common::btrfs_root(512);
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
            layout: None,
            compression: None,
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
    // Stats read the qgroup numbers of the last commit; commit so they include the writes.
    sync_fs(&root.root);
    let usage = svc.usage(&name).await.unwrap();
    assert!(usage.used_bytes >= 8 * MIB, "{usage:?}");
    assert!(usage.enforced);
    // What NodeGetVolumeStats calls full: less room than one 4 KiB block plus the metadata
    // node the qgroup reserves per write. The kernel refused writes with that much left.
    let reserve = svc.backend().capabilities().quota_write_reserve;
    assert_eq!(reserve, 16384, "mkfs.btrfs's default node size");
    let left = usage.limit_bytes.saturating_sub(usage.used_bytes);
    assert!(
        left < 4096 + reserve,
        "{left} bytes left after EDQUOT: {usage:?}"
    );
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

fn sync_fs(path: &std::path::Path) {
    let dir = std::fs::File::open(path).unwrap();
    nix::unistd::syncfs(&dir).unwrap();
}

/// Runs a command as the unprivileged user 65534, the way a tenant would.
fn as_tenant(args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .args(args)
        .output()
        .expect("run setpriv")
}

#[tokio::test]
#[ignore = "needs root and btrfs-progs (a loop-mounted btrfs image)"]
async fn a_tenants_nested_subvolume_counts_against_the_share_and_is_deleted_with_it() {
    let root = common::btrfs_root(512);
    let svc = common::service_owned_by(&root.root, 65534, 65534).await;
    let name = ShareName::new("nested").unwrap();
    let share = svc
        .create(CreateShare {
            name: name.clone(),
            size_bytes: 10 * MIB,
            inode_limit: None,
            labels: Default::default(),
            layout: None,
            compression: None,
        })
        .await
        .unwrap();
    let dir = svc.backend().host_path(&share.path);
    // The tenant makes two levels of subvolumes, without any privilege.
    for sub in ["x", "x/y"] {
        let out = as_tenant(&[
            "btrfs",
            "subvolume",
            "create",
            &dir.join(sub).display().to_string(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Before anything adopts them, a write into one is not refused (the window until the
    // next stats call or ensure)...
    let early = dir.join("x/early");
    let out = as_tenant(&[
        "dd",
        "if=/dev/zero",
        &format!("of={}", early.display()),
        "bs=1M",
        "count=3",
        "conv=fsync",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sync_fs(&root.root);
    // ...stats (kubelet's NodeGetVolumeStats, `share show`) put them under the share's
    // limit, and what was written counts from then on.
    svc.usage(&name).await.unwrap();
    sync_fs(&root.root);
    let usage = svc.usage(&name).await.unwrap();
    assert!(usage.used_bytes >= 3 * MIB, "{usage:?}");
    // One more, after the stats call, so not yet under the group: delete removes it too.
    let out = as_tenant(&[
        "btrfs",
        "subvolume",
        "create",
        &dir.join("x/late").display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A symlink out of the share, which delete must not follow.
    std::os::unix::fs::symlink("/etc", dir.join("x/y/etc")).unwrap();
    // The tenant now writes 50 MiB into the deepest one: the share's limit stops it.
    let fill = dir.join("x/y/fill");
    let out = as_tenant(&[
        "dd",
        "if=/dev/zero",
        &format!("of={}", fill.display()),
        "bs=1M",
        "count=50",
        "conv=fsync",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a 50 MiB write into a 10 MiB share went through"
    );
    assert!(stderr.contains("Disk quota exceeded"), "{stderr}");
    let written = std::fs::metadata(&fill).unwrap().len();
    assert!(
        written + 3 * MIB <= 10 * MIB,
        "wrote {written} bytes (and 3 MiB before) past a 10 MiB limit"
    );
    // `share show` reports the real usage, the nested subvolumes' included.
    sync_fs(&root.root);
    let usage = svc.usage(&name).await.unwrap();
    assert!(usage.used_bytes >= 8 * MIB, "{usage:?}");
    svc.delete(&name, DeleteMode::Purge).await.unwrap();
    assert!(!dir.exists());
    assert!(std::path::Path::new("/etc/passwd").exists());
    assert!(svc.find(&name).await.unwrap().is_none());
}

#[tokio::test]
#[ignore = "needs root and btrfs-progs (a loop-mounted btrfs image)"]
async fn subvolume_shares_trash_restore_purge_and_repair_on_btrfs() {
    let root = common::btrfs_root(512);
    let svc = common::service(&root.root).await;
    let name = ShareName::new("sub").unwrap();
    let share = svc
        .create(CreateShare {
            name: name.clone(),
            size_bytes: 6 * MIB,
            inode_limit: Some(100),
            labels: Default::default(),
            layout: None,
            compression: None,
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
