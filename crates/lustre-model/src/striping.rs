//! A requested default layout for a directory (what `lfs setstripe` sets on it): plain
//! striping or progressive file layout (PFL) components, validated before any command runs,
//! turned into `lfs setstripe` arguments, and compared with what `lfs getstripe -d` reads back.
//!
//! The text form (a StorageClass parameter, a CLI flag) of the components is
//! `END:key=value,...;...`, e.g. `4M:count=1,size=1M;64M:count=4;EOF:count=-1,size=4M`, with
//! keys `count` (`-1`: every OST), `size` (stripe size) and `pool`.

use serde::{Deserialize, Serialize};

use crate::layout::{Layout, StripeLayout};
use crate::size::ByteSize;

fn parse_size(text: &str) -> Result<u64, crate::error::ModelError> {
    text.parse::<ByteSize>().map(ByteSize::bytes)
}

/// Stripe sizes are multiples of this (Lustre's `LOV_MIN_STRIPE_SIZE`).
pub const STRIPE_SIZE_UNIT: u64 = 64 << 10;
/// The largest stripe size Lustre takes (4 GiB, less one unit).
pub const MAX_STRIPE_SIZE: u64 = (4 << 30) - STRIPE_SIZE_UNIT;
/// The largest stripe count (`LOV_MAX_STRIPE_COUNT`).
pub const MAX_STRIPE_COUNT: i64 = 2000;
/// The most components a PFL layout may have here (Lustre allows more; more is a mistake).
pub const MAX_COMPONENTS: usize = 16;
/// The longest pool name (`LOV_MAXPOOLNAME`).
pub const MAX_POOL_NAME: usize = 15;

/// Why a requested layout is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripingError {
    /// A stripe count out of range or not a number.
    #[error("stripe count {0}: must be -1 (every OST) or 1 to {MAX_STRIPE_COUNT}")]
    Count(String),
    #[error(
        "stripe size {0}: must be a multiple of 64 KiB, at most 4 GiB - 64 KiB (like 1M or 4M)"
    )]
    /// A stripe size that is not a multiple of 64 KiB, or too big.
    Size(String),
    #[error("pool `{0}`: 1 to {MAX_POOL_NAME} of A-Z a-z 0-9 _ - .")]
    /// A pool name Lustre would not take.
    Pool(String),
    #[error("component {index} (`{text}`): {why}")]
    /// One PFL component is wrong.
    Component {
        /// Its position, from 0.
        index: usize,
        /// Its text.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// The layout as a whole is wrong.
    #[error("{0}")]
    Layout(String),
}

/// The striping of a plain layout or of one component; `None` fields are left to the
/// filesystem's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeSpec {
    /// `-1` for every OST.
    pub count: Option<i64>,
    /// Stripe size in bytes.
    pub size: Option<u64>,
    /// OST pool.
    pub pool: Option<String>,
}

/// One PFL component: its striping up to `end` bytes of the file (`None`: to EOF).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSpec {
    /// Where the component ends, in bytes of the file; `None`: EOF.
    pub end: Option<u64>,
    /// Its striping.
    pub stripe: StripeSpec,
}

/// A directory's requested default layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayoutSpec {
    /// One striping for the whole file.
    Plain(StripeSpec),
    /// PFL: a striping per extent of the file.
    Composite {
        /// In order; the last ends at EOF.
        components: Vec<ComponentSpec>,
    },
}

/// A stripe count as given (`4`, `-1`).
pub fn parse_count(text: &str) -> Result<i64, StripingError> {
    let n: i64 = text
        .trim()
        .parse()
        .map_err(|_| StripingError::Count(text.into()))?;
    if n == -1 || (1..=MAX_STRIPE_COUNT).contains(&n) {
        Ok(n)
    } else {
        Err(StripingError::Count(text.into()))
    }
}

/// A stripe size as given (`1M`, `65536`).
pub fn parse_stripe_size(text: &str) -> Result<u64, StripingError> {
    let n = parse_size(text.trim()).map_err(|_| StripingError::Size(text.into()))?;
    if n == 0 || n % STRIPE_SIZE_UNIT != 0 || n > MAX_STRIPE_SIZE {
        return Err(StripingError::Size(text.into()));
    }
    Ok(n)
}

/// A pool name as given.
pub fn parse_pool(text: &str) -> Result<String, StripingError> {
    let ok = !text.is_empty()
        && text.len() <= MAX_POOL_NAME
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(text.to_string())
    } else {
        Err(StripingError::Pool(text.into()))
    }
}

impl StripeSpec {
    fn args(&self, out: &mut Vec<String>) {
        if let Some(c) = self.count {
            out.extend(["-c".into(), c.to_string()]);
        }
        if let Some(s) = self.size {
            out.extend(["-S".into(), s.to_string()]);
        }
        if let Some(p) = &self.pool {
            out.extend(["-p".into(), p.clone()]);
        }
    }

