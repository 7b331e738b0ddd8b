//! StorageClass parameters: parsed strictly (an unknown key is an error, so a typo never
//! silently falls back to a default), and the sub-directory name template they carry.

use std::collections::{BTreeMap, HashMap};

use lustre_model::ShareName;

use crate::error::{CsiError, Result};

/// Parameter keys, as written in a StorageClass.
pub mod keys {
    pub const SUBDIR_TEMPLATE: &str = "subdirTemplate";
    pub const INODE_LIMIT: &str = "inodeLimit";
    pub const RECLAIM_POLICY: &str = "reclaimPolicy";
    pub const TRASH_TTL: &str = "trashTTL";
    pub const MOUNT_MODE: &str = "mountMode";
    /// The volume directory's default layout (Lustre only; see
    /// [`lustre_model::striping`]): stripe count (`-1`: every OST), stripe size, OST pool, or
    /// PFL components instead of the three.
    pub const STRIPE_COUNT: &str = "stripeCount";
    pub const STRIPE_SIZE: &str = "stripeSize";
    pub const STRIPE_POOL: &str = "stripePool";
    pub const STRIPE_COMPONENTS: &str = "stripeComponents";
    /// Compression of the volume's data (see [`lustre_model::compression`]), where the
    /// backend has it.
    pub const COMPRESSION: &str = "compression";
    pub const COMPRESSION_LEVEL: &str = "compressionLevel";
    /// Client tunables set on a node while the volume is published there (see
    /// [`lustre_model::tunables`] and [`crate::client_tunables`]).
    pub const CLIENT_TUNABLES: &str = "clientTunables";
    /// Encryption (see [`crate::encryption`]): `fscrypt` and the KMIP server holding the keys.
    pub const ENCRYPTION: &str = "encryption";
    pub const KMIP_ENDPOINT: &str = "kmipEndpoint";
    /// An HSM volume that is encrypted archives plaintext only when this is `true`.
    pub const HSM_ARCHIVE_PLAINTEXT: &str = "hsmArchivePlaintext";
    /// The tenant the volume belongs to (see [`crate::tenancy`]).
    pub const TENANT: &str = "tenant";
    /// Added by csi-provisioner with `--extra-create-metadata`.
    pub const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
    pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
    pub const PV_NAME: &str = "csi.storage.k8s.io/pv/name";
    /// HSM volumes (see [`super::HsmParams`]).
    pub const HSM_STORE: &str = "hsmStore";
    pub const HSM_IMPORT_FROM: &str = "hsmImportFrom";
    pub const HSM_ARCHIVE_AFTER: &str = "hsmArchiveAfter";
    pub const HSM_INCLUDE: &str = "hsmInclude";
    pub const HSM_EXCLUDE: &str = "hsmExclude";
    pub const HSM_MIN_SIZE: &str = "hsmMinSize";
    pub const HSM_RELEASE_HIGH: &str = "hsmReleaseHigh";
    pub const HSM_RELEASE_LOW: &str = "hsmReleaseLow";
    pub const HSM_PREFETCH: &str = "hsmPrefetch";
    pub const HSM_READ_MODE: &str = "hsmReadMode";
    pub const HSM_RESTORE_TIMEOUT: &str = "hsmRestoreTimeout";
    /// Persistent Client Cache (see [`super::PccParams`]).
    pub const HOT_NODES: &str = "hotNodes";
    pub const PCC_CACHE: &str = "pccCache";
    pub const PCC_AUTOCACHE: &str = "pccAutocache";
    pub const PCC_MODE: &str = "pccMode";
    pub const PCC_ID: &str = "pccId";
    pub const PCC_PURGE_HIGH: &str = "pccPurgeHighUsage";
    pub const PCC_PURGE_LOW: &str = "pccPurgeLowUsage";
    pub const PCC_PURGE_INTERVAL: &str = "pccPurgeInterval";

    pub const ALL: &[&str] = &[
        SUBDIR_TEMPLATE,
        INODE_LIMIT,
        RECLAIM_POLICY,
        TRASH_TTL,
        MOUNT_MODE,
        STRIPE_COUNT,
        STRIPE_SIZE,
        STRIPE_POOL,
        STRIPE_COMPONENTS,
        COMPRESSION,
        COMPRESSION_LEVEL,
        CLIENT_TUNABLES,
        ENCRYPTION,
        KMIP_ENDPOINT,
        HSM_ARCHIVE_PLAINTEXT,
        TENANT,
        PVC_NAME,
        PVC_NAMESPACE,
        PV_NAME,
        HSM_STORE,
        HSM_IMPORT_FROM,
        HSM_ARCHIVE_AFTER,
        HSM_INCLUDE,
        HSM_EXCLUDE,
        HSM_MIN_SIZE,
        HSM_RELEASE_HIGH,
        HSM_RELEASE_LOW,
        HSM_PREFETCH,
        HSM_READ_MODE,
        HSM_RESTORE_TIMEOUT,
        HOT_NODES,
        PCC_CACHE,
        PCC_AUTOCACHE,
        PCC_MODE,
        PCC_ID,
        PCC_PURGE_HIGH,
        PCC_PURGE_LOW,
        PCC_PURGE_INTERVAL,
    ];

    /// The PCC keys, `hotNodes` first: any other of them without `hotNodes=true` is an
    /// error.
    pub const PCC: &[&str] = &[
        HOT_NODES,
        PCC_CACHE,
        PCC_AUTOCACHE,
        PCC_MODE,
        PCC_ID,
        PCC_PURGE_HIGH,
        PCC_PURGE_LOW,
        PCC_PURGE_INTERVAL,
    ];

    /// The HSM keys: any of them without [`HSM_STORE`] is an error.
    pub const HSM: &[&str] = &[
        HSM_STORE,
        HSM_IMPORT_FROM,
        HSM_ARCHIVE_AFTER,
        HSM_INCLUDE,
        HSM_EXCLUDE,
        HSM_MIN_SIZE,
        HSM_RELEASE_HIGH,
        HSM_RELEASE_LOW,
        HSM_PREFETCH,
        HSM_READ_MODE,
        HSM_RESTORE_TIMEOUT,
        HSM_ARCHIVE_PLAINTEXT,
    ];
}

/// Labels the driver keeps on each share it creates (in the share's record), so DeleteVolume,
/// which gets only the volume ID, knows the reclaim policy, and so a re-create can tell its
/// own share from a different volume whose template expanded to the same name.
pub mod labels {
    pub const REQUEST_NAME: &str = "csi.lustrekit.io/request-name";
    pub const RECLAIM_POLICY: &str = "csi.lustrekit.io/reclaim-policy";
    pub const TRASH_TTL_SECS: &str = "csi.lustrekit.io/trash-ttl-secs";
    pub const MOUNT_MODE: &str = "csi.lustrekit.io/mount-mode";
    pub const PVC: &str = "csi.lustrekit.io/pvc";
    /// An HSM volume's store URL and import source, so a re-create with another source is
    /// ALREADY_EXISTS rather than a volume holding someone else's objects.
    pub const HSM_STORE: &str = "csi.lustrekit.io/hsm-store";
    pub const HSM_IMPORT_FROM: &str = "csi.lustrekit.io/hsm-import-from";
    /// What the class asked of the directory and the node (set only when asked), so a
    /// re-create with other stripes, compression or tunables is ALREADY_EXISTS.
    pub const LAYOUT: &str = "csi.lustrekit.io/layout";
    pub const COMPRESSION: &str = "csi.lustrekit.io/compression";
    pub const CLIENT_TUNABLES: &str = "csi.lustrekit.io/client-tunables";
    /// `block` on a block volume, so a re-create asking for the other access kind is
    /// ALREADY_EXISTS, and expand knows to grow the image.
    pub const VOLUME_MODE: &str = "csi.lustrekit.io/volume-mode";
}

