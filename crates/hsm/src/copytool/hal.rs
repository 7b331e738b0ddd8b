//! `struct hsm_action_list` and `struct hsm_action_item` from bytes, with bounds checks.
//!
//! Layout (`lustre/include/uapi/linux/lustre/lustre_user.h`, packed, little-endian on the
//! platforms Lustre runs on; read here in native order, as liblustreapi hands them over):
//!
//! ```text
//! struct hsm_action_list {            // 32 bytes, then the fsname
//!     __u32 hal_version;              // HAL_VERSION = 1
//!     __u32 hal_count;                // items that follow
//!     __u64 hal_compound_id;
//!     __u64 hal_flags;
//!     __u32 hal_archive_id;
//!     __u32 padding1;
//!     char  hal_fsname[0];            // NUL-terminated
//! };                                  // first item at 32 + align8(strlen(fsname) + 1)
//! struct hsm_action_item {            // 72 bytes, then hai_data
//!     __u32 hai_len;                  // this item's size, data included
//!     __u32 hai_action;               // HSMA_ARCHIVE = 20, RESTORE 21, REMOVE 22, CANCEL 23
//!     struct lu_fid hai_fid;          // { __u64 f_seq; __u32 f_oid; __u32 f_ver; }
//!     struct lu_fid hai_dfid;
//!     struct hsm_extent hai_extent;   // { __u64 offset; __u64 length; }
//!     __u64 hai_cookie;
//!     __u64 hai_gid;
//!     char  hai_data[0];
//! };                                  // next item at align8(hai_len)
//! ```
//!
//! Nothing here panics on any input: every read is checked, lengths are bounded by the
//! buffer, and a malformed list is an error naming the item.

use serde::Serialize;

pub const HAL_VERSION: u32 = 1;
pub const HAL_HEADER_LEN: usize = 32;
pub const HAI_HEADER_LEN: usize = 72;

/// A Lustre file identifier (one type for the whole workspace).
pub use lustre_model::Fid;

/// `enum hsm_copytool_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    None,
    Archive,
    Restore,
    Remove,
    Cancel,
    Unknown(u32),
}

impl Action {
    pub fn from_raw(v: u32) -> Self {
        match v {
            10 => Self::None,
            20 => Self::Archive,
            21 => Self::Restore,
            22 => Self::Remove,
            23 => Self::Cancel,
            other => Self::Unknown(other),
        }
    }

    pub fn raw(self) -> u32 {
        match self {
            Self::None => 10,
            Self::Archive => 20,
            Self::Restore => 21,
            Self::Remove => 22,
            Self::Cancel => 23,
            Self::Unknown(v) => v,
        }
    }
}

/// One action item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionItem {
    pub action: Action,
    pub fid: Fid,
    pub dfid: Fid,
    pub offset: u64,
    pub length: u64,
    pub cookie: u64,
    pub gid: u64,
    pub data: Vec<u8>,
    /// Where this item starts in the list's buffer (for `llapi_hsm_action_begin`).
    #[serde(skip)]
    pub at: usize,
}

/// A whole action list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionList {
    pub version: u32,
    pub compound_id: u64,
    pub flags: u64,
    pub archive_id: u32,
    pub fsname: String,
    pub items: Vec<ActionItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HalError {
    #[error("action list: {0} bytes is shorter than its 32-byte header")]
    Short(usize),
    #[error("action list: version {0}, expected {HAL_VERSION}")]
    Version(u32),
    #[error("action list: the fsname is not NUL-terminated within the buffer")]
    Fsname,
    #[error("action list: {count} items cannot fit in {len} bytes")]
    Count { count: u32, len: usize },
    #[error(
        "action item {index}: truncated (needs {need} bytes at offset {at}, the list has {len})"
    )]
    Truncated {
        index: usize,
        at: usize,
        need: usize,
        len: usize,
    },
    #[error("action item {index}: hai_len {hai_len} is below the 72-byte header")]
    ItemLen { index: usize, hai_len: u32 },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn fid_at(b: &[u8], at: usize) -> Option<Fid> {
    Some(Fid {
        seq: u64_at(b, at)?,
        oid: u32_at(b, at + 8)?,
        ver: u32_at(b, at + 12)?,
    })
}

