//! The file operations (archive, release, restore, remove, dirty) and `state`, on paths
//! and, with `-r`, trees.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hsm::{FileOp, OpReport, PathError, TreeReport};
use serde::Serialize;

use super::args::{CommonArgs, PathArgs};
use super::progress::Bars;
use super::{PartialFailure, engine, engine_with};
use crate::output::{human_bytes_tib as human_bytes, print_json};

pub(super) async fn file_op(
    common: &CommonArgs,
    op: FileOp,
    args: &PathArgs,
    unguarded: bool,
    json: bool,
) -> anyhow::Result<()> {
    let paths = expand(op, args)?;
    let total_bytes: u64 = paths.iter().map(|(_, n)| n).sum();
    let copies = matches!(op, FileOp::Archive | FileOp::Restore);
    let bars = Bars::new(
        op.name(),
        paths.len() as u64,
        copies.then_some(total_bytes),
        common.no_progress,
    );
    let b = bars.clone();
    let engine = engine_with(common, unguarded)
        .await?
        .with_progress(Arc::new(move |p| b.bytes_of(&p.path, p.done_bytes)));
    let sizes: HashMap<PathBuf, u64> = paths.iter().cloned().collect();
    let started = Instant::now();
    let list: Vec<PathBuf> = paths.into_iter().map(|(p, _)| p).collect();
    let total = list.len();
    let b = bars.clone();
    let report = engine
        .apply(op, list, common.max_errors, &move |p, r| {
            let n = match r {
                Ok(rep) => rep.bytes,
                Err(_) => sizes.get(p).copied().unwrap_or(0),
            };
            b.finish_path(p, n);
            if let Err(e) = r {
                b.files
                    .suspend(|| tracing::warn!(path = %p.display(), error = %e, "failed"));
            }
        })
        .await;
    bars.finish();
    print_op_report(op.name(), total, &report, started.elapsed(), json)
}

pub(super) fn print_op_report(
    op: &str,
    total: usize,
    report: &TreeReport,
    took: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let secs = took.as_secs_f64().max(1e-9);
    if json {
        print_json(&OpSummary {
            op,
            total,
            done: report.done,
            skipped: report.skipped,
            failed: report.errors.len(),
            bytes: report.bytes,
            elapsed_ms: took.as_millis() as u64,
            bytes_per_sec: report.bytes as f64 / secs,
            files_per_sec: (report.done + report.skipped) as f64 / secs,
            stopped: report.stopped,
            errors: &report.errors,
            items: &report.items,
        })?;
    } else {
        for e in &report.errors {
            eprintln!("error: {}", e.error);
        }
        println!(
            "{op}: {} done, {} skipped, {} failed, {} in {:.2}s ({}/s, {:.0} files/s)",
            report.done,
            report.skipped,
            report.errors.len(),
            human_bytes(report.bytes),
            secs,
            human_bytes((report.bytes as f64 / secs) as u64),
            (report.done + report.skipped) as f64 / secs,
        );
    }
    if report.errors.is_empty() && !report.stopped {
        Ok(())
    } else {
        Err(PartialFailure {
            op: op.to_string(),
            failed: report.errors.len(),
            total,
            stopped: report.stopped,
        }
        .into())
    }
}

pub(super) async fn state(common: &CommonArgs, args: &PathArgs, json: bool) -> anyhow::Result<()> {
    let engine = engine(common).await?;
    let paths = expand(FileOp::Release, args)?;
    let mut out = Vec::new();
    let mut failed = 0;
    for (p, _) in &paths {
        match engine.state(p).await {
            Ok(s) => {
                if !json {
                    println!("{}: {}", s.path.display(), s.text);
                }
                out.push(s);
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if json {
        print_json(&out)?;
    }
    if failed > 0 {
        return Err(PartialFailure {
            op: "state".into(),
            failed,
            total: paths.len(),
            stopped: false,
        }
        .into());
    }
    Ok(())
}

/// An absolute form of a path given on the command line: relative to the current
/// directory, with the parent's symlinks resolved (the last component is kept as it is, so
/// a symlink is archived as a symlink and a deleted file can still be named).
pub(super) fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("current directory")?
            .join(p)
    };
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Ok(abs);
    };
    Ok(match parent.canonicalize() {
        Ok(parent) => parent.join(name),
        Err(_) => abs,
    })
}

/// The paths an operation works on: each path itself, and with `-r` everything beneath a
/// directory (regular files only, except for archive, which also records directories and
/// symlinks). Sorted, parents first.
fn expand(op: FileOp, args: &PathArgs) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for p in &args.paths {
        let abs = absolute(p)?;
        let md = std::fs::symlink_metadata(&abs);
        let is_dir = md.as_ref().is_ok_and(|m| m.is_dir());
        if is_dir && args.recursive {
            let archive = op == FileOp::Archive;
            let (found, errors) =
                hsm::walk::walk_with(&abs, hsm::walk::DEFAULT_WALK_WORKERS, |p, m| {
                    (m.is_file() || (archive && (m.is_dir() || m.is_symlink())))
                        .then(|| (p.to_path_buf(), if m.is_file() { m.len() } else { 0 }))
                })?;
            for (p, e) in errors {
                tracing::warn!(path = %p.display(), error = %e, "walk");
            }
            out.extend(found);
        } else if is_dir && op != FileOp::Archive && op != FileOp::Remove {
            bail!(
                "{}: is a directory (use -r for the files in it)",
                abs.display()
            );
        } else {
            out.push((abs, md.map(|m| m.len()).unwrap_or(0)));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The `--json` report of a file operation.
#[derive(Debug, Serialize)]
struct OpSummary<'a> {
    op: &'a str,
    total: usize,
    done: usize,
    skipped: usize,
    failed: usize,
    bytes: u64,
    elapsed_ms: u64,
    bytes_per_sec: f64,
    files_per_sec: f64,
    stopped: bool,
    errors: &'a [PathError],
    items: &'a [OpReport],
}
