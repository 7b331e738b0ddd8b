//! The few btrfs ioctls the local backend needs: subvolumes and qgroups.
//!
//! Called directly rather than through `btrfs` (btrfs-progs) so that creating a share costs
//! two syscalls instead of two process spawns. Layouts follow `include/uapi/linux/btrfs.h`.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
const BTRFS_PATH_NAME_MAX: usize = 4087;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;
const BTRFS_SUBVOL_NAME_MAX: usize = 4039;
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const BTRFS_ROOT_TREE_OBJECTID: u64 = 1;
const BTRFS_QUOTA_TREE_OBJECTID: u64 = 8;
const BTRFS_ROOT_REF_KEY: u32 = 156;
const BTRFS_QGROUP_STATUS_KEY: u32 = 240;
const BTRFS_QGROUP_INFO_KEY: u32 = 242;
const BTRFS_QGROUP_LIMIT_KEY: u32 = 244;
const BTRFS_QGROUP_RELATION_KEY: u32 = 246;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;
const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
const BTRFS_SUBVOL_SPEC_BY_ID: u64 = 1 << 4;
const BTRFS_QGROUP_STATUS_FLAG_RESCAN: u64 = 1 << 1;
const BTRFS_QGROUP_STATUS_FLAG_INCONSISTENT: u64 = 1 << 2;
/// A qgroup ID is `level << 48 | id`.
const QGROUP_LEVEL_SHIFT: u32 = 48;
/// Writing this value with the MAX_RFER flag removes the limit.
const LIMIT_CLEAR: u64 = u64::MAX;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; BTRFS_PATH_NAME_MAX + 1],
}

/// `btrfs_ioctl_vol_args_v2`, used here only to name a subvolume by ID.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    /// The name union; with SPEC_BY_ID its first 8 bytes are the subvolume ID.
    name: [u8; BTRFS_SUBVOL_NAME_MAX + 1],
}

#[repr(C)]
struct QgroupAssignArgs {
    assign: u64,
    src: u64,
    dst: u64,
}

#[repr(C)]
struct QgroupCreateArgs {
    create: u64,
    qgroupid: u64,
}

#[repr(C)]
struct QuotaRescanArgs {
    flags: u64,
    progress: u64,
    reserved: [u64; 6],
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
#[derive(Default)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

/// `btrfs_ioctl_fs_info_args` (1 KiB); only the node size is read.
#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    nodesize: u32,
    sectorsize: u32,
    rest: [u8; 1024 - 40],
}
const _: () = assert!(std::mem::size_of::<FsInfoArgs>() == 1024);

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

const SEARCH_BUF: usize = 4096 - std::mem::size_of::<SearchKey>();

#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; SEARCH_BUF],
}

nix::ioctl_write_ptr!(ioc_subvol_create, BTRFS_IOCTL_MAGIC, 14, VolArgs);
nix::ioctl_write_ptr!(ioc_snap_destroy, BTRFS_IOCTL_MAGIC, 15, VolArgs);
nix::ioctl_none!(ioc_sync, BTRFS_IOCTL_MAGIC, 8);
nix::ioctl_readwrite!(ioc_tree_search, BTRFS_IOCTL_MAGIC, 17, SearchArgs);
nix::ioctl_readwrite!(ioc_ino_lookup, BTRFS_IOCTL_MAGIC, 18, InoLookupArgs);
nix::ioctl_readwrite!(ioc_quota_ctl, BTRFS_IOCTL_MAGIC, 40, QuotaCtlArgs);
nix::ioctl_read!(ioc_qgroup_limit, BTRFS_IOCTL_MAGIC, 43, QgroupLimitArgs);
nix::ioctl_write_ptr!(ioc_qgroup_assign, BTRFS_IOCTL_MAGIC, 41, QgroupAssignArgs);
nix::ioctl_write_ptr!(ioc_qgroup_create, BTRFS_IOCTL_MAGIC, 42, QgroupCreateArgs);
nix::ioctl_write_ptr!(ioc_quota_rescan, BTRFS_IOCTL_MAGIC, 44, QuotaRescanArgs);
nix::ioctl_write_ptr!(ioc_snap_destroy_v2, BTRFS_IOCTL_MAGIC, 63, VolArgsV2);
nix::ioctl_read!(ioc_fs_info, BTRFS_IOCTL_MAGIC, 31, FsInfoArgs);

/// True when `fd` lies on a btrfs filesystem.
pub fn is_btrfs(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    let st = nix::sys::statfs::fstatfs(fd)?;
    Ok(st.filesystem_type().0 as i64 == BTRFS_SUPER_MAGIC)
}

