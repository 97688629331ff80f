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

use crate::ids::{GroupId, MsgId};
use crate::multicast::message::McastMessage;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

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
    /// The group has not logged the message.
    Unknown,
    /// Logged with this local timestamp; the final timestamp is not known yet.
    Tentative(u64),
    /// Final timestamp known; waiting for earlier messages before delivery.
    Final(u64),
    /// Delivered at this final timestamp.
    Delivered(u64),
    /// Not remembered, and below its sender's floor: the sender said it will never submit the
    /// message again. Delivered here and forgotten, or never seen here; a client submission
    /// is not ordered, but another destination's announce still is (see [`SkeenState::learn`]).
    Forgotten,
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
    /// The local timestamp: unique in the group, in the order the group logged messages.
    local: u64,
    stage: Stage,
}

/// A message delivered here, remembered for as long as someone may send it again.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    /// Its final timestamp.
    ts: u64,
    /// Its other destinations, which may announce it again until they have delivered it.
    others: Vec<GroupId>,
}

/// The delivered messages this group remembers, and what lets it forget them.
///
/// A message can reach the group again in two ways: its sender submits it again (after a
/// timeout, a leader change), or another destination announces it again (while it is not
/// final there). A delivered message is forgotten only once neither can happen:
/// * its sender said so: every message carries the sender's *floor*
///   ([`McastMessage::done_below`]), below which the sender never submits again; or the
///   sender's session ended (below);
/// * every other destination delivered it: each group's *watermark* (the lowest timestamp it
///   still holds pending, [`SkeenState::watermark`]) reaches this group through its log, and
///   a destination whose watermark passed the message's final timestamp has no longer got it
///   pending, so it never announces it again.
///
/// Nothing is forgotten by count: a message the group never saw is never taken for one it
/// delivered, so a destination that learns of a message late always orders it.
///
/// **Client sessions.** What the group keeps per sender (its floor, and the replies of
/// [`crate::group::replies`]) is a session, and ends when the sender sent nothing ordered here
/// for [`SESSION_IDLE_MS`] of log time (the largest leader clock stamped on the group's
/// entries, so every replica ends it at the same entry). A sender resubmits a message only
/// within its own timeout, which must stay well below that (the client proxy's default is
/// 30 s; an hour leaves room for leaders' clocks to disagree by many minutes), so an ended
/// session has no message that can still arrive from its sender.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Remembered {
    records: HashMap<MsgId, Record>,
    /// Per sender with a live session.
    sessions: HashMap<u64, Session>,
    /// Per other group, its watermark as logged here.
    watermarks: HashMap<GroupId, u64>,
    /// Deliveries since the last sweep.
    since_sweep: u64,
    /// The group's log time, in milliseconds.
    now_ms: u64,
    /// Log time of the last look for idle sessions.
    expired_at_ms: u64,
}

/// One sender's session in a group.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Session {
    /// The floor it declared.
    floor: u64,
    /// Log time of its last message ordered here.
    last_ms: u64,
}

/// Deliveries between two sweeps of [`Remembered`] when no watermark arrives.
const SWEEP_EVERY: u64 = 1024;
/// A client session ends after this long without a message of its sender ordered here.
pub const SESSION_IDLE_MS: u64 = 3_600_000;
/// How often (in log time) idle sessions are looked for.
const EXPIRY_EVERY_MS: u64 = 60_000;

impl Remembered {
    fn floor(&self, sender: u64) -> u64 {
        self.sessions.get(&sender).map_or(0, |s| s.floor)
    }

    fn watermark(&self, g: GroupId) -> u64 {
        self.watermarks.get(&g).copied().unwrap_or(0)
    }

    fn touch(&mut self, msg: &McastMessage) {
        // A floor above the message's own number would disown the message itself.
        let floor = msg.done_below.min(msg.id.seq);
        let now = self.now_ms;
        let s = self.sessions.entry(msg.id.sender).or_default();
        s.floor = s.floor.max(floor);
        s.last_ms = s.last_ms.max(now);
    }

