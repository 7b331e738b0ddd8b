//! What a volume is to the driver: how a volume ID or a volume context names a share, which
//! capabilities it accepts, and what the context carries to the node.

use std::collections::HashMap;

use lustre_model::{ProjectId, RelPath, ShareName, VolumeId};
use share::{Share, ShareSettings};

use crate::error::{CsiError, Result};
use crate::grpc::{VolumeCapability, volume_capability};
use crate::params::{HsmParams, MountMode, PccParams, ReadMode, keys, parse_mount_mode};

/// Volume context keys. CreateVolume writes them; a static PV's `volumeAttributes` names at
/// least [`context::SHARE_PATH`] (and `static: "true"`).
pub mod context {
    /// The share directory relative to the filesystem root (`shares/pvc-1234`).
    pub const SHARE_PATH: &str = "sharePath";
    pub const PROJECT_ID: &str = "projectId";
    pub const FS_NAME: &str = "fsName";
    /// `<nids>:/<fsname>/<path>`, or the host path on `local`.
    pub const EXPORT: &str = "exportLocation";
    pub const MOUNT_MODE: &str = "mountMode";
    pub const STATIC: &str = "static";
    /// Kubernetes adds these to every NodePublishVolume context (podInfoOnMount); they are
    /// accepted and ignored.
    pub const POD_PREFIX: &str = "csi.storage.k8s.io/";
    /// csi-provisioner adds `storage.kubernetes.io/csiProvisionerIdentity` to every PV.
    pub const PROVISIONER_PREFIX: &str = "storage.kubernetes.io/";

    /// An HSM volume's entries are its StorageClass keys (`params::keys`), in canonical forms
    /// (seconds, bytes, percentages, comma-separated globs): the store URL (credential-free;
    /// the node publish secret has the keys), read mode, prefetch globs, restore timeout and
    /// the policy the publishing node runs. `hsmImportFrom` is the controller's alone.
    pub use super::keys::{
        HSM_ARCHIVE_AFTER, HSM_EXCLUDE, HSM_INCLUDE, HSM_MIN_SIZE, HSM_PREFETCH, HSM_READ_MODE,
        HSM_RELEASE_HIGH, HSM_RELEASE_LOW, HSM_RESTORE_TIMEOUT, HSM_STORE,
    };
    /// The HSM entries, as the node reads them back.
    pub const HSM: &[&str] = &[
        HSM_STORE,
        HSM_READ_MODE,
        HSM_PREFETCH,
        HSM_ARCHIVE_AFTER,
        HSM_INCLUDE,
        HSM_EXCLUDE,
        HSM_MIN_SIZE,
        HSM_RELEASE_HIGH,
        HSM_RELEASE_LOW,
        HSM_RESTORE_TIMEOUT,
    ];
    /// The client tunables in their canonical form (see [`lustre_model::ClientTunables`]).
    pub const CLIENT_TUNABLES: &str = "clientTunables";
    /// `block` for a block volume (an image file in the share, published as a device);
    /// absent (or `filesystem`) for a directory volume.
    pub const VOLUME_MODE: &str = "volumeMode";
    /// The volume's tenant (see [`crate::tenancy`]).
    pub const TENANT: &str = "tenant";

    pub const ALL: &[&str] = &[
        SHARE_PATH,
        PROJECT_ID,
        FS_NAME,
        EXPORT,
        MOUNT_MODE,
        STATIC,
        HSM_STORE,
        HSM_READ_MODE,
        HSM_PREFETCH,
        HSM_ARCHIVE_AFTER,
        HSM_INCLUDE,
        HSM_EXCLUDE,
        HSM_MIN_SIZE,
        HSM_RELEASE_HIGH,
        HSM_RELEASE_LOW,
        HSM_RESTORE_TIMEOUT,
        CLIENT_TUNABLES,
        VOLUME_MODE,
        // A PCC volume's entries: the StorageClass keys (`params::keys::PCC`), spelt out.
        super::keys::HOT_NODES,
        super::keys::PCC_CACHE,
        super::keys::PCC_AUTOCACHE,
        super::keys::PCC_MODE,
        super::keys::PCC_ID,
        super::keys::PCC_PURGE_HIGH,
        super::keys::PCC_PURGE_LOW,
        super::keys::PCC_PURGE_INTERVAL,
        TENANT,
    ];
}

