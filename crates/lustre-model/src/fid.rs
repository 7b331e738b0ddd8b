//! Lustre file identifiers (FIDs): `[0x200000401:0x1:0x0]` as `lfs path2fid` prints them,
//! and the bare `0x200000bd1:0x4:0x0` form PCC names its cache files with.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

const WHAT: &str = "FID";

/// A Lustre file identifier (`struct lu_fid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Fid {
    /// Sequence.
    pub seq: u64,
    /// Object ID within the sequence.
    pub oid: u32,
    /// Version.
    pub ver: u32,
}

impl fmt::Display for Fid {
    /// `[0x200000401:0x1:0x0]`, as `DFID` prints it (and `lfs` reads it back).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}:{:#x}:{:#x}]", self.seq, self.oid, self.ver)
    }
}

fn hex<T: TryFrom<u64>>(text: &str) -> Option<T> {
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16)
        .ok()
        .and_then(|n| T::try_from(n).ok())
}

impl FromStr for Fid {
    type Err = ParseError;

    /// `0xSEQ:0xOID:0xVER`, with or without the surrounding brackets.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new(WHAT, 0, format!("{text:?} is not [0xSEQ:0xOID:0xVER]"));
        let inner = match text.strip_prefix('[') {
            Some(rest) => rest.strip_suffix(']').ok_or_else(bad)?,
            None => text,
        };
        let mut parts = inner.split(':');
        let (Some(seq), Some(oid), Some(ver), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Fid {
            seq: hex(seq).ok_or_else(bad)?,
            oid: hex(oid).ok_or_else(bad)?,
            ver: hex(ver).ok_or_else(bad)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn both_forms_parse() {
        let want = Fid {
            seq: 0x200000bd1,
            oid: 4,
            ver: 0,
        };
        assert_eq!("0x200000bd1:0x4:0x0".parse::<Fid>().unwrap(), want);
        assert_eq!("[0x200000bd1:0x4:0x0]".parse::<Fid>().unwrap(), want);
        assert_eq!(want.to_string(), "[0x200000bd1:0x4:0x0]");
        for bad in [
            "",
            "0x1:0x2",
            "0x1:0x2:0x3:0x4",
            "1:2:3",
            "[0x1:0x2:0x3",
            "0x1:0x100000000:0x0",
            "0x:0x1:0x0",
        ] {
            assert!(bad.parse::<Fid>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(seq: u64, oid: u32, ver: u32) {
            let fid = Fid { seq, oid, ver };
            prop_assert_eq!(fid.to_string().parse::<Fid>().unwrap(), fid);
        }

        #[test]
        fn never_panics(text in ".{0,60}") {
            let _ = text.parse::<Fid>();
        }
    }
}
