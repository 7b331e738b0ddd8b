//! Block volumes on the node: a share's image file exposed as a block device.
//!
//! The kernel offers two ways to do that without a filesystem driver of ours: loop devices
//! and ublk (a block device served from user space through io_uring). [`probe`] looks for
//! both, and [`choose`] picks loop, the only one built here: a ublk server is not written
//! yet, so ublk alone is a clear error, never a pretend device.
//!
//! Loop devices are driven by their ioctls (`linux/loop.h`): `LOOP_CTL_GET_FREE` for a free
//! number, `LOOP_CONFIGURE` to bind the image in one step (with direct I/O when the backing
//! file takes it, and read-only when asked), `LOOP_GET_STATUS64` to tell which file a device
//! holds (by the backing file's device and inode, never by a name), `LOOP_SET_CAPACITY` after
//! the image grew, `LOOP_CLR_FD` to detach. No `LO_FLAGS_AUTOCLEAR`: it detaches a device at
//! its last close, and between publish and the pod opening the device nothing holds it open.
//! A detach while a pod still has the device open is deferred by the kernel to the last close.
//!
//! Everything here blocks; callers run it in [`crate::mount::FsCalls`].

use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::{BackendError, Result};

/// The name of a block volume's image file inside its share directory.
pub const BLOCK_IMAGE: &str = "lustrekit-block.img";

pub const LOOP_CONTROL: &str = "/dev/loop-control";
pub const UBLK_CONTROL: &str = "/dev/ublk-control";

/// Which block-device drivers this node's kernel offers (their control nodes exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSupport {
    pub ublk: bool,
    pub loop_device: bool,
}

/// Looks for `/dev/ublk-control` and `/dev/loop-control`.
pub fn probe() -> KernelSupport {
    let is_char = |p: &str| {
        std::fs::metadata(p)
            .map(|m| m.file_type().is_char_device())
            .unwrap_or(false)
    };
    KernelSupport {
        ublk: is_char(UBLK_CONTROL),
        loop_device: is_char(LOOP_CONTROL),
    }
}

/// How a block volume's image becomes a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    Loop,
}

/// Loop when the kernel has it. ublk is probed but not served (no ublk server is built), so
/// a node with ublk alone cannot publish block volumes, and says why.
pub fn choose(support: KernelSupport) -> std::result::Result<Exporter, String> {
    match support {
        KernelSupport {
            loop_device: true, ..
        } => Ok(Exporter::Loop),
        KernelSupport { ublk: true, .. } => Err(format!(
            "this node has ublk ({UBLK_CONTROL}) but no loop devices ({LOOP_CONTROL}); \
             lustrekit serves block volumes through loop only (no ublk server is built)"
        )),
        _ => Err(format!(
            "this node has neither {LOOP_CONTROL} nor {UBLK_CONTROL}: load the loop module"
        )),
    }
}

// ---------------------------------------------------------------- loop ioctls

const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

impl LoopInfo64 {
    fn zeroed() -> Self {
        Self {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        }
    }
}

/// `struct loop_config` (Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

mod ioctl {
    use super::{LoopConfig, LoopInfo64};
    nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
    nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
    nix::ioctl_read_bad!(loop_get_status64, 0x4C05, LoopInfo64);
    nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
    nix::ioctl_none_bad!(loop_set_capacity, 0x4C07);
    nix::ioctl_read!(blk_get_size64, 0x12, 114, u64);
}

/// A bound loop device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// Its device number.
    pub rdev: u64,
    pub read_only: bool,
}

fn io_err(path: impl Into<PathBuf>, e: impl Into<io::Error>) -> BackendError {
    BackendError::io(path, e.into())
}

fn open_device(path: &Path, write: bool) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// The status of the loop device open at `dev`; `None` when it holds no file.
fn status(dev: &File, path: &Path) -> Result<Option<LoopInfo64>> {
    let mut info = LoopInfo64::zeroed();
    // SAFETY: info is a valid, writable loop_info64.
    match unsafe { ioctl::loop_get_status64(dev.as_raw_fd(), &mut info) } {
        Ok(_) => Ok(Some(info)),
        Err(Errno::ENXIO) => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// The loop devices the kernel has bound to a block image (a backing file named
/// [`BLOCK_IMAGE`]), from `/sys/block/loop*/loop` (which exists only while a device is
/// bound): their `/dev` paths and device numbers. The name only narrows the search, so that
/// other loop devices on the node are not even opened; identity is checked by the caller.
fn bound_loop_devices() -> Result<Vec<(PathBuf, u64)>> {
    let sys = Path::new("/sys/block");
    let entries = std::fs::read_dir(sys).map_err(|e| io_err(sys, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(sys, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        let dir = entry.path();
        let backing = match std::fs::read_to_string(dir.join("loop/backing_file")) {
            Ok(text) => backing_path(&text),
            // Not bound, or detached since the listing.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(dir.join("loop/backing_file"), e)),
        };
        if backing.file_name().and_then(|n| n.to_str()) != Some(BLOCK_IMAGE) {
            continue;
        }
        let Some(rdev) = read_dev_number(&dir.join("dev"))? else {
            continue;
        };
        out.push((PathBuf::from("/dev").join(name), rdev));
    }
    Ok(out)
}

/// A sysfs `backing_file` as a path: the kernel's `d_path`, which marks a file unlinked
/// since with ` (deleted)`; the device still holds it, under its old name.
fn backing_path(text: &str) -> PathBuf {
    let text = text.trim_end_matches('\n');
    PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(text))
}

/// A sysfs `dev` file (`MAJ:MIN`) as a device number; `None` when it vanished.
fn read_dev_number(file: &Path) -> Result<Option<u64>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(file, e)),
    };
    let parsed = text
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some((major, minor)) => Ok(Some(libc::makedev(major, minor))),
        None => Err(BackendError::InvalidState(format!(
            "{}: not a device number: {text:?}",
            file.display()
        ))),
    }
}