pub const DEFAULT_TEMPLATE: &str = "${pv.metadata.name}";
const TEMPLATE_MAX_LEN: usize = 1024;
/// Trash TTLs above this are refused (ten years).
const TTL_MAX_SECS: u64 = 10 * 365 * 24 * 3600;

/// What DeleteVolume does with the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReclaimPolicy {
    /// Remove the share and its data.
    Delete,
    /// Keep the share and its data; only an administrator removes it.
    Retain,
    /// Move it to the trash can, purged after the TTL (the configured default if `None`).
    Trash { ttl_secs: Option<u64> },
}

impl ReclaimPolicy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Retain => "retain",
            Self::Trash { .. } => "trash",
        }
    }

    /// Reads the policy back from a share's labels. Shares without them (made by the share
    /// CLI) are deleted like `delete`.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Self> {
        let ttl_secs = match labels.get(labels::TRASH_TTL_SECS) {
            Some(text) => Some(text.parse().map_err(|_| {
                CsiError::Internal(format!(
                    "label {}={text:?} is not a number",
                    labels::TRASH_TTL_SECS
                ))
            })?),
            None => None,
        };
        match labels.get(labels::RECLAIM_POLICY).map(String::as_str) {
            None | Some("delete") => Ok(Self::Delete),
            Some("retain") => Ok(Self::Retain),
            Some("trash") => Ok(Self::Trash { ttl_secs }),
            Some(other) => Err(CsiError::Internal(format!(
                "unknown reclaim policy label {other:?}"
            ))),
        }
    }
}

/// How the node makes the share visible at the target (see ARCHITECTURE.md, CSI node model):
/// the backend's own type, so what the StorageClass says is what the node's mount request
/// carries.
pub use backend::MountMode;

/// `direct` or `bind`, as a StorageClass parameter or volume context value.
pub fn parse_mount_mode(text: &str) -> Result<MountMode> {
    match text {
        "direct" => Ok(MountMode::Direct),
        "bind" => Ok(MountMode::Bind),
        other => Err(CsiError::invalid(format!(
            "{}={other:?}: expected direct or bind",
            keys::MOUNT_MODE
        ))),
    }
}

/// The provisioner's extra metadata about the claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimMetadata {
    pub pvc_name: Option<String>,
    pub pvc_namespace: Option<String>,
    pub pv_name: Option<String>,
}

/// Validated StorageClass parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParams {
    pub template: Template,
    pub inode_limit: Option<u64>,
    pub reclaim: ReclaimPolicy,
    pub mount_mode: MountMode,
    /// The volume directory's default layout, when the class asks for one.
    pub layout: Option<lustre_model::LayoutSpec>,
    /// The volume directory's compression, when the class asks for it.
    pub compression: Option<lustre_model::Compression>,
    /// Client tunables in force on a node while the volume is published there.
    pub tunables: lustre_model::ClientTunables,
    pub metadata: ClaimMetadata,
    /// Set when the StorageClass names an `hsmStore`.
    pub hsm: Option<HsmParams>,
    /// Set when the StorageClass says `hotNodes: "true"`.
    pub pcc: Option<PccParams>,
    /// Set when the StorageClass asks for `encryption`.
    pub encryption: Option<crate::encryption::EncryptionParams>,
}

impl VolumeParams {
    pub fn parse(parameters: &HashMap<String, String>) -> Result<Self> {
        let mut unknown: Vec<&str> = parameters
            .keys()
            .map(String::as_str)
            .filter(|k| !keys::ALL.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(CsiError::invalid(format!(
                "unknown StorageClass parameter(s) {unknown:?}; known: {:?}",
                keys::ALL
            )));
        }
        let get = |k: &str| parameters.get(k).map(String::as_str);
        let template = Template::parse(get(keys::SUBDIR_TEMPLATE).unwrap_or(DEFAULT_TEMPLATE))?;
        let inode_limit = match get(keys::INODE_LIMIT) {
            None => None,
            Some(text) => Some(
                text.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        CsiError::invalid(format!(
                            "parameter {}={text:?}: expected a positive whole number",
                            keys::INODE_LIMIT
                        ))
                    })?,
            ),
        };
        let ttl = get(keys::TRASH_TTL)
            .map(|t| parse_duration_secs(keys::TRASH_TTL, t))
            .transpose()?;
        let reclaim = match get(keys::RECLAIM_POLICY).unwrap_or("delete") {
            "delete" => ReclaimPolicy::Delete,
            "retain" => ReclaimPolicy::Retain,
            "trash" => ReclaimPolicy::Trash { ttl_secs: ttl },
            other => {
                return Err(CsiError::invalid(format!(
                    "parameter {}={other:?}: expected delete, retain or trash",
                    keys::RECLAIM_POLICY
                )));
            }
        };
        if ttl.is_some() && !matches!(reclaim, ReclaimPolicy::Trash { .. }) {
            return Err(CsiError::invalid(format!(
                "parameter {} needs {}=trash",
                keys::TRASH_TTL,
                keys::RECLAIM_POLICY
            )));
        }
        let mount_mode = get(keys::MOUNT_MODE)
            .map(parse_mount_mode)
            .transpose()?
            .unwrap_or_default();
        let layout = lustre_model::LayoutSpec::from_parts(
            get(keys::STRIPE_COUNT),
            get(keys::STRIPE_SIZE),
            get(keys::STRIPE_POOL),
            get(keys::STRIPE_COMPONENTS),
        )
        .map_err(|e| {
            CsiError::invalid(format!(
                "parameters {}/{}/{}/{}: {e}",
                keys::STRIPE_COUNT,
                keys::STRIPE_SIZE,
                keys::STRIPE_POOL,
                keys::STRIPE_COMPONENTS
            ))
        })?;
        let compression = lustre_model::Compression::from_parts(
            get(keys::COMPRESSION),
            get(keys::COMPRESSION_LEVEL),
        )
        .map_err(|e| CsiError::invalid(format!("parameter {e}")))?;
        let tunables = lustre_model::ClientTunables::parse(
            get(keys::CLIENT_TUNABLES).unwrap_or(""),
        )
        .map_err(|e| CsiError::invalid(format!("parameter {}: {e}", keys::CLIENT_TUNABLES)))?;
        let metadata = ClaimMetadata {
            pvc_name: get(keys::PVC_NAME).map(str::to_string),
            pvc_namespace: get(keys::PVC_NAMESPACE).map(str::to_string),
            pv_name: get(keys::PV_NAME).map(str::to_string),
        };
        let hsm = HsmParams::parse(parameters)?;
        let pcc = PccParams::parse(parameters)?;
        if pcc.is_some() && mount_mode == MountMode::Bind {
            // The cache is registered on a client mount, and the node plugin names the
            // mount of a `direct` volume (its target) only.
            return Err(CsiError::invalid(format!(
                "parameter {}=\"true\" needs {}=direct: a bind volume shares the node's client mount",
                keys::HOT_NODES,
                keys::MOUNT_MODE
            )));
        }
        let encryption = crate::encryption::EncryptionParams::parse(parameters, hsm.as_ref())?;
        Ok(Self {
            template,
            inode_limit,
            reclaim,
            mount_mode,
            layout,
            compression,
            tunables,
            metadata,
            hsm,
            pcc,
            encryption,
        })
    }

    /// The share name for a request: the template filled in, validated as one path component.
    pub fn share_name(&self, request_name: &str) -> Result<ShareName> {
        self.template.expand(&self.metadata, request_name)
    }

    /// The labels the share carries (see [`labels`]).
    pub fn labels(&self, request_name: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert(labels::REQUEST_NAME.into(), request_name.into());
        out.insert(labels::RECLAIM_POLICY.into(), self.reclaim.name().into());
        if let ReclaimPolicy::Trash {
            ttl_secs: Some(ttl),
        } = self.reclaim
        {
            out.insert(labels::TRASH_TTL_SECS.into(), ttl.to_string());
        }
        out.insert(labels::MOUNT_MODE.into(), self.mount_mode.as_str().into());
        if let (Some(ns), Some(name)) = (&self.metadata.pvc_namespace, &self.metadata.pvc_name) {
            out.insert(labels::PVC.into(), format!("{ns}/{name}"));
        }
        if let Some(layout) = &self.layout {
            out.insert(labels::LAYOUT.into(), layout.setstripe_args().join(" "));
        }
        if let Some(compression) = &self.compression {
            out.insert(labels::COMPRESSION.into(), compression.to_string());
        }
        if !self.tunables.is_empty() {
            out.insert(labels::CLIENT_TUNABLES.into(), self.tunables.to_string());
        }
        if let Some(encryption) = &self.encryption {
            use crate::encryption::{FSCRYPT, labels as enc};
            out.insert(enc::ENCRYPTION.into(), FSCRYPT.into());
            out.insert(enc::KMIP_ENDPOINT.into(), encryption.kmip_endpoint.clone());
        }
        if let Some(hsm) = &self.hsm {
            out.insert(labels::HSM_STORE.into(), hsm.store.clone());
            if let Some(from) = &hsm.import_from {
                out.insert(labels::HSM_IMPORT_FROM.into(), from.clone());
            }
        }
        out
    }
}

