//! A client of one group: sends requests to its leader, follows `not_leader` hints, rotates
//! through members when a replica is unreachable, and gives up at a deadline.
//!
//! Used by application clients (multicast submission) and by group leaders talking to other
//! groups (timestamp announces, channel transmissions). Every call goes through one `call`
//! helper, so redirect and retry rules are the same for all RPCs.

use crate::channel::lazy_channel;
use crate::group::faults::Faults;
pub(crate) use crate::group::state_machine::Completion;
use crate::ids::{node_id_of_ordinal, GroupId};
use crate::multicast::McastMessage;
use crate::proto::group_client::GroupClient as RpcClient;
use crate::proto::{self, LeaderHint};
use crate::route::{is_misaddressed, Member as RouteMember, Route, Sender, Stamp};
use crate::topology::Topology;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;

/// Longest wait for one member's answer before trying the next: longer than a healthy group
/// takes to deliver even a multi-group message under load, short enough that a partitioned
/// leader does not hold clients for long.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

/// Why a call to a group failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No replica answered as leader before the deadline (transient: retry later).
    #[error("group {group} unavailable: {last}")]
    Unavailable {
        /// The group.
        group: GroupId,
        /// The last failure seen.
        last: String,
    },
    /// The group rejected the request (permanent: do not retry it unchanged).
    #[error("group {group} rejected the request: {message}")]
    Rejected {
        /// The group.
        group: GroupId,
        /// The reason it gave.
        message: String,
    },
    /// A member address does not parse.
    #[error("bad address {addr:?}: {source}")]
    BadAddress {
        /// The address.
        addr: String,
        /// Why it is bad.
        #[source]
        source: tonic::transport::Error,
    },
    /// The group is not part of the topology.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The message is a read the group answered before without keeping the reply (ABORTED):
    /// run it again as a new message.
    #[error("group {group}: {message}")]
    AskAgain {
        /// The group.
        group: GroupId,
        /// The reason it gave.
        message: String,
    },
    /// The group delivered and answered the message so long ago that it no longer keeps the
    /// reply (ALREADY_EXISTS): the message took effect, what it returned is lost.
    #[error("group {group}: {message}")]
    ReplyForgotten {
        /// The group.
        group: GroupId,
        /// The reason it gave.
        message: String,
    },
    /// Destinations of one message answered differently (one delivered it, another refused
    /// it or did not answer): it may have taken effect.
    #[error("destinations disagree: {0}")]
    Disagree(String),
    /// The group does not know a destination of the message (NOT_FOUND): the topology
    /// changed since the caller looked; refresh it and try again.
    #[error("group {group} does not know a destination: {message}")]
    UnknownDestination {
        /// The group.
        group: GroupId,
        /// The reason it gave.
        message: String,
    },
}

/// What a reply says about leadership.
pub enum Answer<T> {
    /// The request was handled.
    Done(T),
    /// The replica is not the leader.
    NotLeader(Option<LeaderHint>),
}

/// A gRPC client of one member of a group: every request carries the route to that member.
pub type MemberRpc = RpcClient<InterceptedService<Channel, Stamp>>;

struct Member {
    addr: String,
    stamp: Stamp,
    /// Replaced by a fresh connection when the member's address leads elsewhere.
    rpc: Mutex<MemberRpc>,
    /// The submissions stream to the member, opened on first use and again after it broke.
    stream: Mutex<Option<CallStream>>,
}

/// Calls a `MulticastStream` sends at most in one frame.
const CALLS_PER_FRAME: usize = 512;

type CallResult = Result<proto::MulticastReply, tonic::Status>;

/// One submission waiting for its batch.
struct StreamCall {
    request: proto::MulticastRequest,
    done: oneshot::Sender<CallResult>,
}

/// The client half of one `MulticastStream` to one member: submissions queued here go out
/// in batches (everything that queued up while the last batch was being written); results
/// come back tagged, in any order. When the stream breaks every call waiting on it fails
/// as unavailable, and the next call opens a new one.
struct CallStream {
    calls: mpsc::UnboundedSender<StreamCall>,
}

