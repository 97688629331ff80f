//! Raft traffic between the replicas of a group over tonic gRPC (openraft `RaftNetwork`).
//!
//! openraft messages travel postcard-encoded inside `RaftBytes`; the remote side answers with an
//! encoded `Result` so Raft-level errors come back typed. Transport failures are classified the
//! way openraft expects: a peer that cannot be reached is `Unreachable` (openraft backs off),
//! anything else is a `NetworkError` (retried at once).
//!
//! Every request carries its route (cluster, group, target and sending node; see
//! [`crate::route`]). A peer that answers "misaddressed" is not the replica this connection is
//! for (its address was taken over, as a pod IP is after the pod stops): the connection is
//! dropped and dialled again, resolving the peer's name afresh, and openraft sees the peer as
//! unreachable meanwhile.
//!
//! One HTTP/2 connection per peer: [`Network`] keeps the client it dialled for each peer and
//! every connection openraft asks for (a replication stream, a vote, the heartbeats of a
//! read index) shares it; a redial replaces it for all of them.

use crate::group::faults::Faults;
use crate::group::types::TypeConfig;
use crate::ids::NodeId;
use crate::proto::raft_client::RaftClient;
use crate::proto::RaftBytes;
use crate::route::{is_misaddressed, Member, Route, Sender, Stamp};
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
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub(crate) use crate::channel::lazy_channel;

/// The client dialled for each peer (node id → its address and the client).
type Peers = Arc<Mutex<HashMap<NodeId, (String, PeerRpc)>>>;

/// Creates connections to the other replicas of the group.
#[derive(Clone)]
pub(crate) struct Network {
    me: Member,
    self_addr: String,
    faults: Arc<Faults>,
    peers: Peers,
}

impl Network {
    /// The network of replica `me`, listening on `self_addr`.
    pub(crate) fn new(me: Member, self_addr: String, faults: Arc<Faults>) -> Self {
        Network {
            me,
            self_addr,
            faults,
            peers: Arc::default(),
        }
    }
}

/// A Raft client whose requests carry the route to one peer.
type PeerRpc = RaftClient<InterceptedService<Channel, Stamp>>;

/// A connection to one peer replica.
pub(crate) struct Connection {
    target: NodeId,
    addr: String,
    self_addr: String,
    faults: Arc<Faults>,
    stamp: Stamp,
    client: Result<PeerRpc, String>,
    peers: Peers,
}

/// A (lazily connecting) Raft client of the peer at `addr`.
pub(crate) fn dial(addr: &str, stamp: &Stamp) -> Result<PeerRpc, String> {
    lazy_channel(addr)
        .map(|c| {
            RaftClient::with_interceptor(c, stamp.clone()).max_decoding_message_size(256 << 20)
        })
        .map_err(|e| e.to_string())
}

/// The stamp of Raft requests from `me` to node `target` of its group.
pub(crate) fn peer_stamp(me: &Member, target: NodeId) -> Stamp {
    Stamp::new(&Route {
        to: Member {
            cluster: me.cluster.clone(),
            group: me.group,
            node: target,
        },
        from: Sender::Replica {
            group: me.group,
            node: me.node,
        },
    })
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        let stamp = peer_stamp(&self.me, target);
        let client = {
            let mut peers = self.peers.lock().expect("peers lock");
            match peers.get(&target) {
                Some((addr, client)) if *addr == node.addr => Ok(client.clone()),
                _ => {
                    let dialled = dial(&node.addr, &stamp);
                    if let Ok(c) = &dialled {
                        peers.insert(target, (node.addr.clone(), c.clone()));
                    }
                    dialled
                }
            }
        };
        Connection {
            target,
            addr: node.addr.clone(),
            self_addr: self.self_addr.clone(),
            faults: self.faults.clone(),
            client,
            stamp,
            peers: self.peers.clone(),
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
    /// Dials the peer again and makes that the client every connection to it shares (unless
    /// another connection already did since this one got its client).
    fn redial(&mut self) {
        let dialled = dial(&self.addr, &self.stamp);
        if let Ok(c) = &dialled {
            self.peers
                .lock()
                .expect("peers lock")
                .insert(self.target, (self.addr.clone(), c.clone()));
        }
        self.client = dialled;
    }

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
        let reply = match reply {
            Ok(r) => r,
            Err(status) if is_misaddressed(&status) => {
                // Another replica took the peer's address: redial (the name resolves afresh)
                // and let openraft back off meanwhile.
                tracing::debug!(target = self.target, addr = %self.addr, %status, "misaddressed");
                self.redial();
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            Err(status) => {
                return Err(match status.code() {
                    tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
                    _ => RPCError::Network(NetworkError::new(&status)),
                })
            }
        };
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
