//! The reliable inter-group channel, as deterministic state replicated by each group's log.
//!
//! A group *sends* by applying an entry that appends to its outbox for the destination
//! ([`ChannelState::push`]); the source leader transmits the outbox, and the destination leader
//! logs every message it receives. The destination accepts message `seq` from a source only
//! when `seq` is the next one it expects, so every message enters the destination log exactly
//! once and in FIFO order, whatever leader changes happen on either side: a new source leader
//! resends the whole outbox (it is part of the replicated state), and duplicates are dropped.
//! The source trims its outbox once the destination acknowledged (trim is logged as well).
//!
//! Transmission is pipelined: the source leader keeps up to a window of batches in flight to a
//! destination ([`SendWindow`], volatile), each new batch starting where the previous one
//! ended, and logs trims without waiting for them. Batches that arrive out of order or get
//! lost are caught by the acknowledgements (the destination's next expected sequence number):
//! as soon as the answer to a batch shows that the destination did not take all of it (it
//! expects less than the batch's end: a gap before it, or the destination's leader changed),
//! the window goes back to the first unacknowledged message (go-back-N): the batches behind a
//! refused one are refused too, so neither they nor new batches beyond the gap are waited for.

use crate::ids::GroupId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

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

    /// The unacknowledged messages from sequence number `seq` on (from the oldest one when
    /// `seq` is below it), oldest first.
    pub fn since(&self, seq: u64) -> impl Iterator<Item = (u64, &[u8])> {
        let skip = self
            .queue
            .front()
            .map_or(0, |(first, _)| seq.saturating_sub(*first) as usize);
        self.queue
            .iter()
            .skip(skip)
            .map(|(s, p)| (*s, p.as_slice()))
    }
}

/// The source leader's transmission window to one destination: which messages were sent in
/// batches still in flight, what the destination acknowledged. Volatile and leader-only: a
/// new leader starts from the first unacknowledged message of the replicated outbox.
#[derive(Debug)]
pub(crate) struct SendWindow {
    /// First sequence number not sent yet in the current round.
    next: u64,
    /// Highest acknowledgement seen: the destination's next expected sequence number.
    acked: u64,
    /// Highest acknowledgement proposed as a trim so far.
    trimmed: u64,
    /// When that trim was last proposed.
    trim_proposed: Instant,
    /// Batches of the current round in flight.
    in_flight: usize,
    /// Round number, bumped when the window goes back; late answers of an older round still
    /// count as acknowledgements but neither end a batch in flight nor make the window go
    /// back again (the new round already starts from the first unacknowledged message).
    round: u64,
    /// When the acknowledgement last advanced or the round began.
    progress: Instant,
}

/// One batch taken from a [`SendWindow`]: which batch it is and its messages.
pub(crate) struct ChannelBatch {
    /// Which batch it is (hand it back in [`SendWindow::answered`]).
    pub sent: Sent,
    /// `(seq, payload)` of the messages, consecutive.
    pub messages: Vec<(u64, Vec<u8>)>,
}

/// Identifies a batch taken from a [`SendWindow`]: the round it belongs to and the sequence
/// number after its last message.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    round: u64,
    end: u64,
}

impl SendWindow {
    /// A window with nothing sent.
    pub(crate) fn new(now: Instant) -> Self {
        SendWindow {
            next: 0,
            acked: 0,
            trimmed: 0,
            trim_proposed: now,
            in_flight: 0,
            round: 0,
            progress: now,
        }
    }

    /// The next batch to send from `outbox`: at most `max` messages following the ones in
    /// flight, unless `window` batches are in flight already or nothing is left to send.
    pub(crate) fn take(
        &mut self,
        outbox: &Outbox,
        max: usize,
        window: usize,
        now: Instant,
    ) -> Option<ChannelBatch> {
        if self.in_flight >= window {
            return None;
        }
        let messages: Vec<(u64, Vec<u8>)> = outbox
            .since(self.next.max(self.acked))
            .take(max)
            .map(|(s, p)| (s, p.to_vec()))
            .collect();
        let last = messages.last()?.0;
        if self.in_flight == 0 {
            self.progress = now;
        }
        self.next = last + 1;
        self.in_flight += 1;
        Some(ChannelBatch {
            sent: Sent {
                round: self.round,
                end: self.next,
            },
            messages,
        })
    }

