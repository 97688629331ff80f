//! The `Admin` gRPC service (see `proto/dssmr.proto`): decodes, checks, delegates, encodes.
//! Malformed requests get `INVALID_ARGUMENT`, requests for another kind of replica
//! `FAILED_PRECONDITION`, each with a message saying what is wrong.

use crate::admin::drain::DrainNotes;
use crate::command::{decode, encode, AdminOp, Command, Reply};
use crate::group::network::lazy_channel;
use crate::group::state_machine::Shared;
use crate::group::types::Raft;
use crate::group::GroupClient;
use crate::group::LiveTopology;
use crate::ids::group_label;
use crate::ids::{node_id_of_ordinal, GroupId, MsgId, ORACLE};
use crate::lifecycle::Phase;
use crate::multicast::McastMessage;
use crate::oracle::{Oracle, PartitionState};
use crate::proto::admin_client::AdminClient;
use crate::proto::{
    self, ClusterStatus, DescribeRequest, GroupStatus, MemberStatus, PartitionRequest,
    StatusRequest,
};
use crate::route::Sender;
use crate::topology::Topology;
use openraft::ServerState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How long `Status` waits for one member's `Describe`.
const DESCRIBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an admin command may take to be ordered by the oracle group.
const COMMAND_DEADLINE: Duration = Duration::from_secs(10);

/// The part of [`MemberStatus`] read from the applied state (see [`AdminService::owed`]).
struct Owed {
    variables: Option<u64>,
    queued: u64,
    pending_messages: u64,
    awaiting_groups: Vec<u32>,
    lifecycle_version: u64,
    removed_partitions: Vec<u32>,
}

/// A member of a group: its address and an admin client of it.
type Member = (String, AdminClient<Channel>);

/// What the admin service of one replica works with.
pub(crate) struct AdminService {
    group: GroupId,
    ordinal: usize,
    addr: String,
    raft: Raft,
    shared: Arc<Shared>,
    topology: Topology,
    /// The groups this replica follows, with a client of each (administrative commands go
    /// to every group).
    live: Arc<LiveTopology>,
    /// Why drains do not progress (written by the drainer of an oracle replica).
    notes: Arc<DrainNotes>,
    sender: u64,
    seq: AtomicU64,
}

