//! fscrypt v2 through the kernel's ioctls (no `fscrypt` tool), the same on every filesystem
//! that has it (ext4 with `-O encrypt`, a Lustre client mount), and the one type that holds
//! a raw key: [`SecretKey`], a page of locked memory (`mlock`) kept out of core dumps and
//! forked children, zeroed on drop, whose `Debug` never prints the bytes.
//!
//! - [`add_key`] (`FS_IOC_ADD_ENCRYPTION_KEY`) gives the filesystem a key and returns its
//!   identifier, which the kernel derives from the key (HKDF), so the identifier is safe to
//!   record anywhere while the key is not;
//! - [`set_policy`] (`FS_IOC_SET_ENCRYPTION_POLICY`, v2, AES-256-XTS contents,
//!   AES-256-CTS names) on an empty directory;
//! - [`remove_key`] (`FS_IOC_REMOVE_ENCRYPTION_KEY`): files then read as "Required key not
//!   available" (ENOKEY); [`key_status`] and [`policy_of`] say where things stand.
//!
//! Every call takes a descriptor the caller opened without following symlinks.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use nix::errno::Errno;
use zeroize::Zeroize;

/// A raw key is at most this long (`FSCRYPT_MAX_KEY_SIZE`).
pub const MAX_KEY_SIZE: usize = 64;
/// And at least this long for a v2 policy of AES-256-XTS (its derived key is 64 bytes, from
/// a master key of at least half that).
pub const MIN_KEY_SIZE: usize = 32;
const IDENTIFIER_SIZE: usize = 16;
const PAGE: usize = 4096;

/// What a key cannot be made of.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("an fscrypt key must be {MIN_KEY_SIZE} to {MAX_KEY_SIZE} bytes, not {0}")]
    Length(usize),
    /// Keys live only in locked memory kept out of core dumps; without it there is no key.
    #[error("cannot map locked memory for a key: {0} (raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK)")]
    Lock(Errno),
}

/// Plain data the kernel reads and writes: integers and integer arrays only, so all-zero
/// bytes are a valid value.
///
/// # Safety
/// Implementors must be `repr(C)` structs of integers (no padding-sensitive invariants, no
/// pointers), at most one page long.
unsafe trait Plain: Zeroize {}

/// One page of memory of its own holding a `T`: an anonymous mapping, locked (`mlock`: never
/// swapped), left out of core dumps (`MADV_DONTDUMP`: a crash does not write it to disk) and
/// wiped in a forked child (`MADV_WIPEONFORK`: the commands this process forks never hold a
/// copy), and zeroed when dropped. A page of its own, so unlocking it never unlocks someone
/// else's secret on the same page.
struct Locked<T: Plain> {
    ptr: NonNull<T>,
}

// SAFETY: the page is owned exclusively, like a Box.
unsafe impl<T: Plain + Send> Send for Locked<T> {}
unsafe impl<T: Plain + Sync> Sync for Locked<T> {}

impl<T: Plain> Locked<T> {
    /// A zeroed, locked `T`.
    fn new() -> Result<Self, KeyError> {
        use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags};
        const { assert!(std::mem::size_of::<T>() <= PAGE) };
        let length = const { std::num::NonZeroUsize::new(PAGE).expect("PAGE is not zero") };
        // SAFETY: a fresh private anonymous mapping, aliasing nothing; the kernel zeroes it.
        let page = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(KeyError::Lock)?;
        let guard = |e: Errno| {
            // SAFETY: mapped above, PAGE long; nothing secret in it yet.
            let _ = unsafe { nix::sys::mman::munmap(page, PAGE) };
            KeyError::Lock(e)
        };
        // SAFETY: the page is ours and PAGE bytes long.
        unsafe {
            nix::sys::mman::mlock(page, PAGE).map_err(guard)?;
            nix::sys::mman::madvise(page, PAGE, MmapAdvise::MADV_DONTDUMP).map_err(guard)?;
            nix::sys::mman::madvise(page, PAGE, MmapAdvise::MADV_WIPEONFORK).map_err(guard)?;
        }
        // Zeroed bytes are a valid T (see Plain).
        Ok(Self { ptr: page.cast() })
    }

    fn get(&self) -> &T {
        // SAFETY: valid, aligned and initialized for our lifetime.
        unsafe { self.ptr.as_ref() }
    }

    fn get_mut(&mut self) -> &mut T {
        // SAFETY: as above, and we are its only owner.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: Plain> Drop for Locked<T> {
    fn drop(&mut self) {
        self.get_mut().zeroize();
        // SAFETY: mapped in `new`, PAGE long, and no reference to it outlives `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), PAGE) };
    }
}

