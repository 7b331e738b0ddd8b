//! fscrypt v2 on the `lustre` backend. The machine has no Lustre, so an ext4 image made with
//! `-O encrypt` (the same kernel ioctls) stands in for the client mount: mounted at
//! `<tmp>/mnt/testfs`, it is both the controller's `mount_point` and the node's shared client
//! mount (`node_mount_root` `<tmp>/mnt`). The [`FakeRunner`] asserts the exact argv of the
//! one command the path runs, `lctl get_param version`, and answers it in the `version=`
//! format of `lctl-stats-lnet.md` (c).

use std::path::Path;
use std::sync::Arc;

use backend::fscrypt::SecretKey;
use backend::lustre::{FakeRunner, HostKeyChecking, LustreBackend, LustreConfig, SshHostConfig};
use backend::{Encryption, Filesystem, MountMode, MountRequest, Mounts};
use lustre_model::{FsName, RelPath};

mod fscrypt_common;
use fscrypt_common::ext4_encrypt_at;

const VERSION: [&str; 3] = ["lctl", "get_param", "version"];

fn key(byte: u8) -> Arc<SecretKey> {
    Arc::new(SecretKey::from_slice(&[byte; 32]).expect("key"))
}

fn rel(s: &str) -> RelPath {
    RelPath::parse(s).expect("rel")
}

fn config(mount_root: &Path) -> LustreConfig {
    let mut config = LustreConfig::new(
        FsName::new("testfs").expect("fsname"),
        vec!["10.0.0.1@tcp".into()],
        mount_root.join("testfs"),
    );
    config.node_mount_root = mount_root.to_path_buf();
    config
}

/// Detaches what a failed test left mounted at these targets, before the image goes.
struct Targets(Vec<std::path::PathBuf>);

