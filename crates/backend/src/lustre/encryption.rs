//! fscrypt on a Lustre client mount: the ioctls of [`crate::fscrypt`], as on `local`. Lustre
//! clients do fscrypt since 2.14 and have no `lfs` command for it (`encryption.md`), so
//! nothing here goes through the command runner except the client's version.
//!
//! - The controller sets a share's policy on its own client mount, `<mount_point>/<dir>`,
//!   opened beneath the mount point without following symlinks. An ioctl cannot be sent over
//!   SSH: when commands go to `mds_host`, encryption is absent, with the reason.
//! - A node adds and removes keys on its shared client mount `<node_mount_root>/<fsname>`,
//!   the one every `bind` mode volume is bound from. A key belongs to one client mount (one
//!   superblock), and a `direct` mode fileset mount is a client of its own, made after the
//!   key is added; so encrypted volumes on `lustre` are `bind` mode volumes (the CSI
//!   controller refuses the others).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use lustre_model::{RelPath, parse_lctl_version};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::mount::{self, KeyStep};
use super::{LustreBackend, On, parse_error};
use crate::fscrypt::{self, KeyIdentifier, KeyRemoval, SecretKey};
use crate::local::beneath;
use crate::{BackendError, Encryption, Result};

/// The first Lustre client with fscrypt (`encryption.md`: "Enabled by default since 2.14").
const FSCRYPT_SINCE: (u32, u32) = (2, 14);

impl LustreBackend {
    /// Why the controller cannot set policies with this configuration; `None` when it can.
    pub(super) fn encryption_absent_because(&self) -> Option<String> {
        self.inner.config.mds_host.as_ref().map(|host| {
            format!(
                "commands go over SSH to the MDS host {}, and the fscrypt ioctls cannot: they \
                 need the filesystem's client mount on the controller's host (no mds_host, \
                 the client mounted at mount_point)",
                host.host
            )
        })
    }

    fn check_controller_encryption(&self) -> Result<()> {
        match self.encryption_absent_because() {
            Some(why) => Err(BackendError::unsupported("encryption", why)),
            None => Ok(()),
        }
    }

    /// This host's Lustre client must be 2.14 or later; asked once (`lctl get_param
    /// version`), and asked again while it is older, so an upgraded client is seen.
    async fn check_fscrypt_client(&self) -> Result<()> {
        if self.inner.fscrypt_client.get().is_some() {
            return Ok(());
        }
        let argv = self.lctl(["get_param", "version"]);
        let out = self.run_ok(On::Node, &argv).await?;
        let version = parse_lctl_version(&out.stdout_text()).map_err(|e| parse_error(&argv, e))?;
        let (major, minor) = FSCRYPT_SINCE;
        if !version.at_least(major, minor) {
            return Err(BackendError::unsupported(
                "encryption",
                format!(
                    "this host's Lustre client {version} predates client-side encryption \
                     (fscrypt, Lustre {major}.{minor})"
                ),
            ));
        }
        let _ = self.inner.fscrypt_client.set(());
        Ok(())
    }

    /// Runs `f` on `<mount_point>/<dir>` on the blocking pool, bounded by the command timeout
    /// (an ioctl on a hung server blocks in the kernel).
    async fn on_share_dir<T: Send + 'static>(
        &self,
        dir: &RelPath,
        f: impl FnOnce(&OwnedFd, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.check_controller_encryption()?;
        self.check_fscrypt_client().await?;
        let root = PathBuf::from(&self.inner.mount_point);
        let (dir, what) = (dir.clone(), self.path(dir));
        let timeout = self.runner(On::Mds).default_timeout();
        mount::bounded(format!("fscrypt on {what}"), timeout, move || {
            let root_fd = open_fscrypt_root(&root)?;
            let fd = beneath::open_dir(root_fd.as_fd(), Some(&dir))
                .map_err(|e| fscrypt::errno_error(&what, e))?;
            f(&fd, &what)
        })
        .await?
    }
}

/// The controller's client mount, which must do fscrypt.
fn open_fscrypt_root(root: &Path) -> Result<OwnedFd> {
    let root_fd = open_mount_root(root)?;
    if !fscrypt::supported(root_fd.as_fd()) {
        return Err(BackendError::unsupported(
            "encryption",
            format!(
                "{} has no fscrypt (a Lustre client mounted with noencrypt, or nothing \
                 mounted there)",
                root.display()
            ),
        ));
    }
    Ok(root_fd)
}

/// The client mount's root, the trusted start of every lookup beneath it.
pub(super) fn open_mount_root(root: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::open(root, flags, Mode::empty()).map_err(|e| BackendError::io(root, e.into()))
}

#[async_trait]
impl Encryption for LustreBackend {
    async fn check_encryption(&self) -> Result<()> {
        self.check_controller_encryption()?;
        self.check_fscrypt_client().await?;
        let root = PathBuf::from(&self.inner.mount_point);
        let timeout = self.runner(On::Mds).default_timeout();
        let what = format!("fscrypt probe of {}", root.display());
        mount::bounded(what, timeout, move || open_fscrypt_root(&root).map(drop)).await?
    }

    async fn encrypt_empty_dir(&self, dir: &RelPath, key: Arc<SecretKey>) -> Result<KeyIdentifier> {
        self.on_share_dir(dir, move |fd, what| {
            fscrypt::encrypt_empty_dir(fd.as_fd(), &key, what)
        })
        .await
    }

    async fn add_encryption_key(&self, key: Arc<SecretKey>) -> Result<KeyIdentifier> {
        self.check_fscrypt_client().await?;
        let shared = self.shared_mount_path();
        let added = mount::on_shared_mount(self, KeyStep::Add, move |fd, what| {
            let id = fscrypt::add_key(fd, &key).map_err(|e| fscrypt::add_key_error(what, e))?;
            mount::hold_key(&shared, id);
            Ok(id)
        })
        .await?;
        added.ok_or_else(|| {
            BackendError::InvalidState("the shared client mount was not there to add a key".into())
        })
    }

    async fn remove_encryption_key(&self, id: &KeyIdentifier) -> Result<KeyRemoval> {
        // No version check: a node that could not add a key has none to remove, and an
        // unpublish must not fail for it.
        let (id, shared) = (*id, self.shared_mount_path());
        let held = shared.clone();
        let removed = mount::on_shared_mount(self, KeyStep::Remove, move |fd, what| {
            let removal = match fscrypt::remove_key(fd, &id) {
                // No fscrypt on this mount: no key was ever added to it.
                Err(Errno::ENOTTY | Errno::EOPNOTSUPP) => Ok(KeyRemoval::default()),
                other => other.map_err(|e| fscrypt::errno_error(what, e)),
            }?;
            mount::forget_key(&held, &id);
            Ok(removal)
        })
        .await?;
        match removed {
            Some(removal) => Ok(removal),
            None => {
                // Not mounted: the key went with the client mount.
                mount::forget_key(&shared, &id);
                Ok(KeyRemoval::default())
            }
        }
    }

    async fn encryption_policy(&self, dir: &RelPath) -> Result<Option<KeyIdentifier>> {
        self.on_share_dir(dir, |fd, what| {
            fscrypt::policy_of(fd.as_fd()).map_err(|e| fscrypt::errno_error(what, e))
        })
        .await
    }
}
