//! `lfs quota` output: limits, usage, grace and the over-quota flags.
//!
//! Handles the three table formats (≤2.15 with wrapped long names, 2.16 `%16s`, 2.17+
//! `bquota/blimit/...` headers with trailing spaces and `--delimiter`), `-h` human units,
//! `[..]` inaccurate cells, `*` markers and header-less `-q` output. Over-quota is computed
//! from the numbers (usage ≥ limit, or a running grace) because 2.17's `files` star mirrors
//! the *block* flag (see `lfs-quota.md`).

use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::grace::{Grace, parse_grace};
use crate::size::ByteSize;

const WHAT: &str = "lfs quota";

/// Quota limits; 0 means unlimited, as in Lustre.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct QuotaLimits {
    /// Block soft limit in bytes.
    pub block_soft_bytes: u64,
    /// Block hard limit in bytes.
    pub block_hard_bytes: u64,
    /// Inode soft limit.
    pub inode_soft: u64,
    /// Inode hard limit.
    pub inode_hard: u64,
}

/// Space and inode usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// Bytes used (Lustre reports KiB; converted with `* 1024`).
    pub used_bytes: u64,
    /// Inodes (files) used.
    pub inodes: u64,
}

/// One `lfs quota` filesystem-total row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuotaReport {
    /// Usage.
    pub usage: QuotaUsage,
    /// Limits.
    pub limits: QuotaLimits,
    /// Block usage is at/over a limit (computed, plus the reliable block `*`).
    pub block_exceeded: bool,
    /// Inode usage is at/over a limit (computed; the 2.17 `files *` is ignored).
    pub inode_exceeded: bool,
    /// Block grace column.
    pub block_grace: Grace,
    /// Inode grace column.
    pub inode_grace: Grace,
    /// Some value was bracketed (`[123]`) or Lustre printed "Some errors happened".
    pub inaccurate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Fs,
    QuotaId,
    BUsed,
    BSoft,
    BHard,
    BGrace,
    IUsed,
    ISoft,
    IHard,
    IGrace,
    Other,
}

const DEFAULT_COLS: [Col; 9] = [
    Col::Fs,
    Col::BUsed,
    Col::BSoft,
    Col::BHard,
    Col::BGrace,
    Col::IUsed,
    Col::ISoft,
    Col::IHard,
    Col::IGrace,
];

struct Layout {
    cols: Vec<Col>,
    delim: Option<char>,
    /// 2.17+ table (header words `bquota`..., or trailing delimiter/space).
    v217: bool,
}

/// Recognises a header line and returns its column layout.
fn parse_header(line: &str) -> Option<Layout> {
    let t = line.trim();
    let first = t.split_whitespace().next()?;
    let word = ["Filesystem", "quota_id"]
        .into_iter()
        .find(|w| first.starts_with(w))?;
    let delim = first.get(word.len()..).and_then(|r| r.chars().next());
    let cells: Vec<&str> = match delim {
        Some(d) => t
            .split(d)
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect(),
        None => t.split_whitespace().collect(),
    };
    let mut cols = Vec::with_capacity(cells.len());
    let mut seen_files = false;
    let mut v217 = delim.is_some();
    for c in cells {
        let col = match c {
            "Filesystem" => Col::Fs,
            "quota_id" => Col::QuotaId,
            "kbytes" | "used" => Col::BUsed,
            "files" => {
                seen_files = true;
                Col::IUsed
            }
            "quota" if seen_files => Col::ISoft,
            "limit" if seen_files => Col::IHard,
            "grace" if seen_files => Col::IGrace,
            "quota" => Col::BSoft,
            "limit" => Col::BHard,
            "grace" => Col::BGrace,
            "bquota" | "blimit" | "bgrace" | "iquota" | "ilimit" | "igrace" => {
                v217 = true;
                match c {
                    "bquota" => Col::BSoft,
                    "blimit" => Col::BHard,
                    "bgrace" => Col::BGrace,
                    "iquota" => Col::ISoft,
                    "ilimit" => Col::IHard,
                    _ => Col::IGrace,
                }
            }
            _ => Col::Other,
        };
        cols.push(col);
    }
    if !cols.iter().any(|c| matches!(c, Col::BUsed | Col::IUsed)) {
        return None;
    }
    Some(Layout { cols, delim, v217 })
}

/// A cell with its markers removed.
struct Cell<'a> {
    text: &'a str,
    star: bool,
    bracket: bool,
}

