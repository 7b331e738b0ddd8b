//! `lfs df` output (blocks, `-i` inodes, `-h` human units), one [`DfReport`] per filesystem.
//!
//! Units: [`DfRow`] keeps the numbers in the unit of the table — KiB for the default
//! block table (`1K-blocks` header), bytes for `-h` (the `bytes` header; `%.1f` values are
//! rounded up to whole bytes, so they are approximate), inode counts for `-i`. Use
//! [`DfReport::summary_bytes`] to get bytes for either block mode.

use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::size::ByteSize;

const WHAT: &str = "lfs df";

/// MDT or OST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Metadata target.
    Mdt,
    /// Object storage target.
    Ost,
}

/// What the numbers of a table mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DfMode {
    /// Default table: KiB (`1K-blocks`).
    BlocksKib,
    /// `-h`: bytes, rounded from `%.1f` + binary suffix (approximate).
    BlocksHumanBytes,
    /// `-i`: inode counts (with `-ih`, rounded from the human form).
    Inodes,
}

/// One row of `lfs df` (a target or the `filesystem_summary:` line).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DfRow {
    /// `testfs-OST0000_UUID`, or `filesystem_summary:` for the summary.
    pub uuid: String,
    /// Total (KiB, bytes with `-h`, or inodes).
    pub total: u64,
    /// Used.
    pub used: u64,
    /// Available (blocks: `bavail`) or free inodes.
    pub available: u64,
    /// `Use%` (rounded up by Lustre).
    pub use_percent: u8,
    /// Mount point (may contain spaces).
    pub mount: String,
    /// `[MDT:0]` / `[OST:3]` suffix; `None` for the summary.
    pub target: Option<(TargetKind, u32)>,
    /// State flag letters after the target (`D`, `R`, `N`, `S`, `I`, `f`, `a`, ...); empty if none.
    pub flags: String,
}

/// A `<UUID> : inactive device` (or `: <error>`) line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DfUnavailable {
    /// UUID or `OST0003`-style placeholder.
    pub uuid: String,
    /// `inactive device` or the error text.
    pub message: String,
}

/// One filesystem's block of `lfs df` output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DfReport {
    /// Target rows (empty with `--only-summary`).
    pub rows: Vec<DfRow>,
    /// The `filesystem_summary:` row.
    pub summary: DfRow,
    /// Unit of the numbers.
    pub mode: DfMode,
    /// Targets reported as inactive or failing.
    pub unavailable: Vec<DfUnavailable>,
}

/// Space totals in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DfSpace {
    /// Total bytes.
    pub total_bytes: u64,
    /// Used bytes.
    pub used_bytes: u64,
    /// Available bytes.
    pub available_bytes: u64,
}

impl DfReport {
    /// Summary in bytes for block tables (KiB × 1024, or `-h` bytes as parsed);
    /// `None` for inode tables.
    pub fn summary_bytes(&self) -> Option<DfSpace> {
        let s = &self.summary;
        match self.mode {
            DfMode::Inodes => None,
            DfMode::BlocksHumanBytes => Some(DfSpace {
                total_bytes: s.total,
                used_bytes: s.used,
                available_bytes: s.available,
            }),
            DfMode::BlocksKib => Some(DfSpace {
                total_bytes: s.total.saturating_mul(1024),
                used_bytes: s.used.saturating_mul(1024),
                available_bytes: s.available.saturating_mul(1024),
            }),
        }
    }
}

/// Byte ranges of whitespace-separated tokens.
fn token_spans(line: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in line.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                spans.push((s, i));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        spans.push((s, line.len()));
    }
    spans
}

fn parse_num(tok: &str, mode: DfMode, line: usize) -> Result<u64, ParseError> {
    if tok.bytes().all(|b| b.is_ascii_digit()) && !tok.is_empty() {
        let v: u64 = tok
            .parse()
            .map_err(|_| ParseError::new(WHAT, line, format!("number {tok:?} is too large")))?;
        if mode == DfMode::BlocksKib && v.checked_mul(1024).is_none() {
            return Err(ParseError::new(
                WHAT,
                line,
                format!("{v} KiB overflows a byte count"),
            ));
        }
        return Ok(v);
    }
    if mode == DfMode::BlocksKib {
        return Err(ParseError::new(
            WHAT,
            line,
            format!("{tok:?} is not a KiB count"),
        ));
    }
    tok.parse::<ByteSize>()
        .map(ByteSize::bytes)
        .map_err(|e| ParseError::new(WHAT, line, e.to_string()))
}