fn align8(n: usize) -> Option<usize> {
    n.checked_add(7).map(|v| v & !7)
}

/// Parses an action list.
pub fn parse(buf: &[u8]) -> Result<ActionList, HalError> {
    let len = buf.len();
    if len < HAL_HEADER_LEN {
        return Err(HalError::Short(len));
    }
    let short = || HalError::Short(len);
    let version = u32_at(buf, 0).ok_or_else(short)?;
    if version != HAL_VERSION {
        return Err(HalError::Version(version));
    }
    let count = u32_at(buf, 4).ok_or_else(short)?;
    let compound_id = u64_at(buf, 8).ok_or_else(short)?;
    let flags = u64_at(buf, 16).ok_or_else(short)?;
    let archive_id = u32_at(buf, 24).ok_or_else(short)?;
    let name_bytes = &buf[HAL_HEADER_LEN..];
    let nul = name_bytes
        .iter()
        .position(|b| *b == 0)
        .ok_or(HalError::Fsname)?;
    let fsname = String::from_utf8_lossy(&name_bytes[..nul]).into_owned();
    let mut at = HAL_HEADER_LEN
        .checked_add(align8(nul + 1).ok_or(HalError::Fsname)?)
        .ok_or(HalError::Fsname)?;
    // Each item takes at least its header: a count the buffer cannot hold is refused
    // before anything is allocated for it.
    if (count as usize).saturating_mul(HAI_HEADER_LEN) > len.saturating_sub(at.min(len)) {
        return Err(HalError::Count { count, len });
    }
    let mut items = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let trunc = |need: usize| HalError::Truncated {
            index,
            at,
            need,
            len,
        };
        if at.checked_add(HAI_HEADER_LEN).is_none_or(|end| end > len) {
            return Err(trunc(HAI_HEADER_LEN));
        }
        let hai_len = u32_at(buf, at).ok_or_else(|| trunc(4))?;
        if (hai_len as usize) < HAI_HEADER_LEN {
            return Err(HalError::ItemLen { index, hai_len });
        }
        let end = at
            .checked_add(hai_len as usize)
            .filter(|e| *e <= len)
            .ok_or_else(|| trunc(hai_len as usize))?;
        let item = (|| {
            Some(ActionItem {
                action: Action::from_raw(u32_at(buf, at + 4)?),
                fid: fid_at(buf, at + 8)?,
                dfid: fid_at(buf, at + 24)?,
                offset: u64_at(buf, at + 40)?,
                length: u64_at(buf, at + 48)?,
                cookie: u64_at(buf, at + 56)?,
                gid: u64_at(buf, at + 64)?,
                data: buf.get(at + HAI_HEADER_LEN..end)?.to_vec(),
                at,
            })
        })()
        .ok_or_else(|| trunc(hai_len as usize))?;
        items.push(item);
        // The last item need not be padded.
        at = match align8(hai_len as usize).and_then(|a| at.checked_add(a)) {
            Some(next) => next,
            None => return Err(trunc(hai_len as usize)),
        };
    }
    Ok(ActionList {
        version,
        compound_id,
        flags,
        archive_id,
        fsname,
        items,
    })
}

