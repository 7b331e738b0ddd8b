//! The node plugin's small JSON records in its state directory (client tunables held, HSM
//! volumes watched, PCC caches registered): read whole, written whole through a flushed
//! temporary renamed over the old one, so a crash leaves the old record or the new one. The
//! directory is the node's own (beside the CSI socket); no tenant reaches it.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CsiError, Result};

/// The record at `file` (`what` names it in errors); the default when there is none, or
/// when the node keeps no records (`None`, tests).
pub async fn read<T>(file: Option<PathBuf>, what: &'static str) -> Result<T>
where
    T: DeserializeOwned + Default + Send + 'static,
{
    let Some(file) = file else {
        return Ok(T::default());
    };
    tokio::task::spawn_blocking(move || match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CsiError::Internal(format!("{}: not a {what}: {e}", file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(CsiError::io(&file, e)),
    })
    .await
    .map_err(|e| CsiError::Internal(format!("reading the {what}: {e}")))?
}

/// Writes `value` as the record at `file` (nothing when the node keeps no records).
pub async fn write<T: Serialize>(
    file: Option<PathBuf>,
    value: &T,
    what: &'static str,
) -> Result<()> {
    let Some(file) = file else {
        return Ok(());
    };
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|e| CsiError::Internal(format!("{what}: {e}")))?;
    tokio::task::spawn_blocking(move || write_atomic(&file, &bytes))
        .await
        .map_err(|e| CsiError::Internal(format!("writing the {what}: {e}")))?
}

/// Writes `bytes` to `file` through a fresh temporary beside it, flushed, then renamed.
fn write_atomic(file: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = file
        .parent()
        .ok_or_else(|| CsiError::Internal(format!("{}: no parent", file.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| CsiError::io(dir, e))?;
    let name = file
        .file_name()
        .ok_or_else(|| CsiError::Internal(format!("{}: no file name", file.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| CsiError::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| CsiError::io(&tmp, e))?;
    std::fs::rename(&tmp, file).map_err(|e| CsiError::io(file, e))?;
    Ok(())
}
