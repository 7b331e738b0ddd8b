//! Persistent Client Cache on the node (`pcc.md`): `lctl pcc add MNT CACHE --param PARAM`,
//! `lctl pcc del MNT CACHE`, `lctl pcc list MNT`, `lfs pcc attach -i ID [-r|-w] FILE`,
//! `lfs pcc state FILE`, `lfs pcc detach_fid [-m] MNT FID` and the `pcc_*` counters of
//! `lctl get_param llite.<fsname>-*.stats`.
//!
//! Every command runs on the node (its client mounts and local cache), never on the MDS.
//! The syntax differs between 2.15 and 2.16+ clients ([`PccDialect`]): the dialect is read
//! once from the node's `lctl get_param version` and kept.

use std::path::Path;

use async_trait::async_trait;
use lustre_model::{
    Fid, ParseError, PccAddParam, PccCounters, PccDataset, PccDialect, PccFileState, PccMode,
    parse_lctl_pcc_list, parse_lctl_version, parse_lfs_pcc_state, parse_llite_pcc_stats,
};

use super::{LustreBackend, On, is_enoent, parse_error};
use crate::{BackendError, Result};

/// A node path as an argument: absolute, UTF-8, without NUL or newline (it is also shown
/// in `lctl`'s own messages, one per line).
fn node_path<'a>(what: &str, path: &'a Path) -> Result<&'a str> {
    let text = path.to_str().filter(|t| !t.contains(['\n', '\0']));
    match text {
        Some(t) if path.is_absolute() => Ok(t),
        _ => Err(BackendError::InvalidState(format!(
            "{what} {} must be an absolute UTF-8 path",
            path.display()
        ))),
    }
}

/// The cache directory as an argument: a node path without spaces either, since the
/// kernel reads `add <pccpath> <rule> <keys>` split at spaces (`pcc_cmd_parse`).
fn cache_path(cache: &Path) -> Result<&str> {
    let text = node_path("PCC cache", cache)?;
    if text.chars().any(char::is_whitespace) {
        return Err(BackendError::InvalidState(format!(
            "PCC cache {text:?} must not contain spaces"
        )));
    }
    Ok(text)
}

/// The stderr says the thing exists already (`EEXIST`).
fn is_eexist(out: &super::CommandOutput) -> bool {
    out.stderr_text().contains("File exists")
}

pub(super) async fn dialect(b: &LustreBackend) -> Result<PccDialect> {
    if let Some(d) = b.inner.pcc_dialect.get() {
        return Ok(*d);
    }
    let argv = b.lctl(["get_param", "version"]);
    let out = b.run_ok(On::Node, &argv).await?;
    let version = parse_lctl_version(&out.stdout_text()).map_err(|e| parse_error(&argv, e))?;
    let d = PccDialect::for_version(&version).ok_or_else(|| {
        BackendError::unsupported(
            "pcc",
            format!("this node's Lustre client {version} predates PCC (2.13)"),
        )
    })?;
    // Two callers racing here read the same version; either value is the right one.
    let _ = b.inner.pcc_dialect.set(d);
    Ok(d)
}

pub(super) async fn add(
    b: &LustreBackend,
    mount: &Path,
    cache: &Path,
    param: &PccAddParam,
) -> Result<()> {
    let mnt = node_path("PCC mount", mount)?;
    let dir = cache_path(cache)?;
    let text = param
        .render(dialect(b).await?)
        .map_err(|e| BackendError::unsupported("pcc", e.to_string()))?;
    let argv = b.lctl(["pcc", "add", mnt, dir, "--param", text.as_str()]);
    let out = b.run(On::Node, &argv).await?;
    if out.success() {
        return Ok(());
    }
    if !is_eexist(&out) {
        return Err(out.error(&argv));
    }
    // Registered already (a retry, a restarted plugin): fine if with the same rule.
    let rule = param.rule.to_string();
    let listed = list(b, mount).await?;
    match listed.iter().find(|d| d.path == dir) {
        Some(d) if d.autocache == rule => Ok(()),
        Some(d) => Err(BackendError::InvalidState(format!(
            "PCC cache {dir} is registered on {mnt} with the rule `{}`, not `{rule}`",
            d.autocache
        ))),
        None => Err(out.error(&argv)),
    }
}

pub(super) async fn del(b: &LustreBackend, mount: &Path, cache: &Path) -> Result<bool> {
    let mnt = node_path("PCC mount", mount)?;
    let dir = cache_path(cache)?;
    let argv = b.lctl(["pcc", "del", mnt, dir]);
    let out = b.run(On::Node, &argv).await?;
    if out.success() {
        return Ok(true);
    }
    // The kernel answers ENOENT for a cache not registered.
    if is_enoent(&out) {
        return Ok(false);
    }
    Err(out.error(&argv))
}

