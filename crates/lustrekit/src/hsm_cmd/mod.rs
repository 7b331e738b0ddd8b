//! `lustrekit hsm ...`: the command line of the data mover.
//!
//! Every command works on files, and on trees with `-r`. Progress bars go to stderr (only
//! when it is a terminal); `--json` prints one report object on stdout. A command where some
//! paths failed prints its report, then fails with [`PartialFailure`] (exit code 1).
//!
//! The store comes from `--store` or `LUSTREKIT_HSM_STORE`; the namespace root (the
//! directory object keys are relative to) from `--root` or `LUSTREKIT_HSM_ROOT`, default the
//! current directory. The backend for the root is the `local` backend, or with
//! `--backend config` the one of the configuration file.

mod args;
mod daemons;
mod files;
mod progress;
mod tree;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use hsm::{ArchiveStore, EngineConfig, FileOp, HsmEngine, RetryPolicy};

pub(crate) use args::BackendSource;
pub use args::HsmArgs;
use args::{CommonArgs, HsmCommand, InjectedBackend, PolicyCommand};

/// Runs `lustrekit hsm ...`; `config` is the configuration file, read only with
/// `--backend config`.
pub async fn run(args: HsmArgs, config: &Path, json: bool) -> anyhow::Result<()> {
    // Release and restore hold leases; a lease break must not end the process (SIGIO).
    hsm::engine::ignore_lease_break_signal();
    let mut common = args.common;
    if common.backend_source == BackendSource::Config {
        let config = share::Config::load(config)?;
        common.backend = InjectedBackend(Some(config.open_backend().await?));
    }
    match args.command {
        HsmCommand::Archive(a) => files::file_op(&common, FileOp::Archive, &a, false, json).await,
        HsmCommand::Release(a) => {
            files::file_op(&common, FileOp::Release, &a.paths, a.unguarded, json).await
        }
        HsmCommand::Restore(a) => files::file_op(&common, FileOp::Restore, &a, false, json).await,
        HsmCommand::Remove(a) => files::file_op(&common, FileOp::Remove, &a, false, json).await,
        HsmCommand::Dirty(a) => files::file_op(&common, FileOp::Dirty, &a, false, json).await,
        HsmCommand::State(a) => files::state(&common, &a, json).await,
        HsmCommand::Import(a) => tree::import(&common, &a, json).await,
        HsmCommand::Export(a) => tree::export(&common, &a, json).await,
        HsmCommand::Policy(p) => match p.command {
            PolicyCommand::Run(r) => daemons::policy_run(&common, &r, json).await,
            PolicyCommand::Watch(w) => daemons::policy_watch(&common, &w, json).await,
        },
        HsmCommand::RestoreDaemon(d) => daemons::restore_daemon(&common, &d).await,
        HsmCommand::Copytool(c) => daemons::copytool(&common, &c).await,
        HsmCommand::Gc(g) => tree::gc(&common, &g, json).await,
    }
}

/// The engine the common options describe: on the backend the caller injected, or on the
/// `local` backend at `--root`.
async fn engine(common: &CommonArgs) -> anyhow::Result<HsmEngine> {
    engine_with(common, false).await
}

/// [`engine`], saying whether releases may go on where no restore daemon watches.
async fn engine_with(
    common: &CommonArgs,
    allow_unguarded_release: bool,
) -> anyhow::Result<HsmEngine> {
    let spec = common
        .store
        .clone()
        .context("no archive store: pass --store URL or set LUSTREKIT_HSM_STORE")?;
    let (backend, root): (Arc<dyn backend::Filesystem>, PathBuf) = match &common.backend.0 {
        Some(fs) => {
            let root = common.root.clone().context(
                "--backend config needs --root: the filesystem's client mount point on this host",
            )?;
            (Arc::clone(fs), root)
        }
        None => {
            if common.backend_source == BackendSource::Config {
                anyhow::bail!("--backend config: no backend was opened from the configuration");
            }
            let root = match &common.root {
                Some(r) => r.clone(),
                None => std::env::current_dir().context("current directory")?,
            };
            let local = backend::local::LocalBackend::open(&root)
                .await
                .with_context(|| format!("opening the root {}", root.display()))?;
            let root = local.root().to_path_buf();
            (Arc::new(local), root)
        }
    };
    let retry = RetryPolicy::default();
    let store = ArchiveStore::open(&spec, &retry)?;
    let cfg = EngineConfig {
        root,
        archive_id: common.archive_id,
        part_size: common.part_size as usize,
        concurrency: common.part_concurrency,
        file_concurrency: common.concurrency,
        rate_limit_bytes_per_sec: common.bandwidth,
        retry,
        allow_unguarded_release,
    };
    Ok(HsmEngine::new(store, backend, cfg))
}

/// Some paths failed; the report was printed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {failed} of {total} paths failed{}", if *.stopped { " (stopped early: --max-errors)" } else { "" })]
pub struct PartialFailure {
    pub op: String,
    pub failed: usize,
    pub total: usize,
    pub stopped: bool,
}