#[repr(C)]
struct KeyBytes {
    len: usize,
    bytes: [u8; MAX_KEY_SIZE],
}

impl Zeroize for KeyBytes {
    fn zeroize(&mut self) {
        self.bytes.zeroize();
        self.len.zeroize();
    }
}
// SAFETY: integers only.
unsafe impl Plain for KeyBytes {}

/// A raw encryption key in locked memory, zeroed on drop. It has no `Clone`, no `Display`,
/// and its `Debug` shows only the length.
pub struct SecretKey {
    inner: Locked<KeyBytes>,
}

impl SecretKey {
    /// Copies `bytes` into locked memory. The caller zeroes its own copy.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        if !(MIN_KEY_SIZE..=MAX_KEY_SIZE).contains(&bytes.len()) {
            return Err(KeyError::Length(bytes.len()));
        }
        let mut inner = Locked::<KeyBytes>::new()?;
        let k = inner.get_mut();
        k.bytes[..bytes.len()].copy_from_slice(bytes);
        k.len = bytes.len();
        Ok(Self { inner })
    }

    /// Takes the bytes out of `buffer` and zeroes it, whatever happens.
    pub fn take_from(buffer: &mut Vec<u8>) -> Result<Self, KeyError> {
        let key = Self::from_slice(buffer);
        buffer.zeroize();
        key
    }

    pub fn len(&self) -> usize {
        self.inner.get().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bytes(&self) -> &[u8] {
        let k = self.inner.get();
        &k.bytes[..k.len]
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({} bytes, redacted)", self.len())
    }
}

/// The kernel's name for a v2 key: derived from the key, so it says nothing about it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyIdentifier(pub [u8; IDENTIFIER_SIZE]);

impl KeyIdentifier {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != IDENTIFIER_SIZE * 2 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; IDENTIFIER_SIZE];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(Self(out))
    }
}

impl std::fmt::Display for KeyIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for KeyIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyIdentifier({self})")
    }
}

// linux/fscrypt.h
const POLICY_V2: u8 = 2;
const MODE_AES_256_XTS: u8 = 1;
const MODE_AES_256_CTS: u8 = 4;
const POLICY_FLAGS_PAD_32: u8 = 0x03;
const KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;
const KEY_REMOVAL_STATUS_FLAG_FILES_BUSY: u32 = 0x1;
const KEY_REMOVAL_STATUS_FLAG_OTHER_USERS: u32 = 0x2;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PolicyV2 {
    version: u8,
    contents_encryption_mode: u8,
    filenames_encryption_mode: u8,
    flags: u8,
    reserved: [u8; 4],
    master_key_identifier: [u8; IDENTIFIER_SIZE],
}