/// What a volume is to its pod: a directory (a mount) or a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    Mount,
    Block,
}

impl AccessKind {
    /// The volume context value (and share label) of a block volume.
    pub const BLOCK: &'static str = "block";

    pub fn name(self) -> &'static str {
        match self {
            Self::Mount => "Mount",
            Self::Block => "Block",
        }
    }
}

/// The access kind of a checked capability.
pub fn access_kind(cap: &VolumeCapability) -> AccessKind {
    match cap.access_type {
        Some(volume_capability::AccessType::Block(_)) => AccessKind::Block,
        _ => AccessKind::Mount,
    }
}

/// The one access kind a list of capabilities asks for: a volume is a directory or a
/// device, never both.
pub fn access_kind_of(caps: &[VolumeCapability]) -> Result<AccessKind> {
    check_capabilities(caps)?;
    let first = access_kind(&caps[0]);
    if caps.iter().any(|c| access_kind(c) != first) {
        return Err(CsiError::invalid(
            "volume capabilities mix Block and Mount access: a volume is one or the other",
        ));
    }
    Ok(first)
}

/// The volume context entries of a block volume (none for a directory volume).
pub fn block_context(kind: AccessKind) -> Vec<(String, String)> {
    match kind {
        AccessKind::Block => vec![(
            context::VOLUME_MODE.to_string(),
            AccessKind::BLOCK.to_string(),
        )],
        AccessKind::Mount => Vec::new(),
    }
}

/// The volume context entries of a PCC volume (none for a plain one): its StorageClass
/// keys with every default spelt out, so a later change of the driver's defaults does not
/// change a published volume.
pub fn pcc_context(pcc: Option<&PccParams>) -> Vec<(String, String)> {
    pcc.map(PccParams::entries).unwrap_or_default()
}

/// The PCC parameters of a volume from its context (`None` for a volume without a
/// cache), checked as the StorageClass parameters are (a static PV may name them by hand).
/// What the node plugin reads at publish.
pub fn node_pcc(ctx: &HashMap<String, String>) -> Result<Option<PccParams>> {
    let as_params: HashMap<String, String> = keys::PCC
        .iter()
        .filter_map(|k| ctx.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    PccParams::parse(&as_params).map_err(|e| CsiError::invalid(format!("volume context: {e}")))
}

/// The volume context entries of an HSM volume (none for a plain one).
pub fn hsm_context(hsm: Option<&HsmParams>) -> Vec<(String, String)> {
    let Some(hsm) = hsm else {
        return Vec::new();
    };
    let mut out = vec![
        (context::HSM_STORE.to_string(), hsm.store.clone()),
        (
            context::HSM_READ_MODE.to_string(),
            hsm.read_mode.as_str().to_string(),
        ),
    ];
    if !hsm.prefetch.is_empty() {
        out.push((context::HSM_PREFETCH.to_string(), hsm.prefetch.join(",")));
    }
    let mut put = |key: &str, value: String| out.push((key.to_string(), value));
    if let Some(secs) = hsm.archive_after_secs {
        put(context::HSM_ARCHIVE_AFTER, secs.to_string());
    }
    if !hsm.include.is_empty() {
        put(context::HSM_INCLUDE, hsm.include.join(","));
    }
    if !hsm.exclude.is_empty() {
        put(context::HSM_EXCLUDE, hsm.exclude.join(","));
    }
    if let Some(bytes) = hsm.min_size_bytes {
        put(context::HSM_MIN_SIZE, bytes.to_string());
    }
    if let Some(w) = &hsm.watermarks {
        put(context::HSM_RELEASE_HIGH, w.high_percent.to_string());
        put(context::HSM_RELEASE_LOW, w.low_percent.to_string());
    }
    if let Some(secs) = hsm.restore_timeout_secs {
        put(context::HSM_RESTORE_TIMEOUT, secs.to_string());
    }
    out
}

/// What the node knows of an HSM volume from its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHsm {
    pub store: String,
    pub read_mode: ReadMode,
    pub prefetch: Vec<String>,
    /// The archive and release policy (`None`: the volume has neither).
    pub policy: Option<VolumePolicy>,
    /// How long a read of a released file waits for its restore.
    pub restore_timeout: std::time::Duration,
}

