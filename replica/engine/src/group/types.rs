//! The openraft type configuration of a group and the entries of its log.

use crate::ids::{GroupId, MsgId, NodeId};
use crate::multicast::McastMessage;
use serde::{Deserialize, Serialize};
use std::io::Cursor;

/// One operation in a group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Skeen `start(m)`: order `m` in this group (local timestamp, or final for one group).
    Start(McastMessage),
    /// Skeen `start(m)` for a message learnt from the announce of another destination `from`,
    /// which gave it the local timestamp `local_ts` (judged by [`crate::multicast::skeen::SkeenState::learn`]).
    Learn {
        /// The message.
        msg: McastMessage,
        /// The announcing group.
        from: GroupId,
        /// The local timestamp `from` gave it.
        local_ts: u64,
    },
    /// Group `from`'s watermark reached this group: it holds nothing pending below `ts`.
    Watermark {
        /// The group.
        from: GroupId,
        /// Its watermark.
        ts: u64,
    },
    /// Skeen `finalize(m, ts)`: the final timestamp, max of all destinations' local ones.
    Final {
        /// The message.
        id: MsgId,
        /// Its final timestamp.
        ts: u64,
    },
    /// The group sends `payload` to group `dst` over the reliable channel.
    ChannelSend {
        /// Destination group.
        dst: GroupId,
        /// Opaque payload.
        payload: Vec<u8>,
    },
    /// A channel message from group `from` enters this group's log.
    ChannelReceive {
        /// Source group.
        from: GroupId,
        /// Its FIFO sequence number at the source.
        seq: u64,
        /// Opaque payload.
        payload: Vec<u8>,
    },
    /// Group `dst` acknowledged every channel message below `upto`.
    ChannelTrim {
        /// Destination group.
        dst: GroupId,
        /// First unacknowledged sequence number.
        upto: u64,
    },
}

impl Op {
    /// The operation's name, for logs and spans.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Start(_) => "start",
            Op::Learn { .. } => "learn",
            Op::Watermark { .. } => "watermark",
            Op::Final { .. } => "final",
            Op::ChannelSend { .. } => "channel_send",
            Op::ChannelReceive { .. } => "channel_receive",
            Op::ChannelTrim { .. } => "channel_trim",
        }
    }

    /// The multicast message the operation orders, if it orders one.
    pub(crate) fn msg_id(&self) -> Option<MsgId> {
        match self {
            Op::Start(m) | Op::Learn { msg: m, .. } => Some(m.id),
            Op::Final { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// A log entry: a batch of operations proposed together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The operations, applied in order.
    pub ops: Vec<Op>,
    /// The proposing leader's wall-clock time, in milliseconds since the Unix epoch (0: none).
    /// The group's *log time* is the largest seen so far, so it never goes back when a leader
    /// with a slower clock takes over; client sessions expire by it.
    pub at_ms: u64,
}

impl Request {
    /// An entry of `ops` stamped with this machine's wall-clock time.
    pub fn now(ops: Vec<Op>) -> Self {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Request { ops, at_ms }
    }
}

/// What applying an entry returns to the proposer (nothing: results flow through events).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response;

openraft::declare_raft_types!(
    /// openraft types of a dssmr group.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of a group replica.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry of a group.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// Storage error of a group.
pub type StorageError = openraft::StorageError<NodeId>;
/// What a replica's Raft reports about itself.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;
