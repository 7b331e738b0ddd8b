//! The operator's Prometheus metrics (reconciles, their duration, failures by error, ready
//! PV/PVC pairs), served with `/healthz` and `/readyz` by the `telemetry` crate's HTTP server.
//!
//! Labels are bounded: the resource (the CRD's name) and [`OperatorError::metric_label`].
//! Never an object's name: a cluster with thousands of resources must not make thousands of
//! series.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::controller::OperatorError;

/// Reconcile durations, in seconds: an apply of a few pairs takes tens of milliseconds, a
/// hundred namespaces a few seconds.
const BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByResource {
    /// The CRD's name (`lustrefilesystems.lustrekit.io`).
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByError {
    resource: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByMovement {
    /// `in` or `out`.
    direction: &'static str,
    /// `success`, `failed` or `cancelled`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByDirection {
    direction: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The operator's metrics; one is shared by every controller of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ByResource, Counter>,
    duration: Family<ByResource, Histogram>,
    errors: Family<ByError, Counter>,
    ready_pairs: Family<ByResource, Gauge>,
    movements: Family<ByMovement, Counter>,
    moved_bytes: Family<ByDirection, Counter>,
    /// The last count of ready pairs per (resource, object key), so the gauge is their sum
    /// and a deleted object's pairs leave it.
    ready_by_object: Mutex<HashMap<(&'static str, String), i64>>,
    /// Whether every controller's cache has its first full list.
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciles = Family::<ByResource, Counter>::default();
        let duration = Family::<ByResource, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let errors = Family::<ByError, Counter>::default();
        let ready_pairs = Family::<ByResource, Gauge>::default();
        let movements = Family::<ByMovement, Counter>::default();
        let moved_bytes = Family::<ByDirection, Counter>::default();
        let mut registry = Registry::default();
        // Counters are named without `_total`: the encoder appends it to the samples.
        registry.register(
            "lustrekit_operator_reconciles",
            "Reconciles run, by resource",
            reconciles.clone(),
        );
        registry.register(
            "lustrekit_operator_reconcile_duration_seconds",
            "Time one reconcile took, by resource",
            duration.clone(),
        );
        registry.register(
            "lustrekit_operator_reconcile_errors",
            "Reconciles that failed, by resource and error",
            errors.clone(),
        );
        registry.register(
            "lustrekit_operator_ready_pairs",
            "PV/PVC pairs bound, by resource",
            ready_pairs.clone(),
        );
        registry.register(
            "lustrekit_operator_datamovements",
            "DataMovements finished, by direction and result",
            movements.clone(),
        );
        registry.register(
            "lustrekit_operator_datamovement_bytes",
            "Bytes DataMovements copied (or found already there), by direction",
            moved_bytes.clone(),
        );
        Self {
            registry,
            reconciles,
            duration,
            errors,
            ready_pairs,
            movements,
            moved_bytes,
            ready_by_object: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Counts one reconcile of `resource` and how long it took, whatever its result.
    pub fn reconciled(&self, resource: &'static str, took: Duration) {
        self.reconciles
            .get_or_create(&ByResource { resource })
            .inc();
        self.duration
            .get_or_create(&ByResource { resource })
            .observe(took.as_secs_f64());
    }

    /// Counts one finished DataMovement and the bytes it accounted for.
    pub fn moved(
        &self,
        direction: crate::movement::Direction,
        result: crate::movement::MoveResult,
        bytes: u64,
    ) {
        use crate::movement::{Direction, MoveResult};
        let direction = match direction {
            Direction::In => "in",
            Direction::Out => "out",
        };
        let result = match result {
            MoveResult::Success => "success",
            MoveResult::Failed => "failed",
            MoveResult::Cancelled => "cancelled",
        };
        self.movements
            .get_or_create(&ByMovement { direction, result })
            .inc();
        self.moved_bytes
            .get_or_create(&ByDirection { direction })
            .inc_by(bytes);
    }

    /// Counts one failed reconcile under the error's label.
    pub fn failed(&self, resource: &'static str, error: &OperatorError) {
        self.errors
            .get_or_create(&ByError {
                resource,
                error: error.metric_label(),
            })
            .inc();
    }

    /// Sets how many pairs of one object (`namespace/name`, or `name`) are bound.
    pub fn set_ready_pairs(&self, resource: &'static str, object: &str, ready: usize) {
        let ready = i64::try_from(ready).unwrap_or(i64::MAX);
        let mut by_object = self
            .ready_by_object
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = by_object
            .insert((resource, object.to_string()), ready)
            .unwrap_or(0);
        self.ready_pairs
            .get_or_create(&ByResource { resource })
            .inc_by(ready - before);
    }

    /// Drops an object's pairs from the gauge (it was deleted).
    pub fn forget(&self, resource: &'static str, object: &str) {
        let mut by_object = self
            .ready_by_object
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(before) = by_object.remove(&(resource, object.to_string())) {
            self.ready_pairs
                .get_or_create(&ByResource { resource })
                .dec_by(before);
        }
    }

    /// Called once every controller's cache is filled: `/readyz` turns 200.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
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
        self.ready.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LFS: &str = "lustrefilesystems.lustrekit.io";

    fn kube_error(action: &'static str) -> OperatorError {
        OperatorError::Kube {
            action,
            object: "PersistentVolume x".into(),
            source: kube::Error::LinesCodecMaxLineLengthExceeded,
        }
    }

    #[test]
    fn an_error_increments_its_label() {
        let m = Metrics::default();
        m.reconciled(LFS, Duration::from_millis(20));
        m.failed(LFS, &kube_error("apply"));
        m.failed(LFS, &kube_error("apply"));
        m.failed(LFS, &kube_error("delete"));
        let t = m.render();
        assert!(
            t.contains(
                "lustrekit_operator_reconcile_errors_total{resource=\"lustrefilesystems.lustrekit.io\",error=\"apply\"} 2"
            ),
            "{t}"
        );
        assert!(t.contains("error=\"delete\"} 1"), "{t}");
        assert!(
            t.contains(
                "lustrekit_operator_reconciles_total{resource=\"lustrefilesystems.lustrekit.io\"} 1"
            ),
            "{t}"
        );
        assert!(
            t.contains("lustrekit_operator_reconcile_duration_seconds_bucket{le=\"0.025\",resource=\"lustrefilesystems.lustrekit.io\"} 1"),
            "{t}"
        );
    }

    /// A failed call inside the finalizer's apply counts under the call, not `finalizer`.
    #[test]
    fn an_error_inside_the_finalizer_keeps_its_label() {
        let wrapped =
            |e: kube::runtime::finalizer::Error<OperatorError>| OperatorError::Finalizer {
                object: "lus".into(),
                source: Box::new(e),
            };
        use kube::runtime::finalizer::Error as F;
        assert_eq!(
            wrapped(F::ApplyFailed(kube_error("apply"))).metric_label(),
            "apply"
        );
        assert_eq!(
            wrapped(F::CleanupFailed(kube_error("list"))).metric_label(),
            "list"
        );
        assert_eq!(
            wrapped(F::AddFinalizer(
                kube::Error::LinesCodecMaxLineLengthExceeded
            ))
            .metric_label(),
            "finalizer"
        );
    }

    #[test]
    fn ready_pairs_sum_objects_and_forget_deleted_ones() {
        let m = Metrics::default();
        m.set_ready_pairs(LFS, "a", 3);
        m.set_ready_pairs(LFS, "b", 2);
        m.set_ready_pairs(LFS, "a", 1);
        let gauge = |m: &Metrics| {
            m.ready_pairs
                .get_or_create(&ByResource { resource: LFS })
                .get()
        };
        assert_eq!(gauge(&m), 3);
        m.forget(LFS, "b");
        m.forget(LFS, "never-seen");
        assert_eq!(gauge(&m), 1);
        assert!(m.render().contains(
            "lustrekit_operator_ready_pairs{resource=\"lustrefilesystems.lustrekit.io\"} 1"
        ));
    }

    #[test]
    fn finished_movements_count_by_direction_and_result() {
        use crate::movement::{Direction, MoveResult};
        let m = Metrics::default();
        m.moved(Direction::Out, MoveResult::Success, 10);
        m.moved(Direction::Out, MoveResult::Success, 5);
        m.moved(Direction::In, MoveResult::Cancelled, 1);
        let text = m.render();
        assert!(
            text.contains(
                r#"lustrekit_operator_datamovements_total{direction="out",result="success"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"lustrekit_operator_datamovement_bytes_total{direction="out"} 15"#),
            "{text}"
        );
        assert!(text.contains(r#"result="cancelled"} 1"#), "{text}");
    }

    #[test]
    fn ready_only_once_told() {
        let m = Metrics::default();
        assert!(!telemetry::Exposition::is_ready(&m));
        m.set_ready(true);
        assert!(telemetry::Exposition::is_ready(&m));
    }
}
