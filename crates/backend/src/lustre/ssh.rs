//! [`SshRunner`]: runs an argv on a server through the system `ssh` client.
//!
//! Key-based authentication only (`BatchMode=yes`, `IdentitiesOnly=yes`, one identity file):
//! nothing can ever prompt. The argv is sent as one line of POSIX-shell-quoted words, so an
//! argument with spaces, quotes or `$` arrives as exactly one, unchanged argument. `ssh` runs
//! the command under `env LC_ALL=C` so the error texts we match are the English ones.
//!
//! Errors: the connection or authentication failing (ssh's own exit 255 with its own message)
//! is [`BackendError::Ssh`]; ssh's connect/handshake timeout and our overall timeout are
//! [`BackendError::Timeout`]; a remote command that fails is a plain non-zero
//! [`CommandOutput`], which [`CommandOutput::check`] turns into [`BackendError::Command`]
//! with the remote stderr.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::config::{HostKeyChecking, SshHostConfig};
use super::runner::{CommandOutput, CommandRunner, display_argv, run_process};
use crate::{BackendError, Result};

/// ssh exits 255 when it (not the remote command) failed.
const SSH_FAILURE: i32 = 255;

/// Runs commands on one host over SSH.
#[derive(Debug, Clone)]
pub struct SshRunner {
    ssh: String,
    host: SshHostConfig,
    timeout: Duration,
    permits: Arc<Semaphore>,
    control: Option<Arc<ControlDir>>,
}

/// A private (0700) directory for the multiplexing socket. When the last runner using it
/// goes, the shared connection is closed (`ssh -O exit`) and the directory removed.
#[derive(Debug)]
struct ControlDir {
    path: PathBuf,
    /// `ssh -o ControlPath=... -O exit -p PORT user@host`, run on drop.
    exit_argv: Vec<String>,
}

/// How long an idle shared connection stays up.
const CONTROL_PERSIST: &str = "ControlPersist=60s";
/// `sun_path` holds 108 bytes; ssh adds a temporary suffix while binding.
const MAX_CONTROL_PATH: usize = 80;