impl CallStream {
    fn open(mut rpc: MemberRpc) -> CallStream {
        let (calls, mut queued) = mpsc::unbounded_channel::<StreamCall>();
        tokio::spawn(async move {
            let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<CallResult>>>> = Arc::default();
            let (frames, outgoing) = mpsc::channel::<proto::MulticastCalls>(4);
            let writer = {
                let waiting = waiting.clone();
                tokio::spawn(async move {
                    let mut next_tag = 0u64;
                    let mut batch = Vec::with_capacity(CALLS_PER_FRAME);
                    while queued.recv_many(&mut batch, CALLS_PER_FRAME).await > 0 {
                        let mut frame = Vec::with_capacity(batch.len());
                        {
                            let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
                            for call in batch.drain(..) {
                                next_tag += 1;
                                w.insert(next_tag, call.done);
                                frame.push(proto::MulticastCall {
                                    tag: next_tag,
                                    request: Some(call.request),
                                });
                            }
                        }
                        if frames
                            .send(proto::MulticastCalls { calls: frame })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                })
            };
            let fail_all = |status: tonic::Status| {
                let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
                for (_, done) in w.drain() {
                    let _ = done.send(Err(status.clone()));
                }
            };
            match rpc
                .multicast_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
                .await
            {
                Ok(response) => {
                    let mut results = response.into_inner();
                    let end = loop {
                        match results.message().await {
                            Ok(Some(batch)) => {
                                let mut w = waiting.lock().unwrap_or_else(|p| p.into_inner());
                                for r in batch.results {
                                    if let Some(done) = w.remove(&r.tag) {
                                        let _ = done.send(call_result(r.result));
                                    }
                                }
                            }
                            Ok(None) => break tonic::Status::unavailable("the stream ended"),
                            Err(status) => break status,
                        }
                    };
                    writer.abort();
                    fail_all(end);
                }
                Err(status) => {
                    writer.abort();
                    fail_all(status);
                }
            }
        });
        CallStream { calls }
    }
}

/// A streamed call's result as the unary call would have returned it.
fn call_result(r: Option<proto::multicast_result::Result>) -> CallResult {
    use proto::multicast_result::Result as R;
    match r {
        Some(R::Reply(reply)) => Ok(reply),
        Some(R::Error(e)) => Err(tonic::Status::new(tonic::Code::from(e.code), e.message)),
        None => Err(tonic::Status::internal(
            "a streamed result without an outcome",
        )),
    }
}

impl Member {
    fn dial(addr: &str, stamp: &Stamp) -> Result<MemberRpc, ClientError> {
        let ch = lazy_channel(addr).map_err(|source| ClientError::BadAddress {
            addr: addr.to_string(),
            source,
        })?;
        Ok(RpcClient::with_interceptor(ch, stamp.clone()))
    }