/// The first (in sorted order) of `keys` the parameters give: a key that needs another one
/// that is missing, named in the error.
fn first_given<'a>(parameters: &HashMap<String, String>, keys: &[&'a str]) -> Option<&'a str> {
    keys.iter()
        .copied()
        .filter(|k| parameters.contains_key(*k))
        .min()
}

/// `90`, `90s`, `30m`, `72h`, `7d`: a positive duration in seconds, as parameter `key`.
pub fn parse_duration_secs(key: &str, text: &str) -> Result<u64> {
    let bad = || {
        CsiError::invalid(format!(
            "parameter {key}={text:?}: expected a duration such as 3600, 90m, 72h or 7d"
        ))
    };
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(scale).ok_or_else(bad)?;
    if secs == 0 || secs > TTL_MAX_SECS {
        return Err(bad());
    }
    Ok(secs)
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    PvcNamespace,
    PvcName,
    PvName,
}

/// A sub-directory name template such as `${pvc.metadata.namespace}-${pvc.metadata.name}`.
/// It makes one path component: a `/` in it is refused, and so is an expansion that is not a
/// valid name (`..`, NUL, control characters, over 255 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            CsiError::invalid(format!(
                "parameter {}={text:?}: {why}",
                keys::SUBDIR_TEMPLATE
            ))
        };
        if text.is_empty() {
            return Err(bad("must not be empty"));
        }
        if text.len() > TEMPLATE_MAX_LEN {
            return Err(bad(&format!("longer than {TEMPLATE_MAX_LEN} bytes")));
        }
        if text.contains('/') {
            return Err(bad("must expand to a single directory name, without '/'"));
        }
        if text.chars().any(char::is_control) {
            return Err(bad("control characters are not allowed"));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find("${") {
                Some(0) => {
                    let end = rest.find('}').ok_or_else(|| bad("unterminated ${"))?;
                    let piece = match &rest[2..end] {
                        "pvc.metadata.namespace" => Piece::PvcNamespace,
                        "pvc.metadata.name" => Piece::PvcName,
                        "pv.metadata.name" => Piece::PvName,
                        other => {
                            return Err(bad(&format!(
                                "unknown variable ${{{other}}}; known: ${{pvc.metadata.namespace}}, \
                                 ${{pvc.metadata.name}}, ${{pv.metadata.name}}"
                            )));
                        }
                    };
                    pieces.push(piece);
                    rest = &rest[end + 1..];
                }
                Some(i) => {
                    pieces.push(Piece::Literal(rest[..i].to_string()));
                    rest = &rest[i..];
                }
                None => {
                    if rest.contains('$') && rest.contains('{') {
                        return Err(bad("malformed variable"));
                    }
                    pieces.push(Piece::Literal(rest.to_string()));
                    rest = "";
                }
            }
        }
        Ok(Self { pieces })
    }

    /// Fills the template. `${pv.metadata.name}` falls back to the request name (which the
    /// provisioner makes the PV name); the PVC variables need `--extra-create-metadata`.
    pub fn expand(&self, metadata: &ClaimMetadata, request_name: &str) -> Result<ShareName> {
        let mut out = String::new();
        for piece in &self.pieces {
            let value = match piece {
                Piece::Literal(s) => s.as_str(),
                Piece::PvName => metadata.pv_name.as_deref().unwrap_or(request_name),
                Piece::PvcName => metadata.pvc_name.as_deref().ok_or_else(|| {
                    CsiError::invalid(format!(
                        "template uses ${{pvc.metadata.name}} but the request has no {} \
                         (run csi-provisioner with --extra-create-metadata)",
                        keys::PVC_NAME
                    ))
                })?,
                Piece::PvcNamespace => metadata.pvc_namespace.as_deref().ok_or_else(|| {
                    CsiError::invalid(format!(
                        "template uses ${{pvc.metadata.namespace}} but the request has no {} \
                         (run csi-provisioner with --extra-create-metadata)",
                        keys::PVC_NAMESPACE
                    ))
                })?,
            };
            out.push_str(value);
        }
        let name = ShareName::new(&out)
            .map_err(|e| CsiError::invalid(format!("sub-directory name from the template: {e}")))?;
        if name.as_str().starts_with('.') {
            return Err(CsiError::invalid(format!(
                "sub-directory name {out:?}: names starting with '.' are reserved"
            )));
        }
        Ok(name)
    }
}

/// How a read of a released file behaves while its restore runs (`hsmReadMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// The read waits for the restore.
    #[default]
    Block,
    /// The read fails at once with EAGAIN while the restore runs.
    FailFast,
}

impl ReadMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::FailFast => "fail-fast",
        }
    }

    /// `block` or `fail-fast`, as the parameter (or volume context value) `key`.
    pub fn parse(key: &str, text: &str) -> Result<Self> {
        match text.trim() {
            "block" => Ok(Self::Block),
            "fail-fast" => Ok(Self::FailFast),
            other => Err(CsiError::invalid(format!(
                "parameter {key}={other:?}: expected block or fail-fast"
            ))),
        }
    }
}

/// Release watermarks, in percent of the volume's quota: release from `high` down to `low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub high_percent: u8,
    pub low_percent: u8,
}

