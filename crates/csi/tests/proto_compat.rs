//! Our csi.proto against the upstream CSI spec v1.12.0, descriptor by descriptor (services,
//! methods, messages, field numbers, types, oneofs, enum values, csi_secret markers), using
//! the spec's own Go package as the reference. Needs Go and the Go module proxy, so it
//! is ignored unless run with `--include-ignored`.

use std::process::Command;

#[test]
#[ignore = "needs go and the Go module proxy"]
fn csi_proto_is_wire_compatible_with_spec_v1_12() {
    let dir = tempfile::tempdir().unwrap();
    let descriptor = dir.path().join("csi_descriptor.bin");
    std::fs::write(&descriptor, csi::grpc::FILE_DESCRIPTOR_SET).unwrap();
    let checker = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proto_compat");
    let out = Command::new("go")
        .arg("run")
        .arg(".")
        .arg(&descriptor)
        .current_dir(&checker)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("matches CSI spec v1.12.0"), "{stdout}");
    assert!(stdout.contains("19 csi_secret fields"), "{stdout}");
}
