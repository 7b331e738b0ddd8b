//! Restore on access and what guards a released file's reads, end to end on ext4 and btrfs
//! loop images (as root; the tests that need it are ignored otherwise):
//! - a released file read by another process (`cat`) comes back with its bytes; a corrupted
//!   archive fails the read (EIO) and leaves the stub released;
//! - release refuses while no restore daemon watches, goes on while one does (without the
//!   45 s lease-break stall), and `state` names the risk once the daemon is gone;
//! - a reader and a writer that touch a file mid-release (the release paused between its
//!   intent and its punch) are held until it is done: the reader gets the exact bytes, the
//!   writer's bytes are never punched away; a release that dies midway leaves a file the
//!   daemon restores;
//! - a rolling restart (start B, stop A) leaves no window; a second daemon covers a SIGKILL;
//! - a restore that hangs is cut off at its timeout with EIO, and the daemon serves on;
//! - 2,000 concurrent readers against a daemon limited to 256 descriptors: every reader gets
//!   the right bytes, the daemon never runs out of descriptors, the filesystem stays readable.
//!
//! The daemons under test run as child processes (`lustrekit hsm`, the binary built by
//! [`build_cli`]), so a descriptor limit or a SIGKILL hits only them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backend::local::LocalBackend;
use common::*;
use hsm::restore_daemon::{DaemonConfig, RestoreDaemon};
use hsm::{ArchiveStore, EngineConfig, HsmEngine, HsmError};
use tokio::io::AsyncBufReadExt;

struct LoopMount {
    mnt: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        // A lazy unmount when something (a fanotify group) still pins the filesystem.
        let clean = Command::new("umount").arg(&self.mnt).status();
        if !clean.map(|s| s.success()).unwrap_or(false) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// The tests of this file run one at a time: several of them start daemons with
/// filesystem-wide fanotify marks, whose event descriptors would break the leases of a
/// release running beside them.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn run_ok(c: &mut Command) -> Result<(), String> {
    c.output().map_err(|e| e.to_string()).and_then(|o| {
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).to_string())
        }
    })
}

fn loop_mount(fs: &str) -> LoopMount {
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tmp.path().join("img");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mnt");
    let f = std::fs::File::create(&img).expect("img");
    f.set_len(if fs == "btrfs" { 256 << 20 } else { 128 << 20 })
        .expect("size");
    match fs {
        "btrfs" => run_ok(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&img)),
        _ => run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img)),
    }
    .unwrap_or_else(|e| panic!("mkfs.{fs}: {e}"));
    run_ok(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt),
    )
    .unwrap_or_else(|e| panic!("mount -o loop ({fs}): {e}"));
    LoopMount { mnt, _tmp: tmp }
}

/// `cat FILE` in another process, with a deadline (a hung daemon must fail the test, not
/// hang it).
async fn cat(p: &Path) -> std::process::Output {
    let child = tokio::process::Command::new("cat")
        .arg(p)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("cat hung: the daemon did not answer")
        .expect("run cat")
}

async fn engine_at(ns: &Path, store_dir: &Path, unguarded: bool) -> Arc<HsmEngine> {
    let backend = LocalBackend::open(ns).await.expect("backend");
    let mut cfg = small_cfg();
    cfg.root = backend.root().to_path_buf();
    cfg.part_size = 1 << 20;
    cfg.allow_unguarded_release = unguarded;
    let store =
        ArchiveStore::open(&format!("file://{}", store_dir.display()), &cfg.retry).expect("store");
    hsm::engine::ignore_lease_break_signal();
    Arc::new(HsmEngine::new(store, Arc::new(backend), cfg))
}

/// The `lustrekit` binary (in the target directory of this test), which [`build_cli`] builds.
fn cli_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("lustrekit")
}

fn build_cli() {
    let st = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "lustrekit", "--bin", "lustrekit"])
        .status()
        .expect("cargo build");
    assert!(st.success());
}

/// `lustrekit hsm restore-daemon` as a child process, its stderr collected.
struct DaemonChild {
    child: tokio::process::Child,
    log: Arc<Mutex<Vec<String>>>,
    line: Arc<tokio::sync::Notify>,
}

