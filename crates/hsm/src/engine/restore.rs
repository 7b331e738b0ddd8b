//! Restore: a released file's data back, through a temporary file renamed over the stub
//! or in place through an open descriptor (the restore daemon's).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use lustre_model::{HS_ARCHIVED, HS_DIRTY, HS_EXISTS, HS_RELEASED, HsmState};
use object_store::path::Path as ObjPath;
use tokio_util::task::AbortOnDropHandle;

use super::{HsmEngine, OpReport, Outcome, RESTORE_TEMP_PREFIX, blocking, flags};
use crate::error::{HsmError, Result};
use crate::meta::FileMeta;
use crate::pin::{self, Pin};
use crate::posix::{self, DataVersion};
use crate::store::PinnedSource;

/// Where a restore reads from, and what it must verify.
struct RestoreSource {
    source: PinnedSource,
    /// The checksum the data must have: the pinned one, else the object's own.
    expected: Option<String>,
    pin: Option<Pin>,
    state: HsmState,
}

impl HsmEngine {
    /// Brings a released file's data back: ranged parallel GETs of the version it pins into
    /// a temporary file beside it (random name, created exclusively), the pinned checksum
    /// verified, then an atomic rename over the stub. On a mismatch the stub is untouched
    /// and stays released.
    pub async fn restore(&self, path: &Path) -> Result<OpReport> {
        let started = Instant::now();
        let res = self.restore_inner(path).await;
        self.finish("restore", started, res)
    }

    /// Where both restores start: the file must be released, and the version it pins (or,
    /// for stubs from before pins, the object at its key) found. `Err(report)` is the
    /// "nothing to do" answer.
    async fn restore_source(
        &self,
        abs: &Path,
        key: &ObjPath,
        file: &Arc<std::fs::File>,
    ) -> Result<std::result::Result<RestoreSource, OpReport>> {
        let st = self.backend.hsm_state(abs).await?;
        if !st.flags.released {
            return Ok(Err(Self::report(
                "restore",
                abs,
                key,
                Outcome::Skipped,
                Some("not released".into()),
            )));
        }
        let pinned = {
            let (f, a) = (file.clone(), abs.to_path_buf());
            blocking(move || pin::read(f.as_fd(), &a)).await?
        };
        let (source, expected) = match &pinned {
            Some(p) => {
                let s = self.store.locate_pinned(p).await?;
                let expected = p
                    .checksum
                    .clone()
                    .or_else(|| FileMeta::from_map(&s.info.meta, 0, 0, 0).checksum);
                (s, expected)
            }
            None => {
                tracing::warn!(file = %abs.display(), "no pin on a released file; restoring from its key");
                let info = self
                    .store
                    .head(key)
                    .await?
                    .ok_or_else(|| HsmError::NoArchive {
                        store: self.store.name().to_string(),
                        key: key.to_string(),
                    })?;
                let expected = FileMeta::from_map(&info.meta, 0, 0, 0).checksum;
                (
                    PinnedSource {
                        key: key.clone(),
                        if_match: info.e_tag.clone(),
                        info,
                        exact: true,
                    },
                    expected,
                )
            }
        };
        Ok(Ok(RestoreSource {
            source,
            expected,
            pin: pinned,
            state: st,
        }))
    }

    fn check_stub_size(abs: &Path, archived: u64, stub: u64) -> Result<()> {
        if archived != stub {
            return Err(HsmError::refused(
                abs,
                format!("archived copy has {archived} bytes, the stub {stub}"),
            ));
        }
        Ok(())
    }

    fn verify(abs: &Path, src: &RestoreSource, actual: &str) -> Result<Option<String>> {
        match &src.expected {
            Some(expected) if expected != actual => Err(HsmError::Checksum {
                path: abs.to_path_buf(),
                expected: expected.clone(),
                actual: actual.to_string(),
            }),
            Some(_) => Ok(None),
            None => Ok(Some(
                "the archived copy has no checksum; size checked only".into(),
            )),
        }
    }

    async fn restore_inner(&self, path: &Path) -> Result<OpReport> {
        let (entry, key) = self.open(path).await?;
        let entry = Arc::new(entry);
        let abs = entry.abs.clone();
        let stub = {
            let e = entry.clone();
            Arc::new(blocking(move || e.file()).await?)
        };
        let src = match self.restore_source(&abs, &key, &stub).await? {
            Ok(source) => source,
            Err(skipped) => return Ok(skipped),
        };
        let stub_v0 = {
            let (s, a) = (stub.clone(), abs.clone());
            blocking(move || {
                posix::try_flock(&a, &s)?;
                posix::version_of(&a, &s)
            })
            .await?
        };
        Self::check_stub_size(&abs, src.source.info.size, stub_v0.size)?;
        // The data goes into an unnamed file where the filesystem has them (a kill before
        // the flip leaves nothing), else into a random name created exclusively.
        let (mut tmp_name, tmpf) = {
            let e = entry.clone();
            blocking(move || {
                let dir = e.abs.parent().unwrap_or(&e.abs).to_path_buf();
                match posix::create_unnamed_in(&e.parent, &dir)? {
                    Some(f) => Ok((None, f)),
                    None => posix::create_temp_in(&e.parent, RESTORE_TEMP_PREFIX, &dir)
                        .map(|(n, f)| (Some(n), f)),
                }
            })
            .await?
        };
        let res = self
            .restore_into(&entry, &key, &src, &mut tmp_name, tmpf, &stub, stub_v0)
            .await;
        if res.is_err()
            && let Some(tmp_name) = tmp_name
        {
            let e = entry.clone();
            let _ = blocking(move || {
                nix::unistd::unlinkat(
                    e.parent.as_fd(),
                    tmp_name.as_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )
                .map_err(|x| HsmError::io(&e.abs, x.into()))
            })
            .await;
        }
        res
    }

