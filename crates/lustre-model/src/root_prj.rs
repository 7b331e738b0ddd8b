//! Whether project quotas bind root, from
//! `lctl get_param osd-*.<fsname>-*.quota_slave.root_prj_enable` (Lustre 2.16+, LU-16415;
//! one `"%d\n"` value per MDT and OST on the host, INDEX.md / lfs-setquota.md).

use crate::error::ParseError;

const WHAT: &str = "lctl get_param quota_slave.root_prj_enable";

/// One target's setting: `(target, enabled)`, the target as `<fsname>-MDT0000` (the part of
/// the parameter name between `osd-<type>.` and `.quota_slave`).
pub fn parse_root_prj_enable(text: &str) -> Result<Vec<(String, bool)>, ParseError> {
    let mut targets = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| ParseError::new(WHAT, idx + 1, format!("{why}: {line:?}"));
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=VALUE"))?;
        let target = name
            .strip_prefix("osd-")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(_, rest)| rest.strip_suffix(".quota_slave.root_prj_enable"))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("expected osd-TYPE.TARGET.quota_slave.root_prj_enable"))?;
        let enabled = match value.trim() {
            "0" => false,
            "1" => true,
            _ => return Err(bad("value is not 0 or 1")),
        };
        targets.push((target.to_string(), enabled));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_every_target() {
        // The parameter named in INDEX.md (2.16 features), one line per target.
        let text = "osd-ldiskfs.lustre-MDT0000.quota_slave.root_prj_enable=1\n\
                    osd-zfs.lustre-OST0001.quota_slave.root_prj_enable=0\n";
        assert_eq!(
            parse_root_prj_enable(text).unwrap(),
            vec![
                ("lustre-MDT0000".to_string(), true),
                ("lustre-OST0001".to_string(), false)
            ]
        );
        assert!(parse_root_prj_enable("").unwrap().is_empty());
        assert!(parse_root_prj_enable("osd-ldiskfs.x.quota_slave.enabled=ugp\n").is_err());
        assert!(parse_root_prj_enable("osd-ldiskfs.x.quota_slave.root_prj_enable=2\n").is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_roundtrips(s in any::<String>(), flags in proptest::collection::vec(("[a-z]{1,8}-(MDT|OST)[0-9a-f]{4}", any::<bool>()), 0..5)) {
            let _ = parse_root_prj_enable(&s);
            let text: String = flags.iter().map(|(t, on)| format!("osd-ldiskfs.{t}.quota_slave.root_prj_enable={}\n", u8::from(*on))).collect();
            prop_assert_eq!(parse_root_prj_enable(&text).unwrap(), flags);
        }
    }
}
