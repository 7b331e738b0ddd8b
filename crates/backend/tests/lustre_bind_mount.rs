//! `mountMode: bind` on the `lustre` backend, for real (as root): the machine has no Lustre,
//! so a tmpfs stands in for the filesystem and the node runner turns the shared client mount
//! (`mount -t lustre ... <mgs>:/testfs <node_mount_root>/testfs`) into a real
//! `mount --bind <tmpfs> <node_mount_root>/testfs`. Everything after that is the backend's own
//! code: the reference counting from `/proc/self/mountinfo`, the bind mounts from the shared
//! mount, the read-only remount and the bounded unmount cascade.

mod mount_common;

use mount_common::run;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backend::Mounts;
use backend::lustre::{CommandOutput, CommandRunner, LustreBackend, LustreConfig};
use backend::{BackendError, MountMode, MountRequest};
use lustre_model::{FsName, RelPath};

/// Runs the shared client mount as a bind mount of `fs`, for real; refuses anything else.
#[derive(Debug)]
struct BindStandIn {
    fs: PathBuf,
    calls: Mutex<Vec<Vec<String>>>,
}

impl BindStandIn {
    fn new(fs: &Path) -> Arc<Self> {
        Arc::new(Self {
            fs: fs.to_path_buf(),
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl CommandRunner for BindStandIn {
    fn describe(&self) -> String {
        "bind stand-in for mount -t lustre".into()
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
        if !is_client_mount {
            return Err(BackendError::InvalidState(format!(
                "the stand-in only runs client mounts, not {argv:?}"
            )));
        }
        let target = &argv[argv.len() - 1];
        mount_common::bind_as_client_mount(&self.fs, target).await
    }
}

/// A tmpfs "filesystem" with two shares, and targets, all under one temporary directory;
/// everything still mounted there is detached when the test ends, pass or fail.
struct Node {
    dir: tempfile::TempDir,
    fs: PathBuf,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("fs");
        std::fs::create_dir(&fs).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=4m",
                "lustrekit-test",
                fs.to_str().unwrap(),
            ],
        );
        for share in ["shares/a", "shares/b"] {
            std::fs::create_dir_all(fs.join(share)).unwrap();
            std::fs::write(fs.join(share).join("data"), share).unwrap();
        }
        std::fs::set_permissions(fs.join("shares/b"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        // A share that is a symlink out of the filesystem, and one to another share.
        std::os::unix::fs::symlink("/etc", fs.join("shares/evil")).unwrap();
        std::os::unix::fs::symlink("a", fs.join("shares/alias")).unwrap();
        Self { dir, fs }
    }

    fn config(&self) -> LustreConfig {
        let mut config = LustreConfig::new(
            FsName::new("testfs").unwrap(),
            vec!["10.0.0.1@tcp".into()],
            &self.fs,
        );
        config.node_mount_root = self.dir.path().join("node");
        config.node_mount_options = vec!["flock".into()];
        config
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

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "bind-mode tests need root for real mounts"
    );
}

fn request(share: &str, target: &Path, read_only: bool) -> MountRequest {
    MountRequest {
        share: RelPath::parse(share).unwrap(),
        target: target.to_path_buf(),
        read_only,
        options: vec!["nosuid".into(), "flock".into()],
        mode: MountMode::Bind,
        fileset: None,
        expect_project: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (real bind mounts)"]
async fn two_publishes_share_one_client_mount_and_the_last_unpublish_removes_it() {
    require_root();
    let node = Node::new();
    let runner = BindStandIn::new(&node.fs);
    let b = LustreBackend::with_runner(node.config(), runner.clone()).unwrap();
    let shared = b.shared_mount_path();
    let (t1, t2) = (node.target("t1"), node.target("t2"));

    // First publish: the shared client mount, exactly once, then the bind.
    b.mount(&request("shares/a", &t1, false)).await.unwrap();
    assert_eq!(
        runner.calls(),
        vec![vec![
            "mount".to_string(),
            "-t".into(),
            "lustre".into(),
            "-o".into(),
            "flock".into(),
            "10.0.0.1@tcp:/testfs".into(),
            shared.display().to_string(),
        ]]
    );
    assert_eq!(b.shared_mount_users().unwrap(), Some(1));
    assert_eq!(
        std::fs::read_to_string(t1.join("data")).unwrap(),
        "shares/a"
    );
    std::fs::write(t1.join("new"), b"x").unwrap();
    assert!(
        node.fs.join("shares/a/new").exists(),
        "t1 is shares/a itself"
    );

    // Second publish, read-only: no new client mount.
    b.mount(&request("shares/b", &t2, true)).await.unwrap();
    assert_eq!(runner.calls().len(), 1, "one client mount for both volumes");
    assert_eq!(b.shared_mount_users().unwrap(), Some(2));
    assert_eq!(
        std::fs::read_to_string(t2.join("data")).unwrap(),
        "shares/b"
    );
    let err = std::fs::write(t2.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");

    // A retry is success; the same target with another share or read-only is not.
    b.mount(&request("shares/a", &t1, false)).await.unwrap();
    for wrong in [
        request("shares/a", &t1, true),
        request("shares/b", &t1, false),
    ] {
        let err = b.mount(&wrong).await.unwrap_err();
        assert!(matches!(err, BackendError::AlreadyExists { .. }), "{err}");
    }
    assert_eq!(runner.calls().len(), 1);

    // A share that is a symlink (out of the filesystem, or even within it) is refused and
    // leaves nothing mounted.
    let t3 = node.target("t3");
    for share in ["shares/evil", "shares/alias"] {
        let err = b.mount(&request(share, &t3, false)).await.unwrap_err();
        assert!(
            matches!(err, BackendError::InvalidState(ref m) if m.contains("symlink")),
            "{share}: {err}"
        );
        assert!(!backend::mount::is_mount_point(&t3).unwrap());
    }
    assert_eq!(b.shared_mount_users().unwrap(), Some(2));

    // The node plugin restarts: a new backend knows nothing in memory, and counts from the
    // mount table.
    drop(b);
    let runner = BindStandIn::new(&node.fs);
    let b = LustreBackend::with_runner(node.config(), runner.clone()).unwrap();
    assert_eq!(b.shared_mount_users().unwrap(), Some(2));

    // Unpublishing one leaves the other working, and the client mount in place.
    b.unmount(&t1).await.unwrap();
    assert!(!backend::mount::is_mount_point(&t1).unwrap());
    assert_eq!(b.shared_mount_users().unwrap(), Some(1));
    assert_eq!(
        std::fs::read_to_string(t2.join("data")).unwrap(),
        "shares/b"
    );

    // The last unpublish removes the client mount; a repeat is success.
    b.unmount(&t2).await.unwrap();
    assert_eq!(b.shared_mount_users().unwrap(), None);
    assert!(!backend::mount::is_mount_point(&shared).unwrap());
    b.unmount(&t2).await.unwrap();
    assert!(runner.calls().is_empty(), "unmounting runs no command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (real bind mounts)"]
async fn a_failed_first_bind_does_not_leave_the_client_mount_behind() {
    require_root();
    let node = Node::new();
    let runner = BindStandIn::new(&node.fs);
    let b = LustreBackend::with_runner(node.config(), runner.clone()).unwrap();
    let t = node.target("t");
    let err = b
        .mount(&request("shares/evil", &t, false))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::InvalidState(_)), "{err}");
    assert_eq!(runner.calls().len(), 1, "the client mount was made");
    assert_eq!(b.shared_mount_users().unwrap(), None, "and removed again");
    let err = b
        .mount(&request("shares/missing", &t, false))
        .await
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    assert_eq!(b.shared_mount_users().unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (real bind mounts)"]
async fn concurrent_publishes_and_unpublishes_share_one_client_mount() {
    require_root();
    let node = Node::new();
    let runner = BindStandIn::new(&node.fs);
    let b = LustreBackend::with_runner(node.config(), runner.clone()).unwrap();
    let targets: Vec<PathBuf> = (0..8).map(|i| node.target(&format!("c{i}"))).collect();

    let publishes = targets.iter().enumerate().map(|(i, t)| {
        let (b, t) = (b.clone(), t.clone());
        let share = if i % 2 == 0 { "shares/a" } else { "shares/b" };
        tokio::spawn(async move { b.mount(&request(share, &t, i % 3 == 0)).await })
    });
    for p in publishes.collect::<Vec<_>>() {
        p.await.unwrap().unwrap();
    }
    assert_eq!(
        runner.calls().len(),
        1,
        "one client mount for eight volumes"
    );
    assert_eq!(b.shared_mount_users().unwrap(), Some(8));

    let unpublishes = targets.iter().map(|t| {
        let (b, t) = (b.clone(), t.clone());
        tokio::spawn(async move { b.unmount(&t).await })
    });
    for u in unpublishes.collect::<Vec<_>>() {
        u.await.unwrap().unwrap();
    }
    assert_eq!(b.shared_mount_users().unwrap(), None);
    assert!(!backend::mount::is_mount_point(&b.shared_mount_path()).unwrap());
}