fn strip_cell(s: &str) -> Cell<'_> {
    let mut t = s.trim();
    let mut star = false;
    let mut bracket = false;
    if let Some(r) = t.strip_suffix('*') {
        star = true;
        t = r;
    }
    if let Some(r) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        bracket = true;
        t = r;
    }
    if let Some(r) = t.strip_suffix('*') {
        star = true;
        t = r;
    }
    Cell {
        text: t.trim(),
        star,
        bracket,
    }
}

/// Parsed values of one data row (`None` = `-` placeholder or absent column).
#[derive(Default)]
struct Row {
    name: String,
    id: Option<u32>,
    b_used: Option<u64>,
    b_soft: Option<u64>,
    b_hard: Option<u64>,
    b_grace: Option<Grace>,
    i_used: Option<u64>,
    i_soft: Option<u64>,
    i_hard: Option<u64>,
    i_grace: Option<Grace>,
    b_star: bool,
    i_star: bool,
    bracket: bool,
    v217: bool,
}

fn block_bytes(c: &Cell<'_>, line: usize) -> Result<Option<u64>, ParseError> {
    if c.text == "-" {
        return Ok(None);
    }
    if c.text.ends_with(|ch: char| ch.is_ascii_alphabetic()) {
        // `-h`: kbytes2str() prints k/M/G/T/P, base 1024 on a KiB base, i.e. binary units.
        return c
            .text
            .parse::<ByteSize>()
            .map(|b| Some(b.bytes()))
            .map_err(|e| ParseError::new(WHAT, line, e.to_string()));
    }
    let kib: u64 = c.text.parse().map_err(|_| {
        ParseError::new(
            WHAT,
            line,
            format!("block value {:?} is not a number", c.text),
        )
    })?;
    kib.checked_mul(1024).map(Some).ok_or_else(|| {
        ParseError::new(WHAT, line, format!("block value {kib} KiB overflows bytes"))
    })
}

fn inode_count(c: &Cell<'_>, line: usize) -> Result<Option<u64>, ParseError> {
    if c.text == "-" {
        return Ok(None);
    }
    c.text.parse().map(Some).map_err(|_| {
        ParseError::new(
            WHAT,
            line,
            format!("inode value {:?} is not a number", c.text),
        )
    })
}

fn grace_cell(c: &Cell<'_>, line: usize) -> Result<Grace, ParseError> {
    parse_grace(c.text).map_err(|e| ParseError::new(WHAT, line, e.to_string()))
}

fn parse_row(cells: &[&str], layout: &Layout, v217: bool, line: usize) -> Result<Row, ParseError> {
    let mut row = Row {
        v217,
        ..Row::default()
    };
    for (col, raw) in layout.cols.iter().zip(cells) {
        let c = strip_cell(raw);
        row.bracket |= c.bracket;
        match col {
            Col::Fs => row.name = (*raw).to_owned(),
            Col::QuotaId => {
                row.id = Some(c.text.parse().map_err(|_| {
                    ParseError::new(WHAT, line, format!("quota id {:?} is not a number", c.text))
                })?)
            }
            Col::BUsed => {
                row.b_star |= c.star;
                row.b_used = block_bytes(&c, line)?;
            }
            Col::BSoft => row.b_soft = block_bytes(&c, line)?,
            Col::BHard => row.b_hard = block_bytes(&c, line)?,
            Col::BGrace => row.b_grace = Some(grace_cell(&c, line)?),
            Col::IUsed => {
                row.i_star |= c.star;
                row.i_used = inode_count(&c, line)?;
            }
            Col::ISoft => row.i_soft = inode_count(&c, line)?,
            Col::IHard => row.i_hard = inode_count(&c, line)?,
            Col::IGrace => row.i_grace = Some(grace_cell(&c, line)?),
            Col::Other => {}
        }
    }
    Ok(row)
}

fn over(used: u64, soft: u64, hard: u64) -> bool {
    (hard > 0 && used >= hard) || (soft > 0 && used >= soft)
}

