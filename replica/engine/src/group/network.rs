//! Raft traffic between the replicas of a group over tonic gRPC (openraft `RaftNetwork`).
//!
//! openraft messages travel postcard-encoded inside `RaftBytes`; the remote side answers with an
//! encoded `Result` so Raft-level errors come back typed. Transport failures are classified the
//! way openraft expects: a peer that cannot be reached is `Unreachable` (openraft backs off),
//! anything else is a `NetworkError` (retried at once).

use crate::group::faults::Faults;
use crate::group::types::TypeConfig;
use crate::ids::NodeId;
use crate::proto::raft_client::RaftClient;
use crate::proto::RaftBytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use tonic::transport::Channel;

pub(crate) use crate::channel::lazy_channel;

/// Creates connections to the other replicas of the group.
#[derive(Clone)]
pub(crate) struct Network {
    self_addr: String,
    faults: Arc<Faults>,
}

impl Network {
    /// The network of the replica listening on `self_addr`.
    pub(crate) fn new(self_addr: String, faults: Arc<Faults>) -> Self {
        Network { self_addr, faults }
    }
}

/// A connection to one peer replica.
pub(crate) struct Connection {
    target: NodeId,
    addr: String,
    self_addr: String,
    faults: Arc<Faults>,
    client: Result<RaftClient<Channel>, String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            target,
            addr: node.addr.clone(),
            self_addr: self.self_addr.clone(),
            faults: self.faults.clone(),
            client: lazy_channel(&node.addr)
                .map(|c| RaftClient::new(c).max_decoding_message_size(256 << 20))
                .map_err(|e| e.to_string()),
        }
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl Connection {
    /// Sends one request and decodes the remote `Result<Resp, E>`: the single path every RPC
    /// takes, so encoding and error classification live in one place.
    async fn request<Req, Resp, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.faults.is_cut(&self.self_addr, &self.addr) {
            return Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(
                format!("link {} -> {} is cut", self.self_addr, self.addr),
            ))));
        }
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&AnyError::error(
                    e.clone(),
                ))))
            }
        };
        let data =
            postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftBytes { data });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, E> = postcard::from_bytes(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.request(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.request(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.request(Rpc::Vote, &rpc, &option).await
    }
}
