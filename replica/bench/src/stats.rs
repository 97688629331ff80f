//! Latency histograms and throughput bookkeeping shared by the benchmarks.

use hdrhistogram::Histogram;
use std::time::Duration;

/// A latency histogram in microseconds (1 µs .. 60 s, 3 significant digits).
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }
}

impl Latencies {
    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self.hist.record(us);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.hist.add(&other.hist);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The `q` quantile (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_samples() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.count(), 100);
        assert!((l.quantile_ms(0.5) - 50.0).abs() < 0.5);
        assert!((l.quantile_ms(0.99) - 99.0).abs() < 0.5);
        assert_eq!(Latencies::default().quantile_ms(0.5), 0.0);
    }
}
