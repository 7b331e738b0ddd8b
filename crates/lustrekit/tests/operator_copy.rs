//! `lustrekit operator copy`, what a DataMovement's Job runs: a tree out to a store and back
//! with JSON progress lines and a report file; a path out of the root refused; a store that
//! never answers given up as stalled instead of hanging forever.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn lustrekit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lustrekit"))
}

#[test]
fn a_tree_goes_out_and_back_with_progress_lines_and_a_report() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("fs");
    std::fs::create_dir_all(root.join("data/sub")).expect("mkdir");
    std::fs::write(root.join("data/a"), b"alpha").expect("write");
    std::fs::write(root.join("data/sub/b"), vec![7u8; 100_000]).expect("write");
    let url = format!("file://{}", tmp.path().join("store").display());
    let report = tmp.path().join("report");
    let out = lustrekit()
        .args(["operator", "copy", "--direction", "out", "--root"])
        .arg(&root)
        .args(["--path", "data", "--url", &url, "--report-file"])
        .arg(&report)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("an outcome line"),
    )
    .expect("JSON");
    assert_eq!(last["success"], true, "{last}");
    assert_eq!(
        last["progress"]["filesDone"],
        last["progress"]["filesTotal"]
    );
    assert_eq!(last["progress"]["bytesDone"], 100_005);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("JSON");
    assert_eq!(written, last);

    let out = lustrekit()
        .args(["operator", "copy", "--direction", "in", "--root"])
        .arg(&root)
        .args(["--path", "back", "--url", &url])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(root.join("back/a")).expect("a"), b"alpha");
    assert_eq!(
        std::fs::read(root.join("back/sub/b")).expect("b"),
        vec![7u8; 100_000]
    );
}

#[test]
fn a_path_out_of_the_root_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = lustrekit()
        .args(["operator", "copy", "--direction", "in", "--root"])
        .arg(tmp.path())
        .args(["--path", "../../etc", "--url", "file:///nonexistent-store"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must stay below"), "{stderr}");
}

#[test]
fn a_store_that_never_answers_is_given_up_as_stalled() {
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("data")).expect("mkdir");
    std::fs::write(tmp.path().join("data/f"), b"x").expect("write");
    let url = format!(
        "s3://bucket/p?endpoint=http://127.0.0.1:{port}&region=r&access_key_id=a&secret_access_key=b"
    );
    let started = Instant::now();
    let mut child = lustrekit()
        .args(["operator", "copy", "--direction", "out", "--root"])
        .arg(tmp.path())
        .args(["--path", "data", "--url", &url])
        .args(["--stall-timeout", "2", "--progress-every", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("still running after 60 s: the stall watch did not fire");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    assert!(!status.success());
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.contains("stalled"), "{stdout}");
    assert!(last.contains(r#""success":false"#), "{last}");
}
