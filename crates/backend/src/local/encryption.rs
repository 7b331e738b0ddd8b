//! fscrypt on the local root (ext4 with `-O encrypt`): the ioctls of [`crate::fscrypt`] on
//! descriptors opened beneath the root without following symlinks.

use std::os::fd::AsFd;
use std::sync::Arc;

use async_trait::async_trait;
use lustre_model::RelPath;

use super::{LocalBackend, beneath, io};
use crate::fscrypt::{self, KeyIdentifier, KeyRemoval, SecretKey};
use crate::{BackendError, Encryption, Result};

impl LocalBackend {
    fn check_fscrypt(&self) -> Result<()> {
        if self.inner.fscrypt {
            Ok(())
        } else {
            Err(BackendError::unsupported(
                "encryption",
                format!(
                    "{} is on a filesystem without fscrypt (ext4 needs -O encrypt)",
                    self.inner.root.display()
                ),
            ))
        }
    }
}

#[async_trait]
impl Encryption for LocalBackend {
    async fn check_encryption(&self) -> Result<()> {
        self.check_fscrypt()
    }

    async fn encrypt_empty_dir(&self, dir: &RelPath, key: Arc<SecretKey>) -> Result<KeyIdentifier> {
        self.check_fscrypt()?;
        let dir = dir.clone();
        self.run(move |inner| {
            let fd = beneath::open_dir(inner.root_fd.as_fd(), Some(&dir))
                .map_err(|e| io(dir.as_str(), e))?;
            fscrypt::encrypt_empty_dir(fd.as_fd(), &key, dir.as_str())
        })
        .await
    }

    async fn add_encryption_key(&self, key: Arc<SecretKey>) -> Result<KeyIdentifier> {
        self.check_fscrypt()?;
        self.run(move |inner| {
            fscrypt::add_key(inner.root_fd.as_fd(), &key)
                .map_err(|e| fscrypt::add_key_error(&inner.root.display().to_string(), e))
        })
        .await
    }

    async fn remove_encryption_key(&self, id: &KeyIdentifier) -> Result<KeyRemoval> {
        self.check_fscrypt()?;
        let id = *id;
        self.run(move |inner| {
            fscrypt::remove_key(inner.root_fd.as_fd(), &id).map_err(|e| io(&inner.root, e))
        })
        .await
    }

    async fn encryption_policy(&self, dir: &RelPath) -> Result<Option<KeyIdentifier>> {
        self.check_fscrypt()?;
        let dir = dir.clone();
        self.run(move |inner| {
            let fd = beneath::open_dir(inner.root_fd.as_fd(), Some(&dir))
                .map_err(|e| io(dir.as_str(), e))?;
            fscrypt::policy_of(fd.as_fd()).map_err(|e| io(dir.as_str(), e))
        })
        .await
    }
}
