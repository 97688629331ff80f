//! Prometheus metrics of a client process (`dssmr bench ... --metrics-addr`): the client's
//! side of DS-SMR, read from its proxies' shared [`ProxyStats`] at scrape time.
//!
//! Names follow the Prometheus conventions (prefix `dssmr_`, counters end in `_total`); no
//! label is ever a variable name. This module registers and renders; it serves nothing (the
//! CLI serves the text over HTTP).

use crate::client::proxy::ProxyStats;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};
use std::sync::Arc;

/// The metrics of a client process (`dssmr bench ... --metrics-addr`): what its proxies did,
/// read from their shared [`ProxyStats`] at scrape time. These are the client's side of
/// DS-SMR: cache hits and misses, consults, moves it asked for, retries, S-SMR fallbacks.
pub struct ClientMetrics {
    registry: Registry,
}

/// Counters of a client process: (name, help, reader).
type ClientCounter = (
    &'static str,
    &'static str,
    fn(&crate::client::proxy::StatsSnapshot) -> u64,
);

const CLIENT_COUNTERS: [ClientCounter; 9] = [
    (
        "dssmr_client_commands_total",
        "Commands issued by this client process (access, create, delete).",
        |s| s.commands,
    ),
    (
        "dssmr_client_completed_total",
        "Commands that completed.",
        |s| s.completed,
    ),
    (
        "dssmr_client_oracle_consults_total",
        "Consults sent to the oracle.",
        |s| s.consults,
    ),
    (
        "dssmr_client_cache_hits_total",
        "Commands whose variables were all in the location cache.",
        |s| s.cache_hits,
    ),
    (
        "dssmr_client_cache_misses_total",
        "Commands that had to consult the oracle first.",
        |s| s.cache_misses,
    ),
    (
        "dssmr_client_variable_moves_total",
        "Variables this client asked to move.",
        |s| s.moves,
    ),
    (
        "dssmr_client_retries_total",
        "Retry replies received.",
        |s| s.retries,
    ),
    (
        "dssmr_ssmr_fallbacks_total",
        "Commands that fell back to S-SMR after too many retries.",
        |s| s.fallbacks,
    ),
    (
        "dssmr_client_spreads_total",
        "Commands run spread over the partitions holding their variables.",
        |s| s.spreads,
    ),
];

impl ClientMetrics {
    /// Metrics over `stats`.
    pub fn new(stats: Arc<ProxyStats>) -> Self {
        let registry = Registry::new();
        registry
            .register(Box::new(ClientCollector::new(stats)))
            .expect("registered once");
        ClientMetrics { registry }
    }

    /// Everything in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

struct ClientCollector {
    stats: Arc<ProxyStats>,
    counters: Vec<prometheus::IntCounter>,
    descs: Vec<Desc>,
}

impl ClientCollector {
    fn new(stats: Arc<ProxyStats>) -> Self {
        let counters: Vec<prometheus::IntCounter> = CLIENT_COUNTERS
            .iter()
            .map(|(name, help, _)| {
                prometheus::IntCounter::new(*name, *help).expect("static counter is valid")
            })
            .collect();
        let descs = counters
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        ClientCollector {
            stats,
            counters,
            descs,
        }
    }
}

impl Collector for ClientCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snap = self.stats.snapshot();
        let mut out = Vec::new();
        for (c, (_, _, read)) in self.counters.iter().zip(CLIENT_COUNTERS.iter()) {
            set_counter(c, read(&snap));
            out.extend(c.collect());
        }
        out
    }
}

/// Sets a scrape-time counter to `value` (collect() runs under the registry's lock).
pub(crate) fn set_counter(c: &prometheus::IntCounter, value: u64) {
    c.reset();
    c.inc_by(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_metrics_render_the_proxy_counters() {
        use std::sync::atomic::Ordering;
        let stats = Arc::new(ProxyStats::default());
        stats.cache_hits.fetch_add(7, Ordering::Relaxed);
        stats.fallbacks.fetch_add(2, Ordering::Relaxed);
        let m = ClientMetrics::new(stats.clone());
        let text = m.render();
        assert!(text.contains("dssmr_client_cache_hits_total 7"), "{text}");
        assert!(text.contains("dssmr_ssmr_fallbacks_total 2"), "{text}");
        stats.fallbacks.fetch_add(1, Ordering::Relaxed);
        assert!(m.render().contains("dssmr_ssmr_fallbacks_total 3"));
    }
}
