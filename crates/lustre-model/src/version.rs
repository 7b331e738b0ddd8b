//! Lustre versions from `lctl get_param version` / `lctl --version`.
//!
//! Forms handled: `version=2.15.4`, `-n` output `2.15.4`, vendor suffixes
//! (`version=2.16.0_ddn56b`, `2.12.9-1.el7`), the old multi-line form
//! (`version=` / `lustre: 2.7.0` / `kernel: patchless_client` / `build: ...`), and
//! `lctl 2.15.4`.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

const WHAT: &str = "lctl get_param version";

/// A Lustre release number `major.minor.patch[.fix]` plus the raw version string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LustreVersion {
    /// Major (2).
    pub major: u32,
    /// Minor (15).
    pub minor: u32,
    /// Patch (4); 0 if absent.
    pub patch: u32,
    /// Fourth component (e.g. `2.12.9.1`); 0 if absent.
    pub fix: u32,
    /// The version token as printed (`2.16.0_ddn56b`).
    pub raw: String,
}

impl LustreVersion {
    /// `(major, minor, patch, fix)`.
    pub fn numbers(&self) -> (u32, u32, u32, u32) {
        (self.major, self.minor, self.patch, self.fix)
    }

    /// Whether this version is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }

    /// Parses one version token such as `2.15.4` or `2.16.0_ddn56b`.
    pub fn parse_token(tok: &str) -> Option<LustreVersion> {
        let numeric_end = tok
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(tok.len());
        let numeric = tok.get(..numeric_end)?.trim_end_matches('.');
        let mut parts = numeric.split('.');
        let mut next = || -> Option<Option<u32>> {
            match parts.next() {
                None => Some(None),
                Some(p) => p.parse::<u32>().ok().map(Some),
            }
        };
        let major = next()??;
        let minor = next()??;
        let patch = next()?.unwrap_or(0);
        let fix = next()?.unwrap_or(0);
        Some(LustreVersion {
            major,
            minor,
            patch,
            fix,
            raw: tok.to_owned(),
        })
    }
}

impl PartialOrd for LustreVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LustreVersion {
    /// Numeric order, then the raw string to stay consistent with `Eq`.
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers()
            .cmp(&other.numbers())
            .then_with(|| self.raw.cmp(&other.raw))
    }
}

impl fmt::Display for LustreVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Parses the output of `lctl get_param [-n] version` (any release) or `lctl --version`.
pub fn parse_lctl_version(text: &str) -> Result<LustreVersion, ParseError> {
    for raw in text.lines() {
        let line = raw.trim();
        let line = line.strip_prefix("version=").unwrap_or(line);
        let candidate = if let Some(rest) = line.strip_prefix("lustre:") {
            rest.trim()
        } else if line.starts_with("kernel:") || line.starts_with("build:") {
            continue;
        } else if let Some(rest) = line.strip_prefix("lctl ") {
            rest.trim()
        } else {
            line
        };
        let Some(tok) = candidate.split_whitespace().next() else {
            continue;
        };
        let tok = tok.strip_prefix('v').unwrap_or(tok);
        if let Some(v) = LustreVersion::parse_token(tok) {
            return Ok(v);
        }
    }
    Err(ParseError::new(
        WHAT,
        0,
        format!(
            "no Lustre version found in {:?}",
            text.chars().take(80).collect::<String>()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        let v = parse_lctl_version("version=2.15.4\n").unwrap();
        assert_eq!(v.numbers(), (2, 15, 4, 0));
        // lctl-stats-lnet.md (c): 2.16.0 client fixture (lustrefs-exporter).
        let v = parse_lctl_version("version=2.16.0_ddn56b\n").unwrap();
        assert_eq!(v.numbers(), (2, 16, 0, 0));
        assert_eq!(v.raw, "2.16.0_ddn56b");
        let v = parse_lctl_version("2.17.0\n").unwrap();
        assert!(v.at_least(2, 17));
        // Old multi-line form (Lustre ≤2.9 `version` file).
        let v = parse_lctl_version(
            "version=\nlustre: 2.7.0\nkernel: patchless_client\nbuild:  2.7.0-RC4--PRISTINE-3.10.0\n",
        )
        .unwrap();
        assert_eq!(v.numbers(), (2, 7, 0, 0));
        let v = parse_lctl_version("lctl 2.12.9.1\n").unwrap();
        assert_eq!(v.numbers(), (2, 12, 9, 1));
        assert!(parse_lctl_version("").is_err());
        assert!(
            parse_lctl_version("error: get_param: param_path 'version': No such file or directory")
                .is_err()
        );
        assert!(parse_lctl_version("version=2").is_err());
        assert!(parse_lctl_version("2.15.4").unwrap() < parse_lctl_version("2.16.0").unwrap());
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = parse_lctl_version(&s);
        }

        #[test]
        fn roundtrip(a in 0u32..100, b in 0u32..100, c in 0u32..100, d in 0u32..100) {
            let s = format!("{a}.{b}.{c}.{d}");
            let v = parse_lctl_version(&format!("version={s}\n")).unwrap();
            prop_assert_eq!(v.numbers(), (a, b, c, d));
            prop_assert_eq!(parse_lctl_version(&v.to_string()).unwrap(), v);
        }
    }
}
