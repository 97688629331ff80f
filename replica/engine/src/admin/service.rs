//! The `Admin` gRPC service (see `proto/dssmr.proto`): decodes, checks, delegates, encodes.
//! Malformed requests get `INVALID_ARGUMENT`, requests for another kind of replica
//! `FAILED_PRECONDITION`, each with a message saying what is wrong.

use crate::command::{decode, encode, AdminOp, Command, Reply};
use crate::group::network::lazy_channel;
use crate::group::state_machine::Shared;
use crate::group::types::Raft;
use crate::group::GroupClient;
use crate::ids::group_label;
use crate::ids::{node_id_of_ordinal, GroupId, MsgId, ORACLE};
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
    /// Admin clients of every member of every group, by group, index = ordinal.
    members: Vec<(GroupId, Vec<Member>)>,
    /// The oracle group, for admin commands (oracle replicas only).
    oracle: Option<GroupClient>,
    sender: u64,
    seq: AtomicU64,
}

impl AdminService {
    /// The service of replica `ordinal` (listening on `addr`) of `group`.
    pub(crate) fn new(
        group: GroupId,
        ordinal: usize,
        addr: String,
        raft: Raft,
        shared: Arc<Shared>,
        topology: Topology,
    ) -> Result<Self, crate::client::ClientError> {
        let mut members = Vec::new();
        for (g, addrs) in &topology.groups {
            let mut clients = Vec::new();
            for a in addrs {
                let channel =
                    lazy_channel(a).map_err(|source| crate::client::ClientError::BadAddress {
                        addr: a.clone(),
                        source,
                    })?;
                clients.push((a.clone(), AdminClient::new(channel)));
            }
            members.push((*g, clients));
        }
        let oracle = match (group == ORACLE, topology.groups.get(&ORACLE)) {
            (true, Some(addrs)) => Some(GroupClient::new(
                &topology.cluster,
                ORACLE,
                addrs,
                Sender::Replica {
                    group,
                    node: node_id_of_ordinal(ordinal),
                },
            )?),
            _ => None,
        };
        Ok(AdminService {
            group,
            ordinal,
            addr,
            raft,
            shared,
            topology,
            members,
            oracle,
            sender: rand::random::<u64>() | 1 << 63,
            seq: AtomicU64::new(0),
        })
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
        Owed {
            variables: stats.variables,
            queued: stats.queued,
            pending_messages: state.skeen.pending_count() as u64,
            awaiting_groups: awaiting.into_iter().map(|g| g.0).collect(),
        }
    }

    fn with_oracle<R>(&self, f: impl FnOnce(&Oracle) -> R) -> Option<R> {
        let state = self.shared.state();
        state.app.as_any().downcast_ref::<Oracle>().map(f)
    }

    fn partition_status(&self, oracle: &Oracle, p: GroupId) -> proto::PartitionStatus {
        let variables = oracle.counts().get(&p).copied().unwrap_or(0);
        let state = match oracle.partition_state(p) {
            PartitionState::Active => "active",
            PartitionState::Draining(_) => "draining",
            PartitionState::Drained => "drained",
            PartitionState::Inactive => "inactive",
        };
        proto::PartitionStatus {
            partition: p.0,
            state: state.into(),
            variables,
        }
    }

    /// Orders `op` through the oracle group and reports the partition afterwards.
    async fn admin(&self, op: AdminOp) -> Result<proto::PartitionStatus, Status> {
        let p = op.partition();
        let Some(oracle) = &self.oracle else {
            return Err(Status::failed_precondition(format!(
                "this replica belongs to {}, not to the oracle: send AddPartition and \
                 DrainPartition to an oracle replica (DS-SMR clusters only)",
                group_label(self.group)
            )));
        };
        let published = self
            .with_oracle(|o| o.published().partitions.iter().any(|q| q.partition == p))
            .unwrap_or(false);
        let adds_members =
            matches!(&op, AdminOp::AddPartition { members, .. } if !members.is_empty());
        if matches!(op, AdminOp::RemovePartition(_)) && !published && p != ORACLE {
            // Removed already (the oracle no longer publishes it): asking again is not an
            // error, so a caller whose first answer was lost can go on.
            return self
                .with_oracle(|o| self.partition_status(o, p))
                .ok_or_else(|| Status::internal("oracle replica without an oracle"));
        }
        if p == ORACLE || !(self.topology.contains(p) || published || adds_members) {
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
        let msg = McastMessage::new(
            MsgId {
                sender: self.sender,
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
            },
            vec![ORACLE],
            encode(&Command::Admin(op.clone())),
        );
        let done = oracle
            .submit(&msg, Instant::now() + COMMAND_DEADLINE)
            .await
            .map_err(|e| match e {
                crate::client::ClientError::Rejected { message, .. } => {
                    Status::invalid_argument(message)
                }
                other => Status::unavailable(other.to_string()),
            })?;
        match decode::<Reply>(&done.reply, "reply") {
            Ok(Reply::Ok) => {}
            Ok(Reply::Rejected(why)) => return Err(Status::failed_precondition(why)),
            Ok(other) => return Err(Status::internal(format!("unexpected reply {other:?}"))),
            Err(e) => return Err(Status::internal(e.to_string())),
        }
        // Report once this replica applied it too.
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            let status = self
                .with_oracle(|o| {
                    let published = o.published().partitions.iter().any(|q| q.partition == p);
                    (self.partition_status(o, p), o.partition_state(p), published)
                })
                .ok_or_else(|| Status::internal("oracle replica without an oracle"))?;
            let applied = match op {
                AdminOp::AddPartition { .. } => status.1 == PartitionState::Active,
                AdminOp::DrainPartition(_) => !matches!(status.1, PartitionState::Active),
                AdminOp::RemovePartition(_) => !status.2,
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
        for (g, members) in &self.members {
            let asked = members.iter().enumerate().map(|(ordinal, (addr, client))| {
                let mut client = client.clone();
                async move {
                    let answer =
                        tokio::time::timeout(DESCRIBE_TIMEOUT, client.describe(DescribeRequest {}))
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
        Ok(Response::new(ClusterStatus { groups, partitions }))
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
