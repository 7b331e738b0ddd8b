//! Directories and small state files, by coreutils commands on the MDS-side client mount.
//!
//! Paths are always `<mount_point>/<relpath>` (absolute, so never taken for an option), and
//! `--` ends the options of every coreutils command anyway. Outcomes are read from the exit
//! status first and from the (`LC_ALL=C`) stderr only to tell "not there" or "already there"
//! apart from real failures.

use async_trait::async_trait;
use std::time::Duration;

use lustre_model::{LayoutSpec, RelPath};

use super::runner::CommandOutput;
use super::{LustreBackend, On, argv, is_enoent};
use crate::{BackendError, DirInfo, DirSpec, Result};

/// `stat -c` format: raw mode in hex, uid, gid, mtime, then the file type (may hold spaces).
const STAT_FORMAT: &str = "%f %u %g %Y %F";

/// What `stat` said about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StatRaw {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub file_type: String,
}

impl StatRaw {
    fn is_dir(&self) -> bool {
        self.file_type == "directory"
    }
}

fn cmd<'a>(program: &str, args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    argv(program, args)
}

fn file_exists(out: &CommandOutput) -> bool {
    out.stderr_text().contains("File exists")
}

pub(super) async fn ensure_dir(b: &LustreBackend, dir: &RelPath) -> Result<()> {
    let path = b.path(dir);
    b.run_ok(On::Mds, &cmd("mkdir", ["-p", "--", &path]))
        .await?;
    Ok(())
}

pub(super) async fn create_share_dir(
    b: &LustreBackend,
    dir: &RelPath,
    spec: &DirSpec,
) -> Result<bool> {
    let path = b.path(dir);
    // Private until it has its owner; the final mode is set last (chown clears set-id bits).
    let mkdir = cmd("mkdir", ["-m", "0700", "--", &path]);
    let out = b.run(On::Mds, &mkdir).await?;
    if !out.success() {
        if file_exists(&out) {
            return Ok(false);
        }
        if is_enoent(&out) {
            return Err(BackendError::NotFound {
                path: dir
                    .parent()
                    .map_or_else(|| b.inner.mount_point.clone(), |p| p.as_str().to_owned()),
            });
        }
        return Err(out.error(&mkdir));
    }
    let owner = format!("{}:{}", spec.uid, spec.gid);
    b.run_ok(On::Mds, &cmd("chown", ["--", &owner, &path]))
        .await?;
    let mode = format!("{:04o}", spec.mode & 0o7777);
    b.run_ok(On::Mds, &cmd("chmod", ["--", &mode, &path]))
        .await?;
    Ok(true)
}

pub(super) async fn remove_share_dir(b: &LustreBackend, dir: &RelPath) -> Result<bool> {
    let Some(st) = stat_raw(b, dir).await? else {
        return Ok(false);
    };
    if !st.is_dir() {
        return Err(BackendError::InvalidState(format!(
            "{} is a {}, not a share directory",
            dir.as_str(),
            st.file_type
        )));
    }
    let path = b.path(dir);
    let rm = cmd("rm", ["-rf", "--one-file-system", "--", &path]);
    let timeout = Duration::from_secs(b.inner.config.remove_timeout_secs.max(1));
    b.runner(On::Mds)
        .run_with_timeout(&rm, None, timeout)
        .await?
        .check(&rm)?;
    Ok(true)
}

/// `mv -T --no-clobber`, between checks: `to` must not exist before, and `from` must be gone
/// after (if someone made `to` in between, `--no-clobber` left `from` in place).
pub(super) async fn rename(b: &LustreBackend, from: &RelPath, to: &RelPath) -> Result<()> {
    let already = || BackendError::AlreadyExists {
        path: to.as_str().to_owned(),
    };
    if stat_raw(b, to).await?.is_some() {
        return Err(already());
    }
    if stat_raw(b, from).await?.is_none() {
        return Err(BackendError::NotFound {
            path: from.as_str().to_owned(),
        });
    }
    let (src, dst) = (b.path(from), b.path(to));
    let mv = cmd("mv", ["-T", "--no-clobber", "--", &src, &dst]);
    let out = b.run(On::Mds, &mv).await?;
    if !out.success() {
        // coreutils ≥ 9.2 fails instead of skipping silently.
        if out.stderr_text().contains("not replacing") || file_exists(&out) {
            return Err(already());
        }
        if is_enoent(&out) {
            return Err(BackendError::NotFound {
                path: from.as_str().to_owned(),
            });
        }
        return Err(out.error(&mv));
    }
    if stat_raw(b, from).await?.is_some() {
        return Err(already());
    }
    Ok(())
}

