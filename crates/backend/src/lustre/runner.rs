//! Running commands: the [`CommandRunner`] trait, the local implementation, and the helpers
//! every implementation shares (shell quoting, turning a failed exit into a typed error).
//!
//! A runner only *runs*: a command that exits non-zero is still `Ok(CommandOutput)`, because
//! some callers must read Lustre's stderr to decide (an `lctl nodemap_add` of a map that
//! already exists is success). [`CommandOutput::check`] turns a failure into
//! [`BackendError::Command`] carrying that stderr. Errors from the runner itself are the
//! command not starting, a timeout ([`BackendError::Timeout`]) and, over SSH, the connection
//! failing ([`BackendError::Ssh`]).

use std::fmt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::{BackendError, Result};

/// What a finished command left behind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    /// The exit code; `None` when the process was killed by a signal.
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// An output with exit code `code` (used by the fake runner and tests).
    pub fn new(exit_code: i32, stdout: impl Into<Vec<u8>>, stderr: impl Into<Vec<u8>>) -> Self {
        Self {
            exit_code: Some(exit_code),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Stdout as text (lossy: Lustre prints raw path bytes).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text, trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }

    /// `exit status 1`, or `killed by a signal`.
    pub fn status_text(&self) -> String {
        match self.exit_code {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_owned(),
        }
    }

    /// Ok when the command exited 0; otherwise [`BackendError::Command`] with its stderr.
    pub fn check(self, argv: &[String]) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            Err(self.error(argv))
        }
    }

    /// The [`BackendError::Command`] describing this (failed) output.
    pub fn error(&self, argv: &[String]) -> BackendError {
        let mut stderr = self.stderr_text();
        if stderr.is_empty() {
            // Some tools (`lctl ping` and friends) print their errors on stdout.
            stderr = String::from_utf8_lossy(&self.stdout).trim().to_owned();
        }
        BackendError::Command {
            command: display_argv(argv),
            status: self.status_text(),
            stderr,
        }
    }
}

/// Runs an argv somewhere: on this host, on a server over SSH, or in a test script.
#[async_trait]
pub trait CommandRunner: Send + Sync + fmt::Debug + 'static {
    /// Where commands run, for logs and errors (`local`, `root@mds1:22`, `fake`).
    fn describe(&self) -> String;

    /// The timeout [`CommandRunner::run`] applies.
    fn default_timeout(&self) -> Duration;

    /// Runs `argv` (program first, never through a shell), feeding `stdin` if given, and
    /// kills it after `timeout`. A non-zero exit is `Ok`: see [`CommandOutput::check`].
    async fn run_with_timeout(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput>;

    /// [`CommandRunner::run_with_timeout`] with the runner's default timeout.
    async fn run(&self, argv: &[String], stdin: Option<&[u8]>) -> Result<CommandOutput> {
        self.run_with_timeout(argv, stdin, self.default_timeout())
            .await
    }
}

/// Quotes one word for a POSIX shell: words made only of safe characters stay as they are,
/// everything else goes in single quotes, with `'` written as `'\''`. The empty word is `''`.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The argv as one shell-quoted line: what SSH sends, and how errors show a command.
pub fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs commands on this host with `tokio::process`: never through a shell, with `LC_ALL=C`
/// (so the error texts we match are the English ones), at most `max_concurrent` at a time,
/// and killed (with their whole process group) on timeout.
#[derive(Debug, Clone)]
pub struct LocalRunner {
    timeout: Duration,
    permits: Arc<Semaphore>,
}

