//! The reliable inter-group channel, as deterministic state replicated by each group's log.
//!
//! A group *sends* by applying an entry that appends to its outbox for the destination
//! ([`ChannelState::push`]); the source leader transmits the outbox, and the destination leader
//! logs every message it receives. The destination accepts message `seq` from a source only
//! when `seq` is the next one it expects, so every message enters the destination log exactly
//! once and in FIFO order, whatever leader changes happen on either side: a new source leader
//! resends the whole outbox (it is part of the replicated state), and duplicates are dropped.
//! The source trims its outbox once the destination acknowledged (trim is logged as well).

use crate::ids::GroupId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The messages a group has sent to one destination and not yet seen acknowledged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outbox {
    next_seq: u64,
    queue: VecDeque<(u64, Vec<u8>)>,
}

impl Outbox {
    /// The unacknowledged messages, oldest first, with their sequence numbers.
    pub fn unacknowledged(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.queue.iter().map(|(s, p)| (*s, p.as_slice()))
    }

    /// Number of unacknowledged messages.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when everything sent was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Channel state of one group: an outbox per destination, the next expected seq per source.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChannelState {
    outboxes: BTreeMap<GroupId, Outbox>,
    next_expected: BTreeMap<GroupId, u64>,
}

impl ChannelState {
    /// Appends `payload` to the outbox for `dst`; returns its sequence number.
    pub fn push(&mut self, dst: GroupId, payload: Vec<u8>) -> u64 {
        let ob = self.outboxes.entry(dst).or_default();
        let seq = ob.next_seq;
        ob.next_seq += 1;
        ob.queue.push_back((seq, payload));
        seq
    }

    /// Drops every message to `dst` with a sequence number below `upto` (acknowledged).
    pub fn trim(&mut self, dst: GroupId, upto: u64) {
        if let Some(ob) = self.outboxes.get_mut(&dst) {
            while ob.queue.front().is_some_and(|(s, _)| *s < upto) {
                ob.queue.pop_front();
            }
        }
    }

    /// Applies a logged incoming message; returns true when it is accepted (the next one in
    /// FIFO order), false for a duplicate or a message that arrived ahead of a gap.
    pub fn accept(&mut self, from: GroupId, seq: u64) -> bool {
        let next = self.next_expected.entry(from).or_insert(0);
        if seq == *next {
            *next += 1;
            true
        } else {
            false
        }
    }

    /// The next sequence number expected from `from`.
    pub(crate) fn next_expected(&self, from: GroupId) -> u64 {
        self.next_expected.get(&from).copied().unwrap_or(0)
    }

    /// The outboxes with unacknowledged messages.
    pub fn outboxes(&self) -> impl Iterator<Item = (GroupId, &Outbox)> {
        self.outboxes
            .iter()
            .filter(|(_, ob)| !ob.is_empty())
            .map(|(g, ob)| (*g, ob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_message_once_in_order() {
        let mut src = ChannelState::default();
        let mut dst = ChannelState::default();
        let (a, b) = (GroupId(1), GroupId(2));
        assert_eq!(src.push(b, b"x".to_vec()), 0);
        assert_eq!(src.push(b, b"y".to_vec()), 1);
        assert!(!dst.accept(a, 1), "gap: seq 0 missing");
        assert!(dst.accept(a, 0));
        assert!(!dst.accept(a, 0), "duplicate");
        assert!(dst.accept(a, 1));
        assert_eq!(dst.next_expected(a), 2);
        src.trim(b, 1);
        let left: Vec<u64> = src
            .outboxes()
            .flat_map(|(_, ob)| ob.unacknowledged().map(|(s, _)| s))
            .collect();
        assert_eq!(left, vec![1]);
        src.trim(b, 2);
        assert_eq!(src.outboxes().count(), 0);
    }
}
