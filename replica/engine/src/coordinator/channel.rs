//! The leader side of the reliable inter-group channel: transmitting outboxes through a
//! window of batches per destination ([`SendWindow`](crate::multicast::channel::SendWindow)),
//! logging trims as acknowledgements come back, and logging the messages other groups
//! transmit here, in their order.

use super::{Coordinator, RequestError, CHANNEL_PATIENCE, PEER_DEADLINE, RETRY_AFTER};
use crate::group::client::Answer;
use crate::group::types::Op;
use crate::ids::GroupId;
use crate::multicast::channel::SendWindow;
use crate::multicast::MessageError;
use crate::proto;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most channel messages in one transmission.
const CHANNEL_BATCH: usize = 512;
/// Channel transmissions in flight to one destination.
const CHANNEL_WINDOW: usize = 4;
/// How long a channel transmission that arrived ahead of its predecessor waits for it.
const REORDER_WAIT: Duration = Duration::from_millis(200);

impl Coordinator {
    /// Serves a channel transmission from another group's leader.
    pub async fn channel(
        &self,
        batch: proto::ChannelBatch,
    ) -> Result<proto::channel_ack::Outcome, RequestError> {
        use proto::channel_ack::Outcome;
        let Some(first) = batch.messages.first() else {
            return Err(MessageError::MissingMessage.into());
        };
        let from = GroupId(first.from_group);
        self.learn_groups([first.from_group]).await;
        if !self.live.known(from) || from == self.group {
            return Err(MessageError::BadSource(first.from_group).into());
        }
        if let Some(m) = batch.messages.iter().find(|m| m.from_group != from.0) {
            return Err(MessageError::MixedSources(from.0, m.from_group).into());
        }
        if let Some(m) = batch.messages.iter().find(|m| m.to_group != self.group.0) {
            return Err(MessageError::WrongReceiver {
                addressed: m.to_group,
                receiver: self.group.0,
            }
            .into());
        }
        if !self.is_leader() {
            return Ok(Outcome::NotLeader(self.leader_hint()));
        }
        let next = self.await_predecessor(from, batch.messages[0].seq).await;
        let ops: Vec<Op> = batch
            .messages
            .into_iter()
            .filter(|m| m.seq >= next)
            .map(|m| Op::ChannelReceive {
                from,
                seq: m.seq,
                payload: m.payload,
            })
            .collect();
        if let Some(Op::ChannelReceive { seq, .. }) = ops.last() {
            let mut receiving = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
            let end = receiving.entry(from).or_default();
            *end = (*end).max(seq + 1);
            self.received.notify_waiters();
        }
        // One run: batches of other transmissions cannot come between its messages.
        if !ops.is_empty() {
            if let Err(e) = self.proposer.propose_all(ops).await {
                tracing::debug!(group = %self.group, error = %e, "channel receive not committed");
            }
        }
        Ok(Outcome::NextExpected(
            self.shared.state().channel.next_expected(from),
        ))
    }

    /// Waits (at most [`REORDER_WAIT`]) until the channel messages from `from` before `first`
    /// were proposed here, as they are when the transmissions of a window arrive out of
    /// order; returns the next sequence number the log expects from `from`. Giving up is
    /// safe: messages ahead of a gap are refused when applied and sent again.
    async fn await_predecessor(&self, from: GroupId, first: u64) -> u64 {
        let deadline = tokio::time::Instant::now() + REORDER_WAIT;
        loop {
            let woken = self.received.notified();
            let next = self.shared.state().channel.next_expected(from);
            let proposed = self
                .receiving
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&from)
                .copied()
                .unwrap_or(0);
            if first <= next.max(proposed) || tokio::time::Instant::now() >= deadline {
                return next;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return self.shared.state().channel.next_expected(from);
            }
        }
    }

    /// The tick's work on the outbox for `dst`: sends again what was unanswered for
    /// [`CHANNEL_PATIENCE`], proposes again a trim the replicated outbox does not show
    /// [`RETRY_AFTER`] after it was proposed (lost in a leader change), and transmits.
    pub(super) async fn channel_tick(self: &Arc<Self>, dst: GroupId) {
        let (expired, trim) = {
            let state = self.shared.state();
            let mut v = self.vol();
            match (state.channel.outbox(dst), v.windows.get_mut(&dst)) {
                (Some(outbox), Some(window)) => {
                    let now = Instant::now();
                    let expired = window.expire(CHANNEL_PATIENCE, now);
                    (expired, window.trim_due(outbox, RETRY_AFTER, now))
                }
                _ => (false, None),
            }
        };
        if expired {
            tracing::debug!(group = %self.group, %dst, "channel transmission unanswered; resending");
        }
        if let Some(upto) = trim {
            tracing::debug!(group = %self.group, %dst, upto, "channel trim proposed again");
            self.proposer.submit(Op::ChannelTrim { dst, upto }).await;
        }
        self.transmit(dst);
    }

    /// Transmits the outbox for `dst`: as many batches as the window allows, each following
    /// the ones in flight.
    pub(super) fn transmit(self: &Arc<Self>, dst: GroupId) {
        let Some(peer) = self.live.client(dst) else {
            return;
        };
        loop {
            let batch = {
                let state = self.shared.state();
                let Some(outbox) = state.channel.outbox(dst) else {
                    return;
                };
                let now = Instant::now();
                let mut v = self.vol();
                let window = v.windows.entry(dst).or_insert_with(|| SendWindow::new(now));
                window.take(outbox, CHANNEL_BATCH, CHANNEL_WINDOW, now)
            };
            let Some(batch) = batch else {
                return;
            };
            let sent = batch.sent;
            let messages: Vec<proto::ChannelMessage> = batch
                .messages
                .into_iter()
                .map(|(seq, payload)| proto::ChannelMessage {
                    from_group: self.group.0,
                    to_group: dst.0,
                    seq,
                    payload,
                })
                .collect();
            let me = self.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                let batch = proto::ChannelBatch { messages };
                let reply = peer
                    .call(Instant::now() + PEER_DEADLINE * 2, |mut rpc| {
                        let batch = batch.clone();
                        async move {
                            use proto::channel_ack::Outcome;
                            match rpc.channel(batch).await?.into_inner().outcome {
                                Some(Outcome::NotLeader(h)) => Ok(Answer::NotLeader(Some(h))),
                                Some(Outcome::NextExpected(n)) => Ok(Answer::Done(n)),
                                None => Err(tonic::Status::internal("empty channel ack")),
                            }
                        }
                    })
                    .await;
                let ack = match reply {
                    Ok(upto) => Some(upto),
                    Err(e) => {
                        tracing::debug!(group = %me.group, %dst, error = %e, "channel send failed");
                        None
                    }
                };
                let trim = {
                    let state = me.shared.state();
                    let mut v = me.vol();
                    let Some(window) = v.windows.get_mut(&dst) else {
                        return;
                    };
                    let now = Instant::now();
                    window.answered(sent, ack, now);
                    state
                        .channel
                        .outbox(dst)
                        .and_then(|outbox| window.trim_due(outbox, RETRY_AFTER, now))
                };
                if let Some(upto) = trim {
                    // Logged lazily: the next batch does not wait for the trim.
                    me.proposer.submit(Op::ChannelTrim { dst, upto }).await;
                }
                // After a failure the tick sends again; after an answer, whatever queued up
                // meanwhile goes now.
                if ack.is_some() && me.is_leader() {
                    me.transmit(dst);
                }
            });
        }
    }
}
