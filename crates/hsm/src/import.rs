//! Import (objects → released stubs) and export (new or changed files → objects).
//!
//! Import never writes outside its target directory: every object name is checked first
//! (no `.`/`..`/empty segment, no `/` or NUL once decoded, at most 255 bytes a segment and
//! 4096 in all), and every directory on the way is opened with `O_NOFOLLOW` beneath the
//! target, so a symlink planted in the tree cannot redirect it. A bad name is one error in
//! the report; the import goes on until `max_errors` is passed.
//!
//! Conflict modes (as AMLFS has them), for an entry that already exists:
//! - `fail`: an error for that entry;
//! - `skip`: leave it;
//! - `overwrite_if_dirty`: replace it only when its HSM state is dirty (changed since
//!   archived); a clean or never-archived file is left;
//! - `overwrite_always`: replace it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;
use lustre_model::{HS_ARCHIVED, HS_DIRTY, HS_EXISTS, HS_RELEASED, HsmFlags};
use serde::{Deserialize, Serialize};

use crate::engine::{HsmEngine, Outcome, PathError, blocking};
use crate::error::{HsmError, Result};
use crate::meta::{EntryKind, FileMeta};
use crate::posix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ConflictMode {
    #[default]
    Fail,
    Skip,
    OverwriteIfDirty,
    OverwriteAlways,
}

impl ConflictMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Skip => "skip",
            Self::OverwriteIfDirty => "overwrite_if_dirty",
            Self::OverwriteAlways => "overwrite_always",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ImportOptions {
    /// Object prefix below the store's prefix (`None`: everything).
    pub source_prefix: Option<String>,
    /// The directory the stubs go into (absolute, or relative to the engine root).
    pub target: PathBuf,
    pub conflict: ConflictMode,
    /// Stop once more than this many entries failed.
    pub max_errors: usize,
    /// Owner of objects whose metadata has none.
    pub default_uid: u32,
    pub default_gid: u32,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            source_prefix: None,
            target: PathBuf::from("."),
            conflict: ConflictMode::Fail,
            max_errors: 100,
            default_uid: 0,
            default_gid: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportReport {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub skipped: usize,
    pub bytes: u64,
    pub errors: Vec<PathError>,
    pub elapsed_ms: u64,
    /// True when `max_errors` stopped the import early.
    pub stopped: bool,
}

/// Checks the decoded segments of an object name.
pub fn validate_segments(
    key: &str,
    segs: &[std::result::Result<String, String>],
) -> Result<Vec<String>> {
    let bad = |why: &str| HsmError::HostileName {
        key: key.to_string(),
        why: why.to_string(),
    };
    let mut out = Vec::with_capacity(segs.len());
    let mut total = 0usize;
    for s in segs {
        let s = s.as_ref().map_err(|_| bad("not UTF-8"))?;
        if s.is_empty() {
            return Err(bad("empty segment (absolute or `//`)"));
        }
        if s == "." || s == ".." {
            return Err(bad("`.` or `..` segment"));
        }
        if s.contains('/') {
            return Err(bad("`/` inside a segment"));
        }
        if s.contains('\0') {
            return Err(bad("NUL in name"));
        }
        if s.len() > 255 {
            return Err(bad("segment longer than 255 bytes"));
        }
        total += s.len() + 1;
        out.push(s.clone());
    }
    if total > 4096 {
        return Err(bad("path longer than 4096 bytes"));
    }
    if out.is_empty() {
        return Err(bad("empty name"));
    }
    Ok(out)
}

fn cname(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| HsmError::HostileName {
        key: s.into(),
        why: "NUL in name".into(),
    })
}

fn flags(bits: u32) -> HsmFlags {
    HsmFlags::from_bits(bits)
}

enum Existing {
    None,
    Dir,
    Other,
}

fn existing(dirfd: &OwnedFd, name: &str, at: &Path) -> Result<Existing> {
    Ok(
        match posix::lstat_at(dirfd.as_raw_fd(), name).map_err(|e| HsmError::io(at, e))? {
            None => Existing::None,
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Existing::Dir,
            Some(_) => Existing::Other,
        },
    )
}

