//! Skeen's genuine atomic multicast, as a deterministic state machine fed by one group's log.
//!
//! Every replica of a group applies the same log entries to a [`SkeenState`], so every replica
//! assigns the same timestamps and delivers in the same order. The state machine does no I/O:
//! the group runtime reads [`Output`]s and does the talking (announcing local timestamps to the
//! other destination leaders, answering clients).
//!
//! Protocol, for a message `m` addressed to groups γ:
//! * `start(m)` (logged in each group of γ): a single-group message gets the final timestamp
//!   `clock + 1` at once; a multi-group message gets the *local* timestamp `clock + 1` and waits.
//! * The leaders of γ exchange their local timestamps (outside the log); each group then logs
//!   `finalize(m, max)`. The clock moves past every final timestamp it sees.
//! * Messages are delivered in (final timestamp, id) order: the head of the queue is delivered
//!   once it is final, because any message still tentative can only end with a larger timestamp.
//!
//! Only destination groups take part, so the protocol is genuine.

use crate::ids::{GroupId, MsgId, MAX_IN_FLIGHT_PER_SENDER};
use crate::multicast::message::McastMessage;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the group runtime must act on after an entry was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `m` is atomically delivered at timestamp `ts`: hand it to the application.
    Deliver {
        /// The delivered message.
        msg: McastMessage,
        /// Its final timestamp.
        ts: u64,
    },
    /// A multi-group message got its local timestamp: the leader announces it to the others.
    Assigned {
        /// The message id.
        id: MsgId,
        /// The local timestamp this group assigned.
        local_ts: u64,
    },
}

/// Where a message stands in this group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The group has not logged the message (or forgot it long after delivery).
    Unknown,
    /// Logged with this local timestamp; the final timestamp is not known yet.
    Tentative(u64),
    /// Final timestamp known; waiting for earlier messages before delivery.
    Final(u64),
    /// Delivered at this final timestamp.
    Delivered(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Stage {
    Tentative,
    Final,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    msg: McastMessage,
    ts: u64,
    stage: Stage,
}

/// The delivered messages of one sender: a floor below which everything counts as delivered,
/// and the recent sequence numbers with their final timestamps.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SenderWindow {
    floor: Option<u64>,
    recent: BTreeMap<u64, u64>,
}

/// Remembered deliveries per sender. Bounded: a sender keeps at most
/// [`MAX_IN_FLIGHT_PER_SENDER`] messages outstanding, so a window four times as large never
/// forgets a message that can still be resent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct DeliveredSet {
    senders: HashMap<u64, SenderWindow>,
}

const WINDOW: usize = 4 * MAX_IN_FLIGHT_PER_SENDER as usize;

impl DeliveredSet {
    fn get(&self, id: MsgId) -> Option<Option<u64>> {
        let w = self.senders.get(&id.sender)?;
        if let Some(ts) = w.recent.get(&id.seq) {
            return Some(Some(*ts));
        }
        match w.floor {
            Some(f) if id.seq <= f => Some(None),
            _ => None,
        }
    }

    fn insert(&mut self, id: MsgId, ts: u64) {
        let w = self.senders.entry(id.sender).or_default();
        w.recent.insert(id.seq, ts);
        while w.recent.len() > WINDOW {
            if let Some((seq, _)) = w.recent.pop_first() {
                w.floor = Some(w.floor.map_or(seq, |f| f.max(seq)));
            }
        }
    }
}

/// Which delivery rule a group follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryRule {
    /// Skeen: deliver in (final timestamp, id) order once final.
    #[default]
    Skeen,
    /// BROKEN on purpose, for mutation tests of the checker: a multi-group message is
    /// delivered as soon as it has its local timestamp, before the final one is known.
    EagerLocal,
}

/// The Skeen state of one group, replicated by applying the group's log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SkeenState {
    group: GroupId,
    rule: DeliveryRule,
    clock: u64,
    pending: HashMap<MsgId, Pending>,
    queue: BTreeSet<(u64, MsgId)>,
    delivered: DeliveredSet,
    delivered_count: u64,
}

