//! The trait every backend implements (`Filesystem`, made of role traits), and the plain
//! data it speaks in.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use lustre_model::{
    ClientTunable, Compression, Fid, HsmFlags, HsmState, IdMap, LayoutSpec, NidRange, NodemapName,
    NodemapState, ParamValue, PccAddParam, PccCounters, PccDataset, PccDialect, PccFileState,
    PccMode, ProjectId, QuotaLimits, QuotaReport, RelPath,
};
use serde::{Deserialize, Serialize};

use crate::fscrypt::{KeyIdentifier, KeyRemoval, SecretKey};
use crate::{BackendError, Result};

/// Which implementation stands behind a [`Filesystem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Lustre,
    Local,
}

/// How far a backend really enforces a project quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaEnforcement {
    /// Writes past the hard limit fail with EDQUOT (Lustre project quota, btrfs qgroup).
    Enforced,
    /// Usage is measured, but nothing stops a write: the limit is advisory.
    AccountedOnly,
}

/// What a backend really does, so callers never assume a guarantee that is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Byte limits.
    pub quota: QuotaEnforcement,
    /// Inode limits (btrfs qgroups have none, so the local backend only counts).
    pub inode_quota: QuotaEnforcement,
    /// Nodemaps are enforced by the servers (Lustre) rather than checked by our own node plugin.
    pub nodemaps_enforced_by_server: bool,
    pub encryption: bool,
    pub restore_on_access: bool,
    /// Bytes a quota charges one write beyond its data: a btrfs qgroup reserves a metadata
    /// node (16 KiB by default), so a volume with less headroom than one block plus this
    /// already refuses writes with EDQUOT. 0 where the limit is charged by data alone.
    pub quota_write_reserve: u64,
    /// The filesystem keeps a project's quota limits by project ID, apart from any directory
    /// (Lustre): they outlive a removed share directory, so a project ID given back must have
    /// its limits cleared first. False where the limits live on the directory and go with it.
    pub quota_outlives_directory: bool,
    /// Bind-mode mounts come from a client mount the node shares between volumes, not from
    /// [`Filesystem::host_path`]: whether a mounted target already holds the volume is then
    /// for [`Mounts::mount`] to judge against that mount, not for the caller to compare with
    /// the host path.
    pub bind_from_shared_client_mount: bool,
    /// Directories take a default layout (stripe count, size, pool, PFL components) that the
    /// files made in them get: [`Namespace::set_default_layout`]. False where there are no
    /// stripes (the `local` backend).
    pub striping: bool,
    /// This node's filesystem client has tunables (`llite.*`, `osc.*`, `mdc.*`) a volume
    /// may set while it is published: [`ClientParams`]. False where there is no client
    /// (the `local` backend).
    pub client_tunables: bool,
    /// A share can hold a block volume's image file ([`Namespace::ensure_block_image`],
    /// [`Namespace::open_block_image`]), which the node exposes as a block device.
    pub block_volumes: bool,
    /// A Persistent Client Cache on the node's local storage: caches registered on a client
    /// mount, files attached and detached ([`Pcc`]). False where there is no client cache
    /// (the `local` backend: its purge of a cache directory still works, as plain files).
    pub pcc: bool,
}

/// What `statfs` (and so `df`) reports inside a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reports")]
pub enum VolumeStatfs {
    /// The volume's own project quota (Lustre with `llite.*.statfs_project=1`).
    ProjectQuota,
    /// The whole filesystem; `why` says why, for logs and the volume's condition.
    Filesystem { why: String },
}

/// A release of a file in progress, as a restore-on-access daemon must know it (see
/// [`Hsm::hsm_release_watched`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseInProgress {
    /// The releasing process and thread, as the releaser's pid namespace numbers them.
    pub pid: i32,
    pub tid: i32,
    /// The releaser's pid namespace (the inode number of `/proc/self/ns/pid`); 0 if unknown.
    pub pid_ns: u64,
    /// When the release began (wall clock, ns since the Unix epoch).
    pub started_ns: i64,
    /// Whether the releaser still holds the file (its lock on it): `false` means the release
    /// died midway, and the file must be treated as released.
    pub releaser_alive: bool,
}

/// What a restore-on-access daemon asks about a file on every access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HsmAccessState {
    pub state: HsmState,
    /// A release of the file in progress, if any.
    pub releasing: Option<ReleaseInProgress>,
}