impl Drop for Targets {
    fn drop(&mut self) {
        for target in &self.0 {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(target)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_bind_volume_reads_only_while_its_key_is_added() {
    let fs = ext4_encrypt_at("mnt/testfs");
    let mount_root = fs.dir.path().join("mnt");
    // 2.15.4: a client with fscrypt; asked once, by the controller's first call.
    let fake = Arc::new(FakeRunner::new().expect(VERSION, "version=2.15.4\n", "", 0));
    let b = LustreBackend::with_runner(config(&mount_root), fake.clone()).expect("backend");
    assert!(b.capabilities().encryption, "commands run on this host");
    b.check_encryption()
        .await
        .expect("a 2.15 client with fscrypt");
    assert_eq!(b.shared_mount_path(), fs.mnt);
    std::fs::create_dir_all(fs.mnt.join("shares/a")).expect("mkdir");
    let dir = rel("shares/a");

    // Controller: the policy on the empty share, and no key left behind.
    let id = b.encrypt_empty_dir(&dir, key(7)).await.expect("policy set");
    assert_eq!(b.encryption_policy(&dir).await.expect("policy"), Some(id));
    assert_eq!(b.encrypt_empty_dir(&dir, key(7)).await.expect("again"), id);
    let err = b
        .encrypt_empty_dir(&dir, key(8))
        .await
        .expect_err("other key");
    assert!(err.to_string().contains("another key"), "{err}");
    let err = std::fs::write(fs.mnt.join("shares/a/x"), b"x").expect_err("locked");
    assert_eq!(err.raw_os_error(), Some(libc::ENOKEY), "{err}");

    // Node, in the CSI node's order: the key added on the shared client mount, the volume
    // bound from it; at unpublish the unmount, then the key removed. Another (plain) volume
    // keeps the shared mount up meanwhile, so what is left can be looked at.
    std::fs::create_dir_all(fs.mnt.join("shares/plain")).expect("mkdir");
    let (target, other) = (fs.dir.path().join("target"), fs.dir.path().join("other"));
    let _cleanup = Targets(vec![target.clone(), other.clone()]);
    bind(&b, "shares/plain", &other).await;
    assert_eq!(b.add_encryption_key(key(7)).await.expect("add"), id);
    // The other volume's last unmount, between this publish's key and its bind, leaves the
    // shared mount (and so the key) up for the bind.
    b.unmount(&other).await.expect("unmount the plain volume");
    assert_eq!(
        b.shared_mount_users().expect("users"),
        Some(0),
        "kept for the key"
    );
    bind(&b, "shares/a", &target).await;
    std::fs::write(target.join("data"), b"secret words").expect("write with the key");
    assert_eq!(
        std::fs::read(target.join("data")).expect("read"),
        b"secret words"
    );
    bind(&b, "shares/plain", &other).await;
    b.unmount(&target).await.expect("unmount");
    let removal = b.remove_encryption_key(&id).await.expect("remove");
    assert!(!removal.files_busy, "{removal:?}");
    assert_eq!(
        b.shared_mount_users().expect("users"),
        Some(1),
        "the plain volume"
    );
    let share = fs.mnt.join("shares/a");
    let names: Vec<_> = std::fs::read_dir(&share)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(
        names.len() == 1 && names[0] != share.join("data"),
        "names are ciphertext: {names:?}"
    );
    let err = std::fs::read(&names[0]).expect_err("no key");
    assert_eq!(err.to_string(), "Required key not available (os error 126)");

    // Published again: readable again; removing twice is a no-op.
    b.add_encryption_key(key(7)).await.expect("add back");
    bind(&b, "shares/a", &target).await;
    assert_eq!(
        std::fs::read(target.join("data")).expect("read"),
        b"secret words"
    );
    b.unmount(&target).await.expect("unmount");
    b.remove_encryption_key(&id).await.expect("remove");
    b.remove_encryption_key(&id).await.expect("remove twice");

    // A share with something in it is never encrypted.
    std::fs::create_dir_all(fs.mnt.join("shares/b")).expect("mkdir");
    std::fs::write(fs.mnt.join("shares/b/f"), b"x").expect("write");
    let err = b
        .encrypt_empty_dir(&rel("shares/b"), key(9))
        .await
        .expect_err("not empty");
    assert!(err.to_string().contains("not empty"), "{err}");

    // The last unmount takes the shared client mount away, and its keys with it: removing
    // a key then is success.
    b.unmount(&other).await.expect("unmount");
    assert_eq!(b.shared_mount_users().expect("users"), None);
    b.remove_encryption_key(&id).await.expect("nothing mounted");
    fake.assert_done();
}

/// A bind-mode publish of `share` at `target` (made here), from the shared client mount.
async fn bind(b: &LustreBackend, share: &str, target: &Path) {
    std::fs::create_dir_all(target).expect("target");
    b.mount(&MountRequest {
        share: rel(share),
        target: target.to_path_buf(),
        read_only: false,
        options: vec![],
        mode: MountMode::Bind,
        fileset: None,
        expect_project: None,
    })
    .await
    .expect("bind");
}

#[tokio::test]
async fn commands_over_ssh_have_no_encryption_and_say_why() {
    let fake = Arc::new(FakeRunner::new());
    let mut config = config(Path::new("/var/lib/lustrekit/mnt"));
    config.mds_host = Some(SshHostConfig {
        host: "mds1.example.org".into(),
        user: "root".into(),
        key: "/etc/lustrekit/id_ed25519".into(),
        port: 22,
        connect_timeout_secs: 10,
        strict_host_key_checking: HostKeyChecking::Yes,
        known_hosts_file: None,
        multiplex: true,
    });
    let b = LustreBackend::with_runner(config, fake.clone()).expect("backend");
    assert!(!b.capabilities().encryption);
    for err in [
        b.check_encryption().await.expect_err("no ioctls over SSH"),
        b.encrypt_empty_dir(&rel("shares/a"), key(7))
            .await
            .expect_err("no ioctls over SSH"),
        b.encryption_policy(&rel("shares/a"))
            .await
            .expect_err("no ioctls over SSH"),
    ] {
        let text = err.to_string();
        assert!(
            text.contains("over SSH to the MDS host mds1.example.org")
                && text.contains("mount_point"),
            "{text}"
        );
    }
    // Nothing ran: not even the version was asked.
    fake.assert_done();
}

#[tokio::test]
async fn a_client_older_than_2_14_is_refused_by_name() {
    // Asked again on each call while it is old, so an upgraded client is seen.
    let fake = Arc::new(
        FakeRunner::new()
            .expect(VERSION, "version=2.12.9\n", "", 0)
            .expect(VERSION, "version=2.12.9\n", "", 0)
            .expect(VERSION, "version=2.12.9\n", "", 0)
            // Upgraded: seen, and not asked again; then the mount itself is probed.
            .expect(VERSION, "version=2.14.0\n", "", 0),
    );
    // tmpfs stands in for a client mounted with `noencrypt`: no fscrypt there.
    let tmp = tempfile::tempdir_in("/dev/shm").expect("tempdir");
    std::fs::create_dir(tmp.path().join("testfs")).expect("mkdir");
    let b = LustreBackend::with_runner(config(tmp.path()), fake.clone()).expect("backend");
    let err = b
        .encrypt_empty_dir(&rel("shares/a"), key(7))
        .await
        .expect_err("too old");
    assert!(
        err.to_string().contains(
            "Lustre client 2.12.9 predates client-side encryption (fscrypt, Lustre 2.14)"
        ),
        "{err}"
    );
    let err = b.add_encryption_key(key(7)).await.expect_err("too old");
    assert!(err.to_string().contains("2.14"), "{err}");
    // What CreateVolume asks before it makes a key or a share.
    let err = b.check_encryption().await.expect_err("too old");
    assert!(err.to_string().contains("2.14"), "{err}");
    for _ in 0..2 {
        let err = b.check_encryption().await.expect_err("no fscrypt");
        assert!(
            err.to_string()
                .contains("has no fscrypt (a Lustre client mounted with noencrypt"),
            "{err}"
        );
    }
    fake.assert_done();
}

#[tokio::test]
async fn a_key_is_added_on_the_shared_client_mount_mounted_for_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let shared = tmp.path().join("testfs");
    // mount-lustre.md (a): the whole filesystem, `<mgs nodes>:/<fsname>`. The fake mounts
    // nothing, which the backend notices before it adds anything anywhere.
    let fake = Arc::new(
        FakeRunner::new()
            .expect(VERSION, "version=2.16.0_ddn56b\n", "", 0)
            .expect(
                [
                    "mount",
                    "-t",
                    "lustre",
                    "10.0.0.1@tcp:/testfs",
                    shared.to_str().expect("utf-8"),
                ],
                "",
                "",
                0,
            ),
    );
    let b = LustreBackend::with_runner(config(tmp.path()), fake.clone()).expect("backend");
    let err = b.add_encryption_key(key(7)).await.expect_err("not mounted");
    assert!(err.to_string().contains("is not a mount point"), "{err}");
    // Nothing mounted: nothing to remove, and nothing is run.
    let id = backend::fscrypt::KeyIdentifier([7; 16]);
    let removal = b.remove_encryption_key(&id).await.expect("nothing there");
    assert_eq!(removal, backend::fscrypt::KeyRemoval::default());
    fake.assert_done();
}
