//! What the demo and the benchmarks write: the `--json` file ([`JsonOutput`]), the
//! `--history` file, the one-line run summary, and the run flags `dssmr bench chirper` and
//! `dssmr bench kv` share ([`RunOutputArgs`]: `--cluster`, `--metrics-addr`, `--json`,
//! `--history`, `--quiet`).
//!
//! Files are created before the runs, so a bad path fails before minutes of load; errors name
//! the flag. This module writes files and prints; it runs no load.

use crate::metrics_server::serve_client_metrics;
use clap::Args;
use dssmr_bench::BenchHistory;
use dssmr_check::history::History;
use dssmr_engine::client::proxy::ProxyStats;
use dssmr_engine::config::{AppKind, ClusterConfig};
use serde::Serialize;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A `--json` file, created before the runs (so a bad path fails before minutes of load)
/// and written after them.
pub struct JsonOutput {
    path: PathBuf,
}

impl JsonOutput {
    /// Creates (truncates) the file at `path`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("--json: cannot write {}: {e}", path.display()))?;
        Ok(JsonOutput {
            path: path.to_path_buf(),
        })
    }

    /// With a `path`, the file created.
    pub fn open(path: Option<&Path>) -> anyhow::Result<Option<Self>> {
        path.map(Self::create).transpose()
    }

    /// Writes `records` as pretty JSON.
    pub fn write(&self, records: &impl Serialize) -> anyhow::Result<()> {
        std::fs::write(&self.path, serde_json::to_string_pretty(records)?)
            .map_err(|e| anyhow::anyhow!("--json: cannot write {}: {e}", self.path.display()))
    }
}

/// What a run's throughput line says.
pub fn summary(label: impl Display, cps: f64, p50_ms: f64, moves_per_s: f64) -> String {
    format!("{label}: {cps:.0} commands/s, p50 {p50_ms:.1} ms, {moves_per_s:.0} moves/s")
}

/// Where a closed-loop benchmark runs and what it writes besides its table. The help texts
/// here are `dssmr bench kv`'s; `dssmr bench chirper` words `--cluster`, `--json`,
/// `--history` and `--quiet` for its many runs (`mut_arg`s on its flags).
#[derive(Args)]
pub struct RunOutputArgs {
    /// Load a running cluster (its config file, as `dssmr local --write-config` writes it or
    /// the operator's ConfigMap holds it) instead of starting a local one; --mode,
    /// --partitions and --replicas then come from the config.
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// Serve the client-side metrics (cache hits and misses, consults, moves, retries, S-SMR
    /// fallbacks) at http://ADDR/metrics while the benchmark runs.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Write the record (with per-second series) as a JSON array to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Record every operation, the setup's puts included, to this JSONL file.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

impl RunOutputArgs {
    /// Whether to show progress bars.
    pub fn progress(&self) -> bool {
        !self.quiet
    }

    /// The `--cluster` file, if given.
    pub fn cluster_path(&self) -> Option<&Path> {
        self.cluster.as_deref()
    }

    /// The `--history` file, if given.
    pub fn history_path(&self) -> Option<&Path> {
        self.history.as_deref()
    }

    /// The `--json` file, created now.
    pub fn json_output(&self) -> anyhow::Result<Option<JsonOutput>> {
        JsonOutput::open(self.json.as_deref())
    }

    /// With `--metrics-addr`, the counters the proxies share, served from now on.
    pub async fn client_stats(&self) -> anyhow::Result<Option<Arc<ProxyStats>>> {
        serve_client_metrics(self.metrics_addr).await
    }

    /// The config of the running cluster `--cluster` names, checked to run `app`.
    pub fn running_cluster(&self, app: AppKind) -> anyhow::Result<Option<ClusterConfig>> {
        let Some(path) = &self.cluster else {
            return Ok(None);
        };
        let config = ClusterConfig::load(path).map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
        if config.app != app {
            anyhow::bail!(
                "--cluster: {} runs app {}, not {app}",
                path.display(),
                config.app
            );
        }
        Ok(Some(config))
    }

    /// The `--history` recorder, if asked for (the file is created now).
    pub fn open_history(&self) -> anyhow::Result<Option<BenchHistory>> {
        self.history
            .as_deref()
            .map(|p| {
                History::streaming_to(p)
                    .map(BenchHistory::new)
                    .map_err(|e| anyhow::Error::new(e).context("--history"))
            })
            .transpose()
    }

    /// Flushes the `--history` file and says where it is.
    pub fn close_history(&self, history: Option<&BenchHistory>) -> anyhow::Result<()> {
        let (Some(history), Some(path)) = (history, &self.history) else {
            return Ok(());
        };
        history
            .flush()
            .map_err(|e| anyhow::Error::new(e).context("--history"))?;
        println!("history written to {}", path.display());
        Ok(())
    }
}
