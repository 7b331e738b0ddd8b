//! [`SshRunner`] against a real `sshd` on 127.0.0.1, started by `scripts/start-sshd.sh`
//! (by `make test`, which exports `LUSTREKIT_SSHD_*`, or here if those are not set).
//!
//! The tests are `#[ignore]`d: they need an sshd (root, or openssh-server installed). Run
//! them with `--include-ignored` (CI does, as root); there, an sshd that cannot be had is a
//! failure with the reason, never a pass.

mod lustre_common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use backend::BackendError;
use backend::lustre::{
    CommandRunner, HostKeyChecking, LocalRunner, LustreBackend, SshHostConfig, SshRunner,
};

#[derive(Debug, Clone)]
struct Sshd {
    port: u16,
    user: String,
    key: PathBuf,
    bad_key: PathBuf,
    known_hosts: PathBuf,
}

fn from_env() -> Option<Sshd> {
    let var = |name: &str| std::env::var(name).ok();
    Some(Sshd {
        port: var("LUSTREKIT_SSHD_PORT")?.parse().ok()?,
        user: var("LUSTREKIT_SSHD_USER")?,
        key: var("LUSTREKIT_SSHD_KEY")?.into(),
        bad_key: var("LUSTREKIT_SSHD_BAD_KEY")?.into(),
        known_hosts: var("LUSTREKIT_SSHD_KNOWN_HOSTS")?.into(),
    })
}

/// Runs the start script (idempotent) and reads its `export VAR=value` lines.
fn start() -> Result<Sshd, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/start-sshd.sh");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sshd");
    let out = std::process::Command::new(&script)
        .arg(&dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    match out.status.code() {
        Some(0) => {}
        Some(3) => return Err(format!("sshd unavailable: {stderr}")),
        _ => panic!("{} failed ({}): {stderr}", script.display(), out.status),
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let get = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(str::to_owned)
            .ok_or_else(|| format!("start-sshd.sh printed no {name}"))
    };
    Ok(Sshd {
        port: get("LUSTREKIT_SSHD_PORT")?
            .parse()
            .map_err(|e| format!("bad port: {e}"))?,
        user: get("LUSTREKIT_SSHD_USER")?,
        key: get("LUSTREKIT_SSHD_KEY")?.into(),
        bad_key: get("LUSTREKIT_SSHD_BAD_KEY")?.into(),
        known_hosts: get("LUSTREKIT_SSHD_KNOWN_HOSTS")?.into(),
    })
}

fn sshd() -> Sshd {
    static SSHD: OnceLock<Result<Sshd, String>> = OnceLock::new();
    match SSHD.get_or_init(|| from_env().map_or_else(start, Ok)) {
        Ok(sshd) => sshd.clone(),
        Err(reason) => panic!("these tests need an sshd: {reason}"),
    }
}

fn host(sshd: &Sshd, key: &Path, port: u16) -> SshHostConfig {
    SshHostConfig {
        host: "127.0.0.1".into(),
        user: sshd.user.clone(),
        key: key.to_path_buf(),
        port,
        connect_timeout_secs: 2,
        strict_host_key_checking: HostKeyChecking::Yes,
        known_hosts_file: Some(sshd.known_hosts.clone()),
        multiplex: true,
    }
}

fn runner(sshd: &Sshd) -> SshRunner {
    let local = LocalRunner::new(Duration::from_secs(20), 4);
    SshRunner::new(
        "ssh",
        host(sshd, &sshd.key, sshd.port),
        Duration::from_secs(20),
        local.permits(),
    )
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

#[tokio::test]
#[ignore = "needs an sshd (scripts/start-sshd.sh: root or openssh-server)"]
async fn command_output_and_exit_code_come_back() {
    let sshd = sshd();
    let r = runner(&sshd);
    let out = r
        .run(&argv(&["sh", "-c", "echo out; echo err >&2; exit 7"]), None)
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(7));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr_text(), "err");

    // stdin goes through.
    let out = r
        .run(&argv(&["cat"]), Some(b"line 1\n\x00\xffend"))
        .await
        .unwrap();
    assert!(out.success());
    assert_eq!(out.stdout, b"line 1\n\x00\xffend");
}

#[tokio::test]
#[ignore = "needs an sshd (scripts/start-sshd.sh: root or openssh-server)"]
async fn arguments_survive_quoting() {
    let sshd = sshd();
    let words = [
        "plain",
        "two words",
        "it's",
        "\"double\"",
        "$HOME",
        "$(touch /tmp/lustrekit-pwned)",
        "`id`",
        "a;b&&c|d",
        "*",
        "~",
        "back\\slash",
        "",
        "  leading and trailing  ",
        "new\nline",
        "'''",
        "-n",
        "--",
        "ünïcode",
    ];
    let mut cmd = argv(&["printf", "%s\\0"]);
    cmd.extend(words.iter().map(|w| (*w).to_owned()));
    let out = runner(&sshd).run(&cmd, None).await.unwrap();
    assert!(out.success(), "{}", out.stderr_text());
    let got: Vec<String> = out
        .stdout
        .split(|&b| b == 0)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let mut want: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
    want.push(String::new()); // after the last NUL
    assert_eq!(got, want);
    assert!(!std::path::Path::new("/tmp/lustrekit-pwned").exists());
}

