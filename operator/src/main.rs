//! `dssmr-operator`: the command line of the operator for `DSSMRCluster` resources.
//!
//! `crd` writes the CustomResourceDefinition into `crds/`; `render -f cluster.yaml` prints the
//! objects the operator builds for a cluster; `run` reconciles clusters.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Kubernetes operator for DSSMRCluster resources (dssmr.io/v1alpha1).
#[derive(Parser)]
#[command(name = "dssmr-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: reconcile every DSSMRCluster of the cluster the kubeconfig (or the
    /// in-cluster service account) points at, until SIGTERM.
    Run {
        /// Where the operator's /metrics and /healthz are served.
        #[arg(
            long,
            env = "DSSMR_OPERATOR_METRICS_ADDR",
            default_value = "0.0.0.0:8080"
        )]
        metrics_addr: std::net::SocketAddr,
        /// The replica image when a spec names none.
        #[arg(long, env = "DSSMR_REPLICA_IMAGE", default_value = dssmr_operator::validate::DEFAULT_IMAGE)]
        replica_image: String,
        /// Reconcile only the DSSMRClusters of this namespace (and watch only its objects), as
        /// the chart's namespace-scoped RBAC allows; default: every namespace.
        #[arg(long, env = "DSSMR_WATCH_NAMESPACE")]
        watch_namespace: Option<String>,
    },
    /// Write the CustomResourceDefinition as YAML into DIR (default `crds/`).
    Crd {
        /// Target directory (created if missing).
        #[arg(long, default_value = "crds")]
        dir: PathBuf,
    },
    /// Print the objects (ConfigMap, and per group a headless Service, a StatefulSet and a
    /// PodDisruptionBudget) the operator would apply for the DSSMRCluster in FILE.
    Render {
        /// A DSSMRCluster manifest (YAML); `-` reads stdin.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The replica image when the spec names none.
        #[arg(long, default_value = dssmr_operator::validate::DEFAULT_IMAGE)]
        replica_image: String,
    },
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn tracing_subscriber_init() {
    dssmr_api::telemetry::init_with("info");
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            metrics_addr,
            replica_image,
            watch_namespace,
        } => {
            let watch_namespace = watch_namespace.filter(|n| !n.is_empty());
            if let Some(ns) = &watch_namespace {
                dssmr_api::config::validate_name(ns)
                    .map_err(|e| anyhow::anyhow!("--watch-namespace: {e}"))?;
            }
            tracing_subscriber_init();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let client = kube::Client::try_default().await.map_err(|e| {
                    anyhow::anyhow!("no Kubernetes API (kubeconfig or in-cluster): {e}")
                })?;
                let ctx = std::sync::Arc::new(dssmr_operator::controller::Context::new(
                    client,
                    replica_image,
                ));
                let listener = tokio::net::TcpListener::bind(metrics_addr)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("--metrics-addr: cannot listen on {metrics_addr}: {e}")
                    })?;
                let metrics = ctx.metrics.clone();
                let router = axum::Router::new()
                    .route(
                        "/metrics",
                        axum::routing::get(move || {
                            let metrics = metrics.clone();
                            async move { metrics.render() }
                        }),
                    )
                    .route("/healthz", axum::routing::get(|| async { "ok\n" }));
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router).await {
                        tracing::error!(error = %e, "metrics server stopped");
                    }
                });
                dssmr_operator::controller::run(ctx, watch_namespace).await;
                anyhow::Ok(())
            })?;
        }
        Command::Crd { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("--dir: cannot create {}: {e}", dir.display()))?;
            let path = dir.join("dssmr.io_dssmrclusters.yaml");
            std::fs::write(&path, dssmr_operator::crd::crd_yaml())
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
        Command::Render {
            file,
            replica_image,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("-f: cannot read {}: {e}", file.display()))?
            };
            print!("{}", dssmr_operator::render(&text, &replica_image)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