impl SkeenState {
    /// Empty state of `group`.
    pub fn new(group: GroupId) -> Self {
        SkeenState {
            group,
            rule: DeliveryRule::Skeen,
            clock: 0,
            pending: HashMap::new(),
            queue: BTreeSet::new(),
            delivered: DeliveredSet::default(),
            delivered_count: 0,
        }
    }

    /// The group this state belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The delivery rule in force.
    pub fn rule(&self) -> DeliveryRule {
        self.rule
    }

    /// Switches the delivery rule (only mutation tests use anything but the default).
    pub(crate) fn set_rule(&mut self, rule: DeliveryRule) {
        self.rule = rule;
    }

    /// Number of messages delivered so far.
    pub fn delivered_count(&self) -> u64 {
        self.delivered_count
    }

    /// Number of messages logged but not delivered yet.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Number of messages logged but not delivered yet that are also addressed to `g` (they
    /// need `g`'s timestamp or are ordered after one that does: `g` must keep running).
    pub fn pending_with(&self, g: GroupId) -> usize {
        self.pending
            .values()
            .filter(|p| p.msg.dests.contains(&g))
            .count()
    }

    /// Every group that messages logged here and not delivered yet are addressed to.
    pub fn pending_destinations(&self) -> BTreeSet<GroupId> {
        self.pending
            .values()
            .flat_map(|p| p.msg.dests.iter().copied())
            .collect()
    }

    /// Where message `id` stands in this group.
    pub fn status(&self, id: MsgId) -> Status {
        if let Some(p) = self.pending.get(&id) {
            return match p.stage {
                Stage::Tentative => Status::Tentative(p.ts),
                Stage::Final => Status::Final(p.ts),
            };
        }
        match self.delivered.get(id) {
            Some(Some(ts)) => Status::Delivered(ts),
            // Below the floor: delivered long ago, timestamp forgotten.
            Some(None) => Status::Delivered(0),
            None => Status::Unknown,
        }
    }

    /// A message not delivered yet, with its current (local or final) timestamp.
    pub(crate) fn pending_message(&self, id: MsgId) -> Option<(&McastMessage, u64)> {
        self.pending.get(&id).map(|p| (&p.msg, p.ts))
    }

    /// The multi-group messages still waiting for their final timestamp, with local timestamps.
    pub(crate) fn tentative(&self) -> impl Iterator<Item = (&McastMessage, u64)> {
        self.pending
            .values()
            .filter(|p| p.stage == Stage::Tentative)
            .map(|p| (&p.msg, p.ts))
    }

    /// Applies a logged `start(m)`. Duplicates (already logged or delivered) change nothing.
    /// Messages not addressed to this group are ignored.
    pub fn start(&mut self, msg: McastMessage, out: &mut Vec<Output>) {
        if self.status(msg.id) != Status::Unknown || !msg.dests.contains(&self.group) {
            return;
        }
        self.clock += 1;
        let ts = self.clock;
        let id = msg.id;
        let stage = if msg.is_multi_group() && self.rule == DeliveryRule::Skeen {
            out.push(Output::Assigned { id, local_ts: ts });
            Stage::Tentative
        } else {
            Stage::Final
        };
        self.pending.insert(id, Pending { msg, ts, stage });
        self.queue.insert((ts, id));
        self.deliver_ready(out);
    }

