//! Archive: a file, directory or symlink to its object, and the upload path the copytool
//! shares.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use lustre_model::{HS_ARCHIVED, HS_DIRTY, HS_EXISTS, HS_LOST};
use object_store::path::Path as ObjPath;

use super::{HsmEngine, OpReport, Outcome, blocking, flags};
use crate::error::{HsmError, Result};
use crate::meta::{EntryKind, FileMeta};
use crate::pin::{self, Pin};
use crate::posix;

/// What an upload does with the object its key holds.
#[derive(Debug, Clone, Copy)]
pub enum Previous<'a> {
    /// Keep it aside unless it is `own_version` (archive: another stub may pin it; see
    /// [`crate::ArchiveStore::put_keeping`]).
    KeepAside { own_version: Option<&'a str> },
    /// Overwrite it (a plain copy: nothing pins what a copy wrote).
    Replace,
}

impl HsmEngine {
    /// Archives a file, directory (its own metadata, not its content) or symlink.
    pub async fn archive(&self, path: &Path) -> Result<OpReport> {
        let started = Instant::now();
        let res = self.archive_inner(path).await;
        self.finish("archive", started, res)
    }

    async fn archive_inner(&self, path: &Path) -> Result<OpReport> {
        let (entry, key) = self.open(path).await?;
        let entry = Arc::new(entry);
        let meta = {
            let e = entry.clone();
            blocking(move || posix::capture_entry(&e)).await?
        };
        let abs = entry.abs.clone();
        if meta.kind != EntryKind::File && !key.as_ref().is_empty() {
            // A directory or symlink now where a file was: that file, renamed, may pin the
            // version at this key.
            self.store.preserve(&key, None).await?;
        }
        match meta.kind {
            EntryKind::Dir => {
                let (map, dropped) = meta.to_map();
                self.store.put_folder(&key, &map).await?;
                let mut r = Self::report("archive", &abs, &key, Outcome::Done, None);
                r.detail = dropped.then(|| "xattrs too large for object metadata; not kept".into());
                Ok(r)
            }
            EntryKind::Symlink => {
                let (map, _) = meta.to_map();
                self.store.put(&key, Bytes::new(), &map).await?;
                Ok(Self::report("archive", &abs, &key, Outcome::Done, None))
            }
            EntryKind::File => self.archive_file(&entry, &key, meta).await,
        }
    }

    async fn archive_file(
        &self,
        entry: &Arc<posix::Entry>,
        key: &ObjPath,
        mut meta: FileMeta,
    ) -> Result<OpReport> {
        let abs = &entry.abs;
        let st = self.backend.hsm_state(abs).await?;
        if st.flags.no_archive {
            return Err(HsmError::refused(abs, "marked never_archive"));
        }
        if st.flags.released {
            return Ok(Self::report(
                "archive",
                abs,
                key,
                Outcome::Skipped,
                Some("released: the archive already holds its data".into()),
            ));
        }
        let (file, old_pin) = {
            let e = entry.clone();
            blocking(move || {
                let file = e.file()?;
                let old_pin = pin::read(file.as_fd(), &e.abs)?;
                Ok((Arc::new(file), old_pin))
            })
            .await?
        };
        if st.flags.archived
            && st.flags.exists
            && !st.flags.dirty
            && !st.flags.lost
            && old_pin.is_some()
        {
            return Ok(Self::report(
                "archive",
                abs,
                key,
                Outcome::Skipped,
                Some("already archived and unchanged".into()),
            ));
        }
        let v0 = {
            let (f, a) = (file.clone(), abs.clone());
            blocking(move || posix::version_of(&a, &f)).await?
        };
        // What "unchanged" means is the backend's (Lustre's own counter; on `local` the
        // same size/times/inode/generation as `v0`): recorded in the object, and compared
        // again once the data is in the store and once the file is marked.
        let recorded = self.backend.data_version(abs).await?;
        let size = v0.size;
        meta.size = Some(size);
        meta.data_version = Some(recorded.token());
        // The version now at the key may be pinned by another stub (this path's previous
        // file, renamed): keep it aside first. This file's own previous version is not
        // kept: the file still has the data, and it is about to be archived anew.
        let own = old_pin.filter(|p| p.key == key.as_ref()).map(|p| p.version);
        let version = pin::new_version_id()?;
        let etag = self
            .upload_file(
                abs,
                key,
                &file,
                size,
                &mut meta,
                &version,
                Previous::KeepAside {
                    own_version: own.as_deref(),
                },
            )
            .await?;

        // The file must not have changed while we read it (the descriptor we read, the name,
        // and the backend's version of the name).
        // The name must still lead to the file read (`v1p`: a swapped name is another file,
        // whose own version the backend would happily report unchanged).
        let (v1, v1p) = {
            let (e, f) = (entry.clone(), file.clone());
            blocking(move || Ok((posix::version_of(&e.abs, &f)?, e.version_by_name()?))).await?
        };
        if v1 != v0
            || !v1p.same_data(&v0)
            || !self.backend.data_version(abs).await?.same_data(&recorded)
        {
            return Err(HsmError::ModifiedDuringArchive { path: abs.clone() });
        }
        // Pin first: a file marked archived always names the version that holds its data.
        let pinned = Pin {
            key: key.to_string(),
            etag,
            version,
            checksum: meta.checksum.clone(),
            size,
        };
        {
            let (f, a, p) = (file.clone(), abs.clone(), pinned.clone());
            blocking(move || pin::write(f.as_fd(), &a, &p)).await?;
        }
        self.backend
            .hsm_mark(
                abs,
                flags(HS_ARCHIVED | HS_EXISTS),
                flags(HS_DIRTY | HS_LOST),
                Some(self.cfg.archive_id),
            )
            .await?;
        // A write between the check and the mark: take the mark back.
        let v2 = {
            let e = entry.clone();
            blocking(move || e.version_by_name()).await?
        };
        if !v2.same_data(&v0) || !self.backend.data_version(abs).await?.same_data(&recorded) {
            self.backend
                .hsm_mark(abs, flags(HS_DIRTY), flags(0), None)
                .await?;
            return Err(HsmError::ModifiedDuringArchive { path: abs.clone() });
        }
        let mut r = Self::report("archive", abs, key, Outcome::Done, None);
        r.bytes = size;
        r.checksum = meta.checksum;
        Ok(r)
    }