impl DaemonChild {
    /// Starts a daemon and waits until it says it watches. `nofile` limits its descriptors.
    async fn start(store: &str, root: &Path, extra: &[&str], nofile: Option<u64>) -> Self {
        let mut cmd = tokio::process::Command::new(cli_bin());
        cmd.args(["hsm", "--no-progress", "--store", store, "--root"])
            .arg(root)
            .arg("restore-daemon")
            .args(extra)
            .env("LUSTREKIT_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(n) = nofile {
            // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn lustrekit hsm restore-daemon");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let line = Arc::new(tokio::sync::Notify::new());
        {
            let (log, line) = (log.clone(), line.clone());
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    log.lock().expect("log").push(strip_ansi(&l));
                    line.notify_waiters();
                }
                line.notify_waiters();
            });
        }
        let mut d = Self { child, log, line };
        d.wait_for("restore-daemon: watching").await;
        d
    }

    fn has(&self, pat: &str) -> bool {
        self.log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(pat))
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Waits (at most two minutes) until a log line contains `pat`.
    async fn wait_for(&mut self, pat: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let notified = self.line.notified();
            if self.has(pat) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("daemon exited ({st}) before `{pat}`:\n{}", self.log_text());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no `{pat}` from the daemon:\n{}", self.log_text());
            }
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id().expect("pid") as i32)
    }

    /// Sends a signal and waits for the exit.
    async fn signal(mut self, sig: nix::sys::signal::Signal) -> (std::process::ExitStatus, String) {
        nix::sys::signal::kill(self.pid(), sig).expect("kill");
        let st = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .expect("daemon did not exit")
            .expect("wait");
        // Let the log reader drain.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (st, self.log_text())
    }
}