    /// Applies a logged `finalize(m, ts)`. Ignored unless `m` is tentative here.
    pub(crate) fn finalize(&mut self, id: MsgId, final_ts: u64, out: &mut Vec<Output>) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        if p.stage == Stage::Final || final_ts < p.ts {
            // A final timestamp below our own local one cannot be the max: ignore it.
            return;
        }
        self.queue.remove(&(p.ts, id));
        p.ts = final_ts;
        p.stage = Stage::Final;
        self.queue.insert((final_ts, id));
        self.clock = self.clock.max(final_ts);
        self.deliver_ready(out);
    }

    fn deliver_ready(&mut self, out: &mut Vec<Output>) {
        while let Some(&(ts, id)) = self.queue.first() {
            let ready = self
                .pending
                .get(&id)
                .is_some_and(|p| p.stage == Stage::Final);
            if !ready {
                break;
            }
            self.queue.pop_first();
            if let Some(p) = self.pending.remove(&id) {
                self.delivered.insert(id, ts);
                self.delivered_count += 1;
                out.push(Output::Deliver { msg: p.msg, ts });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, dests: &[u32]) -> McastMessage {
        McastMessage::new(
            MsgId { sender: 7, seq },
            dests.iter().map(|g| GroupId(*g)).collect(),
            vec![seq as u8],
        )
    }

    fn delivered(out: &[Output]) -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                Output::Deliver { msg, .. } => Some(msg.id.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn single_group_message_is_delivered_at_once() {
        let mut s = SkeenState::new(GroupId(1));
        let mut out = vec![];
        s.start(msg(0, &[1]), &mut out);
        assert_eq!(delivered(&out), vec![0]);
        assert_eq!(s.status(msg(0, &[1]).id), Status::Delivered(1));
    }

    #[test]
    fn tentative_message_blocks_later_ones_until_final() {
        let mut s = SkeenState::new(GroupId(1));
        let mut out = vec![];
        s.start(msg(0, &[1, 2]), &mut out);
        assert_eq!(
            out,
            vec![Output::Assigned {
                id: msg(0, &[]).id,
                local_ts: 1
            }]
        );
        out.clear();
        s.start(msg(1, &[1]), &mut out);
        assert!(delivered(&out).is_empty(), "must wait behind tentative m0");
        // m0's final timestamp is larger than m1's: m1 goes first, then m0.
        s.finalize(msg(0, &[]).id, 5, &mut out);
        assert_eq!(delivered(&out), vec![1, 0]);
        // The clock moved past the final timestamp.
        out.clear();
        s.start(msg(2, &[1]), &mut out);
        assert_eq!(s.status(msg(2, &[]).id), Status::Delivered(6));
    }

    #[test]
    fn duplicates_and_foreign_messages_are_ignored() {
        let mut s = SkeenState::new(GroupId(1));
        let mut out = vec![];
        s.start(msg(0, &[1]), &mut out);
        s.start(msg(0, &[1]), &mut out);
        s.start(msg(1, &[2]), &mut out);
        assert_eq!(delivered(&out), vec![0]);
        s.finalize(msg(0, &[]).id, 9, &mut out);
        assert_eq!(s.delivered_count(), 1);
    }

    #[test]
    fn two_groups_agree_on_order() {
        // g1 and g2 both receive m0 and m1 (addressed to both) in opposite orders.
        let (mut a, mut b) = (SkeenState::new(GroupId(1)), SkeenState::new(GroupId(2)));
        let (mut oa, mut ob) = (vec![], vec![]);
        a.start(msg(0, &[1, 2]), &mut oa);
        a.start(msg(1, &[1, 2]), &mut oa);
        b.start(msg(1, &[1, 2]), &mut ob);
        b.start(msg(0, &[1, 2]), &mut ob);
        // local: a: m0=1, m1=2; b: m1=1, m0=2 → finals m0=2, m1=2 → tie broken by id.
        for s in [&mut a, &mut b] {
            let mut o = vec![];
            s.finalize(msg(0, &[]).id, 2, &mut o);
            s.finalize(msg(1, &[]).id, 2, &mut o);
            assert_eq!(delivered(&o), vec![0, 1]);
        }
    }

    #[test]
    fn state_survives_serialisation() {
        let mut s = SkeenState::new(GroupId(1));
        let mut out = vec![];
        s.start(msg(0, &[1, 2]), &mut out);
        let bytes = postcard::to_allocvec(&s).unwrap();
        let mut t: SkeenState = postcard::from_bytes(&bytes).unwrap();
        t.finalize(msg(0, &[]).id, 3, &mut out);
        assert_eq!(delivered(&out), vec![0]);
    }
}
