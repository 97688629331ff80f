//! The replies a group gave to the clients of delivered messages, kept so that a client that
//! resubmits a message (after a leader change, a timeout) gets the same reply and the command
//! is never executed twice.
//!
//! Part of the replicated state (it is in every snapshot). Bounded: a sender never submits a
//! message below its floor again (the floor every message carries, [`McastMessage::done_below`]),
//! so replies below it are dropped; and a client proxy has one command and at most one move
//! per partition in flight at a time, so at most the [`REPLY_WINDOW`] most recent replies of
//! each sender are kept. Anything dropped is remembered as forgotten, never as unknown.
//! (Replies such as timelines are kilobytes, and every snapshot carries the replies kept.)
//!
//! [`McastMessage::done_below`]: crate::multicast::McastMessage::done_below
//!
//! Reads are not kept: a read-only command is answered once and only remembered as answered
//! ([`ReplyStatus::NotKept`]); a client that asks again runs the read again as a new message,
//! which is as linearizable as the first (it runs within the same call) and keeps the
//! replicated state free of timelines.

use crate::ids::MsgId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Replies kept per sender.
pub(crate) const REPLY_WINDOW: usize = 16;

/// What the group knows of the reply to one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyStatus<'a> {
    /// Answered at final timestamp `ts` with `reply`.
    Kept {
        /// Final timestamp of the message.
        ts: u64,
        /// The application's reply.
        reply: &'a [u8],
    },
    /// Answered long ago; the reply is no longer kept.
    Forgotten,
    /// A read, answered at final timestamp `ts`; its reply was never kept.
    NotKept {
        /// Final timestamp of the message.
        ts: u64,
    },
    /// Not answered yet.
    Unanswered,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SenderReplies {
    floor: Option<u64>,
    /// Per sequence number: final timestamp, and the reply unless it was a read's.
    recent: BTreeMap<u64, (u64, Option<Vec<u8>>)>,
}

/// Recent replies per sender.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReplyCache {
    senders: HashMap<u64, SenderReplies>,
}

impl ReplyCache {
    /// Records the reply to `id`; `None`: a read's, remembered only as answered. `floor` is
    /// the sender's floor: replies below it are dropped.
    pub fn insert(&mut self, id: MsgId, ts: u64, reply: Option<Vec<u8>>, floor: u64) {
        let s = self.senders.entry(id.sender).or_default();
        s.recent.insert(id.seq, (ts, reply));
        if floor > 0 {
            s.floor = Some(s.floor.map_or(floor - 1, |f| f.max(floor - 1)));
            s.recent = s.recent.split_off(&floor);
        }
        while s.recent.len() > REPLY_WINDOW {
            if let Some((seq, _)) = s.recent.pop_first() {
                s.floor = Some(s.floor.map_or(seq, |f| f.max(seq)));
            }
        }
    }

    /// Keeps the replies of the senders `keep` says, forgets the others'.
    pub fn retain_senders(&mut self, keep: impl Fn(u64) -> bool) {
        self.senders.retain(|sender, _| keep(*sender));
    }

    /// Senders with something kept.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Replies kept, over all senders.
    pub fn len(&self) -> usize {
        self.senders.values().map(|s| s.recent.len()).sum()
    }

    /// True when no reply is kept.
    pub fn is_empty(&self) -> bool {
        self.senders.values().all(|s| s.recent.is_empty())
    }

    /// What is known of the reply to `id`.
    pub fn status(&self, id: MsgId) -> ReplyStatus<'_> {
        let Some(s) = self.senders.get(&id.sender) else {
            return ReplyStatus::Unanswered;
        };
        match s.recent.get(&id.seq) {
            Some((ts, Some(reply))) => return ReplyStatus::Kept { ts: *ts, reply },
            Some((ts, None)) => return ReplyStatus::NotKept { ts: *ts },
            None => {}
        }
        match s.floor {
            Some(f) if id.seq <= f => ReplyStatus::Forgotten,
            _ => ReplyStatus::Unanswered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_window_per_sender() {
        let mut c = ReplyCache::default();
        let id = |seq| MsgId { sender: 1, seq };
        assert_eq!(c.status(id(0)), ReplyStatus::Unanswered);
        for seq in 0..(REPLY_WINDOW as u64 + 5) {
            c.insert(id(seq), seq + 10, Some(vec![seq as u8]), 0);
        }
        assert_eq!(c.status(id(0)), ReplyStatus::Forgotten);
        assert_eq!(c.status(id(4)), ReplyStatus::Forgotten);
        assert_eq!(
            c.status(id(5)),
            ReplyStatus::Kept {
                ts: 15,
                reply: &[5]
            }
        );
        assert_eq!(c.status(id(1000)), ReplyStatus::Unanswered);
        // A read is remembered as answered, without its reply.
        c.insert(id(1001), 7, None, 0);
        assert_eq!(c.status(id(1001)), ReplyStatus::NotKept { ts: 7 });
        assert_eq!(c.status(id(1000)), ReplyStatus::Unanswered);
    }

    #[test]
    fn forgets_the_senders_whose_sessions_ended() {
        let mut c = ReplyCache::default();
        for sender in 0..100 {
            c.insert(MsgId { sender, seq: 0 }, 1, Some(vec![1]), 0);
        }
        c.retain_senders(|s| s == 7);
        assert_eq!((c.senders(), c.len()), (1, 1));
    }

    #[test]
    fn drops_what_lies_below_the_senders_floor() {
        let mut c = ReplyCache::default();
        let id = |seq| MsgId { sender: 1, seq };
        c.insert(id(3), 1, Some(vec![3]), 0);
        c.insert(id(5), 2, Some(vec![5]), 0);
        // The sender will never ask for 3 or 4 again.
        c.insert(id(6), 3, Some(vec![6]), 5);
        assert_eq!(c.status(id(3)), ReplyStatus::Forgotten);
        assert_eq!(c.status(id(4)), ReplyStatus::Forgotten);
        assert_eq!(c.status(id(5)), ReplyStatus::Kept { ts: 2, reply: &[5] });
        assert_eq!(c.len(), 2);
    }
}