/// The store URL schemes an HSM volume may name.
const HSM_SCHEMES: &[&str] = &["az", "s3", "gs", "file"];

/// Query keys of a store URL that hold credentials (or may): refused in `hsmStore`, since
/// a StorageClass is readable by anyone who can list them and its values end up in labels.
/// Credentials go in the provisioner and node publish secrets.
fn is_credential_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // A flag, not a credential: anonymous access.
    if k == "skip_signature" || k == "aws_skip_signature" || k == "google_skip_signature" {
        return false;
    }
    [
        "key",
        "secret",
        "token",
        "sas",
        "password",
        "signature",
        "sig",
        "credential",
        "service_account",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// A store URL for messages: scheme, bucket and path, never its query.
fn shown_url(url: &url::Url) -> String {
    format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.path()
    )
}

/// Checks the `/`-separated segments of a prefix (empty segments at either end allowed):
/// no `.` or `..`, no empty segment inside, no control characters, at most 255 bytes each.
fn check_prefix_segments(key: &str, shown: &str, path: &str) -> Result<Vec<String>> {
    let bad = |why: &str| CsiError::invalid(format!("parameter {key}={shown:?}: {why}"));
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for seg in trimmed.split('/') {
        if seg.is_empty() {
            return Err(bad("empty path segment (`//`)"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("`.` and `..` are not allowed in a prefix"));
        }
        if seg.chars().any(char::is_control) {
            return Err(bad("control characters are not allowed"));
        }
        if seg.len() > 255 {
            return Err(bad("a path segment is longer than 255 bytes"));
        }
        out.push(seg.to_string());
    }
    Ok(out)
}

/// The path part of a URL as written (before `?` or `#`, after `scheme://host`), so `..`
/// is seen before the URL parser normalises it away.
fn raw_url_path(text: &str) -> &str {
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    rest.find('/').map_or("", |i| &rest[i..])
}

/// Parses and checks `hsmStore`.
fn parse_store_url(text: &str) -> Result<url::Url> {
    let key = keys::HSM_STORE;
    let text = text.trim();
    // Never echo the text after `?`: it is where a pasted credential would be.
    let head = text.split('?').next().unwrap_or(text);
    let bad = |why: &str| CsiError::invalid(format!("parameter {key}={head:?}: {why}"));
    let url = url::Url::parse(text).map_err(|e| bad(&format!("not a URL: {e}")))?;
    if !HSM_SCHEMES.contains(&url.scheme()) {
        return Err(bad(&format!(
            "scheme {:?} is not one of az://, s3://, gs://, file://",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "credentials in the URL are refused: put them in the provisioner and node publish secrets",
        ));
    }
    if url.fragment().is_some() {
        return Err(bad("a fragment (`#`) is not allowed"));
    }
    if let Some((k, _)) = url.query_pairs().find(|(k, _)| is_credential_key(k)) {
        return Err(bad(&format!(
            "query key `{k}` holds a credential: put it in the provisioner and node publish \
             secrets, not in the StorageClass"
        )));
    }
    let host = url.host_str().unwrap_or_default();
    if url.scheme() == "file" {
        if !host.is_empty() && host != "localhost" {
            return Err(bad(
                "a file:// store is on this host: file:///absolute/path",
            ));
        }
        if url.query().is_some() {
            return Err(bad("a file:// store takes no options"));
        }
        if url.path().trim_matches('/').is_empty() {
            return Err(bad("a file:// store needs a directory, not `/`"));
        }
    } else if host.is_empty() {
        return Err(bad("the URL names no bucket or container"));
    }
    check_prefix_segments(key, head, raw_url_path(text))?;
    Ok(url)
}

/// Parses `hsmImportFrom` against the store: a prefix below it, or a URL of the same store
/// (same scheme and bucket, a path at or below the store's). Returns the prefix below the
/// store's, without leading or trailing `/` (empty: the whole store prefix).
fn parse_import_from(store: &url::Url, text: &str) -> Result<String> {
    let key = keys::HSM_IMPORT_FROM;
    let text = text.trim();
    let head = text.split('?').next().unwrap_or(text);
    let bad = |why: &str| CsiError::invalid(format!("parameter {key}={head:?}: {why}"));
    if text.is_empty() {
        return Err(bad("empty; write `/` to import the whole hsmStore prefix"));
    }
    if !text.contains("://") {
        return Ok(check_prefix_segments(key, head, text)?.join("/"));
    }
    let url = url::Url::parse(text).map_err(|e| bad(&format!("not a URL: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(bad(
            "a URL here takes no options or credentials (hsmStore and the secrets carry them)",
        ));
    }
    if url.scheme() != store.scheme() || url.host_str() != store.host_str() {
        return Err(bad(&format!(
            "not in the store {}: name a prefix below hsmStore",
            shown_url(store)
        )));
    }
    let segs = check_prefix_segments(key, head, raw_url_path(text))?;
    let store_segs: Vec<&str> = store
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if segs.len() < store_segs.len() || segs.iter().zip(&store_segs).any(|(a, b)| a != b) {
        return Err(bad(&format!(
            "not below the hsmStore prefix {}",
            shown_url(store)
        )));
    }
    Ok(segs[store_segs.len()..].join("/"))
}

/// A comma-separated glob list, each checked the way the policy engine reads globs.
fn parse_globs(key: &str, text: &str) -> Result<Vec<String>> {
    let pats: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if pats.is_empty() {
        return Err(CsiError::invalid(format!(
            "parameter {key}={text:?}: expected comma-separated globs such as *.h5,data/**"
        )));
    }
    hsm::policy::config::globset(key, &pats)
        .map_err(|e| CsiError::invalid(format!("parameter {key}={text:?}: {e}")))?;
    Ok(pats)
}

/// A percentage of the volume's quota, 1 to 100 (a trailing `%` allowed).
fn parse_percent(key: &str, text: &str) -> Result<u8> {
    text.trim()
        .trim_end_matches('%')
        .parse::<u8>()
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| {
            CsiError::invalid(format!(
                "parameter {key}={text:?}: expected a percentage from 1 to 100"
            ))
        })
}

/// The HSM parameters of a StorageClass: the store, what to import at create time, and
/// the volume's policy. Credentials are never here: they come from the CSI secrets
/// ([`store_options`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmParams {
    /// The archive store URL (`az://`, `s3://`, `gs://`, `file://`), credential-free.
    pub store: String,
    /// The prefix below the store's to import as released stubs at CreateVolume: no
    /// leading or trailing `/`, empty for the whole store prefix.
    pub import_from: Option<String>,
    /// Archive a file once it has been left unchanged this long.
    pub archive_after_secs: Option<u64>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub min_size_bytes: Option<u64>,
    pub watermarks: Option<Watermarks>,
    /// Globs restored at NodePublishVolume.
    pub prefetch: Vec<String>,
    pub read_mode: ReadMode,
    /// How long a read of a released file is held for its restore before it fails (EIO);
    /// `None`: [`DEFAULT_RESTORE_TIMEOUT_SECS`].
    pub restore_timeout_secs: Option<u64>,
}

/// How long a read of a released file waits for its restore by default (`hsmRestoreTimeout`).
pub const DEFAULT_RESTORE_TIMEOUT_SECS: u64 = 600;

