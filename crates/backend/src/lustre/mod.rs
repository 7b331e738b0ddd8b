//! The `lustre` backend: drives a real Lustre through `lfs`, `lctl` and `mount -t lustre`.
//!
//! Every operation builds an argv, runs it through a [`runner::CommandRunner`] and parses the
//! output with `lustre-model`. Which runner depends on the command:
//! - directory, project, quota, capacity and HSM commands run where the filesystem is mounted
//!   as a client at [`LustreConfig::mount_point`]: the MDS host over SSH when `mds_host` is
//!   set, else this host;
//! - nodemap and version commands (`lctl`) run on the MGS: over SSH when `mgs_host` is set;
//! - client mounts run on this host (the node): fileset mounts per volume in `direct` mode,
//!   or bind mounts from one reference-counted client mount per node in `bind` mode (see
//!   [`mount`](self::mount) and ARCHITECTURE.md, CSI node model);
//! - Persistent Client Cache commands (`lctl pcc`, `lfs pcc`) run on the node too.
//!
//! The argv is the same whichever runner runs it; only the runner differs. Command formats
//! follow `shared/lustre-formats/`.

pub mod config;
mod dirs;
mod encryption;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
mod hsm;
mod mount;
mod nodemap;
mod pcc;
mod project;
mod quota;
pub mod runner;
pub mod ssh;
mod statfs;
mod tunables;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lustre_model::{LustreVersion, Nid, RelPath};

pub use config::{HostKeyChecking, LustreConfig, SshHostConfig};
#[cfg(any(test, feature = "test-util"))]
pub use fake::{FakeRunner, ToolsFaked};
pub use mount::shared_mount_users;
pub use runner::{CommandOutput, CommandRunner, LocalRunner};
pub use ssh::SshRunner;

use crate::{BackendError, BackendKind, Capabilities, Filesystem, QuotaEnforcement, Result};

mod capacity;

/// A [`Filesystem`] on a real Lustre.
#[derive(Debug, Clone)]
pub struct LustreBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LustreConfig,
    /// Where the command host sees the filesystem (`mds_mount_point`, else `mount_point`),
    /// as text (validated to be UTF-8 and absolute).
    mount_point: String,
    /// `<node1>:<node2>` of the mount device.
    mgs_spec: String,
    mds: Arc<dyn CommandRunner>,
    mgs: Arc<dyn CommandRunner>,
    node: Arc<dyn CommandRunner>,
    /// The PCC syntax of this node's client, read once (see [`pcc`]).
    pcc_dialect: std::sync::OnceLock<lustre_model::PccDialect>,
    /// Set once this host's client is seen to do fscrypt (see [`encryption`]).
    fscrypt_client: std::sync::OnceLock<()>,
}

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Mds,
    Mgs,
    Node,
}

impl LustreBackend {
    /// Builds the backend with the runners the configuration asks for: SSH to `mds_host` /
    /// `mgs_host` when set, local processes otherwise. Nothing runs yet.
    pub fn new(config: LustreConfig) -> Result<Self> {
        let timeout = Duration::from_secs(config.command_timeout_secs.max(1));
        let local = LocalRunner::new(timeout, config.max_concurrent_commands);
        let remote = |host: &Option<SshHostConfig>| -> Arc<dyn CommandRunner> {
            match host {
                Some(h) => Arc::new(SshRunner::new(
                    config.ssh.clone(),
                    h.clone(),
                    timeout,
                    local.permits(),
                )),
                None => Arc::new(local.clone()),
            }
        };
        let (mds, mgs) = (remote(&config.mds_host), remote(&config.mgs_host));
        Self::with_runners(config.clone(), mds, mgs, Arc::new(local))
    }

    /// Builds the backend with one runner for everything (tests pass a `FakeRunner`, of the
    /// `test-util` feature, whose script then lists MDS, MGS and node commands in one order).
    pub fn with_runner(config: LustreConfig, runner: Arc<dyn CommandRunner>) -> Result<Self> {
        Self::with_runners(config, runner.clone(), runner.clone(), runner)
    }

    /// Builds the backend on the given runners: `mds` for directory, project, quota,
    /// capacity and HSM commands, `mgs` for nodemaps and the version, `node` for mounts.
    pub fn with_runners(
        config: LustreConfig,
        mds: Arc<dyn CommandRunner>,
        mgs: Arc<dyn CommandRunner>,
        node: Arc<dyn CommandRunner>,
    ) -> Result<Self> {
        validate_mount_point(&config.mount_point)?;
        validate_mount_point(&config.node_mount_root)?;
        let mount_point = validate_mount_point(
            config
                .mds_mount_point
                .as_ref()
                .unwrap_or(&config.mount_point),
        )?;
        let mgs_spec = mgs_spec(&config.mgs_nids)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                mount_point,
                mgs_spec,
                mds,
                mgs,
                node,
                pcc_dialect: std::sync::OnceLock::new(),
                fscrypt_client: std::sync::OnceLock::new(),
            }),
        })
    }

    pub fn config(&self) -> &LustreConfig {
        &self.inner.config
    }

    /// Where this node keeps the shared client mount of `bind` mode volumes:
    /// `<node_mount_root>/<fsname>`.
    pub fn shared_mount_path(&self) -> PathBuf {
        self.inner
            .config
            .node_mount_root
            .join(self.inner.config.fsname.as_str())
    }

    /// How many bind mounts use the shared client mount, read from `/proc/self/mountinfo`
    /// (so a restarted node plugin gets the same answer); `None` when it is not mounted.
    pub fn shared_mount_users(&self) -> Result<Option<usize>> {
        Ok(shared_mount_users(
            &crate::mount::mount_table()?,
            &self.shared_mount_path(),
        ))
    }

    /// The Lustre version of the MGS (`lctl get_param version`).
    pub async fn version(&self) -> Result<LustreVersion> {
        let argv = self.lctl(["get_param", "version"]);
        let out = self.run_ok(On::Mgs, &argv).await?;
        lustre_model::parse_lctl_version(&out.stdout_text()).map_err(|e| parse_error(&argv, e))
    }

    /// `<mount_point>/<dir>` as the MDS-side client sees it.
    fn path(&self, dir: &RelPath) -> String {
        format!(
            "{}/{}",
            self.inner.mount_point.trim_end_matches('/'),
            dir.as_str()
        )
    }

    fn runner(&self, on: On) -> &dyn CommandRunner {
        match on {
            On::Mds => self.inner.mds.as_ref(),
            On::Mgs => self.inner.mgs.as_ref(),
            On::Node => self.inner.node.as_ref(),
        }
    }

    fn lfs<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        argv(&self.inner.config.lfs, args)
    }

    fn lctl<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        argv(&self.inner.config.lctl, args)
    }

    /// Runs and returns the output whatever the exit status.
    async fn run(&self, on: On, argv: &[String]) -> Result<CommandOutput> {
        self.runner(on).run(argv, None).await
    }

    /// Runs and fails with Lustre's stderr unless the exit status is 0.
    async fn run_ok(&self, on: On, argv: &[String]) -> Result<CommandOutput> {
        self.run(on, argv).await?.check(argv)
    }
}