/// A log line without its colour escapes (`ESC [ ... m`).
fn strip_ansi(l: &str) -> String {
    let mut out = String::with_capacity(l.len());
    let mut chars = l.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn fails_with_eio_or_eperm(out: &std::process::Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    !out.status.success()
        && (err.contains("Input/output error") || err.contains("Operation not permitted"))
}

/// Archives and releases files (with an engine that may release unguarded).
async fn released(engine: &HsmEngine, files: &[(PathBuf, Vec<u8>)]) {
    for (p, data) in files {
        write(p, data);
        engine.archive(p).await.expect("archive");
        engine.release(p).await.expect("release");
        assert!(blocks(p) < 64, "{}: not punched", p.display());
    }
}

/// No root needed: on a plain directory nothing watches, so release refuses, and once a file
/// is released anyway (`allow_unguarded_release`) its state names the risk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_without_a_daemon_is_refused_and_state_names_the_risk() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let ns = tmp.path().join("ns");
    std::fs::create_dir_all(&ns).expect("ns");
    let store_dir = tmp.path().join("store");
    let guarded = engine_at(&ns, &store_dir, false).await;
    let f = ns.join("f.bin");
    let data = content(100_000, 3);
    write(&f, &data);
    guarded.archive(&f).await.expect("archive");
    match guarded.release(&f).await {
        Err(HsmError::Refused { why, .. }) => {
            assert!(why.contains("no restore daemon watches"), "{why}");
            assert!(why.contains("--unguarded"), "{why}");
        }
        other => panic!("released with no daemon: {other:?}"),
    }
    assert_eq!(
        std::fs::read(&f).expect("read"),
        data,
        "refused, yet changed"
    );
    let st = guarded.state(&f).await.expect("state");
    assert!(!st.state.flags.released && !st.unguarded, "{}", st.text);

    let unguarded = engine_at(&ns, &store_dir, true).await;
    unguarded.release(&f).await.expect("release --unguarded");
    let st = guarded.state(&f).await.expect("state");
    assert!(st.state.flags.released && st.unguarded, "{}", st.text);
    assert!(st.text.contains(hsm::guard::UNGUARDED_TEXT), "{}", st.text);
    let json = serde_json::to_value(&st).expect("json");
    assert_eq!(json["unguarded"], true);

    // The policy engine releases through the same check: its watermark pass is refused.
    let h = ns.join("h.bin");
    write(&h, &content(200_000, 5));
    guarded.archive(&h).await.expect("archive");
    let alloc = std::fs::metadata(&h).expect("md").len();
    let cfg = hsm::policy::PolicyConfig::parse(&format!(
        "[release]\nhigh_watermark = 90\nlow_watermark = 10\ncapacity = {}\n",
        alloc * 100 / 95
    ))
    .expect("policy");
    let pass = hsm::policy::Policy::new(guarded.clone(), cfg)
        .expect("policy")
        .run_pass()
        .await
        .expect("pass");
    assert!(
        !pass.errors.is_empty()
            && pass
                .errors
                .iter()
                .all(|e| e.error.contains("no restore daemon watches")),
        "{:?}",
        pass.errors
    );
    assert!(!guarded.state(&h).await.expect("state").state.flags.released);

    // The command line: refused (exit 1, the reason in the report), then `--unguarded`.
    build_cli();
    let g = ns.join("g.bin");
    write(&g, &content(50_000, 4));
    let store = format!("file://{}", store_dir.display());
    let cli = |args: &[&str]| {
        Command::new(cli_bin())
            .args([
                "hsm",
                "--json",
                "--no-progress",
                "--store",
                &store,
                "--root",
            ])
            .arg(&ns)
            .args(args)
            .output()
            .expect("run lustrekit hsm")
    };
    let gs = g.display().to_string();
    assert!(cli(&["archive", &gs]).status.success());
    let out = cli(&["release", &gs]);
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("no restore daemon watches"), "{report}");
    assert!(blocks(&g) >= 64, "a refused release punched");
    let out = cli(&["release", "--unguarded", &gs]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["state", &gs]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("state json");
    assert_eq!(v[0]["unguarded"], true, "{v}");
    let help = Command::new(cli_bin())
        .args(["hsm", "release", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--unguarded") && help.contains("zeros"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and a loop device (fanotify pre-content, Linux 6.14+)"]
async fn released_file_is_restored_when_read() {
    let _serial = SERIAL.lock().await;
    let lm = loop_mount("ext4");
    let ns = lm.mnt.join("ns");
    std::fs::create_dir_all(&ns).expect("ns");
    let store_tmp = tempfile::tempdir().expect("tmp");
    let store_dir = store_tmp.path().join("store");
    let engine = engine_at(&ns, &store_dir, true).await;

    let big = ns.join("dir/big.bin");
    let big_data = content(3 << 20 | 123, 7);
    let bad = ns.join("bad.bin");
    released(
        &engine,
        &[
            (big.clone(), big_data.clone()),
            (bad.clone(), content(200_000, 8)),
        ],
    )
    .await;
    let plain = ns.join("plain.txt");
    write(&plain, b"never archived\n");
    // Corrupt every object of bad.bin (same size), wherever the store keeps it.
    let mut corrupted = 0;
    for entry in walk_files(&store_dir) {
        let bytes = std::fs::read(&entry).expect("object");
        if bytes.len() == 200_000 {
            let mut b = bytes;
            b[1000] ^= 0xff;
            std::fs::write(&entry, &b).expect("corrupt");
            corrupted += 1;
        }
    }
    assert!(corrupted >= 1, "no object of bad.bin found");

    let daemon = RestoreDaemon::start(
        engine.clone(),
        DaemonConfig {
            restores: 2,
            ..DaemonConfig::default()
        },
    )
    .expect("daemon");
    assert!(
        hsm::guard::watched(&big),
        "the daemon does not hold its watch lock"
    );

    // A file that needs nothing is answered at once.
    let out = cat(&plain).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"never archived\n");

    // The released file: the reader gets the original bytes.
    let out = cat(&big).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), big_data.len());
    assert!(out.stdout == big_data, "restored bytes differ");
    let st = engine.state(&big).await.expect("state").state;
    assert!(
        !st.flags.released && st.flags.archived && !st.flags.dirty,
        "{st}"
    );
    // Read again (served from disk).
    let out = cat(&big).await;
    assert!(
        out.stdout == big_data,
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A corrupted archive: the read fails, the stub stays released.
    let out = cat(&bad).await;
    assert!(fails_with_eio_or_eperm(&out), "{out:?}");
    let st = engine.state(&bad).await.expect("state");
    assert!(st.state.flags.released && !st.unguarded, "{}", st.text);
    assert!(blocks(&bad) < 64, "corrupt bytes left in the stub");

    let stats = daemon.stats();
    use std::sync::atomic::Ordering::Relaxed;
    let all = serde_json::to_string(stats).expect("stats");
    assert_eq!(stats.restored.load(Relaxed), 1, "{all}");
    assert!(stats.denied.load(Relaxed) >= 1, "{all}");
    assert_eq!(stats.read_errors.load(Relaxed), 0, "{all}");
    daemon.stop().await;
    assert!(
        !hsm::guard::watched(&big),
        "a stopped daemon still holds its lock"
    );
    let st = engine.state(&bad).await.expect("state");
    assert!(st.unguarded, "{}", st.text);
}