    /// Records the answer to batch `sent`: `Some(next_expected)` from the destination, or
    /// `None` when the transmission failed. Goes back to the first unacknowledged message at
    /// once when the batch is of the current round and was not all taken: the transmission
    /// failed, or the destination expects less than the batch's end. The destination answers
    /// after logging the batch, so that means a gap before it (a predecessor lost or refused,
    /// or its leader changed), and every batch behind it in this round is refused as well.
    ///
    /// A batch before it may still be in flight and be taken after all: the new round then
    /// resends it (the destination drops the duplicates) unless its answer arrives first. At
    /// most a window of batches is sent twice, against a round of refusals otherwise kept
    /// going by new batches until [`SendWindow::expire`].
    pub(crate) fn answered(&mut self, sent: Sent, ack: Option<u64>, now: Instant) {
        if let Some(upto) = ack {
            if upto > self.acked {
                self.acked = upto;
                self.progress = now;
            }
        }
        if sent.round != self.round {
            return;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        let taken = ack.is_some_and(|upto| upto >= sent.end);
        if !taken {
            self.go_back();
        }
    }

    /// Starts a new round from the first unacknowledged message, forgetting the batches in
    /// flight (their answers still count as acknowledgements).
    fn go_back(&mut self) {
        self.round += 1;
        self.in_flight = 0;
        self.next = self.acked;
    }

    /// Goes back when batches have been in flight for `patience` without any acknowledgement
    /// (answers lost, a destination that never replies). True when it went back.
    pub(crate) fn expire(&mut self, patience: Duration, now: Instant) -> bool {
        let stuck = self.in_flight > 0 && now.duration_since(self.progress) > patience;
        if stuck {
            self.go_back();
        }
        stuck
    }

    /// The acknowledgement to log as a trim of `outbox` (the replicated one), when it
    /// advanced since the last trim proposed, or when the outbox still holds messages it
    /// acknowledges `retry` after that proposal: the proposal was lost (a leader change
    /// before it committed) and nothing else would trim them, since they are not sent again.
    pub(crate) fn trim_due(
        &mut self,
        outbox: &Outbox,
        retry: Duration,
        now: Instant,
    ) -> Option<u64> {
        let advanced = self.acked > self.trimmed;
        let lost = outbox
            .unacknowledged()
            .next()
            .is_some_and(|(first, _)| first < self.acked)
            && now.duration_since(self.trim_proposed) >= retry;
        (advanced || lost).then(|| {
            self.trimmed = self.acked;
            self.trim_proposed = now;
            self.acked
        })
    }

    /// Batches of the current round in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
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

    /// The outbox for `dst`, when anything was ever sent there.
    pub fn outbox(&self, dst: GroupId) -> Option<&Outbox> {
        self.outboxes.get(&dst)
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

    /// A channel state whose outbox to p2 holds messages `0..n`.
    fn channel_with(n: u64) -> ChannelState {
        let mut ch = ChannelState::default();
        for i in 0..n {
            ch.push(GroupId(2), vec![i as u8]);
        }
        ch
    }

    fn outbox_with(n: u64) -> Outbox {
        channel_with(n)
            .outboxes
            .remove(&GroupId(2))
            .expect("outbox")
    }

    fn seqs(b: &ChannelBatch) -> Vec<u64> {
        b.messages.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn keeps_a_window_of_consecutive_batches_in_flight() {
        let now = Instant::now();
        let ob = outbox_with(10);
        let mut w = SendWindow::new(now);
        let a = w.take(&ob, 3, 2, now).expect("first batch");
        let b = w
            .take(&ob, 3, 2, now)
            .expect("second batch while the first is in flight");
        assert_eq!((seqs(&a), seqs(&b)), (vec![0, 1, 2], vec![3, 4, 5]));
        assert!(w.take(&ob, 3, 2, now).is_none(), "window of 2 is full");
        w.answered(a.sent, Some(3), now);
        let retry = Duration::from_secs(1);
        assert_eq!(
            w.trim_due(&ob, retry, now),
            Some(3),
            "trim follows the acknowledgement"
        );
        assert_eq!(w.trim_due(&ob, retry, now), None, "once");
        let c = w.take(&ob, 3, 2, now).expect("room again");
        assert_eq!(seqs(&c), vec![6, 7, 8]);
        w.answered(b.sent, Some(6), now);
        w.answered(c.sent, Some(9), now);
        let d = w.take(&ob, 3, 2, now).expect("the rest");
        assert_eq!(seqs(&d), vec![9]);
        w.answered(d.sent, Some(10), now);
        assert!(w.take(&ob, 3, 2, now).is_none(), "everything sent");
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn goes_back_when_the_destination_expects_less_than_was_sent() {
        let now = Instant::now();
        let ob = outbox_with(6);
        let mut w = SendWindow::new(now);
        let a = w.take(&ob, 3, 2, now).expect("batch");
        let b = w.take(&ob, 3, 2, now).expect("batch");
        // The second batch reached the destination first and was refused (a gap); the
        // first was accepted.
        w.answered(b.sent, Some(0), now);
        w.answered(a.sent, Some(3), now);
        let again = w.take(&ob, 3, 2, now).expect("resent");
        assert_eq!(
            seqs(&again),
            vec![3, 4, 5],
            "go-back-N from the acknowledgement"
        );
    }

    #[test]
    fn goes_back_at_once_when_an_answer_shows_its_batch_was_refused() {
        let now = Instant::now();
        let ob = outbox_with(12);
        let mut w = SendWindow::new(now);
        let a = w.take(&ob, 3, 4, now).expect("batch");
        let b = w.take(&ob, 3, 4, now).expect("batch");
        // The destination refused the first batch (it expects 0: a gap, or its leader
        // changed): the batches behind it are refused too, so the window goes back now,
        // without waiting for them or for the expiry, and does not send beyond the gap.
        w.answered(a.sent, Some(0), now);
        let again = w.take(&ob, 3, 4, now).expect("resent");
        assert_eq!(seqs(&again), vec![0, 1, 2], "go-back-N at once");
        // The refused round's second batch answers late, refused as well: that ends no
        // batch of the new round and does not go back again.
        w.answered(b.sent, Some(0), now);
        assert_eq!(w.in_flight(), 1);
        let next = w.take(&ob, 3, 4, now).expect("the new round goes on");
        assert_eq!(seqs(&next), vec![3, 4, 5]);
    }

    #[test]
    fn an_accepted_batch_behind_a_refused_one_still_acknowledges() {
        let now = Instant::now();
        let ob = outbox_with(9);
        let mut w = SendWindow::new(now);
        let a = w.take(&ob, 3, 4, now).expect("batch");
        let b = w.take(&ob, 3, 4, now).expect("batch");
        // The second batch overtook the first and was refused; the window goes back...
        w.answered(b.sent, Some(0), now);
        let again = w.take(&ob, 3, 4, now).expect("resent");
        assert_eq!(seqs(&again), vec![0, 1, 2]);
        // ...and the first batch, of the old round, was accepted after all: the new round
        // goes on from its acknowledgement.
        w.answered(a.sent, Some(3), now);
        let next = w.take(&ob, 3, 4, now).expect("the new round goes on");
        assert_eq!(seqs(&next), vec![3, 4, 5]);
        // An answer that covers its batch goes back never.
        w.answered(again.sent, Some(3), now);
        w.answered(next.sent, Some(6), now);
        let last = w.take(&ob, 3, 4, now).expect("the rest");
        assert_eq!(seqs(&last), vec![6, 7, 8]);
    }

    #[test]
    fn a_failed_batch_starts_a_new_round_and_late_answers_still_acknowledge() {
        let now = Instant::now();
        let ob = outbox_with(6);
        let mut w = SendWindow::new(now);
        let a = w.take(&ob, 3, 2, now).expect("batch");
        let b = w.take(&ob, 3, 2, now).expect("batch");
        w.answered(a.sent, None, now);
        let again = w.take(&ob, 3, 2, now).expect("resent");
        assert_eq!(seqs(&again), vec![0, 1, 2]);
        // The old round's second batch arrives after all: it acknowledges, nothing more.
        w.answered(b.sent, Some(6), now);
        assert_eq!(
            w.in_flight(),
            1,
            "the old round's answer ends no batch of this one"
        );
        assert!(w.take(&ob, 3, 2, now).is_none(), "everything acknowledged");
        w.answered(again.sent, Some(6), now);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn expires_batches_that_are_never_answered() {
        let t0 = Instant::now();
        let ob = outbox_with(2);
        let mut w = SendWindow::new(t0);
        let _lost = w.take(&ob, 8, 2, t0).expect("batch");
        let patience = Duration::from_secs(4);
        assert!(!w.expire(patience, t0 + Duration::from_secs(1)));
        assert!(w.take(&ob, 8, 2, t0).is_none(), "nothing new to send");
        assert!(w.expire(patience, t0 + Duration::from_secs(5)));
        let again = w.take(&ob, 8, 2, t0).expect("resent after expiry");
        assert_eq!(seqs(&again), vec![0, 1]);
    }

    #[test]
    fn proposes_a_trim_again_while_the_outbox_does_not_show_it() {
        let t0 = Instant::now();
        let retry = Duration::from_secs(1);
        let dst = GroupId(2);
        let mut ch = channel_with(6);
        let mut w = SendWindow::new(t0);
        let a = w.take(&ch.outboxes[&dst], 8, 2, t0).expect("batch");
        w.answered(a.sent, Some(6), t0);
        assert_eq!(w.trim_due(&ch.outboxes[&dst], retry, t0), Some(6));
        let soon = t0 + Duration::from_millis(100);
        assert_eq!(
            w.trim_due(&ch.outboxes[&dst], retry, soon),
            None,
            "not again while the proposal may still commit"
        );
        // The proposal was lost (not committed before a leader change): the replicated
        // outbox still holds the acknowledged messages, and nothing more will be sent.
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(
            w.trim_due(&ch.outboxes[&dst], retry, later),
            Some(6),
            "proposed again"
        );
        ch.trim(dst, 6);
        ch.push(dst, vec![6]);
        assert_eq!(
            w.trim_due(&ch.outboxes[&dst], retry, later + retry * 2),
            None,
            "the outbox shows the trim"
        );
    }

    #[test]
    fn a_trim_some_other_leader_logged_further_is_not_proposed_again() {
        let t0 = Instant::now();
        let retry = Duration::from_secs(1);
        let dst = GroupId(2);
        let mut ch = channel_with(6);
        let mut w = SendWindow::new(t0);
        let a = w.take(&ch.outboxes[&dst], 3, 2, t0).expect("batch");
        w.answered(a.sent, Some(3), t0);
        assert_eq!(w.trim_due(&ch.outboxes[&dst], retry, t0), Some(3));
        // Meanwhile another leader was acknowledged further and trimmed.
        ch.trim(dst, 5);
        assert_eq!(w.trim_due(&ch.outboxes[&dst], retry, t0 + retry * 2), None);
    }

    #[test]
    fn a_new_window_starts_from_the_oldest_unacknowledged_message() {
        let now = Instant::now();
        let mut ch = channel_with(5);
        ch.trim(GroupId(2), 3);
        let ob = &ch.outboxes[&GroupId(2)];
        let mut w = SendWindow::new(now);
        let a = w.take(ob, 8, 2, now).expect("batch");
        assert_eq!(seqs(&a), vec![3, 4]);
    }
}
