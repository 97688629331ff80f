//! The operator's own metrics: reconciles by result and their duration, and per cluster the
//! throughput and move rate it read from the replicas (as in each cluster's status), and
//! whether this process leads (`dssmr_operator_leader`). One registry, registered once at
//! start; reconciles are timed with a drop guard so every exit path (errors included) is
//! measured.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::time::Instant;

/// Metrics of one operator process.
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    duration: Histogram,
    throughput: GaugeVec,
    move_rate: GaugeVec,
    leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "dssmr_operator_reconciles_total",
                "Reconciles of DSSMRClusters by result: ok, invalid (spec makes no sense), \
                 paused, error (an API call failed; retried).",
            ),
            &["result"],
        )
        .expect("static metric is valid");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "dssmr_operator_reconcile_duration_seconds",
                "Time one reconcile of one DSSMRCluster took.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("static metric is valid");
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["namespace", "cluster"])
                .expect("static metric is valid")
        };
        let throughput = gauge(
            "dssmr_operator_cluster_throughput",
            "Commands a DSSMRCluster executed per second between the operator's last two \
             scrapes of its replicas (per group the highest count among its replicas, summed).",
        );
        let move_rate = gauge(
            "dssmr_operator_cluster_move_rate",
            "Variables a DSSMRCluster moved per second between the operator's last two scrapes.",
        );
        for c in [&throughput, &move_rate] {
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
        }
        let leader = IntGauge::new(
            "dssmr_operator_leader",
            "1 while this operator process holds the leader Lease and reconciles, 0 while it \
             stands by (or before it has confirmed its lease).",
        )
        .expect("static metric is valid");
        registry
            .register(Box::new(leader.clone()))
            .expect("registered once");
        registry
            .register(Box::new(reconciles.clone()))
            .expect("registered once");
        registry
            .register(Box::new(duration.clone()))
            .expect("registered once");
        Metrics {
            registry,
            reconciles,
            duration,
            throughput,
            move_rate,
            leader,
        }
    }

    /// Whether this process leads (reconciles) now.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Publishes the rates of cluster `namespace/name`.
    pub fn set_rates(&self, namespace: &str, name: &str, throughput: f64, move_rate: f64) {
        self.throughput
            .with_label_values(&[namespace, name])
            .set(throughput);
        self.move_rate
            .with_label_values(&[namespace, name])
            .set(move_rate);
    }

    /// Forgets cluster `namespace/name` (deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        let _ = self.throughput.remove_label_values(&[namespace, name]);
        let _ = self.move_rate.remove_label_values(&[namespace, name]);
    }

    /// Starts timing a reconcile; the guard observes the duration when dropped.
    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            started: Instant::now(),
        }
    }

    /// Counts one reconcile ending with `result`.
    pub fn count(&self, result: ReconcileResult) {
        self.reconciles.with_label_values(&[result.name()]).inc();
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// How a reconcile ended (label `result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Objects applied, status written.
    Ok,
    /// The spec makes no sense; reported, nothing applied.
    Invalid,
    /// The cluster is paused; nothing applied.
    Paused,
    /// An API call failed; retried.
    Error,
}

impl ReconcileResult {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            ReconcileResult::Ok => "ok",
            ReconcileResult::Invalid => "invalid",
            ReconcileResult::Paused => "paused",
            ReconcileResult::Error => "error",
        }
    }
}

/// Observes the time since its creation into the reconcile duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_result_and_timed_on_every_exit() {
        let m = Metrics::new();
        {
            let _t = m.reconcile_timer();
            m.count(ReconcileResult::Ok);
        }
        {
            let _t = m.reconcile_timer();
            m.count(ReconcileResult::Error);
        }
        let text = m.render();
        assert!(
            text.contains("dssmr_operator_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("dssmr_operator_reconciles_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("dssmr_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }
}
