//! Release: freeing the data of an archived, unchanged file, refusing otherwise.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

use super::{HsmEngine, OpReport, Outcome};
use crate::error::{HsmError, Result};
use crate::pin;
use crate::posix;

impl HsmEngine {
    /// Frees the data of an archived, unchanged file. Refuses (changing nothing) unless the
    /// version the file pins exists in the store with the file's size.
    pub async fn release(&self, path: &Path) -> Result<OpReport> {
        let started = Instant::now();
        let res = self.release_inner(path).await;
        self.finish("release", started, res)
    }

    async fn release_inner(&self, path: &Path) -> Result<OpReport> {
        let (entry, key) = self.open(path).await?;
        let abs = entry.abs.clone();
        crate::guard::check_release(
            &self.backend.capabilities(),
            self.cfg.allow_unguarded_release,
            &abs,
            entry.fd.as_ref().map(std::os::fd::AsFd::as_fd),
        )?;
        let st = self.backend.hsm_state(&abs).await?;
        if st.flags.released && !st.flags.dirty {
            return Ok(Self::report(
                "release",
                &abs,
                &key,
                Outcome::Skipped,
                Some("already released".into()),
            ));
        }
        if !(st.flags.archived && st.flags.exists) {
            return Err(HsmError::refused(&abs, "not archived"));
        }
        if st.flags.dirty {
            return Err(HsmError::refused(
                &abs,
                "changed since it was archived (dirty)",
            ));
        }
        if st.flags.no_release {
            return Err(HsmError::refused(&abs, "marked never_release"));
        }
        let file = entry.file()?;
        let pinned = pin::read(file.as_fd(), &abs)?.ok_or_else(|| {
            HsmError::refused(
                &abs,
                "no archived version is pinned on the file (archived before pins); archive it again",
            )
        })?;
        let source = match self.store.locate_pinned(&pinned).await {
            Err(HsmError::NoArchive { key, store }) => {
                return Err(HsmError::refused(
                    &abs,
                    format!("the archived copy `{key}` is missing from {store}"),
                ));
            }
            other => other?,
        };
        let cur = posix::version_of(&abs, &file)?;
        if !source.exact || source.info.size != cur.size || pinned.size != cur.size {
            return Err(HsmError::refused(
                &abs,
                format!(
                    "the pinned archived version `{}` is missing or does not match the file",
                    pinned.key
                ),
            ));
        }
        // Where a restore daemon watches, the backend leaves the exclusion during the punch
        // to it (a write lease across the punch would stall for the kernel's
        // lease-break-time); the mode is kept until the release is done (see `guard`).
        let mode = crate::guard::release_mode(
            &self.backend.capabilities(),
            self.cfg.allow_unguarded_release,
            &abs,
            Some(file.as_fd()),
        )?;
        // The release takes a write lease, which our own open descriptor would refuse.
        drop((file, entry));
        match &mode {
            crate::guard::ReleaseMode::Watched(_) => self.backend.hsm_release_watched(&abs).await?,
            crate::guard::ReleaseMode::Kernel | crate::guard::ReleaseMode::Unguarded => {
                self.backend.hsm_release(&abs).await?
            }
        }
        drop(mode);
        let mut r = Self::report("release", &abs, &key, Outcome::Done, None);
        r.bytes = cur.size;
        Ok(r)
    }
}