impl HsmParams {
    /// The HSM parameters, `None` when the StorageClass names no `hsmStore` (and then no
    /// other `hsm*` key either).
    pub fn parse(parameters: &HashMap<String, String>) -> Result<Option<Self>> {
        let get = |k: &str| parameters.get(k).map(String::as_str);
        let Some(store_text) = get(keys::HSM_STORE) else {
            return match first_given(parameters, keys::HSM) {
                None => Ok(None),
                Some(first) => Err(CsiError::invalid(format!(
                    "parameter {first} needs {} (the archive store URL)",
                    keys::HSM_STORE
                ))),
            };
        };
        let url = parse_store_url(store_text)?;
        let import_from = get(keys::HSM_IMPORT_FROM)
            .map(|t| parse_import_from(&url, t))
            .transpose()?;
        let archive_after_secs = get(keys::HSM_ARCHIVE_AFTER)
            .map(|t| parse_duration_secs(keys::HSM_ARCHIVE_AFTER, t))
            .transpose()?;
        let globs = |key: &str| {
            get(key)
                .map(|t| parse_globs(key, t))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let min_size_bytes = get(keys::HSM_MIN_SIZE)
            .map(|t| {
                t.trim()
                    .parse::<lustre_model::ByteSize>()
                    .map(|s| s.bytes())
                    .map_err(|e| {
                        CsiError::invalid(format!(
                            "parameter {}={t:?}: expected a size such as 1M or 64KiB: {e}",
                            keys::HSM_MIN_SIZE
                        ))
                    })
            })
            .transpose()?;
        let high = get(keys::HSM_RELEASE_HIGH)
            .map(|t| parse_percent(keys::HSM_RELEASE_HIGH, t))
            .transpose()?;
        let low = get(keys::HSM_RELEASE_LOW)
            .map(|t| parse_percent(keys::HSM_RELEASE_LOW, t))
            .transpose()?;
        let watermarks = match (high, low) {
            (None, None) => None,
            (Some(high), Some(low)) if low < high => Some(Watermarks {
                high_percent: high,
                low_percent: low,
            }),
            (Some(high), Some(low)) => {
                return Err(CsiError::invalid(format!(
                    "parameter {}={low} must be below {}={high}",
                    keys::HSM_RELEASE_LOW,
                    keys::HSM_RELEASE_HIGH
                )));
            }
            (Some(_), None) | (None, Some(_)) => {
                let missing = if high.is_none() {
                    keys::HSM_RELEASE_HIGH
                } else {
                    keys::HSM_RELEASE_LOW
                };
                return Err(CsiError::invalid(format!(
                    "parameter {missing} is missing: {} and {} go together",
                    keys::HSM_RELEASE_HIGH,
                    keys::HSM_RELEASE_LOW
                )));
            }
        };
        let read_mode = get(keys::HSM_READ_MODE)
            .map(|t| ReadMode::parse(keys::HSM_READ_MODE, t))
            .transpose()?
            .unwrap_or_default();
        Ok(Some(Self {
            store: store_text.trim().to_string(),
            import_from,
            archive_after_secs,
            include: globs(keys::HSM_INCLUDE)?,
            exclude: globs(keys::HSM_EXCLUDE)?,
            min_size_bytes,
            watermarks,
            prefetch: globs(keys::HSM_PREFETCH)?,
            read_mode,
            restore_timeout_secs: get(keys::HSM_RESTORE_TIMEOUT)
                .map(|t| parse_duration_secs(keys::HSM_RESTORE_TIMEOUT, t))
                .transpose()?,
        }))
    }
}

/// The PCC defaults when the StorageClass gives no watermarks or interval (the values of
/// the DDN talk's example class).
pub const PCC_DEFAULT_HIGH_PERCENT: u8 = 90;
pub const PCC_DEFAULT_LOW_PERCENT: u8 = 70;
pub const PCC_DEFAULT_INTERVAL_SECS: u64 = 30;

/// The cache-purge policy of a PCC volume: when the cache filesystem is fuller than
/// `high_percent`, detach least recently used files until it is at most `low_percent`
/// full; look every `interval_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PccPurge {
    pub high_percent: u8,
    pub low_percent: u8,
    pub interval_secs: u64,
}

/// The Persistent Client Cache ("hot nodes") of a volume: each node that publishes it
/// registers `cache` (a directory on the node's local NVMe) on its Lustre client with the
/// volume's auto-cache rule scoped to the volume's project, so files the rule selects are
/// kept on local storage after their first read; the node purges the cache by `purge`.
///
/// The same keys and values are carried in the volume context, so the node reads them back
/// with [`PccParams::parse`] (see `volume::node_pcc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PccParams {
    /// The cache directory on every node (absolute).
    pub cache: std::path::PathBuf,
    /// Which files of the volume are cached (`None`: all of them); checked with the 2.16+
    /// grammar, the node checks it again against its own client's.
    pub autocache: Option<lustre_model::PccRule>,
    pub mode: lustre_model::PccMode,
    /// The `roid`/`rwid` the cache is registered with; `None`: the volume's project ID (only
    /// for read-only: a read-write cache's id is the archive id of the HSM copytool that
    /// serves it, so the class must name it).
    pub id: Option<u32>,
    pub purge: PccPurge,
}

