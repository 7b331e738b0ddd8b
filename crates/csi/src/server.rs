//! Serving: the private unix socket, the optional metrics port, and a clean stop on SIGTERM.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;

use crate::authority::Relays;
use crate::csi_server::{ControllerService, Driver, IdentityService, NodeService};
use crate::error::{CsiError, Result};
use crate::grpc::controller_server::ControllerServer;
use crate::grpc::identity_server::IdentityServer;
use crate::grpc::node_server::NodeServer;

/// Calls served at once on one connection (the sidecars each hold one).
const MAX_CALLS_PER_CONNECTION: usize = 64;

/// How often the controller purges trashed volumes whose TTL has passed.
pub const TRASH_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Binds the CSI socket with mode 0600. A stale socket at the path is removed; a live one (a
/// driver still answering there) or anything that is not a socket is an error.
pub async fn bind_socket(path: &Path) -> Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(CsiError::Config(format!(
                    "{} is in use by a running server",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| CsiError::io(path, e))?;
        }
        Ok(_) => {
            return Err(CsiError::Config(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CsiError::io(path, e)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| CsiError::io(parent, e))?;
    }
    // The socket is private from the moment it exists: bind under a umask that leaves only
    // the owner's bits, then make sure of 0600 (umask is process-wide, so restore it at once).
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| CsiError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| CsiError::io(path, e))?;
    Ok(listener)
}

/// A running driver's handles, for tests and the binary.
pub struct Served {
    pub socket: PathBuf,
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Serves `driver` on `socket` (and metrics on `metrics_addr`) until `shutdown` completes,
/// then removes the socket. `on_ready` is called once both listeners are bound.
pub async fn serve(
    driver: Arc<Driver>,
    socket: &Path,
    metrics_addr: Option<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Served),
) -> Result<()> {
    let listener = bind_socket(socket).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics_task = match metrics_addr {
        Some(addr) => {
            let (tcp, local) = telemetry::bind(addr)
                .await
                .map_err(|e| CsiError::Config(format!("--metrics-address {addr}: {e}")))?;
            let mut rx = stop_rx.clone();
            let m = Arc::clone(driver.metrics());
            Some((
                local,
                tokio::spawn(telemetry::serve(m, tcp, async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })),
            ))
        }
        None => None,
    };
    // The controller empties the trash can of volumes whose TTL has passed.
    let purge_task = driver.mode.controller().then(|| {
        let service = Arc::clone(driver.service());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TRASH_PURGE_INTERVAL);
            loop {
                tokio::select! {
                    _ = rx.changed() => break,
                    _ = tick.tick() => {}
                }
                match service.purge_expired_trash().await {
                    Ok(purged) if !purged.is_empty() => {
                        tracing::info!(?purged, "expired trash purged")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "purging expired trash failed; retrying later")
                    }
                }
            }
        })
    });
    // Restore on access again for the HSM volumes this node's pods still have mounted.
    if driver.mode.node() {
        if let Err(e) = driver.restore().resume(driver.service().backend()).await {
            tracing::error!(error = %e, "cannot read which HSM volumes this node watched");
        }
        if let Err(e) = driver.pcc.resume(driver.service().backend()).await {
            tracing::error!(error = %e, "cannot read which PCC caches this node keeps");
        }
    }
    let served = Served {
        socket: socket.to_path_buf(),
        metrics_addr: metrics_task.as_ref().map(|(a, _)| *a),
    };

    let mode = driver.mode;
    let router = tonic::transport::Server::builder()
        // Bounded work: each sidecar talks over one connection.
        .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
        .add_service(IdentityServer::new(IdentityService::new(Arc::clone(
            &driver,
        ))))
        .add_optional_service(
            mode.controller()
                .then(|| ControllerServer::new(ControllerService::new(Arc::clone(&driver)))),
        )
        .add_optional_service(
            mode.node()
                .then(|| NodeServer::new(NodeService::new(Arc::clone(&driver)))),
        );

    driver.metrics().set_ready(true);
    tracing::info!(socket = %socket.display(), ?mode, metrics = ?served.metrics_addr, driver = %driver.name,
        "CSI driver serving");
    on_ready(&served);
    let metrics_ref = Arc::clone(driver.metrics());
    // Every connection goes through the authority relay (see crate::authority), so that
    // clients sending the socket path as :authority are served too.
    let relays = Relays::default();
    let incoming = UnixListenerStream::new(listener).filter_map(move |accepted| match accepted {
        Ok(stream) => relays.relay(stream).map(Ok),
        Err(e) => Some(Err(e)),
    });
    let result = router
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            metrics_ref.set_ready(false);
            tracing::info!("shutting down: finishing calls in flight");
        })
        .await;
    let _ = stop_tx.send(true);
    if let Some((_, task)) = metrics_task {
        let _ = task.await;
    }
    if let Some(task) = purge_task {
        let _ = task.await;
    }
    if driver.mode.node() {
        driver.restore().stop_all().await;
        driver.pcc.stop_all().await;
    }
    let _ = std::fs::remove_file(socket);
    result?;
    tracing::info!("CSI driver stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