/// A file's data version as its backend measures it: two equal versions mean the data did
/// not change between them. Archive records it, and release refuses unless it still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum DataVersion {
    /// Lustre's own counter (`lfs data_version`), which every data change moves.
    Lustre { version: u64 },
    /// A plain file's size, times, inode and generation, read from an open descriptor.
    Local(crate::local::file_version::DataVersion),
}

impl DataVersion {
    /// Same data, as far as the backend can tell without reading it.
    pub fn same_data(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Lustre { version: a }, Self::Lustre { version: b }) => a == b,
            (Self::Local(a), Self::Local(b)) => a.same_data(b),
            _ => false,
        }
    }

    /// The string recorded in object metadata (the copytool's spelling on Lustre).
    pub fn token(&self) -> String {
        match self {
            Self::Lustre { version } => format!("lustre:{version}"),
            Self::Local(local) => local.token(),
        }
    }
}

/// Ownership and mode of a new share directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirSpec {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Default for DirSpec {
    fn default() -> Self {
        Self {
            mode: 0o770,
            uid: 0,
            gid: 0,
        }
    }
}

/// What `stat` tells about a share directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirInfo {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The project ID on the directory, if one is set (and the inherit flag with it).
    pub project: Option<ProjectId>,
    /// Last modification, in seconds since the Unix epoch.
    pub modified: u64,
}

/// Space and inodes of the whole filesystem (the `lfs df` summary, or statvfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capacity {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub total_inodes: u64,
    pub used_inodes: u64,
    pub free_inodes: u64,
}

/// One step of a nodemap reconciliation. The share service computes an ordered list of these
/// from the desired state and the live one; a backend applies them in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum NodemapChange {
    Create {
        name: NodemapName,
    },
    Delete {
        name: NodemapName,
    },
    AddRange {
        name: NodemapName,
        range: NidRange,
    },
    DelRange {
        name: NodemapName,
        range: NidRange,
    },
    /// `lctl nodemap_modify --property P --value V`; `property` is the lctl spelling
    /// (`admin`, `trusted`, `deny_unknown`, `squash_uid`, `readonly_mount`, ...).
    SetProperty {
        name: NodemapName,
        property: String,
        value: String,
    },
    /// `lctl nodemap_add_idmap --idtype T --idmap CLIENT:FS`.
    AddIdmap {
        name: NodemapName,
        idmap: IdMap,
    },
    DelIdmap {
        name: NodemapName,
        idmap: IdMap,
    },
    /// `None` clears the fileset.
    SetFileset {
        name: NodemapName,
        fileset: Option<String>,
    },
    Activate {
        active: bool,
    },
}

/// How a node makes a share visible at a target (ARCHITECTURE.md, CSI node model). The
/// choice matters only on `lustre`; on `local` both are bind mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    /// A Lustre fileset mount of the share itself at the target: one client instance per
    /// volume, and what a nodemap that restricts the node to that fileset requires.
    #[default]
    Direct,
    /// A bind mount of the share's directory from one reference-counted client mount of the
    /// filesystem per node: light with many volumes on a node.
    Bind,
}

impl MountMode {
    /// The name used in StorageClass parameters and volume contexts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Bind => "bind",
        }
    }
}

/// A request to make a share visible at a target path on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    /// The share directory, relative to the filesystem root.
    pub share: RelPath,
    pub target: PathBuf,
    pub read_only: bool,
    /// Extra mount options (`-o`), already validated by the caller.
    pub options: Vec<String>,
    /// Direct fileset mount or bind mount from the node's shared client mount.
    pub mode: MountMode,
    /// The fileset this node's nodemap roots its client mounts at (its tenant's root), where
    /// the servers enforce nodemaps: the share is then named relative to it, since the
    /// server puts what a client asks for beneath that fileset. `None` on a node of no
    /// tenant. Backends without server-side filesets ignore it.
    pub fileset: Option<RelPath>,
    /// The project ID the share's root must show on this node. `lustre` checks the mounted
    /// (direct) or opened (bind) root against it before a pod can see it, since the server
    /// decides what a path names there: another directory, such as a same-named one a tenant
    /// made under its own fileset, is refused ([`BackendError::WrongDirectory`]) and left
    /// unmounted. `local` binds the host path itself, so it has nothing to check. `None`
    /// when it cannot be known on this node (no project, or one its nodemap squashes).
    pub expect_project: Option<ProjectId>,
}

