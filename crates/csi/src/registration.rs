//! Registration with the kubelet's plugin watcher, so the node plugin needs no
//! node-driver-registrar sidecar.
//!
//! With `--kubelet-registration-path` set, the node plugin serves the `pluginregistration`
//! Registration service on `<plugin registration dir>/<driver>-reg.sock`. The kubelet watches
//! that directory: when the socket appears it asks [`GetInfo`](proto::registration_server::Registration::get_info)
//! for the driver's name and CSI endpoint (the path of our CSI socket as the kubelet sees it),
//! checks the endpoint with NodeGetInfo, and reports the outcome with
//! `NotifyRegistrationStatus`. Removing the socket unregisters the driver, so it is removed on
//! shutdown; a refused registration removes it and makes it again after a back-off, which makes
//! the kubelet try again (node-driver-registrar exits instead and lets the kubelet restart it).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::authority::Relays;
use crate::csi_server::Driver;
use crate::error::{CsiError, Result};
use crate::options::Mode;
use crate::server;

/// The generated `pluginregistration` types, client and server.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("pluginregistration");
}

use proto::registration_server::{Registration as RegistrationApi, RegistrationServer};
use proto::{InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse};

/// The plugin type the kubelet's CSI handler claims.
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";
/// The CSI versions announced to the kubelet (it wants a 1.x).
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];
/// Where the kubelet's plugin watcher looks, with the default kubelet directory.
pub const DEFAULT_REGISTRATION_DIR: &str = "/var/lib/kubelet/plugins_registry";
/// No call on the registration socket runs longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Back-off before offering the socket again after the kubelet refused the registration.
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Self-registration as asked for (the binary's `--kubelet-registration-path` and
/// `--plugin-registration-dir`).
#[derive(Debug, Clone, Default)]
pub struct RegistrationOptions {
    /// The CSI socket's path as the kubelet sees it, announced as the endpoint; `None` (or
    /// empty) leaves registration to node-driver-registrar.
    pub kubelet_registration_path: Option<PathBuf>,
    /// The kubelet's plugin watcher directory as mounted here; the socket is made there.
    pub plugin_registration_dir: PathBuf,
}

impl RegistrationOptions {
    /// The registration to serve, or `None` when `--kubelet-registration-path` is unset.
    pub fn plan(&self, driver_name: &str, mode: Mode) -> Result<Option<Registration>> {
        let Some(endpoint) = self
            .kubelet_registration_path
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        else {
            return Ok(None);
        };
        if !mode.node() {
            return Err(CsiError::Config(
                "--kubelet-registration-path needs --mode=node or --mode=all".into(),
            ));
        }
        Registration::new(driver_name, endpoint, &self.plugin_registration_dir).map(Some)
    }
}

/// What the kubelet last said about the registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// The socket is not offered yet, or the kubelet has not answered.
    Pending,
    Registered,
    /// The kubelet refused, with its reason.
    Refused(String),
}

/// One driver's registration: what `GetInfo` answers and where the socket lives.
#[derive(Debug, Clone)]
pub struct Registration {
    driver_name: String,
    endpoint: PathBuf,
    socket: PathBuf,
}

impl Registration {
    pub fn new(driver_name: &str, endpoint: &Path, registration_dir: &Path) -> Result<Self> {
        // The driver name becomes a file name in the kubelet's directory.
        let name_ok = !driver_name.is_empty()
            && driver_name.len() <= 63
            && driver_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            && !driver_name.starts_with('.');
        if !name_ok {
            return Err(CsiError::Config(format!(
                "driver name {driver_name:?} cannot name a registration socket"
            )));
        }
        if !endpoint.is_absolute() {
            return Err(CsiError::Config(format!(
                "--kubelet-registration-path {}: must be absolute",
                endpoint.display()
            )));
        }
        if !registration_dir.is_absolute() {
            return Err(CsiError::Config(format!(
                "--plugin-registration-dir {}: must be absolute",
                registration_dir.display()
            )));
        }
        Ok(Self {
            driver_name: driver_name.to_string(),
            endpoint: endpoint.to_path_buf(),
            socket: registration_dir.join(format!("{driver_name}-reg.sock")),
        })
    }