    /// Streams `size` bytes of an open file to `key` with `meta` (the checksum is filled in
    /// first) as version `version`: one PUT for a small file, else a multipart upload with
    /// bounded memory and `concurrency` parts in flight. What the key held is kept aside or
    /// replaced as `previous` says. Returns the store's ETag. Used by archive, the Lustre
    /// copytool and the data mover's copy out.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_file(
        &self,
        abs: &Path,
        key: &ObjPath,
        file: &Arc<std::fs::File>,
        size: u64,
        meta: &mut FileMeta,
        version: &str,
        previous: Previous<'_>,
    ) -> Result<Option<String>> {
        let part = self.cfg.part_size;
        let started = Instant::now();
        let with_version = |meta: &FileMeta| {
            let (mut map, _) = meta.to_map();
            map.insert(pin::K_VERSION.into(), version.to_string());
            map
        };

        if size as usize <= part {
            // One PUT: read, hash, send.
            let (f, p) = (file.clone(), abs.to_path_buf());
            let data = blocking(move || {
                let mut buf = Vec::with_capacity(size as usize);
                (&*f)
                    .take(size)
                    .read_to_end(&mut buf)
                    .map_err(|e| HsmError::io(&p, e))?;
                Ok(buf)
            })
            .await?;
            meta.checksum = Some(format!("blake3:{}", blake3::hash(&data).to_hex()));
            let map = with_version(meta);
            self.throttle(started, data.len() as u64).await;
            let etag = match previous {
                Previous::KeepAside { own_version } => {
                    self.store
                        .put_keeping(key, Bytes::from(data), &map, own_version)
                        .await?
                }
                Previous::Replace => self.store.put(key, Bytes::from(data), &map).await?,
            };
            self.emit("archive", abs, size, size);
            Ok(etag)
        } else {
            // Pass 1 hashes (stores want the metadata when the upload starts), pass 2
            // streams parts. A change between them is caught by the data-version check.
            let (f, p) = (file.clone(), abs.to_path_buf());
            let sum = blocking(move || {
                let mut h = blake3::Hasher::new();
                let mut r = std::io::BufReader::with_capacity(1 << 20, &*f);
                std::io::copy(&mut r, &mut h).map_err(|e| HsmError::io(&p, e))?;
                Ok(h.finalize().to_hex().to_string())
            })
            .await?;
            meta.checksum = Some(format!("blake3:{sum}"));
            let map = with_version(meta);
            if let Previous::KeepAside { own_version } = previous {
                self.store.preserve(key, own_version).await?;
            }
            let mut up = self.store.start_upload(key, &map, part).await?;
            let mut off = 0u64;
            let res: Result<()> = async {
                while off < size {
                    let n = part.min((size - off) as usize);
                    let (f, p) = (file.clone(), abs.to_path_buf());
                    let chunk = blocking(move || {
                        let mut b = BytesMut::zeroed(n);
                        std::os::unix::fs::FileExt::read_exact_at(&*f, &mut b, off)
                            .map_err(|e| HsmError::io(&p, e))?;
                        Ok(b.freeze())
                    })
                    .await?;
                    up.write(&self.store, chunk, self.cfg.concurrency).await?;
                    off += n as u64;
                    self.emit("archive", abs, off, size);
                    self.throttle(started, off).await;
                }
                Ok(())
            }
            .await;
            match res {
                Ok(()) => self.store.finish_upload(up, &map).await,
                Err(e) => {
                    up.abort().await;
                    Err(e)
                }
            }
        }
    }
}
