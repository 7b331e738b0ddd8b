//! A call cancelled while it holds a share's lock (a gRPC call the sidecar gave up on is
//! dropped midway) must leave the share free for another process, not Busy for a lease.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use lustre_model::ShareName;
use share::{CreateShare, ShareService};

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("lustrekit.toml");
    std::fs::write(
        &path,
        format!(
            "backend = \"local\"\nfsname = \"testfs\"\nproject_ids = \"500-502\"\nexport_nids = [\"10.0.0.1@tcp\"]\n[local]\nroot = \"{}\"\n",
            dir.join("root").display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_leaves_the_share_free_for_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let config = share::Config::load(&cfg).unwrap();
    let fs = config.open_backend().await.unwrap();
    let svc = Arc::new(
        ShareService::open(fs, config.settings().unwrap())
            .await
            .unwrap(),
    );
    let name = ShareName::new("held").unwrap();
    svc.create(CreateShare {
        name: name.clone(),
        size_bytes: 1 << 20,
        inode_limit: None,
        labels: Default::default(),
        layout: None,
        compression: None,
    })
    .await
    .unwrap();

    // The record becomes a FIFO, so the next call blocks reading it while it holds the lock.
    let record = dir.path().join("root/shares/.lustrekit/shares/held.json");
    let saved = std::fs::read(&record).unwrap();
    std::fs::remove_file(&record).unwrap();
    nix::unistd::mkfifo(&record, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let call = tokio::spawn({
        let (svc, name) = (Arc::clone(&svc), name.clone());
        async move { svc.resize(&name, 2 << 20).await }
    });
    let lock = dir.path().join("root/shares/.lustrekit/locks/held");
    for _ in 0..500 {
        if lock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(lock.exists(), "the call never took the lock");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The caller goes away: the future is dropped where it stands.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());

    // Let the blocked read finish, and put the record back.
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc_nonblock())
        .open(&record)
        .unwrap();
    writer.write_all(&saved).unwrap();
    drop(writer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::remove_file(&record).unwrap();
    std::fs::write(&record, &saved).unwrap();

    // Another process gets the share at once (before: Busy, for ten minutes).
    let out = Command::new(env!("CARGO_BIN_EXE_lustrekit"))
        .arg("--config")
        .arg(&cfg)
        .args(["--json", "share", "extend", "held", "--size", "3M"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(svc.get(&name).await.unwrap().size_bytes, 3 << 20);
}

fn libc_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}