#[repr(C)]
struct PolicyEx {
    policy_size: u64,
    /// Big enough for v1 (12 bytes) and v2 (24 bytes).
    policy: [u8; 24],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KeySpecifier {
    kind: u32,
    reserved: u32,
    /// A union of the v1 descriptor and the v2 identifier (32 bytes in all).
    u: [u8; 32],
}

impl KeySpecifier {
    fn identifier(id: &KeyIdentifier) -> Self {
        let mut u = [0u8; 32];
        u[..IDENTIFIER_SIZE].copy_from_slice(&id.0);
        Self {
            kind: KEY_SPEC_TYPE_IDENTIFIER,
            reserved: 0,
            u,
        }
    }
}

/// `struct fscrypt_add_key_arg` followed by its raw key (a flexible array in C).
#[repr(C)]
struct AddKeyArg {
    key_spec: KeySpecifier,
    raw_size: u32,
    key_id: u32,
    reserved: [u32; 8],
    raw: [u8; MAX_KEY_SIZE],
}

impl Zeroize for AddKeyArg {
    fn zeroize(&mut self) {
        self.raw.zeroize();
        self.raw_size.zeroize();
    }
}
// SAFETY: integers only.
unsafe impl Plain for AddKeyArg {}

/// Size of `struct fscrypt_add_key_arg` without the raw key, as the ioctl number encodes it.
const ADD_KEY_ARG_SIZE: usize = 80;

#[repr(C)]
#[derive(Default)]
struct RemoveKeyArg {
    key_spec: KeySpecifier,
    removal_status_flags: u32,
    reserved: [u32; 5],
}

#[repr(C)]
#[derive(Default)]
struct KeyStatusArg {
    key_spec: KeySpecifier,
    reserved: [u32; 6],
    status: u32,
    status_flags: u32,
    user_count: u32,
    out_reserved: [u32; 13],
}

// The kernel defines SET with the size of the v1 policy, whatever the version passed.
nix::ioctl_write_ptr_bad!(
    ioctl_set_policy,
    nix::request_code_read!(b'f', 19, 12),
    PolicyV2
);
nix::ioctl_readwrite_bad!(
    ioctl_get_policy_ex,
    nix::request_code_readwrite!(b'f', 22, 9),
    PolicyEx
);
nix::ioctl_readwrite_bad!(
    ioctl_add_key,
    nix::request_code_readwrite!(b'f', 23, ADD_KEY_ARG_SIZE),
    AddKeyArg
);
nix::ioctl_readwrite!(ioctl_remove_key, b'f', 24, RemoveKeyArg);
nix::ioctl_readwrite!(ioctl_key_status, b'f', 26, KeyStatusArg);

/// Adds `key` to the filesystem of `fd` (for this user); returns the key's identifier.
/// Adding a key that is already there is success.
pub fn add_key(fd: BorrowedFd<'_>, key: &SecretKey) -> Result<KeyIdentifier, AddKeyError> {
    let mut arg = Locked::<AddKeyArg>::new().map_err(AddKeyError::Key)?;
    let a = arg.get_mut();
    a.key_spec.kind = KEY_SPEC_TYPE_IDENTIFIER;
    let bytes = key.bytes();
    a.raw[..bytes.len()].copy_from_slice(bytes);
    a.raw_size = bytes.len() as u32;
    // SAFETY: `arg` is a valid fscrypt_add_key_arg with raw_size bytes of key after it.
    unsafe { ioctl_add_key(fd.as_raw_fd(), a) }.map_err(AddKeyError::Kernel)?;
    let mut id = [0u8; IDENTIFIER_SIZE];
    id.copy_from_slice(&arg.get().key_spec.u[..IDENTIFIER_SIZE]);
    Ok(KeyIdentifier(id))
}

/// Why [`add_key`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AddKeyError {
    #[error(transparent)]
    Key(KeyError),
    #[error("FS_IOC_ADD_ENCRYPTION_KEY: {0}")]
    Kernel(Errno),
}

/// Sets a v2 policy with key `id` on the directory `dir`, which must be empty (ENOTEMPTY)
/// and, unless the caller may override it, have the key added (ENOKEY). The same policy
/// again is success; another one is EEXIST.
pub fn set_policy(dir: BorrowedFd<'_>, id: &KeyIdentifier) -> Result<(), Errno> {
    let policy = PolicyV2 {
        version: POLICY_V2,
        contents_encryption_mode: MODE_AES_256_XTS,
        filenames_encryption_mode: MODE_AES_256_CTS,
        flags: POLICY_FLAGS_PAD_32,
        reserved: [0; 4],
        master_key_identifier: id.0,
    };
    // SAFETY: a valid fscrypt_policy_v2.
    unsafe { ioctl_set_policy(dir.as_raw_fd(), &policy) }.map(drop)
}