/// Fail-fast reads (`hsmReadMode: fail-fast`): the first read of a released file fails at
/// once with EAGAIN and starts its restore; a read after it is done gets the exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and a loop device (fanotify pre-content, Linux 6.14+)"]
async fn a_fail_fast_read_gets_eagain_then_the_bytes() {
    let _serial = SERIAL.lock().await;
    let lm = loop_mount("btrfs");
    let ns = lm.mnt.join("ns");
    std::fs::create_dir_all(&ns).expect("ns");
    let store_tmp = tempfile::tempdir().expect("tmp");
    let engine = engine_at(&ns, &store_tmp.path().join("store"), true).await;
    let f = ns.join("data.bin");
    let data = content(2 << 20, 11);
    released(&engine, &[(f.clone(), data.clone())]).await;
    let daemon = RestoreDaemon::start(
        engine.clone(),
        DaemonConfig {
            fail_fast: true,
            ..DaemonConfig::default()
        },
    )
    .expect("daemon");
    let first = std::fs::read(&f).expect_err("a released file read at once");
    assert_eq!(first.raw_os_error(), Some(libc::EAGAIN), "{first}");
    // The restore runs behind the failed read; the file ends present with its bytes.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let st = engine.state(&f).await.expect("state").state;
        if !st.flags.released {
            assert!(st.flags.archived && !st.flags.dirty, "{st}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not restored: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        std::fs::read(&f).expect("read") == data,
        "restored bytes differ"
    );
    daemon.stop().await;
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

/// Release goes on while a daemon watches, and the released file reads back through the
/// daemon. (A release that held its write lease across the punch used to stall for the
/// kernel's lease-break-time, 45 s, measured at 46.8 s here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and a loop device (fanotify pre-content, Linux 6.14+)"]
async fn release_goes_on_while_a_daemon_watches() {
    let _serial = SERIAL.lock().await;
    build_cli();
    let lm = loop_mount("ext4");
    let ns = lm.mnt.join("ns");
    std::fs::create_dir_all(&ns).expect("ns");
    let store_tmp = tempfile::tempdir().expect("tmp");
    let store_dir = store_tmp.path().join("store");
    let store = format!("file://{}", store_dir.display());
    let engine = engine_at(&ns, &store_dir, false).await;
    let f = ns.join("f.bin");
    let data = content(1 << 20, 11);
    write(&f, &data);
    engine.archive(&f).await.expect("archive");
    assert!(matches!(
        engine.release(&f).await,
        Err(HsmError::Refused { .. })
    ));

    let d = DaemonChild::start(&store, &ns, &[], None).await;
    let started = std::time::Instant::now();
    // A hang guard, not a timing assertion: the lease-break stall this test once showed
    // (45 s and more) cannot finish within it, a working release is far inside it.
    tokio::time::timeout(Duration::from_secs(30), engine.release(&f))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "release stalled (a lease broken by the daemon?):\n{}",
                d.log_text()
            )
        })
        .expect("release while a daemon watches");
    eprintln!("release with a daemon took {:?}", started.elapsed());
    let st = engine.state(&f).await.expect("state");
    assert!(st.state.flags.released && !st.unguarded, "{}", st.text);
    let out = cat(&f).await;
    assert!(
        out.status.success() && out.stdout == data,
        "{}",
        d.log_text()
    );
    let (st, log) = d.signal(nix::sys::signal::Signal::SIGTERM).await;
    assert!(st.success(), "{st}\n{log}");
}

/// A rolling restart: daemon A watches; B starts; A stops; a released file read now comes
/// back whole (B restores it). Then B stops, and `state` names the risk. On btrfs, with the
/// namespace in a subvolume (its own `st_dev`): the watch lock names the filesystem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and a loop device (fanotify pre-content, Linux 6.14+)"]
async fn a_rolling_restart_leaves_no_window() {
    let _serial = SERIAL.lock().await;
    build_cli();
    let lm = loop_mount("btrfs");
    let ns = lm.mnt.join("ns");
    run_ok(
        Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(&ns),
    )
    .expect("btrfs subvolume create");
    let store_tmp = tempfile::tempdir().expect("tmp");
    let store_dir = store_tmp.path().join("store");
    let store = format!("file://{}", store_dir.display());
    let engine = engine_at(&ns, &store_dir, true).await;
    let files: Vec<(PathBuf, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                ns.join(format!("d/f{i}.bin")),
                content(700_000 + i, 20 + i as u64),
            )
        })
        .collect();
    released(&engine, &files).await;
    for (p, _) in &files {
        assert!(engine.state(p).await.expect("state").unguarded);
    }

    let a = DaemonChild::start(&store, &ns, &[], None).await;
    assert!(hsm::guard::watched(&files[0].0));
    // Read one through A.
    let out = cat(&files[0].0).await;
    assert!(out.stdout == files[0].1, "through A:\n{}", a.log_text());

    let b = DaemonChild::start(&store, &ns, &[], None).await;
    let (st, log) = a.signal(nix::sys::signal::Signal::SIGTERM).await;
    assert!(st.success(), "A: {st}\n{log}");
    assert!(log.contains("no longer watches"), "{log}");
    assert!(
        hsm::guard::watched(&files[1].0),
        "B's lock is gone with A's"
    );
    let st = engine.state(&files[1].0).await.expect("state");
    assert!(st.state.flags.released && !st.unguarded, "{}", st.text);
    let out = cat(&files[1].0).await;
    assert!(out.status.success(), "{}", b.log_text());
    assert!(out.stdout == files[1].1, "through B after A stopped");

    let (st, log) = b.signal(nix::sys::signal::Signal::SIGTERM).await;
    assert!(st.success(), "B: {st}\n{log}");
    assert!(!hsm::guard::watched(&files[2].0));
    let st = engine.state(&files[2].0).await.expect("state");
    assert!(st.unguarded, "{}", st.text);
    assert!(st.text.contains("reads return zeros"), "{}", st.text);
}

