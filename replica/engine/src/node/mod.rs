//! One running replica of one group: Raft, storage, state machine, gRPC server, coordinator.
//! It does not know the admin service or the drainer: the replica server adds them through
//! [`ReplicaServices`].
//!
//! [`GroupNode::start`] assembles the pieces the way every other module expects them and
//! bootstraps the group (the replica with ordinal 0 initialises an empty group with all
//! members). [`GroupNode::crash`] stops everything abruptly, as a killed process: with disk
//! storage a new `start` on the same directory recovers vote, log and state.

pub(crate) mod handover;
pub(crate) mod service;

pub(crate) use handover::{hand_over, Handover};

use crate::app::Application;
use crate::coordinator::{Coordinator, CoordinatorParts};
use crate::group::client::ClientError;
use crate::group::faults::Faults;
use crate::group::log_store::LogStore;
use crate::group::network::Network;
use crate::group::proposer::{ProposeError, Proposer};
use crate::group::read_index::ReadRule;
use crate::group::state::GroupState;
use crate::group::state_machine::{Shared, StateMachineStore};
use crate::group::types::{Op, Raft, StorageError};
use crate::ids::{group_label, node_id_of_ordinal, GroupId, NodeId};
use crate::multicast::skeen::DeliveryRule;
use crate::proto::{group_server::GroupServer, raft_server::RaftServer};
use crate::route::{Member, Route, RouteError};
use crate::topology::Topology;
use openraft::{BasicNode, Config, SnapshotPolicy};
pub use service::StreamCalls;
use service::{GroupService, RaftService};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::service::RoutesBuilder;
use tonic::Request;

/// Where a replica keeps its log and snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In memory: fast, lost when the replica stops.
    Memory,
    /// On disk in this directory: log in redb, snapshots in files; survives crashes.
    Disk(PathBuf),
}

/// Raft timing and log compaction settings of a group.
#[derive(Clone, Debug)]
pub struct RaftTuning {
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Lower bound of the election timeout.
    pub election_min_ms: u64,
    /// Upper bound of the election timeout.
    pub election_max_ms: u64,
    /// Take a snapshot after this many log entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot (a follower further behind catches up by
    /// installing the snapshot).
    pub log_keep: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_min_ms: 500,
            election_max_ms: 1000,
            snapshot_every: 5000,
            log_keep: 1000,
        }
    }
}

/// Everything a replica needs to start.
pub struct ReplicaSpec {
    /// Its group.
    pub group: GroupId,
    /// Its ordinal in the group (0-based; Raft node id is ordinal + 1).
    pub ordinal: usize,
    /// Addresses of every group's members (this group's included).
    pub topology: Topology,
    /// Where it keeps its state.
    pub storage: Storage,
    /// Raft settings.
    pub tuning: RaftTuning,
    /// The application it replicates.
    pub app: Box<dyn Application>,
    /// Link faults (tests); `Faults::default()` in production.
    pub faults: Arc<Faults>,
    /// A listener already bound to its address, or `None` to bind it here.
    pub listener: Option<std::net::TcpListener>,
    /// The address to listen on when it differs from the member address peers dial (a pod
    /// listens on `0.0.0.0:7000` and is reached as `name-0.name.ns.svc:7000`).
    pub listen: Option<String>,
    /// Where served submissions' latency is observed (`None`: not observed).
    pub latency: Option<prometheus::Histogram>,
    /// The delivery rule (always `Skeen` outside mutation tests).
    pub delivery_rule: DeliveryRule,
    /// How its leader answers read-only commands (`ReadIndex` but in benchmarks and
    /// mutation tests).
    pub read_rule: ReadRule,
    /// gRPC services and tasks the caller adds to the replica (the replica server adds the
    /// admin service and, at the oracle, the drainer); `None`: Raft and group services only.
    pub services: Option<ReplicaServices>,
}

