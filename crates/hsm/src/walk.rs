//! Directory walks for tree operations and policy scans.

use std::path::{Path, PathBuf};

use crate::error::{HsmError, Result};

/// Every entry under `root` (root included), parents before children, symlinks not
/// followed, our restore temporaries skipped.
pub fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        i += 1;
        let md = std::fs::symlink_metadata(&p).map_err(|e| HsmError::io(&p, e))?;
        if !md.is_dir() {
            continue;
        }
        let mut names: Vec<PathBuf> = std::fs::read_dir(&p)
            .map_err(|e| HsmError::io(&p, e))?
            .filter_map(|e| e.ok())
            .filter(|e| {
                !e.file_name()
                    .to_string_lossy()
                    .starts_with(".lustrekit-restore.")
            })
            .map(|e| e.path())
            .collect();
        names.sort();
        out.extend(names);
    }
    Ok(out)
}
