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
    /// Added by csi-provisioner with `--extra-create-metadata`.
    pub const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
    pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
    pub const PV_NAME: &str = "csi.storage.k8s.io/pv/name";

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
        PVC_NAME,
        PVC_NAMESPACE,
        PV_NAME,
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
    pub metadata: ClaimMetadata,
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
        let ttl = get(keys::TRASH_TTL).map(parse_duration_secs).transpose()?;
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
        let metadata = ClaimMetadata {
            pvc_name: get(keys::PVC_NAME).map(str::to_string),
            pvc_namespace: get(keys::PVC_NAMESPACE).map(str::to_string),
            pv_name: get(keys::PV_NAME).map(str::to_string),
        };
        Ok(Self {
            template,
            inode_limit,
            reclaim,
            mount_mode,
            layout,
            metadata,
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
        out
    }
}

/// `90`, `90s`, `30m`, `72h`, `7d`: a positive duration in seconds.
pub fn parse_duration_secs(text: &str) -> Result<u64> {
    let bad = || {
        CsiError::invalid(format!(
            "parameter {}={text:?}: expected a duration such as 3600, 90m, 72h or 7d",
            keys::TRASH_TTL
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
        assert_eq!(parse_duration_secs("90").unwrap(), 90);
        assert_eq!(parse_duration_secs("30m").unwrap(), 1800);
        assert_eq!(parse_duration_secs("7d").unwrap(), 7 * 86400);
        for bad in ["", "h", "-1h", "1.5h", "0s"] {
            assert!(parse_duration_secs(bad).is_err(), "{bad}");
        }
    }
}