    /// The registration socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn info(&self) -> PluginInfo {
        PluginInfo {
            r#type: CSI_PLUGIN_TYPE.to_string(),
            name: self.driver_name.clone(),
            endpoint: self.endpoint.to_string_lossy().into_owned(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// Offers the registration socket until `stop` turns true (or its sender is dropped),
    /// then removes it. A refused registration is offered again after a back-off. `state`
    /// follows what the kubelet said.
    pub async fn serve(
        self,
        mut stop: watch::Receiver<bool>,
        state: watch::Sender<RegistrationState>,
    ) -> Result<()> {
        let mut retry = RETRY_MIN;
        loop {
            let (refused_tx, mut refused_rx) = mpsc::channel::<String>(1);
            let service = RegistrationService {
                info: self.info(),
                state: state.clone(),
                refused: refused_tx,
            };
            let listener = server::bind_socket(&self.socket).await?;
            tracing::info!(socket = %self.socket.display(), endpoint = %self.endpoint.display(),
                driver = %self.driver_name, "offering registration to the kubelet plugin watcher");
            let mut stop_serving = stop.clone();
            let (refused_reason_tx, refused_reason_rx) = tokio::sync::oneshot::channel();
            // The kubelet's plugin watcher dials without setting an authority, so grpc-go
            // sends the socket path as `:authority`, which h2 refuses: every connection goes
            // through the authority relay (crate::authority), as on the CSI socket.
            let relays = Relays::default();
            let incoming =
                UnixListenerStream::new(listener).filter_map(move |accepted| match accepted {
                    Ok(stream) => relays.relay(stream).map(Ok),
                    Err(e) => Some(Err(e)),
                });
            let serving = tonic::transport::Server::builder()
                .timeout(CALL_TIMEOUT)
                .add_service(RegistrationServer::new(service))
                .serve_with_incoming_shutdown(incoming, async move {
                    tokio::select! {
                        _ = stop_serving.wait_for(|s| *s) => {}
                        reason = refused_rx.recv() => {
                            let _ = refused_reason_tx.send(reason.unwrap_or_default());
                        }
                    }
                });
            let served = serving.await;
            remove_socket(&self.socket);
            served.map_err(|e| CsiError::Internal(format!("registration socket: {e}")))?;
            let Ok(reason) = refused_reason_rx.await else {
                // Stopped: the socket is gone, so the kubelet unregisters the driver.
                tracing::info!(socket = %self.socket.display(), "registration socket removed");
                return Ok(());
            };
            tracing::error!(%reason, retry_in = ?retry,
                "the kubelet refused the registration; offering it again after a back-off");
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                _ = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }
}

fn remove_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e,
            "cannot remove the registration socket"),
    }
}

struct RegistrationService {
    info: PluginInfo,
    state: watch::Sender<RegistrationState>,
    refused: mpsc::Sender<String>,
}

