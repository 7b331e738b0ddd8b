//! Encrypted volumes end to end: the local backend on an ext4 image made with `-O encrypt`,
//! keys in a real PyKMIP server with TLS client certificates (`scripts/start-kmip.sh`;
//! `make test` exports its env). Needs root (loop devices, bind mounts).

mod common;
#[path = "../../backend/tests/fscrypt_common/mod.rs"]
mod fscrypt_common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use csi::grpc::*;
use csi::{DriverOptions, Mode};
use fscrypt_common::Ext4;
use tonic::Code;

const MIB: i64 = 1 << 20;

/// An ext4 `-O encrypt` image of 128 MiB, mounted at `<tempdir>/mnt`.
fn ext4_encrypt() -> Ext4 {
    fscrypt_common::ext4_encrypt_sized("mnt", 128 << 20)
}

/// A driver (controller and node) on `root`, with its own node state: one "node".
async fn node(root: &Path, dir: &Path, name: &str) -> Running {
    Running::start_with_options(
        root,
        &dir.join(format!("{name}.sock")),
        false,
        DriverOptions {
            name: "test.csi.lustrekit.io".into(),
            node_id: name.into(),
            mode: Mode::All,
            fs_timeout: csi::DEFAULT_FS_TIMEOUT,
            quota_margin: Default::default(),
            hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
            node_state_dir: Some(dir.join(format!("{name}-state"))),
        },
    )
    .await
}

fn publish_req(
    volume: &Volume,
    target: &Path,
    secrets: &HashMap<String, String>,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
        volume_capability: Some(rwx()),
        volume_context: volume.volume_context.clone(),
        secrets: secrets.clone(),
        ..Default::default()
    }
}

fn unpublish_req(volume: &Volume, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.display().to_string(),
    }
}

fn encrypted_req(
    name: &str,
    endpoint: &str,
    secrets: &HashMap<String, String>,
) -> CreateVolumeRequest {
    let mut req = create_req(
        name,
        16 * MIB,
        &[("encryption", "fscrypt"), ("kmipEndpoint", endpoint)],
    );
    req.secrets = secrets.clone();
    req
}