/// The context CreateVolume returns for a share, with `extra` entries (an HSM volume's).
pub fn context_for(
    share: &Share,
    settings: &ShareSettings,
    mount_mode: &str,
    extra: Vec<(String, String)>,
) -> HashMap<String, String> {
    let mut ctx = HashMap::from([
        (
            context::SHARE_PATH.to_string(),
            share.path.as_str().to_string(),
        ),
        (
            context::PROJECT_ID.to_string(),
            share.project_id.get().to_string(),
        ),
        (context::FS_NAME.to_string(), settings.fsname.to_string()),
        (context::EXPORT.to_string(), share.export_location.clone()),
        (context::MOUNT_MODE.to_string(), mount_mode.to_string()),
    ]);
    ctx.extend(extra);
    ctx.extend(crate::tenancy::context_entry(share));
    ctx
}

/// The share a volume ID names, if it is one of ours: `v1/<fsname>/<project>/<prefix>/<name>`.
/// Anything else (another format, another filesystem, a path outside the prefix) is `None`.
pub fn share_of(volume_id: &str, settings: &ShareSettings) -> Option<(VolumeId, ShareName)> {
    let id: VolumeId = volume_id.parse().ok()?;
    if id.fs_key != settings.fsname.as_str()
        || !id
            .path
            .parent()
            .is_some_and(|p| settings.is_share_parent(&p))
    {
        return None;
    }
    let name = ShareName::new(id.path.file_name()).ok()?;
    Some((id, name))
}

/// Where the node finds a volume's data, and its project (for stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVolume {
    pub path: RelPath,
    pub project: Option<ProjectId>,
    pub is_static: bool,
    /// From the context's `mountMode` (a static PV may name it too); `direct` when absent.
    pub mount_mode: MountMode,
    /// Set for an HSM volume (the context names `hsmStore`).
    pub hsm: Option<NodeHsm>,
    /// From the context's `volumeMode`: a block volume's data is its image file.
    pub kind: AccessKind,
    /// Client tunables to hold on the node while the volume is published.
    pub tunables: lustre_model::ClientTunables,
    /// The key to add while an encrypted volume is published.
    pub encryption: Option<crate::encryption::NodeEncryption>,
}

/// The volume context entry of a class's client tunables (none when it sets none).
pub fn tunables_context(tunables: &lustre_model::ClientTunables) -> Vec<(String, String)> {
    if tunables.is_empty() {
        return Vec::new();
    }
    vec![(context::CLIENT_TUNABLES.to_string(), tunables.to_string())]
}

