//! The leader-side runtime of a group's multicast and channel: what the log cannot do alone.
//!
//! Only the current leader of a group acts; followers keep the same replicated state and take
//! over when elected. The coordinator
//! * accepts client multicasts: logs `start(m)` and answers once `m` is delivered here;
//! * exchanges local timestamps of multi-group messages with the other destination leaders
//!   (`Announce`), forwarding the whole message so a destination that never got it from the
//!   client still orders it, and logs `finalize(m, max)` once every destination's local
//!   timestamp is known;
//! * transmits channel outboxes, a window of batches in flight per destination
//!   ([`SendWindow`]), logs the trims as acknowledgements come back (without waiting for
//!   them), and logs channel messages that other groups transmit to it.
//!
//! What it learns is volatile and safe to lose: a group's local timestamp for a message is
//! fixed once logged, so facts collected from other groups never go stale; anything lost in a
//! leader change is re-announced or retransmitted by the periodic tick.

use crate::group::faults::Faults;
use crate::group::live::LiveTopology;
use crate::group::proposer::Proposer;
use crate::group::read_index::{ReadIndex, ReadRule};
use crate::group::replies::ReplyStatus;
use crate::group::state_machine::{GroupEvent, Shared};
use crate::group::types::{Op, Raft};
use crate::ids::{GroupId, MsgId, NodeId};
use crate::multicast::channel::SendWindow;
use crate::multicast::skeen::Status;
use crate::multicast::{McastMessage, MessageError};
use crate::oracle::Oracle;
use crate::proto::{self, LeaderHint};
use crate::route::Sender;
use crate::topology::Topology;
use openraft::ServerState;
use prometheus::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod announce;
mod channel;

/// How often the leader re-examines pending work.
const TICK: Duration = Duration::from_millis(50);
/// After how long an unanswered announce, proposal or transmission is repeated.
const RETRY_AFTER: Duration = Duration::from_millis(1000);
/// Deadline of one leader-to-leader RPC.
const PEER_DEADLINE: Duration = Duration::from_millis(1000);
/// How long channel transmissions may stay unanswered before they are sent again.
const CHANNEL_PATIENCE: Duration = Duration::from_secs(4);
/// How long the bookkeeping of a message proposed but never ordered here is kept.
const UNORDERED_PATIENCE: Duration = Duration::from_secs(60);
/// How long a client multicast waits for delivery before the client is told to retry.
const DELIVERY_WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Volatile {
    /// Local timestamps of messages, per destination group, as learned so far.
    collected: HashMap<MsgId, BTreeMap<GroupId, u64>>,
    /// When each message was last announced to the other destinations.
    announced: HashMap<MsgId, Instant>,
    /// When `start` / `finalize` were last proposed for a message.
    started: HashMap<MsgId, Instant>,
    finalized: HashMap<MsgId, Instant>,
    /// The channel transmission window per destination.
    windows: HashMap<GroupId, SendWindow>,
    /// Announces waiting for the next batch to each destination.
    announce_queue: HashMap<GroupId, Vec<(McastMessage, u64)>>,
    /// Announce batches in flight per destination.
    announcing: HashMap<GroupId, usize>,
    /// Per other group, the watermark last proposed for this group's log, and when.
    watermarks_logged: HashMap<GroupId, (u64, Instant)>,
    /// Per other group, the watermark last sent to it on its own, and when.
    watermarks_sent: HashMap<GroupId, (u64, Instant)>,
}

/// The multicast and channel runtime of one replica.
pub struct Coordinator {
    group: GroupId,
    node_id: NodeId,
    members: Vec<String>,
    /// The groups and a client of each, followed from the oracle at run time.
    live: Arc<LiveTopology>,
    raft: Raft,
    shared: Arc<Shared>,
    proposer: Proposer,
    volatile: Mutex<Volatile>,
    /// Set once the replica is handing leadership over: it then acts as a follower (refers
    /// clients to the group, stops leader duties) so its log stops growing.
    handing_over: AtomicBool,
    /// Time from a client's submission arriving at this leader to its reply.
    latency: Histogram,
    /// How read-only commands are answered.
    read_rule: ReadRule,
    /// The read loop that answers them off the log.
    reads: Arc<ReadIndex>,
    /// Read-only commands answered off the log so far.
    reads_served: AtomicU64,
    /// Per source group, the sequence number after the last channel message this replica
    /// proposed (committed or not): a transmission that starts beyond it waits a little for
    /// the one before, which is in flight too.
    receiving: Mutex<HashMap<GroupId, u64>>,
    /// Woken whenever `receiving` advances.
    received: tokio::sync::Notify,
}