impl ControlDir {
    fn create(ssh: &str, host: &SshHostConfig) -> Option<Self> {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "lustrekit-ssh.{}.{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // `%C` is a 40-character hash of the connection.
        if path.as_os_str().len() + 42 > MAX_CONTROL_PATH {
            tracing::warn!(dir = %path.display(), "temporary directory path too long for an ssh control socket; not multiplexing");
            return None;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                let exit_argv = vec![
                    ssh.to_owned(),
                    "-o".to_owned(),
                    format!("ControlPath={}/%C", path.display()),
                    "-O".to_owned(),
                    "exit".to_owned(),
                    "-p".to_owned(),
                    host.port.to_string(),
                    format!("{}@{}", host.user, host.host),
                ];
                Some(Self { path, exit_argv })
            }
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot create the ssh control directory; not multiplexing");
                None
            }
        }
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        // Only when a master is there: a local socket round trip, no network.
        let has_socket = std::fs::read_dir(&self.path).is_ok_and(|mut d| d.next().is_some());
        if has_socket && let Some((program, args)) = self.exit_argv.split_first() {
            let _ = std::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl SshRunner {
    /// `ssh` is the client binary (usually `ssh`); `permits` bounds how many `ssh`
    /// processes run at once (share it with the local runner).
    pub fn new(
        ssh: impl Into<String>,
        host: SshHostConfig,
        timeout: Duration,
        permits: Arc<Semaphore>,
    ) -> Self {
        let ssh = ssh.into();
        let control = if host.multiplex {
            ControlDir::create(&ssh, &host).map(Arc::new)
        } else {
            None
        };
        Self {
            ssh,
            host,
            timeout,
            permits,
            control,
        }
    }

    /// `user@host:port`, for errors and logs.
    pub fn target(&self) -> String {
        format!("{}@{}:{}", self.host.user, self.host.host, self.host.port)
    }

    /// The full local argv: `ssh OPTIONS -p PORT user@host -- env LC_ALL=C 'quoted' 'argv'`.
    pub fn ssh_argv(&self, argv: &[String]) -> Vec<String> {
        let h = &self.host;
        let mut out = vec![
            self.ssh.clone(),
            "-T".to_owned(),
            "-o".to_owned(),
            "BatchMode=yes".to_owned(),
            "-o".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
            "-o".to_owned(),
            "PasswordAuthentication=no".to_owned(),
            "-o".to_owned(),
            "KbdInteractiveAuthentication=no".to_owned(),
            "-o".to_owned(),
            "LogLevel=ERROR".to_owned(),
            "-o".to_owned(),
            format!("ConnectTimeout={}", h.connect_timeout_secs.max(1)),
            "-o".to_owned(),
            format!(
                "StrictHostKeyChecking={}",
                h.strict_host_key_checking.as_ssh()
            ),
        ];
        if let Some(known_hosts) = &h.known_hosts_file {
            out.push("-o".to_owned());
            out.push(format!("UserKnownHostsFile={}", known_hosts.display()));
        }
        if let Some(control) = &self.control {
            out.extend([
                "-o".to_owned(),
                "ControlMaster=auto".to_owned(),
                "-o".to_owned(),
                format!("ControlPath={}/%C", control.path.display()),
                "-o".to_owned(),
                CONTROL_PERSIST.to_owned(),
            ]);
        }
        if h.strict_host_key_checking == HostKeyChecking::No && h.known_hosts_file.is_none() {
            // Never write unverified keys into the user's own known_hosts.
            out.push("-o".to_owned());
            out.push("UserKnownHostsFile=/dev/null".to_owned());
        }
        out.extend([
            "-i".to_owned(),
            h.key.display().to_string(),
            "-p".to_owned(),
            h.port.to_string(),
            format!("{}@{}", h.user, h.host),
            "--".to_owned(),
            remote_command_line(argv),
        ]);
        out
    }

    fn classify(&self, argv: &[String], out: CommandOutput) -> Result<CommandOutput> {
        if out.exit_code != Some(SSH_FAILURE) {
            return Ok(out);
        }
        let stderr = out.stderr_text();
        match ssh_failure(&stderr) {
            Some(SshFailure::Timeout) => Err(BackendError::Timeout {
                command: format!("ssh {}: {}", self.target(), display_argv(argv)),
                after: Duration::from_secs(self.host.connect_timeout_secs.max(1)),
            }),
            Some(SshFailure::Other) => Err(BackendError::Ssh {
                host: self.target(),
                message: explain(&stderr, &self.host.key),
            }),
            // The remote command itself exited 255 (an `lctl` returning -1 does).
            None => Ok(out),
        }
    }
}

#[async_trait]
impl CommandRunner for SshRunner {
    fn describe(&self) -> String {
        format!("ssh {}", self.target())
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
        if argv.is_empty() {
            return Err(BackendError::InvalidState("empty command line".to_owned()));
        }
        let local = self.ssh_argv(argv);
        tracing::debug!(host = %self.target(), command = %display_argv(argv), "running over ssh");
        match run_process(&self.permits, &local, stdin, timeout).await {
            Ok(out) => self.classify(argv, out),
            Err(BackendError::Timeout { after, .. }) => Err(BackendError::Timeout {
                command: format!("ssh {}: {}", self.target(), display_argv(argv)),
                after,
            }),
            Err(BackendError::Command { stderr, .. }) => Err(BackendError::Ssh {
                host: self.target(),
                message: format!("cannot run the ssh client {:?}: {stderr}", self.ssh),
            }),
            Err(other) => Err(other),
        }
    }
}

/// The one line the remote shell runs.
pub fn remote_command_line(argv: &[String]) -> String {
    format!("env LC_ALL=C {}", display_argv(argv))
}

enum SshFailure {
    Timeout,
    Other,
}

/// Whether ssh's stderr is ssh's own complaint (and which), rather than the remote command's.
fn ssh_failure(stderr: &str) -> Option<SshFailure> {
    let timeout_markers = [
        "Connection timed out",
        "Operation timed out",
        "timed out during banner exchange",
    ];
    let ssh_markers = [
        "Permission denied (",
        "Host key verification failed",
        "kex_exchange_identification",
        "Connection closed by",
        "Connection reset by",
        "Connection refused",
        "Could not resolve hostname",
        "No route to host",
        "Load key",
        "no such identity",
        "Bad owner or permissions",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "banner exchange",
        "Too many authentication failures",
    ];
    let lines = stderr.lines().map(str::trim);
    let mut other = false;
    for line in lines {
        if (line.starts_with("ssh:") && timeout_markers.iter().any(|m| line.contains(m)))
            || line.contains("timed out during banner exchange")
        {
            return Some(SshFailure::Timeout);
        }
        if line.starts_with("ssh:") || ssh_markers.iter().any(|m| line.contains(m)) {
            other = true;
        }
    }
    other.then_some(SshFailure::Other)
}

/// A clear message: ssh's words plus what to check.
fn explain(stderr: &str, key: &Path) -> String {
    let what = if stderr.is_empty() {
        "ssh failed without a message".to_owned()
    } else {
        stderr.lines().map(str::trim).collect::<Vec<_>>().join("; ")
    };
    if stderr.contains("Permission denied") {
        format!(
            "authentication refused: {what} (is the public key of {} in the remote authorized_keys?)",
            key.display()
        )
    } else if stderr.contains("Host key verification failed")
        || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
    {
        format!("host key not trusted: {what} (check known_hosts_file)")
    } else {
        what
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> SshHostConfig {
        SshHostConfig {
            host: "mgs1".into(),
            user: "root".into(),
            key: "/etc/lustrekit/id_ed25519".into(),
            port: 2222,
            connect_timeout_secs: 5,
            strict_host_key_checking: HostKeyChecking::Yes,
            known_hosts_file: Some("/etc/lustrekit/known_hosts".into()),
            multiplex: false,
        }
    }

    #[test]
    fn ssh_argv_is_key_only_and_quoted() {
        let r = SshRunner::new(
            "ssh",
            host(),
            Duration::from_secs(30),
            Arc::new(Semaphore::new(1)),
        );
        let argv: Vec<String> = [
            "lctl",
            "nodemap_set_fileset",
            "--name",
            "t1",
            "--fileset",
            "",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let line = r.ssh_argv(&argv).join(" ");
        assert_eq!(
            line,
            "ssh -T -o BatchMode=yes -o IdentitiesOnly=yes -o PasswordAuthentication=no \
             -o KbdInteractiveAuthentication=no -o LogLevel=ERROR -o ConnectTimeout=5 \
             -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/lustrekit/known_hosts \
             -i /etc/lustrekit/id_ed25519 -p 2222 root@mgs1 -- \
             env LC_ALL=C lctl nodemap_set_fileset --name t1 --fileset ''"
        );
    }

    #[test]
    fn multiplexing_uses_a_private_control_socket() {
        let mut h = host();
        h.multiplex = true;
        let r = SshRunner::new(
            "ssh",
            h,
            Duration::from_secs(30),
            Arc::new(Semaphore::new(1)),
        );
        let dir = r.control.as_ref().map(|c| c.path.clone()).unwrap();
        let line = r.ssh_argv(&["true".to_owned()]).join(" ");
        assert!(
            line.contains(&format!(
                "-o ControlMaster=auto -o ControlPath={}/%C -o ControlPersist=60s",
                dir.display()
            )),
            "{line}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(r);
        assert!(!dir.exists());
    }

    #[test]
    fn ssh_failures_are_told_apart_from_remote_failures() {
        assert!(matches!(
            ssh_failure("root@127.0.0.1: Permission denied (publickey)."),
            Some(SshFailure::Other)
        ));
        assert!(matches!(
            ssh_failure(
                "Connection timed out during banner exchange\nConnection to 127.0.0.1 port 1 timed out"
            ),
            Some(SshFailure::Timeout)
        ));
        assert!(matches!(
            ssh_failure("ssh: connect to host 10.9.9.9 port 22: Connection timed out"),
            Some(SshFailure::Timeout)
        ));
        assert!(matches!(
            ssh_failure("ssh: connect to host 127.0.0.1 port 1: Connection refused"),
            Some(SshFailure::Other)
        ));
        assert!(ssh_failure("error: nodemap_add: cannot add nodemap: Invalid argument").is_none());
    }
}