/// Resolves the share path for the node: the volume context's `sharePath` (always present for
/// volumes we created, and what a static PV names), else the volume ID. Unknown context keys
/// are refused, so a typo in a static PV is an error and not a mount of the wrong thing.
pub fn node_volume(
    volume_id: &str,
    ctx: &HashMap<String, String>,
    settings: &ShareSettings,
) -> Result<NodeVolume> {
    let mut unknown: Vec<&str> = ctx
        .keys()
        .map(String::as_str)
        .filter(|k| {
            !context::ALL.contains(k)
                && !crate::encryption::context::ALL.contains(k)
                && !k.starts_with(context::POD_PREFIX)
                && !k.starts_with(context::PROVISIONER_PREFIX)
        })
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(CsiError::invalid(format!(
            "unknown volume context key(s) {unknown:?}; known: {:?}",
            context::ALL
        )));
    }
    let is_static = match ctx.get(context::STATIC).map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(CsiError::invalid(format!(
                "volume context {}={other:?}: expected true or false",
                context::STATIC
            )));
        }
    };
    if let Some(fs) = ctx.get(context::FS_NAME)
        && fs != settings.fsname.as_str()
    {
        return Err(CsiError::invalid(format!(
            "volume context {}={fs:?}, but this driver serves {:?}",
            context::FS_NAME,
            settings.fsname.as_str()
        )));
    }
    let mount_mode = ctx
        .get(context::MOUNT_MODE)
        .map(|m| parse_mount_mode(m))
        .transpose()
        .map_err(|e| CsiError::invalid(format!("volume context: {e}")))?
        .unwrap_or_default();
    let hsm = node_hsm(ctx)?;
    let encryption = crate::encryption::NodeEncryption::from_context(ctx)?;
    let tunables = lustre_model::ClientTunables::parse(
        ctx.get(context::CLIENT_TUNABLES)
            .map(String::as_str)
            .unwrap_or(""),
    )
    .map_err(|e| CsiError::invalid(format!("volume context {}: {e}", context::CLIENT_TUNABLES)))?;
    let kind = match ctx.get(context::VOLUME_MODE).map(String::as_str) {
        None | Some("filesystem") => AccessKind::Mount,
        Some(AccessKind::BLOCK) => AccessKind::Block,
        Some(other) => {
            return Err(CsiError::invalid(format!(
                "volume context {}={other:?}: expected block or filesystem",
                context::VOLUME_MODE
            )));
        }
    };
    if kind == AccessKind::Block && hsm.is_some() {
        return Err(CsiError::invalid(
            "a block volume cannot be an HSM volume (its data is one image file)",
        ));
    }
    let project = match ctx.get(context::PROJECT_ID) {
        Some(text) => Some(text.parse::<ProjectId>().map_err(|e| {
            CsiError::invalid(format!("volume context {}: {e}", context::PROJECT_ID))
        })?),
        None => None,
    };
    if let Some(path) = ctx.get(context::SHARE_PATH) {
        let path = RelPath::parse(path.trim_start_matches("./")).map_err(|e| {
            CsiError::invalid(format!("volume context {}: {e}", context::SHARE_PATH))
        })?;
        let id_project = volume_id.parse::<VolumeId>().ok().map(|id| id.project);
        return Ok(NodeVolume {
            path,
            project: project.or(id_project),
            is_static,
            mount_mode,
            hsm,
            tunables,
            kind,
            encryption,
        });
    }
    if is_static {
        return Err(CsiError::invalid(format!(
            "a static volume needs {} in its volume context",
            context::SHARE_PATH
        )));
    }
    match volume_id.parse::<VolumeId>() {
        Ok(id) if id.fs_key == settings.fsname.as_str() => Ok(NodeVolume {
            path: id.path,
            project: Some(id.project),
            is_static: false,
            mount_mode,
            hsm,
            tunables,
            kind,
            encryption,
        }),
        Ok(id) => Err(CsiError::NotFound(format!(
            "volume {volume_id:?} is on filesystem {:?}, not {:?}",
            id.fs_key,
            settings.fsname.as_str()
        ))),
        Err(e) => Err(CsiError::NotFound(format!("volume {volume_id:?}: {e}"))),
    }
}

/// The HSM entries of a volume context, checked as the StorageClass parameters are (a static
/// PV may name them by hand).
fn node_hsm(ctx: &HashMap<String, String>) -> Result<Option<NodeHsm>> {
    let as_params: HashMap<String, String> = context::HSM
        .iter()
        .filter_map(|k| ctx.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    let hsm = HsmParams::parse(&as_params)
        .map_err(|e| CsiError::invalid(format!("volume context: {e}")))?;
    Ok(hsm.map(|h| NodeHsm {
        policy: VolumePolicy::of(&h),
        restore_timeout: std::time::Duration::from_secs(
            h.restore_timeout_secs
                .unwrap_or(crate::params::DEFAULT_RESTORE_TIMEOUT_SECS),
        ),
        store: h.store,
        read_mode: h.read_mode,
        prefetch: h.prefetch,
    }))
}

/// An HSM volume's archive and release policy (StorageClass `hsmArchiveAfter`,
/// `hsmInclude`, `hsmExclude`, `hsmMinSize`, `hsmReleaseHigh`, `hsmReleaseLow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePolicy {
    /// Archive files left unchanged this long (`None`: no archiving).
    pub archive_after_secs: Option<u64>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub min_size_bytes: Option<u64>,
    /// Release when the volume's quota is fuller than the high watermark (`None`: never).
    pub watermarks: Option<crate::params::Watermarks>,
}

impl VolumePolicy {
    /// The policy of `hsm`, `None` when it neither archives nor releases.
    pub fn of(hsm: &HsmParams) -> Option<Self> {
        (hsm.archive_after_secs.is_some() || hsm.watermarks.is_some()).then(|| Self {
            archive_after_secs: hsm.archive_after_secs,
            include: hsm.include.clone(),
            exclude: hsm.exclude.clone(),
            min_size_bytes: hsm.min_size_bytes,
            watermarks: hsm.watermarks,
        })
    }

