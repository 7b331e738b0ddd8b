//! `liblustreapi`, loaded at run time with `libloading`, so the binary builds and runs on
//! machines without Lustre; only the copytool mode needs the library, and it says so when
//! the library is absent.
//!
//! Signatures (`lustre/include/lustre/lustreapi.h`):
//! ```c
//! int llapi_hsm_copytool_register(struct hsm_copytool_private **priv, const char *mnt,
//!                                 int archive_count, int *archives, int rfd_flags);
//! int llapi_hsm_copytool_unregister(struct hsm_copytool_private **priv);
//! int llapi_hsm_copytool_get_fd(struct hsm_copytool_private *ct);
//! int llapi_hsm_copytool_recv(struct hsm_copytool_private *priv,
//!                             struct hsm_action_list **hal, int *msgsize);
//! int llapi_hsm_action_begin(struct hsm_copyaction_private **phcp,
//!                            const struct hsm_copytool_private *ct,
//!                            const struct hsm_action_item *hai, int restore_mdt_index,
//!                            int restore_open_flags, bool is_error);
//! int llapi_hsm_action_progress(struct hsm_copyaction_private *hcp,
//!                               const struct hsm_extent *he, __u64 total, int hp_flags);
//! int llapi_hsm_action_end(struct hsm_copyaction_private **phcp,
//!                          const struct hsm_extent *he, int hp_flags, int errval);
//! int llapi_hsm_action_get_fd(const struct hsm_copyaction_private *hcp);
//! int llapi_fid2path(const char *device, const char *fidstr, char *path, int pathlen,
//!                    long long *recno, int *linkno);
//! ```
//! All return 0 (or an fd) on success and a negative errno on failure.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::hal::Fid;

type RegisterFn =
    unsafe extern "C" fn(*mut *mut c_void, *const c_char, c_int, *mut c_int, c_int) -> c_int;
type UnregisterFn = unsafe extern "C" fn(*mut *mut c_void) -> c_int;
type GetFdFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type RecvFn = unsafe extern "C" fn(*mut c_void, *mut *mut u8, *mut c_int) -> c_int;
type BeginFn =
    unsafe extern "C" fn(*mut *mut c_void, *const c_void, *const u8, c_int, c_int, bool) -> c_int;
type ProgressFn = unsafe extern "C" fn(*mut c_void, *const Extent, u64, c_int) -> c_int;
type EndFn = unsafe extern "C" fn(*mut *mut c_void, *const Extent, c_int, c_int) -> c_int;
type ActionFdFn = unsafe extern "C" fn(*const c_void) -> c_int;
/// `int llapi_get_data_version(int fd, __u64 *data_version, __u64 flags)`.
type DataVersionFn = unsafe extern "C" fn(c_int, *mut u64, u64) -> c_int;
/// `LL_DV_RD_FLUSH`: flush dirty pages from clients before reading the version.
const LL_DV_RD_FLUSH: u64 = 1 << 0;
type Fid2PathFn = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *mut c_char,
    c_int,
    *mut i64,
    *mut c_int,
) -> c_int;

/// `struct hsm_extent` (packed: two u64s).
#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
}

/// The loaded library and the functions the copytool calls.
pub struct LustreApi {
    register: RegisterFn,
    unregister: UnregisterFn,
    get_fd: GetFdFn,
    recv: RecvFn,
    begin: BeginFn,
    progress: ProgressFn,
    end: EndFn,
    action_fd: ActionFdFn,
    fid2path: Fid2PathFn,
    data_version: DataVersionFn,
    // Kept last: the function pointers above are valid only while it is loaded.
    _lib: libloading::Library,
}

fn neg(rc: c_int, what: &str) -> std::io::Result<c_int> {
    if rc < 0 {
        let e = std::io::Error::from_raw_os_error(-rc);
        Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(rc)
    }
}