/// A filesystem lustrekit manages shares on: the name callers use. Its methods come from the
/// role traits it is made of ([`Namespace`], [`Quotas`], [`Nodemaps`], [`Hsm`], [`Mounts`], [`Pcc`], in
/// the object_store style), so a caller that needs one role names only that one, and a
/// backend implements each role beside the code of that area. Callers ask
/// [`Filesystem::capabilities`] what a backend does; [`Filesystem::kind`] is for names and logs.
///
/// Every method is idempotent: a retry after a timeout or a crash converges without error.
/// Paths are relative to the filesystem root and are validated [`RelPath`]s, so no caller can
/// name anything outside it.
pub trait Filesystem:
    Namespace + Quotas + Nodemaps + Hsm + Mounts + ClientParams + Pcc + Encryption + 'static
{
    fn kind(&self) -> BackendKind;
    fn capabilities(&self) -> Capabilities;
    /// The absolute path of `dir` as this host (or the node) sees it.
    fn host_path(&self, dir: &RelPath) -> PathBuf;

    fn kind_name(&self) -> &'static str {
        match self.kind() {
            BackendKind::Lustre => "lustre",
            BackendKind::Local => "local",
        }
    }
}

/// Directories, atomic claims and small state files, beneath the filesystem root.
#[async_trait]
pub trait Namespace: Send + Sync {
    /// Creates the plain directories of `dir` (like `mkdir -p`), for prefixes and trash areas.
    async fn ensure_dir(&self, dir: &RelPath) -> Result<()>;
    /// Creates a share directory (a subvolume where the backend has them). Its parent must
    /// exist. Returns false when it already existed, which is not an error.
    async fn create_share_dir(&self, dir: &RelPath, spec: &DirSpec) -> Result<bool>;
    /// Removes a share directory and everything in it. Returns false when it was already gone.
    async fn remove_share_dir(&self, dir: &RelPath) -> Result<bool>;
    /// Renames within the filesystem (used by the trash can). Fails if `to` exists.
    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<()>;
    async fn stat_dir(&self, dir: &RelPath) -> Result<Option<DirInfo>>;
    /// Names of the entries of `dir`; an absent directory lists as empty.
    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<String>>;
    /// Atomically claims `marker` (a directory made with a single `mkdir`). True if this call
    /// made it, false if it already existed. This is how project IDs are allocated
    /// collision-free across processes and hosts.
    async fn claim(&self, marker: &RelPath) -> Result<bool>;
    /// Gives back a claim; a claim already gone is fine.
    async fn unclaim(&self, marker: &RelPath) -> Result<()>;
    /// Reads a small state file; `None` when absent.
    async fn read_file(&self, file: &RelPath) -> Result<Option<Vec<u8>>>;
    /// Writes a small state file atomically (temporary file, then rename).
    async fn write_file(&self, file: &RelPath, content: &[u8]) -> Result<()>;
    async fn remove_file(&self, file: &RelPath) -> Result<()>;
    /// Sets the default layout of `dir` (what files made inside get), then reads it back
    /// and fails unless it is the one asked for. Only where [`Capabilities::striping`].
    async fn set_default_layout(&self, dir: &RelPath, layout: &LayoutSpec) -> Result<()> {
        let _ = (dir, layout);
        Err(BackendError::unsupported(
            "striping",
            "this backend has no stripes (its directories take no default layout)",
        ))
    }
    /// Makes the sparse image file of a block volume in the share directory `dir`
    /// ([`crate::block::BLOCK_IMAGE`], root-only, never through a symlink), or grows the one
    /// there to `size`; never shrinks it. Returns the image's size. Only where
    /// [`Capabilities::block_volumes`].
    async fn ensure_block_image(&self, dir: &RelPath, size: u64) -> Result<u64> {
        let _ = (dir, size);
        Err(BackendError::unsupported(
            "block volumes",
            "this backend keeps no block images",
        ))
    }
    /// Opens the block image of the share directory `dir` for a loop device (read-write
    /// unless `read_only`): a regular file beneath the root, no symlink followed, nothing
    /// else opened. `None` when the share has no image.
    async fn open_block_image(&self, dir: &RelPath, read_only: bool) -> Result<Option<OwnedFd>> {
        let _ = (dir, read_only);
        Err(BackendError::unsupported(
            "block volumes",
            "this backend keeps no block images",
        ))
    }
    /// Whether share directories can be given `compression` (no I/O): `Ok`, or an error
    /// that says what is missing ([`BackendError::Unsupported`], or
    /// [`BackendError::NeedsVersion`] when a newer release has it).
    fn check_compression(&self, compression: &Compression) -> Result<()> {
        let _ = compression;
        Err(BackendError::unsupported(
            "compression",
            "this backend compresses no data",
        ))
    }
    /// Makes what is written in `dir` from now on compressed with `compression`, then
    /// reads it back and fails unless it took. Only where [`Namespace::check_compression`]
    /// allows it.
    async fn set_compression(&self, dir: &RelPath, compression: &Compression) -> Result<()> {
        let _ = dir;
        self.check_compression(compression)
    }
}