    /// Whether what was read back holds every field asked for.
    fn matches(&self, got: &StripeLayout) -> bool {
        self.count.is_none_or(|c| c == got.stripe_count)
            && self.size.is_none_or(|s| s == got.stripe_size)
            && self
                .pool
                .as_ref()
                .is_none_or(|p| got.pool.as_deref() == Some(p.as_str()))
    }

    fn is_empty(&self) -> bool {
        self.count.is_none() && self.size.is_none() && self.pool.is_none()
    }
}

impl LayoutSpec {
    /// The layout of the separate parameters (`count`, `size`, `pool`) or of the components
    /// text; both at once is refused (a PFL layout gives each component its own). `None`
    /// when nothing was asked.
    pub fn from_parts(
        count: Option<&str>,
        size: Option<&str>,
        pool: Option<&str>,
        components: Option<&str>,
    ) -> Result<Option<LayoutSpec>, StripingError> {
        let plain = StripeSpec {
            count: count.map(parse_count).transpose()?,
            size: size.map(parse_stripe_size).transpose()?,
            pool: pool.map(parse_pool).transpose()?,
        };
        match components {
            Some(text) if !plain.is_empty() => Err(StripingError::Layout(format!(
                "components `{text}` and a plain stripe count, size or pool together: give each component its own"
            ))),
            Some(text) => parse_components(text).map(Some),
            None if plain.is_empty() => Ok(None),
            None => Ok(Some(LayoutSpec::Plain(plain))),
        }
    }

    /// The `lfs setstripe` arguments before the directory.
    pub fn setstripe_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            LayoutSpec::Plain(s) => s.args(&mut out),
            LayoutSpec::Composite { components } => {
                for c in components {
                    out.push("-E".into());
                    out.push(c.end.map_or_else(|| "-1".to_string(), |e| e.to_string()));
                    c.stripe.args(&mut out);
                }
            }
        }
        out
    }

    /// Whether the layout read back (`lfs getstripe -d`) is the one asked for: the same
    /// shape, each asked field equal, component ends equal.
    pub fn matches(&self, got: &Layout) -> bool {
        match (self, got) {
            (LayoutSpec::Plain(want), Layout::Plain { stripe, .. }) => want.matches(stripe),
            (
                LayoutSpec::Composite { components },
                Layout::Composite {
                    components: got, ..
                },
            ) => {
                components.len() == got.len()
                    && components
                        .iter()
                        .zip(got)
                        .all(|(w, g)| w.end == g.extent_end && w.stripe.matches(&g.stripe))
            }
            _ => false,
        }
    }
}

