//! Prometheus metrics of the HSM engines: operations, bytes and latencies by operation,
//! served by the `telemetry` crate's HTTP server; and [`VolumeMetrics`], the same per CSI
//! volume plus what the node plugin knows of each volume (reads held for a restore, the
//! policy's passes, the volume's files by HSM state, whether its store answers).
//!
//! The names, types, help texts and labels are those of the hand-written text this replaced;
//! the OpenMetrics encoder puts `le` first in bucket labels and writes bounds as `1.0`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    /// Where this engine's operations are also counted per volume (CSI volumes).
    volume: Option<(Arc<VolumeMetrics>, String)>,
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
            volume: None,
        }
    }

    /// Metrics of one CSI volume's engine: its operations are counted here as usual and in
    /// `volumes` under the label `volume`.
    pub fn for_volume(volumes: Arc<VolumeMetrics>, volume: &str) -> Self {
        Self {
            volume: Some((volumes, volume.to_string())),
            ..Self::new()
        }
    }

    /// A read held while its file was restored, answered after `waited`.
    pub fn record_read_wait(&self, waited: Duration) {
        if let Some((volumes, volume)) = &self.volume {
            volumes.read_waited(volume, waited);
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
        if let Some((volumes, volume)) = &self.volume {
            volumes.record(volume, op, ok, bytes, took);
        }
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

/// The operations of a volume's engines are counted by these ops; their series are dropped
/// with the volume.
const VOLUME_OPS: [&str; 5] = ["archive", "release", "restore", "remove", "import"];

/// HSM states a volume's files are counted in.
pub const VOLUME_STATES: [&str; 4] = ["released", "archived", "dirty", "unarchived"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeOpResult {
    volume: String,
    op: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeOp {
    volume: String,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Volume {
    volume: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeState {
    volume: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeResult {
    volume: String,
    result: &'static str,
}

/// What a policy pass found: files and bytes by HSM state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateCount {
    pub files: u64,
    pub bytes: u64,
}

/// HSM metrics per CSI volume (label `volume`, the volume ID: no name, path or secret from a
/// request), registered once in the plugin's registry and fed by every volume's engine.
#[derive(Debug)]
pub struct VolumeMetrics {
    operations: Family<VolumeOpResult, Counter>,
    bytes: Family<VolumeOp, Counter>,
    latency: Family<VolumeOp, Histogram>,
    read_wait: Family<Volume, Histogram>,
    files: Family<VolumeState, Gauge>,
    state_bytes: Family<VolumeState, Gauge>,
    passes: Family<VolumeResult, Counter>,
    pass_seconds: Family<Volume, Histogram>,
    last_pass: Family<Volume, Gauge>,
    store_up: Family<Volume, Gauge>,
}

impl Default for VolumeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl VolumeMetrics {
    pub fn new() -> Self {
        let hist = || {
            Family::<Volume, Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            )
        };
        Self {
            operations: Family::default(),
            bytes: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            read_wait: hist(),
            files: Family::default(),
            state_bytes: Family::default(),
            passes: Family::default(),
            pass_seconds: hist(),
            last_pass: Family::default(),
            store_up: Family::default(),
        }
    }

    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "lustrekit_hsm_volume_operations",
            "HSM operations on a volume's files, by operation and result",
            self.operations.clone(),
        );
        registry.register(
            "lustrekit_hsm_volume_bytes",
            "Bytes a volume's HSM operations moved, by operation",
            self.bytes.clone(),
        );
        registry.register(
            "lustrekit_hsm_volume_operation_seconds",
            "Latency of a volume's HSM operations (op=restore: restores on access)",
            self.latency.clone(),
        );
        registry.register(
            "lustrekit_hsm_volume_read_wait_seconds",
            "How long reads of released files were held until their restore answered them",
            self.read_wait.clone(),
        );
        registry.register(
            "lustrekit_hsm_volume_files",
            "A volume's files by HSM state, at the last policy pass",
            self.files.clone(),
        );
        registry.register(
            "lustrekit_hsm_volume_state_bytes",
            "Bytes of a volume's files by HSM state, at the last policy pass",
            self.state_bytes.clone(),
        );
        registry.register(
            "lustrekit_hsm_volume_policy_passes",
            "Policy passes over a volume, by result (error: the pass failed or had errors)",
            self.passes.clone(),
        );
        registry.register(
            "lustrekit_hsm_volume_policy_pass_seconds",
            "Duration of a volume's policy passes",
            self.pass_seconds.clone(),
        );
        registry.register(
            "lustrekit_hsm_volume_last_policy_pass_timestamp_seconds",
            "When the last policy pass over a volume ended (Unix time)",
            self.last_pass.clone(),
        );
        registry.register(
            "lustrekit_hsm_volume_store_reachable",
            "Whether the volume's archive store answered its last check (1) or not (0)",
            self.store_up.clone(),
        );
    }

    fn record(&self, volume: &str, op: &'static str, ok: bool, bytes: u64, took: Duration) {
        // One series at a time (a family's guard holds its lock).
        let (counted, other) = if ok { ("ok", "error") } else { ("error", "ok") };
        let volume = volume.to_string();
        self.operations
            .get_or_create(&VolumeOpResult {
                volume: volume.clone(),
                op,
                result: counted,
            })
            .inc();
        self.operations
            .get_or_create(&VolumeOpResult {
                volume: volume.clone(),
                op,
                result: other,
            })
            .inc_by(0);
        self.bytes
            .get_or_create(&VolumeOp {
                volume: volume.clone(),
                op,
            })
            .inc_by(bytes);
        self.latency
            .get_or_create(&VolumeOp { volume, op })
            .observe(took.as_secs_f64());
    }

    fn read_waited(&self, volume: &str, waited: Duration) {
        self.read_wait
            .get_or_create(&Volume {
                volume: volume.to_string(),
            })
            .observe(waited.as_secs_f64());
    }

    /// A policy pass over `volume` ended: its duration, whether it went cleanly, and the
    /// files by state it found (`counts` in [`VOLUME_STATES`] order).
    pub fn pass_done(
        &self,
        volume: &str,
        took: Duration,
        ok: bool,
        counts: Option<&[StateCount; 4]>,
        now_unix_secs: u64,
    ) {
        let key = Volume {
            volume: volume.to_string(),
        };
        let (counted, other) = if ok { ("ok", "error") } else { ("error", "ok") };
        for (result, by) in [(counted, 1), (other, 0)] {
            self.passes
                .get_or_create(&VolumeResult {
                    volume: volume.to_string(),
                    result,
                })
                .inc_by(by);
        }
        self.pass_seconds
            .get_or_create(&key)
            .observe(took.as_secs_f64());
        self.last_pass
            .get_or_create(&key)
            .set(i64::try_from(now_unix_secs).unwrap_or(i64::MAX));
        if let Some(counts) = counts {
            for (state, count) in VOLUME_STATES.iter().zip(counts) {
                let k = VolumeState {
                    volume: volume.to_string(),
                    state,
                };
                self.files
                    .get_or_create(&k)
                    .set(i64::try_from(count.files).unwrap_or(i64::MAX));
                self.state_bytes
                    .get_or_create(&k)
                    .set(i64::try_from(count.bytes).unwrap_or(i64::MAX));
            }
        }
    }

    /// Whether `volume`'s store answered its last check.
    pub fn store_reachable(&self, volume: &str, up: bool) {
        self.store_up
            .get_or_create(&Volume {
                volume: volume.to_string(),
            })
            .set(i64::from(up));
    }

    /// Drops every series of `volume` (it is no longer served here).
    pub fn forget(&self, volume: &str) {
        let v = || volume.to_string();
        for op in VOLUME_OPS {
            for result in ["ok", "error"] {
                self.operations.remove(&VolumeOpResult {
                    volume: v(),
                    op,
                    result,
                });
            }
            self.bytes.remove(&VolumeOp { volume: v(), op });
            self.latency.remove(&VolumeOp { volume: v(), op });
        }
        for state in VOLUME_STATES {
            self.files.remove(&VolumeState { volume: v(), state });
            self.state_bytes.remove(&VolumeState { volume: v(), state });
        }
        for result in ["ok", "error"] {
            self.passes.remove(&VolumeResult {
                volume: v(),
                result,
            });
        }
        let key = Volume { volume: v() };
        self.read_wait.remove(&key);
        self.pass_seconds.remove(&key);
        self.last_pass.remove(&key);
        self.store_up.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_engine_counts_per_volume_and_forgets() {
        let volumes = Arc::new(VolumeMetrics::new());
        let mut registry = Registry::default();
        volumes.register(&mut registry);
        let m = Metrics::for_volume(Arc::clone(&volumes), "vol-a");
        m.record("restore", true, 42, Duration::from_millis(30));
        m.record_read_wait(Duration::from_millis(40));
        let counts = [
            StateCount {
                files: 2,
                bytes: 10,
            },
            StateCount { files: 1, bytes: 5 },
            StateCount::default(),
            StateCount { files: 3, bytes: 7 },
        ];
        volumes.pass_done(
            "vol-a",
            Duration::from_millis(3),
            true,
            Some(&counts),
            1_700_000_000,
        );
        volumes.store_reachable("vol-a", false);
        let t = telemetry::encode(&registry);
        for want in [
            "lustrekit_hsm_volume_operations_total{volume=\"vol-a\",op=\"restore\",result=\"ok\"} 1",
            "lustrekit_hsm_volume_operations_total{volume=\"vol-a\",op=\"restore\",result=\"error\"} 0",
            "lustrekit_hsm_volume_bytes_total{volume=\"vol-a\",op=\"restore\"} 42",
            "lustrekit_hsm_volume_operation_seconds_bucket{le=\"0.05\",volume=\"vol-a\",op=\"restore\"} 1",
            "lustrekit_hsm_volume_read_wait_seconds_count{volume=\"vol-a\"} 1",
            "lustrekit_hsm_volume_files{volume=\"vol-a\",state=\"released\"} 2",
            "lustrekit_hsm_volume_state_bytes{volume=\"vol-a\",state=\"unarchived\"} 7",
            "lustrekit_hsm_volume_policy_passes_total{volume=\"vol-a\",result=\"ok\"} 1",
            "lustrekit_hsm_volume_last_policy_pass_timestamp_seconds{volume=\"vol-a\"} 1700000000",
            "lustrekit_hsm_volume_store_reachable{volume=\"vol-a\"} 0",
        ] {
            assert!(t.contains(want), "{want} missing from:\n{t}");
        }
        // The engine's own (unlabelled) metrics still count it.
        assert!(
            m.render()
                .contains("lustrekit_hsm_bytes_total{op=\"restore\"} 42")
        );
        volumes.forget("vol-a");
        let t = telemetry::encode(&registry);
        assert!(!t.contains("vol-a"), "{t}");
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