impl Row {
    fn report(&self, inaccurate_trailer: bool) -> QuotaReport {
        let usage = QuotaUsage {
            used_bytes: self.b_used.unwrap_or(0),
            inodes: self.i_used.unwrap_or(0),
        };
        let limits = QuotaLimits {
            block_soft_bytes: self.b_soft.unwrap_or(0),
            block_hard_bytes: self.b_hard.unwrap_or(0),
            inode_soft: self.i_soft.unwrap_or(0),
            inode_hard: self.i_hard.unwrap_or(0),
        };
        let block_grace = self.b_grace.unwrap_or(Grace::None);
        let inode_grace = self.i_grace.unwrap_or(Grace::None);
        QuotaReport {
            usage,
            limits,
            block_exceeded: self.b_star
                || block_grace != Grace::None
                || over(
                    usage.used_bytes,
                    limits.block_soft_bytes,
                    limits.block_hard_bytes,
                ),
            inode_exceeded: (self.i_star && !self.v217)
                || inode_grace != Grace::None
                || over(usage.inodes, limits.inode_soft, limits.inode_hard),
            block_grace,
            inode_grace,
            inaccurate: self.bracket || inaccurate_trailer,
        }
    }
}

/// All data rows of an `lfs quota` output, plus whether the error trailer was printed.
fn parse_rows(text: &str) -> Result<(Vec<Row>, bool, Option<u32>), ParseError> {
    let mut layout: Option<Layout> = None;
    let mut rows = Vec::new();
    let mut trailer = false;
    let mut title_id: Option<u32> = None;
    let mut pending_name: Option<String> = None;
    for (idx, raw_line) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw_line.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with("Disk ") {
            // `Disk quotas for prj 1000 (pid 1000):` -> remember the id.
            if let Some(pos) = trimmed.rfind("id ") {
                let digits: String = trimmed
                    .get(pos + 3..)
                    .unwrap_or("")
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                title_id = digits.parse().ok();
            }
            continue;
        }
        if trimmed.contains("Some errors happened") {
            trailer = true;
            continue;
        }
        if trimmed.starts_with("Total allocated")
            || trimmed.contains(" is using default ")
            || trimmed.starts_with("Block grace time:")
        {
            continue;
        }
        if let Some(h) = parse_header(line) {
            layout = Some(h);
            pending_name = None;
            continue;
        }
        let default_layout = Layout {
            cols: DEFAULT_COLS.to_vec(),
            delim: None,
            v217: false,
        };
        let lay = layout.as_ref().unwrap_or(&default_layout);
        let v217 = lay.v217 || raw_line.ends_with(' ');
        let mut cells: Vec<String> = match lay.delim {
            Some(d) => line
                .split(d)
                .map(|c| c.trim().to_owned())
                .collect::<Vec<_>>(),
            None => line.split_whitespace().map(str::to_owned).collect(),
        };
        if lay.delim.is_some() && cells.last().is_some_and(String::is_empty) {
            cells.pop();
        }
        let n = lay.cols.len();
        if lay.delim.is_none() && cells.len() == 1 && n > 1 && pending_name.is_none() {
            // ≤2.15 wraps names longer than 15 chars: values follow on the next line.
            pending_name = cells.pop();
            continue;
        }
        if let Some(name) = pending_name.take() {
            cells.insert(0, name);
        }
        let fs_pos = lay.cols.iter().position(|c| *c == Col::Fs);
        if cells.len() > n {
            // Mount points with spaces: fold the extra tokens back into the name.
            match fs_pos {
                Some(p) => {
                    let extra = cells.len() - n;
                    let merged: Vec<String> = cells.drain(p..=p + extra).collect();
                    cells.insert(p, merged.join(" "));
                }
                None => {
                    return Err(ParseError::new(
                        WHAT,
                        lineno,
                        format!("expected {n} columns, found {}: {line:?}", cells.len()),
                    ));
                }
            }
        }
        if cells.len() < n {
            return Err(ParseError::new(
                WHAT,
                lineno,
                format!("expected {n} columns, found {}: {line:?}", cells.len()),
            ));
        }
        let refs: Vec<&str> = cells.iter().map(String::as_str).collect();
        rows.push(parse_row(&refs, lay, v217, lineno)?);
    }
    if let Some(name) = pending_name {
        return Err(ParseError::new(
            WHAT,
            0,
            format!("name {name:?} is not followed by a line of values"),
        ));
    }
    Ok((rows, trailer, title_id))
}

/// Parses `lfs quota -p ID MOUNT` (any version, `-h`, `-v`, `-q`, `--delimiter`) and
/// returns the filesystem-total row (the first data row; per-target `-v` rows follow it).
pub fn parse_lfs_quota(text: &str) -> Result<QuotaReport, ParseError> {
    let (rows, trailer, _) = parse_rows(text)?;
    rows.first()
        .map(|r| r.report(trailer))
        .ok_or_else(|| ParseError::new(WHAT, 0, "no quota data row found"))
}