/// The tunables of this node's filesystem client, which a volume sets while it is
/// published (the node plugin keeps the count and puts the old values back). Only where
/// [`Capabilities::client_tunables`].
#[async_trait]
pub trait ClientParams: Send + Sync {
    /// Each client device's current value of `tunable` (`lctl get_param`), for the devices
    /// of this backend's filesystem on this node; empty when none is mounted here.
    async fn client_param_values(&self, tunable: &ClientTunable) -> Result<Vec<ParamValue>> {
        let _ = tunable;
        Err(no_client())
    }
    /// Sets `tunable` on every client device of the filesystem on this node.
    async fn set_client_tunable(&self, tunable: &ClientTunable) -> Result<()> {
        let _ = tunable;
        Err(no_client())
    }
    /// Puts one device's value back, as [`ClientParams::client_param_values`] read it. A
    /// device that is gone (its mount went away) is success.
    async fn restore_client_param(&self, value: &ParamValue) -> Result<()> {
        let _ = value;
        Err(no_client())
    }
}

/// fscrypt v2 on this filesystem (see [`crate::fscrypt`]): the same kernel ioctls on a
/// local root or a Lustre client mount. Only where [`Capabilities::encryption`]. Keys are
/// taken and given as [`SecretKey`]; only their identifiers come back.
#[async_trait]
pub trait Encryption: Send + Sync {
    /// Whether policies can be set here, checked against what the host has (on `lustre`,
    /// the client's version): CreateVolume asks before it makes a key or a share.
    async fn check_encryption(&self) -> Result<()> {
        Err(no_encryption())
    }
    /// Gives `key` to the filesystem, sets a v2 policy for it on the empty directory `dir`,
    /// then takes the key away again (a node adds it when it publishes). Returns the key's
    /// identifier. The same key again on a directory that already has its policy is success.
    async fn encrypt_empty_dir(&self, dir: &RelPath, key: Arc<SecretKey>) -> Result<KeyIdentifier> {
        let _ = (dir, key);
        Err(no_encryption())
    }
    /// Adds `key` to the filesystem on this node; returns its identifier.
    async fn add_encryption_key(&self, key: Arc<SecretKey>) -> Result<KeyIdentifier> {
        let _ = key;
        Err(no_encryption())
    }
    /// Removes key `id` from the filesystem on this node: what it encrypts then reads as
    /// "Required key not available". A key that is not there is success.
    async fn remove_encryption_key(&self, id: &KeyIdentifier) -> Result<KeyRemoval> {
        let _ = id;
        Err(no_encryption())
    }
    /// The key identifier of `dir`'s policy; `None` when it is not encrypted.
    async fn encryption_policy(&self, dir: &RelPath) -> Result<Option<KeyIdentifier>> {
        let _ = dir;
        Err(no_encryption())
    }
}

fn no_encryption() -> BackendError {
    BackendError::unsupported(
        "encryption",
        "this backend's filesystem has no fscrypt (on local: ext4 made with -O encrypt)",
    )
}

fn no_client() -> BackendError {
    BackendError::unsupported(
        "client tunables",
        "this backend has no filesystem client (llite, osc and mdc parameters are Lustre's)",
    )
}

