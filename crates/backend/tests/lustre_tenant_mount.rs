//! A tenant's node on the `lustre` backend, for real (as root). The machine has no Lustre, so
//! an XFS image stands in for the filesystem (XFS keeps project IDs in its inodes, as Lustre
//! does), and the node runner plays the server's side of a client mount: it roots the
//! mount at the node's nodemap fileset and puts the requested path beneath it
//! (`mount-lustre.md`, fileset behaviour, ≤2.16), as a real bind mount. Everything else is
//! the backend's own code: the path it asks for, the project check of what got mounted, and
//! the unmount of what fails it.
//!
//! The server's fileset for the node can differ from the one the node plugin believes in
//! (a node moved between tenants before the nodemaps were reconciled): then a same-named
//! directory the other tenant made stands in for the volume, and must be refused.

mod mount_common;

use mount_common::run;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backend::Mounts;
use backend::lustre::{CommandOutput, CommandRunner, LustreBackend, LustreConfig};
use backend::{BackendError, MountMode, MountRequest};
use lustre_model::{FsName, ProjectId, RelPath};

const MGS: &str = "10.0.0.1@tcp";

/// The server side of `mount -t lustre`: `<MGS>:/testfs[/SUB]` is the bind mount of
/// `<fs>/<fileset>[/SUB]`, or ENOENT as `mount.lustre` reports it.
#[derive(Debug)]
struct FilesetServer {
    fs: PathBuf,
    fileset: Mutex<String>,
    calls: Mutex<Vec<Vec<String>>>,
}

impl FilesetServer {
    fn new(fs: &Path, fileset: &str) -> Arc<Self> {
        Arc::new(Self {
            fs: fs.to_path_buf(),
            fileset: Mutex::new(fileset.to_owned()),
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }

    fn devices(&self) -> Vec<String> {
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
        _stdin: Option<&[u8]>,
        _timeout: Duration,
    ) -> backend::Result<CommandOutput> {
        self.calls.lock().unwrap().push(argv.to_vec());
        let is_client_mount =
            argv.len() >= 5 && argv[0] == "mount" && argv[1..3] == ["-t", "lustre"];
        let (device, target) = (&argv[argv.len() - 2], &argv[argv.len() - 1]);
        let Some(asked) = device.strip_prefix(&format!("{MGS}:/testfs")) else {
            return Err(BackendError::InvalidState(format!(
                "the stand-in only runs client mounts of testfs, not {argv:?}"
            )));
        };
        assert!(is_client_mount, "{argv:?}");
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
        mount_common::bind_as_client_mount(&source, target).await
    }
}

/// An XFS image with two tenants' roots: alpha's volume `pvc-1` (project 7), and a
/// directory of the same name that tenant beta made in its own root (project 9).
struct Node {
    dir: tempfile::TempDir,
    fs: PathBuf,
}

impl Node {
    fn new() -> Self {
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

    fn backend(&self, server: &Arc<FilesetServer>) -> LustreBackend {
        let mut config =
            LustreConfig::new(FsName::new("testfs").unwrap(), vec![MGS.into()], &self.fs);
        config.node_mount_root = self.dir.path().join("node");
        LustreBackend::with_runner(config, server.clone()).unwrap()
    }

    fn target(&self, name: &str) -> PathBuf {
        let t = self.dir.path().join(name);
        std::fs::create_dir_all(&t).unwrap();
        t
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        mount_common::detach_mounts_under(self.dir.path());
    }
}

/// alpha's `pvc-1` (project 7), published on a node that believes it is alpha's.
fn request(target: &Path, mode: MountMode) -> MountRequest {
    MountRequest {
        share: RelPath::parse("shares/alpha/pvc-1").unwrap(),
        target: target.to_path_buf(),
        read_only: false,
        options: vec![],
        mode,
        fileset: Some(RelPath::parse("shares/alpha").unwrap()),
        expect_project: Some(ProjectId::new(7).unwrap()),
    }
}

fn mounted(path: &Path) -> bool {
    backend::mount::is_mount_point(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (an XFS loop image, real mounts)"]
async fn direct_a_tenants_node_mounts_the_path_beneath_its_fileset_and_checks_the_project() {
    let node = Node::new();
    let server = FilesetServer::new(&node.fs, "shares/alpha");
    let b = node.backend(&server);
    let target = node.target("t1");

    b.mount(&request(&target, MountMode::Direct)).await.unwrap();
    assert_eq!(server.devices(), [format!("{MGS}:/testfs/pvc-1")]);
    assert_eq!(
        std::fs::read_to_string(target.join("data")).unwrap(),
        "alpha's volume"
    );
    // A retry checks what is there and runs nothing.
    b.mount(&request(&target, MountMode::Direct)).await.unwrap();
    assert_eq!(server.calls().len(), 1);
    b.unmount(&target).await.unwrap();
    assert!(!mounted(&target));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (an XFS loop image, real mounts)"]
async fn direct_another_tenants_same_named_directory_is_refused_and_unmounted() {
    let node = Node::new();
    // The servers still hold this node in beta's nodemap.
    let server = FilesetServer::new(&node.fs, "shares/beta");
    let b = node.backend(&server);
    let target = node.target("t1");

    let err = b
        .mount(&request(&target, MountMode::Direct))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::WrongDirectory {
                expected: 7,
                found: 9,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not the volume's"), "{err}");
    // It ran, and nothing of it is left: the target is the empty directory again.
    assert_eq!(server.calls().len(), 1);
    assert!(!mounted(&target));
    assert!(!target.join("data").exists());
    // A volume that is not there at all under the server's fileset: mount.lustre's ENOENT.
    *server.fileset.lock().unwrap() = "shares".into();
    let err = b
        .mount(&request(&target, MountMode::Direct))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Command { ref stderr, .. } if stderr.contains("No such file")),
        "{err}"
    );
    assert!(!mounted(&target));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (an XFS loop image, real mounts)"]
async fn bind_the_shared_mount_is_the_tenants_root_and_the_share_is_checked_before_binding() {
    let node = Node::new();
    let server = FilesetServer::new(&node.fs, "shares/alpha");
    let b = node.backend(&server);
    let shared = b.shared_mount_path();
    let (t1, t2) = (node.target("t1"), node.target("t2"));

    // The shared mount names no path, so the server roots it at alpha's fileset.
    b.mount(&request(&t1, MountMode::Bind)).await.unwrap();
    assert_eq!(server.devices(), [format!("{MGS}:/testfs")]);
    assert_eq!(
        std::fs::read_to_string(t1.join("data")).unwrap(),
        "alpha's volume"
    );
    assert_eq!(b.shared_mount_users().unwrap(), Some(1));
    // A retry recognises its own bind.
    b.mount(&request(&t1, MountMode::Bind)).await.unwrap();
    assert_eq!(server.calls().len(), 1);
    b.unmount(&t1).await.unwrap();
    assert_eq!(b.shared_mount_users().unwrap(), None);

    // The servers root the node at beta's fileset: the check refuses beta's directory
    // before any bind, and the shared mount made for it is not left behind.
    *server.fileset.lock().unwrap() = "shares/beta".into();
    let err = b.mount(&request(&t2, MountMode::Bind)).await.unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::WrongDirectory {
                expected: 7,
                found: 9,
                ..
            }
        ),
        "{err}"
    );
    assert!(!mounted(&t2));
    assert!(!t2.join("data").exists());
    assert!(!mounted(&shared));
}
