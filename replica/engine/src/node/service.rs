//! The gRPC services of a replica: Raft traffic inside the group, and the `Group` service that
//! clients and other groups' leaders call.
//!
//! This layer only decodes, delegates and encodes. Undecodable or malformed input is answered
//! with `INVALID_ARGUMENT` and a message saying what is wrong; nothing here panics on input.

use crate::coordinator::{Coordinator, RequestError};
use crate::group::types::{Raft, TypeConfig};
use crate::proto;
use crate::route::{Route, Sender};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tonic::{Request, Response, Status};

/// Serves openraft RPCs from the other replicas of the group.
pub(crate) struct RaftService {
    raft: Raft,
}

impl RaftService {
    /// Serves `raft`.
    pub(crate) fn new(raft: Raft) -> Self {
        RaftService { raft }
    }
}

fn decode<T: serde::de::DeserializeOwned>(req: Request<proto::RaftBytes>) -> Result<T, Status> {
    postcard::from_bytes(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Response<proto::RaftBytes>, Status> {
    postcard::to_allocvec(v)
        .map(|data| Response::new(proto::RaftBytes { data }))
        .map_err(|e| Status::internal(format!("cannot encode raft reply: {e}")))
}

#[tonic::async_trait]
impl proto::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<proto::RaftBytes>,
    ) -> Result<Response<proto::RaftBytes>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        req: Request<proto::RaftBytes>,
    ) -> Result<Response<proto::RaftBytes>, Status> {
        let rpc: VoteRequest<u64> = decode(req)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<proto::RaftBytes>,
    ) -> Result<Response<proto::RaftBytes>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }

    async fn timeout_now(
        &self,
        req: Request<proto::TimeoutNowRequest>,
    ) -> Result<Response<proto::TimeoutNowReply>, Status> {
        let req = req.into_inner();
        let (term, leader) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.current_term, m.current_leader)
        };
        // Only the leader this replica follows, in its current term, may hand over to it: a
        // stale or forged request must not depose a healthy leader.
        let electing = term == req.term && leader == Some(req.leader_id);
        if electing {
            self.raft
                .trigger()
                .elect()
                .await
                .map_err(|e| Status::unavailable(format!("raft stopped: {e}")))?;
        }
        Ok(Response::new(proto::TimeoutNowReply { electing }))
    }
}

/// Longest a `Topology` call may wait for a newer version.
const MAX_TOPOLOGY_WAIT_MS: u32 = 30_000;
/// How often a waiting `Topology` call looks at the oracle's state again.
const TOPOLOGY_POLL: Duration = Duration::from_millis(50);

/// Serves multicast submissions, timestamp announces and channel transmissions.
pub(crate) struct GroupService {
    coordinator: Arc<Coordinator>,
    streams: Arc<StreamCalls>,
}

impl GroupService {
    /// Serves through `coordinator`, counting the calls of its streams in `streams`.
    pub(crate) fn new(coordinator: Arc<Coordinator>, streams: Arc<StreamCalls>) -> Self {
        GroupService {
            coordinator,
            streams,
        }
    }
}

fn status(e: RequestError) -> Status {
    match e {
        // A destination this replica does not know: the topology may have changed since the
        // sender looked (a partition removed); it should refresh its view and try again.
        RequestError::Invalid(
            e @ (crate::multicast::MessageError::UnknownGroup(_)
            | crate::multicast::MessageError::RemovedGroup(_)),
        ) => Status::not_found(e.to_string()),
        RequestError::Invalid(e) => Status::invalid_argument(e.to_string()),
        RequestError::InvalidPayload(_) => Status::invalid_argument(e.to_string()),
        RequestError::Timeout(_) => Status::unavailable(e.to_string()),
        RequestError::Stopped => Status::unavailable(e.to_string()),
        // It took effect: not a refusal (a history must not say the command failed).
        RequestError::ReplyForgotten(_) => Status::already_exists(e.to_string()),
        // The client runs the read again under a new id (ClientError::AskAgain).
        RequestError::ReadNotKept(_) => Status::aborted(e.to_string()),
    }
}

