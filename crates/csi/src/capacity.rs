//! Capacity ranges from CreateVolume and ControllerExpandVolume, turned into a quota size.
//!
//! Sizes are rounded up to whole MiB (the quota granularity we promise; Lustre itself counts
//! block limits in KiB). When the MiB rounding would exceed `limit_bytes`, KiB is used; when
//! even that does not fit, the range cannot be met and the answer is OUT_OF_RANGE.

use crate::error::{CsiError, Result};
use crate::grpc::CapacityRange;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
/// The quota granularity: sizes are rounded up to this.
pub const GRANULARITY: u64 = MIB;
/// The size of a volume whose request names no capacity.
pub const DEFAULT_SIZE: u64 = 1 << 30;

fn round_up(n: u64, to: u64) -> Option<u64> {
    n.checked_add(to - 1).map(|v| v / to * to)
}

/// The validated range: `(required, limit)`, with 0 meaning "not set".
pub fn validate(range: &CapacityRange) -> Result<(u64, u64)> {
    let CapacityRange {
        required_bytes,
        limit_bytes,
    } = *range;
    if required_bytes < 0 || limit_bytes < 0 {
        return Err(CsiError::invalid(format!(
            "capacity_range must not be negative (required_bytes {required_bytes}, limit_bytes {limit_bytes})"
        )));
    }
    if limit_bytes > 0 && limit_bytes < required_bytes {
        return Err(CsiError::invalid(format!(
            "capacity_range limit_bytes {limit_bytes} is less than required_bytes {required_bytes}"
        )));
    }
    Ok((required_bytes as u64, limit_bytes as u64))
}

/// The quota size for a new volume.
pub fn size_for(range: Option<&CapacityRange>) -> Result<u64> {
    let (required, limit) = match range {
        Some(r) => validate(r)?,
        None => (0, 0),
    };
    let wanted = match (required, limit) {
        (0, 0) => DEFAULT_SIZE,
        (0, limit) => DEFAULT_SIZE.min(limit),
        (required, _) => required,
    };
    fit(wanted, limit)
}

/// Rounds `wanted` up to the granularity (or KiB) within `limit` (0 = none).
pub fn fit(wanted: u64, limit: u64) -> Result<u64> {
    let max = if limit == 0 { i64::MAX as u64 } else { limit };
    for step in [GRANULARITY, KIB] {
        if let Some(size) = round_up(wanted, step)
            && size <= max
        {
            return Ok(size);
        }
    }
    Err(CsiError::OutOfRange(format!(
        "no size of whole KiB between {wanted} and {max} bytes"
    )))
}

/// Bytes as the int64 the spec uses.
pub fn to_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> CapacityRange {
        CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }
    }

    #[test]
    fn sizes_round_up_within_limits() {
        assert_eq!(size_for(None).unwrap(), DEFAULT_SIZE);
        assert_eq!(size_for(Some(&range(0, 0))).unwrap(), DEFAULT_SIZE);
        assert_eq!(size_for(Some(&range(1, 0))).unwrap(), MIB);
        assert_eq!(size_for(Some(&range(10 << 30, 0))).unwrap(), 10 << 30);
        assert_eq!(size_for(Some(&range(MIB as i64 + 1, 0))).unwrap(), 2 * MIB);
        // The MiB rounding would pass the limit: KiB is used.
        assert_eq!(size_for(Some(&range(1000, 2048))).unwrap(), 1024);
        assert_eq!(size_for(Some(&range(0, 5 * MIB as i64))).unwrap(), 5 * MIB);
        // Exactly the limit.
        assert_eq!(size_for(Some(&range(4096, 4096))).unwrap(), 4096);
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert_eq!(
            size_for(Some(&range(-1, 0))).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            size_for(Some(&range(0, -1))).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            size_for(Some(&range(10, 5))).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // No whole KiB fits between 1000 and 1001 bytes.
        assert_eq!(
            size_for(Some(&range(1000, 1001))).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
        // Rounding near the top of int64 overflows the spec's int64.
        assert_eq!(
            size_for(Some(&range(i64::MAX, 0))).unwrap_err().code(),
            tonic::Code::OutOfRange
        );
    }
}
