//! Nodemaps, on the MGS: read with `lctl get_param nodemap.active nodemap.*.*` (parsed by
//! `parse_nodemap_params`), changed with the positional 2.12–2.16 syntax that 2.17 still
//! accepts (`lctl-nodemap.md`):
//!
//! | change | argv |
//! |---|---|
//! | create | `lctl nodemap_add NAME` |
//! | delete | `lctl nodemap_del NAME` |
//! | add range | `lctl nodemap_add_range --name NAME --range EXPR` |
//! | delete range | `lctl nodemap_del_range --name NAME --range EXPR` |
//! | property | `lctl nodemap_modify --name NAME --property P --value V` |
//! | fileset | `lctl nodemap_set_fileset --name NAME --fileset PATH` (`''` clears) |
//! | idmap | `lctl nodemap_add_idmap --name NAME --idtype uid --idmap CLIENT:FS` (`_del_` too) |
//! | activate | `lctl nodemap_activate 1` (or `0`) |
//!
//! Creating a nodemap that exists, or deleting one that does not, is success: the messages
//! of 2.16 (`error: NAME existing nodemap name`, `error: NAME not existing nodemap name`)
//! and 2.17 (`error: nodemap 'NAME' already exists`, `... does not exist`) are matched.

use async_trait::async_trait;
use lustre_model::{NodemapName, NodemapState};

use super::runner::CommandOutput;
use super::{LustreBackend, On, parse_error};
use crate::{BackendError, NodemapChange, Result};

pub(super) async fn nodemaps(b: &LustreBackend) -> Result<NodemapState> {
    let argv = b.lctl(["get_param", "nodemap.active", "nodemap.*.*"]);
    let out = b.run_ok(On::Mgs, &argv).await?;
    lustre_model::parse_nodemap_params(&out.stdout_text()).map_err(|e| parse_error(&argv, e))
}

/// The argv of one change.
pub(super) fn change_argv(b: &LustreBackend, change: &NodemapChange) -> Result<Vec<String>> {
    Ok(match change {
        NodemapChange::Create { name } => b.lctl(["nodemap_add", name.as_str()]),
        NodemapChange::Delete { name } => b.lctl(["nodemap_del", name.as_str()]),
        NodemapChange::AddRange { name, range } => {
            let expr = range.to_lctl_expr()?;
            b.lctl([
                "nodemap_add_range",
                "--name",
                name.as_str(),
                "--range",
                &expr,
            ])
        }
        NodemapChange::DelRange { name, range } => {
            let expr = range.to_lctl_expr()?;
            b.lctl([
                "nodemap_del_range",
                "--name",
                name.as_str(),
                "--range",
                &expr,
            ])
        }
        NodemapChange::SetProperty {
            name,
            property,
            value,
        } => {
            check_word("property", property)?;
            b.lctl([
                "nodemap_modify",
                "--name",
                name.as_str(),
                "--property",
                property,
                "--value",
                value,
            ])
        }
        NodemapChange::AddIdmap { name, idmap } | NodemapChange::DelIdmap { name, idmap } => {
            let op = if matches!(change, NodemapChange::AddIdmap { .. }) {
                "nodemap_add_idmap"
            } else {
                "nodemap_del_idmap"
            };
            let pair = format!("{}:{}", idmap.client_id, idmap.fs_id);
            b.lctl([
                op,
                "--name",
                name.as_str(),
                "--idtype",
                idmap.idtype.as_str(),
                "--idmap",
                &pair,
            ])
        }
        NodemapChange::SetFileset { name, fileset } => {
            let fileset = fileset.as_deref().unwrap_or("");
            if !fileset.is_empty() && !fileset.starts_with('/') {
                return Err(BackendError::InvalidState(format!(
                    "nodemap {name} fileset {fileset:?} must be an absolute path inside the filesystem"
                )));
            }
            b.lctl([
                "nodemap_set_fileset",
                "--name",
                name.as_str(),
                "--fileset",
                fileset,
            ])
        }
        NodemapChange::Activate { active } => {
            b.lctl(["nodemap_activate", if *active { "1" } else { "0" }])
        }
    })
}

/// A property name is one lctl word (`squash_uid`), never an option.
fn check_word(what: &str, word: &str) -> Result<()> {
    if word.is_empty() || !word.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return Err(BackendError::InvalidState(format!(
            "nodemap {what} {word:?} is not a valid lctl name"
        )));
    }
    Ok(())
}

/// 2.16: `error: NAME existing nodemap name`; 2.17: `error: nodemap 'NAME' already exists`.
fn already_exists(out: &CommandOutput, name: &NodemapName) -> bool {
    let stderr = out.stderr_text();
    let n = name.as_str();
    stderr.contains(&format!("{n} existing nodemap name"))
        || stderr.contains(&format!("nodemap '{n}' already exists"))
}

/// 2.16: `error: NAME not existing nodemap name`; 2.17: `error: nodemap 'NAME' does not exist`.
fn does_not_exist(out: &CommandOutput, name: &NodemapName) -> bool {
    let stderr = out.stderr_text();
    let n = name.as_str();
    stderr.contains(&format!("{n} not existing nodemap name"))
        || stderr.contains(&format!("nodemap '{n}' does not exist"))
}

/// Applies the changes in the order given, stopping at the first failure.
pub(super) async fn apply(b: &LustreBackend, changes: &[NodemapChange]) -> Result<()> {
    for change in changes {
        let argv = change_argv(b, change)?;
        let out = b.run(On::Mgs, &argv).await?;
        if out.success() {
            continue;
        }
        let converged = match change {
            NodemapChange::Create { name } => already_exists(&out, name),
            NodemapChange::Delete { name } => does_not_exist(&out, name),
            _ => false,
        };
        if converged {
            tracing::debug!(change = ?change, "nodemap already in the wanted state");
            continue;
        }
        return Err(out.error(&argv));
    }
    Ok(())
}

#[async_trait]
impl crate::Nodemaps for LustreBackend {
    async fn nodemaps(&self) -> Result<NodemapState> {
        nodemaps(self).await
    }

    async fn apply_nodemap_changes(&self, changes: &[NodemapChange]) -> Result<()> {
        apply(self, changes).await
    }
}
