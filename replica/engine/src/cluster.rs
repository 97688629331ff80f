//! A whole cluster of groups running in this process, every replica on its own 127.0.0.1 port
//! with real gRPC between them: used by tests, `dssmr bench` and `dssmr demo`.
//!
//! Each replica runs on a tokio runtime of its own, like a process: crashing it shuts that
//! runtime down, which ends every task of the replica at once (Raft, coordinator, server and
//! every open connection), so peers see it vanish as they would a killed process. With disk
//! storage a restarted replica recovers from its data directory. Links are cut through the
//! shared [`Faults`] table.

use crate::app::recorder::{Recorder, Recording};
use crate::app::{Application, StateMachine};
use crate::client::proxy::{Connections, Mode};
use crate::group::{Faults, GroupClient, ReadRule};
use crate::ids::GroupId;
use crate::ids::ORACLE;
use crate::multicast::skeen::DeliveryRule;
use crate::node::{bind_local, GroupNode, RaftTuning, ReplicaSpec, Storage};
use crate::oracle::Oracle;
use crate::partition::{Partition, PartitionRule};
use crate::route::Sender;
use crate::topology::Topology;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a local cluster could not start, restart a replica, or hand out a client.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// Binding 127.0.0.1 listeners or building a replica's runtime failed.
    #[error("local cluster: {0}")]
    Io(#[from] std::io::Error),
    /// A replica failed to start.
    #[error("replica {ordinal} of group {group}: {source}")]
    Replica {
        /// Its group.
        group: GroupId,
        /// Its ordinal.
        ordinal: usize,
        /// Why.
        #[source]
        source: crate::node::NodeError,
    },
    /// A replica's start task panicked or was cancelled.
    #[error("replica {ordinal} of group {group}: start task failed: {source}")]
    Task {
        /// Its group.
        group: GroupId,
        /// Its ordinal.
        ordinal: usize,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A client of the cluster's groups could not be made.
    #[error(transparent)]
    Client(#[from] crate::group::ClientError),
    /// The cluster has no such group.
    #[error("no group {0}")]
    NoGroup(GroupId),
    /// A group elected no leader in time.
    #[error("group {group} elected no leader within {timeout:?}")]
    NoLeader {
        /// The group.
        group: GroupId,
        /// How long it was given.
        timeout: Duration,
    },
    /// Every replica of a group is down.
    #[error("group {0} has no running replica")]
    NoReplica(GroupId),
}

/// Result alias of this module.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// Builds the application replicated by each group.
pub type AppFactory = Arc<dyn Fn(GroupId) -> Box<dyn Application> + Send + Sync>;

/// The applications of a DS-SMR cluster running `app` on partitions `1..=k`: the oracle in
/// group [`ORACLE`], a [`Partition`] in every other group.
pub fn engine_apps<A: StateMachine>(app: Arc<A>, partitions: usize) -> AppFactory {
    engine_apps_with_rule(app, partitions, PartitionRule::Correct)
}

/// [`engine_apps`] for a cluster run in `mode` (S-SMR: partitions that take creates and
/// deletes without the oracle, which such a cluster does not run).
pub fn engine_apps_in<A: StateMachine>(app: Arc<A>, partitions: usize, mode: Mode) -> AppFactory {
    apps_of(app, partitions, mode, PartitionRule::Correct)
}

/// [`engine_apps`] with partitions following `rule` (mutation tests of the checkers).
pub fn engine_apps_with_rule<A: StateMachine>(
    app: Arc<A>,
    partitions: usize,
    rule: PartitionRule,
) -> AppFactory {
    apps_of(app, partitions, Mode::Dssmr, rule)
}

/// The oracle and partitions `1..=partitions` of a cluster run in `mode`, the partitions
/// following `rule`.
fn apps_of<A: StateMachine>(
    app: Arc<A>,
    partitions: usize,
    mode: Mode,
    rule: PartitionRule,
) -> AppFactory {
    let parts: Vec<GroupId> = (1..=partitions as u32).map(GroupId).collect();
    Arc::new(move |g| -> Box<dyn Application> {
        if g == ORACLE {
            Box::new(Oracle::new(app.clone(), parts.clone()))
        } else {
            Box::new(
                Partition::new(g, app.clone(), &parts)
                    .in_mode(mode)
                    .with_rule(rule),
            )
        }
    })
}

/// How to build a local cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    /// Number of groups (ids 1..=groups), the partitions of an engine cluster.
    pub groups: usize,
    /// Whether to run the oracle as group 0 as well.
    pub oracle: bool,
    /// The application of each group; `None`: a [`Recorder`].
    pub apps: Option<AppFactory>,
    /// Replicas per group (2f+1).
    pub replicas: usize,
    /// `None`: memory storage; `Some(root)`: each replica persists under `root/g<G>-r<R>`.
    pub data_root: Option<PathBuf>,
    /// Raft settings.
    pub tuning: RaftTuning,
    /// Whether replicas record full delivery sequences.
    pub recording: Recording,
    /// Delivery rule (mutation tests only change it).
    pub delivery_rule: DeliveryRule,
    /// How leaders answer read-only commands (benchmarks and mutation tests change it).
    pub read_rule: ReadRule,
    /// Worker threads of each replica's runtime.
    pub threads_per_replica: usize,
    /// The cluster's name; `None`: a name of its own (`local-` and a random suffix), so that
    /// two local clusters never take each other's traffic when a port is reused.
    pub name: Option<String>,
}

impl ClusterOptions {
    /// A cluster running `app` over `partitions` partitions in `mode` (DS-SMR adds the oracle).
    pub fn engine<A: StateMachine>(app: Arc<A>, partitions: usize, mode: Mode) -> Self {
        ClusterOptions {
            groups: partitions,
            oracle: mode == Mode::Dssmr,
            apps: Some(engine_apps_in(app, partitions, mode)),
            recording: Recording::CountOnly,
            ..Default::default()
        }
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            groups: 2,
            oracle: false,
            apps: None,
            replicas: 3,
            data_root: None,
            tuning: RaftTuning::default(),
            recording: Recording::Full,
            delivery_rule: DeliveryRule::Skeen,
            read_rule: ReadRule::ReadIndex,
            threads_per_replica: 1,
            name: None,
        }
    }
}