impl PccParams {
    /// The PCC parameters, `None` when `hotNodes` is absent or `false` (and then no other
    /// `pcc*` key may be given).
    pub fn parse(parameters: &HashMap<String, String>) -> Result<Option<Self>> {
        let get = |k: &str| parameters.get(k).map(String::as_str);
        let enabled = match get(keys::HOT_NODES).map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(CsiError::invalid(format!(
                    "parameter {}={other:?}: expected true or false",
                    keys::HOT_NODES
                )));
            }
        };
        if !enabled {
            return match first_given(parameters, &keys::PCC[1..]) {
                None => Ok(None),
                Some(first) => Err(CsiError::invalid(format!(
                    "parameter {first} needs {}=\"true\"",
                    keys::HOT_NODES
                ))),
            };
        }
        let cache_text = get(keys::PCC_CACHE).ok_or_else(|| {
            CsiError::invalid(format!(
                "parameter {} is required with {}=\"true\": the cache directory on each node",
                keys::PCC_CACHE,
                keys::HOT_NODES
            ))
        })?;
        let cache = std::path::PathBuf::from(cache_text.trim());
        // Checked as written: `Path::components` would hide a `.` segment.
        let plain = cache_text
            .trim()
            .trim_start_matches('/')
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
        if !cache.is_absolute()
            || !plain
            || cache == std::path::Path::new("/")
            || cache_text
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(CsiError::invalid(format!(
                "parameter {}={cache_text:?}: expected an absolute directory such as /csi-pcc \
                 (no `.`, `..`, spaces or control characters, not `/`)",
                keys::PCC_CACHE
            )));
        }
        let autocache = get(keys::PCC_AUTOCACHE)
            .map(|t| {
                lustre_model::PccRule::parse(t.trim(), lustre_model::PccDialect::V2_16).map_err(
                    |e| CsiError::invalid(format!("parameter {}: {e}", keys::PCC_AUTOCACHE)),
                )
            })
            .transpose()?;
        let mode = match get(keys::PCC_MODE) {
            None => lustre_model::PccMode::default(),
            Some(t) => lustre_model::PccMode::parse(t.trim()).ok_or_else(|| {
                CsiError::invalid(format!(
                    "parameter {}={t:?}: expected readonly or readwrite",
                    keys::PCC_MODE
                ))
            })?,
        };
        let id = get(keys::PCC_ID)
            .map(|t| {
                t.trim()
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| lustre_model::pcc::check_pcc_id(n).ok())
                    .ok_or_else(|| {
                        CsiError::invalid(format!(
                            "parameter {}={t:?}: expected a number from 1 to 4294967294",
                            keys::PCC_ID
                        ))
                    })
            })
            .transpose()?;
        if mode == lustre_model::PccMode::ReadWrite && id.is_none() {
            return Err(CsiError::invalid(format!(
                "parameter {} is required with {}=readwrite: the archive id of the HSM \
                 copytool serving the cache",
                keys::PCC_ID,
                keys::PCC_MODE
            )));
        }
        let high = get(keys::PCC_PURGE_HIGH)
            .map(|t| parse_percent(keys::PCC_PURGE_HIGH, t))
            .transpose()?
            .unwrap_or(PCC_DEFAULT_HIGH_PERCENT);
        let low = get(keys::PCC_PURGE_LOW)
            .map(|t| parse_percent(keys::PCC_PURGE_LOW, t))
            .transpose()?
            .unwrap_or(PCC_DEFAULT_LOW_PERCENT);
        if low >= high {
            return Err(CsiError::invalid(format!(
                "parameter {}={low} must be below {}={high}",
                keys::PCC_PURGE_LOW,
                keys::PCC_PURGE_HIGH
            )));
        }
        let interval_secs = get(keys::PCC_PURGE_INTERVAL)
            .map(|t| parse_duration_secs(keys::PCC_PURGE_INTERVAL, t))
            .transpose()?
            .unwrap_or(PCC_DEFAULT_INTERVAL_SECS);
        Ok(Some(Self {
            cache,
            autocache,
            mode,
            id,
            purge: PccPurge {
                high_percent: high,
                low_percent: low,
                interval_secs,
            },
        }))
    }

    /// The id the cache is registered with for a volume of `project`.
    pub fn id_for(&self, project: lustre_model::ProjectId) -> u32 {
        self.id.unwrap_or(project.get())
    }

    /// The parameters as StorageClass (and volume context) entries, every default spelt
    /// out: what [`PccParams::parse`] reads back to the same value.
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (keys::HOT_NODES.to_string(), "true".to_string()),
            (
                keys::PCC_CACHE.to_string(),
                self.cache.display().to_string(),
            ),
            (keys::PCC_MODE.to_string(), self.mode.as_str().to_string()),
            (
                keys::PCC_PURGE_HIGH.to_string(),
                self.purge.high_percent.to_string(),
            ),
            (
                keys::PCC_PURGE_LOW.to_string(),
                self.purge.low_percent.to_string(),
            ),
            (
                keys::PCC_PURGE_INTERVAL.to_string(),
                self.purge.interval_secs.to_string(),
            ),
        ];
        if let Some(rule) = &self.autocache {
            out.push((keys::PCC_AUTOCACHE.to_string(), rule.to_string()));
        }
        if let Some(id) = self.id {
            out.push((keys::PCC_ID.to_string(), id.to_string()));
        }
        out
    }
}

/// The store options (credentials) of an HSM volume, from a CSI request's secrets: each
/// key is a store builder option for [`hsm::ArchiveStore::open_with`] (for example
/// `azure_storage_account_key`, `aws_secret_access_key`). Sorted, so errors name keys in
/// one order. The values are never logged and never put in an error.
pub fn store_options(secrets: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> = secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    options.sort();
    options
}