    fn rpc(&self) -> MemberRpc {
        self.rpc.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Drops the connection and dials the member's address again (resolving its name
    /// afresh): the old one leads to another replica.
    fn redial(&self) {
        if let Ok(rpc) = Member::dial(&self.addr, &self.stamp) {
            *self.rpc.lock().unwrap_or_else(|p| p.into_inner()) = rpc;
        }
        *self.stream.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Submits `request` over the member's `MulticastStream`, opening it if need be.
    async fn stream_call(&self, request: proto::MulticastRequest) -> CallResult {
        let (done, result) = oneshot::channel();
        let mut call = StreamCall { request, done };
        for _ in 0..2 {
            let sent = {
                let mut stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
                let open = stream.get_or_insert_with(|| CallStream::open(self.rpc()));
                match open.calls.send(call) {
                    Ok(()) => None,
                    Err(mpsc::error::SendError(back)) => {
                        // The stream broke since: open another one.
                        *stream = None;
                        Some(back)
                    }
                }
            };
            match sent {
                None => break,
                Some(back) => call = back,
            }
        }
        result
            .await
            .unwrap_or_else(|_| Err(tonic::Status::unavailable("the stream closed")))
    }
}

/// A client of one group.
pub struct GroupClient {
    group: GroupId,
    members: Vec<Arc<Member>>,
    leader: AtomicUsize,
    /// When set, calls from `self_addr` honour the test fault table.
    origin: Option<(Arc<Faults>, String)>,
}

impl GroupClient {
    /// A client of `group` of cluster `cluster`, whose replicas listen on `addrs` (index =
    /// ordinal), calling as `from`.
    pub fn new(
        cluster: &str,
        group: GroupId,
        addrs: &[String],
        from: Sender,
    ) -> Result<Self, ClientError> {
        let members = addrs
            .iter()
            .enumerate()
            .map(|(ordinal, a)| {
                let stamp = Stamp::new(&Route {
                    to: RouteMember {
                        cluster: cluster.to_string(),
                        group,
                        node: node_id_of_ordinal(ordinal),
                    },
                    from,
                });
                Ok(Arc::new(Member {
                    addr: a.clone(),
                    rpc: Mutex::new(Member::dial(a, &stamp)?),
                    stamp,
                    stream: Mutex::new(None),
                }))
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(GroupClient {
            group,
            members,
            leader: AtomicUsize::new(0),
            origin: None,
        })
    }

    /// A client of group `g` of `topology`, calling as a client (not a replica).
    pub fn for_topology(topology: &Topology, g: GroupId) -> Result<Self, ClientError> {
        let addrs = topology
            .groups
            .get(&g)
            .ok_or(ClientError::UnknownGroup(g))?;
        GroupClient::new(&topology.cluster, g, addrs, Sender::Client)
    }

    /// Makes the calls of this client subject to the fault table, as sent from `self_addr`.
    pub(crate) fn with_faults(mut self, faults: Arc<Faults>, self_addr: String) -> Self {
        self.origin = Some((faults, self_addr));
        self
    }

    /// The group this client talks to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Calls the leader with `f`, following hints and rotating members until `deadline`. One
    /// attempt waits at most [`ATTEMPT_TIMEOUT`]: a member cut off by the network drops
    /// requests silently, and the client must move on to the others (resubmitting a message
    /// is safe: groups answer a known message id with its one outcome).
    pub async fn call<T, F, Fut>(&self, deadline: Instant, f: F) -> Result<T, ClientError>
    where
        F: Fn(MemberRpc) -> Fut,
        Fut: Future<Output = Result<Answer<T>, tonic::Status>>,
    {
        self.call_member(deadline, |m| f(m.rpc())).await
    }

    /// [`GroupClient::call`], with the member itself (its stream) at hand.
    async fn call_member<T, F, Fut>(&self, deadline: Instant, f: F) -> Result<T, ClientError>
    where
        F: Fn(Arc<Member>) -> Fut,
        Fut: Future<Output = Result<Answer<T>, tonic::Status>>,
    {
        let n = self.members.len();
        let mut last;
        let mut backoff = Duration::from_millis(5);
        loop {
            let i = self.leader.load(Ordering::Relaxed) % n.max(1);
            let member = &self.members[i];
            let cut = self
                .origin
                .as_ref()
                .is_some_and(|(faults, me)| faults.is_cut(me, &member.addr));
            let outcome = if cut {
                Err(tonic::Status::unavailable("link is cut"))
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), f(member.clone())).await {
                    Ok(r) => r,
                    Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                        "no answer within {:?}",
                        left.min(ATTEMPT_TIMEOUT)
                    ))),
                }
            };
            let mut rotate = true;
            match outcome {
                Ok(Answer::Done(v)) => return Ok(v),
                Ok(Answer::NotLeader(hint)) => {
                    last = format!("{} is not the leader", member.addr);
                    if let Some(j) =
                        hint.and_then(|h| self.members.iter().position(|m| m.addr == h.leader_addr))
                    {
                        if j != i {
                            self.leader.store(j, Ordering::Relaxed);
                            rotate = false;
                            backoff = Duration::from_millis(5);
                        }
                    }
                }
                Err(status) if is_misaddressed(&status) => {
                    // The address leads to another replica now (a reused pod IP or port):
                    // redial, so that the next attempt resolves the member's name afresh.
                    member.redial();
                    last = format!("{}: {}", member.addr, status.message());
                }
                Err(status) if status.code() == tonic::Code::Aborted => {
                    return Err(ClientError::AskAgain {
                        group: self.group,
                        message: status.message().to_string(),
                    })
                }
                Err(status) if status.code() == tonic::Code::AlreadyExists => {
                    return Err(ClientError::ReplyForgotten {
                        group: self.group,
                        message: status.message().to_string(),
                    })
                }
                Err(status) if status.code() == tonic::Code::NotFound => {
                    return Err(ClientError::UnknownDestination {
                        group: self.group,
                        message: status.message().to_string(),
                    })
                }
                Err(status) => match status.code() {
                    tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unimplemented => {
                        return Err(ClientError::Rejected {
                            group: self.group,
                            message: status.message().to_string(),
                        })
                    }
                    _ => last = format!("{}: {}", member.addr, status.message()),
                },
            }
            if rotate {
                // Rotate before giving up too: the next call (a short-deadline peer call,
                // say) must not start again at a member that did not answer.
                let _ = self.leader.compare_exchange(
                    i,
                    (i + 1) % n.max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable {
                    group: self.group,
                    last,
                });
            }
            if rotate {
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    }

    /// Submits `msg` to this group (one of its destinations) and waits for its delivery here;
    /// returns the final timestamp.
    pub async fn multicast(
        &self,
        msg: &McastMessage,
        deadline: Instant,
    ) -> Result<u64, ClientError> {
        self.submit(msg, deadline).await.map(|c| c.ts)
    }

    /// Submits `msg` to this group (one of its destinations) and waits until the group's
    /// application answered it; returns the final timestamp and the reply.
    pub async fn submit(
        &self,
        msg: &McastMessage,
        deadline: Instant,
    ) -> Result<Completion, ClientError> {
        let req = proto::MulticastRequest {
            group: self.group.0,
            message: Some(msg.to_proto()),
        };
        self.call_member(deadline, |member| {
            let req = req.clone();
            async move {
                let reply = member.stream_call(req).await?;
                match reply.outcome {
                    Some(proto::multicast_reply::Outcome::DeliveredTs(ts)) => {
                        Ok(Answer::Done(Completion {
                            ts,
                            reply: reply.reply,
                        }))
                    }
                    // Not ordered: no timestamp.
                    Some(proto::multicast_reply::Outcome::ReadIndex(_)) => {
                        Ok(Answer::Done(Completion {
                            ts: 0,
                            reply: reply.reply,
                        }))
                    }
                    Some(proto::multicast_reply::Outcome::NotLeader(h)) => {
                        Ok(Answer::NotLeader(Some(h)))
                    }
                    None => Err(tonic::Status::internal("empty multicast reply")),
                }
            }
        })
        .await
    }
}