/// Opens `/dev/loopN` and checks that it is the device numbered `rdev` (a stale or
/// foreign node at that name is refused).
fn open_checked(path: &Path, rdev: u64, write: bool) -> Result<File> {
    let dev = open_device(path, write).map_err(|e| io_err(path, e))?;
    let meta = dev.metadata().map_err(|e| io_err(path, e))?;
    if !meta.file_type().is_block_device() || meta.rdev() != rdev {
        return Err(BackendError::InvalidState(format!(
            "{} is not the loop device {}:{}",
            path.display(),
            libc::major(rdev),
            libc::minor(rdev)
        )));
    }
    Ok(dev)
}

/// The loop device that holds `image` (matched by the backing file's device and inode, as
/// the kernel recorded them), if one does and is not on its way out.
pub fn find_attached(image: BorrowedFd<'_>) -> Result<Option<LoopDevice>> {
    let st = nix::sys::stat::fstat(image).map_err(|e| io_err("block image", e))?;
    for (path, rdev) in bound_loop_devices()? {
        let dev = match open_checked(&path, rdev, false) {
            Ok(dev) => dev,
            // Detached (or removed) since the listing.
            Err(BackendError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(info) = status(&dev, &path)? else {
            continue;
        };
        // We never set autoclear: a device that has it was detached while something still
        // held it open, and goes at that last close. It must not serve a new publish.
        if info.lo_device == st.st_dev
            && info.lo_inode == st.st_ino
            && info.lo_flags & LO_FLAGS_AUTOCLEAR == 0
        {
            return Ok(Some(LoopDevice {
                path,
                rdev,
                read_only: info.lo_flags & LO_FLAGS_READ_ONLY != 0,
            }));
        }
    }
    Ok(None)
}

/// The bound loop device numbered `rdev` and the file it holds (as sysfs names it), or
/// `None` when `rdev` is no bound loop device.
pub fn loop_device_of(rdev: u64) -> Result<Option<(LoopDevice, PathBuf)>> {
    let sys = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(rdev),
        libc::minor(rdev)
    ));
    let backing = match std::fs::read_to_string(sys.join("loop/backing_file")) {
        Ok(text) => backing_path(&text),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(sys.join("loop/backing_file"), e)),
    };
    let read_only = std::fs::read_to_string(sys.join("ro"))
        .map_err(|e| io_err(sys.join("ro"), e))?
        .trim()
        == "1";
    let uevent = std::fs::read_to_string(sys.join("uevent")).map_err(|e| io_err(&sys, e))?;
    let Some(name) = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| n.starts_with("loop") && !n.contains('/'))
    else {
        return Err(BackendError::InvalidState(format!(
            "{}: no loop DEVNAME in uevent",
            sys.display()
        )));
    };
    Ok(Some((
        LoopDevice {
            path: PathBuf::from("/dev").join(name),
            rdev,
            read_only,
        },
        backing,
    )))
}

