//! [`FakeRunner`]: a scripted [`CommandRunner`] for tests, here and in other crates. It is
//! not in the shipped library: other crates' tests enable the `test-util` feature as a
//! dev-dependency (`backend = { workspace = true, features = ["test-util"] }`).
//!
//! It is given the exact argv sequence it must see, each with the output to replay. A call
//! that differs from the next expectation returns an error naming both (it never panics
//! inside the code under test), and [`FakeRunner::finish`] reports every mismatch and every
//! expectation left unconsumed.
//!
//! ```
//! # use backend::lustre::fake::FakeRunner;
//! let fake = FakeRunner::new()
//!     .expect(["lfs", "project", "-d", "/mnt/testfs/a"], "  100 P /mnt/testfs/a\n", "", 0);
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::runner::{CommandOutput, CommandRunner, LocalRunner, display_argv};
use crate::{BackendError, Result};

/// What the fake does when its expectation is met.
#[derive(Debug, Clone)]
pub enum FakeReply {
    /// Replays this output.
    Output(CommandOutput),
    /// Fails with [`BackendError::Timeout`], as a hung command would.
    Timeout,
}

/// One expected call.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub argv: Vec<String>,
    /// When set, the call's stdin must be exactly this.
    pub stdin: Option<Vec<u8>>,
    pub reply: FakeReply,
}

#[derive(Debug, Default)]
struct State {
    expected: VecDeque<Expectation>,
    calls: Vec<Vec<String>>,
    mismatches: Vec<String>,
}

/// A scripted runner: expectations are consumed in order.
#[derive(Debug, Default)]
pub struct FakeRunner {
    state: Mutex<State>,
}

fn to_argv<A, S>(argv: A) -> Vec<String>
where
    A: IntoIterator<Item = S>,
    S: Into<String>,
{
    argv.into_iter().map(Into::into).collect()
}