    /// Fetches `size` bytes of `key` with ranged parallel GETs (each requiring ETag
    /// `if_match` when given) and writes them at the same offsets into `file` (shown as
    /// `write_path` in errors), hashing in order. Returns the `blake3:` checksum of what
    /// was written; the caller compares it with the pinned one.
    #[allow(clippy::too_many_arguments)]
    pub async fn download_into(
        &self,
        abs: &Path,
        key: &ObjPath,
        if_match: Option<&str>,
        size: u64,
        file: &Arc<std::fs::File>,
        write_path: &Path,
    ) -> Result<String> {
        let part = self.cfg.part_size as u64;
        let ranges: Vec<_> = (0..size.div_ceil(part))
            .map(|i| i * part..((i + 1) * part).min(size))
            .collect();
        let started = Instant::now();
        let mut hasher = blake3::Hasher::new();
        // Each GET is a task of its own, so its body keeps arriving while the parts before
        // it are hashed and written (a body nobody polls stalls its connection). At most
        // `concurrency` are spawned at once (`buffered` pulls the next only while fewer are
        // pending), and those left when this stream is dropped (an error, a timeout) are
        // aborted.
        let mut gets = futures::stream::iter(ranges.into_iter().map(|r| {
            let store = self.store.clone();
            let key = key.clone();
            let if_match = if_match.map(str::to_string);
            let get = AbortOnDropHandle::new(tokio::spawn(async move {
                store
                    .get_range_if(&key, r.clone(), if_match.as_deref())
                    .await
                    .map(|b| (r, b))
            }));
            async move {
                get.await
                    .map_err(|e| HsmError::from_join("ranged GET", e))?
            }
        }))
        .buffered(self.cfg.concurrency);
        while let Some((r, data)) = gets.try_next().await? {
            if data.len() as u64 != r.end - r.start {
                return Err(HsmError::refused(abs, "short read from the store"));
            }
            hasher.update(&data);
            let (f, p) = (file.clone(), write_path.to_path_buf());
            blocking(move || {
                std::os::unix::fs::FileExt::write_all_at(&*f, &data, r.start)
                    .map_err(|e| HsmError::io(&p, e))
            })
            .await?;
            self.emit("restore", abs, r.end, size);
            self.throttle(started, r.end).await;
        }
        drop(gets);
        let actual = format!("blake3:{}", hasher.finalize().to_hex());
        Ok(actual)
    }

