//! `/metrics` (Prometheus text format) and `/healthz`, on their own TCP port.
//!
//! Two endpoints need no web framework: a small HTTP/1 responder reads the request line and
//! answers, with a bounded read and a timeout so a slow client cannot hold a task.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// The driver's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    in_flight: AtomicI64,
    ready: AtomicBool,
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Metrics {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finished(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((method, code_name(code))).or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            let h = latency.entry(method).or_insert_with(|| Histogram {
                buckets: vec![0; BUCKETS.len()],
                ..Histogram::default()
            });
            let secs = elapsed.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.buckets[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP lustrekit_csi_requests_total CSI calls answered, by method and gRPC code.\n",
        );
        out.push_str("# TYPE lustrekit_csi_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((method, code), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "lustrekit_csi_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP lustrekit_csi_request_duration_seconds Time to answer a CSI call.\n");
        out.push_str("# TYPE lustrekit_csi_request_duration_seconds histogram\n");
        if let Ok(latency) = self.latency.lock() {
            for (method, h) in latency.iter() {
                for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
                    let _ = writeln!(
                        out,
                        "lustrekit_csi_request_duration_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "lustrekit_csi_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "lustrekit_csi_request_duration_seconds_sum{{method=\"{method}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "lustrekit_csi_request_duration_seconds_count{{method=\"{method}\"}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP lustrekit_csi_requests_in_flight CSI calls being answered now.\n");
        out.push_str("# TYPE lustrekit_csi_requests_in_flight gauge\n");
        let _ = writeln!(
            out,
            "lustrekit_csi_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out.push_str("# HELP lustrekit_csi_ready Whether the driver is serving (1) or not (0).\n");
        out.push_str("# TYPE lustrekit_csi_ready gauge\n");
        let _ = writeln!(out, "lustrekit_csi_ready {}", u8::from(self.is_ready()));
        out
    }
}

/// Answers one HTTP request.
async fn answer(metrics: &Metrics, mut stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read until the end of the headers, at most 4 KiB.
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        ("GET", "/healthz") | ("GET", "/readyz") if metrics.is_ready() => {
            ("200 OK", "text/plain", "ok\n".to_string())
        }
        ("GET", "/healthz") | ("GET", "/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` completes.
pub async fn serve(
    metrics: std::sync::Arc<Metrics>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let metrics = std::sync::Arc::clone(&metrics);
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), answer(&metrics, stream)).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Binds the metrics address (port 0 picks a free port; the bound address is returned).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_calls() {
        let m = Metrics::default();
        m.started();
        m.finished("CreateVolume", tonic::Code::Ok, Duration::from_millis(3));
        m.started();
        m.finished(
            "CreateVolume",
            tonic::Code::AlreadyExists,
            Duration::from_secs(60),
        );
        let text = m.render();
        assert!(
            text.contains("lustrekit_csi_requests_total{method=\"CreateVolume\",code=\"OK\"} 1"),
            "{text}"
        );
        assert!(text.contains("code=\"ALREADY_EXISTS\"} 1"), "{text}");
        assert!(text.contains("lustrekit_csi_request_duration_seconds_bucket{method=\"CreateVolume\",le=\"0.005\"} 1"), "{text}");
        assert!(
            text.contains(
                "lustrekit_csi_request_duration_seconds_count{method=\"CreateVolume\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("lustrekit_csi_requests_in_flight 0"),
            "{text}"
        );
    }
}