impl HsmEngine {
    /// Imports a container or prefix as released stubs under `opts.target`.
    pub async fn import(&self, opts: &ImportOptions) -> Result<ImportReport> {
        let started = Instant::now();
        let (target, _) = self.resolve(&opts.target)?;
        std::fs::create_dir_all(&target).map_err(|e| HsmError::io(&target, e))?;
        let src_segs: Vec<String> = opts
            .source_prefix
            .as_deref()
            .map(|p| {
                p.split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let src_refs: Vec<&str> = src_segs.iter().map(String::as_str).collect();
        let list_prefix = self.store().key_for(&src_refs);
        let mut report = ImportReport::default();

        // Directories known only from sidecars (local store) first, then objects.
        let mut keys: Vec<(object_store::path::Path, Option<object_store::ObjectMeta>)> =
            Vec::new();
        let mut sidecars = self.store().list_sidecars();
        while let Some(k) = sidecars.next().await {
            match k {
                Ok(k) if k.as_ref().starts_with(list_prefix.as_ref()) => keys.push((k, None)),
                Ok(_) => {}
                Err(e) => report.errors.push(PathError {
                    path: PathBuf::new(),
                    kind: e.kind().into(),
                    error: e.to_string(),
                }),
            }
        }
        let mut listing = self.store().list(Some(&list_prefix));
        while let Some(m) = listing.next().await {
            match m {
                Ok(m) => keys.push((m.location.clone(), Some(m))),
                Err(e) => {
                    report.errors.push(PathError {
                        path: PathBuf::new(),
                        kind: e.kind().into(),
                        error: e.to_string(),
                    });
                    break;
                }
            }
        }
        // Parents before children; a key listed twice (sidecar and object) once.
        keys.sort_by(|a, b| {
            a.0.as_ref()
                .cmp(b.0.as_ref())
                .then(b.1.is_some().cmp(&a.1.is_some()))
        });
        keys.dedup_by(|a, b| a.0 == b.0);

        for (key, om) in keys {
            if report.errors.len() > opts.max_errors {
                report.stopped = true;
                break;
            }
            let res = self
                .import_one(opts, &target, src_segs.len(), &key, om.as_ref())
                .await;
            match res {
                Ok(Some(kind)) => match kind {
                    (EntryKind::File, n) => {
                        report.files += 1;
                        report.bytes += n;
                    }
                    (EntryKind::Dir, _) => report.dirs += 1,
                    (EntryKind::Symlink, _) => report.symlinks += 1,
                },
                Ok(None) => report.skipped += 1,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "import");
                    report.errors.push(PathError {
                        path: PathBuf::from(key.to_string()),
                        kind: e.kind().into(),
                        error: e.to_string(),
                    })
                }
            }
        }
        if report.errors.len() > opts.max_errors {
            report.stopped = true;
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        self.metrics().record(
            "import",
            report.errors.is_empty(),
            report.bytes,
            started.elapsed(),
        );
        Ok(report)
    }

    async fn import_one(
        &self,
        opts: &ImportOptions,
        target: &Path,
        strip: usize,
        key: &object_store::path::Path,
        om: Option<&object_store::ObjectMeta>,
    ) -> Result<Option<(EntryKind, u64)>> {
        let Some(segs) = self.store().rel_of(key) else {
            return Ok(None);
        };
        let comps = validate_segments(key.as_ref(), &segs)?;
        if comps.len() <= strip {
            return Ok(None);
        }
        let comps = comps[strip..].to_vec();
        let (meta, size) = match om {
            Some(om) => {
                let info = self.store().head(key).await?;
                let raw = info.map(|i| i.meta).unwrap_or_default();
                let mtime = om.last_modified.timestamp_nanos_opt().unwrap_or(0);
                let mut m = FileMeta::from_map(&raw, mtime, opts.default_uid, opts.default_gid);
                // A zero-byte blob ending in `/` is a folder marker too.
                if key.as_ref().ends_with('/') && om.size == 0 {
                    m.kind = EntryKind::Dir;
                }
                (m, om.size)
            }
            None => {
                let raw = self.store().sidecar_only(key).await?.unwrap_or_default();
                let m = FileMeta::from_map(&raw, 0, opts.default_uid, opts.default_gid);
                if m.kind != EntryKind::Dir {
                    return Ok(None); // a file's sidecar: the object itself comes too
                }
                (m, 0)
            }
        };
        let (parents, name) = comps.split_at(comps.len() - 1);
        let name = name[0].clone();
        let path = posix::display_join(target, &comps);
        let dir_path = posix::display_join(target, parents);
        let (target_c, parents_v) = (target.to_path_buf(), parents.to_vec());
        let dirfd = blocking(move || posix::open_dir_beneath(&target_c, &parents_v, 0o755)).await?;
        let ex = existing(&dirfd, &name, &dir_path)?;

        match meta.kind {
            EntryKind::Dir => {
                if let Existing::Other = ex {
                    return Err(HsmError::Conflict {
                        path,
                        mode: "directory over a file",
                    });
                }
                let (t, c, m) = (target.to_path_buf(), comps.clone(), meta.clone());
                blocking(move || {
                    let fd = posix::open_dir_beneath(&t, &c, m.mode)?;
                    posix::apply_fd(&posix::display_join(&t, &c), fd.as_raw_fd(), &m)
                })
                .await?;
                return Ok(Some((EntryKind::Dir, 0)));
            }
            _ if matches!(ex, Existing::Dir) => {
                return Err(HsmError::Conflict {
                    path,
                    mode: "file over a directory",
                });
            }
            _ => {}
        }
        if matches!(ex, Existing::Other) {
            match opts.conflict {
                ConflictMode::Fail => {
                    return Err(HsmError::Conflict {
                        path,
                        mode: opts.conflict.name(),
                    });
                }
                ConflictMode::Skip => return Ok(None),
                ConflictMode::OverwriteIfDirty => {
                    let md =
                        std::fs::symlink_metadata(&path).map_err(|e| HsmError::io(&path, e))?;
                    let dirty = md.is_file() && self.backend().hsm_state(&path).await?.flags.dirty;
                    if !dirty {
                        return Ok(None);
                    }
                }
                ConflictMode::OverwriteAlways => {}
            }
        }
        let tmp_name = format!(".lustrekit-import.{}", std::process::id());
        let tmp_path = dir_path.join(&tmp_name);
        let cname_tmp = cname(&tmp_name)?;
        let cname_final = cname(&name)?;
        let dfd = dirfd.as_raw_fd();
        // SAFETY: valid dirfd and NUL-terminated names; a leftover temporary is replaced.
        unsafe { libc::unlinkat(dfd, cname_tmp.as_ptr(), 0) };
        if meta.kind == EntryKind::Symlink {
            let target_s = match &meta.symlink_target {
                Some(t) => t.clone(),
                None => {
                    // azcopy stores the target as the blob content.
                    let bytes = self.store().get_range(key, 0..size).await?;
                    String::from_utf8(bytes.to_vec()).map_err(|_| HsmError::HostileName {
                        key: key.to_string(),
                        why: "symlink target is not UTF-8".into(),
                    })?
                }
            };
            let ct = cname(&target_s)?;
            // SAFETY: valid strings and dirfd.
            if unsafe { libc::symlinkat(ct.as_ptr(), dfd, cname_tmp.as_ptr()) } != 0 {
                return Err(HsmError::io(&tmp_path, std::io::Error::last_os_error()));
            }
            // SAFETY: valid strings and dirfd.
            if unsafe { libc::renameat(dfd, cname_tmp.as_ptr(), dfd, cname_final.as_ptr()) } != 0 {
                return Err(HsmError::io(&path, std::io::Error::last_os_error()));
            }
            return Ok(Some((EntryKind::Symlink, 0)));
        }
        // A file: a sparse stub of the right size, metadata applied, marked released.
        // SAFETY: valid dirfd and name; the fd is owned right after.
        let fd = unsafe {
            libc::openat(
                dfd,
                cname_tmp.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(HsmError::io(&tmp_path, std::io::Error::last_os_error()));
        }
        // SAFETY: fresh fd we own.
        let f = unsafe { std::fs::File::from_raw_fd(fd) };
        f.set_len(size).map_err(|e| HsmError::io(&tmp_path, e))?;
        posix::apply_fd(&tmp_path, f.as_raw_fd(), &meta)?;
        drop(f);
        self.backend()
            .hsm_mark(
                &tmp_path,
                flags(HS_ARCHIVED | HS_EXISTS | HS_RELEASED),
                flags(HS_DIRTY),
                Some(self.config().archive_id),
            )
            .await?;
        // SAFETY: valid strings and dirfd.
        if unsafe { libc::renameat(dfd, cname_tmp.as_ptr(), dfd, cname_final.as_ptr()) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: as above.
            unsafe { libc::unlinkat(dfd, cname_tmp.as_ptr(), 0) };
            return Err(HsmError::io(&path, e));
        }
        // The rename moved the ctime: take the stub's data version afresh.
        self.backend()
            .hsm_mark(&path, flags(0), flags(HS_DIRTY), None)
            .await?;
        Ok(Some((EntryKind::File, size)))
    }

    /// Exports what is new or changed under `dir` since the last export: files never
    /// archived or dirty, and directories and symlinks whose object is missing or older.
    /// An object that exists for a file we never archived is a conflict.
    pub async fn export(&self, dir: &Path, conflict: ConflictMode) -> Result<crate::TreeReport> {
        let (abs, _) = self.resolve(dir)?;
        let paths = {
            let abs = abs.clone();
            blocking(move || crate::walk::walk(&abs)).await?
        };
        let mut report = crate::TreeReport::default();
        let results: Vec<_> = futures::stream::iter(paths.into_iter().map(|p| async move {
            let r = self.export_one(&p, conflict).await;
            (p, r)
        }))
        .buffer_unordered(self.config().file_concurrency)
        .collect()
        .await;
        for (p, r) in results {
            match r {
                Ok(Some(rep)) => {
                    if rep.outcome == Outcome::Done {
                        report.done += 1;
                    } else {
                        report.skipped += 1;
                    }
                    report.bytes += rep.bytes;
                    report.items.push(rep);
                }
                Ok(None) => report.skipped += 1,
                Err(e) => report.errors.push(PathError {
                    path: p,
                    kind: e.kind().into(),
                    error: e.to_string(),
                }),
            }
        }
        Ok(report)
    }

    async fn export_one(
        &self,
        p: &Path,
        conflict: ConflictMode,
    ) -> Result<Option<crate::OpReport>> {
        let md = std::fs::symlink_metadata(p).map_err(|e| HsmError::io(p, e))?;
        let key = self.key_of(p)?;
        if md.is_file() {
            let st = self.backend().hsm_state(p).await?;
            if st.flags.archived && st.flags.exists && !st.flags.dirty {
                return Ok(None);
            }
            if st.flags.released {
                return Ok(None);
            }
            if !st.flags.archived && self.store().head(&key).await?.is_some() {
                match conflict {
                    ConflictMode::Fail => {
                        return Err(HsmError::Conflict {
                            path: p.to_path_buf(),
                            mode: conflict.name(),
                        });
                    }
                    ConflictMode::Skip => return Ok(None),
                    ConflictMode::OverwriteIfDirty | ConflictMode::OverwriteAlways => {}
                }
            }
            return self.archive(p).await.map(Some);
        }
        // Directories and symlinks: compare the recorded mtime.
        let cur = posix::capture(p)?;
        let have = if self.store().folder_blobs() || cur.kind == EntryKind::Symlink {
            self.store().head(&key).await?.map(|i| i.meta)
        } else {
            self.store().sidecar_only(&key).await?
        };
        if let Some(m) = have {
            let old = FileMeta::from_map(&m, i64::MIN, 0, 0);
            if old.mtime_ns == cur.mtime_ns && old.mode == cur.mode && old.uid == cur.uid {
                return Ok(None);
            }
        }
        self.archive(p).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(v: &[&str]) -> Vec<std::result::Result<String, String>> {
        v.iter().map(|s| Ok(s.to_string())).collect()
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            vec![".."],
            vec!["a", "..", "b"],
            vec!["."],
            vec!["", "etc", "passwd"],
            vec!["a", "b/c"],
            vec!["nul\0here"],
        ] {
            assert!(validate_segments("k", &segs(&bad)).is_err(), "{bad:?}");
        }
        let long = "x".repeat(256);
        assert!(validate_segments("k", &segs(&[&long])).is_err());
        let many: Vec<String> = (0..20).map(|_| "y".repeat(250)).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(validate_segments("k", &segs(&many)).is_err());
        assert!(validate_segments("k", &[Err("%FF".into())]).is_err());
        assert_eq!(
            validate_segments("k", &segs(&["a", "b c", "ü%"])).expect("ok"),
            vec!["a", "b c", "ü%"]
        );
    }
}