/// Splits `"/mnt/testfs[OST:1] D"` into mount, target and flags.
fn split_target(rest: &str) -> (String, Option<(TargetKind, u32)>, String) {
    if let Some(open) = rest.rfind('[') {
        let after = rest.get(open + 1..).unwrap_or("");
        if let Some(close) = after.find(']') {
            let inner = after.get(..close).unwrap_or("");
            let kind = if let Some(n) = inner.strip_prefix("MDT:") {
                n.parse().ok().map(|i| (TargetKind::Mdt, i))
            } else if let Some(n) = inner.strip_prefix("OST:") {
                n.parse().ok().map(|i| (TargetKind::Ost, i))
            } else {
                None
            };
            if let Some(t) = kind {
                let mount = rest.get(..open).unwrap_or("").trim().to_owned();
                let flags = after.get(close + 1..).unwrap_or("").trim().to_owned();
                return (mount, Some(t), flags);
            }
        }
    }
    (rest.trim().to_owned(), None, String::new())
}

fn parse_data_row(line: &str, mode: DfMode, lineno: usize) -> Result<DfRow, ParseError> {
    let spans = token_spans(line);
    let tok = |i: usize| -> Option<&str> { spans.get(i).and_then(|(s, e)| line.get(*s..*e)) };
    let (uuid, total, used, avail, pct) = match (tok(0), tok(1), tok(2), tok(3), tok(4)) {
        (Some(a), Some(b), Some(c), Some(d), Some(e)) => (a, b, c, d, e),
        _ => {
            return Err(ParseError::new(
                WHAT,
                lineno,
                format!("expected `UUID total used available use% mount`, got {line:?}"),
            ));
        }
    };
    let pct_num = pct.strip_suffix('%').ok_or_else(|| {
        ParseError::new(WHAT, lineno, format!("use% {pct:?} does not end with `%`"))
    })?;
    let use_percent: u8 = pct_num
        .parse()
        .map_err(|_| ParseError::new(WHAT, lineno, format!("use% {pct:?} is not 0-255")))?;
    let rest_start = spans.get(5).map_or(line.len(), |(s, _)| *s);
    let rest = line.get(rest_start..).unwrap_or("");
    let (mount, target, flags) = split_target(rest);
    Ok(DfRow {
        uuid: uuid.to_owned(),
        total: parse_num(total, mode, lineno)?,
        used: parse_num(used, mode, lineno)?,
        available: parse_num(avail, mode, lineno)?,
        use_percent,
        mount,
        target,
        flags,
    })
}

fn header_mode(tokens: &[&str]) -> Option<DfMode> {
    let is_header = tokens.first() == Some(&"UUID")
        || (tokens.contains(&"Mounted") && tokens.contains(&"Used"));
    if !is_header {
        return None;
    }
    if tokens.contains(&"Inodes") || tokens.contains(&"IUsed") {
        Some(DfMode::Inodes)
    } else if tokens.contains(&"bytes") {
        Some(DfMode::BlocksHumanBytes)
    } else {
        Some(DfMode::BlocksKib)
    }
}