/// What a [`Coordinator`] is built from.
pub struct CoordinatorParts {
    /// The replica's group.
    pub group: GroupId,
    /// The replica's Raft node id.
    pub node_id: NodeId,
    /// Addresses of the group's members (index = ordinal).
    pub members: Vec<String>,
    /// Addresses of every group.
    pub topology: Topology,
    /// The replica's Raft handle.
    pub raft: Raft,
    /// The replicated state, waiters and events.
    pub shared: Arc<Shared>,
    /// The replica's batching proposer.
    pub proposer: Proposer,
    /// Link faults honoured by calls to other groups.
    pub faults: Arc<Faults>,
    /// Where the latency of served submissions is observed.
    pub latency: Histogram,
    /// How read-only commands are answered.
    pub read_rule: ReadRule,
}

/// A request that cannot be served, mapped to a gRPC status by the service.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] MessageError),
    /// The message was not delivered in time; the client should retry.
    #[error("message not delivered within {0:?}; retry")]
    Timeout(Duration),
    /// The replica is shutting down.
    #[error("replica is shutting down")]
    Stopped,
    /// The application refused the message's payload.
    #[error("malformed command: {0}")]
    InvalidPayload(crate::app::InvalidCommand),
    /// The message was answered so long ago that its reply is no longer kept.
    #[error("message {0} was answered long ago; its reply is no longer kept")]
    ReplyForgotten(MsgId),
    /// The message is a read that was answered before; reads' replies are not kept.
    #[error("message {0} is a read answered before (its reply is not kept): run it again as a new message")]
    ReadNotKept(MsgId),
}

impl Coordinator {
    /// The coordinator of one replica, from the parts the replica assembled.
    pub fn new(parts: CoordinatorParts) -> Result<Arc<Self>, crate::group::ClientError> {
        let CoordinatorParts {
            group,
            node_id,
            members,
            topology,
            raft,
            shared,
            proposer,
            faults,
            latency,
            read_rule,
        } = parts;
        let self_addr = members
            .get((node_id - 1) as usize)
            .cloned()
            .unwrap_or_default();
        let from = Sender::Replica {
            group,
            node: node_id,
        };
        let live = LiveTopology::with_faults(&topology, from, group, faults, self_addr)?;
        Ok(Arc::new(Coordinator {
            group,
            node_id,
            members,
            live,
            reads: ReadIndex::new(raft.clone()),
            raft,
            shared,
            proposer,
            volatile: Mutex::new(Volatile::default()),
            handing_over: AtomicBool::new(false),
            latency,
            read_rule,
            reads_served: AtomicU64::new(0),
            receiving: Mutex::default(),
            received: tokio::sync::Notify::new(),
        }))
    }