/// Binds `image` to a free loop device: direct I/O where the backing file takes it,
/// read-only when asked. A number another process takes first is retried a few times.
pub fn attach(image: BorrowedFd<'_>, read_only: bool) -> Result<LoopDevice> {
    let control =
        open_device(Path::new(LOOP_CONTROL), true).map_err(|e| io_err(LOOP_CONTROL, e))?;
    let mut last = None;
    for _ in 0..8 {
        // SAFETY: the control device takes no argument for this request.
        let number = unsafe { ioctl::loop_ctl_get_free(control.as_raw_fd()) }
            .map_err(|e| io_err(LOOP_CONTROL, e))?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let dev = open_device(&path, !read_only).map_err(|e| io_err(&path, e))?;
        let meta = dev.metadata().map_err(|e| io_err(&path, e))?;
        let mut flags = LO_FLAGS_DIRECT_IO | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        loop {
            let mut info = LoopInfo64::zeroed();
            info.lo_flags = flags;
            let config = LoopConfig {
                fd: image.as_raw_fd() as u32,
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            // SAFETY: config is a valid loop_config and image an open descriptor.
            match unsafe { ioctl::loop_configure(dev.as_raw_fd(), &config) } {
                Ok(_) => {
                    return Ok(LoopDevice {
                        path,
                        rdev: meta.rdev(),
                        read_only,
                    });
                }
                // Kernels that refuse direct I/O on this backing file (alignment, or a
                // filesystem without O_DIRECT): buffered I/O then.
                Err(Errno::EINVAL) if flags & LO_FLAGS_DIRECT_IO != 0 => {
                    flags &= !LO_FLAGS_DIRECT_IO;
                }
                Err(Errno::EBUSY) => {
                    last = Some(Errno::EBUSY);
                    break;
                }
                Err(e) => return Err(io_err(&path, e)),
            }
        }
    }
    Err(io_err(LOOP_CONTROL, last.unwrap_or(Errno::EBUSY)))
}

/// Detaches a loop device; one already free is fine. While something still has it open the
/// kernel detaches it at the last close.
pub fn detach(device: &LoopDevice) -> Result<()> {
    let dev = match open_checked(&device.path, device.rdev, false) {
        Ok(dev) => dev,
        Err(BackendError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    // SAFETY: LOOP_CLR_FD takes no argument.
    match unsafe { ioctl::loop_clr_fd(dev.as_raw_fd()) } {
        Ok(_) | Err(Errno::ENXIO) => Ok(()),
        Err(e) => Err(io_err(&device.path, e)),
    }
}

/// Makes a loop device take its backing file's new size; returns the device's size.
pub fn refresh_capacity(device: &LoopDevice) -> Result<u64> {
    let dev = open_checked(&device.path, device.rdev, false)?;
    // SAFETY: LOOP_SET_CAPACITY takes no argument.
    unsafe { ioctl::loop_set_capacity(dev.as_raw_fd()) }.map_err(|e| io_err(&device.path, e))?;
    device_size(dev.as_fd(), &device.path)
}

/// The size of an open block device, in bytes.
pub fn device_size(dev: BorrowedFd<'_>, path: &Path) -> Result<u64> {
    let mut size = 0u64;
    // SAFETY: size is a valid u64 to write into.
    unsafe { ioctl::blk_get_size64(dev.as_raw_fd(), &mut size) }.map_err(|e| io_err(path, e))?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_is_chosen_and_ublk_alone_is_refused() {
        let both = KernelSupport {
            ublk: true,
            loop_device: true,
        };
        assert_eq!(choose(both), Ok(Exporter::Loop));
        let loop_only = KernelSupport {
            ublk: false,
            loop_device: true,
        };
        assert_eq!(choose(loop_only), Ok(Exporter::Loop));
        let ublk_only = KernelSupport {
            ublk: true,
            loop_device: false,
        };
        assert!(choose(ublk_only).unwrap_err().contains("no ublk server"));
        let none = KernelSupport {
            ublk: false,
            loop_device: false,
        };
        assert!(choose(none).unwrap_err().contains("load the loop module"));
    }

    #[test]
    fn backing_files_read_as_paths() {
        assert_eq!(
            backing_path("/a/lustrekit-block.img\n"),
            Path::new("/a/lustrekit-block.img")
        );
        assert_eq!(
            backing_path("/a/lustrekit-block.img (deleted)\n"),
            Path::new("/a/lustrekit-block.img")
        );
    }

    #[test]
    fn kernel_structs_have_their_c_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn this_machine_is_probed() {
        // Whatever the kernel has, the probe answers without error and agrees with /dev.
        let support = probe();
        assert_eq!(support.loop_device, Path::new(LOOP_CONTROL).exists());
        assert_eq!(support.ublk, Path::new(UBLK_CONTROL).exists());
    }

    #[test]
    #[ignore = "needs root"]
    fn an_image_is_attached_found_grown_and_detached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(BLOCK_IMAGE);
        let image = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("image");
        image.set_len(8 << 20).expect("size");
        let device = attach(image.as_fd(), false).expect("attach");
        let found = find_attached(image.as_fd()).expect("find");
        assert_eq!(found.as_ref(), Some(&device));
        let (by_number, backing) = loop_device_of(device.rdev).expect("of").expect("bound");
        assert_eq!(by_number.path, device.path);
        assert_eq!(
            backing.file_name().and_then(|n| n.to_str()),
            Some(BLOCK_IMAGE)
        );
        image.set_len(16 << 20).expect("grow");
        assert_eq!(refresh_capacity(&device).expect("capacity"), 16 << 20);
        // Detached while something holds it open: the kernel defers it to that close, and
        // the device is no longer offered for the image meanwhile.
        let holder = std::fs::File::open(&device.path).expect("hold");
        detach(&device).expect("detach");
        assert_eq!(find_attached(image.as_fd()).expect("find"), None);
        assert!(
            loop_device_of(device.rdev).expect("of").is_some(),
            "deferred"
        );
        drop(holder);
        detach(&device).expect("detach again");
        assert_eq!(find_attached(image.as_fd()).expect("find"), None);
        assert!(loop_device_of(device.rdev).expect("of").is_none());
    }
}
