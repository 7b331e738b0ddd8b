//! The share CLI end to end: the binary, a config file, a plain-directory local backend.

use std::path::Path;
use std::process::{Command, Output};

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

fn lustrekit(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lustrekit"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run lustrekit")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn share_lifecycle_through_the_cli_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let out = lustrekit(
        &cfg,
        &[
            "--json", "share", "create", "alpha", "--size", "10M", "--inodes", "1000", "--label",
            "team=x",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let share = json(&out);
    assert_eq!(share["name"], "alpha");
    assert_eq!(share["size_bytes"], 10 << 20);
    assert_eq!(share["inode_limit"], 1000);
    assert_eq!(share["state"], "ready");
    assert_eq!(
        share["export_location"],
        "10.0.0.1@tcp:/testfs/shares/alpha"
    );
    assert_eq!(share["labels"]["team"], "x");

    let out = lustrekit(
        &cfg,
        &[
            "--json",
            "share",
            "access",
            "allow",
            "alpha",
            "--to",
            "10.1.0.0/16",
            "--level",
            "ro",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json(&out)[0]["to"], "10.1.0.0/16");

    let out = lustrekit(&cfg, &["--json", "share", "show", "alpha"]);
    let shown = json(&out);
    assert_eq!(shown["usage"]["limit_bytes"], 10 << 20);

    let out = lustrekit(
        &cfg,
        &["--json", "share", "extend", "alpha", "--size", "20M"],
    );
    assert_eq!(json(&out)["size_bytes"], 20 << 20);

    let out = lustrekit(&cfg, &["--json", "share", "list"]);
    assert_eq!(json(&out).as_array().unwrap().len(), 1);

    let out = lustrekit(&cfg, &["--json", "share", "capacity"]);
    assert_eq!(json(&out)["provisioned_bytes"], 20 << 20);

    let out = lustrekit(&cfg, &["--json", "share", "delete", "alpha", "--trash"]);
    assert!(out.status.success());
    let out = lustrekit(&cfg, &["--json", "share", "trash", "list"]);
    assert_eq!(json(&out).as_array().unwrap().len(), 1);
    let out = lustrekit(&cfg, &["--json", "share", "restore", "alpha"]);
    assert_eq!(json(&out)["access"][0]["level"], "ro");

    let out = lustrekit(&cfg, &["--json", "share", "ensure"]);
    assert!(out.status.success());
    assert_eq!(json(&out)["checked"], 1);

    let out = lustrekit(&cfg, &["share", "delete", "alpha"]);
    assert!(out.status.success());
    let out = lustrekit(&cfg, &["share", "delete", "alpha"]);
    assert!(out.status.success(), "a second delete must succeed");
}

#[test]
fn bad_input_gets_a_clear_error_code_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let cases: [(&[&str], i32, &str); 12] = [
        (
            &["share", "create", "a/b", "--size", "1M"],
            2,
            "invalid_argument",
        ),
        (
            &["share", "create", " ", "--size", "1M"],
            2,
            "invalid_argument",
        ),
        (
            &["share", "create", " lead", "--size", "1M"],
            2,
            "invalid_argument",
        ),
        (
            &["share", "create", "trail\t", "--size", "1M"],
            2,
            "invalid_argument",
        ),
        (
            &["share", "create", "trail ", "--size", "1M"],
            2,
            "invalid_argument",
        ),
        (
            &["share", "create", "..", "--size", "1M"],
            2,
            "invalid_argument",
        ),
        (
            &["share", "create", "ok", "--size", "0"],
            2,
            "invalid_argument",
        ),
        (
            &["share", "create", "ok", "--size", "-5M"],
            2,
            "invalid_argument",
        ),
        (
            &["share", "create", "ok", "--size", "lots"],
            2,
            "invalid_argument",
        ),
        (
            &["share", "create", "ok", "--size", "99999999999999999999"],
            2,
            "invalid_argument",
        ),
        (&["share", "show", "missing"], 3, "not_found"),
        (
            &["share", "access", "allow", "missing", "--to", "10.0.0.1"],
            3,
            "not_found",
        ),
    ];
    for (args, code, kind) in cases {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = lustrekit(&cfg, &full);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(json(&out)["error"]["code"], kind, "{args:?}");
    }
    lustrekit(&cfg, &["share", "create", "ok", "--size", "1M"]);
    let out = lustrekit(
        &cfg,
        &[
            "--json",
            "share",
            "access",
            "allow",
            "ok",
            "--to",
            "10.0.0.300",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = lustrekit(&cfg, &["--json", "share", "list"]);
    assert_eq!(
        json(&out).as_array().unwrap().len(),
        1,
        "bad input created something"
    );
    // An unknown config key is refused.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("fsname", "fs_name"),
    )
    .unwrap();
    let out = lustrekit(&bad, &["--json", "share", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        json(&out)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fs_name")
    );
}

#[test]
fn two_processes_creating_the_same_share_end_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_lustrekit"))
            .arg("--config")
            .arg(&cfg)
            .args(["--json", "share", "create", "race", "--size", "1M"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    assert_eq!(json(&a)["project_id"], json(&b)["project_id"]);
    let out = lustrekit(&cfg, &["--json", "share", "list"]);
    assert_eq!(json(&out).as_array().unwrap().len(), 1);
    let claims = std::fs::read_dir(dir.path().join("root/shares/.lustrekit/projects"))
        .unwrap()
        .count();
    assert_eq!(claims, 1);
}

#[test]
fn hsm_uses_the_configured_backend_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join("data/f"), b"hello archive").unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    std::fs::create_dir_all(dir.path().join("store")).unwrap();
    let root_s = root.to_str().unwrap();
    let out = lustrekit(
        &cfg,
        &[
            "--json",
            "hsm",
            "--backend",
            "config",
            "--root",
            root_s,
            "--store",
            &store,
            "--no-progress",
            "archive",
            &format!("{root_s}/data/f"),
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lustrekit(
        &cfg,
        &[
            "--json",
            "hsm",
            "--backend",
            "config",
            "--root",
            root_s,
            "--store",
            &store,
            "state",
            &format!("{root_s}/data/f"),
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("archived"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Without --root the configured backend has no mount point to key objects by.
    let out = lustrekit(
        &cfg,
        &[
            "--json",
            "hsm",
            "--backend",
            "config",
            "--store",
            &store,
            "state",
            &format!("{root_s}/data/f"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--root"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn adopt_refuses_what_is_not_a_share_with_the_documented_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    lustrekit(&cfg, &["share", "list"]);
    // A plain directory: no project ID, so nothing to adopt.
    std::fs::create_dir_all(dir.path().join("root/shares/plain")).unwrap();
    for (n, code, kind) in [("plain", 2, "invalid_argument"), ("absent", 3, "not_found")] {
        let out = lustrekit(&cfg, &["--json", "share", "adopt", n]);
        assert_eq!(out.status.code(), Some(code), "{n}");
        assert_eq!(json(&out)["error"]["code"], kind, "{n}");
    }
    let out = lustrekit(&cfg, &["--json", "share", "list"]);
    assert_eq!(json(&out), serde_json::json!([]));
    let claims = std::fs::read_dir(dir.path().join("root/shares/.lustrekit/projects")).unwrap();
    assert_eq!(claims.count(), 0);
    let help = lustrekit(&cfg, &["share", "adopt", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("project ID"));
}
