//! Release: freeing the data of an archived, unchanged file, refusing otherwise.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Instant;

use super::{HsmEngine, OpReport, Outcome, blocking};
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
        let caps = self.backend.capabilities();
        let allow_unguarded = self.cfg.allow_unguarded_release;
        // The guard check reads mountinfo and takes lock files: off the async workers.
        let entry = blocking(move || {
            crate::guard::check_release(
                &caps,
                allow_unguarded,
                &entry.abs,
                entry.fd.as_ref().map(AsFd::as_fd),
            )?;
            Ok(entry)
        })
        .await?;
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
        let (entry, file, pinned) = blocking(move || {
            let file = entry.file()?;
            let pinned = pin::read(file.as_fd(), &entry.abs)?;
            Ok((entry, file, pinned))
        })
        .await?;
        let pinned = pinned.ok_or_else(|| {
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
        let (exact, archived_size) = (source.exact, source.info.size);
        let caps = self.backend.capabilities();
        let allow_unguarded = self.cfg.allow_unguarded_release;
        let (cur, mode) = blocking(move || {
            let abs = &entry.abs;
            let cur = posix::version_of(abs, &file)?;
            if !exact || archived_size != cur.size || pinned.size != cur.size {
                return Err(HsmError::refused(
                    abs,
                    format!(
                        "the pinned archived version `{}` is missing or does not match the file",
                        pinned.key
                    ),
                ));
            }
            // Where a restore daemon watches, the backend leaves the exclusion during the
            // punch to it (a write lease across the punch would stall for the kernel's
            // lease-break-time); the mode is kept until the release is done (see `guard`).
            let mode = crate::guard::release_mode(&caps, allow_unguarded, abs, Some(file.as_fd()))?;
            // The release takes a write lease, which our own open descriptor would refuse.
            drop((file, entry));
            Ok((cur, mode))
        })
        .await?;
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
