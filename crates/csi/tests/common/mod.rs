//! A driver served in-process on a unix socket over the `local` backend in a temporary
//! directory, and gRPC clients for it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use csi::grpc::controller_client::ControllerClient;
use csi::grpc::identity_client::IdentityClient;
use csi::grpc::node_client::NodeClient;
use csi::grpc::*;
use csi::{Driver, DriverOptions, Mode};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub struct Running {
    pub driver: Arc<Driver>,
    pub socket: PathBuf,
    pub metrics: Option<std::net::SocketAddr>,
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<csi::Result<()>>>,
}

pub fn config_text(root: &Path) -> String {
    format!(
        "backend = \"local\"\nfsname = \"testfs\"\nshare_prefix = \"shares\"\nproject_ids = \"5000-5999\"\n\
         trash_ttl_hours = 1\n[local]\nroot = \"{}\"\n",
        root.display()
    )
}

pub async fn service(root: &Path) -> Arc<share::ShareService> {
    let config = share::Config::from_toml(&config_text(root)).unwrap();
    let fs = config.open_backend().await.unwrap();
    Arc::new(
        share::ShareService::open(fs, config.settings().unwrap())
            .await
            .unwrap(),
    )
}

pub async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    tonic::transport::Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

impl Running {
    pub async fn start(root: &Path, socket: &Path, mode: Mode, metrics: bool) -> Running {
        Self::start_with(root, socket, mode, metrics, csi::DEFAULT_FS_TIMEOUT).await
    }

    /// [`Running::start`] with the node's filesystem-step timeout of the caller's choice.
    pub async fn start_with(
        root: &Path,
        socket: &Path,
        mode: Mode,
        metrics: bool,
        fs_timeout: std::time::Duration,
    ) -> Running {
        Self::start_with_options(
            root,
            socket,
            metrics,
            DriverOptions {
                name: "test.csi.lustrekit.io".into(),
                node_id: "node-1".into(),
                mode,
                fs_timeout,
                quota_margin: Default::default(),
                hsm_import_timeout: csi::DEFAULT_HSM_IMPORT_TIMEOUT,
                node_state_dir: None,
            },
        )
        .await
    }

    /// [`Running::start`] with every driver option of the caller's choice.
    pub async fn start_with_options(
        root: &Path,
        socket: &Path,
        metrics: bool,
        options: DriverOptions,
    ) -> Running {
        let service = service(root).await;
        let driver = Driver::new(service, options);
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let d = Arc::clone(&driver);
        let sock = socket.to_path_buf();
        let metrics_addr = metrics.then(|| "127.0.0.1:0".parse().unwrap());
        let task = tokio::spawn(async move {
            csi::server::serve(
                d,
                &sock,
                metrics_addr,
                async move {
                    let _ = stopped.await;
                },
                move |served| {
                    let _ = ready_tx.send(served.metrics_addr);
                },
            )
            .await
        });
        let metrics = ready_rx.await.expect("driver did not start");
        let channel = connect(socket).await;
        Running {
            driver,
            socket: socket.to_path_buf(),
            metrics,
            channel,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }

    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }

    pub fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }

    pub async fn stop(mut self) -> csi::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

pub fn mount_cap(mode: volume_capability::access_mode::Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(
            volume_capability::MountVolume {
                fs_type: String::new(),
                mount_flags: Vec::new(),
                volume_mount_group: String::new(),
            },
        )),
        access_mode: Some(volume_capability::AccessMode { mode: mode as i32 }),
    }
}

pub fn rwx() -> VolumeCapability {
    mount_cap(volume_capability::access_mode::Mode::MultiNodeMultiWriter)
}

pub fn create_req(name: &str, bytes: i64, params: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![rwx()],
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A btrfs image on a loop device, unmounted when dropped. Tests that call this are
/// `#[ignore = "needs root"]`: run as root with `--include-ignored`, they fail with the
/// reason rather than pass without testing anything.
pub struct BtrfsRoot {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Drop for BtrfsRoot {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.root)
            .status();
    }
}

pub fn btrfs_root(size_mib: u64) -> BtrfsRoot {
    use std::process::Command;
    let ok = |cmd: &mut Command| cmd.output().map(|o| o.status.success()).unwrap_or(false);
    assert!(is_root(), "btrfs tests need root (loop devices, mount)");
    assert!(
        ok(Command::new("mkfs.btrfs").arg("--version")),
        "mkfs.btrfs not installed (scripts/install-deps.sh installs btrfs-progs)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("fs.img");
    let root = dir.path().join("mnt");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(size_mib << 20))
        .expect("image file");
    assert!(
        ok(Command::new("mkfs.btrfs").arg("-q").arg(&image)),
        "mkfs.btrfs failed"
    );
    assert!(
        ok(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&image)
            .arg(&root)),
        "cannot mount a loop device here"
    );
    BtrfsRoot { dir, root }
}

/// The test KMIP server from `scripts/start-kmip.sh` (`make test` exports its env): the
/// endpoint and the PEM files of its client certificate. `None` (the caller prints a
/// `skipping` line, which CI refuses) when it is not set up.
pub struct TestKmip {
    pub endpoint: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestKmip {
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let Some(endpoint) = var("LUSTREKIT_TEST_KMIP") else {
            eprintln!("skipping KMIP: set LUSTREKIT_TEST_KMIP (scripts/start-kmip.sh prints it)");
            return None;
        };
        Some(Self {
            endpoint,
            ca: var("LUSTREKIT_TEST_KMIP_CA")?.into(),
            cert: var("LUSTREKIT_TEST_KMIP_CLIENT_CERT")?.into(),
            key: var("LUSTREKIT_TEST_KMIP_CLIENT_KEY")?.into(),
        })
    }

