//! One replica process, as a StatefulSet pod runs it (`dssmr replica --config FILE`).
//!
//! [`ReplicaSettings::resolve`] turns flags, the environment and the cluster config into a
//! [`ReplicaPlan`] (which group, which ordinal, where to listen, where to keep state); every
//! error names the flag, variable or config field at fault. [`run`] starts the replica from the
//! plan (the oracle or a partition of the configured app), serves `/metrics`, `/healthz` and
//! `/readyz` on the HTTP address, and on a stop signal hands leadership over before it stops.
//!
//! Durability is the group layer's: with a data directory the log, vote and snapshots are on
//! disk (fsync before acknowledging), so a replica killed at any point restarts from them.

pub mod http;
pub(crate) mod identity;
pub(crate) mod metrics;

use crate::app::chirper::Chirper;
use crate::app::kv::Kv;
use crate::app::{Application, StateMachine};
use crate::client::Mode;
use crate::config::{AppKind, ClusterConfig};
use crate::group::Faults;
use crate::ids::group_label;
use crate::ids::{GroupId, ORACLE};
use crate::multicast::skeen::DeliveryRule;
use crate::node::{hand_over, GroupNode, Handover, RaftTuning, ReplicaSpec, Storage};
use crate::oracle::Oracle;
use crate::partition::Partition;
use crate::server::metrics::ReplicaMetrics;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the command line and environment say about the replica to run.
#[derive(Clone, Debug, Default)]
pub struct ReplicaSettings {
    /// The cluster config file.
    pub config: PathBuf,
    /// `--group` (oracle, p<N> or N).
    pub group: Option<String>,
    /// `--ordinal`.
    pub ordinal: Option<usize>,
    /// `POD_NAME` (a StatefulSet pod's name gives group and ordinal).
    pub pod_name: Option<String>,
    /// `--data-dir`: state survives restarts; `None` keeps it in memory.
    pub data_dir: Option<PathBuf>,
    /// `--listen`: the gRPC listen address, if not derived from the member address.
    pub listen: Option<String>,
    /// `--http-addr`: where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: String,
    /// `--handover-timeout`: how long a stopping leader tries to hand over.
    pub handover_timeout: Duration,
}

/// A resolved, runnable replica.
#[derive(Clone, Debug)]
pub struct ReplicaPlan {
    /// The cluster.
    pub config: ClusterConfig,
    /// The replica's group.
    pub group: GroupId,
    /// Its ordinal in the group.
    pub ordinal: usize,
    /// The address peers and clients dial.
    pub member_addr: String,
    /// The gRPC listen address.
    pub listen: String,
    /// The HTTP address.
    pub http_addr: SocketAddr,
    /// Where state is kept.
    pub storage: Storage,
    /// How long a stopping leader tries to hand over.
    pub handover_timeout: Duration,
}

impl ReplicaSettings {
    /// Loads the config and resolves the replica; errors name the flag or field at fault.
    pub fn resolve(&self) -> anyhow::Result<ReplicaPlan> {
        let config =
            ClusterConfig::load(&self.config).map_err(|e| anyhow::anyhow!("--config: {e}"))?;
        let (group, ordinal) = identity::resolve(
            &config.name,
            self.group.as_deref(),
            self.ordinal,
            self.pod_name.as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        let topology = config.topology();
        let field = if group == ORACLE {
            "oracle".to_string()
        } else {
            format!("partitions[{}]", group.0 - 1)
        };
        let members = topology.groups.get(&group).ok_or_else(|| {
            anyhow::anyhow!(
                "--group: the cluster config {} has no {} ({field}: not present; mode {:?}, {} \
                 partition(s))",
                self.config.display(),
                group_label(group),
                config.mode,
                config.partitions.len(),
            )
        })?;
        let member_addr = members.get(ordinal).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "--ordinal: {} has {} replicas ({field}.members), no ordinal {ordinal}",
                group_label(group),
                members.len()
            )
        })?;
        let listen = match &self.listen {
            Some(l) => l.clone(),
            None => default_listen(&member_addr)
                .map_err(|e| anyhow::anyhow!("{field}.members[{ordinal}]: {e}; give --listen"))?,
        };
        let http_addr: SocketAddr = self.http_addr.parse().map_err(|e| {
            anyhow::anyhow!("--http-addr: {:?} is not an IP:port ({e})", self.http_addr)
        })?;
        if self.handover_timeout.is_zero() {
            anyhow::bail!("--handover-timeout: must be positive");
        }
        let storage = match &self.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("--data-dir: cannot create {}: {e}", dir.display())
                })?;
                Storage::Disk(dir.clone())
            }
            None => Storage::Memory,
        };
        Ok(ReplicaPlan {
            config,
            group,
            ordinal,
            member_addr,
            listen,
            http_addr,
            storage,
            handover_timeout: self.handover_timeout,
        })
    }
}

