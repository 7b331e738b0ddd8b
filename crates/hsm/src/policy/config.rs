//! The policy file (TOML). Unknown keys are errors, so a typo never silently turns a rule
//! off.
//!
//! ```toml
//! path = "projects"          # the directory the policy covers, below the root (default: root)
//! dry_run = false            # list what would be done, change nothing
//! rate_limit = 50            # archive/release operations per second, across the pass
//! scan_workers = 4           # threads of the candidate scan
//!
//! [archive]                  # archive files not modified for N minutes
//! older_than_minutes = 60
//! include = ["**/*.dat"]     # globs on the path below `path`; none = everything
//! exclude = ["**/tmp/**"]    # exclude wins over include
//! min_size = "1MiB"          # sizes: bytes, or a string with a unit (G, GiB: 2^30; GB: 10^9)
//! max_size = "100GiB"
//!
//! [release]                  # when usage passes high_watermark %, release the least
//! high_watermark = 90        # recently used (atime) archived, clean files until usage
//! low_watermark = 70         # is below low_watermark %
//! # usage of: the filesystem (default); or `share = "tenants/a"` (its project quota);
//! # or `capacity = "10GiB"` (a budget for the bytes allocated under `path`)
//!
//! [watch]
//! debounce_ms = 2000         # quiet time after a change before a pass
//! interval_secs = 300        # a pass at least this often (ages pass without events)
//! ```

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use lustre_model::ByteSize;
use serde::{Deserialize, Serialize};

use crate::error::{HsmError, Result};

/// A byte size from TOML: an integer, or a string like `"10MiB"` read as
/// [`lustre_model::ByteSize`] reads it (`G`, `GiB`: 2^30; `GB`: 10^9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "u64")]
pub struct Size(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    N(u64),
    S(String),
}

impl TryFrom<SizeRepr> for Size {
    type Error = String;
    fn try_from(r: SizeRepr) -> std::result::Result<Self, String> {
        match r {
            SizeRepr::N(n) => Ok(Size(n)),
            SizeRepr::S(s) => s
                .parse::<ByteSize>()
                .map(|b| Size(b.bytes()))
                .map_err(|e| e.to_string()),
        }
    }
}

impl From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

fn default_workers() -> usize {
    crate::walk::DEFAULT_WALK_WORKERS
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The directory the policy covers, relative to the root (or absolute beneath it).
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub dry_run: bool,
    /// Operations (archive or release) per second across a pass.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    #[serde(default = "default_workers")]
    pub scan_workers: usize,
    #[serde(default)]
    pub archive: Option<ArchiveRule>,
    #[serde(default)]
    pub release: Option<ReleaseRule>,
    #[serde(default)]
    pub watch: WatchConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRule {
    /// Files whose mtime is older than this many minutes.
    pub older_than_minutes: f64,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub min_size: Option<Size>,
    #[serde(default)]
    pub max_size: Option<Size>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRule {
    /// Percent of capacity; passing it starts releasing.
    pub high_watermark: f64,
    /// Percent of capacity to release down to.
    pub low_watermark: f64,
    /// Measure the project quota of this share directory (relative to the root).
    #[serde(default)]
    pub share: Option<String>,
    /// Measure the bytes allocated under the policy path against this budget.
    #[serde(default)]
    pub capacity: Option<Size>,
    /// Only files at least this big are released.
    #[serde(default)]
    pub min_size: Option<Size>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
}

fn default_debounce() -> u64 {
    2000
}

fn default_interval() -> u64 {
    300
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            debounce_ms: default_debounce(),
            interval_secs: default_interval(),
        }
    }
}

/// Where release measures usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UsageScope {
    Filesystem,
    Share { dir: String },
    Tree { capacity_bytes: u64 },
}

fn perr(why: impl Into<String>) -> HsmError {
    HsmError::Policy(why.into())
}

/// The glob set of `pats` (`None` for none); a bad pattern is an error naming `field`.
/// The CSI driver checks its StorageClass globs with it, so both read globs one way.
pub fn globset(field: &str, pats: &[String]) -> Result<Option<GlobSet>> {
    if pats.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in pats {
        b.add(Glob::new(p).map_err(|e| perr(format!("{field}: bad glob `{p}`: {e}")))?);
    }
    b.build()
        .map(Some)
        .map_err(|e| perr(format!("{field}: {e}")))
}

