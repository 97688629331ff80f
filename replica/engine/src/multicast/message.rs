//! The atomic multicast message and its conversions to and from the wire format.

use crate::ids::{GroupId, MsgId};
use crate::proto;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A message atomically multicast to a set of destination groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct McastMessage {
    /// Unique id of the message.
    pub id: MsgId,
    /// Destination groups, sorted and without duplicates.
    pub dests: Vec<GroupId>,
    /// Opaque application payload.
    pub payload: Vec<u8>,
    /// The sender's floor: it never submits a message numbered below this again (0 when it
    /// says nothing). Groups forget what lies below it (see [`crate::multicast::skeen`]).
    pub done_below: u64,
}

/// Why a message received from the network is not a valid multicast message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    /// The message has no id.
    #[error("message id is missing")]
    MissingId,
    /// The message is addressed to no group.
    #[error("message has no destination group")]
    NoDestination,
    /// A destination is not a group of this cluster.
    #[error("destination group {0} is not part of the cluster")]
    UnknownGroup(u32),
    /// A destination is a partition removed from the cluster (the receiving group's
    /// replicated state says so): the sender's topology is stale.
    #[error("destination partition {0} was removed from the cluster")]
    RemovedGroup(u32),
    /// The receiving group is not among the destinations.
    #[error("group {0} is not a destination of the message")]
    NotADestination(u32),
    /// The message field is missing from the request.
    #[error("request carries no message")]
    MissingMessage,
    /// The request is addressed to another group than the one of the receiving replica.
    #[error("request addressed to group {addressed} reached a replica of group {receiver}")]
    WrongReceiver {
        /// The group named in the request.
        addressed: u32,
        /// The group of the replica that received it.
        receiver: u32,
    },
    /// The sending group is unknown, or is the receiving group itself.
    #[error("group {0} cannot send to this group (unknown, or the group itself)")]
    BadSource(u32),
    /// A batch mixes messages from several source groups.
    #[error("batch mixes source groups {0} and {1}")]
    MixedSources(u32, u32),
}

impl McastMessage {
    /// Builds a message, normalising the destination set (sorted, deduplicated).
    pub fn new(id: MsgId, mut dests: Vec<GroupId>, payload: Vec<u8>) -> Self {
        dests.sort_unstable();
        dests.dedup();
        McastMessage {
            id,
            dests,
            payload,
            done_below: 0,
        }
    }

    /// The message with the sender's floor `done_below` (at most the message's own number:
    /// a sender does not disown what it is sending).
    pub fn with_done_below(mut self, done_below: u64) -> Self {
        self.done_below = done_below.min(self.id.seq);
        self
    }

    /// True when the message is addressed to more than one group.
    pub(crate) fn is_multi_group(&self) -> bool {
        self.dests.len() > 1
    }

    /// Decodes and validates a message received from the network.
    pub(crate) fn from_proto(
        msg: Option<proto::McastMessage>,
        known_group: impl Fn(GroupId) -> bool,
    ) -> Result<Self, MessageError> {
        let msg = msg.ok_or(MessageError::MissingMessage)?;
        let id = msg.id.ok_or(MessageError::MissingId)?;
        if msg.dests.is_empty() {
            return Err(MessageError::NoDestination);
        }
        if let Some(g) = msg.dests.iter().find(|g| !known_group(GroupId(**g))) {
            return Err(MessageError::UnknownGroup(*g));
        }
        Ok(McastMessage::new(
            MsgId {
                sender: id.sender,
                seq: id.seq,
            },
            msg.dests.into_iter().map(GroupId).collect(),
            msg.payload,
        )
        .with_done_below(msg.done_below))
    }

    /// Encodes the message for the wire.
    pub(crate) fn to_proto(&self) -> proto::McastMessage {
        proto::McastMessage {
            id: Some(proto::MsgId {
                sender: self.id.sender,
                seq: self.id.seq,
            }),
            dests: self.dests.iter().map(|g| g.0).collect(),
            payload: self.payload.clone(),
            done_below: self.done_below,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed_messages() {
        let known = |g: GroupId| g.0 < 4;
        assert_eq!(
            McastMessage::from_proto(None, known),
            Err(MessageError::MissingMessage)
        );
        let no_id = proto::McastMessage {
            id: None,
            dests: vec![1],
            ..Default::default()
        };
        assert_eq!(
            McastMessage::from_proto(Some(no_id), known),
            Err(MessageError::MissingId)
        );
        let unknown = proto::McastMessage {
            id: Some(proto::MsgId { sender: 1, seq: 0 }),
            dests: vec![1, 9],
            ..Default::default()
        };
        assert_eq!(
            McastMessage::from_proto(Some(unknown), known),
            Err(MessageError::UnknownGroup(9))
        );
    }

    #[test]
    fn normalises_destinations() {
        let m = McastMessage::new(
            MsgId { sender: 1, seq: 9 },
            vec![GroupId(3), GroupId(1), GroupId(3)],
            vec![],
        )
        .with_done_below(4);
        assert_eq!(m.dests, vec![GroupId(1), GroupId(3)]);
        let back = McastMessage::from_proto(Some(m.to_proto()), |_| true).unwrap();
        assert_eq!(back, m);
    }
}