/// Project IDs, project quotas, and the capacity of the whole filesystem.
#[async_trait]
pub trait Quotas: Send + Sync {
    /// Sets the project ID on `dir` with the inherit flag, so everything made inside counts.
    async fn set_project(&self, dir: &RelPath, id: ProjectId) -> Result<()>;
    async fn project_of(&self, dir: &RelPath) -> Result<Option<ProjectId>>;
    async fn set_quota(&self, dir: &RelPath, id: ProjectId, limits: &QuotaLimits) -> Result<()>;
    /// Usage and limits, cheap enough for periodic stats: a backend may serve numbers a
    /// little behind the writes (see its documentation for how far).
    async fn quota(&self, dir: &RelPath, id: ProjectId) -> Result<QuotaReport>;
    /// [`Quotas::quota`] as current as the backend can make it, at a cost (on btrfs, a
    /// filesystem-wide commit and a fresh walk): for decisions such as refusing a shrink.
    async fn quota_now(&self, dir: &RelPath, id: ProjectId) -> Result<QuotaReport> {
        self.quota(dir, id).await
    }
    /// Space and inodes of the whole filesystem.
    async fn capacity(&self) -> Result<Capacity>;
    /// Whether root's writes count against (and are stopped by) project quotas: what keeps a
    /// tenant's root from filling the filesystem past its tenant's quota.
    /// The default cannot say.
    async fn root_project_quota(&self) -> Result<RootProjectQuota> {
        Ok(RootProjectQuota::Unknown {
            why: "this backend does not say whether project quotas bind root".into(),
        })
    }
}

/// Whether project quotas bind root, as [`Quotas::root_project_quota`] finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RootProjectQuota {
    /// Every target seen binds root (Lustre 2.16+ `root_prj_enable=1`; btrfs qgroups always).
    Enforced { targets: Vec<String> },
    /// Root is exempt on the targets named (`root_prj_enable=0`).
    NotEnforced { targets: Vec<String> },
    /// The servers cannot say (before 2.16 the parameter does not exist); `why` says why.
    Unknown { why: String },
}

/// Nodemaps: which nodes may mount what, as the live state and ordered changes to it.
#[async_trait]
pub trait Nodemaps: Send + Sync {
    async fn nodemaps(&self) -> Result<NodemapState>;
    async fn apply_nodemap_changes(&self, changes: &[NodemapChange]) -> Result<()>;
}

/// The HSM state of files, by absolute host path. The defaults say the backend has none.
#[async_trait]
pub trait Hsm: Send + Sync {
    /// The HSM state of one file, by absolute host path.
    async fn hsm_state(&self, file: &Path) -> Result<HsmState> {
        Err(crate::BackendError::unsupported(
            "hsm_state",
            format!("this backend has no HSM state for {}", file.display()),
        ))
    }
    /// Sets and clears HSM flags, and records the archive ID when given.
    async fn hsm_mark(
        &self,
        file: &Path,
        set: HsmFlags,
        clear: HsmFlags,
        archive_id: Option<u32>,
    ) -> Result<()> {
        let _ = (set, clear, archive_id);
        Err(crate::BackendError::unsupported(
            "hsm_mark",
            format!("this backend cannot mark {}", file.display()),
        ))
    }
    /// Frees the data blocks of an archived file, keeping its size and metadata.
    async fn hsm_release(&self, file: &Path) -> Result<()> {
        Err(crate::BackendError::unsupported(
            "hsm_release",
            format!("this backend cannot release {}", file.display()),
        ))
    }

    /// The file's current data version, taken after flushing what clients have cached (on
    /// Lustre `lfs data_version --read`; on `local`, from a descriptor opened beneath the root).
    async fn data_version(&self, file: &Path) -> Result<DataVersion> {
        Err(crate::BackendError::unsupported(
            "data_version",
            format!("this backend has no data version for {}", file.display()),
        ))
    }