/// Builds the bytes of an action list, as the kernel lays them out (tests, and tools that
/// replay lists).
pub fn build(list: &ActionList) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&list.version.to_ne_bytes());
    b.extend_from_slice(&(list.items.len() as u32).to_ne_bytes());
    b.extend_from_slice(&list.compound_id.to_ne_bytes());
    b.extend_from_slice(&list.flags.to_ne_bytes());
    b.extend_from_slice(&list.archive_id.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(list.fsname.as_bytes());
    b.push(0);
    while b.len() % 8 != 0 {
        b.push(0);
    }
    for it in &list.items {
        let hai_len = (HAI_HEADER_LEN + it.data.len()) as u32;
        b.extend_from_slice(&hai_len.to_ne_bytes());
        b.extend_from_slice(&it.action.raw().to_ne_bytes());
        for f in [it.fid, it.dfid] {
            b.extend_from_slice(&f.seq.to_ne_bytes());
            b.extend_from_slice(&f.oid.to_ne_bytes());
            b.extend_from_slice(&f.ver.to_ne_bytes());
        }
        b.extend_from_slice(&it.offset.to_ne_bytes());
        b.extend_from_slice(&it.length.to_ne_bytes());
        b.extend_from_slice(&it.cookie.to_ne_bytes());
        b.extend_from_slice(&it.gid.to_ne_bytes());
        b.extend_from_slice(&it.data);
        while b.len() % 8 != 0 {
            b.push(0);
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(action: Action, seq: u64, data: &[u8]) -> ActionItem {
        ActionItem {
            action,
            fid: Fid {
                seq,
                oid: 0x1d648,
                ver: 0,
            },
            dfid: Fid {
                seq,
                oid: 0x1d648,
                ver: 0,
            },
            offset: 0,
            length: u64::MAX,
            cookie: 0x6913bb97,
            gid: 0,
            data: data.to_vec(),
            at: 0,
        }
    }

    fn sample() -> ActionList {
        ActionList {
            version: HAL_VERSION,
            compound_id: 0,
            flags: 0,
            archive_id: 1,
            fsname: "lustre".into(),
            items: vec![
                item(Action::Archive, 0x2000057b4, b"tag=m"),
                item(Action::Restore, 0x2c000596f, b""),
                item(Action::Remove, 0x200000401, b"0123456789abcdef!"),
                item(Action::Cancel, 0x200000402, b""),
            ],
        }
    }

    /// A list laid out by hand from the documented structs (not by `build`).
    #[test]
    fn parses_a_hand_built_layout() {
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_ne_bytes()); // hal_version
        b.extend_from_slice(&1u32.to_ne_bytes()); // hal_count
        b.extend_from_slice(&7u64.to_ne_bytes()); // hal_compound_id
        b.extend_from_slice(&0u64.to_ne_bytes()); // hal_flags
        b.extend_from_slice(&5u32.to_ne_bytes()); // hal_archive_id
        b.extend_from_slice(&0u32.to_ne_bytes()); // padding1
        b.extend_from_slice(b"testfs0\0"); // 8 bytes: already aligned
        assert_eq!(b.len(), 40);
        b.extend_from_slice(&(72u32 + 3).to_ne_bytes()); // hai_len
        b.extend_from_slice(&21u32.to_ne_bytes()); // HSMA_RESTORE
        b.extend_from_slice(&0x200000401u64.to_ne_bytes()); // fid.f_seq
        b.extend_from_slice(&2u32.to_ne_bytes()); // fid.f_oid
        b.extend_from_slice(&0u32.to_ne_bytes()); // fid.f_ver
        b.extend_from_slice(&0x200000401u64.to_ne_bytes()); // dfid
        b.extend_from_slice(&3u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&4096u64.to_ne_bytes()); // extent.offset
        b.extend_from_slice(&8192u64.to_ne_bytes()); // extent.length
        b.extend_from_slice(&0xabcdu64.to_ne_bytes()); // cookie
        b.extend_from_slice(&9u64.to_ne_bytes()); // gid
        b.extend_from_slice(b"xyz"); // data, last item unpadded
        let l = parse(&b).expect("parse");
        assert_eq!(l.fsname, "testfs0");
        assert_eq!(l.archive_id, 5);
        assert_eq!(l.compound_id, 7);
        let it = &l.items[0];
        assert_eq!(it.action, Action::Restore);
        assert_eq!(it.fid.to_string(), "[0x200000401:0x2:0x0]");
        assert_eq!(it.dfid.oid, 3);
        assert_eq!((it.offset, it.length), (4096, 8192));
        assert_eq!(it.cookie, 0xabcd);
        assert_eq!(it.gid, 9);
        assert_eq!(it.data, b"xyz");
        assert_eq!(it.at, 40);
    }

    #[test]
    fn round_trips_and_aligns() {
        let l = sample();
        let b = build(&l);
        let p = parse(&b).expect("parse");
        assert_eq!(p.items.len(), 4);
        for (a, b) in p.items.iter().zip(&l.items) {
            assert_eq!(
                (a.action, a.fid, a.cookie, &a.data),
                (b.action, b.fid, b.cookie, &b.data)
            );
            assert_eq!(a.at % 8, 0);
        }
        // "lustre\0" pads to 8: the first item starts at 40.
        assert_eq!(p.items[0].at, 40);
    }

    #[test]
    fn malformed_lists_are_errors() {
        let b = build(&sample());
        assert_eq!(parse(&b[..10]), Err(HalError::Short(10)));
        let mut v = b.clone();
        v[0] = 2;
        assert_eq!(parse(&v), Err(HalError::Version(2)));
        // Items at 40 (77 bytes, padded to 80), 120 (72), 192 (89 → 96), 288 (72): 360.
        assert_eq!(b.len(), 360);
        // Truncated in the last item (the count still fits the buffer).
        assert!(matches!(
            parse(&b[..340]),
            Err(HalError::Truncated { index: 3, .. })
        ));
        // Too short for four headers at all.
        assert!(matches!(parse(&b[..150]), Err(HalError::Count { .. })));
        // A huge count.
        let mut v = b.clone();
        v[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(parse(&v), Err(HalError::Count { .. })));
        // hai_len below the header.
        let mut v = b.clone();
        v[40..44].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(
            parse(&v),
            Err(HalError::ItemLen {
                index: 0,
                hai_len: 8
            })
        );
        // hai_len past the end.
        let mut v = b.clone();
        v[40..44].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(
            parse(&v),
            Err(HalError::Truncated { index: 0, .. })
        ));
        // No NUL after the fsname.
        let mut v = b[..32].to_vec();
        v.extend_from_slice(b"abc");
        assert_eq!(parse(&v), Err(HalError::Fsname));
        assert_eq!(Action::from_raw(99), Action::Unknown(99));
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&b);
        }

        #[test]
        fn never_panics_on_mutated_lists(
            flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..8),
            cut in 0usize..400,
        ) {
            let mut b = build(&sample());
            for (i, v) in flips {
                if let Some(x) = b.get_mut(i) { *x = v; }
            }
            b.truncate(cut.max(1));
            let _ = parse(&b);
        }

        #[test]
        fn round_trips_any_items(
            specs in proptest::collection::vec(
                (20u32..24, any::<u64>(), any::<u32>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..40)),
                0..6,
            ),
            name in "[a-z0-9]{0,15}",
        ) {
            let items: Vec<ActionItem> = specs.iter().map(|(a, seq, oid, cookie, data)| ActionItem {
                action: Action::from_raw(*a),
                fid: Fid { seq: *seq, oid: *oid, ver: 0 },
                dfid: Fid { seq: *seq, oid: oid.wrapping_add(1), ver: 1 },
                offset: 0,
                length: u64::MAX,
                cookie: *cookie,
                gid: 0,
                data: data.clone(),
                at: 0,
            }).collect();
            let l = ActionList { version: 1, compound_id: 0, flags: 0, archive_id: 3, fsname: name.clone(), items };
            let p = parse(&build(&l)).expect("parse");
            prop_assert_eq!(p.fsname, name);
            prop_assert_eq!(p.items.len(), l.items.len());
            for (a, b) in p.items.iter().zip(&l.items) {
                prop_assert_eq!(a.action, b.action);
                prop_assert_eq!(a.fid, b.fid);
                prop_assert_eq!(a.dfid, b.dfid);
                prop_assert_eq!(a.cookie, b.cookie);
                prop_assert_eq!(&a.data, &b.data);
            }
        }
    }
}
