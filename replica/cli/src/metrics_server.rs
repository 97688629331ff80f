//! `--metrics-addr` of the benchmarks: the client-side counters (cache hits and misses,
//! consults, moves, retries, S-SMR fallbacks) served as Prometheus metrics while the
//! benchmark runs. This module serves; the proxies update the counters.

use dssmr_engine::client::proxy::ProxyStats;
use std::net::SocketAddr;
use std::sync::Arc;

/// With an `addr`, shared proxy counters served as Prometheus metrics from now on.
pub async fn serve_client_metrics(
    addr: Option<SocketAddr>,
) -> anyhow::Result<Option<Arc<ProxyStats>>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let stats = Arc::new(ProxyStats::default());
    let metrics = Arc::new(dssmr_engine::client::metrics::ClientMetrics::new(
        stats.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-addr: cannot listen on {addr}: {e}"))?;
    let router = dssmr_engine::server::http::metrics_router(Arc::new(move || metrics.render()));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(Some(stats))
}