    fn vol(&self) -> MutexGuard<'_, Volatile> {
        self.volatile.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when this replica currently leads its group (and is not handing over).
    pub fn is_leader(&self) -> bool {
        if self.handing_over.load(Ordering::Relaxed) {
            return false;
        }
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// Stops acting as leader for good (the replica is about to hand leadership over and
    /// stop): submissions are referred elsewhere and no new entries are proposed by it.
    pub(crate) fn stop_leading(&self) {
        self.handing_over.store(true, Ordering::Relaxed);
    }

    /// Where the leader is, as far as this replica knows.
    pub(crate) fn leader_hint(&self) -> LeaderHint {
        let leader = self.raft.metrics().borrow().current_leader;
        LeaderHint {
            leader_id: leader.unwrap_or(0),
            leader_addr: leader
                .and_then(|id| self.members.get((id as usize).wrapping_sub(1)))
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Groups a message may name: retired partitions too, so a message accepted before their
    /// removal still completes (new messages naming them are refused by the replicated
    /// lifecycle, see [`Coordinator::multicast`]).
    fn ordered_group(&self) -> impl Fn(GroupId) -> bool + '_ {
        |g| self.live.known(g)
    }

    /// The topology this replica follows.
    pub(crate) fn live(&self) -> &Arc<LiveTopology> {
        &self.live
    }

    /// This replica's Raft node id.
    pub(crate) fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The topology the oracle's state (as this replica applied it) publishes, members filled
    /// in from this replica's view where the oracle has none; `None` unless this replica
    /// belongs to the oracle.
    pub(crate) fn published_topology(&self) -> Option<proto::TopologyReply> {
        let published = {
            let state = self.shared.state();
            state.app.as_any().downcast_ref::<Oracle>()?.published()
        };
        let view = self.live.topology();
        Some(proto::TopologyReply {
            version: published.version,
            next_partition: published.next_partition.0,
            not_leader: None,
            partitions: published
                .partitions
                .into_iter()
                .map(|p| proto::GroupMembers {
                    group: p.partition.0,
                    members: p
                        .members
                        .or_else(|| view.groups.get(&p.partition).cloned())
                        .unwrap_or_default(),
                    accepting: p.accepting,
                    joining: false,
                })
                .chain(
                    published
                        .joining
                        .into_iter()
                        .map(|(g, members)| proto::GroupMembers {
                            group: g.0,
                            members,
                            accepting: false,
                            joining: true,
                        }),
                )
                .collect(),
        })
    }

    /// Confirms that this replica still leads its group and has applied everything
    /// committed when the call began (one read-index round, shared with every read waiting
    /// for one): what its applied state says afterwards is not older than the call.
    pub(crate) async fn read_barrier(
        &self,
    ) -> Result<u64, crate::group::read_index::ReadIndexError> {
        self.reads.barrier().await
    }

    /// Makes sure this replica knows every group in `groups` before a request naming them is
    /// judged: a group it does not know may have been added at run time, so it asks the
    /// oracle once (a partition added by the operator is announced there before any client
    /// or group may use it).
    async fn learn_groups(&self, groups: impl IntoIterator<Item = u32>) {
        if groups.into_iter().any(|g| !self.live.known(GroupId(g))) {
            if let Err(e) = self.live.refresh(Duration::ZERO).await {
                tracing::debug!(group = %self.group, error = %e, "topology refresh failed");
            }
        }
    }

    /// Serves a client multicast addressed to this group: answers with the application's reply
    /// once the message is delivered and answered here.
    #[tracing::instrument(
        level = "debug",
        name = "submit",
        skip_all,
        fields(group = %self.group, msg = tracing::field::Empty)
    )]
    pub async fn multicast(
        &self,
        req: proto::MulticastRequest,
    ) -> Result<(proto::multicast_reply::Outcome, Vec<u8>), RequestError> {
        use proto::multicast_reply::Outcome;
        if let Some(m) = &req.message {
            self.learn_groups(m.dests.iter().copied()).await;
        }
        // Retired partitions pass here: a message accepted before their removal may be
        // asked again (its reply was lost); new ones naming them are refused below.
        let msg = McastMessage::from_proto(req.message, self.ordered_group())?;
        tracing::Span::current().record("msg", tracing::field::display(msg.id));
        if req.group != self.group.0 {
            return Err(MessageError::WrongReceiver {
                addressed: req.group,
                receiver: self.group.0,
            }
            .into());
        }
        if !msg.dests.contains(&self.group) {
            return Err(MessageError::NotADestination(self.group.0).into());
        }
        if !self.is_leader() {
            return Ok((Outcome::NotLeader(self.leader_hint()), Vec::new()));
        }
        let arrived = Instant::now();
        if let Some((index, reply)) = self.read(&msg).await {
            self.latency.observe(arrived.elapsed().as_secs_f64());
            return Ok((Outcome::ReadIndex(index), reply));
        }
        let (status, waiter) = {
            let state = self.shared.state();
            if let Err(why) = state.app.validate(&msg) {
                return Err(RequestError::InvalidPayload(why));
            }
            match state.replies.status(msg.id) {
                ReplyStatus::Kept { ts, reply } => {
                    return Ok((Outcome::DeliveredTs(ts), reply.to_vec()))
                }
                ReplyStatus::Forgotten => return Err(RequestError::ReplyForgotten(msg.id)),
                ReplyStatus::NotKept { .. } => return Err(RequestError::ReadNotKept(msg.id)),
                ReplyStatus::Unanswered => {}
            }
            let status = state.skeen.status(msg.id);
            if status == Status::Forgotten {
                // Below the sender's own floor: a copy of a message it gave up on.
                return Err(RequestError::ReplyForgotten(msg.id));
            }
            // A new message may not name a partition this group knows to be removed (this
            // partition itself included): the sender's topology is stale. (One it knows
            // already is answered as usual: it was accepted before the removal.)
            if status == Status::Unknown {
                if let Some(lifecycle) = state.app.lifecycle() {
                    if let Some(g) = msg.dests.iter().find(|g| lifecycle.is_removed(**g)) {
                        return Err(MessageError::RemovedGroup(g.0).into());
                    }
                }
            }
            (status, self.shared.waiters.register(msg.id))
        };
        if status == Status::Unknown {
            self.vol().started.insert(msg.id, arrived);
            self.proposer.submit(Op::Start(msg)).await;
        }
        match tokio::time::timeout(DELIVERY_WAIT, waiter).await {
            Ok(Ok(c)) => {
                self.latency.observe(arrived.elapsed().as_secs_f64());
                Ok((Outcome::DeliveredTs(c.ts), c.reply))
            }
            Ok(Err(_)) => Err(RequestError::Stopped),
            Err(_) => Err(RequestError::Timeout(DELIVERY_WAIT)),
        }
    }