    #[allow(clippy::too_many_arguments)]
    async fn restore_into(
        &self,
        entry: &Arc<posix::Entry>,
        key: &ObjPath,
        src: &RestoreSource,
        tmp_name: &mut Option<String>,
        tmpf: std::fs::File,
        stub: &Arc<std::fs::File>,
        stub_v0: DataVersion,
    ) -> Result<OpReport> {
        let abs = &entry.abs;
        let size = stub_v0.size;
        let tmpf = Arc::new(tmpf);
        let shown = entry.sibling(tmp_name.as_deref().unwrap_or(RESTORE_TEMP_PREFIX));
        let actual = self
            .download_into(
                abs,
                &src.source.key,
                src.source.if_match.as_deref(),
                size,
                &tmpf,
                &shown,
            )
            .await?;
        let detail = Self::verify(abs, src, &actual)?;
        // Metadata comes from the stub (it may have been chmod'ed since the archive); the
        // restored file pins the same version. Then it gets its (temporary) name.
        let name = {
            let (f, p, e, pinned, named) = (
                tmpf.clone(),
                shown.clone(),
                entry.clone(),
                src.pin.clone(),
                tmp_name.clone(),
            );
            blocking(move || {
                f.set_len(size).map_err(|x| HsmError::io(&p, x))?;
                let mut m = posix::capture_entry(&e)?;
                m.atime_ns = None;
                posix::apply_fd(&p, f.as_fd(), &m)?;
                if let Some(pinned) = &pinned {
                    pin::write(f.as_fd(), &p, pinned)?;
                }
                f.sync_all().map_err(|x| HsmError::io(&p, x))?;
                match named {
                    Some(n) => Ok(n),
                    None => {
                        let dir = e.abs.parent().unwrap_or(&e.abs).to_path_buf();
                        posix::link_unnamed(&e.parent, &f, RESTORE_TEMP_PREFIX, &dir)
                    }
                }
            })
            .await?
        };
        *tmp_name = Some(name.clone());
        let tmp = entry.sibling(&name);
        self.backend
            .hsm_mark(
                &tmp,
                flags(HS_ARCHIVED | HS_EXISTS),
                flags(HS_RELEASED | HS_DIRTY),
                src.state.archive_id.or(Some(self.cfg.archive_id)),
            )
            .await?;
        // The flip: nobody else may have the stub open, and the name must still hold the
        // stub we saw (a tenant may have renamed or replaced it meanwhile).
        {
            let (stub, e, t) = (stub.clone(), entry.clone(), name);
            blocking(move || {
                let _lease = posix::lease(&e.abs, &stub)?;
                let now = posix::version_of(&e.abs, &stub)?;
                // By name without opening it: an open would break our own lease.
                let by_name = posix::lstat_at(e.parent.as_fd(), &e.name)
                    .map_err(|x| HsmError::io(&e.abs, x))?
                    .map(|st| st.st_ino);
                if !now.same_data(&stub_v0) || by_name != Some(stub_v0.ino) {
                    return Err(HsmError::refused(&e.abs, "the stub changed during restore"));
                }
                nix::fcntl::renameat(
                    e.parent.as_fd(),
                    t.as_str(),
                    e.parent.as_fd(),
                    e.name.as_str(),
                )
                .map_err(|x| HsmError::io(&e.abs, x.into()))?;
                let _ = nix::unistd::fsync(e.parent.as_fd());
                Ok(())
            })
            .await?;
        }
        // The rename moved the ctime: take the data version afresh.
        self.backend
            .hsm_mark(abs, flags(0), flags(HS_DIRTY), None)
            .await?;
        let mut r = Self::report("restore", abs, key, Outcome::Done, detail);
        r.bytes = size;
        r.checksum = Some(actual);
        Ok(r)
    }

    /// Restores a released file **in place**, through an already open descriptor (the
    /// restore-on-access daemon's event fd, whose I/O raises no fanotify events): ranged
    /// GETs of the pinned version written with `pwrite` at their offsets, the pinned
    /// checksum verified, the stub's mtime put back, then the state flipped to
    /// archived-and-present. The inode stays the same, so a process blocked reading it sees
    /// the data when it is let go.
    ///
    /// A crash or an error leaves the file released (the state is flipped last), so the
    /// next access restores it again; on a checksum mismatch the written range is punched
    /// out again.
    pub async fn restore_in_place(
        &self,
        path: &Path,
        file: Arc<std::fs::File>,
    ) -> Result<OpReport> {
        let started = Instant::now();
        let res = self.restore_in_place_inner(path, file).await;
        self.finish("restore", started, res)
    }

    async fn restore_in_place_inner(
        &self,
        path: &Path,
        file: Arc<std::fs::File>,
    ) -> Result<OpReport> {
        let (abs, key) = self.locate(path)?;
        let src = match self.restore_source(&abs, &key, &file).await? {
            Ok(source) => source,
            Err(skipped) => return Ok(skipped),
        };
        let v0 = {
            let (f, a) = (file.clone(), abs.clone());
            blocking(move || posix::version_of(&a, &f)).await?
        };
        Self::check_stub_size(&abs, src.source.info.size, v0.size)?;
        let res = self
            .download_into(
                &abs,
                &src.source.key,
                src.source.if_match.as_deref(),
                v0.size,
                &file,
                &abs,
            )
            .await;
        let punch_back = |file: Arc<std::fs::File>, abs: PathBuf| {
            blocking(move || {
                if v0.size > 0 {
                    nix::fcntl::fallocate(
                        file.as_fd(),
                        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                        0,
                        v0.size as libc::off_t,
                    )
                    .map_err(|e| HsmError::io(&abs, e.into()))?;
                }
                posix::set_times_fd(&abs, file.as_fd(), None, v0.mtime_ns)
            })
        };
        let verified =
            res.and_then(|actual| Self::verify(&abs, &src, &actual).map(|d| (actual, d)));
        let (actual, detail) = match verified {
            Ok(v) => v,
            Err(e) => {
                let _ = punch_back(file.clone(), abs.clone()).await;
                return Err(e);
            }
        };
        {
            let (f, a) = (file.clone(), abs.clone());
            blocking(move || {
                f.sync_data().map_err(|e| HsmError::io(&a, e))?;
                // Our writes moved the mtime: the stub shows the archived times again.
                posix::set_times_fd(&a, f.as_fd(), None, v0.mtime_ns)
            })
            .await?;
        }
        self.backend
            .hsm_mark(&abs, flags(0), flags(HS_RELEASED | HS_DIRTY), None)
            .await?;
        let mut r = Self::report("restore", &abs, &key, Outcome::Done, detail);
        r.bytes = v0.size;
        r.checksum = Some(actual);
        Ok(r)
    }
}