/// The key identifier of the v2 policy on `fd`; `None` when it is not encrypted. A v1
/// policy is EINVAL (we never set one).
pub fn policy_of(fd: BorrowedFd<'_>) -> Result<Option<KeyIdentifier>, Errno> {
    let mut arg = PolicyEx {
        policy_size: 24,
        policy: [0; 24],
    };
    // SAFETY: a valid fscrypt_get_policy_ex_arg with room for any policy.
    match unsafe { ioctl_get_policy_ex(fd.as_raw_fd(), &mut arg) } {
        Ok(_) => {}
        Err(Errno::ENODATA) => return Ok(None),
        Err(e) => return Err(e),
    }
    if arg.policy[0] != POLICY_V2 {
        return Err(Errno::EINVAL);
    }
    let mut id = [0u8; IDENTIFIER_SIZE];
    id.copy_from_slice(&arg.policy[8..8 + IDENTIFIER_SIZE]);
    Ok(Some(KeyIdentifier(id)))
}

/// Whether the filesystem of `fd` does fscrypt: asking a directory for its policy answers
/// "none" (ENODATA) or a policy there, and ENOTTY/EOPNOTSUPP where there is no fscrypt
/// (btrfs, tmpfs, ext4 without `-O encrypt`).
pub fn supported(fd: BorrowedFd<'_>) -> bool {
    policy_of(fd).is_ok()
}

/// Gives `key` to the filesystem of the empty directory `dir`, sets the v2 policy for it,
/// then takes the key away again: the controller never keeps a key (nodes add it when they
/// publish). The same key again on a directory with its policy is success. `what` names the
/// directory in errors; the key never appears in one.
pub(crate) fn encrypt_empty_dir(
    dir: BorrowedFd<'_>,
    key: &SecretKey,
    what: &str,
) -> crate::Result<KeyIdentifier> {
    let id = add_key(dir, key).map_err(|e| add_key_error(what, e))?;
    let set = match set_policy(dir, &id) {
        Ok(()) => Ok(()),
        Err(Errno::ENOTEMPTY) => Err(crate::BackendError::InvalidState(format!(
            "{what}: not empty, so it cannot be encrypted"
        ))),
        Err(Errno::EEXIST) => Err(crate::BackendError::InvalidState(format!(
            "{what}: already encrypted with another key"
        ))),
        Err(e) => Err(errno_error(what, e)),
    };
    let removed = remove_key(dir, &id);
    set?;
    removed.map_err(|e| errno_error(what, e))?;
    Ok(id)
}

/// [`add_key`]'s failure as a backend error naming `what`.
pub(crate) fn add_key_error(what: &str, e: AddKeyError) -> crate::BackendError {
    match e {
        AddKeyError::Key(e) => crate::BackendError::InvalidState(format!("{what}: {e}")),
        AddKeyError::Kernel(errno) => errno_error(what, errno),
    }
}

/// A failed ioctl as the I/O error of `what`.
pub(crate) fn errno_error(what: &str, e: Errno) -> crate::BackendError {
    crate::BackendError::io(std::path::Path::new(what), std::io::Error::from(e))
}

/// What removing a key left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyRemoval {
    /// Files still open kept the key in use; they stay readable until closed.
    pub files_busy: bool,
    /// Only this user's claim went; other users still have the key added.
    pub other_users: bool,
}

