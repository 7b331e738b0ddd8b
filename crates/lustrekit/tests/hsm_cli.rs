//! `lustrekit hsm ...`, run as a separate process: trees with `-r`, `--json` reports,
//! failures and `--max-errors`.

use std::path::Path;
use std::process::Command;

/// `lustrekit hsm`, ready for more arguments.
fn lustrekit_hsm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lustrekit"));
    cmd.arg("hsm");
    cmd
}

/// `n` bytes that differ from file to file (`seed`) and along each file.
fn content(n: usize, seed: u64) -> Vec<u8> {
    (0..n as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 7 ^ seed.wrapping_mul(97)) as u8)
        .collect()
}

fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, data).expect("write");
}

fn hsm(store: &str, root: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = lustrekit_hsm()
        .args(["--json", "--no-progress", "--store", store, "--root"])
        .arg(root)
        .args(args)
        .output()
        .expect("run lustrekit hsm");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let v = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (out.status.code().unwrap_or(-1), v, stderr)
}

#[test]
fn trees_round_trip_with_json_reports() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ns = tmp.path().join("ns");
    let store = format!("file://{}", tmp.path().join("store").display());
    let mut files = Vec::new();
    for i in 0..12 {
        let p = ns.join(format!("d{}/sub/f{i}.bin", i % 3));
        let data = content(10_000 + i * 1000, i as u64);
        write(&p, &data);
        files.push((p, data));
    }
    let dir = ns.display().to_string();

    let (code, v, err) = hsm(&store, &ns, &["archive", "-r", &dir]);
    assert_eq!(code, 0, "{v}\n{err}");
    // 12 files + 7 directories (ns, d0..d2, d0/sub..d2/sub).
    assert_eq!(v["done"], 19, "{v}");
    assert_eq!(v["failed"], 0);
    assert_eq!(v["op"], "archive");
    assert!(v["bytes"].as_u64().expect("bytes") > 100_000);

    let (code, v, _) = hsm(&store, &ns, &["release", "--unguarded", "-r", &dir]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["done"], 12);

    let (code, v, _) = hsm(&store, &ns, &["state", "-r", &dir]);
    assert_eq!(code, 0);
    let states = v.as_array().expect("array");
    assert_eq!(states.len(), 12);
    for s in states {
        assert!(
            s["text"].as_str().expect("text").contains("released"),
            "{s}"
        );
    }

    let (code, v, _) = hsm(&store, &ns, &["restore", "-r", "-j", "3", &dir]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["done"], 12);
    for (p, data) in &files {
        assert_eq!(&std::fs::read(p).expect("read"), data, "{}", p.display());
    }

    // A relative path on the command line is relative to the current directory.
    let out = lustrekit_hsm()
        .current_dir(ns.join("d0/sub"))
        .args(["--no-progress", "--store", &store, "--root"])
        .arg(&ns)
        .args(["state", "f0.bin"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("d0/sub/f0.bin: (0x00000009) exists archived, archive_id:1"),
        "{text}"
    );
}

#[test]
fn failures_exit_non_zero_and_max_errors_stops() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ns = tmp.path().join("ns");
    let store = format!("file://{}", tmp.path().join("store").display());
    for i in 0..6 {
        write(&ns.join(format!("u{i}")), b"never archived");
    }
    let dir = ns.display().to_string();
    // Release refuses every unarchived file.
    let (code, v, _) = hsm(&store, &ns, &["release", "--unguarded", "-r", &dir]);
    assert_eq!(code, 1);
    assert_eq!(v["failed"], 6);
    assert_eq!(v["errors"][0]["kind"], "refused");
    // One at a time, stop once more than 1 failed.
    let (code, v, _) = hsm(
        &store,
        &ns,
        &[
            "release",
            "--unguarded",
            "-r",
            "-j",
            "1",
            "--max-errors",
            "1",
            &dir,
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(v["stopped"], true);
    assert_eq!(v["failed"], 2, "{v}");
    // No store: a clear message.
    let out = lustrekit_hsm()
        .env_remove("LUSTREKIT_HSM_STORE")
        .args(["state", "x"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--store"));
    // A directory without -r.
    let out = lustrekit_hsm()
        .args(["--store", &store, "--root"])
        .arg(&ns)
        .args(["release", &dir])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("use -r"));
}

#[test]
fn import_and_export_from_the_command_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ns = tmp.path().join("ns");
    let store = format!("file://{}", tmp.path().join("store").display());
    write(&ns.join("src/a.txt"), b"alpha");
    write(&ns.join("src/b/c.txt"), b"charlie");
    let (code, v, _) = hsm(
        &store,
        &ns,
        &["export", &ns.join("src").display().to_string()],
    );
    assert_eq!(code, 0, "{v}");
    assert!(v["done"].as_u64().expect("done") >= 2);
    // Import the exported prefix elsewhere as stubs, then restore one.
    let (code, v, _) = hsm(
        &store,
        &ns,
        &[
            "import",
            "--prefix",
            "src",
            &ns.join("copy").display().to_string(),
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["files"], 2, "{v}");
    let (code, _, _) = hsm(
        &store,
        &ns,
        &["state", &ns.join("copy/b/c.txt").display().to_string()],
    );
    assert_eq!(code, 0);
    // Second import without overwrite: conflicts, exit non-zero; with skip: fine.
    let (code, v, _) = hsm(
        &store,
        &ns,
        &[
            "import",
            "--prefix",
            "src",
            &ns.join("copy").display().to_string(),
        ],
    );
    assert_eq!(code, 1, "{v}");
    let (code, v, _) = hsm(
        &store,
        &ns,
        &[
            "import",
            "--prefix",
            "src",
            "--conflict",
            "skip",
            &ns.join("copy").display().to_string(),
        ],
    );
    assert_eq!(code, 0, "{v}");
}

#[test]
fn copytool_without_liblustreapi_fails_plainly() {
    let out = lustrekit_hsm()
        .args([
            "--store",
            "file:///tmp/unused-store",
            "copytool",
            "--mnt",
            "/tmp",
            "--lib",
            "liblustreapi-absent.so.1",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("copytool mode needs liblustreapi"), "{err}");
}
