//! A client of the `Admin` service for tools (`dssmr admin`) and tests: finds an oracle
//! replica that answers and renders replies as JSON.

use crate::channel::lazy_channel;
use crate::config::ClusterConfig;
use crate::ids::ORACLE;
use crate::proto::admin_client::AdminClient;
use crate::proto::{
    ClusterStatus, DescribeRequest, MemberStatus, PartitionRequest, PartitionStatus, StatusRequest,
};
use serde_json::{json, Value};
use std::time::Duration;
use tonic::transport::Channel;

/// How long one replica may take to answer before the next is tried.
const ATTEMPT: Duration = Duration::from_secs(15);

/// Admin calls against a cluster, sent to its oracle replicas (or, for a cluster without
/// oracle, to its partitions' replicas) until one answers.
pub struct AdminConnection {
    replicas: Vec<(String, AdminClient<Channel>)>,
}

/// A failed admin call: the status of the last replica tried.
#[derive(Debug, thiserror::Error)]
#[error("{addr}: {status}")]
pub struct AdminError {
    /// The replica.
    pub addr: String,
    /// Its answer.
    pub status: tonic::Status,
}

/// A replica address of the config that is not a valid gRPC endpoint.
#[derive(Debug, thiserror::Error)]
#[error("replica address {addr:?}: {source}")]
pub struct BadAddress {
    /// The address, as the config spells it.
    pub addr: String,
    /// What tonic found wrong with it.
    #[source]
    pub source: tonic::transport::Error,
}

impl AdminConnection {
    /// Clients of the replicas to ask, from the cluster config.
    pub fn new(config: &ClusterConfig) -> Result<Self, BadAddress> {
        let topology = config.topology();
        let addrs: Vec<String> = match topology.groups.get(&ORACLE) {
            Some(o) => o.clone(),
            None => topology.groups.values().flatten().cloned().collect(),
        };
        let replicas = addrs
            .into_iter()
            .map(|addr| match lazy_channel(&addr) {
                Ok(channel) => Ok((addr, AdminClient::new(channel))),
                Err(source) => Err(BadAddress { addr, source }),
            })
            .collect::<Result<_, _>>()?;
        Ok(AdminConnection { replicas })
    }

    async fn first<T, F, Fut>(&self, call: F) -> Result<T, AdminError>
    where
        F: Fn(AdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = None;
        for (addr, client) in &self.replicas {
            match tokio::time::timeout(ATTEMPT, call(client.clone())).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                // The request itself is wrong: every replica would say so.
                Ok(Err(s))
                    if matches!(
                        s.code(),
                        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                    ) =>
                {
                    return Err(AdminError {
                        addr: addr.clone(),
                        status: s,
                    })
                }
                Ok(Err(s)) => last = Some((addr.clone(), s)),
                Err(_) => last = Some((addr.clone(), tonic::Status::deadline_exceeded("timeout"))),
            }
        }
        let (addr, status) =
            last.unwrap_or_else(|| (String::new(), tonic::Status::unavailable("no replica")));
        Err(AdminError { addr, status })
    }

    /// The cluster's status.
    pub async fn status(&self) -> Result<ClusterStatus, AdminError> {
        self.first(|mut c| async move { c.status(StatusRequest {}).await })
            .await
    }

    /// Adds partition `p` to the placement and the published topology, its replicas at
    /// `members` (index = ordinal; empty: the oracle replica's config has them).
    pub async fn add_partition(
        &self,
        p: u32,
        members: &[String],
    ) -> Result<PartitionStatus, AdminError> {
        self.first(|mut c| {
            let req = PartitionRequest {
                partition: p,
                members: members.to_vec(),
            };
            async move { c.add_partition(req).await }
        })
        .await
    }

    /// Takes drained partition `p` out of the published topology.
    pub async fn remove_partition(&self, p: u32) -> Result<PartitionStatus, AdminError> {
        self.first(|mut c| async move {
            c.remove_partition(PartitionRequest {
                partition: p,
                members: vec![],
            })
            .await
        })
        .await
    }

    /// Starts (or reports on) draining partition `p`.
    pub async fn drain_partition(&self, p: u32) -> Result<PartitionStatus, AdminError> {
        self.first(|mut c| async move {
            c.drain_partition(PartitionRequest {
                partition: p,
                members: vec![],
            })
            .await
        })
        .await
    }
}

/// The own state of the replica at `addr` (its `Describe`), within `within`.
pub async fn describe(addr: &str, within: Duration) -> Result<MemberStatus, AdminError> {
    let failed = |status| AdminError {
        addr: addr.to_string(),
        status,
    };
    let channel = lazy_channel(addr)
        .map_err(|e| failed(tonic::Status::invalid_argument(format!("address: {e}"))))?;
    let mut client = AdminClient::new(channel);
    match tokio::time::timeout(within, client.describe(DescribeRequest {})).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(failed(s)),
        Err(_) => Err(failed(tonic::Status::deadline_exceeded("timeout"))),
    }
}

/// A partition's status as JSON.
pub fn partition_json(p: &PartitionStatus) -> Value {
    let mut v = json!({"partition": p.partition, "state": p.state, "variables": p.variables});
    if !p.note.is_empty() {
        v["note"] = json!(p.note);
    }
    v
}

/// A cluster status as JSON.
pub fn status_json(s: &ClusterStatus) -> Value {
    json!({
        "groups": s.groups.iter().map(|g| json!({
            "group": g.name,
            "leader": g.leader_addr,
            "commitIndex": g.commit_index,
            "members": g.members.iter().map(|m| json!({
                "ordinal": m.ordinal,
                "addr": m.addr,
                "role": m.role,
                "term": m.term,
                "commitIndex": m.commit_index,
                "appliedIndex": m.applied_index,
                "lastLogIndex": m.last_log_index,
                "variables": m.variables,
                "queued": m.queued,
                "pendingMessages": m.pending_messages,
                "awaitingGroups": m.awaiting_groups,
                "lifecycleVersion": m.lifecycle_version,
                "removedPartitions": m.removed_partitions,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "partitions": s.partitions.iter().map(partition_json).collect::<Vec<_>>(),
        "nextPartition": s.next_partition,
    })
}