/// A store that accepts connections and never answers.
fn silent_store() -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().take(64) {
            match c {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
        }
    });
    (
        format!(
            "s3://silent/x?endpoint=http://127.0.0.1:{port}&region=r&access_key_id=a&secret_access_key=b&virtual_hosted_style_request=false"
        ),
        h,
    )
}

/// Daemon A hangs on its store, B works. A read of a released file: when the kernel asks A
/// first, A holds it (restoring forever) and we SIGKILL A: the kernel lets A's hold go, B
/// is asked next and restores. When B is asked first, B restores. Either way: the bytes.
/// The kernel orders groups by their address, so the pair is started again (in turns) until
/// A was asked first once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and a loop device (fanotify pre-content, Linux 6.14+)"]
async fn a_second_daemon_covers_a_sigkill() {
    let _serial = SERIAL.lock().await;
    build_cli();
    let lm = loop_mount("ext4");
    let ns = lm.mnt.join("ns");
    std::fs::create_dir_all(&ns).expect("ns");
    let store_tmp = tempfile::tempdir().expect("tmp");
    let store_dir = store_tmp.path().join("store");
    let store = format!("file://{}", store_dir.display());
    let engine = engine_at(&ns, &store_dir, true).await;
    let (silent, _keep) = silent_store();
    let mut killed_holding = false;
    for attempt in 0..12u64 {
        let f = ns.join(format!("f{attempt}.bin"));
        let data = content(900_000, 31 + attempt);
        released(&engine, &[(f.clone(), data.clone())]).await;
        let hang = ["--restore-timeout", "1h"];
        let (mut a, b) = if attempt % 2 == 0 {
            let a = DaemonChild::start(&silent, &ns, &hang, None).await;
            (a, DaemonChild::start(&store, &ns, &[], None).await)
        } else {
            let b = DaemonChild::start(&store, &ns, &[], None).await;
            (DaemonChild::start(&silent, &ns, &hang, None).await, b)
        };
        let mut reader = {
            let f = f.clone();
            tokio::spawn(async move { cat(&f).await })
        };
        let done = tokio::select! {
            _ = a.wait_for("restore on access") => None,
            out = &mut reader => Some(out.expect("reader")),
        };
        let out = match done {
            Some(out) => {
                let _ = a.signal(nix::sys::signal::Signal::SIGTERM).await;
                out
            }
            None => {
                let (st, _) = a.signal(nix::sys::signal::Signal::SIGKILL).await;
                assert!(!st.success());
                killed_holding = true;
                reader.await.expect("reader")
            }
        };
        assert!(out.status.success(), "{}", b.log_text());
        assert!(out.stdout == data, "zeros or other bytes after a SIGKILL");
        let _ = b.signal(nix::sys::signal::Signal::SIGTERM).await;
        if killed_holding {
            eprintln!("attempt {attempt}: A held the read and was killed; B restored");
            break;
        }
        eprintln!("attempt {attempt}: B was asked first");
    }
    assert!(
        killed_holding,
        "the kernel never asked the hanging daemon first"
    );
}

/// A restore that hangs is cut off at the restore timeout: the read fails with EIO, the
/// file stays released, and the daemon answers other reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and a loop device (fanotify pre-content, Linux 6.14+)"]
async fn a_hung_restore_times_out_with_eio() {
    let _serial = SERIAL.lock().await;
    build_cli();
    let lm = loop_mount("ext4");
    let ns = lm.mnt.join("ns");
    std::fs::create_dir_all(&ns).expect("ns");
    let store_tmp = tempfile::tempdir().expect("tmp");
    let store_dir = store_tmp.path().join("store");
    let engine = engine_at(&ns, &store_dir, true).await;
    let f = ns.join("f.bin");
    released(&engine, &[(f.clone(), content(300_000, 41))]).await;
    let plain = ns.join("plain.txt");
    write(&plain, b"plain\n");

    let (silent, _keep) = silent_store();
    let mut d = DaemonChild::start(&silent, &ns, &["--restore-timeout", "2s"], None).await;
    let out = cat(&f).await;
    assert!(fails_with_eio_or_eperm(&out), "{out:?}");
    d.wait_for("restore on access timed out").await;
    let st = engine.state(&f).await.expect("state");
    assert!(st.state.flags.released && !st.unguarded, "{}", st.text);
    let out = cat(&plain).await;
    assert!(out.status.success() && out.stdout == b"plain\n");
    let (st, log) = d.signal(nix::sys::signal::Signal::SIGTERM).await;
    assert!(st.success(), "{st}\n{log}");
}

