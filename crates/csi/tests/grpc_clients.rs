//! Clients other than Go's: Python grpcio (gRPC C-core, like the C++ and Ruby clients) on a
//! plain `unix:` target. C-core sends the socket path as `:authority`, which h2 alone
//! refuses (PROTOCOL_ERROR); see `csi::server` for how the driver accepts it. Needs python3
//! with grpcio (`scripts/install-grpcio.sh`).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use csi::Mode;
use prost::Message;

/// Runs the Python client; Ok(reply) or Err(its error line).
fn python_get_plugin_info(
    socket: &Path,
    authority: Option<&str>,
) -> Result<csi::grpc::GetPluginInfoResponse, String> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_clients/get_plugin_info.py");
    let mut command = Command::new("python3");
    command.arg(&script).arg(socket);
    if let Some(authority) = authority {
        command.arg(authority);
    }
    let out = command.output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        return Err(stdout);
    }
    assert!(
        out.status.success(),
        "python client failed: {stdout}\n{stderr}"
    );
    let bytes: Vec<u8> = (0..stdout.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&stdout[i..i + 2], 16).expect("hex"))
        .collect();
    Ok(
        csi::grpc::GetPluginInfoResponse::decode(bytes.as_slice())
            .expect("a GetPluginInfoResponse"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 grpcio"]
async fn python_grpcio_on_a_plain_unix_target() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let d = Running::start(&dir.path().join("root"), &socket, Mode::All, false).await;
    // As any user would write it: no channel options. C-core sends the escaped socket path
    // as :authority; without the relay h2 answered RST_STREAM(PROTOCOL_ERROR), which grpcio
    // reports as INTERNAL "Stream removed".
    let s = socket.clone();
    let plain = tokio::task::spawn_blocking(move || python_get_plugin_info(&s, None))
        .await
        .unwrap()
        .expect("a plain unix: target works");
    assert_eq!(plain.name, "test.csi.lustrekit.io");
    assert_eq!(plain.manifest["backend"], "local");
    // The documented client-side setting works too (and is what to use against a driver
    // without the relay).
    let s = socket.clone();
    let localhost =
        tokio::task::spawn_blocking(move || python_get_plugin_info(&s, Some("localhost")))
            .await
            .unwrap()
            .expect("grpc.default_authority=localhost works");
    assert_eq!(localhost, plain);
    // Many calls on one channel: the client's HPACK table fills with indexed fields that
    // the relay must follow.
    let s = socket.clone();
    let repeated = tokio::task::spawn_blocking(move || {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_clients/get_plugin_info.py");
        Command::new("python3")
            .arg(script)
            .arg(&s)
            .arg("--repeat=200")
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    assert!(
        repeated.status.success(),
        "{}{}",
        String::from_utf8_lossy(&repeated.stdout),
        String::from_utf8_lossy(&repeated.stderr)
    );
    d.stop().await.unwrap();
}