    /// Answers `msg` off the log when it is a read-only command that the application can
    /// answer from this leader's state after a read index ([`ReadIndex`]): the read index and
    /// the reply. `None`: it is ordered as usual (not a read, the variables are not all here
    /// or an unfinished command touches them, or no read index could be had).
    async fn read(&self, msg: &McastMessage) -> Option<(u64, Vec<u8>)> {
        if self.read_rule == ReadRule::Log || !self.shared.state().app.reads_only(msg) {
            return None;
        }
        let index = match self.read_rule {
            ReadRule::Unconfirmed => 0,
            _ => match self.reads.barrier().await {
                Ok(index) => index,
                Err(e) => {
                    tracing::debug!(group = %self.group, error = %e, "read through the log");
                    return None;
                }
            },
        };
        if self.handing_over.load(Ordering::Relaxed) {
            return None;
        }
        let reply = self.shared.state().app.query(msg)?;
        self.reads_served.fetch_add(1, Ordering::Relaxed);
        Some((index, reply))
    }

    /// Read-only commands this replica answered off the log so far.
    pub fn reads_served(&self) -> u64 {
        self.reads_served.load(Ordering::Relaxed)
    }

    /// Read-index rounds this replica ran so far (each answers every read waiting for it).
    pub fn read_rounds(&self) -> u64 {
        self.reads.rounds()
    }

    /// Runs the event loop until `events` closes.
    pub async fn run(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<GroupEvent>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    None => return,
                    Some(ev) => self.on_event(ev).await,
                },
                _ = tick.tick() => {
                    ticks += 1;
                    self.on_tick(ticks).await;
                }
            }
        }
    }

    /// Entries of the leader-side bookkeeping, over every message.
    pub fn bookkeeping(&self) -> usize {
        let v = self.vol();
        v.collected.len() + v.announced.len() + v.started.len() + v.finalized.len()
    }

    /// Drops the leader-side bookkeeping of messages no longer pending here: delivered ones,
    /// and those never ordered here (late announces judged stale when applied) after
    /// [`UNORDERED_PATIENCE`].
    fn forget_settled(&self) {
        let state = self.shared.state();
        let mut v = self.vol();
        let settled: Vec<MsgId> = v
            .collected
            .keys()
            .chain(v.announced.keys())
            .chain(v.started.keys())
            .chain(v.finalized.keys())
            .copied()
            .filter(|id| match state.skeen.status(*id) {
                Status::Tentative(_) | Status::Final(_) => false,
                Status::Unknown => v
                    .started
                    .get(id)
                    .is_none_or(|t| t.elapsed() > UNORDERED_PATIENCE),
                Status::Delivered(_) | Status::Forgotten => true,
            })
            .collect();
        for id in settled {
            v.collected.remove(&id);
            v.announced.remove(&id);
            v.started.remove(&id);
            v.finalized.remove(&id);
        }
    }

    async fn on_event(self: &Arc<Self>, ev: GroupEvent) {
        match ev {
            GroupEvent::Delivered(id) => {
                let mut v = self.vol();
                v.collected.remove(&id);
                v.announced.remove(&id);
                v.started.remove(&id);
                v.finalized.remove(&id);
            }
            GroupEvent::Assigned(id) => {
                if !self.is_leader() {
                    return;
                }
                let found = self
                    .shared
                    .state()
                    .skeen
                    .pending_message(id)
                    .map(|(m, ts)| (m.clone(), ts));
                if let Some((msg, ts)) = found {
                    self.announce_to_others(&msg, ts);
                    self.try_finalize(&msg, ts).await;
                }
            }
            GroupEvent::ChannelDirty(dst) => {
                if self.is_leader() {
                    self.transmit(dst);
                }
            }
        }
    }

    async fn on_tick(self: &Arc<Self>, ticks: u64) {
        if ticks.is_multiple_of(100) {
            self.shared.waiters.prune();
            self.forget_settled();
        }
        if !self.is_leader() {
            return;
        }
        self.push_watermarks();
        let tentative: Vec<(McastMessage, u64)> = self
            .shared
            .state()
            .skeen
            .tentative()
            .map(|(m, ts)| (m.clone(), ts))
            .collect();
        for (msg, ts) in &tentative {
            let stale = self
                .vol()
                .announced
                .get(&msg.id)
                .is_none_or(|t| t.elapsed() > RETRY_AFTER);
            if stale {
                // Announced long ago (or by a previous leader): ask again, and let the
                // answers drive finalisation.
                self.announce_to_others(msg, *ts);
                self.try_finalize(msg, *ts).await;
            }
        }
        let dirty: Vec<GroupId> = self
            .shared
            .state()
            .channel
            .outboxes()
            .map(|(g, _)| g)
            .collect();
        for dst in dirty {
            self.channel_tick(dst).await;
        }
    }
}