/// 2,000 concurrent readers of 50 released files (40 each) against a daemon whose
/// descriptor limit is 256. Every reader gets the file's bytes; the daemon never fails a
/// `read` of its group (no descriptor ran out: it stopped reading instead); afterwards the
/// filesystem reads fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and a loop device (fanotify pre-content, Linux 6.14+)"]
async fn two_thousand_readers_against_256_descriptors() {
    let _serial = SERIAL.lock().await;
    build_cli();
    // This process opens 2,000 files at once.
    // SAFETY: plain getrlimit/setrlimit on valid structs.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
    let lm = loop_mount("ext4");
    let ns = lm.mnt.join("ns");
    std::fs::create_dir_all(&ns).expect("ns");
    let store_tmp = tempfile::tempdir().expect("tmp");
    let store_dir = store_tmp.path().join("store");
    let store = format!("file://{}", store_dir.display());
    let engine = engine_at(&ns, &store_dir, true).await;
    let files: Vec<(PathBuf, Vec<u8>)> = (0..51)
        .map(|i| {
            (
                ns.join(format!("d{}/f{i}.bin", i % 5)),
                content(128 << 10 | i, 100 + i as u64),
            )
        })
        .collect();
    released(&engine, &files).await;
    let plain = ns.join("plain.bin");
    let plain_data = content(300_000, 99);
    write(&plain, &plain_data);

    let d = DaemonChild::start(&store, &ns, &[], Some(256)).await;
    let files = Arc::new(files);
    let barrier = Arc::new(std::sync::Barrier::new(2000));
    let mut readers = Vec::new();
    for r in 0..2000usize {
        let (files, barrier) = (files.clone(), barrier.clone());
        readers.push(
            std::thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || {
                    let (p, want) = &files[r % 50];
                    barrier.wait();
                    match std::fs::read(p) {
                        Ok(got) if &got == want => Ok(()),
                        Ok(got) if got.iter().all(|b| *b == 0) => {
                            Err(format!("{}: zeros", p.display()))
                        }
                        Ok(_) => Err(format!("{}: other bytes", p.display())),
                        Err(e) => Err(format!("{}: {e}", p.display())),
                    }
                })
                .expect("thread"),
        );
    }
    let joined = tokio::task::spawn_blocking(move || {
        readers
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("reader panicked".into())))
            .collect::<Vec<_>>()
    });
    let results = tokio::time::timeout(Duration::from_secs(600), joined)
        .await
        .unwrap_or_else(|_| panic!("readers hung:\n{}", d.log_text()))
        .expect("join");
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed
            .iter()
            .all(|e| !e.contains("zeros") && !e.contains("other bytes")),
        "wrong bytes read: {failed:?}"
    );
    assert!(
        failed.is_empty(),
        "{} readers failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(
        !d.has("fanotify read failed"),
        "the daemon ran out of something:\n{}",
        d.log_text()
    );
    // The filesystem stays readable: a present file, and a released file never read yet.
    let out = cat(&plain).await;
    assert!(out.status.success() && out.stdout == plain_data);
    let (p, want) = &files[50];
    let out = cat(p).await;
    assert!(
        out.status.success() && &out.stdout == want,
        "{}",
        d.log_text()
    );
    let (st, log) = d.signal(nix::sys::signal::Signal::SIGTERM).await;
    assert!(st.success(), "{st}\n{log}");
    let restores = log.matches("restore on access").count();
    let field = |name: &str| -> u64 {
        let at = log
            .rfind(&format!("{name}="))
            .unwrap_or_else(|| panic!("no {name} in the stop line:\n{log}"));
        log[at + name.len() + 1..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: not a number"))
    };
    let (peak, cap) = (field("held_peak"), field("held_cap"));
    assert!(peak <= cap && cap < 256, "held {peak} of {cap}");
    assert_eq!(field("read_errors"), 0);
    eprintln!(
        "{restores} restores for 51 files and 2,000 readers; {} events; at most {peak} held (cap {cap})",
        field("events")
    );
}