/// A running local cluster.
pub struct LocalCluster {
    options: ClusterOptions,
    topology: Topology,
    faults: Arc<Faults>,
    nodes: BTreeMap<(GroupId, usize), Option<Replica>>,
    /// The highest group number this cluster ever ran.
    highest: u32,
}

/// A replica and the runtime it runs on.
struct Replica {
    node: GroupNode,
    runtime: tokio::runtime::Runtime,
}

impl LocalCluster {
    /// Starts every replica of every group and waits until each group has a leader.
    pub async fn start(options: ClusterOptions) -> Result<Self> {
        let cluster = options
            .name
            .clone()
            .unwrap_or_else(|| format!("local-{:08x}", rand::random::<u32>()));
        let mut topology = Topology {
            cluster,
            ..Topology::default()
        };
        let mut listeners = BTreeMap::new();
        let first = if options.oracle { 0 } else { 1 };
        for g in first..=options.groups as u32 {
            let bound = bind_local(options.replicas)?;
            let mut addrs = Vec::new();
            for (r, (l, a)) in bound.into_iter().enumerate() {
                addrs.push(a.to_string());
                listeners.insert((GroupId(g), r), l);
            }
            topology.groups.insert(GroupId(g), addrs);
        }
        let highest = topology.groups.keys().map(|g| g.0).max().unwrap_or(0);
        let mut cluster = LocalCluster {
            options,
            topology,
            faults: Arc::new(Faults::default()),
            nodes: BTreeMap::new(),
            highest,
        };
        for ((g, r), l) in listeners {
            let node = cluster.spawn(g, r, Some(l)).await?;
            cluster.nodes.insert((g, r), Some(node));
        }
        cluster.wait_for_leaders(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    async fn spawn(
        &self,
        group: GroupId,
        ordinal: usize,
        listener: Option<std::net::TcpListener>,
    ) -> Result<Replica> {
        let storage = match &self.options.data_root {
            None => Storage::Memory,
            Some(root) => Storage::Disk(root.join(format!("g{}-r{}", group.0, ordinal))),
        };
        let app: Box<dyn Application> = match &self.options.apps {
            Some(make) => make(group),
            None => Box::new(Recorder::new(self.options.recording)),
        };
        let spec = ReplicaSpec {
            group,
            ordinal,
            topology: self.topology.clone(),
            storage,
            tuning: self.options.tuning.clone(),
            app,
            faults: self.faults.clone(),
            listener,
            listen: None,
            latency: None,
            delivery_rule: self.options.delivery_rule,
            read_rule: self.options.read_rule,
            services: Some(crate::admin::replica_services()),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.options.threads_per_replica.max(1))
            .thread_name(format!("g{}-r{}", group.0, ordinal))
            .enable_all()
            .build()?;
        let node = runtime
            .spawn(GroupNode::start(spec))
            .await
            .map_err(|source| ClusterError::Task {
                group,
                ordinal,
                source,
            })?
            .map_err(|source| ClusterError::Replica {
                group,
                ordinal,
                source,
            })?;
        Ok(Replica { node, runtime })
    }

    /// The member addresses of every group.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Clients of every group, for client proxies.
    pub fn connections(&self) -> Result<Connections> {
        Ok(Connections::new(&self.topology)?)
    }

    /// The link-fault table shared by every replica.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Group ids, in order.
    pub fn groups(&self) -> Vec<GroupId> {
        self.topology.groups.keys().copied().collect()
    }

    /// A client of group `g`.
    pub fn client(&self, g: GroupId) -> Result<GroupClient> {
        let addrs = self
            .topology
            .groups
            .get(&g)
            .ok_or(ClusterError::NoGroup(g))?;
        Ok(GroupClient::new(
            &self.topology.cluster,
            g,
            addrs,
            Sender::Client,
        )?)
    }

    /// The running replica `ordinal` of `g`, if it is up.
    pub fn node(&self, g: GroupId, ordinal: usize) -> Option<&GroupNode> {
        self.nodes
            .get(&(g, ordinal))
            .and_then(|n| n.as_ref())
            .map(|r| &r.node)
    }

    /// Every running replica.
    pub fn running(&self) -> impl Iterator<Item = &GroupNode> {
        self.nodes.values().flatten().map(|r| &r.node)
    }

    /// The ordinal of the replica of `g` that currently leads, if any is up and leading.
    pub fn leader_of(&self, g: GroupId) -> Option<usize> {
        (0..self.options.replicas).find(|r| self.node(g, *r).is_some_and(|n| n.is_leader()))
    }

    /// Waits until every group has a leader.
    pub async fn wait_for_leaders(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for g in self.groups() {
            loop {
                if self.leader_of(g).is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(ClusterError::NoLeader { group: g, timeout });
                }
                let mut watched = None;
                for r in 0..self.options.replicas {
                    if let Some(n) = self.node(g, r) {
                        watched = Some(n.raft().metrics());
                        break;
                    }
                }
                match watched {
                    Some(mut rx) => {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
                    }
                    None => return Err(ClusterError::NoReplica(g)),
                }
            }
        }
        Ok(())
    }

    /// Crashes replica `ordinal` of `g` (no-op if it is down).
    pub async fn crash(&mut self, g: GroupId, ordinal: usize) {
        if let Some(replica) = self.nodes.get_mut(&(g, ordinal)).and_then(|n| n.take()) {
            let Replica { node, runtime } = replica;
            drop(node);
            // Waits (off the async threads) until every task of the replica has been dropped,
            // so its files and port are free for a restart.
            let _ = tokio::task::spawn_blocking(move || {
                runtime.shutdown_timeout(Duration::from_secs(2))
            })
            .await;
        }
    }

    /// Hands the leadership of `g` over to an up-to-date follower (Raft's TimeoutNow), as a
    /// leader stopping gracefully does, then restarts the old leader (a replica that handed
    /// over no longer leads until it restarts). Returns the old leader's ordinal and whether
    /// another replica took over within `timeout`; `None` when `g` had no leader.
    pub async fn hand_over(
        &mut self,
        g: GroupId,
        timeout: Duration,
    ) -> Result<Option<(usize, bool)>> {
        let Some(leader) = self.leader_of(g) else {
            return Ok(None);
        };
        let handed = match self.node(g, leader) {
            Some(node) => matches!(
                crate::node::hand_over(node, timeout).await,
                Ok(crate::node::Handover::HandedTo { .. })
            ),
            None => false,
        };
        self.crash(g, leader).await;
        self.restart(g, leader).await?;
        Ok(Some((leader, handed)))
    }

    /// Restarts replica `ordinal` of `g` on its old address (and data directory).
    pub async fn restart(&mut self, g: GroupId, ordinal: usize) -> Result<()> {
        if self.node(g, ordinal).is_some() {
            return Ok(());
        }
        let node = self.spawn(g, ordinal, None).await?;
        self.nodes.insert((g, ordinal), Some(node));
        Ok(())
    }

    /// Starts a new partition (the next group id never used in this cluster: a removed
    /// partition's number is not handed out again) with its replicas, as an operator scaling
    /// out does, and waits for its leader; returns it and its members' addresses. The running
    /// replicas are left alone: they and the clients learn of it once the oracle adds it
    /// (`AddPartition` with these members).
    pub async fn add_partition(&mut self) -> Result<(GroupId, Vec<String>)> {
        let g = GroupId(self.highest + 1);
        self.add_partition_as(g).await
    }

    /// As [`LocalCluster::add_partition`], as partition `g`, on empty storage. Nothing stops
    /// `g` from being a number the cluster used before: tests show what the cluster does
    /// with such a partition.
    pub async fn add_partition_as(&mut self, g: GroupId) -> Result<(GroupId, Vec<String>)> {
        let bound = bind_local(self.options.replicas)?;
        let members: Vec<String> = bound.iter().map(|(_, a)| a.to_string()).collect();
        self.topology.groups.insert(g, members.clone());
        self.highest = self.highest.max(g.0);
        for (r, (l, _)) in bound.into_iter().enumerate() {
            let node = self.spawn(g, r, Some(l)).await?;
            self.nodes.insert((g, r), Some(node));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.leader_of(g).is_none() {
            if Instant::now() > deadline {
                return Err(ClusterError::NoLeader {
                    group: g,
                    timeout: Duration::from_secs(30),
                });
            }
            let Some(mut rx) = self.node(g, 0).map(|n| n.raft().metrics()) else {
                return Err(ClusterError::NoReplica(g));
            };
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
        }
        Ok((g, members))
    }

    /// Stops every replica of partition `g` and deletes their storage, as an operator
    /// deleting a removed partition's StatefulSet and volumes does; `g` leaves this
    /// cluster's topology (its number is still not handed out again by
    /// [`LocalCluster::add_partition`]).
    pub async fn destroy_partition(&mut self, g: GroupId) -> Result<()> {
        for r in 0..self.options.replicas {
            self.crash(g, r).await;
            self.nodes.remove(&(g, r));
            if let Some(root) = &self.options.data_root {
                let dir = root.join(format!("g{}-r{}", g.0, r));
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.topology.groups.remove(&g);
        Ok(())
    }

    /// Replicas per group.
    pub fn replicas(&self) -> usize {
        self.options.replicas
    }

    /// Crashes every replica.
    pub async fn shutdown(mut self) {
        let keys: Vec<_> = self.nodes.keys().copied().collect();
        for (g, r) in keys {
            self.crash(g, r).await;
        }
    }
}