#[tonic::async_trait]
impl RegistrationApi for RegistrationService {
    async fn get_info(
        &self,
        _request: Request<InfoRequest>,
    ) -> std::result::Result<Response<PluginInfo>, Status> {
        tracing::debug!(name = %self.info.name, "kubelet asked for the plugin info");
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> std::result::Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            tracing::info!(name = %self.info.name, "registered with the kubelet");
            self.state.send_replace(RegistrationState::Registered);
        } else {
            tracing::error!(name = %self.info.name, error = %status.error,
                "the kubelet did not register the driver");
            self.state
                .send_replace(RegistrationState::Refused(status.error.clone()));
            // One refusal is enough to start over; a full channel means one is pending.
            let _ = self.refused.try_send(status.error);
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// Serves `driver` like [`server::serve`], and with a registration, offers it to the kubelet
/// once the CSI socket is bound and withdraws it on shutdown.
pub async fn serve_registered(
    registration: Option<Registration>,
    driver: Arc<Driver>,
    socket: &Path,
    metrics_addr: Option<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let mut task = None;
    let result = server::serve(driver, socket, metrics_addr, shutdown, |_| {
        if let Some(registration) = registration {
            let (state, _) = watch::channel(RegistrationState::Pending);
            task = Some(tokio::spawn(registration.serve(stop_rx, state)));
        }
    })
    .await;
    // The shutdown future (and its sender) is gone once serve returns, which stops the task.
    if let Some(task) = task {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "registration with the kubelet failed"),
            Err(e) => tracing::error!(error = %e, "registration task failed"),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::proto::registration_client::RegistrationClient;
    use super::*;

    async fn client(socket: &Path) -> RegistrationClient<tonic::transport::Channel> {
        let path = socket.to_path_buf();
        let channel = tonic::transport::Endpoint::from_static("http://[::1]:0")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .expect("connect to the registration socket");
        RegistrationClient::new(channel)
    }

    async fn wait_for_socket(path: &Path) {
        for _ in 0..500 {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} never accepted", path.display());
    }

    #[test]
    fn plan_needs_the_flag_and_a_node_mode() {
        let mut args = RegistrationOptions {
            kubelet_registration_path: None,
            plugin_registration_dir: PathBuf::from(DEFAULT_REGISTRATION_DIR),
        };
        assert!(args.plan("d.example.io", Mode::Node).unwrap().is_none());
        args.kubelet_registration_path = Some(PathBuf::from(
            "/var/lib/kubelet/plugins/d.example.io/csi.sock",
        ));
        let plan = args.plan("d.example.io", Mode::Node).unwrap().unwrap();
        assert_eq!(
            plan.socket(),
            Path::new("/var/lib/kubelet/plugins_registry/d.example.io-reg.sock")
        );
        assert!(args.plan("d.example.io", Mode::All).unwrap().is_some());
        assert!(args.plan("d.example.io", Mode::Controller).is_err());
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(args.plan(bad, Mode::Node).is_err(), "{bad:?}");
        }
        args.kubelet_registration_path = Some(PathBuf::from("relative/csi.sock"));
        assert!(args.plan("d.example.io", Mode::Node).is_err());
    }

    /// Plays the kubelet: GetInfo, a refusal (the socket goes and comes back), then success;
    /// stopping removes the socket.
    #[tokio::test]
    async fn kubelet_handshake_refusal_and_withdrawal() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Path::new("/var/lib/kubelet/plugins/d.example.io/csi.sock");
        let registration = Registration::new("d.example.io", endpoint, dir.path()).unwrap();
        let socket = registration.socket().to_path_buf();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (state_tx, mut state_rx) = watch::channel(RegistrationState::Pending);
        let task = tokio::spawn(registration.serve(stop_rx, state_tx));
        wait_for_socket(&socket).await;

        let mut kubelet = client(&socket).await;
        let info = kubelet.get_info(InfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "d.example.io");
        assert_eq!(info.endpoint, endpoint.to_str().unwrap());
        assert_eq!(info.supported_versions, vec!["1.0.0".to_string()]);

        kubelet
            .notify_registration_status(RegistrationStatus {
                plugin_registered: false,
                error: "NodeGetInfo failed".into(),
            })
            .await
            .unwrap();
        state_rx
            .wait_for(|s| *s == RegistrationState::Refused("NodeGetInfo failed".into()))
            .await
            .unwrap();
        drop(kubelet);
        // Offered again after the back-off: a fresh socket the kubelet would see appear.
        tokio::time::sleep(Duration::from_millis(200)).await;
        wait_for_socket(&socket).await;
        let mut kubelet = client(&socket).await;
        kubelet
            .notify_registration_status(RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            })
            .await
            .unwrap();
        state_rx
            .wait_for(|s| *s == RegistrationState::Registered)
            .await
            .unwrap();
        drop(kubelet);

        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        assert!(!socket.exists(), "the socket must be withdrawn on stop");
    }
}
