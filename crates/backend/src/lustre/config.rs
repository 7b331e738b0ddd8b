//! [`LustreConfig`]: where the Lustre tools are, which filesystem, and where commands run.
//!
//! Example (TOML):
//! ```toml
//! fsname = "testfs"
//! mgs_nids = ["10.0.0.1@tcp", "10.0.0.2@tcp"]   # two failover MGS nodes
//! mount_point = "/mnt/testfs"
//! command_timeout_secs = 60
//! node_mount_root = "/var/lib/lustrekit/mnt"      # shared client mounts of `bind` volumes
//!
//! [mgs_host]                                      # nodemap commands go over SSH
//! host = "mgs1.example.org"
//! key = "/etc/lustrekit/id_ed25519"
//! known_hosts_file = "/etc/lustrekit/known_hosts"
//! ```

use std::path::PathBuf;

use lustre_model::FsName;
use serde::{Deserialize, Serialize};

/// How the `lustre` backend reaches Lustre.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LustreConfig {
    /// The `lfs` binary (default `lfs`, looked up in `PATH` where it runs).
    #[serde(default = "default_lfs")]
    pub lfs: String,
    /// The `lctl` binary (default `lctl`).
    #[serde(default = "default_lctl")]
    pub lctl: String,
    /// The `mount` binary used on the node for client mounts (default `mount`).
    #[serde(default = "default_mount")]
    pub mount: String,
    /// The `umount` binary (default `umount`). Unmounting itself uses the bounded cascade of
    /// [`crate::mount::unmount_cascade`]; this is kept for tooling that shells out.
    #[serde(default = "default_umount")]
    pub umount: String,
    /// The `ssh` client used when `mds_host`/`mgs_host` are set (default `ssh`).
    #[serde(default = "default_ssh")]
    pub ssh: String,
    /// The Lustre filesystem name (`testfs`).
    pub fsname: FsName,
    /// The MGS, one entry per failover MGS node, in order. An entry is that node's NID
    /// (`10.0.0.1@tcp`) or several NIDs of the same node joined by `,`
    /// (`10.0.0.1@tcp,10.1.0.1@o2ib`). Mounts use `<node1>:<node2>:/<fsname>/<share>`.
    pub mgs_nids: Vec<String>,
    /// Where the filesystem root is mounted as a Lustre client on this host (Manila's
    /// `lustre_mount_point`). Host paths of shares, and the HSM mover's files, are
    /// `<mount_point>/<share path>`.
    pub mount_point: PathBuf,
    /// Where the host that runs the directory and `lfs` commands (the MDS host when
    /// `mds_host` is set) has the filesystem mounted, when that differs from `mount_point`.
    /// Defaults to `mount_point`.
    #[serde(default)]
    pub mds_mount_point: Option<PathBuf>,
    /// When set, directory, project, quota, capacity and HSM commands run on this host over
    /// SSH; otherwise they run on this host.
    #[serde(default)]
    pub mds_host: Option<SshHostConfig>,
    /// When set, nodemap and version commands (`lctl`) run on this host (the MGS) over SSH;
    /// otherwise they run on this host.
    #[serde(default)]
    pub mgs_host: Option<SshHostConfig>,
    /// How long one command may run before it is killed (default 60 s).
    #[serde(default = "default_command_timeout")]
    pub command_timeout_secs: u64,
    /// How long removing a whole share directory (`rm -rf`) may run (default 3600 s).
    #[serde(default = "default_remove_timeout")]
    pub remove_timeout_secs: u64,
    /// At most this many commands (local processes or `ssh` clients) run at once (default 8).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_commands: usize,
    /// Where a node keeps its one shared client mount of the filesystem for `bind` mount
    /// mode volumes: `<node_mount_root>/<fsname>` (default `/var/lib/lustrekit/mnt`). It is
    /// outside kubelet's directories, so kubelet never takes it for a staged device.
    #[serde(default = "default_node_mount_root")]
    pub node_mount_root: PathBuf,
    /// Client options (`-o`) of that shared mount (default none). One client mount serves
    /// every `bind` volume of the node, so per-volume Lustre client options cannot apply:
    /// a volume may repeat one of these, or use options a bind mount honours (`ro`,
    /// `nosuid`, `nodev`, `noexec`, `noatime`, ...), and anything else is refused.
    #[serde(default)]
    pub node_mount_options: Vec<String>,
}

/// One server reached over SSH, with key-based authentication only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshHostConfig {
    /// Host name or address.
    pub host: String,
    /// Remote user (default `root`: `lfs setquota` and `lctl nodemap_*` need it).
    #[serde(default = "default_user")]
    pub user: String,
    /// Private key file (`ssh -i`). Never read by lustrekit itself, only handed to `ssh`.
    pub key: PathBuf,
    /// SSH port (default 22).
    #[serde(default = "default_port")]
    pub port: u16,
    /// `ssh -o ConnectTimeout=` in seconds: connecting and the handshake (default 10).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// `ssh -o StrictHostKeyChecking=` (default `yes`).
    #[serde(default)]
    pub strict_host_key_checking: HostKeyChecking,
    /// `ssh -o UserKnownHostsFile=`; when unset, ssh's default (`~/.ssh/known_hosts`).
    #[serde(default)]
    pub known_hosts_file: Option<PathBuf>,
    /// Reuse one SSH connection for many commands (`ControlMaster=auto`, `ControlPersist`
    /// 60 s, the socket in a private temporary directory). A handshake costs far more than a
    /// command; default `true`.
    #[serde(default = "default_multiplex")]
    pub multiplex: bool,
}

/// ssh's `StrictHostKeyChecking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyChecking {
    /// Only hosts already in known_hosts.
    #[default]
    Yes,
    /// Trust on first use, refuse a changed key.
    AcceptNew,
    /// No check (tests only).
    No,
}

impl HostKeyChecking {
    pub fn as_ssh(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::AcceptNew => "accept-new",
            Self::No => "no",
        }
    }
}

impl LustreConfig {
    /// A configuration with every default, commands running on this host.
    pub fn new(fsname: FsName, mgs_nids: Vec<String>, mount_point: impl Into<PathBuf>) -> Self {
        Self {
            lfs: default_lfs(),
            lctl: default_lctl(),
            mount: default_mount(),
            umount: default_umount(),
            ssh: default_ssh(),
            fsname,
            mgs_nids,
            mount_point: mount_point.into(),
            mds_mount_point: None,
            mds_host: None,
            mgs_host: None,
            command_timeout_secs: default_command_timeout(),
            remove_timeout_secs: default_remove_timeout(),
            max_concurrent_commands: default_max_concurrent(),
            node_mount_root: default_node_mount_root(),
            node_mount_options: Vec::new(),
        }
    }
}

fn default_lfs() -> String {
    "lfs".to_owned()
}
fn default_lctl() -> String {
    "lctl".to_owned()
}
fn default_mount() -> String {
    "mount".to_owned()
}
fn default_umount() -> String {
    "umount".to_owned()
}
fn default_ssh() -> String {
    "ssh".to_owned()
}
fn default_user() -> String {
    "root".to_owned()
}
fn default_port() -> u16 {
    22
}
fn default_multiplex() -> bool {
    true
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_command_timeout() -> u64 {
    60
}
fn default_remove_timeout() -> u64 {
    3600
}
fn default_max_concurrent() -> usize {
    8
}
fn default_node_mount_root() -> PathBuf {
    PathBuf::from("/var/lib/lustrekit/mnt")
}