/// Parses `lfs quota -a -p` (2.16+): one report per row, keyed by the `quota_id` column.
/// Output without a `quota_id` column yields a single entry keyed by the ID in the title
/// line (`Disk quotas for prj 1000 (pid 1000):`).
pub fn parse_lfs_quota_all(text: &str) -> Result<Vec<(u32, QuotaReport)>, ParseError> {
    let (rows, trailer, title_id) = parse_rows(text)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        match r.id {
            Some(id) => out.push((id, r.report(trailer))),
            None => {
                let id = title_id.ok_or_else(|| {
                    ParseError::new(
                        WHAT,
                        0,
                        format!("row {:?} has no quota_id and the title has no id", r.name),
                    )
                })?;
                out.push((id, r.report(trailer)));
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    const KIB: u64 = 1024;

    // lfs-quota.md (c) sample 1: NREL Eagle, ≤2.15 format, over-quota project.
    const NREL: &str = "\
Disk quotas for prj 110255 (pid 110255):
       Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
/projects/csc000 3165308*   3072    4096       -      48  1073741824 2147483648       -
";

    // lfs-quota.md (c) sample 2: SDSC Expanse, `-h -v`, ≤2.15 with wrapped target names.
    const EXPANSE: &str = "\
Disk quotas for usr xdtr108 (uid 514559):
     Filesystem    used   quota   limit   grace   files   quota   limit   grace
             ./  792.3M      0k  9.537T       -       9       0 2000000       -
expanse-MDT0000_UUID
                   167k*      -    167k       -       3*      -       3       -
expanse-OST0000_UUID
                     0k       -      0k       -       -       -       -       -
";

    // lfs-quota.md (c) sample 3: Mila, `-h` with default-quota trailer lines (≤2.15).
    const MILA: &str = "\
Disk quotas for usr normandf (uid 1471600598):
     Filesystem    used   quota   limit   grace   files   quota   limit   grace
     /home/mila  99.99G      0k    100G       -  921718       0 1048576       -
uid 1471600598 is using default block quota setting
uid 1471600598 is using default file quota setting
";

    // lfs-quota.md (c) sample 4: OzSTAR, inaccurate values in brackets.
    const OZSTAR: &str = "\
Disk quotas for usr username (uid 1000):
     Filesystem    kbytes    quota   limit   grace   files   quota   limit   grace
          /fred [1041408]  5242880 6291456       -     [0]       0       0       -
";

    // lfs-quota.md (c) sample 5: 2.17-style headers (Japanese HPC docs).
    const JP217: &str = "\
Disk quotas for prj 100010 (pid 100010):
Filesystem    used   bquota  blimit  bgrace   files   iquota  ilimit  igrace
     /home   2.42G       0k     50G       -     511        0 1000000       -
";

    // lfs-quota.md (b) rendered 2.15 over-quota example.
    const R215_OVER: &str = "\
Disk quotas for usr bob (uid 500):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
    /mnt/testfs   30720*  30720   30920 6d23h56m44s   10101*  10000   11000 6d23h59m50s
";

    // lfs-quota.md (b) rendered 2.15 long mount point wrap.
    const R215_WRAP: &str = "\
Disk quotas for prj 1000 (pid 1000):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
/lustre/scratch/projects
                   4360       0       0       -     265       0       0       -
";

    // lfs-quota.md (b) rendered 2.16 (no wrap, %16s).
    const R216: &str = "\
Disk quotas for prj 1000 (pid 1000):
      Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
/lustre/scratch/projects    4360       0       0       -     265       0       0       -
";

    // lfs-quota.md (b) rendered 2.17 / master, every line ends with a space; the
    // `files *` is the block flag (bug), here with an inode-only overrun that is NOT starred.
    const R217_INODE_ONLY: &str = concat!(
        "Disk quotas for prj 1000 (pid 1000):\n",
        "     Filesystem  kbytes  bquota  blimit  bgrace   files  iquota  ilimit  igrace \n",
        "    /mnt/testfs    4360       0       0       -   11000   10000   11000       - \n",
    );

    // 2.17: block over-quota only; `files` starred by the bug although inodes are fine.
    const R217_BLOCK_ONLY: &str = concat!(
        "Disk quotas for prj 1000 (pid 1000):\n",
        "     Filesystem  kbytes  bquota  blimit  bgrace   files  iquota  ilimit  igrace \n",
        "    /mnt/testfs  30720*   30720   30920 6d23h56m44s     10*   10000   11000       - \n",
    );

    // lfs-quota.md (b) rendered 2.17 --delimiter=','.
    const R217_DELIM: &str = concat!(
        "Disk quotas for prj 1000 (pid 1000):\n",
        "      Filesystem,  kbytes,  bquota,  blimit,  bgrace,   files,  iquota,  ilimit,  igrace,\n",
        "     /mnt/lustre,    4360,       0,       0,       -,     265,       0,       0,       -,\n",
    );

    // 2.16 inaccurate trailer form: "%d Some errors happened...".
    const R216_TRAILER: &str = "\
Disk quotas for prj 1000 (pid 1000):
      Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
     /mnt/testfs    4360       0       0       -     265       0       0       -
1 Some errors happened when getting quota info. Some devices may be not working or deactivated. The data in \"[]\" is inaccurate.
";

    // lfs-quota.md (c) sample 7: man page column selection (2.17).
    const MAN_COLUMNS: &str = "\
Disk quotas for usr root (uid 0):
      Filesystem   kbytes   files
     /mnt/lustre     5236     308
    /mnt/lustre2     5236     308
";

    #[test]
    fn nrel_over_hard() {
        let r = parse_lfs_quota(NREL).unwrap();
        assert_eq!(r.usage.used_bytes, 3165308 * KIB);
        assert_eq!(r.limits.block_soft_bytes, 3072 * KIB);
        assert_eq!(r.limits.block_hard_bytes, 4096 * KIB);
        assert_eq!(r.limits.inode_soft, 1073741824);
        assert_eq!(r.limits.inode_hard, 2147483648);
        assert_eq!(r.usage.inodes, 48);
        assert!(r.block_exceeded);
        assert!(!r.inode_exceeded);
        assert_eq!(r.block_grace, Grace::None);
        assert!(!r.inaccurate);
    }

    #[test]
    fn expanse_human_total_row() {
        let r = parse_lfs_quota(EXPANSE).unwrap();
        assert_eq!(
            r.usage.used_bytes,
            "792.3M".parse::<ByteSize>().unwrap().bytes()
        );
        assert_eq!(
            r.limits.block_hard_bytes,
            "9.537T".parse::<ByteSize>().unwrap().bytes()
        );
        assert_eq!(r.limits.block_soft_bytes, 0);
        assert_eq!(r.usage.inodes, 9);
        assert_eq!(r.limits.inode_hard, 2000000);
        assert!(!r.block_exceeded && !r.inode_exceeded);
    }

    #[test]
    fn mila_trailer_lines() {
        let r = parse_lfs_quota(MILA).unwrap();
        assert_eq!(r.limits.block_hard_bytes, 100 << 30);
        assert_eq!(r.usage.inodes, 921718);
        assert!(!r.block_exceeded);
    }

    #[test]
    fn ozstar_inaccurate() {
        let r = parse_lfs_quota(OZSTAR).unwrap();
        assert!(r.inaccurate);
        assert_eq!(r.usage.used_bytes, 1041408 * KIB);
        assert_eq!(r.usage.inodes, 0);
        assert_eq!(r.limits.block_hard_bytes, 6291456 * KIB);
    }

    #[test]
    fn jp_217_headers() {
        let r = parse_lfs_quota(JP217).unwrap();
        assert_eq!(r.limits.block_hard_bytes, 50 << 30);
        assert_eq!(r.limits.inode_hard, 1000000);
        assert_eq!(r.usage.inodes, 511);
    }

    #[test]
    fn rendered_215_over() {
        let r = parse_lfs_quota(R215_OVER).unwrap();
        assert!(r.block_exceeded && r.inode_exceeded);
        assert_eq!(
            r.block_grace,
            Grace::Remaining(Duration::from_secs(6 * 86400 + 23 * 3600 + 56 * 60 + 44))
        );
        assert_eq!(r.inode_grace.to_string(), "6d23h59m50s");
    }

    #[test]
    fn rendered_wrap_and_216() {
        for t in [R215_WRAP, R216] {
            let r = parse_lfs_quota(t).unwrap();
            assert_eq!(r.usage.used_bytes, 4360 * KIB);
            assert_eq!(r.usage.inodes, 265);
            assert!(!r.block_exceeded && !r.inode_exceeded);
        }
        let all = parse_lfs_quota_all(R216).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all.first().map(|x| x.0), Some(1000));
    }

    #[test]
    fn rendered_217_star_bug() {
        let r = parse_lfs_quota(R217_INODE_ONLY).unwrap();
        assert!(!r.block_exceeded);
        assert!(r.inode_exceeded, "inode-only overrun must be computed");
        let r = parse_lfs_quota(R217_BLOCK_ONLY).unwrap();
        assert!(r.block_exceeded);
        assert!(!r.inode_exceeded, "2.17 files star mirrors the block flag");
    }

    #[test]
    fn rendered_217_delimiter() {
        let r = parse_lfs_quota(R217_DELIM).unwrap();
        assert_eq!(r.usage.used_bytes, 4360 * KIB);
        assert_eq!(r.usage.inodes, 265);
    }

    #[test]
    fn trailer_marks_inaccurate() {
        assert!(parse_lfs_quota(R216_TRAILER).unwrap().inaccurate);
    }

    #[test]
    fn column_selection() {
        let r = parse_lfs_quota(MAN_COLUMNS).unwrap();
        assert_eq!(r.usage.used_bytes, 5236 * KIB);
        assert_eq!(r.usage.inodes, 308);
        assert_eq!(r.limits, QuotaLimits::default());
    }

    #[test]
    fn quiet_no_header() {
        let r = parse_lfs_quota(
            "    /mnt/testfs   30720*  30720   30920 6d23h56m44s   10101*  10000   11000 6d23h59m50s\n",
        )
        .unwrap();
        assert!(r.block_exceeded && r.inode_exceeded);
    }

    #[test]
    fn all_with_quota_id() {
        let text = concat!(
            "Disk prj quotas\n",
            "  quota_id      Filesystem  kbytes  bquota  blimit  bgrace   files  iquota  ilimit  igrace \n",
            "      1000     /mnt/lustre    4360       0       0       -     265       0       0       - \n",
            "      1001     /mnt/lustre  30720*   30720   30920      1w      10       0       0       - \n",
        );
        let all = parse_lfs_quota_all(text).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all.get(1).map(|x| (x.0, x.1.block_exceeded)),
            Some((1001, true))
        );
    }

    #[test]
    fn errors() {
        assert!(parse_lfs_quota("").is_err());
        let e = parse_lfs_quota(
            "     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace\n/mnt x 0 0 - 1 0 0 -\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("\"x\""), "{e}");
        assert!(parse_lfs_quota("/only/a/name\n").is_err());
    }

    proptest! {
        #[test]
        fn never_panic(s in any::<String>()) {
            let _ = parse_lfs_quota(&s);
            let _ = parse_lfs_quota_all(&s);
        }

        #[test]
        fn never_panic_tokens(lines in proptest::collection::vec(
            proptest::collection::vec("(Filesystem|kbytes|files|quota|\\[?[0-9]{1,25}[kMGTP]?\\]?\\*?|-|1w|/mnt|,)", 0..12), 0..5)) {
            let text: String = lines.iter().map(|l| l.join(" ") + "\n").collect();
            let _ = parse_lfs_quota(&text);
            let _ = parse_lfs_quota_all(&text);
        }

        #[test]
        fn rendered_216_roundtrip(used in 0u64..1u64<<40, soft in 0u64..1u64<<40, hard in 0u64..1u64<<40,
                                   files in 0u64..1u64<<40, isoft in 0u64..1u64<<40, ihard in 0u64..1u64<<40) {
            let text = format!(
                "      Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace\n{:>16} {:>7}  {:>6} {:>7} {:>7} {:>7}  {:>6} {:>7} {:>7}\n",
                "/mnt/lustre", used, soft, hard, "-", files, isoft, ihard, "-");
            let r = parse_lfs_quota(&text).unwrap();
            prop_assert_eq!(r.usage.used_bytes, used * 1024);
            prop_assert_eq!(r.limits.block_soft_bytes, soft * 1024);
            prop_assert_eq!(r.limits.block_hard_bytes, hard * 1024);
            prop_assert_eq!(r.usage.inodes, files);
            prop_assert_eq!(r.limits.inode_soft, isoft);
            prop_assert_eq!(r.limits.inode_hard, ihard);
            prop_assert_eq!(r.block_exceeded, (hard > 0 && used >= hard) || (soft > 0 && used >= soft));
        }
    }
}
