//! Byte sizes with unit suffixes, as typed by users (`10M`, `1.5GiB`, `10GB`).
//!
//! Units: a bare number is bytes; `B` is bytes; `K M G T P E` (any case) and
//! `KiB MiB GiB TiB PiB EiB` are binary (powers of 1024), as in `lfs setquota`;
//! `KB MB GB TB PB EB` are decimal (powers of 1000). Fractions (`1.5G`) are
//! rounded **up** to a whole byte.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, model_err};

/// A number of bytes. `0` is allowed at this level (it means "unlimited" for quotas).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

const KIB: u64 = 1024;
const BINARY_UNITS: [(&str, u64); 6] = [
    ("EiB", KIB * KIB * KIB * KIB * KIB * KIB),
    ("PiB", KIB * KIB * KIB * KIB * KIB),
    ("TiB", KIB * KIB * KIB * KIB),
    ("GiB", KIB * KIB * KIB),
    ("MiB", KIB * KIB),
    ("KiB", KIB),
];

/// Longest accepted fractional part (keeps the arithmetic inside `u128`).
const MAX_FRACTION_DIGITS: usize = 18;

fn unit_multiplier(unit: &str) -> Option<u64> {
    let pow = |e: u32| 1024u64.checked_pow(e);
    let dec = |e: u32| 1000u64.checked_pow(e);
    let letter_pow = |c: char| -> Option<u32> {
        match c.to_ascii_uppercase() {
            'K' => Some(1),
            'M' => Some(2),
            'G' => Some(3),
            'T' => Some(4),
            'P' => Some(5),
            'E' => Some(6),
            _ => None,
        }
    };
    let mut chars = unit.chars();
    match (chars.next(), chars.next(), chars.next(), chars.next()) {
        (None, ..) => Some(1),
        (Some(b), None, ..) if b.eq_ignore_ascii_case(&'b') => Some(1),
        (Some(c), None, ..) => pow(letter_pow(c)?),
        (Some(c), Some(b), None, _) if b.eq_ignore_ascii_case(&'b') => dec(letter_pow(c)?),
        (Some(c), Some(i), Some(b), None)
            if i.eq_ignore_ascii_case(&'i') && b.eq_ignore_ascii_case(&'b') =>
        {
            pow(letter_pow(c)?)
        }
        _ => None,
    }
}

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The size in KiB, rounded up (the unit `lfs setquota` takes by default).
    pub fn to_kib_ceil(self) -> u64 {
        self.0 / KIB + u64::from(!self.0.is_multiple_of(KIB))
    }

    /// Size from a KiB count; `None` on overflow.
    pub fn from_kib(kib: u64) -> Option<ByteSize> {
        kib.checked_mul(KIB).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    /// The shortest exact binary form: `10MiB`, `1536KiB`, `0`, `1000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 {
            for (name, mult) in BINARY_UNITS {
                if self.0.is_multiple_of(mult) {
                    return write!(f, "{}{}", self.0 / mult, name);
                }
            }
        }
        write!(f, "{}", self.0)
    }
}

impl FromStr for ByteSize {
    type Err = ModelError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(model_err!(InvalidSize, input, "empty"));
        }
        if s.starts_with('-') {
            return Err(model_err!(
                InvalidSize,
                input,
                "negative sizes are not allowed"
            ));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(num_end);
        let unit = unit.trim_start();
        let (int_part, frac_part) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(model_err!(InvalidSize, input, "no number found"));
        }
        if frac_part.contains('.') {
            return Err(model_err!(
                InvalidSize,
                input,
                "more than one decimal point"
            ));
        }
        if frac_part.len() > MAX_FRACTION_DIGITS {
            return Err(model_err!(
                InvalidSize,
                input,
                "more than {MAX_FRACTION_DIGITS} fractional digits"
            ));
        }
        let mult = unit_multiplier(unit).ok_or_else(|| {
            model_err!(
                InvalidSize,
                input,
                "unknown unit {unit:?} (use K/M/G/T/P/E or KiB..EiB for binary, KB..EB for decimal)"
            )
        })?;
        let overflow = || model_err!(InvalidSize, input, "larger than 2^64-1 bytes");
        let int_val: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<u128>().map_err(|_| overflow())?
        };
        let mut total = int_val.checked_mul(u128::from(mult)).ok_or_else(overflow)?;
        if !frac_part.is_empty() {
            let frac_val: u128 = frac_part.parse().map_err(|_| overflow())?;
            let denom = 10u128.pow(u32::try_from(frac_part.len()).unwrap_or(0));
            let scaled = frac_val * u128::from(mult);
            total = total
                .checked_add(scaled.div_ceil(denom))
                .ok_or_else(overflow)?;
        }
        u64::try_from(total).map(ByteSize).map_err(|_| overflow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> u64 {
        s.parse::<ByteSize>().unwrap().bytes()
    }

    #[test]
    fn parse_units() {
        assert_eq!(b("1048576"), 1 << 20);
        assert_eq!(b("10M"), 10 << 20);
        assert_eq!(b("10MiB"), 10 << 20);
        assert_eq!(b("10m"), 10 << 20);
        assert_eq!(b("1.5G"), 3 << 29);
        assert_eq!(b("2T"), 2 << 40);
        assert_eq!(b("512k"), 512 << 10);
        assert_eq!(b("10MB"), 10_000_000);
        assert_eq!(b("1GB"), 1_000_000_000);
        assert_eq!(b("0"), 0);
        assert_eq!(b("7B"), 7);
        assert_eq!(b(" 4 KiB "), 4096);
        assert_eq!(b(".5K"), 512);
        assert_eq!(b("0.1K"), 103); // 102.4 rounded up
        assert_eq!(b("15E"), 15 << 60);
        assert_eq!(b("18446744073709551615"), u64::MAX);
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            " ",
            "-1",
            "-1M",
            "abc",
            "1X",
            "1.2.3",
            ".",
            "16E",
            "18446744073709551616",
            "1MiBx",
            "1 0",
            "1.0000000000000000001K",
        ] {
            let e = bad.parse::<ByteSize>();
            assert!(e.is_err(), "{bad:?}");
        }
        let msg = "-5G".parse::<ByteSize>().unwrap_err().to_string();
        assert!(msg.contains("-5G") && msg.contains("negative"), "{msg}");
    }

    #[test]
    fn display() {
        assert_eq!(ByteSize(10 << 20).to_string(), "10MiB");
        assert_eq!(ByteSize(1536 << 10).to_string(), "1536KiB");
        assert_eq!(ByteSize(0).to_string(), "0");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(ByteSize(1 << 60).to_string(), "1EiB");
        assert_eq!(ByteSize(1025).to_kib_ceil(), 2);
        assert_eq!(ByteSize(1024).to_kib_ceil(), 1);
        assert_eq!(ByteSize(0).to_kib_ceil(), 0);
        assert_eq!(ByteSize(u64::MAX).to_kib_ceil(), 1 << 54);
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = s.parse::<ByteSize>();
        }

        #[test]
        fn never_panic_numeric(s in "[0-9.]{0,30}[kKmMgGtTpPeEiIbB]{0,3}") {
            let _ = s.parse::<ByteSize>();
        }

        #[test]
        fn roundtrip(n in any::<u64>(), shift in 0u32..60) {
            let v = ByteSize(n >> shift << shift);
            prop_assert_eq!(v.to_string().parse::<ByteSize>().unwrap(), v);
        }
    }
}
