//! `lfs project [-d] [-r]` listing: `%5u %c %s` = project ID, inherit flag (`P`/`-`), path.

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

const WHAT: &str = "lfs project";

/// One line of `lfs project` output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProjectEntry {
    /// Project ID (0 = none).
    pub id: u32,
    /// `P`: the project-inherit flag is set.
    pub inherit: bool,
    /// Path as printed (raw, may contain spaces).
    pub path: String,
}

/// Parses `lfs project` listing lines (`110255 P /projects/csc000`). Blank lines are
/// skipped; the path is everything after the flag and one space.
pub fn parse_lfs_project(text: &str) -> Result<Vec<ProjectEntry>, ParseError> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim_end();
        let rest = line.trim_start();
        if rest.is_empty() {
            continue;
        }
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        let bad = |why: &str| ParseError::new(WHAT, lineno, format!("{why}: {line:?}"));
        if digits.is_empty() {
            return Err(bad("line does not start with a project ID"));
        }
        let id: u32 = digits
            .parse()
            .map_err(|_| bad("project ID does not fit in 32 bits"))?;
        let mut chars = after.chars();
        let (sp1, flag, sp2) = (chars.next(), chars.next(), chars.next());
        if sp1 != Some(' ') || sp2 != Some(' ') {
            return Err(bad("expected `ID FLAG PATH`"));
        }
        let inherit = match flag {
            Some('P') => true,
            Some('-') => false,
            _ => return Err(bad("flag must be `P` or `-`")),
        };
        let path = chars.as_str();
        if path.is_empty() {
            return Err(bad("missing path"));
        }
        out.push(ProjectEntry {
            id,
            inherit,
            path: path.to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn samples() {
        // lfs-project.md (c): NREL Eagle docs.
        let v = parse_lfs_project("110255 P /projects/csc000\n").unwrap();
        assert_eq!(
            v,
            vec![ProjectEntry {
                id: 110255,
                inherit: true,
                path: "/projects/csc000".into()
            }]
        );
        // lfs-project.md (c): format examples from the printf (5-wide id).
        let v = parse_lfs_project(
            "   10 P /mnt/lustre/dir1\n   10 - /mnt/lustre/dir1/file\n    0 - /mnt/lustre/a b - c\n",
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert!(!v.get(1).unwrap().inherit);
        assert_eq!(v.get(2).unwrap().path, "/mnt/lustre/a b - c");
        assert_eq!(v.get(2).unwrap().id, 0);
        assert_eq!(
            parse_lfs_project("4294967294 P /x")
                .unwrap()
                .first()
                .unwrap()
                .id,
            4294967294
        );
    }

    #[test]
    fn errors() {
        for bad in [
            "P /x",
            "10 X /x",
            "10 P",
            "10 P ",
            "99999999999 P /x",
            "10  P /x",
            "/x - project identifier is not set",
        ] {
            assert!(parse_lfs_project(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_lfs_project("\n  \n").unwrap(), vec![]);
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = parse_lfs_project(&s);
        }

        #[test]
        fn roundtrip(id in any::<u32>(), inherit in any::<bool>(), path in "/[^\\n\\r]{0,40}[^\\s]") {
            let line = format!("{:5} {} {}\n", id, if inherit { 'P' } else { '-' }, path);
            let v = parse_lfs_project(&line).unwrap();
            prop_assert_eq!(v, vec![ProjectEntry { id, inherit, path }]);
        }
    }
}