/// A daemon that dies (as on a broken fanotify descriptor) while it holds a read of a file
/// it is restoring: the read fails with EIO (never zeros), the watch lock is gone, and
/// `run_until` returns the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and a loop device (fanotify pre-content, Linux 6.14+)"]
async fn a_dying_daemon_denies_what_it_holds_and_stops_watching() {
    let _serial = SERIAL.lock().await;
    let lm = loop_mount("ext4");
    let ns = lm.mnt.join("ns");
    std::fs::create_dir_all(&ns).expect("ns");
    let store_tmp = tempfile::tempdir().expect("tmp");
    let engine = engine_at(&ns, &store_tmp.path().join("store"), true).await;
    let f = ns.join("f.bin");
    released(&engine, &[(f.clone(), content(400_000, 51))]).await;

    // The daemon's engine fetches from a store that never answers.
    let (silent, _keep) = silent_store();
    let backend = LocalBackend::open(&ns).await.expect("backend");
    let mut cfg = small_cfg();
    cfg.root = backend.root().to_path_buf();
    hsm::engine::ignore_lease_break_signal();
    let hanging = Arc::new(HsmEngine::new(
        ArchiveStore::open(&silent, &cfg.retry).expect("store"),
        Arc::new(backend),
        cfg,
    ));
    let daemon = RestoreDaemon::start(
        hanging,
        DaemonConfig {
            restore_timeout: Duration::from_secs(3600),
            ..DaemonConfig::default()
        },
    )
    .expect("daemon");
    assert!(hsm::guard::watched(&f));
    let reader = {
        let f = f.clone();
        tokio::spawn(async move { cat(&f).await })
    };
    // Wait until the daemon holds the read.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while daemon
        .stats()
        .events
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read never reached the daemon"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.die_now("injected by the test");
    let out = reader.await.expect("reader");
    assert!(fails_with_eio_or_eperm(&out), "{out:?}");
    assert!(
        !hsm::guard::watched(&f),
        "a dead daemon still holds its watch lock"
    );
    match daemon.run_until(std::future::pending()).await {
        Err(e) => assert!(e.to_string().contains("injected by the test"), "{e}"),
        Ok(()) => panic!("a dead daemon ran on"),
    }
    let st = engine.state(&f).await.expect("state");
    assert!(st.state.flags.released && st.unguarded, "{}", st.text);
}

#[test]
fn engine_config_defaults_to_guarded_release() {
    assert!(!EngineConfig::default().allow_unguarded_release);
}

/// A release paused between its intent and its punch (see [`paused_release`]).
struct PausedRelease {
    task: tokio::task::JoinHandle<Result<hsm::OpReport, HsmError>>,
    /// Told when the pause begins.
    paused: std::sync::mpsc::Receiver<()>,
    /// Ends the pause (it ends by itself after a minute).
    go: std::sync::mpsc::Sender<()>,
    _hook: backend::local::hsm_test_hooks::HookGuard,
}