impl FakeRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Built from an ordered list of `(argv, stdout, stderr, exit_code)`.
    pub fn from_script<A, S, O, E>(script: impl IntoIterator<Item = (A, O, E, i32)>) -> Self
    where
        A: IntoIterator<Item = S>,
        S: Into<String>,
        O: AsRef<[u8]>,
        E: AsRef<[u8]>,
    {
        script
            .into_iter()
            .fold(Self::new(), |fake, (argv, out, err, code)| {
                fake.expect(argv, out, err, code)
            })
    }

    /// Expects `argv` next; replays `stdout`, `stderr` and `exit_code`.
    pub fn expect<A, S>(
        self,
        argv: A,
        stdout: impl AsRef<[u8]>,
        stderr: impl AsRef<[u8]>,
        exit_code: i32,
    ) -> Self
    where
        A: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.push(Expectation {
            argv: to_argv(argv),
            stdin: None,
            reply: FakeReply::Output(CommandOutput::new(
                exit_code,
                stdout.as_ref(),
                stderr.as_ref(),
            )),
        });
        self
    }

    /// Like [`FakeRunner::expect`], and the call must feed exactly `stdin`.
    pub fn expect_stdin<A, S>(
        self,
        argv: A,
        stdin: impl AsRef<[u8]>,
        stdout: impl AsRef<[u8]>,
        stderr: impl AsRef<[u8]>,
        exit_code: i32,
    ) -> Self
    where
        A: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.push(Expectation {
            argv: to_argv(argv),
            stdin: Some(stdin.as_ref().to_vec()),
            reply: FakeReply::Output(CommandOutput::new(
                exit_code,
                stdout.as_ref(),
                stderr.as_ref(),
            )),
        });
        self
    }

    /// Expects `argv` next and times out on it.
    pub fn expect_timeout<A, S>(self, argv: A) -> Self
    where
        A: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.push(Expectation {
            argv: to_argv(argv),
            stdin: None,
            reply: FakeReply::Timeout,
        });
        self
    }

    /// Appends an expectation (also usable through a shared reference, mid-test).
    pub fn push(&self, expectation: Expectation) {
        self.lock().expected.push_back(expectation);
    }

    /// Every argv run so far, matched or not.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.lock().calls.clone()
    }

    /// Ok when every call matched and nothing expected is left; otherwise a report naming
    /// each mismatch and each unconsumed expectation.
    pub fn finish(&self) -> std::result::Result<(), String> {
        let state = self.lock();
        let mut problems = state.mismatches.clone();
        problems.extend(
            state
                .expected
                .iter()
                .map(|e| format!("expected but never run: `{}`", display_argv(&e.argv))),
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("fake runner:\n  {}", problems.join("\n  ")))
        }
    }

    /// Panics with the report of [`FakeRunner::finish`] (for tests).
    #[track_caller]
    pub fn assert_done(&self) {
        if let Err(report) = self.finish() {
            panic!("{report}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panicking test thread must not hide the script from the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl CommandRunner for FakeRunner {
    fn describe(&self) -> String {
        "fake".to_owned()
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }

    async fn run_with_timeout(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput> {
        let mut state = self.lock();
        state.calls.push(argv.to_vec());
        let call = state.calls.len();
        let problem = match state.expected.front() {
            None => Some(format!(
                "call #{call}: nothing more expected, got `{}`",
                display_argv(argv)
            )),
            Some(next) if next.argv != argv => Some(format!(
                "call #{call}: expected `{}`, got `{}`",
                display_argv(&next.argv),
                display_argv(argv)
            )),
            Some(next) => match (&next.stdin, stdin) {
                (Some(want), got) if Some(want.as_slice()) != got => Some(format!(
                    "call #{call} `{}`: expected stdin {:?}, got {:?}",
                    display_argv(argv),
                    String::from_utf8_lossy(want),
                    got.map(String::from_utf8_lossy)
                )),
                _ => None,
            },
        };
        if let Some(problem) = problem {
            state.mismatches.push(problem.clone());
            return Err(BackendError::InvalidState(problem));
        }
        let Some(next) = state.expected.pop_front() else {
            return Err(BackendError::InvalidState(format!(
                "call #{call}: lost expectation"
            )));
        };
        match next.reply {
            FakeReply::Output(out) => Ok(out),
            FakeReply::Timeout => Err(BackendError::Timeout {
                command: display_argv(argv),
                after: timeout,
            }),
        }
    }
}

/// `lfs` and `lctl` to a [`FakeRunner`], everything else (mkdir, stat, cat, mv, rm) to a
/// real [`LocalRunner`]: for tests that run the backend's directory commands for real on a
/// scratch directory standing in for the client mount.
#[derive(Debug)]
pub struct ToolsFaked {
    local: LocalRunner,
    fake: Arc<FakeRunner>,
}

impl ToolsFaked {
    pub fn new(fake: Arc<FakeRunner>) -> Self {
        Self {
            local: LocalRunner::new(Duration::from_secs(20), 4),
            fake,
        }
    }
}

#[async_trait]
impl CommandRunner for ToolsFaked {
    fn describe(&self) -> String {
        "lfs/lctl faked, the rest local".to_owned()
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(20)
    }

    async fn run_with_timeout(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput> {
        match argv.first().map(String::as_str) {
            Some("lfs" | "lctl") => self.fake.run_with_timeout(argv, stdin, timeout).await,
            _ => self.local.run_with_timeout(argv, stdin, timeout).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[tokio::test]
    async fn replays_in_order_and_reports_mismatches() {
        let fake =
            FakeRunner::from_script([(vec!["a", "1"], "out", "", 0), (vec!["b"], "", "bad", 2)]);
        let out = fake.run(&argv(&["a", "1"]), None).await.unwrap();
        assert_eq!(out.stdout, b"out");
        let err = fake.run(&argv(&["c"]), None).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("expected `b`, got `c`"), "{msg}");
        let report = fake.finish().unwrap_err();
        assert!(report.contains("expected `b`, got `c`"), "{report}");
        assert!(report.contains("never run: `b`"), "{report}");
    }

    #[tokio::test]
    async fn checks_stdin_and_times_out() {
        let fake = FakeRunner::new()
            .expect_stdin(["w"], b"data", "", "", 0)
            .expect_timeout(["slow"]);
        assert!(fake.run(&argv(&["w"]), Some(b"data")).await.is_ok());
        let err = fake.run(&argv(&["slow"]), None).await.unwrap_err();
        assert!(matches!(err, BackendError::Timeout { .. }));
        fake.assert_done();
    }

    #[tokio::test]
    async fn wrong_stdin_is_a_mismatch() {
        let fake = FakeRunner::new().expect_stdin(["w"], b"data", "", "", 0);
        assert!(fake.run(&argv(&["w"]), Some(b"other")).await.is_err());
        assert!(fake.finish().is_err());
    }
}
