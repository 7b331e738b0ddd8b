//! SIGKILL the mover in the middle of an archive and of a restore, then run it again: the
//! content and the state are intact, and the operation completes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The example binary, built by cargo for the tests of this package.
fn mover() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("examples/hsm-mover")
}

fn build_mover() {
    let st = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "hsm", "--example", "hsm-mover"])
        .status()
        .expect("cargo build");
    assert!(st.success());
}

fn run(op: &str, spec: &str, root: &Path, file: &Path, rate: Option<u64>) -> std::process::Output {
    let mut c = Command::new(mover());
    c.args([
        op,
        spec,
        &root.display().to_string(),
        &file.display().to_string(),
    ]);
    if let Some(r) = rate {
        c.env("HSM_RATE", r.to_string());
    }
    c.output().expect("run mover")
}

fn kill_midway(op: &str, spec: &str, root: &Path, file: &Path) {
    let mut child = Command::new(mover())
        .args([
            op,
            spec,
            &root.display().to_string(),
            &file.display().to_string(),
        ])
        .env("HSM_RATE", (4u64 << 20).to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "{op} finished before the kill"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_archive_and_mid_restore() {
    build_mover();
    for (label, env) in envs(small_cfg()).await {
        let f = env.ns.join("k/big.bin");
        let data = content(16 << 20, 11);
        write(&f, &data);

        // Archive, killed after ~1.2 s of a ~4 s copy.
        kill_midway("archive", &env.spec, &env.ns, &f);
        assert_eq!(
            std::fs::read(&f).expect("read"),
            data,
            "{label}: content after kill"
        );
        let st = env.engine.state(&f).await.expect("state").state;
        assert!(
            !st.flags.archived,
            "{label}: marked archived by a killed archive: {st}"
        );
        assert!(
            env.engine.release(&f).await.is_err(),
            "{label}: released without an archive"
        );
        let out = run("archive", &env.spec, &env.ns, &f, None);
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let st = env.engine.state(&f).await.expect("state").state;
        assert!(st.flags.archived && !st.flags.dirty, "{label}: {st}");

        // Restore, killed midway: still a released stub; the rerun brings the data back.
        env.engine.release(&f).await.expect("release");
        kill_midway("restore", &env.spec, &env.ns, &f);
        let st = env.engine.state(&f).await.expect("state").state;
        assert!(st.flags.released, "{label}: {st}");
        assert_eq!(std::fs::metadata(&f).expect("md").len(), data.len() as u64);
        let out = run("restore", &env.spec, &env.ns, &f, None);
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(&f).expect("read"),
            data,
            "{label}: content after rerun"
        );
        let st = env.engine.state(&f).await.expect("state").state;
        assert!(
            st.flags.archived && !st.flags.released && !st.flags.dirty,
            "{label}: {st}"
        );
        let left: Vec<_> = std::fs::read_dir(env.ns.join("k"))
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n != "big.bin")
            .collect();
        assert!(left.is_empty(), "{label}: leftovers {left:?}");
    }
}