    /// The policy engine's configuration for the volume's directory `share_dir` (below
    /// the filesystem root): release measures the share's own project quota.
    pub fn config(&self, share_dir: &str, interval_secs: u64) -> hsm::policy::PolicyConfig {
        hsm::policy::PolicyConfig {
            path: None,
            dry_run: false,
            rate_limit: None,
            scan_workers: 2,
            archive: self
                .archive_after_secs
                .map(|secs| hsm::policy::ArchiveRule {
                    older_than_minutes: secs as f64 / 60.0,
                    include: self.include.clone(),
                    exclude: self.exclude.clone(),
                    min_size: self.min_size_bytes.map(hsm::policy::Size),
                    max_size: None,
                }),
            release: self.watermarks.map(|w| hsm::policy::ReleaseRule {
                high_watermark: f64::from(w.high_percent),
                low_watermark: f64::from(w.low_percent),
                share: Some(share_dir.to_string()),
                capacity: None,
                min_size: None,
            }),
            watch: hsm::policy::WatchConfig {
                debounce_ms: 2000,
                interval_secs,
            },
        }
    }
}

/// Whether a capability is one we serve: a mount (the share directory) or a block device
/// (an image file in it), with a known access mode. All access modes work, since every node
/// sees the same filesystem (a multi-node writer of a block device must coordinate itself,
/// as with any shared disk).
pub fn check_capability(cap: &VolumeCapability) -> Result<()> {
    if cap.access_type.is_none() {
        return Err(CsiError::invalid("volume capability has no access type"));
    }
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or_else(|| CsiError::invalid("volume capability has no access mode"))?;
    match volume_capability::access_mode::Mode::try_from(mode.mode) {
        Ok(volume_capability::access_mode::Mode::Unknown) | Err(_) => Err(CsiError::invalid(
            format!("access mode {} is not supported", mode.mode),
        )),
        Ok(_) => Ok(()),
    }
}

pub fn check_capabilities(caps: &[VolumeCapability]) -> Result<()> {
    if caps.is_empty() {
        return Err(CsiError::Missing("volume_capabilities"));
    }
    caps.iter().try_for_each(check_capability)
}

/// Whether a capability asks for read-only access.
pub fn is_read_only_mode(cap: &VolumeCapability) -> bool {
    use volume_capability::access_mode::Mode;
    cap.access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .is_some_and(|m| matches!(m, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly))
}