fn vol_args(name: &str) -> Result<Box<VolArgs>, Errno> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > BTRFS_PATH_NAME_MAX || bytes.contains(&0) {
        return Err(Errno::EINVAL);
    }
    let mut args = Box::new(VolArgs {
        fd: 0,
        name: [0; BTRFS_PATH_NAME_MAX + 1],
    });
    args.name[..bytes.len()].copy_from_slice(bytes);
    Ok(args)
}

/// Creates subvolume `name` inside the directory `parent`.
/// The metadata node size: what a qgroup reserves, beyond the data, for one more write.
pub fn node_size(fd: BorrowedFd<'_>) -> Result<u32, Errno> {
    let mut args = FsInfoArgs {
        max_id: 0,
        num_devices: 0,
        fsid: [0; 16],
        nodesize: 0,
        sectorsize: 0,
        rest: [0; 1024 - 40],
    };
    // SAFETY: `args` is a zeroed btrfs_ioctl_fs_info_args of the kernel's size (1024 bytes).
    unsafe { ioc_fs_info(fd.as_raw_fd(), &mut args) }?;
    Ok(args.nodesize)
}

pub fn create_subvolume(parent: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    let args = vol_args(name)?;
    // SAFETY: `args` is a properly laid out, NUL-terminated btrfs_ioctl_vol_args.
    unsafe { ioc_subvol_create(parent.as_raw_fd(), &*args) }.map(drop)
}

/// Deletes subvolume `name` inside `parent`, with everything in it.
pub fn destroy_subvolume(parent: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
    let args = vol_args(name)?;
    // SAFETY: as above.
    unsafe { ioc_snap_destroy(parent.as_raw_fd(), &*args) }.map(drop)
}

/// Turns quota accounting on (idempotent: a no-op when it is on already).
pub fn enable_quota(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut args = QuotaCtlArgs {
        cmd: BTRFS_QUOTA_CTL_ENABLE,
        status: 0,
    };
    // SAFETY: valid btrfs_ioctl_quota_ctl_args.
    unsafe { ioc_quota_ctl(fd.as_raw_fd(), &mut args) }.map(drop)
}

/// Commits the current transaction, so qgroup numbers are up to date.
pub fn sync(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: no argument.
    unsafe { ioc_sync(fd.as_raw_fd()) }.map(drop)
}

/// The subvolume (tree) ID of the subvolume `fd` is in.
pub fn subvolume_id(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let mut args = Box::new(InoLookupArgs {
        treeid: 0,
        objectid: BTRFS_FIRST_FREE_OBJECTID,
        name: [0; 4080],
    });
    // SAFETY: valid btrfs_ioctl_ino_lookup_args.
    unsafe { ioc_ino_lookup(fd.as_raw_fd(), &mut *args) }?;
    Ok(args.treeid)
}

/// Sets (or with `None` removes) the referenced-bytes limit of qgroup `qgroupid`; 0 names
/// the level-0 qgroup of the subvolume `fd` is in.
pub fn set_limit(
    fd: BorrowedFd<'_>,
    qgroupid: u64,
    max_referenced: Option<u64>,
) -> Result<(), Errno> {
    let mut args = QgroupLimitArgs {
        qgroupid,
        lim: QgroupLimit {
            flags: BTRFS_QGROUP_LIMIT_MAX_RFER,
            max_rfer: max_referenced.unwrap_or(LIMIT_CLEAR),
            ..QgroupLimit::default()
        },
    };
    // SAFETY: valid btrfs_ioctl_qgroup_limit_args; the kernel only reads it.
    unsafe { ioc_qgroup_limit(fd.as_raw_fd(), &mut args) }.map(drop)
}

/// Referenced bytes and the referenced limit of one level-0 qgroup.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Qgroup {
    pub referenced: u64,
    pub exclusive: u64,
    pub max_referenced: Option<u64>,
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    buf.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

/// One item found by a tree search.
struct Item {
    objectid: u64,
    kind: u32,
    offset: u64,
    data: Vec<u8>,
}

