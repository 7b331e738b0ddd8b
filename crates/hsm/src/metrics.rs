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

#[cfg(test)]
mod tests {
    use super::*;

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