pub(super) async fn list(b: &LustreBackend, mount: &Path) -> Result<Vec<PccDataset>> {
    let mnt = node_path("PCC mount", mount)?;
    let argv = b.lctl(["pcc", "list", mnt]);
    let out = b.run_ok(On::Node, &argv).await?;
    parse_lctl_pcc_list(&out.stdout_text()).map_err(|e| parse_error(&argv, e))
}

pub(super) async fn attach(b: &LustreBackend, file: &Path, id: u32, mode: PccMode) -> Result<()> {
    let path = node_path("file", file)?;
    let flag = mode
        .attach_flag(dialect(b).await?)
        .map_err(|e| BackendError::unsupported("pcc attach", e.to_string()))?;
    let id = id.to_string();
    let mut args = vec!["pcc", "attach", "-i", id.as_str()];
    args.extend(flag);
    args.push(path);
    let argv = b.lfs(args);
    let out = b.run(On::Node, &argv).await?;
    if !out.success() && is_enoent(&out) {
        return Err(BackendError::NotFound {
            path: path.to_owned(),
        });
    }
    out.check(&argv)?;
    Ok(())
}

pub(super) async fn state(b: &LustreBackend, file: &Path) -> Result<PccFileState> {
    let path = node_path("file", file)?;
    let argv = b.lfs(["pcc", "state", path]);
    let out = b.run(On::Node, &argv).await?;
    if !out.success() && is_enoent(&out) {
        return Err(BackendError::NotFound {
            path: path.to_owned(),
        });
    }
    let out = out.check(&argv)?;
    parse_lfs_pcc_state(&out.stdout_text())
        .map_err(|e| parse_error(&argv, e))?
        .into_iter()
        .next()
        .ok_or_else(|| parse_error(&argv, ParseError::new("lfs pcc state", 0, "no state line")))
}

pub(super) async fn detach_fid(b: &LustreBackend, mount: &Path, fid: &Fid) -> Result<()> {
    let mnt = node_path("PCC mount", mount)?;
    let fid = fid.to_string();
    // 2.15 takes the mount as the first operand; 2.16+ documents `-m` (and still takes the
    // operand, for compatibility).
    let argv = match dialect(b).await? {
        PccDialect::V2_15 => b.lfs(["pcc", "detach_fid", mnt, fid.as_str()]),
        PccDialect::V2_16 => b.lfs(["pcc", "detach_fid", "-m", mnt, fid.as_str()]),
    };
    let out = b.run(On::Node, &argv).await?;
    // A file removed since (its FID gone) has nothing cached left to drop.
    if out.success() || is_enoent(&out) {
        return Ok(());
    }
    Err(out.error(&argv))
}

pub(super) async fn counters(b: &LustreBackend) -> Result<Vec<PccCounters>> {
    let pattern = format!("llite.{}-*.stats", b.inner.config.fsname.as_str());
    let argv = b.lctl(["get_param", pattern.as_str()]);
    let out = b.run(On::Node, &argv).await?;
    // Nothing of the filesystem mounted here: no counters.
    if !out.success() && is_enoent(&out) {
        return Ok(Vec::new());
    }
    let out = out.check(&argv)?;
    parse_llite_pcc_stats(&out.stdout_text()).map_err(|e| parse_error(&argv, e))
}

#[async_trait]
impl crate::Pcc for LustreBackend {
    async fn pcc_dialect(&self) -> Result<PccDialect> {
        dialect(self).await
    }

    async fn pcc_add(&self, mount: &Path, cache: &Path, param: &PccAddParam) -> Result<()> {
        add(self, mount, cache, param).await
    }

    async fn pcc_del(&self, mount: &Path, cache: &Path) -> Result<bool> {
        del(self, mount, cache).await
    }

    async fn pcc_list(&self, mount: &Path) -> Result<Vec<PccDataset>> {
        list(self, mount).await
    }

    async fn pcc_attach(&self, file: &Path, id: u32, mode: PccMode) -> Result<()> {
        attach(self, file, id, mode).await
    }

    async fn pcc_state(&self, file: &Path) -> Result<PccFileState> {
        state(self, file).await
    }

    async fn pcc_detach_fid(&self, mount: &Path, fid: &Fid) -> Result<()> {
        detach_fid(self, mount, fid).await
    }

    async fn pcc_counters(&self) -> Result<Vec<PccCounters>> {
        counters(self).await
    }
}