/// A release of `f`, paused by a test hook between its intent (record written, lease
/// dropped) and its punch; `then` runs when the pause ends.
fn paused_release(
    engine: &Arc<HsmEngine>,
    f: &Path,
    then: impl Fn() + Send + Sync + 'static,
) -> PausedRelease {
    let (paused_tx, paused_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (paused_tx, go_rx) = (Mutex::new(paused_tx), Mutex::new(go_rx));
    let hook = backend::local::hsm_test_hooks::pause_before_punch(f, move || {
        let _ = paused_tx.lock().expect("tx").send(());
        let _ = go_rx
            .lock()
            .expect("rx")
            .recv_timeout(Duration::from_secs(60));
        then();
    })
    .expect("hook");
    let task = {
        let (engine, f) = (engine.clone(), f.to_path_buf());
        tokio::spawn(async move { engine.release(&f).await })
    };
    PausedRelease {
        task,
        paused: paused_rx,
        go: go_tx,
        _hook: hook,
    }
}

async fn wait_paused(rx: std::sync::mpsc::Receiver<()>) {
    tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
        .await
        .expect("join")
        .expect("the release never reached its pause");
}

/// Waits (at most a minute) until the daemon has held `n` accesses for a release.
async fn wait_held(daemon: &RestoreDaemon, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while daemon
        .stats()
        .held_for_release
        .load(std::sync::atomic::Ordering::Relaxed)
        < n
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the access mid-release was never held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn join_thread<T: Send + 'static>(h: std::thread::JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || h.join()),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} hung"))
    .expect("join")
    .unwrap_or_else(|_| panic!("{what} panicked"))
}

/// While a daemon watches, a release paused between its intent and its punch:
/// - a reader of the file is held until the release is done, then gets the exact bytes
///   (restored);
/// - a writer is held likewise, and its bytes end up in the restored file, never punched
///   away, and the file is not released;
/// - a release that dies in its pause (its descriptor, and so its lock, gone with the
///   marker still written, as after a SIGKILL) leaves a file the daemon treats as released:
///   the next read restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and a loop device (fanotify pre-content, Linux 6.14+)"]
async fn accesses_mid_release_are_held_until_it_is_done() {
    let _serial = SERIAL.lock().await;
    let lm = loop_mount("ext4");
    let ns = lm.mnt.join("ns");
    std::fs::create_dir_all(&ns).expect("ns");
    let store_tmp = tempfile::tempdir().expect("tmp");
    let engine = engine_at(&ns, &store_tmp.path().join("store"), false).await;
    let files: Vec<(PathBuf, Vec<u8>)> = (0..3)
        .map(|i| (ns.join(format!("f{i}.bin")), content(1 << 20 | 77, 60 + i)))
        .collect();
    for (p, data) in &files {
        write(p, data);
        engine.archive(p).await.expect("archive");
    }
    let daemon = RestoreDaemon::start(engine.clone(), DaemonConfig::default()).expect("daemon");
    use std::sync::atomic::Ordering::Relaxed;

    // 1. A reader mid-release.
    let (f, data) = &files[0];
    let PausedRelease {
        task,
        paused,
        go,
        _hook,
    } = paused_release(&engine, f, || {});
    wait_paused(paused).await;
    let reader = {
        let f = f.clone();
        std::thread::spawn(move || std::fs::read(&f))
    };
    wait_held(&daemon, 1).await;
    assert!(!reader.is_finished(), "a reader got through mid-release");
    go.send(()).expect("go");
    let r = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("release hung")
        .expect("join");
    r.expect("release");
    let got = join_thread(reader, "reader").await.expect("read");
    assert_eq!(got.len(), data.len());
    assert!(&got == data, "the reader mid-release got other bytes");
    let st = engine.state(f).await.expect("state").state;
    assert!(!st.flags.released && !st.flags.dirty, "{st}");

    // 2. A writer mid-release.
    let (f, data) = &files[1];
    let held = daemon.stats().held_for_release.load(Relaxed);
    let PausedRelease {
        task,
        paused,
        go,
        _hook,
    } = paused_release(&engine, f, || {});
    wait_paused(paused).await;
    let patch = b"WRITTEN MID-RELEASE";
    let writer = {
        let f = f.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new().write(true).open(&f)?;
            file.write_all_at(patch, 4096)
        })
    };
    wait_held(&daemon, held + 1).await;
    assert!(!writer.is_finished(), "a writer got through mid-release");
    go.send(()).expect("go");
    let r = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("release hung")
        .expect("join");
    match &r {
        Ok(rep) => eprintln!("release with a writer held: {:?}", rep.outcome),
        Err(e) => eprintln!("release with a writer held: refused: {e}"),
    }
    join_thread(writer, "writer").await.expect("write");
    let mut want = data.clone();
    want[4096..4096 + patch.len()].copy_from_slice(patch);
    let out = cat(f).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout == want, "the writer's bytes are not in the file");
    let st = engine.state(f).await.expect("state").state;
    assert!(!st.flags.released, "{st}");
    assert!(st.flags.dirty, "a write after archiving, not dirty: {st}");
    assert!(blocks(f) >= 2048, "the written file has holes");

    // 3. A release that dies in its pause (after its intent, before its punch).
    let (f, data) = &files[2];
    let restored_before = daemon.stats().restored.load(Relaxed);
    let PausedRelease {
        task,
        paused,
        go,
        _hook: hook,
    } = paused_release(&engine, f, || {
        panic!("the releaser dies here (injected by the test)")
    });
    wait_paused(paused).await;
    go.send(()).expect("go");
    let r = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("release hung")
        .expect("join");
    assert!(r.is_err(), "a release that died reported success");
    drop(hook);
    let st = engine.state(f).await.expect("state").state;
    assert!(st.flags.released, "the intent is written first: {st}");
    let out = cat(f).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        &out.stdout == data,
        "a release that died midway reads wrong"
    );
    assert!(daemon.stats().restored.load(Relaxed) > restored_before);
    let st = engine.state(f).await.expect("state").state;
    assert!(!st.flags.released && !st.flags.dirty, "{st}");
    // The file releases again, at once.
    tokio::time::timeout(Duration::from_secs(30), engine.release(f))
        .await
        .expect("release hung")
        .expect("release again");
    let s = serde_json::to_string(daemon.stats()).expect("stats");
    eprintln!("daemon: {s}");
    assert!(daemon.stats().releaser_allowed.load(Relaxed) >= 3, "{s}");
    daemon.stop().await;
}
