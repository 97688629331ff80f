//! One replica process, as a StatefulSet pod runs it (`dssmr replica --config FILE`).
//!
//! A [`ReplicaPlan`] says which group, which ordinal, where to listen and where to keep state
//! (the `dssmr replica` command builds it from flags, the environment and the cluster
//! config). [`run`] starts the replica from the plan (the oracle or a partition of the configured app), serves `/metrics`, `/healthz` and
//! `/readyz` on the HTTP address, and on a stop signal hands leadership over before it stops.
//!
//! Durability is the group layer's: with a data directory the log, vote and snapshots are on
//! disk (fsync before acknowledging), so a replica killed at any point restarts from them.

pub mod http;
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
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The HTTP address (metrics, probes) cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The replica (Raft, storage, gRPC server) failed to start.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
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
            Box::new(Partition::new(g, app, &config.initial_placement()).in_mode(config.mode))
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
) -> Result<(), ServerError> {
    let metrics = Arc::new(ReplicaMetrics::new(plan.group, plan.ordinal));
    let http = tokio::net::TcpListener::bind(plan.http_addr)
        .await
        .map_err(|source| ServerError::Http {
            addr: plan.http_addr,
            source,
        })?;
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
        read_rule: crate::group::ReadRule::default(),
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