impl LocalRunner {
    pub fn new(timeout: Duration, max_concurrent: usize) -> Self {
        Self {
            timeout,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    /// A runner that shares the concurrency budget of `self` (the SSH runners use it, since
    /// every SSH command is a local `ssh` process).
    pub fn permits(&self) -> Arc<Semaphore> {
        self.permits.clone()
    }
}

#[async_trait]
impl CommandRunner for LocalRunner {
    fn describe(&self) -> String {
        "local".to_owned()
    }

    fn default_timeout(&self) -> Duration {
        self.timeout
    }

    async fn run_with_timeout(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput> {
        run_process(&self.permits, argv, stdin, timeout).await
    }
}

/// Spawns `argv` locally and collects its output, bounded by `permits` and `timeout`.
pub(crate) async fn run_process(
    permits: &Semaphore,
    argv: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<CommandOutput> {
    let Some((program, args)) = argv.split_first() else {
        return Err(BackendError::InvalidState("empty command line".to_owned()));
    };
    let command_line = display_argv(argv);
    let _permit = permits
        .acquire()
        .await
        .map_err(|_| BackendError::InvalidState("command runner is shut down".to_owned()))?;
    tracing::debug!(command = %command_line, "running");

    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a timeout kills what it started too (`sh -c`, `ssh`).
        .process_group(0);
    let mut child = command.spawn().map_err(|e| BackendError::Command {
        command: command_line.clone(),
        status: "not started".to_owned(),
        stderr: e.to_string(),
    })?;
    let pid = child.id();

    let feed = match (child.stdin.take(), stdin) {
        (Some(mut pipe), Some(bytes)) => {
            let bytes = bytes.to_vec();
            Some(tokio::spawn(async move {
                // A command that exits without reading all its input is not our error here:
                // its exit status tells.
                let _ = pipe.write_all(&bytes).await;
                let _ = pipe.shutdown().await;
            }))
        }
        _ => None,
    };

    let mut wait = Box::pin(child.wait_with_output());
    let waited = tokio::time::timeout(timeout, &mut wait).await;
    if let Some(feed) = feed {
        feed.abort();
    }
    if waited.is_err() {
        // Kill the whole group while its leader is still ours (not yet reaped), then drop
        // the child, which kills it too (kill_on_drop).
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    drop(wait);
    match waited {
        Ok(Ok(output)) => {
            let out = CommandOutput {
                exit_code: output.status.code(),
                stdout: output.stdout,
                stderr: output.stderr,
            };
            tracing::debug!(command = %command_line, status = %out.status_text(), "finished");
            Ok(out)
        }
        Ok(Err(e)) => Err(BackendError::Command {
            command: command_line,
            status: "lost".to_owned(),
            stderr: e.to_string(),
        }),
        Err(_) => {
            tracing::warn!(command = %command_line, ?timeout, "timed out, killed");
            Err(BackendError::Timeout {
                command: command_line,
                after: timeout,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("lfs"), "lfs");
        assert_eq!(shell_quote("/mnt/testfs/a-b_c.d"), "/mnt/testfs/a-b_c.d");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("~"), "'~'");
        assert_eq!(shell_quote("*@tcp"), "'*@tcp'");
        assert_eq!(
            display_argv(&argv(&["lctl", "nodemap_set_fileset", "--fileset", ""])),
            "lctl nodemap_set_fileset --fileset ''"
        );
    }

    #[tokio::test]
    async fn local_runner_collects_output_and_stdin() {
        let runner = LocalRunner::new(Duration::from_secs(10), 2);
        let out = runner
            .run(
                &argv(&["sh", "-c", "cat; echo err >&2; exit 3"]),
                Some(b"hello"),
            )
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr_text(), "err");
        let err = out.check(&argv(&["x"])).unwrap_err();
        assert!(matches!(err, BackendError::Command { ref stderr, .. } if stderr == "err"));
    }

    #[tokio::test]
    async fn local_runner_times_out_and_kills() {
        let runner = LocalRunner::new(Duration::from_millis(200), 1);
        let started = std::time::Instant::now();
        let err = runner
            .run(&argv(&["sh", "-c", "sleep 30; echo late"]), None)
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The permit came back: the next command runs.
        let out = runner.run(&argv(&["true"]), None).await.unwrap();
        assert!(out.success());
    }

    #[tokio::test]
    async fn missing_program_is_a_typed_error() {
        let runner = LocalRunner::new(Duration::from_secs(5), 1);
        let err = runner
            .run(&argv(&["/nonexistent/lfs", "df"]), None)
            .await
            .unwrap_err();
        assert!(matches!(err, BackendError::Command { ref status, .. } if status == "not started"));
    }
}