impl PolicyConfig {
    /// Parses and checks a policy file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| perr(format!("bad policy TOML: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| HsmError::io(path, e))?;
        Self::parse(&text).map_err(|e| match e {
            HsmError::Policy(m) => perr(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(r) = self.rate_limit
            && !(r.is_finite() && r > 0.0)
        {
            return Err(perr(format!(
                "rate_limit must be a positive number, not {r}"
            )));
        }
        if self.scan_workers == 0 || self.scan_workers > 64 {
            return Err(perr("scan_workers must be between 1 and 64"));
        }
        if self.archive.is_none() && self.release.is_none() {
            return Err(perr("no rules: add an [archive] or a [release] table"));
        }
        if let Some(a) = &self.archive {
            if !(a.older_than_minutes.is_finite() && a.older_than_minutes >= 0.0) {
                return Err(perr("archive.older_than_minutes must be >= 0"));
            }
            globset("archive.include", &a.include)?;
            globset("archive.exclude", &a.exclude)?;
            if let (Some(min), Some(max)) = (a.min_size, a.max_size)
                && min.0 > max.0
            {
                return Err(perr("archive.min_size is above archive.max_size"));
            }
        }
        if let Some(r) = &self.release {
            let ok = |v: f64| v.is_finite() && (0.0..=100.0).contains(&v);
            if !ok(r.high_watermark) || !ok(r.low_watermark) {
                return Err(perr("release watermarks are percentages between 0 and 100"));
            }
            if r.low_watermark >= r.high_watermark {
                return Err(perr(format!(
                    "release.low_watermark ({}) must be below release.high_watermark ({})",
                    r.low_watermark, r.high_watermark
                )));
            }
            if r.share.is_some() && r.capacity.is_some() {
                return Err(perr("release: give `share` or `capacity`, not both"));
            }
            if r.capacity.is_some_and(|c| c.0 == 0) {
                return Err(perr("release.capacity must be above zero"));
            }
        }
        if self.watch.interval_secs == 0 {
            return Err(perr("watch.interval_secs must be above zero"));
        }
        Ok(())
    }

    pub fn usage_scope(&self) -> Option<UsageScope> {
        self.release.as_ref().map(|r| match (&r.share, r.capacity) {
            (Some(s), _) => UsageScope::Share { dir: s.clone() },
            (None, Some(c)) => UsageScope::Tree {
                capacity_bytes: c.0,
            },
            (None, None) => UsageScope::Filesystem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        let size = |text: &str| {
            PolicyConfig::parse(&format!(
                "[archive]\nolder_than_minutes = 1\nmin_size = {text}"
            ))
            .map(|c| c.archive.and_then(|a| a.min_size))
        };
        assert_eq!(size("\"8MiB\"").expect("8MiB"), Some(Size(8 << 20)));
        assert_eq!(size("\"16k\"").expect("16k"), Some(Size(16 << 10)));
        assert_eq!(size("\"1000\"").expect("1000"), Some(Size(1000)));
        assert_eq!(size("1000").expect("integer"), Some(Size(1000)));
        assert_eq!(size("\"1.5G\"").expect("1.5G"), Some(Size(3 << 29)));
        // One parser for every size a user types: `GB` is decimal, as for share sizes.
        assert_eq!(size("\"2GB\"").expect("2GB"), Some(Size(2_000_000_000)));
        assert_eq!(size("\"2GiB\"").expect("2GiB"), Some(Size(2 << 30)));
        assert!(size("\"abc\"").is_err());
        assert!(size("\"5 parsecs\"").is_err());
        assert!(size("\"-5M\"").is_err());
    }

    #[test]
    fn full_example_parses() {
        let c = PolicyConfig::parse(
            r#"
            path = "projects"
            rate_limit = 50
            [archive]
            older_than_minutes = 60
            include = ["**/*.dat"]
            exclude = ["**/tmp/**"]
            min_size = "1MiB"
            max_size = 1000000000
            [release]
            high_watermark = 90
            low_watermark = 70
            capacity = "10GiB"
            [watch]
            debounce_ms = 100
            "#,
        )
        .expect("parse");
        let a = c.archive.as_ref().expect("archive");
        assert_eq!(a.min_size, Some(Size(1 << 20)));
        assert_eq!(a.max_size, Some(Size(1_000_000_000)));
        assert_eq!(
            c.usage_scope(),
            Some(UsageScope::Tree {
                capacity_bytes: 10 << 30
            })
        );
        assert_eq!(c.watch.interval_secs, 300);
    }

    #[test]
    fn the_shipped_example_parses() {
        let c = PolicyConfig::parse(include_str!("../../examples/policy.toml")).expect("example");
        assert_eq!(c.usage_scope(), Some(UsageScope::Filesystem));
    }

    fn err(text: &str) -> String {
        PolicyConfig::parse(text)
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let e = err("[archive]\nolder_than_minutes = 5\nincldue = [\"*\"]\n");
        assert!(e.contains("unknown field `incldue`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = err("[archive]\nolder_than_minutes = 5\ninclude = [\"a[\"]\n");
        assert!(e.contains("archive.include") && e.contains("a["), "{e}");
        let e = err("[release]\nhigh_watermark = 60\nlow_watermark = 80\n");
        assert!(e.contains("low_watermark (80) must be below"), "{e}");
        let e = err("[archive]\nolder_than_minutes = 5\nmin_size = \"12 parsecs\"\n");
        assert!(e.contains("parsecs"), "{e}");
        let e = err("dry_run = true\n");
        assert!(e.contains("no rules"), "{e}");
        let e = err("rate_limit = 0\n[archive]\nolder_than_minutes = 1\n");
        assert!(e.contains("rate_limit"), "{e}");
        let e = err("[archive]\n");
        assert!(e.contains("older_than_minutes"), "{e}");
        let e = err(
            "[release]\nhigh_watermark = 90\nlow_watermark = 10\nshare = \"a\"\ncapacity = 5\n",
        );
        assert!(e.contains("not both"), "{e}");
    }
}