/// What a replica being started lends to [`ReplicaServices`]: its identity and the handles
/// of its running pieces.
pub struct NodeParts<'a> {
    /// Its group.
    pub group: GroupId,
    /// Its ordinal in the group.
    pub ordinal: usize,
    /// Its Raft node id.
    pub node_id: NodeId,
    /// The address peers reach it at.
    pub addr: &'a str,
    /// Addresses of every group's members.
    pub topology: &'a Topology,
    /// Its Raft handle.
    pub raft: &'a Raft,
    /// The replicated state shared with the state machine.
    pub shared: &'a Arc<Shared>,
    /// Its multicast runtime.
    pub coordinator: &'a Arc<Coordinator>,
}

/// Adds services to a replica's gRPC server and returns tasks that live as long as the
/// replica (they are aborted when it stops). Called once, after Raft and the coordinator
/// started and before the server accepts connections.
pub type ReplicaServices = Box<
    dyn FnOnce(NodeParts<'_>, &mut RoutesBuilder) -> Result<Vec<JoinHandle<()>>, NodeError> + Send,
>;

/// Why a replica could not start.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The group or ordinal is not in the topology.
    #[error("group {group} has no member with ordinal {ordinal}")]
    NotAMember {
        /// The group.
        group: GroupId,
        /// The ordinal.
        ordinal: usize,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Log or snapshot storage failed (boxed: openraft's storage error is large).
    #[error("storage: {0}")]
    Storage(Box<StorageError>),
    /// Raft refused the configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// A peer address is invalid.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl From<StorageError> for NodeError {
    fn from(e: StorageError) -> Self {
        NodeError::Storage(Box::new(e))
    }
}

/// A running replica.
pub struct GroupNode {
    me: Member,
    refusals: Arc<Refusals>,
    streams: Arc<StreamCalls>,
    group: GroupId,
    node_id: NodeId,
    addr: String,
    raft: Raft,
    shared: Arc<Shared>,
    proposer: Proposer,
    coordinator: Arc<Coordinator>,
    members: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl GroupNode {
    /// Starts a replica and, for ordinal 0 of a fresh group, initialises the group.
    pub async fn start(spec: ReplicaSpec) -> Result<GroupNode, NodeError> {
        let members = spec
            .topology
            .groups
            .get(&spec.group)
            .cloned()
            .unwrap_or_default();
        let addr = members
            .get(spec.ordinal)
            .cloned()
            .ok_or(NodeError::NotAMember {
                group: spec.group,
                ordinal: spec.ordinal,
            })?;
        let node_id = node_id_of_ordinal(spec.ordinal);
        let me = Member {
            cluster: spec.topology.cluster.clone(),
            group: spec.group,
            node: node_id,
        };
        let listener = bind(spec.listener, spec.listen.as_deref(), &addr).await?;
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut state = GroupState::new(spec.group, spec.app);
        state.skeen.set_rule(spec.delivery_rule);
        let shared = Shared::new(state, events_tx);
        let (log, dir) = match &spec.storage {
            Storage::Memory => (LogStore::in_memory(), None),
            Storage::Disk(dir) => (LogStore::open(dir)?, Some(dir.clone())),
        };
        let sm = StateMachineStore::open(shared.clone(), dir)?;
        let raft = start_raft(&me, &spec.tuning, &addr, &spec.faults, log, sm).await?;

        let proposer = Proposer::spawn(raft.clone());
        let coordinator = Coordinator::new(CoordinatorParts {
            group: spec.group,
            node_id,
            members: members.clone(),
            topology: spec.topology.clone(),
            raft: raft.clone(),
            shared: shared.clone(),
            proposer: proposer.clone(),
            faults: spec.faults.clone(),
            latency: spec.latency.unwrap_or_else(unobserved_latency),
            read_rule: spec.read_rule,
        })?;
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(coordinator.clone().run(events_rx)));
        // Partitions added or removed at run time reach this replica from the oracle.
        tasks.push(coordinator.live().follow());

        let refusals = Arc::new(Refusals::default());
        let streams = Arc::new(StreamCalls::default());
        let n = members.len();
        let mut routes = RoutesBuilder::default();
        routes
            .add_service(InterceptedService::new(
                RaftServer::new(RaftService::new(raft.clone()))
                    .max_decoding_message_size(256 << 20),
                admission(me.clone(), refusals.clone(), "raft", move |me, md| {
                    me.admit_peer(md, n)
                }),
            ))
            .add_service(InterceptedService::new(
                GroupServer::new(GroupService::new(coordinator.clone(), streams.clone())),
                admission(me.clone(), refusals.clone(), "group", Member::admit),
            ));
        if let Some(services) = spec.services {
            tasks.extend(services(
                NodeParts {
                    group: spec.group,
                    ordinal: spec.ordinal,
                    node_id,
                    addr: &addr,
                    topology: &spec.topology,
                    raft: &raft,
                    shared: &shared,
                    coordinator: &coordinator,
                },
                &mut routes,
            )?);
        }
        let server = tonic::transport::Server::builder()
            .add_routes(routes.routes())
            // `Server::tcp_nodelay` does not reach a listener we bind ourselves: set it on the
            // incoming stream, or replies wait for delayed ACKs (~40 ms).
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            );
        let group = spec.group;
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(%group, error = %e, "gRPC server stopped");
            }
        }));

        if spec.ordinal == 0 {
            bootstrap(&raft, &members).await?;
        }
        tracing::info!(%group, node_id, %addr, "replica started");
        Ok(GroupNode {
            me,
            refusals,
            streams,
            group: spec.group,
            node_id,
            addr,
            raft,
            shared,
            proposer,
            coordinator,
            members,
            tasks,
        })
    }

    /// Stops the replica abruptly: server, coordinator and Raft, as if the process died.
    pub async fn crash(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.raft.shutdown().await;
    }

    /// The group of this replica.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Who this replica is: the cluster, group and Raft node id calls to it are addressed to.
    pub fn member(&self) -> &Member {
        &self.me
    }

    /// The groups this replica knows now (its config's, then what the oracle published).
    pub fn live_topology(&self) -> crate::topology::Topology {
        self.coordinator.live().topology()
    }

    /// The calls this replica's `MulticastStream`s hold.
    pub fn stream_calls(&self) -> &StreamCalls {
        &self.streams
    }

    /// The requests this replica refused because of their route.
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// The Raft node id of this replica.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The address it serves on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Its Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// True when it leads its group.
    pub fn is_leader(&self) -> bool {
        self.coordinator.is_leader()
    }

    /// The replicated state shared with the state machine (for metrics).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Read-only commands this replica answered off the log, as leader, so far.
    pub fn reads_served(&self) -> u64 {
        self.coordinator.reads_served()
    }

    /// Messages the replica's multicast runtime keeps leader-side bookkeeping for (local
    /// timestamps collected, announces and proposals not answered yet).
    pub fn multicast_bookkeeping(&self) -> usize {
        self.coordinator.bookkeeping()
    }

    /// Its multicast runtime.
    pub(crate) fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// Addresses of the group's members, index = ordinal.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Reads the application state.
    pub fn with_app<R>(&self, f: impl FnOnce(&dyn Application) -> R) -> R {
        f(self.shared.state().app.as_ref())
    }

    /// Reads the whole replicated state.
    pub fn with_state<R>(&self, f: impl FnOnce(&GroupState) -> R) -> R {
        f(&self.shared.state())
    }

    /// Has the group send `payload` to `dst` over the reliable channel (must be the leader).
    pub async fn channel_send(&self, dst: GroupId, payload: Vec<u8>) -> Result<(), ProposeError> {
        self.proposer
            .propose(Op::ChannelSend { dst, payload })
            .await
    }
}

