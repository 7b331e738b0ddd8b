//! Validated names: Lustre filesystem names, user-supplied path components
//! ([`ShareName`]), relative paths made of them ([`RelPath`]) and nodemap names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, model_err};

/// Longest Lustre filesystem name (`LUSTRE_MAXFSNAME` in `lustre_param.h`).
pub const FSNAME_MAX_LEN: usize = 8;
/// Longest nodemap name (`LUSTRE_NODEMAP_NAME_LENGTH` in `lustre_nodemap.h`).
pub const NODEMAP_NAME_MAX_LEN: usize = 16;
/// Longest path component in bytes (`NAME_MAX`).
pub const SHARE_NAME_MAX_BYTES: usize = 255;

/// A Lustre filesystem name: 1–8 characters of `[A-Za-z0-9_-]`
/// (the rule of `lustre_is_fsname_valid()` with `LUSTRE_MAXFSNAME` = 8).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FsName(String);

impl FsName {
    /// Validates `s` as a filesystem name.
    pub fn new(s: &str) -> Result<FsName, ModelError> {
        if s.is_empty() {
            return Err(model_err!(InvalidFsName, s, "must not be empty"));
        }
        if s.len() > FSNAME_MAX_LEN {
            return Err(model_err!(
                InvalidFsName,
                s,
                "is {} bytes long, at most {FSNAME_MAX_LEN} allowed",
                s.len()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(model_err!(
                InvalidFsName,
                s,
                "character {c:?} not allowed (only A-Z a-z 0-9 _ -)"
            ));
        }
        Ok(FsName(s.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A nodemap name: 1–16 characters of `[A-Za-z0-9_]`
/// (`nodemap_name_is_valid()` with `LUSTRE_NODEMAP_NAME_LENGTH` = 16).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodemapName(String);

impl NodemapName {
    /// Validates `s` as a nodemap name.
    pub fn new(s: &str) -> Result<NodemapName, ModelError> {
        if s.is_empty() {
            return Err(model_err!(InvalidNodemapName, s, "must not be empty"));
        }
        if s.len() > NODEMAP_NAME_MAX_LEN {
            return Err(model_err!(
                InvalidNodemapName,
                s,
                "is {} bytes long, at most {NODEMAP_NAME_MAX_LEN} allowed",
                s.len()
            ));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(model_err!(
                InvalidNodemapName,
                s,
                "character {c:?} not allowed (only A-Z a-z 0-9 _)"
            ));
        }
        Ok(NodemapName(s.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One user-supplied path component: non-empty, at most 255 bytes, no `/`, no NUL,
/// no control characters, not `.` or `..`, and no whitespace at either end (`" "` or
/// `"a "` would make directories that look like another name, or like none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShareName(String);

impl ShareName {
    /// Validates `s` as a single path component.
    pub fn new(s: &str) -> Result<ShareName, ModelError> {
        if s.is_empty() {
            return Err(model_err!(InvalidShareName, s, "must not be empty"));
        }
        if s.len() > SHARE_NAME_MAX_BYTES {
            return Err(model_err!(
                InvalidShareName,
                s,
                "is {} bytes long, at most {SHARE_NAME_MAX_BYTES} allowed",
                s.len()
            ));
        }
        if s == "." || s == ".." {
            return Err(model_err!(
                InvalidShareName,
                s,
                "`.` and `..` are not allowed"
            ));
        }
        if s.contains('/') {
            return Err(model_err!(InvalidShareName, s, "must not contain `/`"));
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(model_err!(
                InvalidShareName,
                s,
                "control character {c:?} not allowed"
            ));
        }
        if s.trim().is_empty() {
            return Err(model_err!(
                InvalidShareName,
                s,
                "must not be only whitespace"
            ));
        }
        if s.trim() != s {
            return Err(model_err!(
                InvalidShareName,
                s,
                "must not start or end with whitespace"
            ));
        }
        Ok(ShareName(s.to_owned()))
    }

    /// The component as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A relative path made only of valid [`ShareName`] components joined by `/`
/// (never absolute, never empty, no `.`/`..`/empty components).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelPath(String);

impl RelPath {
    /// Parses `a/b/c`. Rejects absolute paths, empty paths, empty components (`a//b`,
    /// trailing `/`), `.` and `..`, and any component that is not a valid [`ShareName`].
    pub fn parse(s: &str) -> Result<RelPath, ModelError> {
        if s.is_empty() {
            return Err(model_err!(InvalidRelPath, s, "must not be empty"));
        }
        if s.starts_with('/') {
            return Err(model_err!(
                InvalidRelPath,
                s,
                "must be relative, not absolute"
            ));
        }
        for comp in s.split('/') {
            if comp.is_empty() {
                return Err(model_err!(
                    InvalidRelPath,
                    s,
                    "empty component (`//` or trailing `/`)"
                ));
            }
            ShareName::new(comp).map_err(|e| model_err!(InvalidRelPath, s, "{e}"))?;
        }
        Ok(RelPath(s.to_owned()))
    }

    /// Joins validated components. Fails only when `components` is empty.
    pub fn from_components(components: Vec<ShareName>) -> Result<RelPath, ModelError> {
        if components.is_empty() {
            return Err(model_err!(
                InvalidRelPath,
                "",
                "needs at least one component"
            ));
        }
        let parts: Vec<&str> = components.iter().map(ShareName::as_str).collect();
        Ok(RelPath(parts.join("/")))
    }

    /// A one-component path.
    pub fn from_name(name: ShareName) -> RelPath {
        RelPath(name.0)
    }

    /// `self/name`.
    pub fn join(&self, name: &ShareName) -> RelPath {
        RelPath(format!("{}/{}", self.0, name.as_str()))
    }

    /// The path as `a/b`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, first to last.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The path without its last component, or `None` for a one-component path.
    pub fn parent(&self) -> Option<RelPath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| RelPath(parent.to_owned()))
    }

    /// `self` as seen from `base`, when `self` is strictly beneath it: `a/b/c` relative to
    /// `a` is `b/c`; a path equal to `base`, or outside it, has none.
    pub fn relative_to(&self, base: &RelPath) -> Option<RelPath> {
        self.0
            .strip_prefix(base.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .map(|rest| RelPath(rest.to_owned()))
    }

    /// Whether `self` is `base` or beneath it (component-wise: `ab` is not within `a`).
    pub fn is_within(&self, base: &RelPath) -> bool {
        self == base || self.relative_to(base).is_some()
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl From<ShareName> for RelPath {
    fn from(name: ShareName) -> Self {
        RelPath::from_name(name)
    }
}

macro_rules! string_newtype_impls {
    ($ty:ident, $ctor:path) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $ty {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ctor(s)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = ModelError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $ctor(&s)
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype_impls!(FsName, FsName::new);
string_newtype_impls!(NodemapName, NodemapName::new);
string_newtype_impls!(ShareName, ShareName::new);
string_newtype_impls!(RelPath, RelPath::parse);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fsname_rules() {
        assert!(FsName::new("lustre").is_ok());
        assert!(FsName::new("a-b_c123").is_ok());
        assert!(FsName::new("").is_err());
        assert!(FsName::new("toolong12").is_err());
        assert!(FsName::new("a.b").is_err());
        assert!(FsName::new("a b").is_err());
        let e = FsName::new("a/b").unwrap_err().to_string();
        assert!(e.contains("a/b") && e.contains("'/'"), "{e}");
        assert_eq!("testfs".parse::<FsName>().unwrap().as_str(), "testfs");
    }

    #[test]
    fn nodemap_name_rules() {
        assert!(NodemapName::new("BirdResearchSite").is_ok()); // 16 chars
        assert!(NodemapName::new("BirdResearchSite1").is_err()); // 17 chars
        assert!(NodemapName::new("a-b").is_err());
        assert!(NodemapName::new("").is_err());
        assert!(NodemapName::new("tenant_01").is_ok());
    }

    #[test]
    fn share_name_rules() {
        assert!(ShareName::new("pvc-123").is_ok());
        assert!(ShareName::new("with space").is_ok());
        assert!(ShareName::new("ünïcödé").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b", "a\nb", "a\u{7f}b", "a\u{85}b"] {
            assert!(ShareName::new(bad).is_err(), "{bad:?}");
        }
        assert!(ShareName::new(&"x".repeat(255)).is_ok());
        assert!(ShareName::new(&"x".repeat(256)).is_err());
        // 128 two-byte chars = 256 bytes
        assert!(ShareName::new(&"é".repeat(128)).is_err());
        assert!(ShareName::new("...").is_ok());
        for bad in [" ", "   ", " a", "a ", "\u{a0}", "a\u{3000}", "\u{2003}b"] {
            let e = ShareName::new(bad).unwrap_err().to_string();
            assert!(e.contains("whitespace"), "{bad:?}: {e}");
        }
        assert!(RelPath::parse("shares/ ").is_err());
        assert!(RelPath::parse("shares/a /b").is_err());
    }

    #[test]
    fn relative_to_is_component_wise() {
        let p = |s: &str| RelPath::parse(s).unwrap();
        assert_eq!(
            p("shares/alpha/pvc-1").relative_to(&p("shares/alpha")),
            Some(p("pvc-1"))
        );
        assert_eq!(p("a/b/c").relative_to(&p("a")), Some(p("b/c")));
        assert_eq!(p("shares/alphabet/x").relative_to(&p("shares/alpha")), None);
        assert_eq!(p("shares/alpha").relative_to(&p("shares/alpha")), None);
        assert_eq!(p("shares").relative_to(&p("shares/alpha")), None);
        assert!(p("shares/alpha").is_within(&p("shares/alpha")));
        assert!(p("shares/alpha/x").is_within(&p("shares/alpha")));
        assert!(!p("shares/alphabet").is_within(&p("shares/alpha")));
    }

    proptest! {
        #[test]
        fn relative_to_then_rejoin_is_the_path(
            base in "[a-c]{1,2}(/[a-c]{1,2}){0,2}",
            rest in "[a-c]{1,2}(/[a-c]{1,2}){0,2}",
            other in "[a-c]{1,2}(/[a-c]{1,2}){0,3}",
        ) {
            let (base, rest) = (RelPath::parse(&base).unwrap(), RelPath::parse(&rest).unwrap());
            let joined = RelPath::parse(&format!("{}/{}", base.as_str(), rest.as_str())).unwrap();
            prop_assert_eq!(joined.relative_to(&base), Some(rest));
            // Whatever `other` is, a relative part rejoins to it.
            let other = RelPath::parse(&other).unwrap();
            if let Some(r) = other.relative_to(&base) {
                prop_assert_eq!(format!("{}/{}", base.as_str(), r.as_str()), other.as_str());
            }
        }
    }

    #[test]
    fn relpath_rules() {
        let p = RelPath::parse("a/b/c").unwrap();
        assert_eq!(p.components().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(p.file_name(), "c");
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(RelPath::parse("a").unwrap().parent(), None);
        assert_eq!(RelPath::parse("a").unwrap().file_name(), "a");
        for bad in ["", "/a", "a//b", "a/", "../a", "a/./b", "a/..", "a/\0"] {
            assert!(RelPath::parse(bad).is_err(), "{bad:?}");
        }
        let j = p.join(&ShareName::new("d").unwrap());
        assert_eq!(j.as_str(), "a/b/c/d");
        let c = RelPath::from_components(vec![
            ShareName::new("x").unwrap(),
            ShareName::new("y").unwrap(),
        ])
        .unwrap();
        assert_eq!(c.to_string(), "x/y");
        assert!(RelPath::from_components(vec![]).is_err());
    }

    #[test]
    fn serde_validates() {
        let p: RelPath = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"a/b\"");
        assert!(serde_json::from_str::<RelPath>("\"/etc\"").is_err());
        assert!(serde_json::from_str::<FsName>("\"waytoolongname\"").is_err());
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = FsName::new(&s);
            let _ = NodemapName::new(&s);
            let _ = ShareName::new(&s);
            let _ = RelPath::parse(&s);
        }

        #[test]
        fn relpath_roundtrip(parts in proptest::collection::vec("[^/\\x00-\\x1f\\x7f]{1,20}", 1..5)) {
            let joined = parts.join("/");
            if let Ok(p) = RelPath::parse(&joined) {
                prop_assert_eq!(p.to_string().parse::<RelPath>().unwrap(), p.clone());
                prop_assert_eq!(p.components().count(), parts.len());
            }
        }

        #[test]
        fn share_name_roundtrip(s in "[a-zA-Z0-9 ._-]{1,40}") {
            if let Ok(n) = ShareName::new(&s) {
                prop_assert_eq!(n.to_string().parse::<ShareName>().unwrap(), n);
            }
        }

        #[test]
        fn share_names_never_start_or_end_with_whitespace(s in "\\PC{0,12}") {
            if let Ok(n) = ShareName::new(&s) {
                prop_assert_eq!(n.as_str().trim(), n.as_str());
                prop_assert!(!n.as_str().is_empty());
            }
        }

        #[test]
        fn fsname_roundtrip(s in "[A-Za-z0-9_-]{1,8}") {
            let n = FsName::new(&s).unwrap();
            prop_assert_eq!(n.to_string().parse::<FsName>().unwrap(), n);
        }
    }
}