/// Removes this user's claim to key `id` from the filesystem of `fd`. A key that is not
/// there is success (nothing to remove).
pub fn remove_key(fd: BorrowedFd<'_>, id: &KeyIdentifier) -> Result<KeyRemoval, Errno> {
    let mut arg = RemoveKeyArg {
        key_spec: KeySpecifier::identifier(id),
        ..Default::default()
    };
    // SAFETY: a valid fscrypt_remove_key_arg.
    match unsafe { ioctl_remove_key(fd.as_raw_fd(), &mut arg) } {
        Ok(_) => Ok(KeyRemoval {
            files_busy: arg.removal_status_flags & KEY_REMOVAL_STATUS_FLAG_FILES_BUSY != 0,
            other_users: arg.removal_status_flags & KEY_REMOVAL_STATUS_FLAG_OTHER_USERS != 0,
        }),
        Err(Errno::ENOKEY) => Ok(KeyRemoval::default()),
        Err(e) => Err(e),
    }
}

/// Where a key stands on a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Absent,
    Present {
        users: u32,
    },
    /// Removed, but files that were open still use it.
    IncompletelyRemoved,
}

pub fn key_status(fd: BorrowedFd<'_>, id: &KeyIdentifier) -> Result<KeyStatus, Errno> {
    let mut arg = KeyStatusArg {
        key_spec: KeySpecifier::identifier(id),
        ..Default::default()
    };
    // SAFETY: a valid fscrypt_get_key_status_arg.
    unsafe { ioctl_key_status(fd.as_raw_fd(), &mut arg) }?;
    Ok(match arg.status {
        2 => KeyStatus::Present {
            users: arg.user_count,
        },
        3 => KeyStatus::IncompletelyRemoved,
        _ => KeyStatus::Absent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<PolicyV2>(), 24);
        assert_eq!(std::mem::size_of::<KeySpecifier>(), 40);
        assert_eq!(
            std::mem::size_of::<AddKeyArg>(),
            ADD_KEY_ARG_SIZE + MAX_KEY_SIZE
        );
        assert_eq!(std::mem::size_of::<RemoveKeyArg>(), 64);
        assert_eq!(std::mem::size_of::<KeyStatusArg>(), 128);
        // _IOR('f', 19, struct fscrypt_policy_v1), as <linux/fscrypt.h> has it.
        assert_eq!(nix::request_code_read!(b'f', 19, 12) as u32, 0x800c_6613);
        assert_eq!(
            nix::request_code_readwrite!(b'f', 23, ADD_KEY_ARG_SIZE) as u32,
            0xc050_6617
        );
    }

    /// The `VmFlags` of the mapping that holds `addr`, from `/proc/self/smaps`.
    fn vm_flags_at(addr: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((start, end)) = range.split_once('-')
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                inside = (start..end).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().map(str::to_owned).collect();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn a_key_page_is_locked_kept_out_of_core_dumps_and_wiped_on_fork() {
        let key = SecretKey::from_slice(&[7; 32]).expect("a key");
        let flags = vm_flags_at(key.inner.ptr.as_ptr() as usize);
        // proc_pid_smaps(5): lo = locked, dd = not in core dumps, wf = wiped on fork.
        for flag in ["lo", "dd", "wf"] {
            assert!(flags.iter().any(|f| f == flag), "{flag} not in {flags:?}");
        }
    }

    #[test]
    fn a_key_never_prints_and_is_checked_for_length() {
        let mut raw = vec![0x5au8; 32];
        let key = SecretKey::take_from(&mut raw).expect("a key");
        assert!(raw.iter().all(|b| *b == 0), "the caller's copy is zeroed");
        assert_eq!(format!("{key:?}"), "SecretKey(32 bytes, redacted)");
        assert_eq!(key.bytes(), &[0x5au8; 32][..]);
        assert!(matches!(
            SecretKey::from_slice(&[1; 8]),
            Err(KeyError::Length(8))
        ));
        let id = KeyIdentifier([0xab; 16]);
        assert_eq!(KeyIdentifier::from_hex(&id.to_hex()), Some(id));
        assert_eq!(KeyIdentifier::from_hex("zz"), None);
    }
}