/// Checks that a message between groups says it comes from the group that sends it: the
/// route the Group service's check put in the request's extensions names a replica of
/// `from_group`.
fn sent_by_group<T>(req: &Request<T>, from_group: u32, call: &str) -> Result<(), Status> {
    match req.extensions().get::<Route>().map(|r| r.from) {
        Some(Sender::Replica { group, .. }) if group.0 == from_group => Ok(()),
        Some(from) => Err(Status::permission_denied(format!(
            "{call} from group {from_group} sent by {from}"
        ))),
        None => Err(Status::invalid_argument(format!("unrouted {call}"))),
    }
}

/// Calls of one `MulticastStream` a replica holds at once, from reading a call until its
/// result is taken by the response stream (written out as far as HTTP/2 flow control lets
/// it); the stream is read no further until one is (flow control then holds the client
/// back). A client that never reads its results makes the replica hold at most this many.
const STREAM_CALLS_IN_FLIGHT: usize = 4096;

/// What the `MulticastStream`s of a replica hold, across streams.
#[derive(Debug, Default)]
pub struct StreamCalls {
    accepted: AtomicU64,
    held: AtomicU64,
    waiting: AtomicU64,
}

impl StreamCalls {
    /// Calls read from streams so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Calls read and not yet answered out: running, or their results waiting for the
    /// response stream.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Streams whose calls are not read further until a result is taken.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Most calls one stream is held at.
    pub fn limit(&self) -> u64 {
        STREAM_CALLS_IN_FLIGHT as u64
    }

    /// A place for the next call of a stream whose places are `room`, waiting while all are
    /// taken; `None` once the stream is over.
    async fn claim(self: &Arc<Self>, room: &Arc<Semaphore>) -> Option<Claim> {
        let permit = match room.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return None,
            Err(TryAcquireError::NoPermits) => {
                self.waiting.fetch_add(1, Ordering::Relaxed);
                let p = room.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                p.ok()?
            }
        };
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.held.fetch_add(1, Ordering::Relaxed);
        Some(Claim {
            _permit: permit,
            calls: self.clone(),
        })
    }
}

/// One call's place in its stream: taken when the call is read, given back (dropped) when
/// its result is taken by the response stream.
struct Claim {
    _permit: OwnedSemaphorePermit,
    calls: Arc<StreamCalls>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.calls.held.fetch_sub(1, Ordering::Relaxed);
    }
}
/// Results sent in one frame at most.
const STREAM_RESULTS_PER_FRAME: usize = 512;

/// The result of one streamed call, as the unary call would have answered it.
fn stream_result(tag: u64, r: Result<proto::MulticastReply, Status>) -> proto::MulticastResult {
    use proto::multicast_result::Result as R;
    proto::MulticastResult {
        tag,
        result: Some(match r {
            Ok(reply) => R::Reply(reply),
            Err(status) => R::Error(proto::CallError {
                code: status.code() as i32,
                message: status.message().to_string(),
            }),
        }),
    }
}

impl GroupService {
    async fn submit(
        coordinator: &Coordinator,
        req: proto::MulticastRequest,
    ) -> Result<proto::MulticastReply, Status> {
        let (outcome, reply) = coordinator.multicast(req).await.map_err(status)?;
        Ok(proto::MulticastReply {
            outcome: Some(outcome),
            reply,
        })
    }
}

type ResultStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<proto::MulticastResults, Status>> + Send>>;

#[tonic::async_trait]
impl proto::group_server::Group for GroupService {
    type MulticastStreamStream = ResultStream;

