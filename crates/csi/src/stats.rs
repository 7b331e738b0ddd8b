//! NodeGetVolumeStats in CSI terms, decided without I/O: usage from the volume's project
//! quota (or its filesystem's `statfs` where it has none we know of), whether the volume is
//! full, and what `df` in a pod shows.
//!
//! - Inodes are reported only where they mean something: the inode limit and the project's
//!   usage; with no limit, the project's usage against the filesystem's free inodes; and no
//!   INODES entry at all on a filesystem without inode counts (btrfs `statfs` reports 0 and 0,
//!   which would read as "full"), so the kubelet reports no inode figures for the volume.
//! - A volume is abnormal as soon as one more write of one filesystem block would exceed its
//!   quota: the block, plus what the backend's quota reserves per write (a btrfs metadata
//!   node), plus an optional operator margin. Writes fail with EDQUOT a little *under* the
//!   limit on btrfs, so "usage at the limit" would never fire.

use std::fmt;
use std::str::FromStr;

use backend::VolumeStatfs;
use lustre_model::ByteSize;

use crate::capacity::to_i64;
use crate::grpc::{VolumeUsage, volume_usage};

/// What `statvfs` of the volume path returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    /// The fundamental block size (`f_frsize`): the smallest write the quota charges.
    pub block_size: u64,
}

/// A volume's project quota as the share service reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaFigures {
    pub project: u32,
    pub used_bytes: u64,
    /// 0: no byte limit.
    pub limit_bytes: u64,
    pub used_inodes: u64,
    pub inode_limit: Option<u64>,
    /// The backend says usage is at or over a limit.
    pub bytes_exceeded: bool,
    pub inodes_exceeded: bool,
    /// Whether the backend refuses new inodes past the limit, or only counts them.
    pub inodes_enforced: bool,
}

/// How close to the quota a volume may get before it counts as full, beyond one write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QuotaMargin {
    /// One write of one block (and the backend's reserve) must still fit.
    #[default]
    OneWrite,
    /// This many more bytes must fit, too.
    Bytes(u64),
    /// This share of the limit (of bytes and of inodes) must be free, too; 0–100.
    Percent(u8),
}

impl QuotaMargin {
    fn bytes(self, limit: u64) -> u64 {
        match self {
            QuotaMargin::OneWrite => 0,
            QuotaMargin::Bytes(n) => n,
            QuotaMargin::Percent(p) => percent_of(limit, p),
        }
    }

    fn inodes(self, limit: u64) -> u64 {
        match self {
            QuotaMargin::Percent(p) => percent_of(limit, p),
            _ => 0,
        }
    }
}

fn percent_of(n: u64, p: u8) -> u64 {
    u64::try_from(u128::from(n) * u128::from(p) / 100).unwrap_or(u64::MAX)
}

impl FromStr for QuotaMargin {
    type Err = String;
    /// `0` (one write), a size (`1MiB`, `512k`), or a percentage (`5%`).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(p) = text.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(if p == 0 {
                    QuotaMargin::OneWrite
                } else {
                    QuotaMargin::Percent(p)
                }),
                _ => Err(format!(
                    "quota margin {text:?}: a percentage must be a whole number from 0 to 100"
                )),
            };
        }
        let size: ByteSize = text
            .parse()
            .map_err(|e| format!("quota margin {text:?}: {e}"))?;
        Ok(match size.bytes() {
            0 => QuotaMargin::OneWrite,
            n => QuotaMargin::Bytes(n),
        })
    }
}

impl fmt::Display for QuotaMargin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaMargin::OneWrite => f.write_str("0"),
            QuotaMargin::Bytes(n) => write!(f, "{}", ByteSize(*n)),
            QuotaMargin::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// What NodeGetVolumeStats answers.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeStats {
    pub usage: Vec<VolumeUsage>,
    /// Why the volume is abnormal; `None` when healthy.
    pub abnormal: Option<String>,
    /// The condition's message: the reason when abnormal, otherwise `ok` and, where `df` in
    /// a pod does not show the quota, why.
    pub message: String,
}

fn usage(unit: volume_usage::Unit, total: u64, used: u64, available: u64) -> VolumeUsage {
    VolumeUsage {
        available: to_i64(available),
        total: to_i64(total),
        used: to_i64(used),
        unit: unit as i32,
    }
}

/// The INODES entry for `used` inodes against the filesystem's free ones; none when the
/// filesystem keeps no inode counts.
fn fs_inodes(fs: &FsStats, used: u64) -> Option<VolumeUsage> {
    (fs.total_inodes > 0).then(|| {
        usage(
            volume_usage::Unit::Inodes,
            used.saturating_add(fs.free_inodes),
            used,
            fs.free_inodes,
        )
    })
}