/// The replica's gRPC listener: the one the caller bound, or one bound on `listen` (default:
/// the member address `addr`).
async fn bind(
    listener: Option<std::net::TcpListener>,
    listen: Option<&str>,
    addr: &str,
) -> Result<TcpListener, NodeError> {
    let addr = addr.to_string();
    let listener = match listener {
        Some(l) => {
            l.set_nonblocking(true).map_err(|source| NodeError::Bind {
                addr: addr.clone(),
                source,
            })?;
            TcpListener::from_std(l).map_err(|source| NodeError::Bind {
                addr: addr.clone(),
                source,
            })?
        }
        None => {
            let listen = listen.map(str::to_string).unwrap_or_else(|| addr.clone());
            TcpListener::bind(&listen)
                .await
                .map_err(|source| NodeError::Bind {
                    addr: listen.clone(),
                    source,
                })?
        }
    };
    Ok(listener)
}

/// Requests a replica refused because of their route, by reason (see [`crate::route`]).
#[derive(Debug, Default)]
pub struct Refusals {
    misaddressed: AtomicU64,
    unrouted: AtomicU64,
    forbidden: AtomicU64,
}

impl Refusals {
    fn count(&self, e: &RouteError) {
        let c = match e {
            RouteError::Misaddressed { .. } => &self.misaddressed,
            RouteError::Missing(_) | RouteError::Bad { .. } => &self.unrouted,
            RouteError::Refused { .. } => &self.forbidden,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests meant for another replica (their address leads here now).
    pub fn misaddressed(&self) -> u64 {
        self.misaddressed.load(Ordering::Relaxed)
    }

    /// Requests without a route, or with one that does not parse.
    pub fn unrouted(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }

    /// Requests from a sender that may not make them (Raft traffic from outside the group).
    pub fn forbidden(&self) -> u64 {
        self.forbidden.load(Ordering::Relaxed)
    }
}

/// A check in front of a service of replica `me`: `admit` decides, refusals are counted and
/// answered with their status, admitted requests carry their route in their extensions.
fn admission(
    me: Member,
    refusals: Arc<Refusals>,
    service: &'static str,
    admit: impl Fn(&Member, &tonic::metadata::MetadataMap) -> Result<Route, RouteError> + Clone,
) -> impl FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + Clone {
    move |mut req: Request<()>| {
        let route = admit(&me, req.metadata()).map_err(|e| {
            refusals.count(&e);
            tracing::debug!(me = %me, error = %e, service, "request refused");
            e.status()
        })?;
        req.extensions_mut().insert(route);
        Ok(req)
    }
}

/// Starts the group's Raft on replica `me` with its storage and network.
async fn start_raft(
    me: &Member,
    tuning: &RaftTuning,
    addr: &str,
    faults: &Arc<Faults>,
    log: LogStore,
    sm: StateMachineStore,
) -> Result<Raft, NodeError> {
    let config = Config {
        cluster_name: format!("{}-{}", me.cluster, group_label(me.group)),
        heartbeat_interval: tuning.heartbeat_ms,
        election_timeout_min: tuning.election_min_ms,
        election_timeout_max: tuning.election_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
        max_in_snapshot_log_to_keep: tuning.log_keep,
        max_payload_entries: 256,
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::Raft(e.to_string()))?;
    let network = Network::new(me.clone(), addr.to_string(), faults.clone());
    let raft = Raft::new(me.node, Arc::new(config), network, log, sm)
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    Ok(raft)
}

/// Initialises a fresh group with every member as a voter (ordinal 0 does it; a group that
/// is already initialised is left as it is).
async fn bootstrap(raft: &Raft, members: &[String]) -> Result<(), NodeError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    if !initialized {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .enumerate()
            .map(|(i, a)| (node_id_of_ordinal(i), BasicNode::new(a)))
            .collect();
        raft.initialize(nodes)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
    }
    Ok(())
}

/// A histogram nobody reads, for replicas started without metrics (tests, local clusters).
fn unobserved_latency() -> prometheus::Histogram {
    prometheus::Histogram::with_opts(prometheus::HistogramOpts::new(
        "dssmr_command_duration_seconds",
        "unobserved",
    ))
    .expect("static histogram options are valid")
}

/// Binds `n` listeners on 127.0.0.1 with OS-assigned ports (for tests, benches and the demo).
pub(crate) fn bind_local(n: usize) -> std::io::Result<Vec<(std::net::TcpListener, SocketAddr)>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let a = l.local_addr()?;
        out.push((l, a));
    }
    Ok(out)
}
