//! Remove: deleting the archived copy of a file that still has its data.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

use lustre_model::{HS_ARCHIVED, HS_DIRTY, HS_EXISTS};

use super::{HsmEngine, OpReport, Outcome, blocking, flags};
use crate::error::{HsmError, Result};
use crate::meta::EntryKind;
use crate::pin;

impl HsmEngine {
    /// Deletes the archived copy of a file that still has its data. Refuses for a released
    /// file (the archive holds its only copy). Only the version the file itself pins is
    /// deleted: a key now holding another file's version is left alone. For a path that no
    /// longer exists, the object at its key may be pinned by a renamed stub, so it is moved
    /// aside (gc frees it once nothing pins it) rather than deleted.
    pub async fn remove(&self, path: &Path) -> Result<OpReport> {
        let started = Instant::now();
        let res = self.remove_inner(path).await;
        self.finish("remove", started, res)
    }

    async fn remove_inner(&self, path: &Path) -> Result<OpReport> {
        let (abs, key) = self.locate(path)?;
        let entry = match self.open(path).await {
            Ok((entry, _)) => entry,
            Err(HsmError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                self.store.preserve(&key, None).await?;
                self.store.delete(&key).await?;
                return Ok(Self::report(
                    "remove",
                    &abs,
                    &key,
                    Outcome::Done,
                    Some("no file at this path: the object was moved aside for gc".into()),
                ));
            }
            Err(e) => return Err(e),
        };
        if entry.kind != EntryKind::File {
            self.store.delete(&key).await?;
            return Ok(Self::report("remove", &abs, &key, Outcome::Done, None));
        }
        let st = self.backend.hsm_state(&abs).await?;
        if st.flags.released {
            return Err(HsmError::refused(
                &abs,
                "released: the archive holds its only copy; restore it first",
            ));
        }
        let (file, pinned) = blocking(move || {
            let file = entry.file()?;
            let pinned = pin::read(file.as_fd(), &entry.abs)?;
            Ok((file, pinned))
        })
        .await?;
        let mut detail = None;
        match pinned {
            Some(p) => {
                let pinned_key = p.object_key()?;
                match self.store.head(&pinned_key).await? {
                    Some(info) if info.version_id(&pinned_key) == p.version => {
                        self.store.delete(&pinned_key).await?;
                    }
                    _ => {
                        detail = Some(format!(
                            "`{}` holds another file's version now; left in place (gc frees this file's old version)",
                            p.key
                        ));
                    }
                }
            }
            None => self.store.delete(&key).await?,
        }
        {
            let a = abs.clone();
            blocking(move || pin::clear(file.as_fd(), &a)).await?;
        }
        self.backend
            .hsm_mark(
                &abs,
                flags(0),
                flags(HS_ARCHIVED | HS_EXISTS | HS_DIRTY),
                None,
            )
            .await?;
        Ok(Self::report("remove", &abs, &key, Outcome::Done, detail))
    }
}