impl LustreApi {
    /// Loads `name` (e.g. `liblustreapi.so.1`) and resolves every symbol the copytool
    /// needs; the error says which one is missing.
    pub fn load(name: &str) -> Result<Self, String> {
        // SAFETY: loading a shared library runs its initialisers; liblustreapi's are benign.
        let lib = unsafe { libloading::Library::new(name) }.map_err(|e| format!("{name}: {e}"))?;
        macro_rules! sym {
            ($n:literal, $t:ty) => {{
                // SAFETY: the symbol has the C signature documented in lustreapi.h.
                let s: libloading::Symbol<$t> = unsafe { lib.get($n) }
                    .map_err(|e| format!("{name}: missing {}: {e}", String::from_utf8_lossy($n)))?;
                *s
            }};
        }
        Ok(Self {
            register: sym!(b"llapi_hsm_copytool_register", RegisterFn),
            unregister: sym!(b"llapi_hsm_copytool_unregister", UnregisterFn),
            get_fd: sym!(b"llapi_hsm_copytool_get_fd", GetFdFn),
            recv: sym!(b"llapi_hsm_copytool_recv", RecvFn),
            begin: sym!(b"llapi_hsm_action_begin", BeginFn),
            progress: sym!(b"llapi_hsm_action_progress", ProgressFn),
            end: sym!(b"llapi_hsm_action_end", EndFn),
            action_fd: sym!(b"llapi_hsm_action_get_fd", ActionFdFn),
            fid2path: sym!(b"llapi_fid2path", Fid2PathFn),
            data_version: sym!(b"llapi_get_data_version", DataVersionFn),
            _lib: lib,
        })
    }