fn argv<'a>(program: &str, args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    std::iter::once(program.to_owned())
        .chain(args.into_iter().map(str::to_owned))
        .collect()
}

fn parse_error(argv: &[String], source: lustre_model::ParseError) -> BackendError {
    BackendError::Parse {
        command: runner::display_argv(argv),
        source,
    }
}

/// The stderr says the path is not there (`No such file or directory`, ENOENT).
fn is_enoent(out: &CommandOutput) -> bool {
    out.stderr_text().contains("No such file or directory")
}

fn validate_mount_point(mount_point: &Path) -> Result<String> {
    let text = mount_point.to_str().ok_or_else(|| {
        BackendError::InvalidState(format!(
            "mount_point {} is not valid UTF-8",
            mount_point.display()
        ))
    })?;
    if !mount_point.is_absolute() || text.contains(['\n', '\0']) {
        return Err(BackendError::InvalidState(format!(
            "mount_point {text:?} must be an absolute path"
        )));
    }
    Ok(text.to_owned())
}

/// `mgs_nids` as the node part of a mount device: failover nodes joined by `:`, each a
/// `,`-joined list of that node's NIDs. Every NID is validated; IPv6 NIDs are refused since
/// their `:` would be read as a failover separator.
fn mgs_spec(nodes: &[String]) -> Result<String> {
    if nodes.is_empty() {
        return Err(BackendError::InvalidState(
            "mgs_nids must name at least one MGS NID".to_owned(),
        ));
    }
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut nids = Vec::new();
        for nid in node.split(',') {
            let parsed: Nid = nid.trim().parse()?;
            if parsed.addr.is_ipv6() {
                return Err(BackendError::unsupported(
                    "IPv6 MGS NID",
                    format!("{nid}: the mount device grammar separates failover nodes with `:`"),
                ));
            }
            nids.push(parsed.to_string());
        }
        out.push(nids.join(","));
    }
    Ok(out.join(":"))
}
impl Filesystem for LustreBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Lustre
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            quota: QuotaEnforcement::Enforced,
            inode_quota: QuotaEnforcement::Enforced,
            nodemaps_enforced_by_server: true,
            // The controller sets policies with ioctls on its own client mount, which it has
            // only when commands run on this host (see [`encryption`]); a client older than
            // 2.14 is refused when it is asked.
            encryption: self.encryption_absent_because().is_none(),
            restore_on_access: true,
            quota_write_reserve: 0,
            quota_outlives_directory: true,
            bind_from_shared_client_mount: true,
            striping: true,
            client_tunables: true,
            // Not built for Lustre yet: the image would be made over the command runner.
            block_volumes: false,
            pcc: true,
        }
    }

    fn host_path(&self, dir: &RelPath) -> PathBuf {
        self.inner.config.mount_point.join(dir.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mgs_spec_joins_failover_nodes() {
        let spec = mgs_spec(&[
            "10.0.0.1@tcp".into(),
            "10.0.0.2@tcp,192.168.1.2@o2ib1".into(),
        ]);
        assert_eq!(spec.unwrap(), "10.0.0.1@tcp:10.0.0.2@tcp,192.168.1.2@o2ib1");
        assert!(mgs_spec(&[]).is_err());
        assert!(mgs_spec(&["mgs1:/evil".into()]).is_err());
        assert!(mgs_spec(&["2001:db8::1@tcp".into()]).is_err());
    }

    #[test]
    fn mount_point_must_be_absolute() {
        assert!(validate_mount_point(Path::new("mnt/x")).is_err());
        assert_eq!(validate_mount_point(Path::new("/mnt/x")).unwrap(), "/mnt/x");
    }

    #[test]
    fn node_mount_root_must_be_absolute() {
        let mut config = LustreConfig::new(
            lustre_model::FsName::new("testfs").unwrap(),
            vec!["10.0.0.1@tcp".into()],
            "/mnt/testfs",
        );
        let runner: Arc<dyn CommandRunner> = Arc::new(FakeRunner::new());
        let b = LustreBackend::with_runner(config.clone(), runner.clone()).unwrap();
        assert_eq!(
            b.shared_mount_path(),
            Path::new("/var/lib/lustrekit/mnt/testfs")
        );
        config.node_mount_root = "relative/mnt".into();
        assert!(LustreBackend::with_runner(config, runner).is_err());
    }
}
