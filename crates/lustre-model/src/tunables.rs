//! Client tunables a StorageClass may set (`clientTunables`): an allowlist of `llite.*`,
//! `osc.*` and `mdc.*` parameters, each with the kind of value it takes, scoped to one
//! filesystem (`llite.<fsname>-*.<param>`), and the parser of what `lctl get_param` prints
//! for them (one `<name>=<value>` line per client instance).
//!
//! The allowlist is short on purpose: these are read-ahead, caching and RPC knobs that a
//! workload tunes for itself. Anything that changes security or another tenant's view
//! (`nodemap`, `*.checksum_type`, `enable_setstripe_gid`, ...) is not on it, and parameters
//! whose value spans several lines (`max_cached_mb`) are left out so a value is one token.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::ParseError;
use crate::names::FsName;

/// The client device class a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunableClass {
    /// The client mount (`llite.<fsname>-<instance>`).
    Llite,
    /// An OST connection (`osc.<fsname>-OSTxxxx-osc-<instance>`).
    Osc,
    /// An MDT connection (`mdc.<fsname>-MDTxxxx-mdc-<instance>`).
    Mdc,
}

impl TunableClass {
    /// `llite`, `osc` or `mdc`.
    pub fn as_str(self) -> &'static str {
        match self {
            TunableClass::Llite => "llite",
            TunableClass::Osc => "osc",
            TunableClass::Mdc => "mdc",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "llite" => Some(TunableClass::Llite),
            "osc" => Some(TunableClass::Osc),
            "mdc" => Some(TunableClass::Mdc),
            _ => None,
        }
    }

    /// The device-name glob of `fsname`'s devices of this class.
    fn devices(self, fsname: &FsName) -> String {
        match self {
            TunableClass::Llite => format!("{fsname}-*"),
            TunableClass::Osc => format!("{fsname}-OST*"),
            TunableClass::Mdc => format!("{fsname}-MDT*"),
        }
    }
}

/// What a parameter's value may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    /// `0` or `1`.
    Flag,
    /// A decimal count, at most `max`.
    Count { max: u64 },
}

/// The parameters a StorageClass may set, by class and name.
const ALLOWED: &[(TunableClass, &str, ValueKind)] = &[
    (
        TunableClass::Llite,
        "max_read_ahead_mb",
        ValueKind::Count { max: 1 << 20 },
    ),
    (
        TunableClass::Llite,
        "max_read_ahead_per_file_mb",
        ValueKind::Count { max: 1 << 20 },
    ),
    (
        TunableClass::Llite,
        "max_read_ahead_whole_mb",
        ValueKind::Count { max: 1 << 20 },
    ),
    (
        TunableClass::Llite,
        "statahead_max",
        ValueKind::Count { max: 8192 },
    ),
    (TunableClass::Llite, "statahead_agl", ValueKind::Flag),
    (TunableClass::Llite, "fast_read", ValueKind::Flag),
    (TunableClass::Llite, "xattr_cache", ValueKind::Flag),
    (
        TunableClass::Osc,
        "max_rpcs_in_flight",
        ValueKind::Count { max: 512 },
    ),
    (
        TunableClass::Osc,
        "max_dirty_mb",
        ValueKind::Count { max: 1 << 20 },
    ),
    (
        TunableClass::Osc,
        "max_pages_per_rpc",
        ValueKind::Count { max: 1 << 14 },
    ),
    (TunableClass::Osc, "checksums", ValueKind::Flag),
    (
        TunableClass::Mdc,
        "max_rpcs_in_flight",
        ValueKind::Count { max: 512 },
    ),
    (
        TunableClass::Mdc,
        "max_mod_rpcs_in_flight",
        ValueKind::Count { max: 512 },
    ),
];

/// A `clientTunables` entry that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TunableError {
    /// Not `class.param=value` (or `class.*.param=value`).
    #[error("client tunable {entry:?}: not <llite|osc|mdc>.<param>=<value>")]
    Syntax {
        /// The rejected entry.
        entry: String,
    },
    /// The parameter is not one a StorageClass may set.
    #[error(
        "client tunable {entry:?}: {class}.{param} is not settable per StorageClass (allowed: {allowed})"
    )]
    NotAllowed {
        /// The rejected entry.
        entry: String,
        /// Its class.
        class: String,
        /// Its parameter.
        param: String,
        /// The allowlist, for the message.
        allowed: String,
    },
    /// The value is not one the parameter takes.
    #[error("client tunable {entry:?}: {why}")]
    BadValue {
        /// The rejected entry.
        entry: String,
        /// Why.
        why: String,
    },
    /// The same parameter twice.
    #[error("client tunable {name} is given twice")]
    Duplicate {
        /// `class.param`.
        name: String,
    },
}