/// Parses `lfs df [-i] [-h] [-v] [PATH]` output (2.12 → master), one report per filesystem.
/// Without a header (`-N`), a KiB block table is assumed.
pub fn parse_lfs_df(text: &str) -> Result<Vec<DfReport>, ParseError> {
    let mut reports = Vec::new();
    let mut mode = DfMode::BlocksKib;
    let mut rows: Vec<DfRow> = Vec::new();
    let mut unavailable: Vec<DfUnavailable> = Vec::new();
    let mut last_line = 0;
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        last_line = lineno;
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if let Some(m) = header_mode(&tokens) {
            mode = m;
            continue;
        }
        let first = tokens.first().copied().unwrap_or("");
        if first == "filesystem_summary:" {
            let summary = parse_data_row(line, mode, lineno)?;
            reports.push(DfReport {
                rows: std::mem::take(&mut rows),
                summary,
                mode,
                unavailable: std::mem::take(&mut unavailable),
            });
            continue;
        }
        // `OST0003             : inactive device` / `<uuid>: <strerror>`
        let looks_unavailable =
            tokens.get(1) == Some(&":") || (first.ends_with(':') && first.len() > 1);
        if let Some((uuid, msg)) = line.split_once(':').filter(|_| looks_unavailable) {
            unavailable.push(DfUnavailable {
                uuid: uuid.trim().to_owned(),
                message: msg.trim().to_owned(),
            });
            continue;
        }
        rows.push(parse_data_row(line, mode, lineno)?);
    }
    if !rows.is_empty() || !unavailable.is_empty() {
        return Err(ParseError::new(
            WHAT,
            last_line,
            "target rows are not followed by a `filesystem_summary:` line",
        ));
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // lfs-df.md (b) rendered 2.12–2.16 format.
    const R216: &str = "\
UUID                   1K-blocks        Used   Available Use% Mounted on
testfs-MDT0000_UUID      1251328       16384     1122304   2% /mnt/testfs[MDT:0]
testfs-OST0000_UUID   3905069824        3072  3905064704   1% /mnt/testfs[OST:0]
testfs-OST0001_UUID   3905069824     4194304  3900871424   1% /mnt/testfs[OST:1] D

filesystem_summary:   7810139648     4197376  7805936128   1% /mnt/testfs

";

    // lfs-df.md (b) rendered 2.17.0 / master format (master: trailing space on each line).
    const R217_MASTER: &str = concat!(
        "UUID                   1K-blocks        Used   Available Use%  Mounted on\n",
        "testfs-MDT0000_UUID      1251328       16384     1122304   2%  /mnt/testfs[MDT:0] \n",
        "testfs-OST0000_UUID   3905069824        3072  3905064704   1%  /mnt/testfs[OST:0] \n",
        "testfs-OST0001_UUID   3905069824     4194304  3900871424   1%  /mnt/testfs[OST:1] D\n",
        "\n",
        "filesystem_summary:   7810139648     4197376  7805936128   1%  /mnt/testfs \n",
        "\n",
    );

    // lfs-df.md (c) sample 1: Vagrant demo, `lfs df -h`.
    const VAGRANT_H: &str = "\
UUID                       bytes        Used   Available Use% Mounted on
users-MDT0000_UUID        815.8M        3.1M      810.6M   1% /users[MDT:0]
users-OST0000_UUID          2.6G      660.0M        2.0G  25% /users[OST:0]
users-OST0001_UUID          2.6G        3.0M        2.6G   1% /users[OST:1]

filesystem_summary:         5.2G      663.0M        4.6G  13% /users
";

    // lfs-df.md (c) sample 2: DDN EXAScaler Cloud, summary numbers overflow 11-char columns.
    const EXA: &str = "\
exacloud-OST0017_UUID   529449792        1264   524063436   1% /mnt/exacloud[OST:23]

filesystem_summary:  12706795008       30348 12577522452   1% /mnt/exacloud
";

    // lfs-df.md (c) sample 4: man page `lfs df -hv` with an inactive device and flags.
    const MAN_HV: &str = "\
UUID                 bytes  Used   Avail Use% Mounted on
testfs-MDT0000_UUID  13.0G  1.2G   11.0G  10% /testfs[MDT:0]
testfs-OST0000_UUID   3.6T  2.9T  585.7G  84% /testfs[OST:0]
testfs-OST0001_UUID   3.6T  3.1T  472.5G  87% /testfs[OST:1] D
testfs-OST0002_UUID   3.6T  3.0T  570.3G  84% /testfs[OST:2] DR
OST0003           : inactive device
testfs-OST0006_UUID   5.4T  4.9T  417.8G  92% /testfs[OST:3]

filesystem_summary:  16.2T 13.8T    2.0T  88% /testfs
";

    // Rendered `-i` table (same printf with Inodes/IUsed/IFree headers), two filesystems.
    const INODES_TWO_FS: &str = "\
UUID                      Inodes       IUsed       IFree IUse% Mounted on
testfs-MDT0000_UUID       838864         272      838592   1% /mnt/testfs[MDT:0]

filesystem_summary:       838864         272      838592   1% /mnt/testfs

UUID                      Inodes       IUsed       IFree IUse% Mounted on
scratch-MDT0000_UUID      100000          10       99990   1% /mnt/my scratch[MDT:0]

filesystem_summary:       100000          10       99990   1% /mnt/my scratch
";

    // lfs-df.md (c) man page (2.17+) `--only-summary`.
    const ONLY_SUMMARY: &str =
        "filesystem_summary:       626208        2800      569088   1%  /mnt/lustre\n";

    #[test]
    fn rendered_216_and_217() {
        for t in [R216, R217_MASTER] {
            let r = parse_lfs_df(t).unwrap();
            assert_eq!(r.len(), 1);
            let rep = r.first().unwrap();
            assert_eq!(rep.mode, DfMode::BlocksKib);
            assert_eq!(rep.rows.len(), 3);
            let ost1 = rep.rows.get(2).unwrap();
            assert_eq!(ost1.target, Some((TargetKind::Ost, 1)));
            assert_eq!(ost1.flags, "D");
            assert_eq!(ost1.mount, "/mnt/testfs");
            assert_eq!(rep.rows.first().unwrap().target, Some((TargetKind::Mdt, 0)));
            assert_eq!(rep.rows.first().unwrap().flags, "");
            assert_eq!(rep.summary.total, 7810139648);
            assert_eq!(rep.summary.mount, "/mnt/testfs");
            assert_eq!(rep.summary.target, None);
            let b = rep.summary_bytes().unwrap();
            assert_eq!(b.available_bytes, 7805936128 * 1024);
        }
    }

    #[test]
    fn human() {
        let r = parse_lfs_df(VAGRANT_H).unwrap();
        let rep = r.first().unwrap();
        assert_eq!(rep.mode, DfMode::BlocksHumanBytes);
        assert_eq!(rep.summary.use_percent, 13);
        let b = rep.summary_bytes().unwrap();
        assert_eq!(b.total_bytes, "5.2G".parse::<ByteSize>().unwrap().bytes());
    }

    #[test]
    fn overflowing_columns() {
        let r = parse_lfs_df(EXA).unwrap();
        let rep = r.first().unwrap();
        assert_eq!(rep.summary.total, 12706795008);
        assert_eq!(rep.summary.available, 12577522452);
        assert_eq!(
            rep.rows.first().unwrap().target,
            Some((TargetKind::Ost, 23))
        );
    }

    #[test]
    fn inactive_and_flags() {
        let r = parse_lfs_df(MAN_HV).unwrap();
        let rep = r.first().unwrap();
        assert_eq!(rep.rows.len(), 5);
        assert_eq!(rep.unavailable.len(), 1);
        assert_eq!(rep.unavailable.first().unwrap().uuid, "OST0003");
        assert_eq!(rep.unavailable.first().unwrap().message, "inactive device");
        assert_eq!(rep.rows.get(3).unwrap().flags, "DR");
    }

    #[test]
    fn inodes_multiple_fs_with_spaces() {
        let r = parse_lfs_df(INODES_TWO_FS).unwrap();
        assert_eq!(r.len(), 2);
        let second = r.get(1).unwrap();
        assert_eq!(second.mode, DfMode::Inodes);
        assert_eq!(second.summary.mount, "/mnt/my scratch");
        assert_eq!(second.rows.first().unwrap().mount, "/mnt/my scratch");
        assert_eq!(second.summary_bytes(), None);
    }

    #[test]
    fn only_summary() {
        let r = parse_lfs_df(ONLY_SUMMARY).unwrap();
        assert_eq!(r.first().unwrap().summary.available, 569088);
        assert!(r.first().unwrap().rows.is_empty());
    }

    #[test]
    fn errors() {
        assert_eq!(parse_lfs_df("").unwrap(), vec![]);
        let e = parse_lfs_df(
            "UUID 1K-blocks Used Available Use% Mounted on\nx-OST0000_UUID 1 2 3 4 /m[OST:0]\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse_lfs_df("x-OST0000_UUID 1 2 3 4% /m[OST:0]\n").is_err()); // no summary
        assert!(parse_lfs_df("filesystem_summary: 1.5G 2 3 4% /m\n").is_err()); // KiB mode
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = parse_lfs_df(&s);
        }

        #[test]
        fn roundtrip_rows(total in any::<u32>(), used in any::<u32>(), pct in 0u8..=100, idx in 0u32..1000, mnt in "/[a-z ]{1,12}") {
            let mnt = mnt.trim_end().to_owned();
            let text = format!(
                "UUID                   1K-blocks        Used   Available Use% Mounted on\n{:<20} {:>11} {:>11} {:>11} {:>3}% {}[OST:{}]\n\n{:<20} {:>11} {:>11} {:>11} {:>3}% {}\n",
                "fs-OST0000_UUID", total, used, total, pct, mnt, idx,
                "filesystem_summary:", total, used, total, pct, mnt);
            let r = parse_lfs_df(&text).unwrap();
            let rep = r.first().unwrap();
            let row = rep.rows.first().unwrap();
            prop_assert_eq!(row.total, u64::from(total));
            prop_assert_eq!(row.used, u64::from(used));
            prop_assert_eq!(row.use_percent, pct);
            prop_assert_eq!(&row.mount, &mnt);
            prop_assert_eq!(row.target, Some((TargetKind::Ost, idx)));
            prop_assert_eq!(&rep.summary.mount, &mnt);
        }
    }
}