/// The one file in `dir`, by whatever name the directory shows (ciphertext when locked).
fn only_file(dir: &Path) -> PathBuf {
    let names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_encrypted_volume_reads_only_on_a_node_that_fetched_its_key() {
    let Some(kmip) = TestKmip::from_env() else {
        return;
    };
    let fs = ext4_encrypt();
    let root = fs.mnt.join("root");
    let work = tempfile::tempdir().expect("tempdir");
    let secrets = kmip.secrets();
    let a = node(&root, work.path(), "node-a").await;
    let b = node(&root, work.path(), "node-b").await;

    let volume = a
        .controller()
        .create_volume(encrypted_req("pvc-enc", &kmip.endpoint, &secrets))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    let ctx = &volume.volume_context;
    for key in [
        "encryption",
        "kmipEndpoint",
        "kmipKeyId",
        "fscryptKeyIdentifier",
    ] {
        assert!(ctx.contains_key(key), "{ctx:?}");
    }
    // A retry is the same volume with the same key.
    let again = a
        .controller()
        .create_volume(encrypted_req("pvc-enc", &kmip.endpoint, &secrets))
        .await
        .expect("create again")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(again.volume_context, volume.volume_context);
    let share_dir = root.join(&ctx["sharePath"]);

    // Node A: written through the mount while the key is there.
    let ta = work.path().join("pod-a");
    a.node()
        .node_publish_volume(publish_req(&volume, &ta, &secrets))
        .await
        .expect("publish on a");
    std::fs::write(ta.join("secret.txt"), b"encrypted file\n").expect("write");
    // Two pods on node A: the key stays until the last one goes.
    let ta2 = work.path().join("pod-a2");
    a.node()
        .node_publish_volume(publish_req(&volume, &ta2, &secrets))
        .await
        .expect("second publish on a");
    a.node()
        .node_unpublish_volume(unpublish_req(&volume, &ta2))
        .await
        .expect("unpublish one");
    assert_eq!(
        std::fs::read(ta.join("secret.txt")).expect("still readable"),
        b"encrypted file\n"
    );
    a.node()
        .node_unpublish_volume(unpublish_req(&volume, &ta))
        .await
        .expect("unpublish the last");
    // After the last unpublish: no key, no plaintext (names included).
    let locked = only_file(&share_dir);
    assert_ne!(locked.file_name().expect("name"), "secret.txt");
    let err = std::fs::read(&locked).expect_err("locked");
    assert_eq!(err.raw_os_error(), Some(libc::ENOKEY), "{err}");

    // Node B fetches the key and reads what A wrote.
    let tb = work.path().join("pod-b");
    b.node()
        .node_publish_volume(publish_req(&volume, &tb, &secrets))
        .await
        .expect("publish on b");
    assert_eq!(
        std::fs::read(tb.join("secret.txt")).expect("read on b"),
        b"encrypted file\n"
    );
    b.node()
        .node_unpublish_volume(unpublish_req(&volume, &tb))
        .await
        .expect("unpublish on b");
    assert_eq!(
        std::fs::read(only_file(&share_dir))
            .expect_err("locked again")
            .raw_os_error(),
        Some(libc::ENOKEY)
    );

    // A node publish secret without the client key is refused, naming the key only.
    let mut partial = secrets.clone();
    let client_key = partial.remove("kmipClientKey").expect("key");
    let err = a
        .node()
        .node_publish_volume(publish_req(&volume, &ta, &partial))
        .await
        .expect_err("no client key");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("kmipClientKey"), "{err:?}");
    assert!(!err.message().contains(client_key.trim()), "{err:?}");

    // Revoked in KMIP: publish fails clearly, nothing is mounted, the data stays.
    let client = kmip.client();
    client.revoke_key(&ctx["kmipKeyId"]).await.expect("revoke");
    let err = a
        .node()
        .node_publish_volume(publish_req(&volume, &ta, &secrets))
        .await
        .expect_err("revoked");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not active"), "{err:?}");
    assert!(!ta.exists() || std::fs::read_dir(&ta).expect("ls").next().is_none());
    assert_eq!(
        std::fs::read(only_file(&share_dir))
            .expect_err("still locked")
            .raw_os_error(),
        Some(libc::ENOKEY)
    );

    // DeleteVolume: the data goes, then the key (crypto-erase).
    a.controller()
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume.volume_id.clone(),
            secrets: secrets.clone(),
        })
        .await
        .expect("delete");
    assert!(!share_dir.exists());
    let err = client
        .get_key(&ctx["kmipKeyId"])
        .await
        .expect_err("destroyed");
    assert!(
        matches!(err, csi::kmip::KmipError::KeyNotFound { .. }),
        "{err}"
    );
    // A destroyed key: publish of what is left (a static PV, say) fails clearly too.
    std::fs::create_dir_all(&share_dir).expect("mkdir");
    let err = a
        .node()
        .node_publish_volume(publish_req(&volume, &ta, &secrets))
        .await
        .expect_err("destroyed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("does not exist"), "{err:?}");
    // The drivers let go of the filesystem before it is unmounted.
    a.stop().await.expect("stop a");
    b.stop().await.expect("stop b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn publish_is_unavailable_while_the_key_server_is_down_and_works_once_it_is_back() {
    let Some(kmip) = TestKmip::from_env() else {
        return;
    };
    let fs = ext4_encrypt();
    let root = fs.mnt.join("root");
    let work = tempfile::tempdir().expect("tempdir");
    let secrets = kmip.secrets();
    let own = kmip.own_server(&work.path().join("kmip"), 15697);
    let d = node(&root, work.path(), "node-a").await;
    let volume = d
        .controller()
        .create_volume(encrypted_req("pvc-down", &own.endpoint(), &secrets))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    own.stop();
    let target = work.path().join("pod");
    for _ in 0..2 {
        let err = d
            .node()
            .node_publish_volume(publish_req(&volume, &target, &secrets))
            .await
            .expect_err("server down");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains(&own.endpoint()), "{err:?}");
    }
    own.start();
    d.node()
        .node_publish_volume(publish_req(&volume, &target, &secrets))
        .await
        .expect("publish once the server is back");
    std::fs::write(target.join("f"), b"x").expect("write");
    d.node()
        .node_unpublish_volume(unpublish_req(&volume, &target))
        .await
        .expect("unpublish");

    // DeleteVolume with the key server down: the data goes, the erase waits; the retry,
    // once the server is back, destroys the key although the share is gone.
    own.stop();
    let delete = DeleteVolumeRequest {
        volume_id: volume.volume_id.clone(),
        secrets: secrets.clone(),
    };
    let err = d
        .controller()
        .delete_volume(delete.clone())
        .await
        .expect_err("server down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(!root.join(&volume.volume_context["sharePath"]).exists());
    own.start();
    d.controller()
        .delete_volume(delete.clone())
        .await
        .expect("retry");
    let client = csi::kmip::KmipClient::new(
        &own.endpoint(),
        &kmip.credentials(),
        std::time::Duration::from_secs(5),
    )
    .expect("client");
    let err = client
        .get_key(&volume.volume_context["kmipKeyId"])
        .await
        .expect_err("destroyed");
    assert!(
        matches!(err, csi::kmip::KmipError::KeyNotFound { .. }),
        "{err}"
    );
    d.controller()
        .delete_volume(delete)
        .await
        .expect("nothing left to do");
    d.stop().await.expect("stop");
}

#[tokio::test]
async fn encryption_where_the_filesystem_has_none_is_refused_before_anything_is_made() {
    // /dev/shm is tmpfs: no fscrypt.
    let dir = tempfile::tempdir_in("/dev/shm").expect("tempdir");
    let d = Running::start(
        &dir.path().join("root"),
        &dir.path().join("csi.sock"),
        Mode::All,
        false,
    )
    .await;
    let err = d
        .controller()
        .create_volume(encrypted_req("pvc-x", "127.0.0.1:1", &HashMap::new()))
        .await
        .expect_err("no fscrypt");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("fscrypt"), "{err:?}");
    // An HSM volume that is encrypted needs the plaintext archive said out loud.
    let mut req = create_req(
        "pvc-h",
        16 * MIB,
        &[
            ("encryption", "fscrypt"),
            ("kmipEndpoint", "127.0.0.1:1"),
            ("hsmStore", "file:///tmp/store"),
        ],
    );
    let err = d
        .controller()
        .create_volume(req.clone())
        .await
        .expect_err("plaintext archive not allowed");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("hsmArchivePlaintext"), "{err:?}");
    req.parameters
        .insert("hsmArchivePlaintext".into(), "true".into());
    let err = d
        .controller()
        .create_volume(req)
        .await
        .expect_err("still no fscrypt here");
    assert!(err.message().contains("fscrypt"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_trashed_volume_keeps_its_key() {
    let Some(kmip) = TestKmip::from_env() else {
        return;
    };
    let fs = ext4_encrypt();
    let root = fs.mnt.join("root");
    let work = tempfile::tempdir().expect("tempdir");
    let secrets = kmip.secrets();
    let d = node(&root, work.path(), "node-a").await;
    let mut req = encrypted_req("pvc-trash", &kmip.endpoint, &secrets);
    req.parameters
        .insert("reclaimPolicy".into(), "trash".into());
    let volume = d
        .controller()
        .create_volume(req)
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    d.controller()
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume.volume_id.clone(),
            secrets: secrets.clone(),
        })
        .await
        .expect("trash");
    // Until the trash is purged the data may come back, so its key stays usable.
    let key = kmip
        .client()
        .get_key(&volume.volume_context["kmipKeyId"])
        .await
        .expect("key kept");
    assert_eq!(key.len(), 32);
    d.stop().await.expect("stop");
}

