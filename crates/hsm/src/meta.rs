//! POSIX metadata in object metadata: what we write, and every dialect we read.
//!
//! We write the AMLFS key names, so Azure Managed Lustre and azcopy's AMLFS style read our
//! objects: `permissions` (`%04o`, the sticky/setuid/setgid bits kept), `owner` and `group`
//! (decimal IDs), `modtime` (`YYYY-MM-DD HH:MM:SS +0000`), and `hdi_isfolder=true` on
//! directories. Our extras carry the `lustrekit_` prefix; names use only letters, digits and
//! `_` because Azure metadata names must be C# identifiers, and values are ASCII.
//!
//! We read, in order of preference (later wins where two say the same thing):
//! - legacy lemur: `Perm` (octal), `Uid`, `Gid`, `ModTime` (RFC 3339 or epoch seconds);
//! - FSx for Lustre: `file-permissions` (octal with type bits), `file-owner`, `file-group`,
//!   `file-mtime`/`file-atime` (`<ns>ns`);
//! - azcopy standard: `posix_owner`/`posix-owner`, `posix_group`, `permissions` in decimal
//!   st_mode, `modtime` in epoch ns, `posix_atime`, `posix_ctime`, `is_symlink`;
//! - AMLFS: `permissions` (octal with a leading 0), `owner`, `group`, `modtime` formatted;
//! - ours: `lustrekit_*`, most precise.
//!
//! Keys are matched case-insensitively (S3 lower-cases them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What kind of filesystem entry an object stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    #[default]
    File,
    Dir,
    Symlink,
}

/// The POSIX metadata of one archived entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FileMeta {
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub atime_ns: Option<i64>,
    pub ctime_ns: Option<i64>,
    /// Content size; for imports the object size is authoritative.
    pub size: Option<u64>,
    pub symlink_target: Option<String>,
    /// Extended attributes (name, value), our HSM record excluded.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// `blake3:<hex>` of the content.
    pub checksum: Option<String>,
    /// The data version the archive was taken at (`size:mtime_ns:ino:generation`).
    pub data_version: Option<String>,
}

/// Object metadata as a name → value map.
pub type MetaMap = BTreeMap<String, String>;

pub const K_PERMISSIONS: &str = "permissions";
pub const K_OWNER: &str = "owner";
pub const K_GROUP: &str = "group";
pub const K_MODTIME: &str = "modtime";
pub const K_ISFOLDER: &str = "hdi_isfolder";
pub const K_MTIME_NS: &str = "lustrekit_mtime_ns";
pub const K_ATIME_NS: &str = "lustrekit_atime_ns";
pub const K_CTIME_NS: &str = "lustrekit_ctime_ns";
pub const K_SYMLINK: &str = "lustrekit_symlink";
pub const K_XATTRS: &str = "lustrekit_xattrs";
pub const K_CHECKSUM: &str = "lustrekit_blake3";
pub const K_DV: &str = "lustrekit_data_version";
pub const K_SIZE: &str = "lustrekit_size";
pub const K_TYPE: &str = "lustrekit_type";

/// Stores that cap metadata (S3: 2 KiB in all) lose xattrs beyond this, with a warning.
pub const MAX_XATTR_META: usize = 1536;

fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS +0000` (AMLFS `modtime`), from epoch seconds, in UTC.
pub fn format_modtime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Parses `YYYY-MM-DD HH:MM:SS ±hhmm` and RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±hh:mm)`)
/// to epoch nanoseconds.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[10] != b' ' && b[10] != b'T' && b[10] != b't' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac_ns = 0i64;
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
        rest = &r[digits.len()..];
        let mut padded = digits.chars().take(9).collect::<String>();
        while padded.len() < 9 {
            padded.push('0');
        }
        frac_ns = padded.parse().ok()?;
    }
    let rest = rest.trim_start();
    let offset_secs = if rest.is_empty() || rest.eq_ignore_ascii_case("z") || rest == "UTC" {
        0
    } else {
        let sign = match rest.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let hh: i64 = digits[..2].parse().ok()?;
        let mm: i64 = digits[2..].parse().ok()?;
        sign * (hh * 3600 + mm * 60)
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// A time in any dialect: formatted date, epoch ns (`…ns` suffix allowed, or a large
/// number), or epoch seconds (a small number, possibly fractional).
fn parse_any_time(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Some(ns) = parse_datetime(v) {
        return Some(ns);
    }
    if let Some(n) = v.strip_suffix("ns") {
        return n.trim().parse().ok();
    }
    if let Ok(n) = v.parse::<i64>() {
        // Seconds until year 5138; anything larger is nanoseconds.
        return Some(if n.abs() < 100_000_000_000 {
            n * 1_000_000_000
        } else {
            n
        });
    }
    v.parse::<f64>().ok().map(|f| (f * 1e9) as i64)
}

fn parse_octal(v: &str) -> Option<u32> {
    let v = v.trim();
    let v = v.strip_prefix("0o").unwrap_or(v);
    u32::from_str_radix(v, 8).ok()
}

impl FileMeta {
    /// The object metadata for this entry. `native` stores get everything; xattrs that would
    /// push past [`MAX_XATTR_META`] are dropped (the caller reports it).
    pub fn to_map(&self) -> (MetaMap, bool) {
        let mut m = MetaMap::new();
        m.insert(K_PERMISSIONS.into(), format!("{:04o}", self.mode & 0o7777));
        m.insert(K_OWNER.into(), self.uid.to_string());
        m.insert(K_GROUP.into(), self.gid.to_string());
        m.insert(
            K_MODTIME.into(),
            format_modtime(self.mtime_ns.div_euclid(1_000_000_000)),
        );
        m.insert(K_MTIME_NS.into(), self.mtime_ns.to_string());
        if let Some(a) = self.atime_ns {
            m.insert(K_ATIME_NS.into(), a.to_string());
        }
        if let Some(c) = self.ctime_ns {
            m.insert(K_CTIME_NS.into(), c.to_string());
        }
        let kind = match self.kind {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
        };
        m.insert(K_TYPE.into(), kind.into());
        if self.kind == EntryKind::Dir {
            m.insert(K_ISFOLDER.into(), "true".into());
        }
        if let Some(t) = &self.symlink_target {
            m.insert(K_SYMLINK.into(), hex(t.as_bytes()));
        }
        if let Some(c) = &self.checksum {
            m.insert(K_CHECKSUM.into(), c.clone());
        }
        if let Some(dv) = &self.data_version {
            m.insert(K_DV.into(), dv.clone());
        }
        if let Some(s) = self.size {
            m.insert(K_SIZE.into(), s.to_string());
        }
        let mut dropped = false;
        if !self.xattrs.is_empty() {
            let list: Vec<(String, String)> = self
                .xattrs
                .iter()
                .map(|(k, v)| (k.clone(), hex(v)))
                .collect();
            let json = serde_json::to_string(&list).unwrap_or_default();
            let enc = hex(json.as_bytes());
            if enc.len() <= MAX_XATTR_META {
                m.insert(K_XATTRS.into(), enc);
            } else {
                dropped = true;
            }
        }
        (m, dropped)
    }

    /// Reads every dialect from object metadata. Missing fields get the defaults given
    /// (mode 0644 for files, 0755 for directories; the importer's uid/gid; the object's
    /// last-modified time).
    pub fn from_map(
        raw: &MetaMap,
        default_mtime_ns: i64,
        default_uid: u32,
        default_gid: u32,
    ) -> FileMeta {
        let m: BTreeMap<String, &str> = raw
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        let get = |k: &str| m.get(k).copied();
        let truthy = |k: &str| get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));

        let kind = if truthy(K_ISFOLDER) || get(K_TYPE) == Some("dir") {
            EntryKind::Dir
        } else if truthy("is_symlink") || get(K_TYPE) == Some("symlink") {
            EntryKind::Symlink
        } else {
            EntryKind::File
        };
        let mut meta = FileMeta {
            kind,
            mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
            uid: default_uid,
            gid: default_gid,
            mtime_ns: default_mtime_ns,
            ..FileMeta::default()
        };
        let id = |k: &str| get(k).and_then(|v| v.trim().parse::<u32>().ok());

        // lemur
        if let Some(p) = get("perm").and_then(parse_octal) {
            meta.mode = p & 0o7777;
        }
        if let Some(u) = id("uid") {
            meta.uid = u;
        }
        if let Some(g) = id("gid") {
            meta.gid = g;
        }
        // FSx
        if let Some(p) = get("file-permissions").and_then(parse_octal) {
            meta.mode = p & 0o7777;
        }
        if let Some(u) = id("file-owner") {
            meta.uid = u;
        }
        if let Some(g) = id("file-group") {
            meta.gid = g;
        }
        if let Some(t) = get("file-mtime").and_then(parse_any_time) {
            meta.mtime_ns = t;
        }
        if let Some(t) = get("file-atime").and_then(parse_any_time) {
            meta.atime_ns = Some(t);
        }
        // azcopy standard (both spellings seen in the wild)
        for k in ["posix_owner", "posix-owner"] {
            if let Some(u) = id(k) {
                meta.uid = u;
            }
        }
        for k in ["posix_group", "posix-group"] {
            if let Some(g) = id(k) {
                meta.gid = g;
            }
        }
        for k in ["posix_atime", "posix-atime"] {
            if let Some(t) = get(k).and_then(parse_any_time) {
                meta.atime_ns = Some(t);
            }
        }
        for k in ["posix_ctime", "posix-ctime"] {
            if let Some(t) = get(k).and_then(parse_any_time) {
                meta.ctime_ns = Some(t);
            }
        }
        // AMLFS (and azcopy's `permissions`: octal when it has a leading 0 or AMLFS
        // owner/group keys are present, else decimal st_mode)
        if let Some(u) = id(K_OWNER) {
            meta.uid = u;
        }
        if let Some(g) = id(K_GROUP) {
            meta.gid = g;
        }
        if let Some(p) = get(K_PERMISSIONS) {
            let p = p.trim();
            let amlfs = p.starts_with('0') || get(K_OWNER).is_some() || get(K_GROUP).is_some();
            let parsed = if amlfs {
                parse_octal(p)
            } else {
                p.parse::<u32>().ok()
            };
            if let Some(p) = parsed {
                meta.mode = p & 0o7777;
            }
        }
        // `modtime` (AMLFS formatted, azcopy ns) and lemur `ModTime` share a lower-case key.
        if let Some(t) = get(K_MODTIME).and_then(parse_any_time) {
            meta.mtime_ns = t;
        }
        // ours
        if let Some(t) = get(K_MTIME_NS).and_then(|v| v.parse().ok()) {
            meta.mtime_ns = t;
        }
        if let Some(t) = get(K_ATIME_NS).and_then(|v| v.parse().ok()) {
            meta.atime_ns = Some(t);
        }
        if let Some(t) = get(K_CTIME_NS).and_then(|v| v.parse().ok()) {
            meta.ctime_ns = Some(t);
        }
        meta.symlink_target = get(K_SYMLINK)
            .and_then(unhex)
            .and_then(|b| String::from_utf8(b).ok());
        if meta.symlink_target.is_some() {
            meta.kind = EntryKind::Symlink;
        }
        meta.checksum = get(K_CHECKSUM).map(str::to_owned);
        meta.data_version = get(K_DV).map(str::to_owned);
        meta.size = get(K_SIZE).and_then(|v| v.parse().ok());
        if let Some(x) = get(K_XATTRS)
            .and_then(unhex)
            .and_then(|j| serde_json::from_slice::<Vec<(String, String)>>(&j).ok())
        {
            meta.xattrs = x
                .into_iter()
                .filter_map(|(k, v)| Some((k, unhex(&v)?)))
                .collect();
        }
        meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> MetaMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn modtime_round_trips_and_matches_amlfs_layout() {
        assert_eq!(format_modtime(0), "1970-01-01 00:00:00 +0000");
        assert_eq!(format_modtime(1_700_000_000), "2023-11-14 22:13:20 +0000");
        assert_eq!(
            parse_datetime("2023-11-14 22:13:20 +0000"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_datetime("2023-11-14 23:13:20 +0100"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_datetime("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500_000_000)
        );
        for s in [-86_401i64, 951_782_400, 4_102_444_800] {
            assert_eq!(parse_datetime(&format_modtime(s)), Some(s * 1_000_000_000));
        }
        assert_eq!(parse_datetime("garbage"), None);
        assert_eq!(parse_datetime("2023-13-14 22:13:20 +0000"), None);
    }

    #[test]
    fn writes_amlfs_keys_with_sticky_bit() {
        let meta = FileMeta {
            mode: 0o1777,
            uid: 1000,
            gid: 2000,
            mtime_ns: 1_700_000_000_123_456_789,
            kind: EntryKind::Dir,
            ..Default::default()
        };
        let (m, dropped) = meta.to_map();
        assert!(!dropped);
        assert_eq!(m["permissions"], "1777");
        assert_eq!(m["owner"], "1000");
        assert_eq!(m["group"], "2000");
        assert_eq!(m["modtime"], "2023-11-14 22:13:20 +0000");
        assert_eq!(m["hdi_isfolder"], "true");
        let back = FileMeta::from_map(&m, 0, 0, 0);
        assert_eq!(back.mode, 0o1777);
        assert_eq!(back.mtime_ns, 1_700_000_000_123_456_789);
        assert_eq!(back.kind, EntryKind::Dir);
    }

    #[test]
    fn round_trips_extras() {
        let meta = FileMeta {
            kind: EntryKind::Symlink,
            mode: 0o777,
            uid: 1,
            gid: 2,
            mtime_ns: 5,
            atime_ns: Some(6),
            ctime_ns: Some(7),
            size: Some(9),
            symlink_target: Some("../some where/ü".into()),
            xattrs: vec![("user.a".into(), vec![0, 1, 255])],
            checksum: Some("blake3:00".into()),
            data_version: Some("9:5:1:0".into()),
        };
        let (m, _) = meta.to_map();
        assert!(m.values().all(|v| v.is_ascii() && !v.contains('\n')));
        assert!(
            m.keys()
                .all(|k| k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'))
        );
        assert_eq!(FileMeta::from_map(&m, 0, 0, 0), meta);
    }

    #[test]
    fn reads_lemur() {
        let m = map(&[
            ("Perm", "755"),
            ("Uid", "10"),
            ("Gid", "20"),
            ("ModTime", "2023-11-14T22:13:20Z"),
        ]);
        let f = FileMeta::from_map(&m, 0, 0, 0);
        assert_eq!((f.mode, f.uid, f.gid), (0o755, 10, 20));
        assert_eq!(f.mtime_ns, 1_700_000_000_000_000_000);
    }

    #[test]
    fn reads_azcopy_standard() {
        let m = map(&[
            ("posix_owner", "11"),
            ("posix_group", "22"),
            ("permissions", &(0o100640u32).to_string()),
            ("modtime", "1700000000000000001"),
            ("posix_atime", "1700000000000000002"),
            ("is_symlink", "true"),
        ]);
        let f = FileMeta::from_map(&m, 0, 0, 0);
        assert_eq!((f.mode, f.uid, f.gid), (0o640, 11, 22));
        assert_eq!(f.mtime_ns, 1_700_000_000_000_000_001);
        assert_eq!(f.atime_ns, Some(1_700_000_000_000_000_002));
        assert_eq!(f.kind, EntryKind::Symlink);
    }

    #[test]
    fn reads_fsx() {
        let m = map(&[
            ("file-permissions", "0100664"),
            ("file-owner", "3"),
            ("file-group", "4"),
            ("file-mtime", "1700000000000000000ns"),
        ]);
        let f = FileMeta::from_map(&m, 0, 0, 0);
        assert_eq!((f.mode, f.uid, f.gid), (0o664, 3, 4));
        assert_eq!(f.mtime_ns, 1_700_000_000_000_000_000);
    }

    #[test]
    fn reads_amlfs_case_insensitively() {
        let m = map(&[
            ("Permissions", "0750"),
            ("OWNER", "5"),
            ("group", "6"),
            ("modtime", "2023-11-14 22:13:20 -0000"),
        ]);
        let f = FileMeta::from_map(&m, 0, 0, 0);
        assert_eq!((f.mode, f.uid, f.gid), (0o750, 5, 6));
        assert_eq!(f.mtime_ns, 1_700_000_000_000_000_000);
    }

    #[test]
    fn defaults_without_metadata() {
        let f = FileMeta::from_map(&MetaMap::new(), 42, 7, 8);
        assert_eq!((f.mode, f.uid, f.gid, f.mtime_ns), (0o644, 7, 8, 42));
        assert_eq!(f.kind, EntryKind::File);
        let bad = map(&[("permissions", "zz"), ("owner", "-1"), ("modtime", "never")]);
        let f = FileMeta::from_map(&bad, 42, 7, 8);
        assert_eq!((f.mode, f.uid, f.gid, f.mtime_ns), (0o644, 7, 8, 42));
    }

    #[test]
    fn big_xattrs_are_dropped_not_fatal() {
        let meta = FileMeta {
            xattrs: vec![("user.big".into(), vec![1; 4096])],
            ..Default::default()
        };
        let (m, dropped) = meta.to_map();
        assert!(dropped);
        assert!(!m.contains_key(K_XATTRS));
    }
}
