//! The pin: which archived object version holds a file's data.
//!
//! Object keys follow paths (`<prefix>/<path>`, the layout AMLFS users browse), but paths
//! move: a file archived as `x`, released, renamed to `y`, and a new `x` archived, would
//! otherwise lose `y`'s only copy to the new `x`. So every archive records on the file the
//! exact version it wrote: the key, the store's ETag, our own version ID (also in the
//! object's metadata) and the BLAKE3 checksum taken while reading the file. Before a key is
//! overwritten, the version it holds is copied aside to `.lustrekit-versions/<version>`
//! unless it is the archiving file's own previous version (see [`crate::store`]). Restore
//! fetches the pinned version (the key while its ETag still matches, else the copy aside)
//! and verifies the pinned checksum, never only the object's own metadata.
//!
//! On the `local` backend the pin is an xattr on the file: `trusted.lustrekit.pin` when we
//! run as root (a tenant cannot write `trusted.*`, so a forged pin cannot point a root
//! restore at another tenant's object), `user.lustrekit.pin` otherwise. The Lustre copytool
//! keeps the same record in the store, under `.lustrekit-fid/<fid>`.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use object_store::path::Path as ObjPath;
use serde::{Deserialize, Serialize};

use crate::error::{HsmError, Result};

pub const PIN_XATTR_TRUSTED: &str = "trusted.lustrekit.pin";
pub const PIN_XATTR_USER: &str = "user.lustrekit.pin";
/// Our version ID in an object's metadata.
pub const K_VERSION: &str = "lustrekit_version";

/// One archived version of a file's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The key the version was written at.
    pub key: String,
    /// The store's ETag of that write, when the store gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Our version ID: `v-<random>` for our archives, `e-<hash>` for objects we found.
    pub version: String,
    /// `blake3:<hex>` of the data, taken from the file itself at archive time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    pub size: u64,
}

impl Pin {
    /// The key, checked (a pin read back is data, however trusted its source).
    pub fn object_key(&self) -> Result<ObjPath> {
        ObjPath::parse(&self.key).map_err(|e| HsmError::Metadata {
            key: self.key.clone(),
            field: "pin.key".into(),
            why: e.to_string(),
        })
    }

    fn validate(self) -> Result<Self> {
        if !valid_version(&self.version) {
            return Err(HsmError::Metadata {
                key: self.key.clone(),
                field: "pin.version".into(),
                why: format!("`{}` is not a version ID", self.version),
            });
        }
        self.object_key()?;
        Ok(self)
    }
}

/// Version IDs are one key segment of `[a-z0-9-]`, so they can never name another path.
pub fn valid_version(v: &str) -> bool {
    (3..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A fresh version ID for an archive we write.
pub fn new_version_id() -> Result<String> {
    let mut buf = [0u8; 16];
    getrandom::getrandom(&mut buf)
        .map_err(|e| HsmError::Unsupported(format!("no randomness for a version ID: {e}")))?;
    Ok(format!("v-{}", hex(&buf)))
}

/// The version ID of an object that carries none of ours (written by someone else): a hash
/// of what identifies that write. The ETag does when there is one; the modification time is
/// only used without it (listings and HEADs report it at different precisions).
pub fn foreign_version_id(key: &str, etag: Option<&str>, size: u64, modified_ns: i64) -> String {
    let when = match etag {
        Some(_) => String::new(),
        None => modified_ns.to_string(),
    };
    let mut h = blake3::Hasher::new();
    for part in [key, etag.unwrap_or(""), &size.to_string(), &when] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    format!("e-{}", &h.finalize().to_hex()[..32])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn privileged() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The xattr the pin lives in for this process (see the module doc).
pub fn xattr_name() -> &'static str {
    if privileged() {
        PIN_XATTR_TRUSTED
    } else {
        PIN_XATTR_USER
    }
}

/// The pin of an open file; `None` when it has none.
pub fn read(fd: BorrowedFd<'_>, shown: &Path) -> Result<Option<Pin>> {
    let raw = backend::local::beneath::get_xattr(fd, xattr_name())
        .map_err(|e| HsmError::io(shown, e.into()))?;
    let Some(raw) = raw else { return Ok(None) };
    let pin: Pin = serde_json::from_slice(&raw).map_err(|e| HsmError::Metadata {
        key: shown.display().to_string(),
        field: "pin".into(),
        why: e.to_string(),
    })?;
    pin.validate().map(Some)
}

/// Records `pin` on an open file.
pub fn write(fd: BorrowedFd<'_>, shown: &Path, pin: &Pin) -> Result<()> {
    let raw = serde_json::to_vec(pin).map_err(|e| HsmError::Metadata {
        key: pin.key.clone(),
        field: "pin".into(),
        why: e.to_string(),
    })?;
    crate::posix::fset_xattr(fd.as_raw_fd(), xattr_name(), &raw).map_err(|e| HsmError::io(shown, e))
}

/// Drops the pin of an open file (absent is fine).
pub fn clear(fd: BorrowedFd<'_>, shown: &Path) -> Result<()> {
    let name = std::ffi::CString::new(xattr_name()).unwrap_or_default();
    // SAFETY: a valid descriptor and a NUL-terminated name.
    let rc = unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) };
    match nix::errno::Errno::result(rc) {
        Ok(_) | Err(nix::errno::Errno::ENODATA) => Ok(()),
        Err(e) => Err(HsmError::io(shown, e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn version_ids_are_single_safe_segments() {
        let v = new_version_id().expect("id");
        assert!(valid_version(&v), "{v}");
        assert_ne!(v, new_version_id().expect("id"));
        let f = foreign_version_id("a/b", Some("\"etag\""), 3, 7);
        assert!(valid_version(&f), "{f}");
        assert_ne!(f, foreign_version_id("a/b", Some("\"etag2\""), 3, 7));
        for bad in ["", "..", "a/b", "V-1", "x/../y", "v-1\n"] {
            assert!(!valid_version(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_pin_with_a_hostile_version_is_refused() {
        let pin = Pin {
            key: "a/b".into(),
            etag: None,
            version: "../../etc".into(),
            checksum: None,
            size: 1,
        };
        assert!(pin.validate().is_err());
    }

    proptest! {
        #[test]
        fn pins_round_trip(key in "[a-z]{1,8}(/[a-z0-9]{1,8}){0,3}", etag in proptest::option::of("[ -~]{0,20}"), size in any::<u64>()) {
            let pin = Pin { key, etag, version: new_version_id().expect("id"), checksum: Some("blake3:00".into()), size };
            let back: Pin = serde_json::from_slice(&serde_json::to_vec(&pin).expect("ser")).expect("de");
            prop_assert_eq!(back.clone().validate().expect("valid"), pin);
        }
    }
}
