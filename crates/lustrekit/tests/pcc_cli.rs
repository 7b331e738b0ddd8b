//! `lustrekit pcc purge` end to end: the binary on a real cache directory, with the
//! `local` backend of a configuration file (which removes cache files itself).

use std::path::Path;
use std::process::{Command, Output};

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("lustrekit.toml");
    std::fs::write(
        &path,
        format!(
            "backend = \"local\"\nfsname = \"testfs\"\nproject_ids = \"500-502\"\n[local]\nroot = \"{}\"\n",
            dir.join("root").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("root")).unwrap();
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

#[test]
fn purge_once_reports_the_cache_as_json_and_bad_watermarks_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let cache = dir.path().join("pcc");
    std::fs::create_dir_all(cache.join("0004/0000")).unwrap();
    std::fs::write(cache.join("0004/0000/0x200000bd1:0x4:0x0"), vec![1u8; 8192]).unwrap();
    let cache_arg = cache.to_str().unwrap();
    // A filesystem is never more than 100 % full: nothing is detached, the cache is counted.
    let out = lustrekit(
        &cfg,
        &[
            "--json",
            "pcc",
            "purge",
            "--cache",
            cache_arg,
            "--mount",
            "/mnt/testfs",
            "--high",
            "100",
            "--low",
            "50",
            "--once",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"], 1, "{report}");
    assert_eq!(report["detached"], 0, "{report}");
    assert!(
        report["before"]["total_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(cache.join("0004/0000/0x200000bd1:0x4:0x0").exists());

    let out = lustrekit(
        &cfg,
        &[
            "pcc",
            "purge",
            "--cache",
            cache_arg,
            "--mount",
            "/mnt/testfs",
            "--high",
            "50",
            "--low",
            "70",
            "--once",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("low below high"));
}
