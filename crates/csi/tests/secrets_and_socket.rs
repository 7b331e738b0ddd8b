//! Secrets never reach a log, and the socket is private, replaces a stale one and refuses to
//! clobber anything else.

mod common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use csi::Mode;
use csi::grpc::*;

const SECRET: &str = "s3cr3t-Value-that-must-not-leak";

/// Everything every test in this binary logs, at TRACE level.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .init();
        log
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn secrets() -> std::collections::HashMap<String, String> {
    [
        ("password".to_string(), SECRET.to_string()),
        ("token".to_string(), SECRET.to_string()),
    ]
    .into()
}

#[test]
fn debug_output_of_every_secret_message_is_redacted() {
    let req = CreateVolumeRequest {
        name: "v".into(),
        secrets: secrets(),
        ..Default::default()
    };
    let text = format!("{req:?} {req:#?}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("<redacted: 2 entries>"), "{text}");
    let node = NodePublishVolumeRequest {
        secrets: secrets(),
        ..Default::default()
    };
    assert!(!format!("{node:?}").contains(SECRET));
    // build.rs found every message with a csi_secret field (19 in CSI v1.12).
    assert_eq!(csi::grpc::REDACTED_MESSAGES.len(), 19);
    assert!(csi::grpc::REDACTED_MESSAGES.contains(&"csi.v1.NodeStageVolumeRequest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log() {
    let log = captured();
    let dir = tempfile::tempdir().unwrap();
    let d = Running::start(
        &dir.path().join("root"),
        &dir.path().join("csi.sock"),
        Mode::Controller,
        false,
    )
    .await;
    let mut c = d.controller();
    // Success, failure and refusal paths, all carrying secrets.
    let mut ok = create_req("pvc-secret", 1 << 20, &[]);
    ok.secrets = secrets();
    let vol = c
        .create_volume(ok)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let mut bad = create_req("../evil", 1 << 20, &[]);
    bad.secrets = secrets();
    c.create_volume(bad).await.unwrap_err();
    let mut unknown = create_req("pvc-x", 1 << 20, &[("nope", SECRET)]);
    unknown.secrets = secrets();
    let err = c.create_volume(unknown).await.unwrap_err();
    // Parameters are not secrets, but secrets are not parameters either: only the key is named.
    assert!(!err.message().contains(SECRET), "{}", err.message());
    c.delete_volume(DeleteVolumeRequest {
        volume_id: vol.volume_id,
        secrets: secrets(),
    })
    .await
    .unwrap();
    d.stop().await.unwrap();

    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("CreateVolume"),
        "the log has the calls: {text}"
    );
    assert!(!text.contains(SECRET), "a secret reached the log:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_and_stale_sockets_are_replaced() {
    let _ = captured();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let socket = dir.path().join("run/csi.sock");

    // A stale socket (nothing listening) is replaced.
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(
        std::fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );

    let d = Running::start(&root, &socket, Mode::All, false).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second driver on a live socket refuses to start.
    let driver = csi::Driver::new(
        service(&root).await,
        csi::DriverOptions {
            name: "x".into(),
            node_id: "n".into(),
            mode: Mode::All,
            fs_timeout: csi::DEFAULT_FS_TIMEOUT,
            quota_margin: Default::default(),
            hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
            node_state_dir: None,
        },
    );
    let err = csi::server::serve(driver, &socket, None, async {}, |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    d.stop().await.unwrap();
    assert!(!socket.exists(), "the socket is removed on shutdown");

    // Anything that is not a socket is never deleted.
    std::fs::write(&socket, b"precious").unwrap();
    let driver = csi::Driver::new(
        service(&root).await,
        csi::DriverOptions {
            name: "x".into(),
            node_id: "n".into(),
            mode: Mode::All,
            fs_timeout: csi::DEFAULT_FS_TIMEOUT,
            quota_margin: Default::default(),
            hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
            node_state_dir: None,
        },
    );
    let err = csi::server::serve(driver, &socket, None, async {}, |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&socket).unwrap(), b"precious");
}
