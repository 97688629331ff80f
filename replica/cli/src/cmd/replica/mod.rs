//! `dssmr replica`: one replica of one group, as a StatefulSet pod runs it. This module maps
//! flags (and their environment variables) to [`ReplicaSettings`], which [`plan`] resolves
//! into the engine's plan (with [`identity`] for the group and ordinal), installs the signal
//! handlers, and hands off to [`dssmr_engine::server::run`], which serves.

mod identity;
mod plan;

use crate::signals::Signals;
use clap::Args;
use dssmr_engine::server::ServerError;
use plan::ReplicaSettings;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct ReplicaArgs {
    /// The cluster config (YAML; see `dssmr local --help` for the schema).
    #[arg(long, env = "DSSMR_CONFIG")]
    config: PathBuf,
    /// The group: oracle, or a partition as p1, p2, ... (default: from POD_NAME).
    #[arg(long, env = "DSSMR_GROUP")]
    group: Option<String>,
    /// The replica's ordinal in its group, 0-based (default: the POD_NAME suffix).
    #[arg(long, env = "DSSMR_ORDINAL")]
    ordinal: Option<usize>,
    /// Keep log, vote and snapshots here (created if missing); without it state is in memory
    /// and lost when the process stops.
    #[arg(long, env = "DSSMR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (default: the replica's member address if it is an IP:port,
    /// else 0.0.0.0 on its port).
    #[arg(long, env = "DSSMR_LISTEN")]
    listen: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "DSSMR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: String,
    /// How long a stopping leader tries to hand leadership to an up-to-date follower.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    handover_timeout: Duration,
}

impl ReplicaArgs {
    fn settings(&self) -> ReplicaSettings {
        ReplicaSettings {
            config: self.config.clone(),
            group: self.group.clone(),
            ordinal: self.ordinal,
            pod_name: std::env::var("POD_NAME").ok(),
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
            http_addr: self.http_addr.clone(),
            handover_timeout: self.handover_timeout,
        }
    }
}

pub async fn run(args: ReplicaArgs) -> anyhow::Result<()> {
    let plan = args.settings().resolve()?;
    let mut stop = Signals::install()?;
    dssmr_engine::server::run(plan, async move { stop.wait().await })
        .await
        .map_err(|e| match e {
            ServerError::Http { .. } => anyhow::anyhow!("--http-addr: {e}"),
            ServerError::Node(e) => e.into(),
        })
}
