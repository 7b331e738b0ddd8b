//! Prometheus metrics: operations, bytes and latencies by operation, in the text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0];

#[derive(Default)]
struct OpStats {
    ok: u64,
    failed: u64,
    bytes: u64,
    latency_sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Counters of one engine (share one `Arc<Metrics>` between engines to aggregate).
#[derive(Default)]
pub struct Metrics {
    ops: Mutex<BTreeMap<&'static str, OpStats>>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one operation.
    pub fn record(&self, op: &'static str, ok: bool, bytes: u64, took: Duration) {
        let Ok(mut ops) = self.ops.lock() else {
            return;
        };
        let s = ops.entry(op).or_default();
        if ok {
            s.ok += 1;
        } else {
            s.failed += 1;
        }
        s.bytes += bytes;
        let secs = took.as_secs_f64();
        s.latency_sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(ops) = self.ops.lock() else {
            return out;
        };
        let _ = writeln!(
            out,
            "# HELP lustrekit_hsm_operations_total HSM operations by operation and result."
        );
        let _ = writeln!(out, "# TYPE lustrekit_hsm_operations_total counter");
        for (op, s) in ops.iter() {
            let _ = writeln!(
                out,
                "lustrekit_hsm_operations_total{{op=\"{op}\",result=\"ok\"}} {}",
                s.ok
            );
            let _ = writeln!(
                out,
                "lustrekit_hsm_operations_total{{op=\"{op}\",result=\"error\"}} {}",
                s.failed
            );
        }
        let _ = writeln!(
            out,
            "# HELP lustrekit_hsm_bytes_total Bytes moved by operation."
        );
        let _ = writeln!(out, "# TYPE lustrekit_hsm_bytes_total counter");
        for (op, s) in ops.iter() {
            let _ = writeln!(out, "lustrekit_hsm_bytes_total{{op=\"{op}\"}} {}", s.bytes);
        }
        let _ = writeln!(
            out,
            "# HELP lustrekit_hsm_operation_seconds Latency of HSM operations."
        );
        let _ = writeln!(out, "# TYPE lustrekit_hsm_operation_seconds histogram");
        for (op, s) in ops.iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "lustrekit_hsm_operation_seconds_bucket{{op=\"{op}\",le=\"{b}\"}} {}",
                    s.buckets[i]
                );
            }
            let n = s.ok + s.failed;
            let _ = writeln!(
                out,
                "lustrekit_hsm_operation_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {n}"
            );
            let _ = writeln!(
                out,
                "lustrekit_hsm_operation_seconds_sum{{op=\"{op}\"}} {}",
                s.latency_sum
            );
            let _ = writeln!(
                out,
                "lustrekit_hsm_operation_seconds_count{{op=\"{op}\"}} {n}"
            );
        }
        out
    }
}

/// Serves `metrics` over a minimal HTTP listener: `GET /metrics` answers the text
/// exposition, anything else 404. Returns the bound address (port 0 picks one) and the
/// serving task (abort it to stop).
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: std::sync::Arc<Metrics>,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (mut sock, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Read the request head (bounded), then answer and close.
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
                let line = String::from_utf8_lossy(line);
                let mut parts = line.split_whitespace();
                let (method, target) = (parts.next(), parts.next());
                let resp = if method == Some("GET")
                    && target.is_some_and(|t| t == "/metrics" || t.starts_with("/metrics?"))
                {
                    let body = metrics.render();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    let body = "not found: try GET /metrics\n";
                    format!(
                        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                if let Err(e) = sock.write_all(resp.as_bytes()).await {
                    tracing::debug!(%peer, error = %e, "metrics write");
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_get_metrics_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let m = std::sync::Arc::new(Metrics::new());
        m.record("restore", true, 42, Duration::from_millis(3));
        let (addr, task) = serve("127.0.0.1:0".parse().expect("addr"), m)
            .await
            .expect("bind");
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("send");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains("lustrekit_hsm_bytes_total{op=\"restore\"} 42"),
            "{ok}"
        );
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::new();
        m.record("archive", true, 100, Duration::from_millis(20));
        m.record("archive", false, 0, Duration::from_secs(2));
        let t = m.render();
        assert!(t.contains("lustrekit_hsm_operations_total{op=\"archive\",result=\"ok\"} 1"));
        assert!(t.contains("lustrekit_hsm_operations_total{op=\"archive\",result=\"error\"} 1"));
        assert!(t.contains("lustrekit_hsm_bytes_total{op=\"archive\"} 100"));
        assert!(t.contains("lustrekit_hsm_operation_seconds_bucket{op=\"archive\",le=\"0.05\"} 1"));
        assert!(t.contains("lustrekit_hsm_operation_seconds_count{op=\"archive\"} 2"));
    }
}
