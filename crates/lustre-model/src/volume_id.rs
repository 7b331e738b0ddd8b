//! Self-describing, versioned volume IDs: `v1/<fs-key>/<project-id>/<path>`.
//!
//! Each path component is percent-encoded (everything but `A-Z a-z 0-9 - . _ ~`), and
//! components are joined with a literal `/`, so `v1/lustre/1000/team%20a/vol1` names the
//! share `team a/vol1` with project 1000 on filesystem key `lustre`. Parsing is strict:
//! only the canonical encoding is accepted, so one volume has exactly one ID. IDs are not
//! truncated; they stay under 128 bytes for typical names (see [`VolumeId::fits_csi_128`]).

use std::fmt;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, model_err};
use crate::names::{RelPath, ShareName};
use crate::project::ProjectId;

/// Characters left unencoded in a path component (RFC 3986 unreserved).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Longest accepted fs key.
pub const FS_KEY_MAX_LEN: usize = 64;
/// Version prefix of the current format.
pub const VOLUME_ID_VERSION: &str = "v1";

/// Identifies one share: which filesystem (a configured key, e.g. the fsname), its project
/// ID and its path below the share root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeId {
    /// Filesystem key: 1–64 chars of `[A-Za-z0-9._-]`.
    pub fs_key: String,
    /// Project ID of the share.
    pub project: ProjectId,
    /// Share path relative to the filesystem's share root.
    pub path: RelPath,
}

fn check_fs_key(whole: &str, key: &str) -> Result<(), ModelError> {
    if key.is_empty() {
        return Err(model_err!(InvalidVolumeId, whole, "empty filesystem key"));
    }
    if key.len() > FS_KEY_MAX_LEN {
        return Err(model_err!(
            InvalidVolumeId,
            whole,
            "filesystem key longer than {FS_KEY_MAX_LEN} bytes"
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(model_err!(
            InvalidVolumeId,
            whole,
            "character {c:?} not allowed in the filesystem key"
        ));
    }
    if key == "." || key == ".." {
        return Err(model_err!(
            InvalidVolumeId,
            whole,
            "filesystem key {key:?} not allowed"
        ));
    }
    Ok(())
}

impl VolumeId {
    /// Builds a volume ID, validating the fs key.
    pub fn new(fs_key: &str, project: ProjectId, path: RelPath) -> Result<VolumeId, ModelError> {
        check_fs_key(fs_key, fs_key)?;
        Ok(VolumeId {
            fs_key: fs_key.to_owned(),
            project,
            path,
        })
    }

    /// Whether the string form is at most 128 bytes (a limit some container
    /// orchestrators recommend for CSI volume IDs).
    pub fn fits_csi_128(&self) -> bool {
        self.to_string().len() <= 128
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VOLUME_ID_VERSION}/{}/{}", self.fs_key, self.project)?;
        for comp in self.path.components() {
            write!(f, "/{}", utf8_percent_encode(comp, COMPONENT))?;
        }
        Ok(())
    }
}

impl FromStr for VolumeId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(4, '/');
        let version = parts.next().unwrap_or("");
        if version != VOLUME_ID_VERSION {
            return Err(model_err!(
                InvalidVolumeId,
                s,
                "unsupported version {version:?} (expected {VOLUME_ID_VERSION:?})"
            ));
        }
        let key = parts.next().unwrap_or("");
        check_fs_key(s, key)?;
        let proj = parts.next().unwrap_or("");
        let project: ProjectId = proj
            .parse()
            .map_err(|e| model_err!(InvalidVolumeId, s, "{e}"))?;
        let encoded = parts.next().unwrap_or("");
        if encoded.is_empty() {
            return Err(model_err!(InvalidVolumeId, s, "empty share path"));
        }
        let mut names = Vec::new();
        for comp in encoded.split('/') {
            let decoded = percent_decode_str(comp).decode_utf8().map_err(|_| {
                model_err!(
                    InvalidVolumeId,
                    s,
                    "component {comp:?} is not UTF-8 once decoded"
                )
            })?;
            let name =
                ShareName::new(&decoded).map_err(|e| model_err!(InvalidVolumeId, s, "{e}"))?;
            if utf8_percent_encode(name.as_str(), COMPONENT).to_string() != comp {
                return Err(model_err!(
                    InvalidVolumeId,
                    s,
                    "component {comp:?} is not canonically percent-encoded"
                ));
            }
            names.push(name);
        }
        let path =
            RelPath::from_components(names).map_err(|e| model_err!(InvalidVolumeId, s, "{e}"))?;
        Ok(VolumeId {
            fs_key: key.to_owned(),
            project,
            path,
        })
    }
}

impl TryFrom<String> for VolumeId {
    type Error = ModelError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<VolumeId> for String {
    fn from(v: VolumeId) -> String {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vid(key: &str, p: u32, path: &str) -> VolumeId {
        VolumeId::new(
            key,
            ProjectId::new(p).unwrap(),
            RelPath::parse(path).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn format() {
        let v = vid("lustre", 1000, "team a/vol1");
        assert_eq!(v.to_string(), "v1/lustre/1000/team%20a/vol1");
        assert_eq!(
            "v1/lustre/1000/team%20a/vol1".parse::<VolumeId>().unwrap(),
            v
        );
        let v = vid("fs", 7, "100%/é");
        assert_eq!(v.to_string(), "v1/fs/7/100%25/%C3%A9");
        assert!(v.fits_csi_128());
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            "\"v1/fs/7/100%25/%C3%A9\""
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "v2/fs/1/a",
            "v1//1/a",
            "v1/fs/0/a",
            "v1/fs/x/a",
            "v1/fs/4294967295/a",
            "v1/fs/1/",
            "v1/fs/1",
            "v1/fs/1//a",
            "v1/fs/1/a/",
            "v1/fs/1/..",
            "v1/fs/1/%2E%2E",
            "v1/fs/1/a/%2E",
            "v1/fs/1/a%2Fb",
            "v1/fs/1/%00",
            "v1/fs/1/%ff",
            "v1/fs/1/a b",
            "v1/fs/1/%61",
            "v1/f s/1/a",
            "v1/fs/1//etc/passwd",
        ] {
            assert!(bad.parse::<VolumeId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inner_space_component_is_canonical() {
        assert!("v1/fs/1/a%20b".parse::<VolumeId>().is_ok());
        // Names never start or end with whitespace (ShareName), so neither do volume IDs.
        assert!("v1/fs/1/a%20".parse::<VolumeId>().is_err());
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = s.parse::<VolumeId>();
        }

        #[test]
        fn never_panic_prefixed(s in "v1/[a-z]{1,3}/[0-9]{1,4}/[%0-9A-Fa-f./a-z]{0,20}") {
            let _ = s.parse::<VolumeId>();
        }

        #[test]
        fn roundtrip(key in "[A-Za-z0-9_-]{1,16}", p in 1u32..u32::MAX,
                     comps in proptest::collection::vec("[^/\\x00-\\x1f\\x7f-\\u{9f}]{1,12}", 1..4)) {
            if let Ok(path) = RelPath::parse(&comps.join("/")) {
                let v = VolumeId::new(&key, ProjectId::new(p).unwrap(), path).unwrap();
                let s = v.to_string();
                prop_assert_eq!(s.parse::<VolumeId>().unwrap(), v);
            }
        }
    }
}
