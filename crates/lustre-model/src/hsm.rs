//! HSM state flags (`enum hsm_states` bit values) and `lfs hsm_state` output.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

const WHAT: &str = "lfs hsm_state";

/// `HS_EXISTS`.
pub const HS_EXISTS: u32 = 0x1;
/// `HS_DIRTY`.
pub const HS_DIRTY: u32 = 0x2;
/// `HS_RELEASED`.
pub const HS_RELEASED: u32 = 0x4;
/// `HS_ARCHIVED`.
pub const HS_ARCHIVED: u32 = 0x8;
/// `HS_NORELEASE`.
pub const HS_NORELEASE: u32 = 0x10;
/// `HS_NOARCHIVE`.
pub const HS_NOARCHIVE: u32 = 0x20;
/// `HS_LOST`.
pub const HS_LOST: u32 = 0x40;
/// `HS_PCCRW` (2.16+).
pub const HS_PCCRW: u32 = 0x80;
/// `HS_PCCRO` (2.16+).
pub const HS_PCCRO: u32 = 0x100;

/// The HSM flags of a file, one boolean per Lustre `HS_*` bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct HsmFlags {
    /// `HS_EXISTS`: a copy exists in the archive.
    pub exists: bool,
    /// `HS_DIRTY`: the file changed since it was archived.
    pub dirty: bool,
    /// `HS_RELEASED`: the data is only in the archive.
    pub released: bool,
    /// `HS_ARCHIVED`: the archive copy is complete.
    pub archived: bool,
    /// `HS_NORELEASE` (`never_release`).
    pub no_release: bool,
    /// `HS_NOARCHIVE` (`never_archive`).
    pub no_archive: bool,
    /// `HS_LOST` (`lost_from_hsm`).
    pub lost: bool,
    /// `HS_PCCRW` (2.16+, no text name).
    pub pcc_rw: bool,
    /// `HS_PCCRO` (2.16+, no text name).
    pub pcc_ro: bool,
    /// Any other bits, kept so that `from_bits(x).bits() == x`.
    pub other_bits: u32,
}

const KNOWN: u32 = HS_EXISTS
    | HS_DIRTY
    | HS_RELEASED
    | HS_ARCHIVED
    | HS_NORELEASE
    | HS_NOARCHIVE
    | HS_LOST
    | HS_PCCRW
    | HS_PCCRO;

impl HsmFlags {
    /// Decodes a `hus_states` mask.
    pub fn from_bits(bits: u32) -> HsmFlags {
        let has = |b: u32| bits & b != 0;
        HsmFlags {
            exists: has(HS_EXISTS),
            dirty: has(HS_DIRTY),
            released: has(HS_RELEASED),
            archived: has(HS_ARCHIVED),
            no_release: has(HS_NORELEASE),
            no_archive: has(HS_NOARCHIVE),
            lost: has(HS_LOST),
            pcc_rw: has(HS_PCCRW),
            pcc_ro: has(HS_PCCRO),
            other_bits: bits & !KNOWN,
        }
    }

    /// Encodes back to the Lustre bit mask.
    pub fn bits(&self) -> u32 {
        let b = |on: bool, bit: u32| if on { bit } else { 0 };
        b(self.exists, HS_EXISTS)
            | b(self.dirty, HS_DIRTY)
            | b(self.released, HS_RELEASED)
            | b(self.archived, HS_ARCHIVED)
            | b(self.no_release, HS_NORELEASE)
            | b(self.no_archive, HS_NOARCHIVE)
            | b(self.lost, HS_LOST)
            | b(self.pcc_rw, HS_PCCRW)
            | b(self.pcc_ro, HS_PCCRO)
            | self.other_bits
    }