impl AdminService {
    /// The service of replica `ordinal` (listening on `addr`) of `group`, following `live`;
    /// the drainer of an oracle replica writes its `notes`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        group: GroupId,
        ordinal: usize,
        addr: String,
        raft: Raft,
        shared: Arc<Shared>,
        topology: Topology,
        live: Arc<LiveTopology>,
        notes: Arc<DrainNotes>,
    ) -> Result<Self, crate::client::ClientError> {
        Ok(AdminService {
            group,
            ordinal,
            addr,
            raft,
            shared,
            topology,
            live,
            notes,
            sender: rand::random::<u64>() | 1 << 63,
            seq: AtomicU64::new(0),
        })
    }

    /// Admin clients of every member of every group this replica knows now (partitions
    /// added at run time included), by group, index = ordinal.
    fn members(&self) -> Result<Vec<(GroupId, Vec<Member>)>, Status> {
        let mut out = Vec::new();
        for (g, addrs) in self.live.topology().groups {
            let mut clients = Vec::new();
            for a in addrs {
                let channel = lazy_channel(&a)
                    .map_err(|e| Status::internal(format!("member address {a}: {e}")))?;
                clients.push((a, AdminClient::new(channel)));
            }
            out.push((g, clients));
        }
        Ok(out)
    }

    async fn describe_self(&self) -> MemberStatus {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let commit_index = self
            .raft
            .with_raft_state(|st| st.committed.map(|c| c.index))
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        let owed = self.owed();
        MemberStatus {
            group: self.group.0,
            ordinal: self.ordinal as u32,
            addr: self.addr.clone(),
            role: role.into(),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            commit_index,
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            variables: owed.variables,
            queued: owed.queued,
            pending_messages: owed.pending_messages,
            awaiting_groups: owed.awaiting_groups,
            lifecycle_version: owed.lifecycle_version,
            removed_partitions: owed.removed_partitions,
        }
    }

    /// What the applied state of this replica still owes other groups or waits for: its
    /// variables, unfinished commands, undelivered multicast messages and the other groups
    /// those and the unacknowledged channel messages involve.
    fn owed(&self) -> Owed {
        let state = self.shared.state();
        let stats = state.app.stats();
        let mut awaiting = state.skeen.pending_destinations();
        awaiting.extend(state.channel.outboxes().map(|(g, _)| g));
        awaiting.remove(&self.group);
        let lifecycle = state.app.lifecycle();
        Owed {
            variables: stats.variables,
            queued: stats.queued,
            pending_messages: state.skeen.pending_count() as u64,
            awaiting_groups: awaiting.into_iter().map(|g| g.0).collect(),
            lifecycle_version: lifecycle.map_or(0, |l| l.version()),
            removed_partitions: lifecycle
                .map(|l| {
                    l.phases()
                        .filter(|(_, ph)| *ph == Phase::Removed)
                        .map(|(p, _)| p.0)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn with_oracle<R>(&self, f: impl FnOnce(&Oracle) -> R) -> Option<R> {
        let state = self.shared.state();
        state.app.as_any().downcast_ref::<Oracle>().map(f)
    }

    fn partition_status(&self, oracle: &Oracle, p: GroupId) -> proto::PartitionStatus {
        let state = oracle.partition_state(p);
        proto::PartitionStatus {
            partition: p.0,
            state: state.name().into(),
            variables: oracle.counts().get(&p).copied().unwrap_or(0),
            note: match state {
                PartitionState::Draining(_) => self.notes.get(p).unwrap_or_default(),
                _ => String::new(),
            },
        }
    }

    /// The client of group `g`, for an administrative command: from the live topology, or
    /// built from `members` (a partition being added is not published yet).
    async fn client_of(&self, g: GroupId, members: &[String]) -> Result<Arc<GroupClient>, Status> {
        if !members.is_empty() && !self.live.contains(g) {
            let from = Sender::Replica {
                group: self.group,
                node: node_id_of_ordinal(self.ordinal),
            };
            return GroupClient::new(&self.topology.cluster, g, members, from)
                .map(Arc::new)
                .map_err(|e| Status::invalid_argument(format!("members: {e}")));
        }
        if self.live.client(g).is_none() {
            // This replica's oracle state knows it, its view of the topology not yet: the
            // oracle's leader publishes it.
            let _ = self.live.refresh(Duration::ZERO).await;
        }
        self.live.client(g).ok_or_else(|| {
            Status::unavailable(format!(
                "{} is not in this replica's view of the topology yet; ask again",
                group_label(g)
            ))
        })
    }

    /// Checks that every partition among `dests` has a leader right now (`p`, being added,
    /// is reached at `new_members`). An administrative command waits for every destination
    /// to order it, and while it waits the oracle delivers nothing ordered after it: sent
    /// while a partition is down, it would hold up every consult of the cluster until that
    /// partition is back. Refused instead, so the caller asks again later.
    async fn preflight(
        &self,
        dests: &[GroupId],
        p: GroupId,
        new_members: &[String],
    ) -> Result<(), Status> {
        let mut leaderless = Vec::new();
        for g in dests.iter().filter(|g| **g != ORACLE) {
            let addrs: Vec<String> = match self.live.members(*g) {
                Some(a) => a,
                None if *g == p => new_members.to_vec(),
                None => Vec::new(),
            };
            let asked = addrs.iter().map(|a| async move {
                let Ok(channel) = lazy_channel(a) else {
                    return false;
                };
                let mut client = AdminClient::new(channel);
                matches!(
                    tokio::time::timeout(DESCRIBE_TIMEOUT, client.describe(DescribeRequest {})).await,
                    Ok(Ok(r)) if r.get_ref().role == "leader"
                )
            });
            if !futures::future::join_all(asked)
                .await
                .into_iter()
                .any(|l| l)
            {
                leaderless.push(group_label(*g));
            }
        }
        if leaderless.is_empty() {
            return Ok(());
        }
        Err(Status::unavailable(format!(
            "not ordered: {} has no leader now (every partition takes part in an \
             administrative command, and the oracle would wait for it); ask again once it \
             has one",
            leaderless.join(", ")
        )))
    }

    /// Multicasts `op` to the oracle and every partition that exists (and the one it
    /// adds), as this replica's applied oracle state tells them, and waits until every
    /// destination applied it; returns the oracle's reply. Asked again when the oracle finds
    /// the destinations stale (this replica's state lagged behind a change).
    async fn order(&self, op: &AdminOp) -> Result<(), Status> {
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let new_members = match op {
            AdminOp::AddPartition { members, .. } => members.clone(),
            _ => Vec::new(),
        };
        loop {
            let lifecycle = self
                .with_oracle(|o| o.lifecycle().clone())
                .ok_or_else(|| Status::internal("oracle replica without an oracle"))?;
            let mut dests = vec![ORACLE];
            dests.extend(lifecycle.destinations_of(op));
            let mut clients = Vec::with_capacity(dests.len());
            for g in &dests {
                let members = if *g == op.partition() {
                    new_members.as_slice()
                } else {
                    &[]
                };
                clients.push((*g, self.client_of(*g, members).await?));
            }
            self.preflight(&dests, op.partition(), &new_members).await?;
            let msg = McastMessage::new(
                MsgId {
                    sender: self.sender,
                    seq: self.seq.fetch_add(1, Ordering::Relaxed),
                },
                dests,
                encode(&Command::Admin(op.clone())),
            );
            // The oracle decides first (its leader forwards the command to the other
            // destinations); the partitions answer once they applied its decision.
            let Some((oracle, partitions)) = clients.split_first() else {
                return Err(Status::internal(
                    "an administrative command without the oracle",
                ));
            };
            let decided = oracle.1.submit(&msg, deadline).await.map_err(|e| match e {
                crate::client::ClientError::Rejected { message, .. } => {
                    Status::invalid_argument(message)
                }
                other => Status::unavailable(format!("the oracle did not answer: {other}")),
            })?;
            match decode::<Reply>(&decided.reply, "reply") {
                Ok(Reply::Ok) => {}
                Ok(Reply::Refused(refusal)) if refusal.is_stale() => {
                    if Instant::now() > deadline {
                        return Err(Status::unavailable(refusal.to_string()));
                    }
                    // This replica's state lagged: let it apply what the oracle decided.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Ok(Reply::Refused(refusal)) => {
                    return Err(Status::failed_precondition(refusal.to_string()))
                }
                Ok(Reply::Rejected(why)) => return Err(Status::failed_precondition(why)),
                Ok(other) => return Err(Status::internal(format!("unexpected reply {other:?}"))),
                Err(e) => return Err(Status::internal(e.to_string())),
            }
            let answers =
                futures::future::join_all(partitions.iter().map(|(_, c)| c.submit(&msg, deadline)))
                    .await;
            let unapplied: Vec<String> = partitions
                .iter()
                .zip(answers)
                .filter_map(|((g, _), a)| a.err().map(|e| format!("{}: {e}", group_label(*g))))
                .collect();
            if unapplied.is_empty() {
                return Ok(());
            }
            return Err(Status::unavailable(format!(
                "ordered, but not yet applied everywhere (ask again): {}",
                unapplied.join("; ")
            )));
        }
    }

    /// Orders `op` through every group and reports the partition afterwards.
    async fn admin(&self, op: AdminOp) -> Result<proto::PartitionStatus, Status> {
        let p = op.partition();
        if self.group != ORACLE {
            return Err(Status::failed_precondition(format!(
                "this replica belongs to {}, not to the oracle: send AddPartition and \
                 DrainPartition to an oracle replica (DS-SMR clusters only)",
                group_label(self.group)
            )));
        }
        let phase = self
            .with_oracle(|o| o.lifecycle().phase(p))
            .ok_or_else(|| Status::internal("oracle replica without an oracle"))?;
        let adds_members =
            matches!(&op, AdminOp::AddPartition { members, .. } if !members.is_empty());
        if matches!(op, AdminOp::AddPartition { .. }) && phase == Some(Phase::Removed) {
            let next = self
                .with_oracle(|o| o.published().next_partition.0)
                .unwrap_or_default();
            return Err(Status::failed_precondition(format!(
                "partition {} was removed and partition numbers are never reused: add \
                 partition {next} instead",
                p.0
            )));
        }
        if matches!(op, AdminOp::RemovePartition(_)) && phase == Some(Phase::Removed) {
            // Removed already: asking again is not an error, so a caller whose first answer
            // was lost can go on.
            return self
                .with_oracle(|o| self.partition_status(o, p))
                .ok_or_else(|| Status::internal("oracle replica without an oracle"));
        }
        if p == ORACLE || !(self.topology.contains(p) || phase.is_some() || adds_members) {
            let known: Vec<u32> = self
                .topology
                .groups
                .keys()
                .filter(|g| **g != ORACLE)
                .map(|g| g.0)
                .collect();
            return Err(Status::invalid_argument(format!(
                "partition: {} is not a partition of this cluster's config (partitions: \
                 {known:?}) nor of the oracle's topology; give its members to add it",
                p.0
            )));
        }
        if let AdminOp::AddPartition { partition, members } = &op {
            if !members.is_empty() && phase.is_none() {
                // Started at run time: publish its members first, so that every group can
                // order the add with it.
                let join = AdminOp::JoinPartition {
                    partition: *partition,
                    members: members.clone(),
                };
                self.order(&join).await?;
                let _ = self.live.refresh(Duration::ZERO).await;
            }
        }
        self.order(&op).await?;
        // Report once this replica applied it too.
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            let status = self
                .with_oracle(|o| (self.partition_status(o, p), o.partition_state(p)))
                .ok_or_else(|| Status::internal("oracle replica without an oracle"))?;
            let applied = match op {
                AdminOp::AddPartition { .. } => status.1 == PartitionState::Active,
                AdminOp::JoinPartition { .. } => true,
                AdminOp::DrainPartition(_) => !matches!(status.1, PartitionState::Active),
                AdminOp::RemovePartition(_) => status.1 == PartitionState::Removed,
            };
            if applied || Instant::now() > deadline {
                return Ok(status.0);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tonic::async_trait]
impl proto::admin_server::Admin for AdminService {
    async fn describe(
        &self,
        _req: Request<DescribeRequest>,
    ) -> Result<Response<MemberStatus>, Status> {
        Ok(Response::new(self.describe_self().await))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        let mut groups = Vec::new();
        for (g, members) in self.members()? {
            let g = &g;
            let asked = members
                .into_iter()
                .enumerate()
                .map(|(ordinal, (addr, client))| {
                    let mut client = client;
                    async move {
                        let answer = tokio::time::timeout(
                            DESCRIBE_TIMEOUT,
                            client.describe(DescribeRequest {}),
                        )
                        .await;
                        match answer {
                            Ok(Ok(r)) => r.into_inner(),
                            _ => MemberStatus {
                                group: g.0,
                                ordinal: ordinal as u32,
                                addr: addr.clone(),
                                role: "unreachable".into(),
                                ..Default::default()
                            },
                        }
                    }
                });
            let members = futures::future::join_all(asked).await;
            let leader = members
                .iter()
                .filter(|m| m.role == "leader")
                .max_by_key(|m| m.term);
            groups.push(GroupStatus {
                group: g.0,
                name: group_label(*g),
                leader_addr: leader.map(|m| m.addr.clone()).unwrap_or_default(),
                commit_index: leader.map(|m| m.commit_index).unwrap_or(0),
                members,
            });
        }
        let partitions = self
            .with_oracle(|o| {
                o.partitions()
                    .into_iter()
                    .map(|p| self.partition_status(o, p))
                    .collect()
            })
            .unwrap_or_default();
        let next_partition = self
            .with_oracle(|o| o.published().next_partition.0)
            .unwrap_or(0);
        Ok(Response::new(ClusterStatus {
            groups,
            partitions,
            next_partition,
        }))
    }

    async fn add_partition(
        &self,
        req: Request<PartitionRequest>,
    ) -> Result<Response<proto::PartitionStatus>, Status> {
        let req = req.into_inner();
        let partition = GroupId(req.partition);
        let members = if req.members.is_empty() {
            self.topology
                .groups
                .get(&partition)
                .cloned()
                .unwrap_or_default()
        } else {
            req.members
        };
        self.admin(AdminOp::AddPartition { partition, members })
            .await
            .map(Response::new)
    }

    async fn drain_partition(
        &self,
        req: Request<PartitionRequest>,
    ) -> Result<Response<proto::PartitionStatus>, Status> {
        self.admin(AdminOp::DrainPartition(GroupId(req.into_inner().partition)))
            .await
            .map(Response::new)
    }

    async fn remove_partition(
        &self,
        req: Request<PartitionRequest>,
    ) -> Result<Response<proto::PartitionStatus>, Status> {
        self.admin(AdminOp::RemovePartition(GroupId(
            req.into_inner().partition,
        )))
        .await
        .map(Response::new)
    }
}