/// Stats of a volume with no quota we know of: its filesystem's figures.
pub fn filesystem_stats(fs: &FsStats, abnormal: Option<String>) -> VolumeStats {
    let bytes = usage(
        volume_usage::Unit::Bytes,
        fs.total_bytes,
        fs.used_bytes,
        fs.available_bytes,
    );
    let used_inodes = fs.total_inodes.saturating_sub(fs.free_inodes);
    let inodes = (fs.total_inodes > 0).then(|| {
        usage(
            volume_usage::Unit::Inodes,
            fs.total_inodes,
            used_inodes,
            fs.free_inodes,
        )
    });
    finish(bytes, inodes, abnormal, None)
}

/// Stats of a block volume: `size` bytes, of which its image has `allocated` (when known).
/// Bytes only: the inodes are the pod's filesystem's, inside the device.
pub fn device_stats(size: u64, allocated: Option<u64>, abnormal: Option<String>) -> VolumeStats {
    let used = allocated.unwrap_or(0).min(size);
    let bytes = usage(volume_usage::Unit::Bytes, size, used, size - used);
    let note = allocated.map(|a| {
        format!(
            "a block device of {}; used is what its image has allocated ({})",
            ByteSize(size),
            ByteSize(a)
        )
    });
    finish(bytes, None, abnormal, note)
}

/// Stats of a volume with a project quota.
pub fn quota_stats(
    fs: &FsStats,
    quota: &QuotaFigures,
    write_reserve: u64,
    margin: QuotaMargin,
    statfs: &VolumeStatfs,
) -> VolumeStats {
    let bytes = if quota.limit_bytes > 0 {
        usage(
            volume_usage::Unit::Bytes,
            quota.limit_bytes,
            quota.used_bytes,
            quota.limit_bytes.saturating_sub(quota.used_bytes),
        )
    } else {
        usage(
            volume_usage::Unit::Bytes,
            fs.total_bytes,
            quota.used_bytes,
            fs.available_bytes,
        )
    };
    let inodes = match quota.inode_limit.filter(|l| *l > 0) {
        Some(limit) => Some(usage(
            volume_usage::Unit::Inodes,
            limit,
            quota.used_inodes,
            limit.saturating_sub(quota.used_inodes),
        )),
        None => fs_inodes(fs, quota.used_inodes),
    };
    let reasons: Vec<String> = [
        bytes_full(fs, quota, write_reserve, margin),
        inodes_full(quota, margin),
    ]
    .into_iter()
    .flatten()
    .collect();
    let abnormal = (!reasons.is_empty()).then(|| reasons.join("; "));
    let df_note = match statfs {
        VolumeStatfs::ProjectQuota => None,
        VolumeStatfs::Filesystem { why } if quota.limit_bytes > 0 => Some(format!(
            "df in a pod shows the filesystem, not the {} quota: {why}",
            ByteSize(quota.limit_bytes)
        )),
        VolumeStatfs::Filesystem { .. } => None,
    };
    finish(bytes, inodes, abnormal, df_note)
}

fn finish(
    bytes: VolumeUsage,
    inodes: Option<VolumeUsage>,
    abnormal: Option<String>,
    df_note: Option<String>,
) -> VolumeStats {
    let message = match (&abnormal, df_note) {
        (Some(reason), _) => reason.clone(),
        (None, Some(note)) => format!("ok; {note}"),
        (None, None) => "ok".to_owned(),
    };
    VolumeStats {
        usage: std::iter::once(bytes).chain(inodes).collect(),
        abnormal,
        message,
    }
}

/// Why the byte quota is full: one more block (and the backend's per-write reserve, and the
/// margin) would not fit.
fn bytes_full(
    fs: &FsStats,
    quota: &QuotaFigures,
    write_reserve: u64,
    margin: QuotaMargin,
) -> Option<String> {
    let limit = quota.limit_bytes;
    if limit == 0 {
        return None;
    }
    let used = quota.used_bytes;
    let left = limit.saturating_sub(used);
    let margin_bytes = margin.bytes(limit);
    let needed = fs
        .block_size
        .max(1)
        .saturating_add(write_reserve)
        .saturating_add(margin_bytes);
    if !quota.bytes_exceeded && left >= needed {
        return None;
    }
    let mut why = format!(
        "project {} byte quota {} is full: {used} bytes used, {left} left",
        quota.project,
        ByteSize(limit)
    );
    if quota.bytes_exceeded || used >= limit {
        why.push_str(" (at or over the limit)");
    } else {
        why.push_str(&format!(
            ", less than one write needs ({}-byte block",
            fs.block_size.max(1)
        ));
        if write_reserve > 0 {
            why.push_str(&format!(
                " + {write_reserve} bytes the quota reserves per write"
            ));
        }
        if margin_bytes > 0 {
            why.push_str(&format!(" + the {margin} margin"));
        }
        why.push(')');
    }
    why.push_str("; writes fail with EDQUOT");
    Some(why)
}

