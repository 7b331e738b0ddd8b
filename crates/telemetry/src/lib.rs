//! Prometheus metrics: registry helpers and the one HTTP server for `/metrics` and `/healthz`.
//!
//! Every long-running part of lustrekit (the CSI driver, the HSM daemons, the operator)
//! keeps its metrics in a `prometheus_client` [`Registry`] behind an [`Exposition`] and
//! serves it with [`serve`]: `GET /metrics` answers the OpenMetrics text, `GET /healthz` and
//! `GET /readyz` answer 200 while the process says it is ready and 503 otherwise.
//!
//! Must never: expose a secret in a label or a value, or let a slow scraper hold a connection
//! slot forever.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use prometheus_client;
pub use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A slow client never holds a connection longer than this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections answered at once; a scraper and a probe need a few, the rest wait in the
/// listen backlog.
const MAX_CONNECTIONS: usize = 32;

/// What the server exposes: a registry, and whether the process is ready.
pub trait Exposition: Send + Sync + 'static {
    /// The metrics to encode at `/metrics`.
    fn registry(&self) -> &Registry;

    /// Whether `/healthz` and `/readyz` answer 200 (ready) or 503.
    fn is_ready(&self) -> bool {
        true
    }
}

/// The OpenMetrics text of `registry` (ends with `# EOF`).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would leave a partial text,
    // which a scraper rejects, so it is logged rather than hidden.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

/// Binds the metrics address (port 0 picks a free port; the bound address is returned).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The answer to one request.
fn answer(exposition: &dyn Exposition, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    match request.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            OPENMETRICS_CONTENT_TYPE,
            encode(exposition.registry()),
        ),
        "/healthz" | "/readyz" if exposition.is_ready() => {
            text(StatusCode::OK, "text/plain", "ok\n")
        }
        "/healthz" | "/readyz" => {
            text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Serves `exposition` on `listener` until `shutdown` completes.
pub async fn serve(
    exposition: Arc<dyn Exposition>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let exposition = Arc::clone(&exposition);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = answer(exposition.as_ref(), &request);
                async move { Ok::<_, Infallible>(response) }
            });
            // One request per connection, as probes and scrapers open a fresh one each time.
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .timer(TokioTimer::new())
                .header_read_timeout(CONNECTION_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection"),
                Err(_) => tracing::debug!("metrics connection timed out"),
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Test {
        registry: Registry,
        ready: AtomicBool,
    }

    impl Exposition for Test {
        fn registry(&self) -> &Registry {
            &self.registry
        }
        fn is_ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }
    }

    async fn request(addr: SocketAddr, head: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_errors() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("things", "Things seen", counter.clone());
        counter.inc_by(3);
        let exposition = Arc::new(Test {
            registry,
            ready: AtomicBool::new(true),
        });
        let (listener, addr) = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(exposition.clone(), listener, async move {
            let _ = stop_rx.await;
        }));
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");

        let metrics = request(addr, &get("/metrics")).await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("# HELP things Things seen.\n"),
            "{metrics}"
        );
        assert!(metrics.contains("\nthings_total 3\n"), "{metrics}");
        assert!(metrics.ends_with("# EOF\n"), "{metrics}");
        assert!(
            request(addr, &get("/metrics?x=1"))
                .await
                .starts_with("HTTP/1.1 200")
        );

        let health = request(addr, &get("/healthz")).await;
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("\r\n\r\nok\n"),
            "{health}"
        );
        exposition.ready.store(false, Ordering::SeqCst);
        let health = request(addr, &get("/readyz")).await;
        assert!(
            health.starts_with("HTTP/1.1 503") && health.ends_with("not ready\n"),
            "{health}"
        );

        assert!(
            request(addr, &get("/nope"))
                .await
                .starts_with("HTTP/1.1 404")
        );
        let post = request(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        stop_tx.send(()).expect("stop");
        server.await.expect("server task");
    }
}
