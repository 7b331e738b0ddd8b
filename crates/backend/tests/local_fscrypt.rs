//! fscrypt v2 on the local backend, for real: an ext4 image made with `-O encrypt` on a loop
//! device. Needs root (`#[ignore = "needs root"]`; CI runs them with `--include-ignored`).

use std::sync::Arc;

use backend::fscrypt::{KeyIdentifier, SecretKey};
use backend::local::LocalBackend;
use backend::{Encryption, Filesystem};
use lustre_model::RelPath;

mod fscrypt_common;
use fscrypt_common::ext4_encrypt;

fn key(byte: u8) -> Arc<SecretKey> {
    Arc::new(SecretKey::from_slice(&[byte; 32]).expect("key"))
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_file_reads_only_while_its_key_is_added() {
    let fs = ext4_encrypt();
    let root = fs.mnt.join("root");
    let b = LocalBackend::open(&root).await.expect("open");
    assert!(b.capabilities().encryption, "ext4 -O encrypt does fscrypt");
    b.check_encryption().await.expect("fscrypt here");
    std::fs::create_dir_all(root.join("shares/a")).expect("mkdir");
    let dir = RelPath::parse("shares/a").expect("rel");

    let id = b.encrypt_empty_dir(&dir, key(7)).await.expect("policy set");
    assert_eq!(b.encryption_policy(&dir).await.expect("policy"), Some(id));
    // Same key again: success; another key: refused.
    assert_eq!(b.encrypt_empty_dir(&dir, key(7)).await.expect("again"), id);
    assert!(b.encrypt_empty_dir(&dir, key(8)).await.is_err());
    // The controller leaves no key behind: nothing can be written yet.
    let file = root.join("shares/a/data");
    let err = std::fs::write(&file, b"x").expect_err("locked");
    assert_eq!(err.raw_os_error(), Some(libc::ENOKEY), "{err}");

    assert_eq!(b.add_encryption_key(key(7)).await.expect("add"), id);
    std::fs::write(&file, b"secret words").expect("write with the key");
    assert_eq!(std::fs::read(&file).expect("read"), b"secret words");
    let removal = b.remove_encryption_key(&id).await.expect("remove");
    assert!(!removal.files_busy, "{removal:?}");
    // Without the key the names are ciphertext too, and what they hold does not open.
    let names: Vec<_> = std::fs::read_dir(root.join("shares/a"))
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(names.len() == 1 && names[0] != file, "{names:?}");
    let err = std::fs::read(&names[0]).expect_err("no key");
    assert_eq!(err.raw_os_error(), Some(libc::ENOKEY), "{err}");
    assert_eq!(err.to_string(), "Required key not available (os error 126)");
    assert_eq!(
        std::fs::read(&file)
            .expect_err("no such name")
            .raw_os_error(),
        Some(libc::ENOENT)
    );

    // Removing again is a no-op; adding back makes it readable.
    b.remove_encryption_key(&id).await.expect("remove twice");
    b.add_encryption_key(key(7)).await.expect("add back");
    assert_eq!(std::fs::read(&file).expect("read"), b"secret words");
    b.remove_encryption_key(&id).await.expect("remove");

    // A directory with something in it is never encrypted.
    std::fs::create_dir_all(root.join("shares/b")).expect("mkdir");
    std::fs::write(root.join("shares/b/f"), b"x").expect("write");
    let err = b
        .encrypt_empty_dir(&RelPath::parse("shares/b").expect("rel"), key(9))
        .await
        .expect_err("not empty");
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[tokio::test]
async fn a_root_without_fscrypt_says_so() {
    // /dev/shm is tmpfs: no fscrypt.
    let dir = tempfile::tempdir_in("/dev/shm").expect("tempdir");
    let b = LocalBackend::open(dir.path()).await.expect("open");
    assert!(!b.capabilities().encryption);
    assert!(b.check_encryption().await.is_err());
    let err = b.add_encryption_key(key(1)).await.expect_err("unsupported");
    assert!(err.to_string().contains("fscrypt"), "{err}");
    let _ = KeyIdentifier([0; 16]);
}