/// Where a replica whose peers dial `member` listens: the address itself when its host is an
/// IP, else every interface on its port (a DNS name cannot be bound).
fn default_listen(member: &str) -> Result<String, String> {
    if member.parse::<SocketAddr>().is_ok() {
        return Ok(member.to_string());
    }
    let (_, port) = member
        .rsplit_once(':')
        .ok_or_else(|| format!("{member:?} has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{member:?} has no valid port"))?;
    Ok(format!("0.0.0.0:{port}"))
}

/// The application group `g` replicates in the cluster of `config`.
pub fn application(config: &ClusterConfig, g: GroupId) -> Box<dyn Application> {
    fn build<A: StateMachine>(app: A, config: &ClusterConfig, g: GroupId) -> Box<dyn Application> {
        let app = Arc::new(app);
        if g == ORACLE {
            let partitions: Vec<GroupId> = config
                .topology()
                .groups
                .keys()
                .copied()
                .filter(|p| *p != ORACLE)
                .collect();
            Box::new(Oracle::with_initial(
                app,
                partitions,
                config.initial_placement(),
            ))
        } else {
            Box::new(Partition::new(g, app))
        }
    }
    match config.app {
        AppKind::Kv => build(Kv, config, g),
        AppKind::Chirper => build(Chirper::for_cluster(config), config, g),
    }
}

/// Runs the replica of `plan` until `stop` resolves (it names the signal), then hands
/// leadership over (if it leads) and stops.
pub async fn run(
    plan: ReplicaPlan,
    stop: impl Future<Output = &'static str>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(ReplicaMetrics::new(plan.group, plan.ordinal));
    let http = tokio::net::TcpListener::bind(plan.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("--http-addr: cannot listen on {}: {e}", plan.http_addr))?;
    let spec = ReplicaSpec {
        group: plan.group,
        ordinal: plan.ordinal,
        topology: plan.config.topology(),
        storage: plan.storage.clone(),
        tuning: RaftTuning::default(),
        app: application(&plan.config, plan.group),
        faults: Arc::new(Faults::default()),
        listener: None,
        listen: Some(plan.listen.clone()),
        latency: Some(metrics.latency()),
        delivery_rule: DeliveryRule::Skeen,
        services: Some(crate::admin::replica_services()),
    };
    let node = GroupNode::start(spec).await?;
    metrics.watch(&node);
    let probe = Arc::new(http::Probe {
        metrics: metrics.clone(),
        raft: node.raft().clone(),
        node_id: node.node_id(),
    });
    let http_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(http, http::router(probe)).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    let storage = match &plan.storage {
        Storage::Memory => "memory (state is lost when the process stops)".to_string(),
        Storage::Disk(dir) => dir.display().to_string(),
    };
    let mode = match plan.config.mode {
        Mode::Dssmr => "DS-SMR",
        Mode::Ssmr => "S-SMR",
    };
    tracing::info!(
        cluster = %plan.config.name, group = %group_label(plan.group), ordinal = plan.ordinal,
        member = %plan.member_addr, listen = %plan.listen, http = %plan.http_addr,
        %storage, "replica started"
    );
    eprintln!(
        "replica {} {}/{} of {} ({mode}, {}) serving gRPC on {} and HTTP on {}; state: {storage}",
        plan.config.name,
        group_label(plan.group),
        plan.ordinal,
        plan.member_addr,
        plan.config.app,
        plan.listen,
        plan.http_addr,
    );

    let signal = stop.await;
    let started = Instant::now();
    match hand_over(&node, plan.handover_timeout).await {
        Ok(Handover::NotLeader) => eprintln!("{signal}: stopping (not the leader)"),
        Ok(Handover::HandedTo { leader, elapsed }) => eprintln!(
            "{signal}: leadership handed to replica {} in {} ms; stopping",
            leader - 1,
            elapsed.as_millis()
        ),
        Err(e) => eprintln!("{signal}: handover failed ({e}); stopping, the group re-elects"),
    }
    http_task.abort();
    node.crash().await;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "replica stopped"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_follow_the_member_address() {
        assert_eq!(default_listen("127.0.0.1:7000").unwrap(), "127.0.0.1:7000");
        assert_eq!(
            default_listen("demo-p1-0.demo-p1.default.svc:7000").unwrap(),
            "0.0.0.0:7000"
        );
        assert!(default_listen("host").is_err());
        assert!(default_listen("host:x").is_err());
    }
}
