//! The driver's Prometheus metrics (calls, latencies, calls in flight, readiness), served
//! with `/healthz` by the `telemetry` crate's HTTP server on their own TCP port.
//!
//! The names, types, help texts and labels are those of the hand-written text this replaced;
//! the OpenMetrics encoder puts `le` first in bucket labels and writes bounds as `1.0`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Call {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The driver's counters. Labels are method names and gRPC codes, and the volume ID of the
/// HSM volumes' metrics: nothing else from a request (names, secrets, paths) reaches a
/// metric.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Call, Counter>,
    latency: Family<Method, Histogram>,
    in_flight: Gauge,
    ready: Gauge,
    /// The node's PCC caches (`hotNodes` volumes), shared by their purges.
    pcc: std::sync::Arc<hsm::pcc::PccMetrics>,
    /// HSM volumes: their engines' operations, reads held, policy passes (label `volume`).
    hsm_volumes: std::sync::Arc<hsm::metrics::VolumeMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<Call, Counter>::default();
        let latency = Family::<Method, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let in_flight = Gauge::default();
        let ready = Gauge::default();
        let mut registry = Registry::default();
        // Counters are named without `_total`: the encoder appends it to the samples.
        registry.register(
            "lustrekit_csi_requests",
            "CSI calls answered, by method and gRPC code",
            requests.clone(),
        );
        registry.register(
            "lustrekit_csi_request_duration_seconds",
            "Time to answer a CSI call",
            latency.clone(),
        );
        registry.register(
            "lustrekit_csi_requests_in_flight",
            "CSI calls being answered now",
            in_flight.clone(),
        );
        registry.register(
            "lustrekit_csi_ready",
            "Whether the driver is serving (1) or not (0)",
            ready.clone(),
        );
        let pcc = std::sync::Arc::new(hsm::pcc::PccMetrics::new());
        pcc.register(&mut registry);
        let hsm_volumes = std::sync::Arc::new(hsm::metrics::VolumeMetrics::new());
        hsm_volumes.register(&mut registry);
        Self {
            hsm_volumes,
            registry,
            requests,
            latency,
            in_flight,
            ready,
            pcc,
        }
    }
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
    /// The per-volume HSM metrics, for the node's restore daemons and policies and the
    /// controller's imports.
    pub fn hsm_volumes(&self) -> std::sync::Arc<hsm::metrics::VolumeMetrics> {
        std::sync::Arc::clone(&self.hsm_volumes)
    }

    /// The PCC metrics, for the node's purges.
    pub fn pcc(&self) -> std::sync::Arc<hsm::pcc::PccMetrics> {
        std::sync::Arc::clone(&self.pcc)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.get() == 1
    }

    pub fn started(&self) {
        self.in_flight.inc();
    }

    pub fn finished(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.in_flight.dec();
        self.requests
            .get_or_create(&Call {
                method,
                code: code_name(code),
            })
            .inc();
        self.latency
            .get_or_create(&Method { method })
            .observe(elapsed.as_secs_f64());
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

    fn is_ready(&self) -> bool {
        Metrics::is_ready(self)
    }
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
        assert!(text.contains("lustrekit_csi_request_duration_seconds_bucket{le=\"0.005\",method=\"CreateVolume\"} 1"), "{text}");
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
        assert!(text.contains("lustrekit_csi_ready 0"), "{text}");
        assert!(
            text.contains(
                "# HELP lustrekit_csi_requests CSI calls answered, by method and gRPC code.\n"
            ),
            "{text}"
        );
        m.set_ready(true);
        assert!(m.is_ready() && m.render().contains("lustrekit_csi_ready 1"));
    }
}