    /// [`Hsm::hsm_release`] for a caller that made sure a restore-on-access daemon
    /// watches the file's filesystem (its reads of released files are held by the daemon,
    /// not by the filesystem). A backend whose exclusion of other processes during the
    /// release would conflict with that daemon (the `local` backend's write lease against
    /// the daemon's event descriptors) releases differently here, leaving the exclusion to
    /// the daemon. The default is [`Hsm::hsm_release`].
    async fn hsm_release_watched(&self, file: &Path) -> Result<()> {
        self.hsm_release(file).await
    }
    /// [`Hsm::hsm_state`] with the release in progress on the file, if any: what a
    /// restore-on-access daemon asks on every access. The default knows of no release in
    /// progress.
    async fn hsm_access_state(&self, file: &Path) -> Result<HsmAccessState> {
        Ok(HsmAccessState {
            state: self.hsm_state(file).await?,
            releasing: None,
        })
    }
    /// [`Hsm::hsm_access_state`] of a file already open, such as a restore-on-access
    /// daemon's event descriptor: the state of that very inode, whatever its name is by now
    /// (`shown_as` names it in errors). Blocking, and only local calls: the caller runs it on
    /// its blocking pool. `None` where the backend can tell only by path (the default).
    fn hsm_access_state_of_open(
        &self,
        shown_as: &Path,
        file: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Option<HsmAccessState>> {
        let _ = (shown_as, file);
        Ok(None)
    }
}

/// Mounts on the node: publishing a share at a target, unmounting it, and what `df` shows.
#[async_trait]
pub trait Mounts: Send + Sync {
    async fn mount(&self, request: &MountRequest) -> Result<()>;
    /// Unmounts with a bounded cascade: normal, then forced, then lazy. A target that is not
    /// mounted (or does not exist) is success.
    async fn unmount(&self, target: &Path) -> Result<()>;
    /// What `statfs` (and so `df`) inside this node's volumes reports: the volume's quota or
    /// the whole filesystem. Asked at publish, so that a pod's `df` is explained.
    async fn volume_statfs(&self) -> Result<VolumeStatfs>;
}

fn no_pcc(what: &'static str) -> BackendError {
    BackendError::unsupported(
        what,
        "this backend has no Persistent Client Cache (Lustre 2.13+ clients only)",
    )
}

/// The Persistent Client Cache of this node (`lctl pcc` and `lfs pcc`, run on the node):
/// a cache directory on local storage is registered on a client mount with an auto-cache
/// rule, files are attached to it (copied in) and detached (dropped from it). Only where
/// [`Capabilities::pcc`]; the defaults say the backend has none.
#[async_trait]
pub trait Pcc: Send + Sync {
    /// The PCC syntax of this node's client, from its version.
    async fn pcc_dialect(&self) -> Result<PccDialect> {
        Err(no_pcc("pcc"))
    }
    /// Registers `cache` on the client mount `mount` with `param` (`lctl pcc add`). A cache
    /// already registered there with the same rule is success; with another, an error.
    async fn pcc_add(&self, mount: &Path, cache: &Path, param: &PccAddParam) -> Result<()> {
        let _ = (mount, cache, param);
        Err(no_pcc("pcc add"))
    }
    /// Unregisters `cache` from `mount` (`lctl pcc del`), detaching its files. Returns false
    /// when it was not registered, which is not an error.
    async fn pcc_del(&self, mount: &Path, cache: &Path) -> Result<bool> {
        let _ = (mount, cache);
        Err(no_pcc("pcc del"))
    }
    /// The caches registered on `mount` (`lctl pcc list`).
    async fn pcc_list(&self, mount: &Path) -> Result<Vec<PccDataset>> {
        let _ = mount;
        Err(no_pcc("pcc list"))
    }
    /// Attaches `file` (an absolute path under a client mount) to the cache of `id`
    /// (`lfs pcc attach`).
    async fn pcc_attach(&self, file: &Path, id: u32, mode: PccMode) -> Result<()> {
        let _ = (file, id, mode);
        Err(no_pcc("pcc attach"))
    }
    /// How `file` is cached (`lfs pcc state`).
    async fn pcc_state(&self, file: &Path) -> Result<PccFileState> {
        let _ = file;
        Err(no_pcc("pcc state"))
    }
    /// Detaches the file `fid` of the client mount `mount` from its cache, dropping the
    /// cache copy (`lfs pcc detach_fid`). A file no longer cached is success.
    async fn pcc_detach_fid(&self, mount: &Path, fid: &Fid) -> Result<()> {
        let _ = (mount, fid);
        Err(no_pcc("pcc detach"))
    }
    /// The `pcc_*` counters of each client mount of the filesystem on this node.
    async fn pcc_counters(&self) -> Result<Vec<PccCounters>> {
        Err(no_pcc("pcc counters"))
    }
}