    /// The words `lfs hsm_state` prints, in its order (released, exists, dirty, archived,
    /// never_release, never_archive, lost_from_hsm).
    pub fn words(&self) -> Vec<&'static str> {
        [
            (self.released, "released"),
            (self.exists, "exists"),
            (self.dirty, "dirty"),
            (self.archived, "archived"),
            (self.no_release, "never_release"),
            (self.no_archive, "never_archive"),
            (self.lost, "lost_from_hsm"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
        .collect()
    }
}

/// HSM flags plus the archive ID (`None` when 0 / not printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct HsmState {
    /// Flags.
    pub flags: HsmFlags,
    /// Archive backend number.
    pub archive_id: Option<u32>,
}

impl HsmState {
    /// Shorthand for `self.flags.bits()`.
    pub fn bits(&self) -> u32 {
        self.flags.bits()
    }
}

impl fmt::Display for HsmState {
    /// `(0x0000000d) released exists archived, archive_id:1`, as `lfs hsm_state` prints
    /// after `path: `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(0x{:08x})", self.flags.bits())?;
        for w in self.flags.words() {
            write!(f, " {w}")?;
        }
        if let Some(id) = self.archive_id.filter(|id| *id != 0) {
            write!(f, ", archive_id:{id}")?;
        }
        Ok(())
    }
}

fn parse_state(rest: &str, lineno: usize, line: &str) -> Result<HsmState, ParseError> {
    let bad = |why: String| ParseError::new(WHAT, lineno, format!("{why}: {line:?}"));
    let inner = rest
        .strip_prefix("(0x")
        .ok_or_else(|| bad("expected `(0x...)`".into()))?;
    let close = inner
        .find(')')
        .ok_or_else(|| bad("missing `)` after the state mask".into()))?;
    let hex = inner.get(..close).unwrap_or("");
    if hex.is_empty() || hex.len() > 8 {
        return Err(bad(format!("state mask {hex:?} is not 1-8 hex digits")));
    }
    let bits =
        u32::from_str_radix(hex, 16).map_err(|_| bad(format!("state mask {hex:?} is not hex")))?;
    let tail = inner.get(close + 1..).unwrap_or("");
    let archive_id = match tail.split_once(", archive_id:") {
        Some((_, id)) => {
            let id = id.trim();
            Some(
                id.parse::<u32>()
                    .map_err(|_| bad(format!("archive id {id:?} is not a number")))?,
            )
        }
        None => None,
    };
    Ok(HsmState {
        flags: HsmFlags::from_bits(bits),
        archive_id,
    })
}

/// Parses `lfs hsm_state FILE...` output: `path: (0x%08x) words[, archive_id:N]` per line.
/// The hex mask is trusted; the words are ignored. Paths may contain `: `.
pub fn parse_lfs_hsm_state(text: &str) -> Result<Vec<(String, HsmState)>, ParseError> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let pos = line.rfind(": (0x").ok_or_else(|| {
            ParseError::new(WHAT, lineno, format!("expected `PATH: (0x...)`: {line:?}"))
        })?;
        let path = line.get(..pos).unwrap_or("");
        let rest = line.get(pos + 2..).unwrap_or("");
        out.push((path.to_owned(), parse_state(rest, lineno, line)?));
    }
    Ok(out)
}

