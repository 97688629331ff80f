//! `dssmr admin`: status, add-, drain- and remove-partition through the oracle's admin
//! service, printed as JSON. This module loads the config and waits for a drain;
//! [`dssmr_api::admin`] talks to the cluster.

use clap::{Args, Subcommand};
use dssmr_api::admin::{partition_json, status_json, AdminConnection};
use dssmr_api::proto::PartitionStatus;
use dssmr_engine::config::ClusterConfig;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct AdminArgs {
    /// The cluster config (as `dssmr local --write-config` writes it).
    #[arg(long)]
    config: PathBuf,
    #[command(subcommand)]
    op: AdminOpArg,
}

#[derive(Subcommand)]
enum AdminOpArg {
    /// Every group's members (role, term, commit and applied index), its leader, and the
    /// oracle's partitions (state, variables).
    Status,
    /// Let the oracle place new variables in PARTITION (1-based) too, and publish its
    /// members to every replica and client of the cluster (nothing restarts).
    AddPartition {
        partition: u32,
        /// Its members' addresses, in ordinal order (default: the ones --config lists).
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Stop placing new variables in PARTITION and move all of its variables out.
    DrainPartition {
        partition: u32,
        /// Wait until the partition is empty (at most this long; 0s: do not wait).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Take drained PARTITION out of the topology: replicas and clients stop using it, and
    /// its replicas may then be stopped.
    RemovePartition { partition: u32 },
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let config = ClusterConfig::load(&args.config).map_err(|e| anyhow::anyhow!("--config: {e}"))?;
    let conn = AdminConnection::new(&config)?;
    let out = match args.op {
        AdminOpArg::Status => status_json(&conn.status().await?),
        AdminOpArg::AddPartition {
            partition,
            mut members,
        } => {
            if members.is_empty() {
                members = partition
                    .checked_sub(1)
                    .and_then(|i| config.partitions.get(i as usize))
                    .map(|g| g.members.clone())
                    .unwrap_or_default();
            }
            partition_json(&conn.add_partition(partition, &members).await?)
        }
        AdminOpArg::RemovePartition { partition } => {
            partition_json(&conn.remove_partition(partition).await?)
        }
        AdminOpArg::DrainPartition { partition, wait } => {
            partition_json(&drain(&conn, partition, wait).await?)
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Drains `partition`, then polls its status until it is drained or `wait` is over.
async fn drain(
    conn: &AdminConnection,
    partition: u32,
    wait: Duration,
) -> anyhow::Result<PartitionStatus> {
    let deadline = std::time::Instant::now() + wait;
    let mut status = conn.drain_partition(partition).await?;
    while status.state != "drained" && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(p) = conn
            .status()
            .await?
            .partitions
            .into_iter()
            .find(|p| p.partition == partition)
        {
            status = p;
        }
    }
    if !wait.is_zero() && status.state != "drained" {
        let why = if status.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", status.note)
        };
        anyhow::bail!(
            "--wait: partition {partition} still holds {} variables after {wait:?}{why}",
            status.variables
        );
    }
    Ok(status)
}
