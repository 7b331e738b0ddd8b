//! CreateVolume's import of an HSM volume (`hsmImportFrom`): the store's objects below the
//! prefix become released stubs in the new share, with every name, size, mode, owner and
//! time, and no data read.
//!
//! Resuming: the import runs with [`ConflictMode::Skip`], so a retried CreateVolume (the
//! provisioner's own timeout, a controller restart) goes on where the last attempt stopped:
//! each stub is made under a temporary name and renamed into place whole, so an entry that
//! is there is complete and is left, and one that is not is made. Once an import finished
//! without an error, a marker outside the share
//! (`<prefix>/.lustrekit/hsm-imports/<share>`) says so, naming the volume ID and the
//! share's creation time. A later CreateVolume of the same volume then returns at once,
//! without asking the store: a file the workload deleted since is not brought back, and a
//! share of the same name made later (another project, another time) is not mistaken for it.
//!
//! Errors: a store that cannot be reached is UNAVAILABLE and an import that outlives its
//! bound is DEADLINE_EXCEEDED (both retried, and resumed); a prefix with no objects, a
//! container that does not exist, credentials the store refuses, or an object whose name or
//! metadata can never be imported is INVALID_ARGUMENT. The store is checked before the share
//! is made, so those leave nothing behind; a final error found during the import purges the
//! half-filled share (it was never returned to anyone).
//!
//! Secrets: the request's secrets are the store options; their values are scrubbed from
//! every error this returns ([`crate::params::scrub_secrets`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use hsm::{
    ArchiveStore, ConflictMode, EngineConfig, HsmEngine, HsmError, ImportOptions, ImportReport,
    RetryPolicy, StoreRefusal,
};
use lustre_model::{RelPath, ShareName};
use share::{Share, ShareService};

use crate::error::{CsiError, Result};
use crate::params::{HsmParams, keys, scrub_secrets, store_options};

/// How long a CreateVolume's import may run before the call fails with DEADLINE_EXCEEDED
/// (seconds); the provisioner's own `--timeout` bounds each attempt too, and a retry resumes.
pub const DEFAULT_HSM_IMPORT_TIMEOUT_SECS: u64 = 300;

/// [`DEFAULT_HSM_IMPORT_TIMEOUT_SECS`] as a duration.
pub const DEFAULT_HSM_IMPORT_TIMEOUT: Duration =
    Duration::from_secs(DEFAULT_HSM_IMPORT_TIMEOUT_SECS);

/// Import errors listed in a failed call's message.
const ERRORS_SHOWN: usize = 3;

/// What one volume's import is: the store, the prefix below it, and the request's secrets.
pub struct ImportSource<'a> {
    pub hsm: &'a HsmParams,
    /// Below the store's prefix, no leading or trailing `/`; empty for all of it.
    pub prefix: &'a str,
    pub secrets: &'a HashMap<String, String>,
    /// Where the import is counted, under the volume's ID (the controller's /metrics).
    pub metrics: std::sync::Arc<hsm::metrics::VolumeMetrics>,
}

impl ImportSource<'_> {
    /// The source as messages name it: the store URL without its query, and the prefix.
    fn shown(&self) -> String {
        let store = self.hsm.store.split('?').next().unwrap_or_default();
        format!("{}/{}", store.trim_end_matches('/'), self.prefix)
    }

    fn scrub(&self, error: CsiError) -> CsiError {
        let text = |m: &str| scrub_secrets(m, self.secrets);
        match error {
            CsiError::InvalidArgument(m) => CsiError::InvalidArgument(text(&m)),
            CsiError::Unavailable(m) => CsiError::Unavailable(text(&m)),
            CsiError::Timeout(m) => CsiError::Timeout(text(&m)),
            CsiError::Internal(m) => CsiError::Internal(text(&m)),
            other => other,
        }
    }

    /// Opens the store with the secrets as its options. Short retries: a store that does
    /// not answer should fail the call while the provisioner still waits for it.
    fn open(&self) -> Result<ArchiveStore> {
        let retry = RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        };
        ArchiveStore::open_with(&self.hsm.store, &retry, &store_options(self.secrets)).map_err(
            |e| {
                self.scrub(CsiError::invalid(format!(
                    "parameter {}: {e}",
                    keys::HSM_STORE
                )))
            },
        )
    }

    /// A store error as the call's error (see the module doc).
    fn store_error(&self, e: &HsmError) -> CsiError {
        let source = self.shown();
        self.scrub(match e.store_refusal() {
            Some(StoreRefusal::NotFound) => CsiError::invalid(format!(
                "parameter {}: {source} does not exist: {e}",
                keys::HSM_IMPORT_FROM
            )),
            Some(StoreRefusal::Denied) => CsiError::invalid(format!(
                "the store refused the provisioner secret's credentials for {source}: {e}"
            )),
            None => CsiError::Unavailable(format!("store for {source} unavailable: {e}")),
        })
    }

    /// Checks, before anything is made, that the store answers and that the prefix holds at
    /// least one object: one listing request.
    pub async fn check(&self) -> Result<()> {
        let store = self.open()?;
        let segs: Vec<&str> = self.prefix.split('/').filter(|s| !s.is_empty()).collect();
        let key = store.key_for(&segs);
        let mut listing = store.list(Some(&key));
        match tokio_stream::StreamExt::next(&mut listing).await {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.store_error(&e)),
            None => Err(CsiError::invalid(format!(
                "parameter {}: no objects under {}",
                keys::HSM_IMPORT_FROM,
                self.shown()
            ))),
        }
    }
}