/// One client parameter to set: `class.param=value`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientTunable {
    /// The device class.
    pub class: TunableClass,
    /// The parameter's name (on the allowlist).
    pub param: String,
    /// The value (validated for its kind).
    pub value: String,
}

impl ClientTunable {
    /// `class.param`, the key two StorageClasses must agree on.
    pub fn key(&self) -> String {
        format!("{}.{}", self.class.as_str(), self.param)
    }

    /// The `lctl get_param`/`set_param` glob for `fsname`'s devices.
    pub fn pattern(&self, fsname: &FsName) -> String {
        format!(
            "{}.{}.{}",
            self.class.as_str(),
            self.class.devices(fsname),
            self.param
        )
    }
}

impl fmt::Display for ClientTunable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key(), self.value)
    }
}

fn allowed_list() -> String {
    ALLOWED
        .iter()
        .map(|(c, p, _)| format!("{}.{p}", c.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_entry(entry: &str) -> Result<ClientTunable, TunableError> {
    let syntax = || TunableError::Syntax {
        entry: entry.to_string(),
    };
    let (name, value) = entry.split_once('=').ok_or_else(syntax)?;
    let mut parts: Vec<&str> = name.split('.').collect();
    // `llite.*.max_read_ahead_mb` is the spelling `lctl` users know: the `*` is implied.
    if parts.len() == 3 && parts[1] == "*" {
        parts.remove(1);
    }
    let [class, param] = parts[..] else {
        return Err(syntax());
    };
    let class = TunableClass::parse(class).ok_or_else(syntax)?;
    let kind = ALLOWED
        .iter()
        .find(|(c, p, _)| *c == class && *p == param)
        .map(|(_, _, k)| *k)
        .ok_or_else(|| TunableError::NotAllowed {
            entry: entry.to_string(),
            class: class.as_str().to_string(),
            param: param.to_string(),
            allowed: allowed_list(),
        })?;
    let bad = |why: String| TunableError::BadValue {
        entry: entry.to_string(),
        why,
    };
    match kind {
        ValueKind::Flag if value == "0" || value == "1" => {}
        ValueKind::Flag => return Err(bad("the value must be 0 or 1".into())),
        ValueKind::Count { max } => {
            let n: u64 = (!value.is_empty()
                && value.len() <= 20
                && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse().ok())
            .flatten()
            .ok_or_else(|| bad("the value must be a whole number".into()))?;
            if n > max {
                return Err(bad(format!("the value must be at most {max}")));
            }
        }
    }
    // Canonical digits (no leading zeros), so equal settings compare equal.
    let value = match kind {
        ValueKind::Count { .. } => value.parse::<u64>().map_err(|_| syntax())?.to_string(),
        ValueKind::Flag => value.to_string(),
    };
    Ok(ClientTunable {
        class,
        param: param.to_string(),
        value,
    })
}

/// The tunables of one StorageClass, keyed by `class.param`, in a canonical order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTunables(BTreeMap<String, ClientTunable>);

impl ClientTunables {
    /// Parses `clientTunables`: entries separated by commas, spaces or new lines.
    pub fn parse(text: &str) -> Result<Self, TunableError> {
        let mut out = BTreeMap::new();
        for entry in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            let t = parse_entry(entry)?;
            let key = t.key();
            if out.insert(key.clone(), t).is_some() {
                return Err(TunableError::Duplicate { name: key });
            }
        }
        Ok(Self(out))
    }

    /// Whether there is nothing to set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tunables, by `class.param`.
    pub fn iter(&self) -> impl Iterator<Item = &ClientTunable> {
        self.0.values()
    }
}

impl fmt::Display for ClientTunables {
    /// The canonical form, which [`ClientTunables::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for t in self.0.values() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

/// One device's current value of a parameter, as `lctl get_param` printed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamValue {
    /// The full parameter name (`llite.testfs-ffff8e4b9a3c2800.max_read_ahead_mb`).
    pub name: String,
    /// The value.
    pub value: String,
}

/// Parses what `lctl get_param <tunable.pattern(fsname)>` prints: one `<name>=<value>`
/// line per device of `fsname`. A line for another filesystem or parameter, or a value that
/// is not one token, is an error naming the line.
pub fn parse_tunable_values(
    text: &str,
    tunable: &ClientTunable,
    fsname: &FsName,
) -> Result<Vec<ParamValue>, ParseError> {
    let what = "lctl get_param (client tunable)";
    let prefix = format!("{}.{fsname}-", tunable.class.as_str());
    let suffix = format!(".{}", tunable.param);
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| ParseError::new(what, index + 1, format!("{why}: {line:?}"));
        let (name, value) = line.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let device = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(&suffix))
            .ok_or_else(|| bad(&format!("not {prefix}*{suffix}")))?;
        if device.is_empty()
            || !device
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("not a device name"));
        }
        if value.is_empty()
            || value.len() > 64
            || value.bytes().any(|b| b.is_ascii_whitespace() || b == b'=')
        {
            return Err(bad("the value is not one token"));
        }
        out.push(ParamValue {
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fs() -> FsName {
        FsName::new("testfs").unwrap()
    }

    #[test]
    fn entries_parse_in_both_spellings_and_render_canonically() {
        let t = ClientTunables::parse(
            "llite.max_read_ahead_mb=1024, osc.*.max_rpcs_in_flight=016\nmdc.max_mod_rpcs_in_flight=8",
        )
        .unwrap();
        assert_eq!(
            t.to_string(),
            "llite.max_read_ahead_mb=1024,mdc.max_mod_rpcs_in_flight=8,osc.max_rpcs_in_flight=16"
        );
        assert_eq!(ClientTunables::parse(&t.to_string()).unwrap(), t);
        let patterns: Vec<String> = t.iter().map(|x| x.pattern(&fs())).collect();
        assert_eq!(
            patterns,
            [
                "llite.testfs-*.max_read_ahead_mb",
                "mdc.testfs-MDT*.max_mod_rpcs_in_flight",
                "osc.testfs-OST*.max_rpcs_in_flight"
            ]
        );
        assert!(ClientTunables::parse("  ").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        for (text, want) in [
            ("llite.max_read_ahead_mb", "not <llite|osc|mdc>"),
            ("ost.max_rpcs_in_flight=8", "not <llite|osc|mdc>"),
            ("llite.a.b.c=1", "not <llite|osc|mdc>"),
            (
                "llite.enable_setstripe_gid=0",
                "not settable per StorageClass",
            ),
            ("osc.checksum_type=crc32", "not settable per StorageClass"),
            ("llite.fast_read=2", "must be 0 or 1"),
            ("osc.max_rpcs_in_flight=-1", "whole number"),
            ("osc.max_rpcs_in_flight=1e3", "whole number"),
            ("osc.max_rpcs_in_flight=513", "at most 512"),
            ("osc.max_rpcs_in_flight=", "whole number"),
            ("llite.fast_read=1 llite.*.fast_read=0", "given twice"),
        ] {
            let e = ClientTunables::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn get_param_lines_are_read_per_device() {
        let t = ClientTunables::parse("osc.max_rpcs_in_flight=16").unwrap();
        let t = t.iter().next().unwrap();
        let text = "osc.testfs-OST0000-osc-ffff8e4b9a3c2800.max_rpcs_in_flight=8\n\
                    osc.testfs-OST0001-osc-ffff8e4b9a3c2800.max_rpcs_in_flight=8\n";
        let v = parse_tunable_values(text, t, &fs()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[1].name,
            "osc.testfs-OST0001-osc-ffff8e4b9a3c2800.max_rpcs_in_flight"
        );
        assert_eq!(v[1].value, "8");
        for bad in [
            "osc.other-OST0000-osc-ff.max_rpcs_in_flight=8",
            "osc.testfs-OST0000-osc-ff.max_dirty_mb=8",
            "osc.testfs-.max_rpcs_in_flight=8",
            "osc.testfs-OST0000-osc-ff.max_rpcs_in_flight=8 9",
            "osc.testfs-OST0000 x.max_rpcs_in_flight=8",
            "error: get_param: param_path 'osc/testfs-OST*/max_rpcs_in_flight': No such file or directory",
        ] {
            assert!(parse_tunable_values(bad, t, &fs()).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,200}") {
            let _ = ClientTunables::parse(&s);
            let t = ClientTunables::parse("llite.fast_read=1").unwrap();
            let _ = parse_tunable_values(&s, t.iter().next().unwrap(), &fs());
        }

        #[test]
        fn canonical_text_reads_back(
            picks in proptest::collection::btree_map(0..ALLOWED.len(), 0u64..=512, 0..6)
        ) {
            let text: Vec<String> = picks
                .iter()
                .map(|(i, n)| {
                    let (c, p, k) = ALLOWED[*i];
                    let v = match k { ValueKind::Flag => n % 2, ValueKind::Count { .. } => *n };
                    format!("{}.{p}={v}", c.as_str())
                })
                .collect();
            let t = ClientTunables::parse(&text.join(" ")).unwrap();
            prop_assert_eq!(ClientTunables::parse(&t.to_string()).unwrap(), t);
        }
    }
}