    fn insert(&mut self, msg: &McastMessage, own: GroupId, ts: u64) {
        let others = msg.dests.iter().copied().filter(|g| *g != own).collect();
        self.records.insert(msg.id, Record { ts, others });
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.sweep();
        }
    }

    /// Moves log time on; ends idle sessions. True when some ended.
    fn advance_time(&mut self, at_ms: u64) -> bool {
        self.now_ms = self.now_ms.max(at_ms);
        if self.now_ms < self.expired_at_ms + EXPIRY_EVERY_MS {
            return false;
        }
        self.expired_at_ms = self.now_ms;
        let now = self.now_ms;
        let before = self.sessions.len();
        self.sessions
            .retain(|_, s| s.last_ms + SESSION_IDLE_MS > now);
        let ended = self.sessions.len() < before;
        if ended {
            self.sweep();
        }
        ended
    }

    /// Forgets every record that no one can send again.
    fn sweep(&mut self) {
        self.since_sweep = 0;
        let Remembered {
            records,
            sessions,
            watermarks,
            ..
        } = self;
        records.retain(|id, r| {
            let disowned = sessions.get(&id.sender).is_none_or(|s| id.seq < s.floor);
            let everywhere = r
                .others
                .iter()
                .all(|g| watermarks.get(g).copied().unwrap_or(0) > r.ts);
            !(disowned && everywhere)
        });
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
    /// BROKEN on purpose: the clock does not move past a final timestamp, so a later message
    /// can get a smaller timestamp than one already delivered.
    NoClockAdvance,
    /// BROKEN on purpose: messages with the same final timestamp are delivered in the order
    /// this group logged them, not by id, so groups can disagree on their order.
    ArrivalTieBreak,
    /// BROKEN on purpose: the group forgets what it delivered (its replies included), so a
    /// message submitted again after its delivery is ordered again.
    NoDuplicateFilter,
}