/// Parses `lfs data_version {--nosync|--read|--write} FILE`, which prints the file's data
/// version as one unsigned decimal and a newline (`printf("%ju\n")`, `lfs-hsm.md` (a)).
pub fn parse_lfs_data_version(text: &str) -> Result<u64, ParseError> {
    const WHAT: &str = "lfs data_version";
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((idx, line)) = lines.next() else {
        return Err(ParseError::new(WHAT, 0, "no data version"));
    };
    if let Some((extra, _)) = lines.next() {
        return Err(ParseError::new(WHAT, extra + 1, "more than one line"));
    }
    let digits = line.trim();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::new(
            WHAT,
            idx + 1,
            format!("not an unsigned decimal: {digits:?}"),
        ));
    }
    digits
        .parse()
        .map_err(|e| ParseError::new(WHAT, idx + 1, format!("{digits:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn manual_and_sanity_samples() {
        // lfs-hsm.md (c): Lustre manual.
        let v =
            parse_lfs_hsm_state("/mnt/lustre/foo: (0x00000009) exists archived, archive_id:5\n")
                .unwrap();
        let (p, s) = v.first().unwrap();
        assert_eq!(p, "/mnt/lustre/foo");
        assert!(s.flags.exists && s.flags.archived && !s.flags.released);
        assert_eq!(s.archive_id, Some(5));
        assert_eq!(s.to_string(), "(0x00000009) exists archived, archive_id:5");
        // lfs-hsm.md (c): man page variant with a space after the colon.
        let v = parse_lfs_hsm_state(
            "/mnt/lustre/foo: (0x0000000b) exists dirty archived, archive_id: 1",
        )
        .unwrap();
        assert_eq!(v.first().unwrap().1.archive_id, Some(1));
        assert!(v.first().unwrap().1.flags.dirty);
        // lfs-hsm.md (c): sanity-hsm expected states.
        let s =
            parse_lfs_hsm_state("/f: (0x0000000d) released exists archived, archive_id:1").unwrap();
        let st = s.first().unwrap().1;
        assert_eq!(
            st.to_string(),
            "(0x0000000d) released exists archived, archive_id:1"
        );
        assert_eq!(st.bits(), HS_RELEASED | HS_EXISTS | HS_ARCHIVED);
        let s = parse_lfs_hsm_state("/f: (0x00000000)").unwrap();
        assert_eq!(s.first().unwrap().1, HsmState::default());
        // Path containing ": (0x".
        let s = parse_lfs_hsm_state("/a: (0x1) b: (0x00000001) exists").unwrap();
        assert_eq!(s.first().unwrap().0, "/a: (0x1) b");
        // PCC bits (2.16+) have no words.
        let s = parse_lfs_hsm_state("/f: (0x00000081) exists").unwrap();
        assert!(s.first().unwrap().1.flags.pcc_rw);
    }

    #[test]
    fn errors() {
        for bad in [
            "/f",
            "/f: (0xzz)",
            "/f: (0x1",
            "/f: (0x123456789)",
            "/f: (0x1), archive_id:x",
        ] {
            assert!(parse_lfs_hsm_state(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_version_samples() {
        // lfs-hsm.md (a): `printf("%ju\n")`.
        assert_eq!(parse_lfs_data_version("0\n").unwrap(), 0);
        assert_eq!(
            parse_lfs_data_version("12884901890\n").unwrap(),
            12_884_901_890
        );
        assert_eq!(
            parse_lfs_data_version("18446744073709551615\n").unwrap(),
            u64::MAX
        );
        for bad in [
            "",
            "\n",
            "-1\n",
            "+1\n",
            "0x10\n",
            "1 2\n",
            "1\n2\n",
            "18446744073709551616\n",
        ] {
            assert!(parse_lfs_data_version(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = parse_lfs_hsm_state(&s);
        }

        #[test]
        fn data_version_never_panics(s in any::<String>()) {
            let _ = parse_lfs_data_version(&s);
        }

        #[test]
        fn data_version_roundtrip(v in any::<u64>()) {
            prop_assert_eq!(parse_lfs_data_version(&format!("{v}\n")).unwrap(), v);
        }

        #[test]
        fn bits_roundtrip(bits in any::<u32>()) {
            prop_assert_eq!(HsmFlags::from_bits(bits).bits(), bits);
        }

        #[test]
        fn display_roundtrip(bits in any::<u32>(), id in proptest::option::of(1u32..)) {
            let st = HsmState { flags: HsmFlags::from_bits(bits), archive_id: id };
            let line = format!("/mnt/x y: {st}");
            let v = parse_lfs_hsm_state(&line).unwrap();
            prop_assert_eq!(v, vec![("/mnt/x y".to_string(), st)]);
        }
    }
}