/// All items of `tree` whose composite key (objectid, type, offset) lies between the lower and
/// upper bounds (the kernel compares whole keys, not each field), fetched a buffer at a time;
/// the next call starts just past the last key seen.
fn search(
    fd: BorrowedFd<'_>,
    tree: u64,
    objectids: (u64, u64),
    types: (u32, u32),
    offsets: (u64, u64),
) -> Result<Vec<Item>, Errno> {
    let mut items = Vec::new();
    let mut key = SearchKey {
        tree_id: tree,
        min_objectid: objectids.0,
        max_objectid: objectids.1,
        min_offset: offsets.0,
        max_offset: offsets.1,
        min_transid: 0,
        max_transid: u64::MAX,
        min_type: types.0,
        max_type: types.1,
        ..SearchKey::default()
    };
    loop {
        key.nr_items = 512;
        let mut args = Box::new(SearchArgs {
            key,
            buf: [0; SEARCH_BUF],
        });
        // SAFETY: valid btrfs_ioctl_search_args.
        unsafe { ioc_tree_search(fd.as_raw_fd(), &mut *args) }?;
        let found = args.key.nr_items;
        if found == 0 {
            return Ok(items);
        }
        let mut at = 0usize;
        let mut last = None;
        for _ in 0..found {
            let (Some(objectid), Some(offset), Some(kind), Some(len)) = (
                read_u64(&args.buf, at + 8),
                read_u64(&args.buf, at + 16),
                read_u32(&args.buf, at + 24),
                read_u32(&args.buf, at + 28),
            ) else {
                return Ok(items);
            };
            let start = at + 32;
            let data = args
                .buf
                .get(start..start + len as usize)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            items.push(Item {
                objectid,
                kind,
                offset,
                data,
            });
            last = Some((objectid, kind, offset));
            at = start + len as usize;
        }
        let Some((objectid, kind, offset)) = last else {
            return Ok(items);
        };
        // Advance past the last key: offset, then type, then objectid.
        if offset < u64::MAX {
            key.min_objectid = objectid;
            key.min_type = kind;
            key.min_offset = offset + 1;
        } else if kind < u32::MAX {
            key.min_objectid = objectid;
            key.min_type = kind + 1;
            key.min_offset = 0;
        } else if objectid < u64::MAX {
            key.min_objectid = objectid + 1;
            key.min_type = 0;
            key.min_offset = 0;
        } else {
            return Ok(items);
        }
        if key.min_objectid > key.max_objectid {
            return Ok(items);
        }
    }
}