/// The mount flags of a capability, each checked to be a plain option (no commas, no
/// control characters), so one flag cannot smuggle in others.
pub fn mount_flags(cap: &VolumeCapability) -> Result<Vec<String>> {
    let Some(volume_capability::AccessType::Mount(mount)) = &cap.access_type else {
        return Ok(Vec::new());
    };
    let mut flags = Vec::new();
    for flag in &mount.mount_flags {
        for part in flag.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if part.chars().any(char::is_control) || part.len() > 256 {
                return Err(CsiError::invalid(format!(
                    "mount flag {flag:?} is not a valid option"
                )));
            }
            flags.push(part.to_string());
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};

    fn settings() -> ShareSettings {
        let config = share::Config::from_toml(
            "backend = \"local\"\nfsname = \"lfs1\"\nproject_ids = \"1000-1999\"\n[local]\nroot = \"/tmp/x\"\n",
        )
        .unwrap();
        config.settings().unwrap()
    }

    fn cap(access: AccessType, mode: i32) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(access),
            access_mode: Some(AccessMode { mode }),
        }
    }

    #[test]
    fn volume_ids_map_to_shares_only_under_the_prefix() {
        let s = settings();
        let (id, name) = share_of("v1/lfs1/1001/shares/pvc-1", &s).unwrap();
        assert_eq!(name.as_str(), "pvc-1");
        assert_eq!(id.project.get(), 1001);
        for other in [
            "v1/other/1001/shares/pvc-1",
            "v1/lfs1/1001/elsewhere/pvc-1",
            "v1/lfs1/1001/shares",
            "v1/lfs1/1001/shares/a/b",
            "v2/lfs1/1001/shares/pvc-1",
            "some-vol-id",
            "",
        ] {
            assert!(share_of(other, &s).is_none(), "{other}");
        }
    }

    #[test]
    fn node_volumes_come_from_the_context_or_the_id() {
        let s = settings();
        let v = node_volume("v1/lfs1/1001/shares/pvc-1", &HashMap::new(), &s).unwrap();
        assert_eq!(v.path.as_str(), "shares/pvc-1");
        let ctx = HashMap::from([
            (context::STATIC.to_string(), "true".to_string()),
            (
                context::SHARE_PATH.to_string(),
                "datasets/imagenet".to_string(),
            ),
            ("csi.storage.k8s.io/pod.name".to_string(), "p".to_string()),
        ]);
        let v = node_volume("my-static-pv", &ctx, &s).unwrap();
        assert_eq!(v.path.as_str(), "datasets/imagenet");
        assert!(v.is_static && v.project.is_none());
        for bad in ["../etc", "/etc", "a/../../b", "a\0b", ""] {
            let ctx = HashMap::from([(context::SHARE_PATH.to_string(), bad.to_string())]);
            assert_eq!(
                node_volume("x", &ctx, &s).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad:?}"
            );
        }
        let typo = HashMap::from([("sharepath".to_string(), "a".to_string())]);
        assert_eq!(
            node_volume("x", &typo, &s).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let static_without_path =
            HashMap::from([(context::STATIC.to_string(), "true".to_string())]);
        assert!(node_volume("x", &static_without_path, &s).is_err());
        assert_eq!(
            node_volume("garbage", &HashMap::new(), &s)
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
    }

    #[test]
    fn the_volume_mode_comes_from_the_context() {
        let s = settings();
        let id = "v1/lfs1/1001/shares/pvc-1";
        assert_eq!(
            node_volume(id, &HashMap::new(), &s).unwrap().kind,
            AccessKind::Mount
        );
        let ctx: HashMap<String, String> = block_context(AccessKind::Block).into_iter().collect();
        assert_eq!(node_volume(id, &ctx, &s).unwrap().kind, AccessKind::Block);
        let bad = HashMap::from([(context::VOLUME_MODE.to_string(), "Block".to_string())]);
        assert_eq!(
            node_volume(id, &bad, &s).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let mut hsm = ctx.clone();
        hsm.insert(context::HSM_STORE.into(), "az://c".into());
        assert_eq!(
            node_volume(id, &hsm, &s).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn the_mount_mode_comes_from_the_context() {
        let s = settings();
        let id = "v1/lfs1/1001/shares/pvc-1";
        let v = node_volume(id, &HashMap::new(), &s).unwrap();
        assert_eq!(v.mount_mode, MountMode::Direct, "absent means direct");
        for (text, mode) in [("direct", MountMode::Direct), ("bind", MountMode::Bind)] {
            let ctx = HashMap::from([(context::MOUNT_MODE.to_string(), text.to_string())]);
            assert_eq!(node_volume(id, &ctx, &s).unwrap().mount_mode, mode);
        }
        let bad = HashMap::from([(context::MOUNT_MODE.to_string(), "Bind".to_string())]);
        assert_eq!(
            node_volume(id, &bad, &s).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn hsm_entries_travel_in_the_context() {
        let s = settings();
        let id = "v1/lfs1/1001/shares/pvc-1";
        assert_eq!(node_volume(id, &HashMap::new(), &s).unwrap().hsm, None);
        let params = HashMap::from([
            (
                "hsmStore".to_string(),
                "az://c/p?use_emulator=true".to_string(),
            ),
            ("hsmPrefetch".to_string(), "a/*,b".to_string()),
            ("hsmImportFrom".to_string(), "x".to_string()),
            ("hsmArchiveAfter".to_string(), "2h".to_string()),
            ("hsmInclude".to_string(), "*.h5,data/**".to_string()),
            ("hsmMinSize".to_string(), "1MiB".to_string()),
            ("hsmReleaseHigh".to_string(), "90%".to_string()),
            ("hsmReleaseLow".to_string(), "70".to_string()),
            ("hsmRestoreTimeout".to_string(), "45s".to_string()),
        ]);
        let hsm = HsmParams::parse(&params).unwrap().unwrap();
        let ctx: HashMap<String, String> = hsm_context(Some(&hsm)).into_iter().collect();
        assert!(
            !ctx.contains_key("hsmImportFrom"),
            "the controller's business only"
        );
        let v = node_volume(id, &ctx, &s).unwrap();
        assert_eq!(
            v.hsm,
            Some(NodeHsm {
                store: "az://c/p?use_emulator=true".into(),
                read_mode: ReadMode::Block,
                prefetch: vec!["a/*".into(), "b".into()],
                restore_timeout: std::time::Duration::from_secs(45),
                policy: Some(VolumePolicy {
                    archive_after_secs: Some(7200),
                    include: vec!["*.h5".into(), "data/**".into()],
                    exclude: vec![],
                    min_size_bytes: Some(1 << 20),
                    watermarks: Some(crate::params::Watermarks {
                        high_percent: 90,
                        low_percent: 70,
                    }),
                }),
            })
        );
        // What the policy engine is given: the share's own quota, ages in minutes.
        let cfg = v.hsm.unwrap().policy.unwrap().config("shares/pvc-1", 60);
        let release = cfg.release.unwrap();
        assert_eq!(release.share.as_deref(), Some("shares/pvc-1"));
        assert_eq!(
            (release.high_watermark, release.low_watermark),
            (90.0, 70.0)
        );
        assert_eq!(cfg.archive.unwrap().older_than_minutes, 120.0);
        let orphan = HashMap::from([(context::HSM_READ_MODE.to_string(), "block".to_string())]);
        assert_eq!(
            node_volume(id, &orphan, &s).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let bad = HashMap::from([
            (context::HSM_STORE.to_string(), "az://c".to_string()),
            (context::HSM_READ_MODE.to_string(), "maybe".to_string()),
        ]);
        let err = node_volume(id, &bad, &s).unwrap_err();
        assert!(err.to_string().contains("hsmReadMode"), "{err}");
    }

    #[test]
    fn capabilities() {
        let mount = AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: vec!["noatime,nosuid".into()],
            volume_mount_group: String::new(),
        });
        assert!(check_capability(&cap(mount.clone(), 5)).is_ok());
        assert!(check_capability(&cap(mount.clone(), 0)).is_err());
        assert!(check_capability(&cap(mount.clone(), 99)).is_err());
        let block = cap(AccessType::Block(BlockVolume {}), 1);
        assert!(check_capability(&block).is_ok());
        assert_eq!(access_kind(&block), AccessKind::Block);
        assert_eq!(
            access_kind_of(&[block.clone(), cap(mount.clone(), 1)])
                .unwrap_err()
                .code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            access_kind_of(std::slice::from_ref(&block)).unwrap(),
            AccessKind::Block
        );
        assert!(mount_flags(&block).unwrap().is_empty());
        let no_type = VolumeCapability {
            access_type: None,
            access_mode: Some(AccessMode { mode: 1 }),
        };
        assert!(check_capability(&no_type).is_err());
        assert!(check_capabilities(&[]).is_err());
        assert!(is_read_only_mode(&cap(mount.clone(), 3)));
        assert!(!is_read_only_mode(&cap(mount.clone(), 1)));
        assert_eq!(mount_flags(&cap(mount, 1)).unwrap(), ["noatime", "nosuid"]);
        let evil = AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: vec!["ro\nrw".into()],
            volume_mount_group: String::new(),
        });
        assert!(mount_flags(&cap(evil, 1)).is_err());
    }

    #[test]
    fn a_pcc_context_is_accepted_and_read_back_by_the_node() {
        let s = settings();
        let parameters: HashMap<String, String> = [
            ("hotNodes", "true"),
            ("pccCache", "/csi-pcc"),
            ("pccAutocache", "fname={*.h5}"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let pcc = PccParams::parse(&parameters).unwrap();
        let mut ctx: HashMap<String, String> = pcc_context(pcc.as_ref()).into_iter().collect();
        ctx.insert(context::SHARE_PATH.into(), "shares/pvc-1".into());
        node_volume("v1/lfs1/1001/shares/pvc-1", &ctx, &s).expect("known keys");
        assert_eq!(node_pcc(&ctx).unwrap(), pcc);
        assert_eq!(node_pcc(&HashMap::new()).unwrap(), None);
        assert!(pcc_context(None).is_empty());
        ctx.insert("pccMode".into(), "sometimes".into());
        assert_eq!(
            node_pcc(&ctx).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
