//! `dssmr-operator`: the command line of the operator for `DSSMRCluster` resources.
//!
//! `crd` writes the CustomResourceDefinition into `crds/`; `render -f cluster.yaml` prints the
//! objects the operator builds for a cluster; `run` reconciles clusters.

use clap::{Parser, Subcommand};
use dssmr_operator::leader::{Election, ElectionConfig};
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
        /// Elect a leader among the operator processes through a Lease: only the leader
        /// reconciles, the others stand by (and serve /metrics, /healthz and /sd/*).
        #[arg(long, env = "DSSMR_LEADER_ELECTION")]
        leader_election: bool,
        /// Namespace of the Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE")]
        leader_election_namespace: Option<String>,
        /// Name of the Lease.
        #[arg(
            long,
            env = "DSSMR_LEADER_ELECTION_LEASE",
            default_value = "dssmr-operator"
        )]
        leader_election_lease: String,
        /// This process's identity in the Lease (default: the host name, which is the pod's
        /// name in a pod).
        #[arg(long, env = "POD_NAME")]
        leader_election_id: Option<String>,
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

/// The election's settings from the flags; a missing or invalid one is named.
fn election_config(
    namespace: Option<String>,
    lease: String,
    id: Option<String>,
) -> anyhow::Result<ElectionConfig> {
    let namespace = namespace.filter(|n| !n.is_empty()).ok_or_else(|| {
        anyhow::anyhow!(
            "--leader-election-namespace (env POD_NAMESPACE): required with --leader-election"
        )
    })?;
    dssmr_api::config::validate_name(&namespace)
        .map_err(|e| anyhow::anyhow!("--leader-election-namespace: {e}"))?;
    dssmr_api::config::validate_name(&lease)
        .map_err(|e| anyhow::anyhow!("--leader-election-lease: {e}"))?;
    let id = match id.filter(|i| !i.is_empty()) {
        Some(id) => id,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("--leader-election-id (env POD_NAME): none given and no host name")
            })?,
    };
    Ok(ElectionConfig::new(namespace, lease, id))
}

/// SIGTERM or SIGINT.
async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `/sd/replicas`, `/sd/clients`: the targets as JSON, or 503 with the API's error.
async fn service_discovery(
    client: &kube::Client,
    namespace: Option<&str>,
    kind: dssmr_operator::discovery::Targets,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match dssmr_operator::discovery::list(client, namespace, kind).await {
        Ok(v) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            v.to_string(),
        )
            .into_response(),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot list pods: {e}\n"),
        )
            .into_response(),
    }
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
            leader_election,
            leader_election_namespace,
            leader_election_lease,
            leader_election_id,
        } => {
            let watch_namespace = watch_namespace.filter(|n| !n.is_empty());
            if let Some(ns) = &watch_namespace {
                dssmr_api::config::validate_name(ns)
                    .map_err(|e| anyhow::anyhow!("--watch-namespace: {e}"))?;
            }
            let election = leader_election
                .then(|| {
                    election_config(
                        leader_election_namespace,
                        leader_election_lease,
                        leader_election_id,
                    )
                })
                .transpose()?;
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
                let sd = |kind: dssmr_operator::discovery::Targets| {
                    let client = ctx.client.clone();
                    let ns = watch_namespace.clone();
                    move || {
                        let client = client.clone();
                        let ns = ns.clone();
                        async move { service_discovery(&client, ns.as_deref(), kind).await }
                    }
                };
                let router = axum::Router::new()
                    .route(
                        "/metrics",
                        axum::routing::get(move || {
                            let metrics = metrics.clone();
                            async move { metrics.render() }
                        }),
                    )
                    .route("/healthz", axum::routing::get(|| async { "ok\n" }))
                    .route(
                        "/sd/replicas",
                        axum::routing::get(sd(dssmr_operator::discovery::Targets::Replicas)),
                    )
                    .route(
                        "/sd/clients",
                        axum::routing::get(sd(dssmr_operator::discovery::Targets::Clients)),
                    );
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router).await {
                        tracing::error!(error = %e, "metrics server stopped");
                    }
                });
                let Some(config) = election else {
                    ctx.metrics.set_leader(true);
                    dssmr_operator::controller::run(ctx, watch_namespace).await;
                    return anyhow::Ok(());
                };
                let election = Election::new(ctx.client.clone(), config);
                tracing::info!("standing by until this operator holds the leader lease");
                tokio::select! {
                    () = election.acquire() => {}
                    () = terminated() => return anyhow::Ok(()),
                }
                ctx.metrics.set_leader(true);
                let metrics = ctx.metrics.clone();
                tokio::select! {
                    () = dssmr_operator::controller::run(ctx, watch_namespace) => {
                        metrics.set_leader(false);
                        election.step_down().await;
                        anyhow::Ok(())
                    }
                    lost = election.hold() => {
                        metrics.set_leader(false);
                        // Exit: Kubernetes restarts the process as a fresh candidate.
                        Err(anyhow::anyhow!("leadership lost, stopping: {lost}"))
                    }
                }
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