/// A request name of its own per run: the shared PyKMIP server keeps keys between runs.
fn unique(what: &str) -> String {
    format!(
        "{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default()
    )
}

/// A TCP relay to the KMIP server at `to` that drops its `drop_nth` connection (from 1) at
/// once: the key server failing in the middle of a call. Relays until the test ends.
async fn flaky_relay(to: String, drop_nth: usize) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut seen = 0;
        while let Ok((mut inbound, _)) = listener.accept().await {
            seen += 1;
            if seen == drop_nth {
                continue;
            }
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("127.0.0.1:{port}"), task)
}

/// True if the KMIP server has no active key named for request `name`: finding-or-making
/// one makes it (and that new key is destroyed again).
async fn no_active_key_for(kmip: &TestKmip, name: &str) -> bool {
    let client = kmip.client();
    let key = client
        .find_or_create_key(&csi::encryption::kmip_key_name(name))
        .await
        .expect("locate");
    client.destroy_key(&key.id).await.expect("destroy probe");
    key.created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_create_that_fails_after_its_key_was_made_undoes_the_key_and_what_it_made() {
    let Some(kmip) = TestKmip::from_env() else {
        return;
    };
    let fs = ext4_encrypt();
    let root = fs.mnt.join("root");
    let work = tempfile::tempdir().expect("tempdir");
    let secrets = kmip.secrets();
    let d = node(&root, work.path(), "node-a").await;
    let service = d.driver.service();

    // An encrypted block volume is refused before anything is made (its image could not
    // be made in the locked directory).
    let name = unique("pvc-blk");
    let mut req = encrypted_req(&name, &kmip.endpoint, &secrets);
    req.volume_capabilities = vec![VolumeCapability {
        access_type: Some(volume_capability::AccessType::Block(
            volume_capability::BlockVolume {},
        )),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }];
    let err = d
        .controller()
        .create_volume(req)
        .await
        .expect_err("block and encryption");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("encryption"), "{err:?}");
    assert!(!root.join("shares").join(&name).exists());
    assert!(no_active_key_for(&kmip, &name).await, "a key was made");

    // Fails after the key and the share were made: the key server drops the connection
    // that would fetch the key for the policy (the second one of the call).
    let name = unique("pvc-flaky");
    let (relay, _relay) = flaky_relay(kmip.endpoint.clone(), 2).await;
    let err = d
        .controller()
        .create_volume(encrypted_req(&name, &relay, &secrets))
        .await
        .expect_err("the key server failed");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(!err.message().contains("is left there"), "{err:?}");
    let share_name = lustre_model::ShareName::new(&name).expect("name");
    assert!(service.find(&share_name).await.expect("find").is_none());
    assert!(!root.join("shares").join(&name).exists());
    // The relay's endpoint is another name for the same server: look there by name.
    assert!(no_active_key_for(&kmip, &name).await, "the key was left");

    // Fails when the share turns out to be another request's (ALREADY_EXISTS): the key
    // made for this request goes, and the other request's share stays.
    let fixed = unique("fixed");
    let plain = d
        .controller()
        .create_volume(create_req(
            &unique("pvc-plain"),
            16 * MIB,
            &[("subdirTemplate", &fixed)],
        ))
        .await
        .expect("plain volume")
        .into_inner()
        .volume
        .expect("volume");
    let other = unique("pvc-other");
    let mut req = encrypted_req(&other, &kmip.endpoint, &secrets);
    req.parameters
        .insert("subdirTemplate".into(), fixed.clone());
    let err = d
        .controller()
        .create_volume(req)
        .await
        .expect_err("the name is taken");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(root.join(&plain.volume_context["sharePath"]).is_dir());
    assert!(no_active_key_for(&kmip, &other).await, "the key was left");

    // A retry of a finished volume that fails (another size) leaves its key: it is in use.
    let done = unique("pvc-done");
    let volume = d
        .controller()
        .create_volume(encrypted_req(&done, &kmip.endpoint, &secrets))
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    let mut bigger = encrypted_req(&done, &kmip.endpoint, &secrets);
    bigger.capacity_range = Some(CapacityRange {
        required_bytes: 64 * MIB,
        limit_bytes: 0,
    });
    let err = d
        .controller()
        .create_volume(bigger)
        .await
        .expect_err("other size");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let key_id = &volume.volume_context["kmipKeyId"];
    assert_eq!(kmip.client().get_key(key_id).await.expect("kept").len(), 32);
    // And the same request again is the same volume, with the same key.
    let again = d
        .controller()
        .create_volume(encrypted_req(&done, &kmip.endpoint, &secrets))
        .await
        .expect("retry")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(again.volume_context, volume.volume_context);

    // The same request naming another key server: its share's key ID means nothing there,
    // so a key is made there (and undone, the share being the first server's), and the
    // first server's key stays.
    let own = kmip.own_server(&work.path().join("kmip"), 15698);
    let err = d
        .controller()
        .create_volume(encrypted_req(&done, &own.endpoint(), &secrets))
        .await
        .expect_err("another server");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert_eq!(kmip.client().get_key(key_id).await.expect("kept").len(), 32);
    let there = csi::kmip::KmipClient::new(
        &own.endpoint(),
        &kmip.credentials(),
        std::time::Duration::from_secs(5),
    )
    .expect("client");
    let probe = there
        .find_or_create_key(&csi::encryption::kmip_key_name(&done))
        .await
        .expect("locate");
    assert!(probe.created, "the key made on the other server was left");
    d.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_purged_trashed_volume_loses_its_key_and_a_restored_one_keeps_it() {
    let Some(kmip) = TestKmip::from_env() else {
        return;
    };
    let fs = ext4_encrypt();
    let root = fs.mnt.join("root");
    let work = tempfile::tempdir().expect("tempdir");
    let secrets = kmip.secrets();
    let credentials = kmip.credentials();
    let d = node(&root, work.path(), "node-a").await;
    let service = d.driver.service();
    let erase = async |with: Option<&csi::kmip::KmipCredentials>| {
        csi::encryption::erase_unused_keys(service, with)
            .await
            .expect("erase round")
    };
    let name = unique("pvc-tr");
    let mut req = encrypted_req(&name, &kmip.endpoint, &secrets);
    req.parameters
        .insert("reclaimPolicy".into(), "trash".into());
    req.parameters.insert("trashTTL".into(), "1".into());
    let volume = d
        .controller()
        .create_volume(req)
        .await
        .expect("create")
        .into_inner()
        .volume
        .expect("volume");
    let key_id = volume.volume_context["kmipKeyId"].clone();
    let delete = DeleteVolumeRequest {
        volume_id: volume.volume_id.clone(),
        secrets: secrets.clone(),
    };
    let share_name = lustre_model::ShareName::new(&name).expect("name");
    let key_is_active = async || kmip.client().get_key(&key_id).await.is_ok();

    // In the trash, then restored: the key stays through both.
    d.controller()
        .delete_volume(delete.clone())
        .await
        .expect("trash");
    let round = erase(Some(&credentials)).await;
    assert!(round.destroyed.is_empty() && round.in_use == 1, "{round:?}");
    service.restore(&share_name).await.expect("restore");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        service
            .purge_expired_trash()
            .await
            .expect("purge")
            .is_empty()
    );
    let round = erase(Some(&credentials)).await;
    assert!(round.destroyed.is_empty() && round.in_use == 1, "{round:?}");
    assert!(key_is_active().await);

    // Trashed again and purged: the data goes first, then (with credentials) the key.
    d.controller()
        .delete_volume(delete.clone())
        .await
        .expect("trash again");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(erase(Some(&credentials)).await.destroyed.is_empty());
    assert_eq!(service.purge_expired_trash().await.expect("purge").len(), 1);
    let round = erase(None).await;
    assert_eq!(round.left, vec![key_id.clone()], "{round:?}");
    assert!(key_is_active().await, "no credentials, no erase");
    let round = erase(Some(&credentials)).await;
    assert_eq!(round.destroyed, vec![key_id.clone()], "{round:?}");
    let err = kmip.client().get_key(&key_id).await.expect_err("destroyed");
    assert!(
        matches!(err, csi::kmip::KmipError::KeyNotFound { .. }),
        "{err}"
    );
    assert_eq!(erase(Some(&credentials)).await, Default::default());
    d.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_dropped_at_its_deadline_undoes_its_key_in_a_task_that_keeps_its_claims() {
    let Some(kmip) = TestKmip::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let service = common::service(&dir.path().join("root")).await;
    let client = kmip.client();
    let name = unique("pvc-dropped");
    let key = client
        .find_or_create_key(&csi::encryption::kmip_key_name(&name))
        .await
        .expect("key");
    assert!(key.created);
    let inflight = csi::inflight::InFlight::default();
    let claims = inflight.claim([format!("create:{name}")]).expect("claim");
    let undo = csi::encryption::CreateUndo::new(
        service,
        client.clone(),
        key.id.clone(),
        name.clone(),
        claims,
    );
    // What tonic does to a call whose deadline passed: the future, and so this, is dropped.
    drop(undo);
    // A retry meanwhile is ABORTED: the undo holds the call's claims until it is done (it
    // has a TLS connection to make first, so it is still at it here).
    assert!(inflight.claim([format!("create:{name}")]).is_err());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while inflight.claim([format!("create:{name}")]).is_err() {
        assert!(std::time::Instant::now() < deadline, "the undo did not end");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let err = client.get_key(&key.id).await.expect_err("destroyed");
    assert!(
        matches!(err, csi::kmip::KmipError::KeyNotFound { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_that_cannot_destroy_the_key_says_so_by_its_id_and_keeps_the_code() {
    let Some(kmip) = TestKmip::from_env() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let service = common::service(&dir.path().join("root")).await;
    let own = kmip.own_server(&dir.path().join("kmip"), 15699);
    let client = csi::kmip::KmipClient::new(
        &own.endpoint(),
        &kmip.credentials(),
        std::time::Duration::from_secs(2),
    )
    .expect("client");
    let name = unique("pvc-undo");
    let key = client
        .find_or_create_key(&csi::encryption::kmip_key_name(&name))
        .await
        .expect("key");
    own.stop();
    let claims = csi::inflight::InFlight::default()
        .claim([format!("create:{name}")])
        .expect("claim");
    let undo =
        csi::encryption::CreateUndo::new(service, client.clone(), key.id.clone(), name, claims);
    let err = undo
        .undo(csi::CsiError::FailedPrecondition("the step failed".into()))
        .await;
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let message = err.to_string();
    assert!(message.starts_with("the step failed; "), "{message}");
    assert!(
        message.contains(&format!("its key {} at KMIP server", key.id)),
        "{message}"
    );
    assert!(message.contains("is left there"), "{message}");
    own.start();
    // The undo may or may not have revoked it before its server went away: an active key
    // cannot be destroyed.
    let _ = client.revoke_key(&key.id).await;
    client.destroy_key(&key.id).await.expect("clean up");
}