/// Where the import marker of `share` lives (see the module doc).
fn marker_path(service: &ShareService, name: &ShareName) -> Result<(RelPath, RelPath)> {
    let dir = service
        .settings()
        .prefix
        .join(&ShareName::new(share::META_DIR)?)
        .join(&ShareName::new("hsm-imports")?);
    let file = dir.join(name);
    Ok((dir, file))
}

/// What the marker of a finished import holds: this share, not an earlier one of the name.
fn marker_text(share: &Share) -> String {
    format!("{} {}\n", share.volume_id, share.created_at)
}

/// Whether `share`'s import finished (its marker is there and names it).
pub async fn imported(service: &ShareService, share: &Share) -> Result<bool> {
    let (_, file) = marker_path(service, &share.name)?;
    let text = service.backend().read_file(&file).await?;
    Ok(text.is_some_and(|t| t == marker_text(share).as_bytes()))
}

/// Forgets `share`'s import (DeleteVolume of a purged share).
pub async fn forget(service: &ShareService, name: &ShareName) -> Result<()> {
    let (_, file) = marker_path(service, name)?;
    service.backend().remove_file(&file).await?;
    Ok(())
}

/// Imports the source into `share` as released stubs, within `timeout`, then writes the
/// marker. Resumes a partial import (see the module doc).
pub async fn import(
    service: &ShareService,
    share: &Share,
    source: &ImportSource<'_>,
    timeout: Duration,
) -> Result<ImportReport> {
    let store = source.open()?;
    let backend = std::sync::Arc::clone(service.backend());
    // The engine's root is the share itself: nothing it does can reach outside the volume.
    let root: PathBuf = backend.host_path(&share.path);
    let engine = HsmEngine::new(
        store,
        backend,
        EngineConfig {
            root: root.clone(),
            ..EngineConfig::default()
        },
    )
    .with_metrics(std::sync::Arc::new(hsm::Metrics::for_volume(
        std::sync::Arc::clone(&source.metrics),
        &share.volume_id.to_string(),
    )));
    let options = ImportOptions {
        source_prefix: (!source.prefix.is_empty()).then(|| source.prefix.to_string()),
        target: root,
        conflict: ConflictMode::Skip,
        max_errors: 10,
        // The volume's objects are its own files: their owners are what AC2 asks to see.
        // Setuid/setgid bits and xattrs outside `user.*` are still dropped by import.
        preserve_owner: true,
        ..ImportOptions::default()
    };
    let report = match tokio::time::timeout(timeout, engine.import(&options)).await {
        Ok(Ok(report)) => report,
        Ok(Err(e)) if matches!(e, HsmError::Store { .. }) => return Err(source.store_error(&e)),
        Ok(Err(e)) => {
            return Err(source.scrub(CsiError::Internal(format!(
                "import of {} into {}: {e}",
                source.shown(),
                share.name
            ))));
        }
        Err(_) => {
            return Err(CsiError::Timeout(format!(
                "import of {} into {} did not finish in {timeout:?}; a retry resumes it",
                source.shown(),
                share.name
            )));
        }
    };
    if let Some(first) = report.errors.first() {
        let shown: Vec<String> = report
            .errors
            .iter()
            .take(ERRORS_SHOWN)
            .map(|e| {
                if e.path.as_os_str().is_empty() {
                    e.error.clone()
                } else {
                    format!("{}: {}", e.path.display(), e.error)
                }
            })
            .collect();
        let message = format!(
            "import of {} into {}: {} entries failed ({} made so far): {}",
            source.shown(),
            share.name,
            report.errors.len(),
            report.files + report.dirs + report.symlinks,
            shown.join("; ")
        );
        return Err(source.scrub(match first.kind.as_str() {
            // Names and metadata do not change on a retry: the container must be fixed.
            "hostile_name" | "metadata" | "conflict" | "refused" => CsiError::invalid(message),
            "store" => CsiError::Unavailable(message),
            _ => CsiError::Internal(message),
        }));
    }
    let (dir, file) = marker_path(service, &share.name)?;
    service.backend().ensure_dir(&dir).await?;
    service
        .backend()
        .write_file(&file, marker_text(share).as_bytes())
        .await?;
    Ok(report)
}