    pub fn credentials(&self) -> csi::kmip::KmipCredentials {
        let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        csi::kmip::KmipCredentials {
            client_cert_pem: read(&self.cert),
            client_key_pem: zeroize::Zeroizing::new(read(&self.key)),
            ca_pem: read(&self.ca),
        }
    }

    pub fn client(&self) -> csi::kmip::KmipClient {
        csi::kmip::KmipClient::new(
            &self.endpoint,
            &self.credentials(),
            std::time::Duration::from_secs(5),
        )
        .expect("KMIP client")
    }

    /// The Secret a StorageClass names for encrypted volumes.
    pub fn secrets(&self) -> std::collections::HashMap<String, String> {
        let read = |p: &Path| std::fs::read_to_string(p).expect("PEM");
        std::collections::HashMap::from([
            ("kmipClientCert".to_string(), read(&self.cert)),
            ("kmipClientKey".to_string(), read(&self.key)),
            ("kmipCaCert".to_string(), read(&self.ca)),
        ])
    }

    /// A second PyKMIP server with the same certificates on `port`, in its own state dir
    /// (so a test may stop and start it without disturbing the shared one).
    pub fn own_server(&self, state: &Path, port: u16) -> OwnKmip {
        let pki = state.join("pki");
        std::fs::create_dir_all(&pki).expect("mkdir");
        for (from, name) in [
            (&self.ca, "ca.crt"),
            (&self.cert, "client.crt"),
            (&self.key, "client.key"),
        ] {
            std::fs::copy(from, pki.join(name)).expect("copy pki");
        }
        let dir = self.ca.parent().expect("pki dir");
        for name in ["ca.key", "server.crt", "server.key"] {
            std::fs::copy(dir.join(name), pki.join(name)).expect("copy pki");
        }
        let own = OwnKmip {
            state: state.to_path_buf(),
            port,
        };
        own.start();
        own
    }
}

/// A PyKMIP server a test starts and stops (see [`TestKmip::own_server`]).
pub struct OwnKmip {
    pub state: PathBuf,
    pub port: u16,
}

impl OwnKmip {
    fn script(&self, arg: Option<&str>) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/start-kmip.sh");
        let mut cmd = std::process::Command::new(script);
        cmd.env("KMIP_STATE", &self.state)
            .env("KMIP_PORT", self.port.to_string());
        if let Some(a) = arg {
            cmd.arg(a);
        }
        let out = cmd.output().expect("start-kmip.sh");
        assert!(
            out.status.success(),
            "start-kmip.sh {arg:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start(&self) {
        self.script(None);
    }

    pub fn stop(&self) {
        self.script(Some("stop"));
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnKmip {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A network namespace with a veth end holding `addr`, removed (with the veth pair) on drop.
/// It is held by a child process (`unshare --net sleep`), not made with `ip netns add`: that
/// turns `/run/netns` into a bind mount of itself, under which the namespaces the container
/// runtime had already mounted there can no longer be removed, so the cluster's pods of the
/// moment could never finish terminating.
pub struct NetNs {
    holder: std::process::Child,
}

impl NetNs {
    pub fn new(addr: &str) -> NetNs {
        let holder = std::process::Command::new("unshare")
            .args(["--net", "sleep", "3600"])
            .spawn()
            .expect("run unshare");
        let ns = NetNs { holder };
        // The child is in its own namespace once its /proc entry says so.
        let own = std::fs::read_link("/proc/self/ns/net").expect("our netns");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(ns.path()).ok().as_ref() == Some(&own) {
            assert!(
                std::time::Instant::now() < deadline,
                "unshare --net did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let pid = ns.holder.id().to_string();
        let (host_end, ns_end) = (format!("lkta{pid}"), format!("lktb{pid}"));
        let run = |program: &str, args: &[&str]| {
            let status = std::process::Command::new(program)
                .args(args)
                .status()
                .unwrap_or_else(|e| panic!("run {program}: {e}"));
            assert!(status.success(), "{program} {args:?} failed");
        };
        let inside = |args: &[&str]| {
            let mut all = vec!["-t", pid.as_str(), "-n", "ip"];
            all.extend_from_slice(args);
            run("nsenter", &all);
        };
        run(
            "ip",
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
            ],
        );
        run("ip", &["link", "set", &ns_end, "netns", &pid]);
        inside(&["addr", "add", addr, "dev", &ns_end]);
        inside(&["link", "set", &ns_end, "up"]);
        inside(&["link", "set", "lo", "up"]);
        run("ip", &["link", "set", &host_end, "up"]);
        ns
    }

    /// The namespace, as a path `setns` can open.
    pub fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // The last holder gone, the namespace goes, with its veth end and so the pair.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Runs `serve` on a thread of its own that has joined the network namespace at the path
/// `ns`, with its own runtime, so every address it reads is the namespace's. `serve` gets
/// the receiver that stops it and the sender it fires once it serves; this returns when it
/// does (or fails after a minute), with the stop sender and the thread.
pub async fn serve_in_netns<F, Fut>(
    ns: &str,
    serve: F,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)
where
    F: FnOnce(tokio::sync::oneshot::Receiver<()>, tokio::sync::oneshot::Sender<()>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()>,
{
    use tokio::sync::oneshot;
    let (stop, stopped) = oneshot::channel();
    let (ready, is_ready) = oneshot::channel();
    let path = ns.to_string();
    let thread = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the network namespace");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (up, is_up) = oneshot::channel();
            let announce = async move {
                let _ = is_up.await;
                let _ = ready.send(());
            };
            tokio::join!(serve(stopped, up), announce);
        });
    });
    tokio::time::timeout(std::time::Duration::from_secs(60), is_ready)
        .await
        .expect("the server in the namespace did not start in time")
        .expect("the server in the namespace failed to start");
    (stop, thread)
}