/// `stat -c` of `<mount_point>/<dir>`, without following a final symlink; `None` if absent.
pub(super) async fn stat_raw(b: &LustreBackend, dir: &RelPath) -> Result<Option<StatRaw>> {
    let path = b.path(dir);
    let stat = cmd("stat", ["-c", STAT_FORMAT, "--", &path]);
    let out = b.run(On::Mds, &stat).await?;
    if !out.success() {
        if is_enoent(&out) {
            return Ok(None);
        }
        return Err(out.error(&stat));
    }
    parse_stat(&out.stdout_text()).map(Some).ok_or_else(|| {
        BackendError::InvalidState(format!(
            "unexpected output of `stat -c '{STAT_FORMAT}'` for {path}: {:?}",
            out.stdout_text()
        ))
    })
}

fn parse_stat(text: &str) -> Option<StatRaw> {
    let line = text.lines().next()?.trim_end();
    let mut fields = line.splitn(5, ' ');
    let mode = u32::from_str_radix(fields.next()?, 16).ok()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    let mtime = fields.next()?.parse().ok()?;
    let file_type = fields.next()?.to_owned();
    Some(StatRaw {
        mode,
        uid,
        gid,
        mtime,
        file_type,
    })
}

pub(super) async fn stat_dir(b: &LustreBackend, dir: &RelPath) -> Result<Option<DirInfo>> {
    let Some(st) = stat_raw(b, dir).await? else {
        return Ok(None);
    };
    if !st.is_dir() {
        return Err(BackendError::InvalidState(format!(
            "{} is a {}, not a directory",
            dir.as_str(),
            st.file_type
        )));
    }
    let project = match super::project::project_of(b, dir).await {
        Ok(project) => project,
        // Removed between the two commands.
        Err(BackendError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(DirInfo {
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        project,
        modified: st.mtime,
    }))
}

/// Names of the entries of `dir`, NUL-separated by `find -printf` (names may hold newlines),
/// sorted. An absent directory lists as empty.
pub(super) async fn list_dir(b: &LustreBackend, dir: &RelPath) -> Result<Vec<String>> {
    let path = b.path(dir);
    let find = cmd(
        "find",
        [
            &path,
            "-mindepth",
            "1",
            "-maxdepth",
            "1",
            "-printf",
            "%f\\0",
        ],
    );
    let out = b.run(On::Mds, &find).await?;
    if !out.success() {
        if is_enoent(&out) && out.stdout.is_empty() {
            return Ok(Vec::new());
        }
        return Err(out.error(&find));
    }
    let mut names: Vec<String> = out
        .stdout
        .split(|&byte| byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// One `mkdir` (no `-p`): atomic on Lustre as anywhere, so exactly one caller wins.
pub(super) async fn claim(b: &LustreBackend, marker: &RelPath) -> Result<bool> {
    let path = b.path(marker);
    let mkdir = cmd("mkdir", ["-m", "0700", "--", &path]);
    let out = b.run(On::Mds, &mkdir).await?;
    if out.success() {
        Ok(true)
    } else if file_exists(&out) {
        Ok(false)
    } else if is_enoent(&out) {
        Err(BackendError::NotFound {
            path: marker.as_str().to_owned(),
        })
    } else {
        Err(out.error(&mkdir))
    }
}

pub(super) async fn unclaim(b: &LustreBackend, marker: &RelPath) -> Result<()> {
    let path = b.path(marker);
    let rmdir = cmd("rmdir", ["--", &path]);
    let out = b.run(On::Mds, &rmdir).await?;
    if out.success() || is_enoent(&out) {
        Ok(())
    } else {
        Err(out.error(&rmdir))
    }
}

pub(super) async fn read_file(b: &LustreBackend, file: &RelPath) -> Result<Option<Vec<u8>>> {
    let path = b.path(file);
    let cat = cmd("cat", ["--", &path]);
    let out = b.run(On::Mds, &cat).await?;
    if out.success() {
        Ok(Some(out.stdout))
    } else if is_enoent(&out) {
        Ok(None)
    } else {
        Err(out.error(&cat))
    }
}

/// The atomic write: content on stdin into `<file>.tmp.<pid>`, flushed, then renamed over
/// `<file>`; the temporary file is removed if any step fails. The path is the script's `$1`,
/// never pasted into the script.
pub(super) const WRITE_SCRIPT: &str = r#"tmp="$1.tmp.$$"; { cat > "$tmp" && sync -- "$tmp" && mv -f -- "$tmp" "$1"; } || { rc=$?; rm -f -- "$tmp"; exit $rc; }"#;

pub(super) async fn write_file(b: &LustreBackend, file: &RelPath, content: &[u8]) -> Result<()> {
    let path = b.path(file);
    let sh = cmd("sh", ["-c", WRITE_SCRIPT, "sh", &path]);
    let out = b.runner(On::Mds).run(&sh, Some(content)).await?;
    // dash says "Directory nonexistent" where bash says "No such file or directory".
    if !out.success() && (is_enoent(&out) || out.stderr_text().contains("Directory nonexistent")) {
        return Err(BackendError::NotFound {
            path: file
                .parent()
                .map_or_else(|| file.as_str().to_owned(), |p| p.as_str().to_owned()),
        });
    }
    out.check(&sh)?;
    Ok(())
}

pub(super) async fn remove_file(b: &LustreBackend, file: &RelPath) -> Result<()> {
    let path = b.path(file);
    b.run_ok(On::Mds, &cmd("rm", ["-f", "--", &path])).await?;
    Ok(())
}

/// `lfs setstripe <layout> DIR`, then `lfs getstripe -d DIR` to check that the directory's
/// default layout is the one asked for (a pool that does not exist, or an OST count the
/// filesystem cannot give, shows up there).
async fn set_default_layout(b: &LustreBackend, dir: &RelPath, layout: &LayoutSpec) -> Result<()> {
    let path = b.path(dir);
    let args = layout.setstripe_args();
    let mut setstripe = vec!["setstripe"];
    setstripe.extend(args.iter().map(String::as_str));
    setstripe.push(&path);
    let argv = b.lfs(setstripe);
    let out = b.run(On::Mds, &argv).await?;
    if !out.success() && is_enoent(&out) {
        return Err(BackendError::NotFound {
            path: dir.as_str().to_owned(),
        });
    }
    out.check(&argv)?;
    let argv = b.lfs(["getstripe", "-d", &path]);
    let out = b.run(On::Mds, &argv).await?;
    let text = out.stdout_text();
    out.check(&argv)?;
    let got = lustre_model::parse_lfs_getstripe(&text).map_err(|source| BackendError::Parse {
        command: argv.join(" "),
        source,
    })?;
    if !layout.matches(&got) {
        return Err(BackendError::InvalidState(format!(
            "{}: default layout not applied: asked `lfs setstripe {}`, read back {got:?}",
            dir.as_str(),
            args.join(" ")
        )));
    }
    Ok(())
}

#[async_trait]
impl crate::Namespace for LustreBackend {
    async fn set_default_layout(&self, dir: &RelPath, layout: &LayoutSpec) -> Result<()> {
        set_default_layout(self, dir, layout).await
    }

    fn check_compression(&self, compression: &lustre_model::Compression) -> Result<()> {
        super::tunables::check_compression(compression)
    }

    async fn ensure_dir(&self, dir: &RelPath) -> Result<()> {
        ensure_dir(self, dir).await
    }

    async fn create_share_dir(&self, dir: &RelPath, spec: &DirSpec) -> Result<bool> {
        create_share_dir(self, dir, spec).await
    }

    async fn remove_share_dir(&self, dir: &RelPath) -> Result<bool> {
        remove_share_dir(self, dir).await
    }

    async fn rename(&self, from: &RelPath, to: &RelPath) -> Result<()> {
        rename(self, from, to).await
    }

    async fn stat_dir(&self, dir: &RelPath) -> Result<Option<DirInfo>> {
        stat_dir(self, dir).await
    }

    async fn list_dir(&self, dir: &RelPath) -> Result<Vec<String>> {
        list_dir(self, dir).await
    }

    async fn claim(&self, marker: &RelPath) -> Result<bool> {
        claim(self, marker).await
    }

    async fn unclaim(&self, marker: &RelPath) -> Result<()> {
        unclaim(self, marker).await
    }

    async fn read_file(&self, file: &RelPath) -> Result<Option<Vec<u8>>> {
        read_file(self, file).await
    }

    async fn write_file(&self, file: &RelPath, content: &[u8]) -> Result<()> {
        write_file(self, file, content).await
    }

    async fn remove_file(&self, file: &RelPath) -> Result<()> {
        remove_file(self, file).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_output_parses() {
        let st = parse_stat("41f8 1000 1000 1700000000 directory\n").unwrap();
        assert_eq!(st.mode & 0o7777, 0o770);
        assert!(st.is_dir());
        let st = parse_stat("a1ff 0 0 1 symbolic link\n").unwrap();
        assert_eq!(st.file_type, "symbolic link");
        assert!(parse_stat("garbage").is_none());
    }
}
