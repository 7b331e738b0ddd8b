//! Prometheus metrics of the HSM engines: operations, bytes and latencies by operation,
//! served by the `telemetry` crate's HTTP server.
//!
//! The names, types, help texts and labels are those of the hand-written text this replaced;
//! the OpenMetrics encoder puts `le` first in bucket labels and writes bounds as `1.0`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpResult {
    op: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Counters of one engine (share one `Arc<Metrics>` between engines to aggregate).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    operations: Family<OpResult, Counter>,
    bytes: Family<Op, Counter>,
    latency: Family<Op, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let operations = Family::<OpResult, Counter>::default();
        let bytes = Family::<Op, Counter>::default();
        let latency =
            Family::<Op, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let mut registry = Registry::default();
        // Counters are named without `_total`: the encoder appends it to the samples.
        registry.register(
            "lustrekit_hsm_operations",
            "HSM operations by operation and result",
            operations.clone(),
        );
        registry.register(
            "lustrekit_hsm_bytes",
            "Bytes moved by operation",
            bytes.clone(),
        );
        registry.register(
            "lustrekit_hsm_operation_seconds",
            "Latency of HSM operations",
            latency.clone(),
        );
        Self {
            registry,
            operations,
            bytes,
            latency,
        }
    }

    /// Records one operation.
    pub fn record(&self, op: &'static str, ok: bool, bytes: u64, took: Duration) {
        // Both results of an operation are exposed once it has run, the other one at 0.
        // One series at a time: a family's guard holds its lock, and creating a second
        // series while holding it would deadlock.
        let (counted, other) = if ok { ("ok", "error") } else { ("error", "ok") };
        self.operations
            .get_or_create(&OpResult {
                op,
                result: counted,
            })
            .inc();
        self.operations
            .get_or_create(&OpResult { op, result: other })
            .inc_by(0);
        self.bytes.get_or_create(&Op { op }).inc_by(bytes);
        self.latency
            .get_or_create(&Op { op })
            .observe(took.as_secs_f64());
    }

    /// The registry holding these metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        telemetry::encode(&self.registry)
    }
}

impl telemetry::Exposition for Metrics {
    fn registry(&self) -> &Registry {
        &self.registry
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
        assert!(t.contains("lustrekit_hsm_operation_seconds_bucket{le=\"0.05\",op=\"archive\"} 1"));
        assert!(t.contains("lustrekit_hsm_operation_seconds_count{op=\"archive\"} 2"));
    }

    #[test]
    fn one_result_exposes_the_other_at_zero() {
        let m = Metrics::new();
        m.record("restore", true, 42, Duration::from_millis(3));
        let t = m.render();
        assert!(
            t.contains("# TYPE lustrekit_hsm_operations counter\n"),
            "{t}"
        );
        assert!(
            t.contains("# HELP lustrekit_hsm_bytes Bytes moved by operation.\n"),
            "{t}"
        );
        assert!(
            t.contains("lustrekit_hsm_operations_total{op=\"restore\",result=\"error\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("lustrekit_hsm_bytes_total{op=\"restore\"} 42"),
            "{t}"
        );
        assert!(
            t.contains("lustrekit_hsm_operation_seconds_bucket{le=\"+Inf\",op=\"restore\"} 1"),
            "{t}"
        );
    }
}