/// Parses and checks the components text (see the module doc).
pub fn parse_components(text: &str) -> Result<LayoutSpec, StripingError> {
    let parts: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(StripingError::Layout("no components".into()));
    }
    if parts.len() > MAX_COMPONENTS {
        return Err(StripingError::Layout(format!(
            "{} components: at most {MAX_COMPONENTS}",
            parts.len()
        )));
    }
    let mut components = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let bad = |why: String| StripingError::Component {
            index,
            text: (*part).to_string(),
            why,
        };
        let (end, rest) = part.split_once(':').unwrap_or((part, ""));
        let end = match end.trim() {
            "EOF" | "eof" | "-1" => None,
            e => Some(parse_size(e).map_err(|_| bad(format!("end `{e}` is not a size or EOF")))?),
        };
        let mut stripe = StripeSpec::default();
        for kv in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("`{kv}` is not key=value")))?;
            match k.trim() {
                "count" => stripe.count = Some(parse_count(v).map_err(|e| bad(e.to_string()))?),
                "size" => stripe.size = Some(parse_stripe_size(v).map_err(|e| bad(e.to_string()))?),
                "pool" => stripe.pool = Some(parse_pool(v.trim()).map_err(|e| bad(e.to_string()))?),
                other => {
                    return Err(bad(format!(
                        "unknown key `{other}` (count, size and pool are known)"
                    )));
                }
            }
        }
        components.push(ComponentSpec { end, stripe });
    }
    // Ends strictly increase, only the last is EOF, and each end is a whole number of the
    // component's stripes (Lustre refuses a component that ends inside a stripe).
    let mut previous = 0u64;
    let last = components.len() - 1;
    for (index, c) in components.iter().enumerate() {
        let bad = |why: String| StripingError::Component {
            index,
            text: parts[index].to_string(),
            why,
        };
        match c.end {
            None if index != last => {
                return Err(bad("only the last component may end at EOF".into()));
            }
            Some(_) if index == last => {
                return Err(bad("the last component must end at EOF".into()));
            }
            Some(end) => {
                if end <= previous {
                    return Err(bad(format!("ends at {end}, not after {previous}")));
                }
                let unit = c.stripe.size.unwrap_or(STRIPE_SIZE_UNIT);
                if end % unit != 0 {
                    return Err(bad(format!(
                        "ends at {end}, not a multiple of its stripe size {unit}"
                    )));
                }
                previous = end;
            }
            None => {}
        }
    }
    Ok(LayoutSpec::Composite { components })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::parse_lfs_getstripe;
    use proptest::prelude::*;

    #[test]
    fn plain_parameters_become_setstripe_arguments() {
        let l = LayoutSpec::from_parts(Some("4"), Some("4M"), Some("flash"), None)
            .expect("valid")
            .expect("asked");
        assert_eq!(
            l.setstripe_args(),
            ["-c", "4", "-S", "4194304", "-p", "flash"]
        );
        assert_eq!(
            LayoutSpec::from_parts(None, None, None, None).expect("valid"),
            None
        );
        let all = LayoutSpec::from_parts(Some("-1"), None, None, None)
            .expect("valid")
            .expect("asked");
        assert_eq!(all.setstripe_args(), ["-c", "-1"]);
    }

    #[test]
    fn components_become_pfl_arguments() {
        let l = parse_components("4M:count=1,size=1M; 64M:count=4 ;EOF:count=-1,size=4M,pool=fast")
            .expect("valid");
        assert_eq!(
            l.setstripe_args().join(" "),
            "-E 4194304 -c 1 -S 1048576 -E 67108864 -c 4 -E -1 -c -1 -S 4194304 -p fast"
        );
    }

    #[test]
    fn bad_layouts_are_refused_with_the_reason() {
        let refused = |t: &str| parse_components(t).expect_err(t).to_string();
        assert!(refused("4M:count=1").contains("must end at EOF"));
        assert!(refused("EOF:count=1;4M:count=2").contains("only the last"));
        assert!(refused("8M:count=1;4M:count=2;EOF").contains("not after"));
        assert!(refused("3M:size=2M;EOF").contains("multiple of its stripe size"));
        assert!(refused("4M:colour=red;EOF").contains("unknown key `colour`"));
        assert!(refused("4M:count=0;EOF").contains("stripe count 0"));
        assert!(refused("").contains("no components"));
        for (count, size, pool) in [
            (Some("0"), None, None),
            (Some("2001"), None, None),
            (None, Some("100K"), None),
            (None, Some("4G"), None),
            (None, None, Some("a pool")),
            (None, None, Some("sixteen-chars-xx")),
        ] {
            assert!(LayoutSpec::from_parts(count, size, pool, None).is_err());
        }
        let both = LayoutSpec::from_parts(Some("2"), None, None, Some("EOF:count=1"));
        assert!(both.expect_err("both").to_string().contains("together"));
    }

    #[test]
    fn read_back_layouts_match_only_what_was_asked() {
        // `lfs getstripe -d DIR`, lustre-formats/lfs-setstripe-getstripe.md (b).
        let dir = parse_lfs_getstripe(
            "stripe_count:  1 stripe_size:   1048576 pattern:       raid0 stripe_offset: -1\n",
        )
        .expect("dir default");
        let want = |c: &str, s: &str| {
            LayoutSpec::from_parts(Some(c), Some(s), None, None)
                .expect("valid")
                .expect("asked")
        };
        assert!(want("1", "1M").matches(&dir));
        assert!(!want("2", "1M").matches(&dir));
        assert!(!want("1", "4M").matches(&dir));
        // The DoM sample's shape (two components, the last to EOF), as PFL.
        let pfl = parse_lfs_getstripe(
            "  lcm_layout_gen:    2\n  lcm_mirror_count:  1\n  lcm_entry_count:   2\n    lcme_id:             N/A\n    lcme_mirror_id:      N/A\n    lcme_flags:          0\n    lcme_extent.e_start: 0\n    lcme_extent.e_end:   1048576\n      stripe_count:  1       stripe_size:   1048576       pattern:       raid0       stripe_offset: -1\n\n    lcme_id:             N/A\n    lcme_mirror_id:      N/A\n    lcme_flags:          0\n    lcme_extent.e_start: 1048576\n    lcme_extent.e_end:   EOF\n      stripe_count:  -1       stripe_size:   4194304       pattern:       raid0       stripe_offset: -1\n",
        )
        .expect("pfl default");
        let asked = parse_components("1M:count=1,size=1M;EOF:count=-1,size=4M").expect("valid");
        assert!(asked.matches(&pfl), "{pfl:?}");
        let other = parse_components("1M:count=1;EOF:count=2").expect("valid");
        assert!(!other.matches(&pfl));
        assert!(!want("1", "1M").matches(&pfl), "plain asked, PFL found");
    }

    proptest! {
        #[test]
        fn components_text_never_panics(text in ".{0,200}") {
            let _ = parse_components(&text);
        }

        #[test]
        fn valid_components_round_trip_to_arguments(
            ends in proptest::collection::vec(1u64..64, 0..5),
            count in prop_oneof![Just(-1i64), 1i64..=2000],
        ) {
            let mut end = 0u64;
            let mut text = String::new();
            for step in ends {
                end += step << 20;
                text.push_str(&format!("{end}:count={count};"));
            }
            text.push_str("EOF:size=1M");
            let l = parse_components(&text).expect("valid by construction");
            let args = l.setstripe_args();
            prop_assert_eq!(args.iter().filter(|a| *a == "-E").count(), text.split(';').count());
            prop_assert_eq!(args.iter().rev().nth(2).map(String::as_str), Some("-1"));
        }
    }
}
