//! Whole-store commands: `import`, `export` and `gc`.

use std::time::{Duration, Instant};

use hsm::ImportOptions;
use indicatif::ProgressBar;

use super::args::{CommonArgs, ExportArgs, GcArgs, ImportArgs};
use super::files::{absolute, print_op_report};
use super::{PartialFailure, engine};
use crate::output::{human_bytes_tib as human_bytes, print_json};

pub(super) async fn import(
    common: &CommonArgs,
    args: &ImportArgs,
    json: bool,
) -> anyhow::Result<()> {
    let engine = engine(common).await?;
    let opts = ImportOptions {
        source_prefix: args.prefix.clone(),
        target: absolute(&args.target)?,
        conflict: args.conflict.into(),
        max_errors: common.max_errors.unwrap_or(100),
        default_uid: args.uid,
        default_gid: args.gid,
        preserve_owner: args.preserve_owner,
        preserve_setid: args.preserve_setid,
        xattr_allow: args.xattr_allow.clone(),
        with_data: args.with_data,
    };
    let spinner = if common.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    spinner.set_message("importing");
    spinner.enable_steady_tick(Duration::from_millis(200));
    let report = engine.import(&opts).await?;
    spinner.finish_and_clear();
    let entries = report.files + report.dirs + report.symlinks;
    if json {
        print_json(&report)?;
    } else {
        for e in &report.errors {
            eprintln!("error: {}", e.error);
        }
        let secs = (report.elapsed_ms as f64 / 1000.0).max(1e-9);
        println!(
            "import: {} files, {} directories, {} symlinks, {} skipped, {} failed ({} {}) in {:.2}s ({:.0} stubs/s)",
            report.files,
            report.dirs,
            report.symlinks,
            report.skipped,
            report.errors.len(),
            human_bytes(report.bytes),
            if args.with_data { "copied" } else { "as stubs" },
            secs,
            entries as f64 / secs
        );
        if report.setid_dropped > 0 {
            eprintln!(
                "import: setuid/setgid bits not applied on {} entries (--preserve-setid keeps them)",
                report.setid_dropped
            );
        }
        if report.xattrs_dropped > 0 {
            eprintln!(
                "import: {} xattrs not applied ({}); only user.* is, others with --xattr-allow",
                report.xattrs_dropped,
                report.xattrs_dropped_names.join(", ")
            );
        }
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(PartialFailure {
            op: "import".into(),
            failed: report.errors.len(),
            total: entries + report.skipped + report.errors.len(),
            stopped: report.stopped,
        }
        .into())
    }
}

pub(super) async fn export(
    common: &CommonArgs,
    args: &ExportArgs,
    json: bool,
) -> anyhow::Result<()> {
    let engine = engine(common).await?;
    let dir = match &args.dir {
        Some(d) => absolute(d)?,
        None => engine.config().root.clone(),
    };
    let started = Instant::now();
    let report = engine.export(&dir, args.conflict.into()).await?;
    let total = report.done + report.skipped + report.errors.len();
    print_op_report("export", total, &report, started.elapsed(), json)
}

pub(super) async fn gc(common: &CommonArgs, args: &GcArgs, json: bool) -> anyhow::Result<()> {
    let engine = engine(common).await?;
    let report = engine
        .gc(&hsm::gc::GcOptions {
            dry_run: args.dry_run,
            grace: args.grace,
        })
        .await?;
    if json {
        print_json(&report)?;
    } else {
        let verb = if report.dry_run {
            "would free"
        } else {
            "freed"
        };
        println!(
            "gc: {} files scanned, {} versions pinned; {} versions aside: {} pinned, {} in grace; {verb} {} ({})",
            report.files_scanned,
            report.pinned_versions,
            report.versions_seen,
            report.kept_pinned,
            report.kept_in_grace,
            report.freed,
            human_bytes(report.bytes_freed)
        );
        for e in &report.errors {
            eprintln!("{}: {}", e.path.display(), e.error);
        }
    }
    if !report.errors.is_empty() {
        anyhow::bail!(
            "{} files' pins could not be read; nothing was deleted",
            report.errors.len()
        );
    }
    Ok(())
}