/// Why the inode quota is full: one more file would not fit (within the margin).
fn inodes_full(quota: &QuotaFigures, margin: QuotaMargin) -> Option<String> {
    let limit = quota.inode_limit.filter(|l| *l > 0)?;
    let used = quota.used_inodes;
    let left = limit.saturating_sub(used);
    let margin_inodes = margin.inodes(limit);
    if !quota.inodes_exceeded && left > margin_inodes {
        return None;
    }
    let consequence = if quota.inodes_enforced {
        "creating a file fails with EDQUOT"
    } else {
        "this backend counts inodes but does not refuse new ones"
    };
    let within = if margin_inodes > 0 && left > 0 {
        format!(" (within the {margin} margin)")
    } else {
        String::new()
    };
    Some(format!(
        "project {} inode quota {limit} is full: {used} inodes used{within}; {consequence}",
        quota.project
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_device_is_its_size_and_never_full() {
        let full = device_stats(64 << 20, Some(65 << 20), None);
        assert_eq!(full.usage.len(), 1, "bytes only");
        assert_eq!(full.usage[0].total, 64 << 20);
        assert_eq!(full.usage[0].used, 64 << 20);
        assert_eq!(full.usage[0].available, 0);
        assert!(
            full.abnormal.is_none(),
            "a written device is not a full volume"
        );
        assert!(
            full.message.starts_with("ok; a block device"),
            "{}",
            full.message
        );
        let unknown = device_stats(1 << 20, None, None);
        assert_eq!((unknown.usage[0].used, unknown.message.as_str()), (0, "ok"));
        let gone = device_stats(1 << 20, None, Some("share \"x\" is missing".into()));
        assert!(gone.abnormal.is_some() && gone.message.contains("missing"));
    }

    const MIB: u64 = 1 << 20;

    fn btrfs() -> FsStats {
        FsStats {
            total_bytes: 1 << 30,
            available_bytes: 900 * MIB,
            used_bytes: 124 * MIB,
            total_inodes: 0,
            free_inodes: 0,
            block_size: 4096,
        }
    }

    fn quota(used: u64) -> QuotaFigures {
        QuotaFigures {
            project: 5001,
            used_bytes: used,
            limit_bytes: 10 * MIB,
            ..Default::default()
        }
    }

    fn on_btrfs() -> VolumeStatfs {
        VolumeStatfs::Filesystem {
            why: "btrfs".into(),
        }
    }

    fn unit(stats: &VolumeStats, unit: volume_usage::Unit) -> Option<&VolumeUsage> {
        stats.usage.iter().find(|u| u.unit == unit as i32)
    }

    #[test]
    fn no_inode_entry_without_a_limit_on_a_filesystem_without_inode_counts() {
        let stats = quota_stats(
            &btrfs(),
            &quota(MIB),
            16384,
            QuotaMargin::OneWrite,
            &on_btrfs(),
        );
        assert!(unit(&stats, volume_usage::Unit::Inodes).is_none());
        let bytes = unit(&stats, volume_usage::Unit::Bytes).unwrap();
        assert_eq!((bytes.total, bytes.used), ((10 * MIB) as i64, MIB as i64));
        assert!(stats.abnormal.is_none());
        assert!(
            stats
                .message
                .starts_with("ok; df in a pod shows the filesystem, not the 10MiB quota")
        );

        let bare = filesystem_stats(&btrfs(), None);
        assert!(unit(&bare, volume_usage::Unit::Inodes).is_none());
        assert_eq!(bare.message, "ok");
    }

    #[test]
    fn inode_limit_is_reported_and_fills() {
        let mut q = quota(MIB);
        q.inode_limit = Some(3);
        q.used_inodes = 2;
        let stats = quota_stats(
            &btrfs(),
            &q,
            0,
            QuotaMargin::OneWrite,
            &VolumeStatfs::ProjectQuota,
        );
        let inodes = unit(&stats, volume_usage::Unit::Inodes).unwrap();
        assert_eq!((inodes.total, inodes.used, inodes.available), (3, 2, 1));
        assert_eq!(stats.message, "ok");
        q.used_inodes = 3;
        let stats = quota_stats(
            &btrfs(),
            &q,
            0,
            QuotaMargin::OneWrite,
            &VolumeStatfs::ProjectQuota,
        );
        let why = stats.abnormal.unwrap();
        assert!(
            why.contains("inode quota 3 is full: 3 inodes used"),
            "{why}"
        );
        assert!(why.contains("does not refuse"), "{why}");
        q.inodes_enforced = true;
        q.used_inodes = 1;
        // 2 of 3 free, but a 70% margin wants 2 (70% of 3, rounded down) to be left over.
        let stats = quota_stats(
            &btrfs(),
            &q,
            0,
            QuotaMargin::Percent(70),
            &VolumeStatfs::ProjectQuota,
        );
        assert!(stats.abnormal.unwrap().contains("EDQUOT"));
    }

    #[test]
    fn no_limit_uses_the_filesystems_free_inodes() {
        let fs = FsStats {
            total_inodes: 1000,
            free_inodes: 900,
            ..btrfs()
        };
        let mut q = quota(MIB);
        q.used_inodes = 7;
        let stats = quota_stats(
            &fs,
            &q,
            0,
            QuotaMargin::OneWrite,
            &VolumeStatfs::ProjectQuota,
        );
        let inodes = unit(&stats, volume_usage::Unit::Inodes).unwrap();
        assert_eq!((inodes.total, inodes.used, inodes.available), (907, 7, 900));
        let bare = filesystem_stats(&fs, None);
        let inodes = unit(&bare, volume_usage::Unit::Inodes).unwrap();
        assert_eq!(
            (inodes.total, inodes.used, inodes.available),
            (1000, 100, 900)
        );
    }

    #[test]
    fn full_when_one_block_and_the_reserve_no_longer_fit() {
        // Measured on btrfs: EDQUOT with 16 KiB left under a 10 MiB qgroup (16 KiB nodes).
        let limit = 10 * MIB;
        for (left, full) in [
            (16384, true),
            (4096 + 16384 - 1, true),
            (4096 + 16384, false),
            (MIB, false),
            (0, true),
        ] {
            let stats = quota_stats(
                &btrfs(),
                &quota(limit - left),
                16384,
                QuotaMargin::OneWrite,
                &on_btrfs(),
            );
            assert_eq!(stats.abnormal.is_some(), full, "{left} left: {stats:?}");
            if full {
                assert_eq!(stats.message, stats.abnormal.clone().unwrap());
                assert!(
                    stats
                        .message
                        .contains("project 5001 byte quota 10MiB is full")
                );
                assert!(stats.message.contains("EDQUOT"));
            }
        }
        // Over the limit (an accounted-only backend lets writes through).
        let stats = quota_stats(
            &btrfs(),
            &quota(11 * MIB),
            0,
            QuotaMargin::OneWrite,
            &on_btrfs(),
        );
        assert!(
            stats.message.contains("at or over the limit"),
            "{}",
            stats.message
        );
        let bytes = unit(&stats, volume_usage::Unit::Bytes).unwrap();
        assert_eq!(bytes.available, 0);
    }

    #[test]
    fn margins_widen_the_full_zone() {
        let q = quota(9 * MIB);
        let ok = quota_stats(&btrfs(), &q, 16384, QuotaMargin::OneWrite, &on_btrfs());
        assert!(ok.abnormal.is_none());
        let pct = quota_stats(&btrfs(), &q, 16384, QuotaMargin::Percent(10), &on_btrfs());
        assert!(pct.abnormal.unwrap().contains("the 10% margin"));
        let bytes = quota_stats(&btrfs(), &q, 0, QuotaMargin::Bytes(MIB), &on_btrfs());
        assert!(bytes.abnormal.unwrap().contains("the 1MiB margin"));
    }

    #[test]
    fn margins_parse() {
        assert_eq!("0".parse::<QuotaMargin>().unwrap(), QuotaMargin::OneWrite);
        assert_eq!("0%".parse::<QuotaMargin>().unwrap(), QuotaMargin::OneWrite);
        assert_eq!(
            "5%".parse::<QuotaMargin>().unwrap(),
            QuotaMargin::Percent(5)
        );
        assert_eq!(
            "1MiB".parse::<QuotaMargin>().unwrap(),
            QuotaMargin::Bytes(MIB)
        );
        for bad in ["101%", "-1%", "x%", "five", "", "-3"] {
            assert!(bad.parse::<QuotaMargin>().is_err(), "{bad}");
        }
        for m in [
            QuotaMargin::OneWrite,
            QuotaMargin::Percent(7),
            QuotaMargin::Bytes(MIB),
        ] {
            assert_eq!(m.to_string().parse::<QuotaMargin>().unwrap(), m);
        }
    }

    #[test]
    fn statfs_of_the_quota_needs_no_note() {
        let stats = quota_stats(
            &btrfs(),
            &quota(MIB),
            0,
            QuotaMargin::OneWrite,
            &VolumeStatfs::ProjectQuota,
        );
        assert_eq!(stats.message, "ok");
    }
}
