//! What a local file's data looked like, and a write lease on it: shared by the local
//! backend's HSM state and the HSM mover, so both judge "unchanged since archived" the same way.
//!
//! A plain Linux file has no data version as Lustre's, so ours is the size, mtime, inode
//! number and generation (`FS_IOC_GETVERSION`), plus the ctime.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

mod ioctl {
    // `FS_IOC_GETVERSION` = `_IOR('v', 1, long)`: the inode generation.
    nix::ioctl_read!(fs_ioc_getversion, b'v', 1, libc::c_long);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataVersion {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub generation: u64,
}

impl DataVersion {
    /// Of an open file.
    pub fn of_file(file: &File) -> std::io::Result<Self> {
        let md = file.metadata()?;
        let mut generation: libc::c_long = 0;
        // SAFETY: FS_IOC_GETVERSION writes one `long` through the pointer, which is valid.
        if unsafe { ioctl::fs_ioc_getversion(file.as_raw_fd(), &mut generation) }.is_err() {
            // tmpfs and others have no generation: the inode number and times still tell.
            generation = 0;
        }
        Ok(Self {
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
            generation: generation as u64,
        })
    }

    /// Same content, as far as can be told without reading it. The ctime is left out: our own
    /// xattr writes move it.
    pub fn same_data(&self, other: &Self) -> bool {
        self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ino == other.ino
            && self.generation == other.generation
    }

    /// The string recorded in object metadata.
    pub fn token(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.size, self.mtime_ns, self.ino, self.generation
        )
    }
}

/// Why a lease could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRefused {
    /// Another process has the file open.
    Busy,
}

/// A write lease on an open file for as long as it lives: no other process has the file open,
/// and a new open waits until the lease is dropped (or the lease-break time passes).
pub struct Lease<'a> {
    file: &'a File,
    held: bool,
}

impl<'a> Lease<'a> {
    /// Takes the lease. Where leases are unavailable (leases off, or not the owner without
    /// CAP_LEASE) it returns a lease that holds nothing, and the caller's data-version check
    /// still guards, with a small window; `held()` tells which.
    pub fn take(file: &'a File) -> Result<Self, LeaseRefused> {
        // SAFETY: plain fcntl on a valid fd.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) } == 0 {
            return Ok(Self { file, held: true });
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) => Err(LeaseRefused::Busy),
            _ => Ok(Self { file, held: false }),
        }
    }

    pub fn held(&self) -> bool {
        self.held
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.held {
            // SAFETY: plain fcntl on a valid fd.
            unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        }
    }
}

#[cfg(test)]
mod tests {
    /// nix's `_IOR` gives the number the kernel headers spell out for `FS_IOC_GETVERSION`.
    #[test]
    fn getversion_request_is_the_kernels() {
        let request = nix::request_code_read!(b'v', 1, std::mem::size_of::<libc::c_long>());
        assert_eq!(request as u64, 0x8008_7601);
    }
}