    /// Registers as a copytool on `mnt` for `archives` (empty: all).
    pub fn register(
        self: &std::sync::Arc<Self>,
        mnt: &Path,
        archives: &[u32],
    ) -> std::io::Result<Copytool> {
        let c = CString::new(mnt.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut ids: Vec<c_int> = archives.iter().map(|a| *a as c_int).collect();
        let mut ct: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid out-pointer, NUL-terminated path and a buffer of `ids.len()` ints.
        let rc = unsafe {
            (self.register)(
                &mut ct,
                c.as_ptr(),
                ids.len() as c_int,
                ids.as_mut_ptr(),
                libc::O_NONBLOCK,
            )
        };
        neg(rc, "llapi_hsm_copytool_register")?;
        Ok(Copytool {
            api: self.clone(),
            ct,
        })
    }

    /// The path of `fid` relative to the filesystem root.
    /// Lustre's data version of an open file (`llapi_get_data_version`, flushing clients'
    /// dirty pages first): it changes whenever the file's data does.
    pub fn data_version(&self, fd: c_int) -> std::io::Result<u64> {
        let mut version = 0u64;
        // SAFETY: `fd` is open for the call; the function writes one u64 through the pointer.
        let rc = unsafe { (self.data_version)(fd, &mut version, LL_DV_RD_FLUSH) };
        neg(rc, "llapi_get_data_version")?;
        Ok(version)
    }

    pub fn fid2path(&self, mnt: &Path, fid: &Fid) -> std::io::Result<PathBuf> {
        let dev = CString::new(mnt.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let fidstr = CString::new(fid.to_string())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut buf = vec![0 as c_char; libc::PATH_MAX as usize];
        let (mut recno, mut linkno) = (-1i64, 0 as c_int);
        // SAFETY: valid strings and a buffer of the length passed.
        let rc = unsafe {
            (self.fid2path)(
                dev.as_ptr(),
                fidstr.as_ptr(),
                buf.as_mut_ptr(),
                buf.len() as c_int,
                &mut recno,
                &mut linkno,
            )
        };
        neg(rc, "llapi_fid2path")?;
        // SAFETY: the library NUL-terminates within the buffer on success.
        let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
    }
}

/// A registered copytool.
pub struct Copytool {
    api: std::sync::Arc<LustreApi>,
    ct: *mut c_void,
}

// SAFETY: liblustreapi's copytool handle is used from several threads by its own reference
// copytool (lhsmtool_posix runs one thread per action, calling progress/end on the shared
// handle); receiving is done by one thread only.
unsafe impl Send for Copytool {}
// SAFETY: as above.
unsafe impl Sync for Copytool {}

/// An action begun with the coordinator (`struct hsm_copyaction_private *`).
pub struct RawAction {
    hcp: *mut c_void,
}

// SAFETY: the handle is only used by one thread at a time (moved, never shared), and
// liblustreapi keeps no thread-local state for it.
unsafe impl Send for RawAction {}

impl Copytool {
    /// The descriptor to poll for new lists.
    pub fn fd(&self) -> std::io::Result<c_int> {
        // SAFETY: ct is a registered handle.
        neg(
            unsafe { (self.api.get_fd)(self.ct) },
            "llapi_hsm_copytool_get_fd",
        )
    }

    /// Receives one list; the bytes are copied out (the library's buffer lives only until
    /// the next call). `Ok(None)` when nothing is waiting (non-blocking registration).
    /// Returns the copy and the library's base pointer for [`begin`](Self::begin).
    pub fn recv(&self) -> std::io::Result<Option<(Vec<u8>, *const u8)>> {
        let mut hal: *mut u8 = std::ptr::null_mut();
        let mut size: c_int = 0;
        // SAFETY: valid out-pointers; ct is registered.
        let rc = unsafe { (self.api.recv)(self.ct, &mut hal, &mut size) };
        if rc == -libc::EAGAIN || rc == -libc::EWOULDBLOCK {
            return Ok(None);
        }
        neg(rc, "llapi_hsm_copytool_recv")?;
        if hal.is_null() || size <= 0 {
            return Ok(None);
        }
        // SAFETY: the library says `size` bytes are at `hal`.
        let bytes = unsafe { std::slice::from_raw_parts(hal, size as usize) }.to_vec();
        Ok(Some((bytes, hal as *const u8)))
    }

    /// `llapi_hsm_action_begin` for the item at byte `at` of the list last received at
    /// `base`.
    ///
    /// # Safety
    /// `base` must be the pointer the last [`recv`](Self::recv) returned, with no receive
    /// since, and `at` the offset of an item the parser found inside that list.
    pub unsafe fn begin(
        &self,
        base: *const u8,
        at: usize,
        is_error: bool,
    ) -> std::io::Result<RawAction> {
        let mut hcp: *mut c_void = std::ptr::null_mut();
        // SAFETY: per this function's contract, base+at is an item inside the library's
        // current list buffer.
        let rc = unsafe { (self.api.begin)(&mut hcp, self.ct, base.add(at), -1, 0, is_error) };
        neg(rc, "llapi_hsm_action_begin")?;
        Ok(RawAction { hcp })
    }

    pub fn progress(&self, a: &RawAction, offset: u64, length: u64, total: u64) {
        let he = Extent { offset, length };
        // SAFETY: a begun action handle and a valid extent.
        let rc = unsafe { (self.api.progress)(a.hcp, &he, total, 0) };
        if rc < 0 {
            tracing::warn!(rc, "llapi_hsm_action_progress failed");
        }
    }

    /// The descriptor to write restored data into.
    pub fn action_fd(&self, a: &RawAction) -> std::io::Result<c_int> {
        // SAFETY: a begun action handle.
        neg(
            unsafe { (self.api.action_fd)(a.hcp) },
            "llapi_hsm_action_get_fd",
        )
    }

    /// Ends an action with `errval` (0 for success, else a positive errno).
    pub fn end(
        &self,
        mut a: RawAction,
        offset: u64,
        length: u64,
        errval: i32,
    ) -> std::io::Result<()> {
        let he = Extent { offset, length };
        // SAFETY: a begun action handle, consumed here.
        let rc = unsafe { (self.api.end)(&mut a.hcp, &he, 0, errval) };
        neg(rc, "llapi_hsm_action_end").map(|_| ())
    }
}

impl Drop for Copytool {
    fn drop(&mut self) {
        // SAFETY: ct is registered; unregister frees it.
        unsafe { (self.api.unregister)(&mut self.ct) };
    }
}