#[tokio::test]
#[ignore = "needs an sshd (scripts/start-sshd.sh: root or openssh-server)"]
async fn a_failing_remote_command_surfaces_its_stderr() {
    let sshd = sshd();
    let cmd = argv(&["ls", "/nonexistent/lustrekit"]);
    let out = runner(&sshd).run(&cmd, None).await.unwrap();
    let err = out.check(&cmd).unwrap_err();
    match err {
        BackendError::Command {
            command,
            status,
            stderr,
        } => {
            assert_eq!(command, "ls /nonexistent/lustrekit");
            assert_eq!(status, "exit status 2");
            assert!(stderr.contains("No such file or directory"), "{stderr}");
        }
        other => panic!("expected Command, got {other}"),
    }
    // A remote command exiting 255 is the command's failure, not ssh's.
    let out = runner(&sshd)
        .run(
            &argv(&["sh", "-c", "echo lctl says no >&2; exit 255"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(255));
    assert_eq!(out.stderr_text(), "lctl says no");
}

#[tokio::test]
#[ignore = "needs an sshd (scripts/start-sshd.sh: root or openssh-server)"]
async fn an_unauthorized_key_is_an_ssh_error() {
    let sshd = sshd();
    let local = LocalRunner::new(Duration::from_secs(20), 1);
    let r = SshRunner::new(
        "ssh",
        host(&sshd, &sshd.bad_key, sshd.port),
        Duration::from_secs(20),
        local.permits(),
    );
    let err = r.run(&argv(&["true"]), None).await.unwrap_err();
    match err {
        BackendError::Ssh { host, message } => {
            assert_eq!(host, format!("{}@127.0.0.1:{}", sshd.user, sshd.port));
            assert!(message.contains("Permission denied"), "{message}");
            assert!(message.contains("authentication refused"), "{message}");
        }
        other => panic!("expected Ssh, got {other}"),
    }
}

#[tokio::test]
#[ignore = "needs an sshd (scripts/start-sshd.sh: root or openssh-server)"]
async fn an_unknown_host_key_is_an_ssh_error() {
    let sshd = sshd();
    let empty = tempfile::NamedTempFile::new().unwrap();
    let mut h = host(&sshd, &sshd.key, sshd.port);
    h.known_hosts_file = Some(empty.path().to_path_buf());
    let local = LocalRunner::new(Duration::from_secs(20), 1);
    let r = SshRunner::new("ssh", h, Duration::from_secs(20), local.permits());
    let err = r.run(&argv(&["true"]), None).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Ssh { ref message, .. } if message.contains("Host key verification failed")),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs an sshd (scripts/start-sshd.sh: root or openssh-server)"]
async fn a_server_that_never_speaks_is_a_timeout() {
    let sshd = sshd();
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let local = LocalRunner::new(Duration::from_secs(20), 1);
    let r = SshRunner::new(
        "ssh",
        host(&sshd, &sshd.key, port),
        Duration::from_secs(5),
        local.permits(),
    );
    let started = Instant::now();
    let err = r.run(&argv(&["true"]), None).await.unwrap_err();
    assert!(matches!(err, BackendError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    silent.abort();
}

#[tokio::test]
#[ignore = "needs an sshd (scripts/start-sshd.sh: root or openssh-server)"]
async fn a_remote_command_that_hangs_is_a_timeout() {
    let sshd = sshd();
    let r = runner(&sshd);
    let started = Instant::now();
    let err = r
        .run_with_timeout(&argv(&["sleep", "30"]), None, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Timeout { after, .. } if after == Duration::from_secs(1)),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
#[ignore = "needs an sshd (scripts/start-sshd.sh: root or openssh-server)"]
async fn concurrent_commands_share_the_budget() {
    let sshd = sshd();
    let r = Arc::new(runner(&sshd));
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { r.run(&argv(&["echo", &i.to_string()]), None).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let out = task.await.unwrap().unwrap();
        assert_eq!(out.stdout_text(), format!("{i}\n"));
    }
}

#[tokio::test]
#[ignore = "needs an sshd (scripts/start-sshd.sh: root or openssh-server)"]
async fn the_backend_runs_its_directory_commands_over_ssh() {
    let sshd = sshd();
    let s = lustre_common::scratch();
    let mut config = lustre_common::config(&s);
    config.mds_host = Some(host(&sshd, &sshd.key, sshd.port));
    let b = LustreBackend::new(config).unwrap();
    lustre_common::exercise_dirs(&b, &s.root).await;
}