/// Reads the info and limit items of qgroup `subvol_id` (a level-0 ID is the subvolume ID;
/// see [`share_qgroup`] for level 1) from the quota tree.
///
/// These are the numbers of the last committed transaction: at most one commit interval
/// (30 s by default) behind the writes, and no sync is forced to read them.
pub fn qgroup(fd: BorrowedFd<'_>, subvol_id: u64) -> Result<Option<Qgroup>, Errno> {
    let items = search(
        fd,
        BTRFS_QUOTA_TREE_OBJECTID,
        (0, 0),
        (BTRFS_QGROUP_INFO_KEY, BTRFS_QGROUP_LIMIT_KEY),
        (subvol_id, subvol_id),
    )?;
    let mut found = None::<Qgroup>;
    for item in items
        .iter()
        .filter(|i| i.objectid == 0 && i.offset == subvol_id)
    {
        let group = found.get_or_insert_with(Qgroup::default);
        match item.kind {
            BTRFS_QGROUP_INFO_KEY => {
                group.referenced = read_u64(&item.data, 8).unwrap_or(0);
                group.exclusive = read_u64(&item.data, 24).unwrap_or(0);
            }
            BTRFS_QGROUP_LIMIT_KEY => {
                let flags = read_u64(&item.data, 0).unwrap_or(0);
                let max = read_u64(&item.data, 8).unwrap_or(0);
                if flags & BTRFS_QGROUP_LIMIT_MAX_RFER != 0 && max != 0 && max != LIMIT_CLEAR {
                    group.max_referenced = Some(max);
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

/// The level-1 qgroup that holds a share subvolume and every subvolume below it.
pub const fn share_qgroup(share_subvol: u64) -> u64 {
    (1 << QGROUP_LEVEL_SHIFT) | share_subvol
}

fn level(qgroupid: u64) -> u64 {
    qgroupid >> QGROUP_LEVEL_SHIFT
}

/// Creates qgroup `qgroupid`; one that exists already is fine.
pub fn create_qgroup(fd: BorrowedFd<'_>, qgroupid: u64) -> Result<(), Errno> {
    let args = QgroupCreateArgs {
        create: 1,
        qgroupid,
    };
    // SAFETY: valid btrfs_ioctl_qgroup_create_args; the kernel only reads it.
    match unsafe { ioc_qgroup_create(fd.as_raw_fd(), &args) } {
        Ok(_) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes qgroup `qgroupid` (it must have no members left); one already gone is fine.
pub fn remove_qgroup(fd: BorrowedFd<'_>, qgroupid: u64) -> Result<(), Errno> {
    let args = QgroupCreateArgs {
        create: 0,
        qgroupid,
    };
    // SAFETY: as above.
    match unsafe { ioc_qgroup_create(fd.as_raw_fd(), &args) } {
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `member` a member of `parent` (or, with `assign` false, no longer one). Returns true
/// when the relation changed. A relation that already is as asked is no change.
pub fn assign(fd: BorrowedFd<'_>, member: u64, parent: u64, assign: bool) -> Result<bool, Errno> {
    let args = QgroupAssignArgs {
        assign: u64::from(assign),
        src: member,
        dst: parent,
    };
    // SAFETY: valid btrfs_ioctl_qgroup_assign_args; the kernel only reads it.
    match unsafe { ioc_qgroup_assign(fd.as_raw_fd(), &args) } {
        Ok(_) => Ok(true),
        Err(Errno::EEXIST) if assign => Ok(false),
        Err(Errno::ENOENT) if !assign => Ok(false),
        Err(e) => Err(e),
    }
}

/// The qgroups related to `qgroupid`, split into (parents, members) by level.
pub fn relations(fd: BorrowedFd<'_>, qgroupid: u64) -> Result<(Vec<u64>, Vec<u64>), Errno> {
    let items = search(
        fd,
        BTRFS_QUOTA_TREE_OBJECTID,
        (qgroupid, qgroupid),
        (BTRFS_QGROUP_RELATION_KEY, BTRFS_QGROUP_RELATION_KEY),
        (0, u64::MAX),
    )?;
    let (mut parents, mut members) = (Vec::new(), Vec::new());
    for item in items
        .iter()
        .filter(|i| i.objectid == qgroupid && i.kind == BTRFS_QGROUP_RELATION_KEY)
    {
        if level(item.offset) > level(qgroupid) {
            parents.push(item.offset);
        } else {
            members.push(item.offset);
        }
    }
    Ok((parents, members))
}

/// The quota status flags that matter to a reader of the numbers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    /// The kernel knows its numbers are wrong until a rescan finishes.
    pub inconsistent: bool,
    pub rescanning: bool,
}

/// Reads the quota status item (as of the running transaction).
pub fn status(fd: BorrowedFd<'_>) -> Result<QuotaStatus, Errno> {
    let items = search(
        fd,
        BTRFS_QUOTA_TREE_OBJECTID,
        (0, 0),
        (BTRFS_QGROUP_STATUS_KEY, BTRFS_QGROUP_STATUS_KEY),
        (0, 0),
    )?;
    let flags = items
        .iter()
        .find(|i| i.objectid == 0 && i.kind == BTRFS_QGROUP_STATUS_KEY)
        .and_then(|i| read_u64(&i.data, 16))
        .unwrap_or(0);
    Ok(QuotaStatus {
        inconsistent: flags & BTRFS_QGROUP_STATUS_FLAG_INCONSISTENT != 0,
        rescanning: flags & BTRFS_QGROUP_STATUS_FLAG_RESCAN != 0,
    })
}

/// Starts a quota rescan in the background; one already running is fine.
pub fn start_rescan(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let args = QuotaRescanArgs {
        flags: 0,
        progress: 0,
        reserved: [0; 6],
    };
    // SAFETY: valid btrfs_ioctl_quota_rescan_args; the kernel only reads it.
    match unsafe { ioc_quota_rescan(fd.as_raw_fd(), &args) } {
        Ok(_) | Err(Errno::EINPROGRESS) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every subvolume below subvolume `top` (not `top` itself), each with its depth (1 for a
/// direct child), found through the ROOT_REF items of the root tree: no path is resolved.
pub fn nested_subvolumes(fd: BorrowedFd<'_>, top: u64) -> Result<Vec<(u64, u32)>, Errno> {
    let mut found = Vec::new();
    let mut queue = std::collections::VecDeque::from([(top, 0u32)]);
    while let Some((parent, depth)) = queue.pop_front() {
        let items = search(
            fd,
            BTRFS_ROOT_TREE_OBJECTID,
            (parent, parent),
            (BTRFS_ROOT_REF_KEY, BTRFS_ROOT_REF_KEY),
            (0, u64::MAX),
        )?;
        for item in items
            .iter()
            .filter(|i| i.objectid == parent && i.kind == BTRFS_ROOT_REF_KEY)
        {
            found.push((item.offset, depth + 1));
            queue.push_back((item.offset, depth + 1));
        }
    }
    Ok(found)
}

/// Deletes subvolume `id` by its ID (`fd` is anywhere on the same filesystem), so no path
/// under a tenant's control is ever resolved. A subvolume already gone is fine.
pub fn destroy_subvolume_by_id(fd: BorrowedFd<'_>, id: u64) -> Result<(), Errno> {
    let mut args = Box::new(VolArgsV2 {
        fd: 0,
        transid: 0,
        flags: BTRFS_SUBVOL_SPEC_BY_ID,
        unused: [0; 4],
        name: [0; BTRFS_SUBVOL_NAME_MAX + 1],
    });
    args.name[..8].copy_from_slice(&id.to_ne_bytes());
    // SAFETY: a properly laid out btrfs_ioctl_vol_args_v2 naming the subvolume by ID.
    match unsafe { ioc_snap_destroy_v2(fd.as_raw_fd(), &*args) } {
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}
