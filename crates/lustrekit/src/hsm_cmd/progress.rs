//! Progress bars on stderr.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress bars on stderr: files, and bytes for the copying operations.
pub(super) struct Bars {
    pub(super) files: ProgressBar,
    bytes: Option<ProgressBar>,
    seen: Mutex<HashMap<PathBuf, u64>>,
    _multi: MultiProgress,
}

impl Bars {
    pub(super) fn new(op: &str, files: u64, bytes: Option<u64>, hidden: bool) -> Arc<Self> {
        let target = if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let multi = MultiProgress::with_draw_target(target);
        let fbar = multi.add(ProgressBar::new(files));
        fbar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {pos}/{len} files ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        fbar.set_prefix(op.to_string());
        let bbar = bytes.map(|b| {
            let bar = multi.add(ProgressBar::new(b));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix("data");
            bar
        });
        Arc::new(Self {
            files: fbar,
            bytes: bbar,
            seen: Mutex::new(HashMap::new()),
            _multi: multi,
        })
    }

    /// Bytes of one path so far (the engine reports cumulative figures per file).
    pub(super) fn bytes_of(&self, path: &Path, done: u64) {
        let Some(b) = &self.bytes else { return };
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let last = seen.entry(path.to_path_buf()).or_insert(0);
        if done > *last {
            b.inc(done - *last);
            *last = done;
        }
    }

    pub(super) fn finish_path(&self, path: &Path, total: u64) {
        self.bytes_of(path, total);
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(path);
        }
        self.files.inc(1);
    }

    pub(super) fn finish(&self) {
        self.files.finish_and_clear();
        if let Some(b) = &self.bytes {
            b.finish_and_clear();
        }
    }
}
