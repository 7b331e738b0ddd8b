//! HSM: `lfs hsm_state FILE`, `lfs hsm_set [flags] [--archive-id N] FILE`,
//! `lfs hsm_clear [flags] FILE` and `lfs hsm_release FILE` (`lfs-hsm.md`).
//!
//! Files are absolute paths under `mount_point` on this host; commands name them as the
//! command host sees them (under `mds_mount_point` when that is set).

use async_trait::async_trait;
use std::path::Path;

use lustre_model::{HsmFlags, HsmState, ParseError};

use super::{LustreBackend, On, is_enoent, parse_error};
use crate::{BackendError, Result};

/// The file as the command host names it, checked to lie under the mount point.
fn file_arg(b: &LustreBackend, file: &Path) -> Result<String> {
    let outside = || {
        BackendError::InvalidState(format!(
            "{} is not a file under the Lustre mount {}",
            file.display(),
            b.inner.config.mount_point.display()
        ))
    };
    if !file.is_absolute()
        || file
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(outside());
    }
    let relative = file
        .strip_prefix(&b.inner.config.mount_point)
        .map_err(|_| outside())?
        .to_str()
        .ok_or_else(outside)?;
    let base = b.inner.mount_point.trim_end_matches('/');
    Ok(if relative.is_empty() {
        base.to_owned()
    } else {
        format!("{base}/{relative}")
    })
}

fn not_found(file: &str) -> BackendError {
    BackendError::NotFound {
        path: file.to_owned(),
    }
}

pub(super) async fn hsm_state(b: &LustreBackend, file: &Path) -> Result<HsmState> {
    let path = file_arg(b, file)?;
    let argv = b.lfs(["hsm_state", &path]);
    let out = b.run(On::Mds, &argv).await?;
    if !out.success() {
        return Err(if is_enoent(&out) {
            not_found(&path)
        } else {
            out.error(&argv)
        });
    }
    let states =
        lustre_model::parse_lfs_hsm_state(&out.stdout_text()).map_err(|e| parse_error(&argv, e))?;
    states
        .into_iter()
        .next()
        .map(|(_, state)| state)
        .ok_or_else(|| parse_error(&argv, ParseError::new("lfs hsm_state", 0, "no state line")))
}

/// The `hsm_set`/`hsm_clear` options for `flags`, in the order of `lfs help hsm_set`.
/// `released` and the PCC bits cannot be set this way.
fn flag_options(flags: &HsmFlags) -> Result<Vec<&'static str>> {
    if flags.released || flags.pcc_rw || flags.pcc_ro || flags.other_bits != 0 {
        return Err(BackendError::unsupported(
            "hsm flag",
            "released comes only from `lfs hsm_release`; PCC and unknown bits cannot be set",
        ));
    }
    let table = [
        (flags.no_release, "--norelease"),
        (flags.no_archive, "--noarchive"),
        (flags.dirty, "--dirty"),
        (flags.exists, "--exists"),
        (flags.archived, "--archived"),
        (flags.lost, "--lost"),
    ];
    Ok(table
        .into_iter()
        .filter_map(|(on, option)| on.then_some(option))
        .collect())
}

pub(super) async fn hsm_mark(
    b: &LustreBackend,
    file: &Path,
    set: HsmFlags,
    clear: HsmFlags,
    archive_id: Option<u32>,
) -> Result<()> {
    let path = file_arg(b, file)?;
    let set_options = flag_options(&set)?;
    let clear_options = flag_options(&clear)?;
    if !set_options.is_empty() || archive_id.is_some() {
        let id = archive_id.map(|id| id.to_string());
        let mut args = vec!["hsm_set"];
        args.extend(&set_options);
        if let Some(id) = &id {
            args.extend(["--archive-id", id.as_str()]);
        }
        args.push(&path);
        run_file_command(b, &b.lfs(args), &path).await?;
    }
    if !clear_options.is_empty() {
        let mut args = vec!["hsm_clear"];
        args.extend(&clear_options);
        args.push(&path);
        run_file_command(b, &b.lfs(args), &path).await?;
    }
    Ok(())
}

pub(super) async fn hsm_release(b: &LustreBackend, file: &Path) -> Result<()> {
    let path = file_arg(b, file)?;
    run_file_command(b, &b.lfs(["hsm_release", &path]), &path).await
}

/// `lfs data_version --read FILE` (`lfs-hsm.md` (a)): `--read` flushes dirty pages from the
/// clients first, as `llapi_get_data_version` with `LL_DV_RD_FLUSH` does for the copytool.
pub(super) async fn data_version(b: &LustreBackend, file: &Path) -> Result<u64> {
    let path = file_arg(b, file)?;
    let argv = b.lfs(["data_version", "--read", &path]);
    let out = b.run(On::Mds, &argv).await?;
    if !out.success() {
        return Err(if is_enoent(&out) {
            not_found(&path)
        } else {
            out.error(&argv)
        });
    }
    lustre_model::parse_lfs_data_version(&out.stdout_text()).map_err(|e| parse_error(&argv, e))
}

async fn run_file_command(b: &LustreBackend, argv: &[String], path: &str) -> Result<()> {
    let out = b.run(On::Mds, argv).await?;
    if !out.success() && is_enoent(&out) {
        return Err(not_found(path));
    }
    out.check(argv)?;
    Ok(())
}

#[async_trait]
impl crate::Hsm for LustreBackend {
    async fn hsm_state(&self, file: &Path) -> Result<HsmState> {
        hsm_state(self, file).await
    }

    async fn hsm_mark(
        &self,
        file: &Path,
        set: HsmFlags,
        clear: HsmFlags,
        archive_id: Option<u32>,
    ) -> Result<()> {
        hsm_mark(self, file, set, clear, archive_id).await
    }

    async fn hsm_release(&self, file: &Path) -> Result<()> {
        hsm_release(self, file).await
    }

    async fn data_version(&self, file: &Path) -> Result<crate::DataVersion> {
        let version = data_version(self, file).await?;
        Ok(crate::DataVersion::Lustre { version })
    }
}