/// `message` with every secret value in it replaced: a store client's error may quote a
/// request (a SAS token rides in the URL), and a CSI error reaches the provisioner's
/// events and logs.
pub fn scrub_secrets(message: &str, secrets: &HashMap<String, String>) -> String {
    hsm::store::scrub(message, secrets.values().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_full_set() {
        let p = VolumeParams::parse(&HashMap::new()).unwrap();
        assert_eq!(p.reclaim, ReclaimPolicy::Delete);
        assert_eq!(p.inode_limit, None);
        assert_eq!(p.share_name("pvc-1").unwrap().as_str(), "pvc-1");

        let p = VolumeParams::parse(&params(&[
            (
                keys::SUBDIR_TEMPLATE,
                "${pvc.metadata.namespace}-${pvc.metadata.name}",
            ),
            (keys::INODE_LIMIT, "1000"),
            (keys::RECLAIM_POLICY, "trash"),
            (keys::TRASH_TTL, "72h"),
            (keys::MOUNT_MODE, "bind"),
            (keys::PVC_NAME, "data"),
            (keys::PVC_NAMESPACE, "team-a"),
            (keys::PV_NAME, "pvc-123"),
        ]))
        .unwrap();
        assert_eq!(p.share_name("ignored").unwrap().as_str(), "team-a-data");
        assert_eq!(p.inode_limit, Some(1000));
        assert_eq!(
            p.reclaim,
            ReclaimPolicy::Trash {
                ttl_secs: Some(72 * 3600)
            }
        );
        let labels = p.labels("pvc-123");
        assert_eq!(ReclaimPolicy::from_labels(&labels).unwrap(), p.reclaim);
        assert_eq!(labels[labels::PVC], "team-a/data");
        assert_eq!(p.mount_mode, MountMode::Bind);
        assert_eq!(labels[labels::MOUNT_MODE], "bind");
    }

    #[test]
    fn stripe_parameters_become_the_layout_and_bad_ones_are_refused() {
        let p = VolumeParams::parse(&params(&[("stripeCount", "4"), ("stripeSize", "4M")]))
            .expect("valid");
        assert_eq!(
            p.layout.expect("a layout").setstripe_args(),
            ["-c", "4", "-S", "4194304"]
        );
        let p = VolumeParams::parse(&params(&[(
            "stripeComponents",
            "4M:count=1;EOF:count=-1,size=4M",
        )]))
        .expect("valid");
        assert!(matches!(
            p.layout,
            Some(lustre_model::LayoutSpec::Composite { .. })
        ));
        assert_eq!(
            VolumeParams::parse(&params(&[])).expect("valid").layout,
            None
        );
        for bad in [
            vec![("stripeCount", "0")],
            vec![("stripeSize", "100K")],
            vec![("stripePool", "no spaces")],
            vec![("stripeComponents", "4M:count=1")],
            vec![("stripeCount", "2"), ("stripeComponents", "EOF:count=1")],
        ] {
            let err = VolumeParams::parse(&params(&bad)).expect_err("refused");
            assert!(err.to_string().contains("stripeCount/stripeSize"), "{err}");
        }
    }

    #[test]
    fn unknown_and_bad_values_are_refused() {
        for bad in [
            params(&[("subDirTemplate", "x")]),
            params(&[(keys::INODE_LIMIT, "0")]),
            params(&[(keys::INODE_LIMIT, "-5")]),
            params(&[(keys::INODE_LIMIT, "lots")]),
            params(&[(keys::RECLAIM_POLICY, "recycle")]),
            params(&[(keys::TRASH_TTL, "1h")]),
            params(&[(keys::RECLAIM_POLICY, "trash"), (keys::TRASH_TTL, "0")]),
            params(&[(keys::RECLAIM_POLICY, "trash"), (keys::TRASH_TTL, "1w")]),
            params(&[
                (keys::RECLAIM_POLICY, "trash"),
                (keys::TRASH_TTL, "99999999999999999d"),
            ]),
            params(&[(keys::MOUNT_MODE, "loop")]),
            params(&[("csi.storage.k8s.io/other", "x")]),
        ] {
            let err = VolumeParams::parse(&bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}: {err}");
        }
    }

    #[test]
    fn hostile_templates_are_refused() {
        for bad in [
            "",
            "../x",
            "/etc",
            "a/b",
            "${pvc.metadata.namespace}/${pvc.metadata.name}",
            "${unknown}",
            "${pvc.metadata.name",
            "a\0b",
            "a\nb",
            &"x".repeat(2000),
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
        let meta = |ns: &str, name: &str| ClaimMetadata {
            pvc_name: Some(name.into()),
            pvc_namespace: Some(ns.into()),
            pv_name: None,
        };
        let t = Template::parse("${pvc.metadata.namespace}${pvc.metadata.name}").unwrap();
        // Values that would escape or break the name.
        for (ns, name) in [(".", "."), ("", ".."), ("a/", "b"), ("a", "\0"), ("", "")] {
            assert!(t.expand(&meta(ns, name), "r").is_err(), "{ns:?} {name:?}");
        }
        let long = "x".repeat(200);
        assert!(t.expand(&meta(&long, &long), "r").is_err());
        assert!(
            Template::parse("..")
                .unwrap()
                .expand(&meta("a", "b"), "r")
                .is_err()
        );
        assert!(
            Template::parse(".hidden")
                .unwrap()
                .expand(&meta("a", "b"), "r")
                .is_err()
        );
        // The PVC variables need the provisioner's metadata.
        let err = Template::parse("${pvc.metadata.name}")
            .unwrap()
            .expand(&ClaimMetadata::default(), "r")
            .unwrap_err();
        assert!(err.to_string().contains("extra-create-metadata"), "{err}");
    }

    #[test]
    fn durations() {
        let d = |t| parse_duration_secs(keys::TRASH_TTL, t);
        assert_eq!(d("90").unwrap(), 90);
        assert_eq!(d("30m").unwrap(), 1800);
        assert_eq!(d("7d").unwrap(), 7 * 86400);
        for bad in ["", "h", "-1h", "1.5h", "0s"] {
            let err = d(bad).unwrap_err();
            assert!(err.to_string().contains(keys::TRASH_TTL), "{err}");
        }
    }

    fn hsm(pairs: &[(&str, &str)]) -> Result<Option<HsmParams>> {
        HsmParams::parse(&params(pairs))
    }

    fn refused_naming(pairs: &[(&str, &str)], key: &str) {
        let err = VolumeParams::parse(&params(pairs)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{pairs:?}: {err}");
        assert!(
            err.to_string().contains(key),
            "{pairs:?}: {err} names no {key}"
        );
    }

    #[test]
    fn hsm_parameters_parse_in_full() {
        assert_eq!(hsm(&[]).unwrap(), None);
        assert_eq!(VolumeParams::parse(&HashMap::new()).unwrap().hsm, None);
        let p = hsm(&[
            (keys::HSM_STORE, "az://data/archive?use_emulator=true"),
            (keys::HSM_IMPORT_FROM, "az://data/archive/runs/2024/"),
            (keys::HSM_ARCHIVE_AFTER, "2h"),
            (keys::HSM_INCLUDE, "*.h5, results/**"),
            (keys::HSM_EXCLUDE, "*.tmp"),
            (keys::HSM_MIN_SIZE, "1MiB"),
            (keys::HSM_RELEASE_HIGH, "90%"),
            (keys::HSM_RELEASE_LOW, "70"),
            (keys::HSM_PREFETCH, "index/*"),
            (keys::HSM_READ_MODE, "fail-fast"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(p.store, "az://data/archive?use_emulator=true");
        assert_eq!(p.import_from.as_deref(), Some("runs/2024"));
        assert_eq!(p.archive_after_secs, Some(7200));
        assert_eq!(p.include, ["*.h5", "results/**"]);
        assert_eq!(p.exclude, ["*.tmp"]);
        assert_eq!(p.min_size_bytes, Some(1 << 20));
        assert_eq!(
            p.watermarks,
            Some(Watermarks {
                high_percent: 90,
                low_percent: 70
            })
        );
        assert_eq!(p.prefetch, ["index/*"]);
        assert_eq!(p.read_mode, ReadMode::FailFast);

        // Defaults, relative prefixes, the whole store.
        let p = hsm(&[(keys::HSM_STORE, "file:///srv/store")])
            .unwrap()
            .unwrap();
        assert_eq!(p.read_mode, ReadMode::Block);
        assert_eq!(p.import_from, None);
        assert!(p.include.is_empty() && p.watermarks.is_none());
        for (from, prefix) in [("a/b/", "a/b"), ("/", ""), ("file:///srv/store", "")] {
            let p = hsm(&[
                (keys::HSM_STORE, "file:///srv/store"),
                (keys::HSM_IMPORT_FROM, from),
            ])
            .unwrap()
            .unwrap();
            assert_eq!(p.import_from.as_deref(), Some(prefix), "{from}");
        }
        for store in [
            "s3://bucket?region=garage&endpoint=http://127.0.0.1:3900",
            "gs://b/p",
        ] {
            assert!(
                hsm(&[(keys::HSM_STORE, store)]).unwrap().is_some(),
                "{store}"
            );
        }
        // The labels carry the store and the source, so another source is another volume.
        let v = VolumeParams::parse(&params(&[
            (keys::HSM_STORE, "file:///srv/store"),
            (keys::HSM_IMPORT_FROM, "a"),
        ]))
        .unwrap();
        let labels = v.labels("pvc-1");
        assert_eq!(labels[labels::HSM_STORE], "file:///srv/store");
        assert_eq!(labels[labels::HSM_IMPORT_FROM], "a");
        assert!(
            !VolumeParams::parse(&HashMap::new())
                .unwrap()
                .labels("pvc-1")
                .contains_key(labels::HSM_STORE)
        );
    }

    #[test]
    fn bad_hsm_parameters_are_refused_by_name() {
        let store = (keys::HSM_STORE, "az://c/p?use_emulator=true");
        // Without a store, every other HSM key is refused.
        for key in keys::HSM.iter().filter(|k| **k != keys::HSM_STORE) {
            refused_naming(&[(key, "x")], keys::HSM_STORE);
        }
        for bad in [
            "",
            "not a url",
            "http://host/p",
            "az://",
            "az://c/../p",
            "az://c/a//b",
            "file://otherhost/x",
            "file:///",
            "file:///a?x=1",
            "az://c/p#frag",
            "s3://user:pass@bucket/p",
        ] {
            refused_naming(&[(keys::HSM_STORE, bad)], keys::HSM_STORE);
        }
        for from in [
            "",
            "a/../b",
            "./a",
            "a//b",
            "az://other/p/x",
            "az://c/elsewhere",
            "s3://c/p/x",
            "az://c/p/x?sig=abc",
        ] {
            refused_naming(
                &[store, (keys::HSM_IMPORT_FROM, from)],
                keys::HSM_IMPORT_FROM,
            );
        }
        let cases: &[(&str, &str)] = &[
            (keys::HSM_ARCHIVE_AFTER, "soon"),
            (keys::HSM_ARCHIVE_AFTER, "0s"),
            (keys::HSM_INCLUDE, "a[b"),
            (keys::HSM_INCLUDE, " , "),
            (keys::HSM_EXCLUDE, "{a"),
            (keys::HSM_PREFETCH, ""),
            (keys::HSM_MIN_SIZE, "big"),
            (keys::HSM_MIN_SIZE, "-1"),
            (keys::HSM_READ_MODE, "Block"),
            (keys::HSM_READ_MODE, "wait"),
            (keys::HSM_RESTORE_TIMEOUT, "0"),
            (keys::HSM_RESTORE_TIMEOUT, "forever"),
        ];
        for (key, value) in cases {
            refused_naming(&[store, (key, value)], key);
        }
        for (high, low, named) in [
            ("0", "50", keys::HSM_RELEASE_HIGH),
            ("101", "50", keys::HSM_RELEASE_HIGH),
            ("90", "x", keys::HSM_RELEASE_LOW),
            ("50", "50", keys::HSM_RELEASE_LOW),
            ("50", "70", keys::HSM_RELEASE_LOW),
        ] {
            refused_naming(
                &[
                    store,
                    (keys::HSM_RELEASE_HIGH, high),
                    (keys::HSM_RELEASE_LOW, low),
                ],
                named,
            );
        }
        refused_naming(
            &[store, (keys::HSM_RELEASE_HIGH, "90")],
            keys::HSM_RELEASE_LOW,
        );
        refused_naming(
            &[store, (keys::HSM_RELEASE_LOW, "20")],
            keys::HSM_RELEASE_HIGH,
        );
        // Unknown keys are still refused, HSM-looking ones too.
        refused_naming(&[store, ("hsmStoreKey", "x")], "hsmStoreKey");
    }

    #[test]
    fn credentials_never_come_from_parameters_and_never_reach_an_error() {
        const SECRET: &str = "Zm9vYmFyLXNlY3JldC1rZXk=";
        for key in [
            "access_key",
            "azure_storage_account_key",
            "sas_token",
            "aws_secret_access_key",
            "sig",
            "google_service_account_key",
        ] {
            let url = format!("az://c/p?{key}={SECRET}");
            let err = VolumeParams::parse(&params(&[(keys::HSM_STORE, &url)])).unwrap_err();
            let text = err.to_string();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{key}");
            assert!(
                text.contains(keys::HSM_STORE) && text.contains(key),
                "{text}"
            );
            assert!(!text.contains(SECRET), "{text}");
        }
        // An unparseable URL is not echoed past its `?` either.
        let err = VolumeParams::parse(&params(&[(
            keys::HSM_STORE,
            &format!("az:// bad?x={SECRET}"),
        )]))
        .unwrap_err();
        assert!(!err.to_string().contains(SECRET), "{err}");
        // The anonymous-access flag is not a credential.
        assert!(hsm(&[(keys::HSM_STORE, "s3://b?skip_signature=true")]).is_ok());

        let secrets = HashMap::from([
            ("azure_storage_account_key".to_string(), SECRET.to_string()),
            ("azure_storage_account_name".to_string(), "acct".to_string()),
        ]);
        assert_eq!(
            store_options(&secrets)[0],
            ("azure_storage_account_key".to_string(), SECRET.to_string())
        );
        let scrubbed = scrub_secrets(
            &format!("GET https://x/?sig={SECRET}&a=acct failed"),
            &secrets,
        );
        assert!(!scrubbed.contains(SECRET), "{scrubbed}");
        assert!(scrubbed.contains("sig=<redacted>"), "{scrubbed}");
    }

    #[test]
    fn pcc_parameters_parse_with_defaults_and_round_trip_through_entries() {
        assert_eq!(VolumeParams::parse(&HashMap::new()).unwrap().pcc, None);
        assert_eq!(
            VolumeParams::parse(&params(&[(keys::HOT_NODES, "false")]))
                .unwrap()
                .pcc,
            None
        );
        // The talk's class.
        let p = PccParams::parse(&params(&[
            (keys::HOT_NODES, "true"),
            (keys::PCC_CACHE, "/csi-pcc"),
            (keys::PCC_AUTOCACHE, "fname={*.h5}"),
            (keys::PCC_PURGE_HIGH, "90"),
            (keys::PCC_PURGE_LOW, "70"),
            (keys::PCC_PURGE_INTERVAL, "30"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(p.cache, std::path::Path::new("/csi-pcc"));
        assert_eq!(p.autocache.as_ref().unwrap().to_string(), "fname={*.h5}");
        assert_eq!(p.mode, lustre_model::PccMode::ReadOnly);
        assert_eq!(
            p.purge,
            PccPurge {
                high_percent: 90,
                low_percent: 70,
                interval_secs: 30
            }
        );
        assert_eq!(p.id_for(lustre_model::ProjectId::new(1001).unwrap()), 1001);
        let back: HashMap<String, String> = p.entries().into_iter().collect();
        assert_eq!(PccParams::parse(&back).unwrap().unwrap(), p);
        // Defaults, read-write with its id, 2.16 rules.
        let p = PccParams::parse(&params(&[
            (keys::HOT_NODES, "true"),
            (keys::PCC_CACHE, "/nvme/pcc"),
            (keys::PCC_MODE, "readwrite"),
            (keys::PCC_ID, "2"),
            (keys::PCC_AUTOCACHE, "size<{1G}&mtime>{1h},uid={500}"),
            (keys::PCC_PURGE_INTERVAL, "5m"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(p.id, Some(2));
        assert_eq!(p.purge.high_percent, PCC_DEFAULT_HIGH_PERCENT);
        assert_eq!(p.purge.interval_secs, 300);
        let back: HashMap<String, String> = p.entries().into_iter().collect();
        assert_eq!(PccParams::parse(&back).unwrap().unwrap(), p);
    }

    #[test]
    fn bad_pcc_parameters_are_refused_by_name() {
        let on = (keys::HOT_NODES, "true");
        let cache = (keys::PCC_CACHE, "/csi-pcc");
        for key in keys::PCC.iter().filter(|k| **k != keys::HOT_NODES) {
            refused_naming(&[(key, "x")], keys::HOT_NODES);
        }
        refused_naming(&[(keys::HOT_NODES, "yes")], keys::HOT_NODES);
        refused_naming(&[on], keys::PCC_CACHE);
        for bad in ["relative", "/", "/a/../b", "/a/./b", "/a b", "/a\nb", ""] {
            refused_naming(&[on, (keys::PCC_CACHE, bad)], keys::PCC_CACHE);
        }
        let cases: &[(&str, &str)] = &[
            (keys::PCC_AUTOCACHE, "fname={*.h5"),
            (keys::PCC_AUTOCACHE, "projid={500,1000}"),
            (keys::PCC_AUTOCACHE, "colour={red}"),
            (keys::PCC_MODE, "ro"),
            (keys::PCC_ID, "0"),
            (keys::PCC_ID, "-1"),
            (keys::PCC_PURGE_HIGH, "101"),
            (keys::PCC_PURGE_LOW, "0"),
            (keys::PCC_PURGE_LOW, "95"),
            (keys::PCC_PURGE_INTERVAL, "soon"),
            (keys::PCC_PURGE_INTERVAL, "0"),
        ];
        for (key, value) in cases {
            refused_naming(&[on, cache, (key, value)], key);
        }
        // Read-write needs the copytool's archive id.
        refused_naming(&[on, cache, (keys::PCC_MODE, "readwrite")], keys::PCC_ID);
        refused_naming(
            &[
                on,
                cache,
                (keys::PCC_PURGE_HIGH, "60"),
                (keys::PCC_PURGE_LOW, "60"),
            ],
            keys::PCC_PURGE_LOW,
        );
    }
}
