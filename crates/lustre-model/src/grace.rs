//! Quota grace times as printed by `lfs quota` (`6d23h56m44s`, `1w`, `expired`, `-`,
//! `notify`), following `__sec2str()` in `lfs.c`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, model_err};

/// The grace column of `lfs quota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grace {
    /// `-`: not over the soft limit, no grace running.
    None,
    /// Time left before the soft limit is enforced.
    Remaining(Duration),
    /// `expired`: the grace period is over.
    Expired,
    /// `notify`: the special "notify only" grace value.
    Notify,
}

const UNITS: [(char, u64); 5] = [
    ('w', 7 * 24 * 3600),
    ('d', 24 * 3600),
    ('h', 3600),
    ('m', 60),
    ('s', 1),
];

impl fmt::Display for Grace {
    /// Same text as `lfs quota`: `-`, `expired`, `notify`, or units `w d h m s` with zero
    /// units skipped (`0s` for zero).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grace::None => f.write_str("-"),
            Grace::Expired => f.write_str("expired"),
            Grace::Notify => f.write_str("notify"),
            Grace::Remaining(d) => {
                let mut secs = d.as_secs();
                if secs == 0 {
                    return f.write_str("0s");
                }
                for (c, unit) in UNITS {
                    if secs >= unit {
                        write!(f, "{}{}", secs / unit, c)?;
                        secs %= unit;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Parses a grace value: `-`, `expired`, `notify`, `none` (same as `-`), a unit string in
/// descending order (`6d23h56m44s`, `1w`, `5d1s`, `0s`) or a bare number of seconds.
pub fn parse_grace(s: &str) -> Result<Grace, ModelError> {
    let t = s.trim();
    match t {
        "" => return Err(model_err!(InvalidGrace, s, "empty")),
        "-" | "none" => return Ok(Grace::None),
        "expired" => return Ok(Grace::Expired),
        "notify" => return Ok(Grace::Notify),
        _ => {}
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t
            .parse()
            .map_err(|_| model_err!(InvalidGrace, s, "number of seconds too large"))?;
        return Ok(Grace::Remaining(Duration::from_secs(secs)));
    }
    let mut total: u64 = 0;
    let mut num_start: Option<usize> = None;
    let mut last_unit_idx: Option<usize> = None;
    for (i, c) in t.char_indices() {
        if c.is_ascii_digit() {
            if num_start.is_none() {
                num_start = Some(i);
            }
            continue;
        }
        let start = num_start
            .take()
            .ok_or_else(|| model_err!(InvalidGrace, s, "unit {c:?} without a number"))?;
        let unit_idx = UNITS.iter().position(|(u, _)| *u == c).ok_or_else(|| {
            model_err!(InvalidGrace, s, "unknown unit {c:?} (expected w d h m s)")
        })?;
        if last_unit_idx.is_some_and(|l| l >= unit_idx) {
            return Err(model_err!(
                InvalidGrace,
                s,
                "units must be in descending order w d h m s, each at most once"
            ));
        }
        last_unit_idx = Some(unit_idx);
        let digits = t.get(start..i).unwrap_or("");
        let n: u64 = digits
            .parse()
            .map_err(|_| model_err!(InvalidGrace, s, "number {digits:?} too large"))?;
        let unit = UNITS.get(unit_idx).map_or(1, |(_, u)| *u);
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| model_err!(InvalidGrace, s, "duration too large"))?;
    }
    if num_start.is_some() {
        return Err(model_err!(
            InvalidGrace,
            s,
            "trailing number without a unit"
        ));
    }
    Ok(Grace::Remaining(Duration::from_secs(total)))
}

impl FromStr for Grace {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_grace(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(n: u64) -> Grace {
        Grace::Remaining(Duration::from_secs(n))
    }

    #[test]
    fn samples() {
        // Values from lfs-quota.md section (b).
        assert_eq!(
            parse_grace("6d23h56m44s").unwrap(),
            secs(6 * 86400 + 23 * 3600 + 56 * 60 + 44)
        );
        assert_eq!(parse_grace("1w").unwrap(), secs(604800));
        assert_eq!(parse_grace("5d1s").unwrap(), secs(5 * 86400 + 1));
        assert_eq!(parse_grace("0s").unwrap(), secs(0));
        assert_eq!(parse_grace("expired").unwrap(), Grace::Expired);
        assert_eq!(parse_grace("-").unwrap(), Grace::None);
        assert_eq!(parse_grace("notify").unwrap(), Grace::Notify);
        assert_eq!(parse_grace("3600").unwrap(), secs(3600));
        assert_eq!(
            secs(6 * 86400 + 23 * 3600 + 56 * 60 + 44).to_string(),
            "6d23h56m44s"
        );
        assert_eq!(secs(604800).to_string(), "1w");
        assert_eq!(secs(0).to_string(), "0s");
        for bad in [
            "",
            "1x",
            "d",
            "1d1w",
            "1d1d",
            "1h30",
            "99999999999999999999w",
        ] {
            assert!(parse_grace(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = parse_grace(&s);
        }

        #[test]
        fn roundtrip(n in 0u64..(u64::MAX / 2)) {
            let g = secs(n);
            prop_assert_eq!(parse_grace(&g.to_string()).unwrap(), g);
        }
    }
}
