//! A tenant's node on the `lustre` backend, for real (as root), shared by the backend's and
//! the csi crate's tests (the latter include this file by path). The machine has no Lustre,
//! so an XFS image stands in for the filesystem (XFS keeps project IDs in its inodes, as
//! Lustre does), and [`FilesetServer`], the node's command runner, plays the server's side
//! of a client mount: it roots the mount at the node's nodemap fileset and puts the
//! requested path beneath it (`mount-lustre.md`, fileset behaviour, ≤2.16), as a real bind
//! mount. The share service's directory commands run for real on the image, and `lfs
//! project -d` is answered from the directory's real project ID; no other Lustre tool is.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backend::BackendError;
use backend::lustre::{CommandOutput, CommandRunner, LocalRunner, LustreBackend, LustreConfig};
use lustre_model::FsName;

use super::mount_common::{bind_as_client_mount, detach_mounts_under, run};

pub const MGS: &str = "10.0.0.1@tcp";

/// The server side of `mount -t lustre`: `<MGS>:/testfs[/SUB]` is the bind mount of
/// `<fs>/<fileset>[/SUB]`, or ENOENT as `mount.lustre` reports it.
#[derive(Debug)]
pub struct FilesetServer {
    fs: PathBuf,
    /// Where the servers root this node's mounts (its nodemap's fileset).
    pub fileset: Mutex<String>,
    calls: Mutex<Vec<Vec<String>>>,
}

impl FilesetServer {
    pub fn new(fs: &Path, fileset: &str) -> Arc<Self> {
        Arc::new(Self {
            fs: fs.to_path_buf(),
            fileset: Mutex::new(fileset.to_owned()),
            calls: Mutex::default(),
        })
    }

    pub fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }

    pub fn devices(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|argv| argv[argv.len() - 2].clone())
            .collect()
    }
}

#[async_trait]
impl CommandRunner for FilesetServer {
    fn describe(&self) -> String {
        "fileset stand-in for mount -t lustre".into()
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(20)
    }

    async fn run_with_timeout(
        &self,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> backend::Result<CommandOutput> {
        let Some(program) = argv.first() else {
            return Err(BackendError::InvalidState("an empty argv".into()));
        };
        if program != "mount" {
            // The share service's directory commands (mkdir, mv, ...) run for real on the
            // stand-in filesystem; Lustre's own tools are not here.
            if let [_, project, d, dir] = argv
                && program == "lfs"
                && project == "project"
                && d == "-d"
            {
                return lfs_project_d(Path::new(dir));
            }
            if program == "lfs" || program == "lctl" {
                return Err(BackendError::InvalidState(format!(
                    "the stand-in has no Lustre tools: {argv:?}"
                )));
            }
            return LocalRunner::new(timeout, 2)
                .run_with_timeout(argv, stdin, timeout)
                .await;
        }
        self.calls.lock().unwrap().push(argv.to_vec());
        let (device, target) = (&argv[argv.len() - 2], &argv[argv.len() - 1]);
        let asked = match device.strip_prefix(&format!("{MGS}:/testfs")) {
            Some(asked) if argv.len() >= 5 && argv[1..3] == ["-t", "lustre"] => asked,
            _ => {
                return Err(BackendError::InvalidState(format!(
                    "the stand-in only runs client mounts of testfs, not {argv:?}"
                )));
            }
        };
        let fileset = self.fileset.lock().unwrap().clone();
        let source = self.fs.join(fileset).join(asked.trim_start_matches('/'));
        if !source.is_dir() {
            return Ok(CommandOutput {
                exit_code: Some(2),
                stdout: vec![],
                stderr: format!(
                    "mount.lustre: mount {device} at {target} failed: No such file or directory\n"
                )
                .into_bytes(),
            });
        }
        bind_as_client_mount(&source, target).await
    }
}

/// An XFS image with two tenants' roots: alpha's volume `pvc-1` (project 7), and a
/// directory of the same name that tenant beta made in its own root (project 9).
pub struct TenantFs {
    pub dir: tempfile::TempDir,
    pub fs: PathBuf,
}

impl TenantFs {
    pub fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (loop devices, mounts)"
        );
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        let fs = dir.path().join("fs");
        std::fs::create_dir(&fs).unwrap();
        // XFS's smallest filesystem; the file stays sparse.
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(300 << 20))
            .unwrap();
        run("mkfs.xfs", &["-q", "-f", image.to_str().unwrap()]);
        run(
            "mount",
            &["-o", "loop", image.to_str().unwrap(), fs.to_str().unwrap()],
        );
        for (dir, project, data) in [
            ("shares/alpha/pvc-1", "7", "alpha's volume"),
            ("shares/beta/pvc-1", "9", "planted by beta"),
        ] {
            std::fs::create_dir_all(fs.join(dir)).unwrap();
            std::fs::write(fs.join(dir).join("data"), data).unwrap();
            run("chattr", &["-p", project, fs.join(dir).to_str().unwrap()]);
        }
        Self { dir, fs }
    }

    pub fn backend(&self, server: &Arc<FilesetServer>) -> LustreBackend {
        let mut config =
            LustreConfig::new(FsName::new("testfs").unwrap(), vec![MGS.into()], &self.fs);
        config.node_mount_root = self.dir.path().join("node");
        LustreBackend::with_runner(config, server.clone()).unwrap()
    }

    pub fn target(&self, name: &str) -> PathBuf {
        let t = self.dir.path().join(name);
        std::fs::create_dir_all(&t).unwrap();
        t
    }
}

impl Drop for TenantFs {
    fn drop(&mut self) {
        detach_mounts_under(self.dir.path());
    }
}

/// `lfs project -d DIR` as `lfs-project.md` prints it (`%5u %c %s`), from the directory's
/// real project ID (the inherit flag shown for any project).
fn lfs_project_d(dir: &Path) -> backend::Result<CommandOutput> {
    use std::os::fd::AsFd;
    let opened = std::fs::File::open(dir).map_err(|e| BackendError::io(dir, e))?;
    let id = backend::mount::project_id_of(opened.as_fd())
        .map_err(|e| BackendError::io(dir, e.into()))?;
    let inherit = if id == 0 { '-' } else { 'P' };
    Ok(CommandOutput {
        exit_code: Some(0),
        stdout: format!("{id:>5} {inherit} {}\n", dir.display()).into_bytes(),
        stderr: vec![],
    })
}
