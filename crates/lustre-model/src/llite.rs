//! Client (`llite`) parameters from `lctl get_param llite.<fsname>-*.<param>`: one
//! `llite.<instance>.<param>=<value>` line per mount of the filesystem on this node, where
//! the instance is `<fsname>-<superblock address>` (`llite.testfs-ffff8e4b9a3c2800.statfs_project=1`).

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

const WHAT: &str = "lctl get_param llite.*";

/// One mount's value of a numeric client parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LliteValue {
    /// The llite instance (`testfs-ffff8e4b9a3c2800`).
    pub instance: String,
    /// The value as printed.
    pub value: u64,
}

/// Parses `llite.<instance>.<param>=<value>` lines for `param`; blank lines are skipped.
/// Every other line, a wrong parameter or a non-numeric value is an error naming the line.
pub fn parse_llite_param(text: &str, param: &str) -> Result<Vec<LliteValue>, ParseError> {
    let mut values = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| ParseError::new(WHAT, index + 1, format!("{why}: {line:?}"));
        let (key, value) = line.split_once('=').ok_or_else(|| bad("no `=`"))?;
        let instance = key
            .strip_prefix("llite.")
            .and_then(|rest| rest.strip_suffix(param))
            .and_then(|rest| rest.strip_suffix('.'))
            .filter(|instance| !instance.is_empty() && !instance.contains(['.', '=']))
            .ok_or_else(|| bad(&format!("not llite.<instance>.{param}")))?;
        let value = value
            .trim()
            .parse()
            .map_err(|_| bad("the value is not a number"))?;
        values.push(LliteValue {
            instance: instance.to_owned(),
            value,
        });
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_one_line_per_mount() {
        let text = "llite.testfs-ffff8e4b9a3c2800.statfs_project=1\n\
                    llite.testfs-ffff8e4b9a3c6000.statfs_project=0\n";
        let values = parse_llite_param(text, "statfs_project").unwrap();
        assert_eq!(
            values,
            vec![
                LliteValue {
                    instance: "testfs-ffff8e4b9a3c2800".into(),
                    value: 1
                },
                LliteValue {
                    instance: "testfs-ffff8e4b9a3c6000".into(),
                    value: 0
                },
            ]
        );
        assert!(parse_llite_param("", "statfs_project").unwrap().is_empty());
    }

    #[test]
    fn refuses_other_lines() {
        for text in [
            "error: get_param: param_path 'llite/*/statfs_project': No such file or directory",
            "llite.testfs-ff.statfs_project=yes",
            "llite.testfs-ff.xattr_cache=1",
            "llite..statfs_project=1",
            "mdc.testfs-ff.statfs_project=1",
            "1",
        ] {
            let e = parse_llite_param(text, "statfs_project").unwrap_err();
            assert!(e.to_string().contains("line 1"), "{text}: {e}");
        }
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>(), p in "[a-z_]{0,12}") {
            let _ = parse_llite_param(&s, &p);
        }

        #[test]
        fn roundtrip(instance in "[a-z0-9]{1,8}-[0-9a-f]{16}", value in any::<u64>()) {
            let text = format!("llite.{instance}.statfs_project={value}\n");
            let parsed = parse_llite_param(&text, "statfs_project").unwrap();
            prop_assert_eq!(parsed, vec![LliteValue { instance, value }]);
        }
    }
}