    async fn multicast_stream(
        &self,
        req: Request<tonic::Streaming<proto::MulticastCalls>>,
    ) -> Result<Response<ResultStream>, Status> {
        let mut calls = req.into_inner();
        // Each result travels with its call's claim: the channel holds at most
        // STREAM_CALLS_IN_FLIGHT results, however slowly the client reads them.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(proto::MulticastResult, Claim)>();
        let coordinator = self.coordinator.clone();
        let streams = self.streams.clone();
        let room = Arc::new(Semaphore::new(STREAM_CALLS_IN_FLIGHT));
        // Reads calls until the client closes the stream (or it breaks); each call runs on
        // its own, as a unary call would.
        tokio::spawn(async move {
            while let Ok(Some(batch)) = calls.message().await {
                for call in batch.calls {
                    let Some(claim) = streams.claim(&room).await else {
                        return;
                    };
                    let (coordinator, tx) = (coordinator.clone(), tx.clone());
                    tokio::spawn(async move {
                        let r = match call.request {
                            Some(req) => GroupService::submit(&coordinator, req).await,
                            None => Err(Status::invalid_argument(
                                "a streamed call without a request",
                            )),
                        };
                        // Gone when the client went away: the claim is given back with it.
                        let _ = tx.send((stream_result(call.tag, r), claim));
                    });
                }
            }
        });
        // Whatever is ready goes out in one frame, and the calls' places with it; the stream
        // ends once every call answered and the client closed its side.
        let out = futures::stream::unfold(rx, |mut rx| async move {
            let mut ready = Vec::new();
            match rx.recv_many(&mut ready, STREAM_RESULTS_PER_FRAME).await {
                0 => None,
                _ => {
                    let results = ready.into_iter().map(|(result, _claim)| result).collect();
                    Some((Ok(proto::MulticastResults { results }), rx))
                }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn multicast(
        &self,
        req: Request<proto::MulticastRequest>,
    ) -> Result<Response<proto::MulticastReply>, Status> {
        GroupService::submit(&self.coordinator, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn announce(
        &self,
        req: Request<proto::AnnounceBatch>,
    ) -> Result<Response<proto::AnnounceBatchReply>, Status> {
        sent_by_group(&req, req.get_ref().from_group, "announce")?;
        let outcome = self
            .coordinator
            .announce(req.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(proto::AnnounceBatchReply {
            outcome: Some(outcome),
        }))
    }

    /// Only the oracle's leader answers, after a read index (never from a follower's
    /// applied state, which may lag or be cut off); others refer the caller to it. A call
    /// waits up to `wait_ms` for a version newer than `known_version`.
    async fn topology(
        &self,
        req: Request<proto::TopologyRequest>,
    ) -> Result<Response<proto::TopologyReply>, Status> {
        let req = req.into_inner();
        let wait = Duration::from_millis(u64::from(req.wait_ms.min(MAX_TOPOLOGY_WAIT_MS)));
        let deadline = Instant::now() + wait;
        let c = &self.coordinator;
        loop {
            let Some(local) = c.published_topology() else {
                return Err(Status::failed_precondition(
                    "the topology is served by the oracle's replicas",
                ));
            };
            if !c.is_leader() {
                return Ok(Response::new(proto::TopologyReply {
                    not_leader: Some(c.leader_hint()),
                    ..Default::default()
                }));
            }
            if local.version > req.known_version || Instant::now() >= deadline {
                c.read_barrier().await.map_err(|e| {
                    Status::unavailable(format!("cannot confirm the oracle's leadership: {e}"))
                })?;
                let confirmed = c.published_topology().unwrap_or(local);
                return Ok(Response::new(confirmed));
            }
            // Admin commands are rare: look again shortly rather than wiring a notification
            // into the state machine's apply path.
            tokio::time::sleep(
                TOPOLOGY_POLL.min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }

    async fn channel(
        &self,
        req: Request<proto::ChannelBatch>,
    ) -> Result<Response<proto::ChannelAck>, Status> {
        // The coordinator checks that every message of the batch has the first one's source.
        if let Some(first) = req.get_ref().messages.first() {
            sent_by_group(&req, first.from_group, "channel batch")?;
        }
        let outcome = self
            .coordinator
            .channel(req.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ChannelAck {
            outcome: Some(outcome),
        }))
    }
}