/// The Skeen state of one group, replicated by applying the group's log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SkeenState {
    group: GroupId,
    rule: DeliveryRule,
    clock: u64,
    pending: HashMap<MsgId, Pending>,
    queue: BTreeSet<(u64, MsgId)>,
    delivered: Remembered,
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
            delivered: Remembered::default(),
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
        if let Some(r) = self.record(id) {
            return Status::Delivered(r.ts);
        }
        let forgetful = self.rule == DeliveryRule::NoDuplicateFilter;
        if id.seq < self.delivered.floor(id.sender) && !forgetful {
            return Status::Forgotten;
        }
        Status::Unknown
    }

    /// What the group remembers of delivered message `id` (nothing, under the broken
    /// [`DeliveryRule::NoDuplicateFilter`]).
    fn record(&self, id: MsgId) -> Option<&Record> {
        match self.rule {
            DeliveryRule::NoDuplicateFilter => None,
            _ => self.delivered.records.get(&id),
        }
    }

    /// This group's watermark: every message it still holds pending has a timestamp at least
    /// this large, and so will every message it orders later. It never decreases.
    pub fn watermark(&self) -> u64 {
        self.queue.first().map_or(self.clock + 1, |(ts, _)| *ts)
    }

    /// The watermark of group `g` as logged here (0 when none was).
    pub fn watermark_of(&self, g: GroupId) -> u64 {
        self.delivered.watermark(g)
    }

    /// True when an announce of a message this group does not remember, carrying `local_ts`
    /// from group `from`, is a late copy: `from` has moved past every timestamp that low, so
    /// the message is final there, which needed this group's timestamp: it was delivered here
    /// and forgotten.
    pub fn stale_announce(&self, from: GroupId, local_ts: u64) -> bool {
        local_ts < self.delivered.watermark(from)
    }

    /// The floor sender `sender` declared: it never submits a message numbered below again.
    pub fn floor(&self, sender: u64) -> u64 {
        self.delivered.floor(sender)
    }

    /// True while sender `sender` has a session here (see [`SESSION_IDLE_MS`]).
    pub fn has_session(&self, sender: u64) -> bool {
        self.delivered.sessions.contains_key(&sender)
    }

    /// Senders with a session here.
    pub fn sessions(&self) -> usize {
        self.delivered.sessions.len()
    }

    /// Moves the group's log time to `at_ms` (never back), ending idle sessions; true when
    /// some ended.
    pub fn advance_time(&mut self, at_ms: u64) -> bool {
        self.delivered.advance_time(at_ms)
    }

    /// Messages delivered here and still remembered.
    pub fn remembered(&self) -> usize {
        self.delivered.records.len()
    }

    /// Applies a logged watermark of group `from`, and forgets what it lets go.
    pub fn observe_watermark(&mut self, from: GroupId, watermark: u64) {
        if from == self.group {
            return;
        }
        let w = self.delivered.watermarks.entry(from).or_default();
        if watermark > *w {
            *w = watermark;
            self.delivered.sweep();
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

    /// Applies a logged `start(m)` submitted by a client. Duplicates (pending, delivered, or
    /// below the sender's floor) change nothing. Messages not addressed to this group are
    /// ignored.
    pub fn start(&mut self, msg: McastMessage, out: &mut Vec<Output>) {
        if self.status(msg.id) != Status::Unknown || !msg.dests.contains(&self.group) {
            return;
        }
        self.order(msg, out);
    }

    /// Applies a logged `start(m)` learnt from the announce of another destination `from`,
    /// which gave `m` the local timestamp `local_ts`. The sender's floor does not apply (the
    /// sender may have given up on `m` while `from` still waits for this group); a late copy
    /// of an announce ([`SkeenState::stale_announce`]) changes nothing.
    pub fn learn(
        &mut self,
        msg: McastMessage,
        from: GroupId,
        local_ts: u64,
        out: &mut Vec<Output>,
    ) {
        let known = self.pending.contains_key(&msg.id) || self.record(msg.id).is_some();
        if known || self.stale_announce(from, local_ts) || !msg.dests.contains(&self.group) {
            return;
        }
        self.order(msg, out);
    }

    fn order(&mut self, msg: McastMessage, out: &mut Vec<Output>) {
        self.delivered.touch(&msg);
        self.clock += 1;
        let ts = self.clock;
        let id = msg.id;
        let stage = if msg.is_multi_group() && self.rule != DeliveryRule::EagerLocal {
            out.push(Output::Assigned { id, local_ts: ts });
            Stage::Tentative
        } else {
            Stage::Final
        };
        self.pending.insert(
            id,
            Pending {
                msg,
                ts,
                local: ts,
                stage,
            },
        );
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
        if self.rule != DeliveryRule::NoClockAdvance {
            self.clock = self.clock.max(final_ts);
        }
        self.deliver_ready(out);
    }

    fn deliver_ready(&mut self, out: &mut Vec<Output>) {
        if self.rule == DeliveryRule::ArrivalTieBreak {
            return self.deliver_ready_by_arrival(out);
        }
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
                self.delivered.insert(&p.msg, self.group, ts);
                self.delivered_count += 1;
                out.push(Output::Deliver { msg: p.msg, ts });
            }
        }
    }

    /// [`DeliveryRule::ArrivalTieBreak`]: the head's timestamp class is delivered once all of
    /// it is final, in the order this group logged it.
    fn deliver_ready_by_arrival(&mut self, out: &mut Vec<Output>) {
        while let Some(&(head, _)) = self.queue.first() {
            let class: Vec<MsgId> = self
                .queue
                .iter()
                .take_while(|(ts, _)| *ts == head)
                .map(|(_, id)| *id)
                .collect();
            let mut ready: Vec<(u64, MsgId)> = Vec::with_capacity(class.len());
            for id in &class {
                match self.pending.get(id) {
                    Some(p) if p.stage == Stage::Final => ready.push((p.local, *id)),
                    _ => return,
                }
            }
            ready.sort_unstable();
            for (_, id) in ready {
                self.queue.remove(&(head, id));
                if let Some(p) = self.pending.remove(&id) {
                    self.delivered.insert(&p.msg, self.group, head);
                    self.delivered_count += 1;
                    out.push(Output::Deliver {
                        msg: p.msg,
                        ts: head,
                    });
                }
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
    fn a_message_never_seen_is_never_counted_as_delivered() {
        // Group 1 delivers thousands of later messages of sender 7 while its peer group 2
        // holds m0 (to groups 1 and 2) tentative; when m0 finally reaches group 1 it must be
        // ordered, or group 2 waits for group 1's timestamp for ever.
        let mut s = SkeenState::new(GroupId(1));
        let mut out = vec![];
        for seq in 1..=5000 {
            s.start(msg(seq, &[1]), &mut out);
        }
        out.clear();
        s.start(msg(0, &[1, 2]), &mut out);
        assert_eq!(
            s.status(msg(0, &[]).id),
            Status::Tentative(5001),
            "m0 was never delivered here"
        );
    }

    fn floored(seq: u64, dests: &[u32], done_below: u64) -> McastMessage {
        msg(seq, dests).with_done_below(done_below)
    }

    #[test]
    fn an_announce_is_ordered_even_below_the_senders_floor() {
        // The sender gave up on m0 (its floor passed it) after submitting it at group 2 only;
        // group 2's announce must still get m0 ordered here.
        let mut s = SkeenState::new(GroupId(1));
        let mut out = vec![];
        s.start(floored(5, &[1], 5), &mut out);
        assert_eq!(s.status(msg(0, &[]).id), Status::Forgotten);
        // A client copy of m0 is not ordered...
        s.start(msg(0, &[1, 2]), &mut out);
        assert_eq!(s.status(msg(0, &[]).id), Status::Forgotten);
        // ...group 2's announce is.
        s.learn(msg(0, &[1, 2]), GroupId(2), 1, &mut out);
        assert_eq!(s.status(msg(0, &[]).id), Status::Tentative(2));
    }

    #[test]
    fn a_delivered_message_is_forgotten_once_no_one_can_send_it_again() {
        let mut s = SkeenState::new(GroupId(1));
        let mut out = vec![];
        s.start(msg(0, &[1, 2]), &mut out);
        s.finalize(msg(0, &[]).id, 4, &mut out);
        assert_eq!(s.status(msg(0, &[]).id), Status::Delivered(4));
        // The sender is past m0, but group 2 may still hold it pending.
        s.start(floored(1, &[1], 1), &mut out);
        s.observe_watermark(GroupId(2), 4);
        assert_eq!(s.status(msg(0, &[]).id), Status::Delivered(4));
        // Group 2 is past timestamp 4: m0 is delivered there too.
        s.observe_watermark(GroupId(2), 5);
        assert_eq!(s.status(msg(0, &[]).id), Status::Forgotten);
        // A late copy of group 2's announce of m0 changes nothing.
        out.clear();
        s.learn(msg(0, &[1, 2]), GroupId(2), 3, &mut out);
        assert!(out.is_empty());
        assert_eq!(s.status(msg(0, &[]).id), Status::Forgotten);
        // Group 2 past m0 but the sender not: remembered, it may be submitted again.
        s.start(msg(7, &[1, 2]), &mut out);
        s.finalize(msg(7, &[]).id, 9, &mut out);
        s.observe_watermark(GroupId(2), 10);
        assert_eq!(s.status(msg(7, &[]).id), Status::Delivered(9));
    }

    #[test]
    fn the_watermark_never_decreases_and_bounds_what_is_pending() {
        let mut s = SkeenState::new(GroupId(1));
        let mut out = vec![];
        let mut last = s.watermark();
        for seq in 0..200u64 {
            let dests: &[u32] = if seq % 3 == 0 { &[1, 2] } else { &[1] };
            s.start(msg(seq, dests), &mut out);
            if seq % 5 == 0 && seq >= 3 {
                let id = MsgId {
                    sender: 7,
                    seq: seq - seq % 3,
                };
                s.finalize(id, seq + 7, &mut out);
            }
            let w = s.watermark();
            assert!(w >= last, "watermark went back from {last} to {w}");
            assert!(s.pending.values().all(|p| p.ts >= w));
            last = w;
        }
    }

    #[test]
    fn a_busy_sender_leaves_a_bounded_memory() {
        let mut s = SkeenState::new(GroupId(1));
        let mut out = vec![];
        for seq in 0..20_000u64 {
            // One message in flight at a time, to this group and group 2.
            s.start(floored(seq, &[1, 2], seq), &mut out);
            s.finalize(msg(seq, &[]).id, s.clock + 1, &mut out);
            if seq % 100 == 0 {
                s.observe_watermark(GroupId(2), s.clock + 1);
            }
        }
        assert_eq!(s.delivered_count(), 20_000);
        assert!(
            s.remembered() <= 2 * SWEEP_EVERY as usize,
            "{} messages remembered",
            s.remembered()
        );
    }

    #[test]
    fn short_lived_senders_leave_nothing_behind_once_their_sessions_end() {
        let mut s = SkeenState::new(GroupId(1));
        let mut out = vec![];
        let start = 1_000_000;
        // Ten thousand clients, each sending one message and never coming back.
        for sender in 0..10_000u64 {
            s.advance_time(start + sender);
            let m = McastMessage::new(MsgId { sender, seq: 0 }, vec![GroupId(1)], vec![]);
            s.start(m, &mut out);
        }
        assert_eq!(s.sessions(), 10_000);
        // One client stays busy.
        let busy = |seq| {
            McastMessage::new(
                MsgId {
                    sender: 1 << 40,
                    seq,
                },
                vec![GroupId(1)],
                vec![],
            )
        };
        s.advance_time(start + SESSION_IDLE_MS);
        s.start(busy(0), &mut out);
        assert!(
            s.sessions() > 1,
            "no session ends before it was idle long enough"
        );
        s.advance_time(start + 10_000 + SESSION_IDLE_MS + EXPIRY_EVERY_MS);
        assert_eq!(s.sessions(), 1, "only the busy sender's session is left");
        assert!(s.has_session(1 << 40));
        assert!(
            s.remembered() <= 1,
            "{} messages remembered",
            s.remembered()
        );
        // Log time never goes back: a leader with a slow clock ends nothing early, nor late.
        s.advance_time(start);
        s.start(busy(1), &mut out);
        assert_eq!(s.delivered_count(), 10_002);
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
