//! Skeen's timestamp exchange between destination leaders: serving announces from other
//! groups, announcing this group's local timestamps in batches (a window per destination),
//! and logging `finalize(m, max)` once every destination's timestamp is known. Every batch
//! also carries the sender's watermark, and the leader sends it on its own when nothing else
//! goes out ([`Coordinator::push_watermarks`]): groups log each other's watermarks to know
//! when a delivered message can be forgotten (see [`crate::multicast::skeen`]).

use super::{Coordinator, RequestError, PEER_DEADLINE, RETRY_AFTER};
use crate::group::client::{Answer, ClientError, GroupClient};
use crate::group::types::Op;
use crate::ids::GroupId;
use crate::multicast::skeen::Status;
use crate::multicast::{McastMessage, MessageError};
use crate::proto;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most announces in one batch.
const ANNOUNCE_BATCH: usize = 4096;
/// Announce batches in flight to one destination; more batches wait and grow meanwhile.
const ANNOUNCES_IN_FLIGHT: usize = 4;
/// A raised watermark is sent at most this often to each group.
const WATERMARK_EVERY: Duration = Duration::from_millis(500);
/// An unchanged watermark is sent again after this long (the receiver's leader may have
/// changed before logging it).
const WATERMARK_PATIENCE: Duration = Duration::from_secs(5);

/// Sends `req` to the leader of its destination group (following redirects until
/// [`PEER_DEADLINE`]): the outcome of each announce, in order.
async fn send_batch(
    peer: &GroupClient,
    req: proto::AnnounceBatch,
) -> Result<Vec<proto::AnnounceOutcome>, ClientError> {
    peer.call(Instant::now() + PEER_DEADLINE, |mut rpc| {
        let req = req.clone();
        async move {
            use proto::announce_batch_reply::Outcome;
            match rpc.announce(req).await?.into_inner().outcome {
                Some(Outcome::NotLeader(h)) => Ok(Answer::NotLeader(Some(h))),
                Some(Outcome::Outcomes(o)) => Ok(Answer::Done(o.outcomes)),
                None => Err(tonic::Status::internal("empty announce reply")),
            }
        }
    })
    .await
}

impl Coordinator {
    /// Serves a batch of local-timestamp announces from another destination leader.
    pub async fn announce(
        &self,
        batch: proto::AnnounceBatch,
    ) -> Result<proto::announce_batch_reply::Outcome, RequestError> {
        use proto::announce_batch_reply::Outcome as Reply;
        use proto::announce_outcome::Outcome;
        let from = GroupId(batch.from_group);
        if batch.to_group != self.group.0 {
            return Err(MessageError::WrongReceiver {
                addressed: batch.to_group,
                receiver: self.group.0,
            }
            .into());
        }
        let named = batch
            .announces
            .iter()
            .filter_map(|a| a.message.as_ref())
            .flat_map(|m| m.dests.iter().copied());
        self.learn_groups(std::iter::once(batch.from_group).chain(named))
            .await;
        if !self.live.known(from) || from == self.group {
            return Err(MessageError::BadSource(batch.from_group).into());
        }
        if batch.announces.is_empty() && batch.watermark == 0 {
            return Err(MessageError::MissingMessage.into());
        }
        // Each announce is judged on its own: one this group cannot order is refused with
        // its reason, and the others of the batch are served (a batch refused as a whole
        // would be sent again as a whole, and its good announces never served).
        let mut items = Vec::with_capacity(batch.announces.len());
        for ann in batch.announces {
            let checked =
                McastMessage::from_proto(ann.message, self.ordered_group()).and_then(|msg| match [
                    self.group, from,
                ]
                .into_iter()
                .find(|g| !msg.dests.contains(g))
                {
                    Some(g) => Err(MessageError::NotADestination(g.0)),
                    None => Ok(msg),
                });
            items.push(checked.map(|msg| (msg, ann.local_ts)));
        }
        if !self.is_leader() {
            return Ok(Reply::NotLeader(self.leader_hint()));
        }
        let mut outcomes = Vec::with_capacity(items.len());
        let mut to_start = Vec::new();
        let mut to_finalize = Vec::new();
        let watermark = {
            let state = self.shared.state();
            let mut v = self.vol();
            for item in items {
                let (msg, local_ts) = match item {
                    Ok(item) => item,
                    Err(e) => {
                        tracing::warn!(group = %self.group, %from, error = %e,
                            "announce refused");
                        outcomes.push(proto::AnnounceOutcome {
                            outcome: Some(Outcome::Refused(e.to_string())),
                        });
                        continue;
                    }
                };
                let outcome = match state.skeen.status(msg.id) {
                    // A late copy of an announce: the sender is past the message.
                    Status::Unknown | Status::Forgotten
                        if state.skeen.stale_announce(from, local_ts) =>
                    {
                        Outcome::Pending(true)
                    }
                    Status::Unknown | Status::Forgotten => {
                        v.collected
                            .entry(msg.id)
                            .or_default()
                            .insert(from, local_ts);
                        let due = v
                            .started
                            .get(&msg.id)
                            .is_none_or(|t| t.elapsed() > RETRY_AFTER);
                        if due {
                            v.started.insert(msg.id, Instant::now());
                            to_start.push((msg, local_ts));
                        }
                        Outcome::Pending(true)
                    }
                    Status::Tentative(ts) => {
                        v.collected
                            .entry(msg.id)
                            .or_default()
                            .insert(from, local_ts);
                        to_finalize.push((msg, ts));
                        Outcome::LocalTs(ts)
                    }
                    Status::Final(ts) => Outcome::FinalTs(ts),
                    Status::Delivered(ts) => Outcome::FinalTs(ts),
                };
                outcomes.push(proto::AnnounceOutcome {
                    outcome: Some(outcome),
                });
            }
            let known = state.skeen.watermark_of(from);
            // At most one proposal per group every WATERMARK_EVERY: each applied watermark
            // sweeps what the group remembers.
            let due = batch.watermark > known
                && v.watermarks_logged
                    .get(&from)
                    .is_none_or(|(_, at)| at.elapsed() > WATERMARK_EVERY);
            if due {
                v.watermarks_logged
                    .insert(from, (batch.watermark, Instant::now()));
            }
            due.then_some(batch.watermark)
        };
        for (msg, local_ts) in to_start {
            self.proposer
                .submit(Op::Learn {
                    msg,
                    from,
                    local_ts,
                })
                .await;
        }
        if let Some(ts) = watermark {
            self.proposer.submit(Op::Watermark { from, ts }).await;
        }
        for (msg, ts) in to_finalize {
            self.try_finalize(&msg, ts).await;
        }
        Ok(Reply::Outcomes(proto::AnnounceOutcomes { outcomes }))
    }

    /// Logs `finalize(m, max)` when every destination's local timestamp is known.
    pub(super) async fn try_finalize(&self, msg: &McastMessage, own_ts: u64) {
        let final_ts = {
            let mut v = self.vol();
            let c = v.collected.entry(msg.id).or_default();
            c.insert(self.group, own_ts);
            if !msg.dests.iter().all(|g| c.contains_key(g)) {
                return;
            }
            let max = c.values().copied().max().unwrap_or(own_ts);
            let due = v
                .finalized
                .get(&msg.id)
                .is_none_or(|t| t.elapsed() > RETRY_AFTER);
            if !due {
                return;
            }
            v.finalized.insert(msg.id, Instant::now());
            tracing::debug!(group = %self.group, id = %msg.id, max, "finalize");
            max
        };
        self.proposer
            .submit(Op::Final {
                id: msg.id,
                ts: final_ts,
            })
            .await;
    }

    /// Queues the announce of `msg` to every other destination and flushes the queues.
    pub(super) fn announce_to_others(self: &Arc<Self>, msg: &McastMessage, local_ts: u64) {
        let dsts: Vec<GroupId> = {
            let mut v = self.vol();
            v.announced.insert(msg.id, Instant::now());
            // Every other destination, even one whose timestamp we know: it may not know ours.
            let dsts: Vec<GroupId> = msg
                .dests
                .iter()
                .copied()
                .filter(|g| *g != self.group)
                .collect();
            for d in &dsts {
                v.announce_queue
                    .entry(*d)
                    .or_default()
                    .push((msg.clone(), local_ts));
            }
            dsts
        };
        for d in dsts {
            self.flush_announces(d);
        }
    }

    /// Sends the queued announces for `dst` as one batch, unless [`ANNOUNCES_IN_FLIGHT`]
    /// batches are already in flight; queued announces then wait for an answer, so batches
    /// grow with load.
    fn flush_announces(self: &Arc<Self>, dst: GroupId) {
        let Some(peer) = self.live.client(dst) else {
            return;
        };
        let batch = {
            let mut v = self.vol();
            if v.announcing.get(&dst).copied().unwrap_or(0) >= ANNOUNCES_IN_FLIGHT {
                return;
            }
            let Some(q) = v.announce_queue.get_mut(&dst) else {
                return;
            };
            if q.is_empty() {
                return;
            }
            let n = q.len().min(ANNOUNCE_BATCH);
            let batch: Vec<(McastMessage, u64)> = q.drain(..n).collect();
            *v.announcing.entry(dst).or_default() += 1;
            batch
        };
        let me = self.clone();
        tokio::spawn(async move {
            let req = proto::AnnounceBatch {
                from_group: me.group.0,
                to_group: dst.0,
                watermark: me.shared.state().skeen.watermark(),
                announces: batch
                    .iter()
                    .map(|(m, ts)| proto::TimestampAnnounce {
                        local_ts: *ts,
                        message: Some(m.to_proto()),
                    })
                    .collect(),
            };
            match send_batch(&peer, req).await {
                Ok(outcomes) => me.on_announce_outcomes(dst, &batch, outcomes).await,
                Err(e) => {
                    tracing::debug!(group = %me.group, %dst, error = %e, "announce failed");
                }
            }
            if let Some(n) = me.vol().announcing.get_mut(&dst) {
                *n = n.saturating_sub(1);
            }
            me.flush_announces(dst);
        });
    }

    /// Sends this group's watermark to every other group whose log does not have it yet (or
    /// was last sent it long ago), in a batch without announces; the announce batches carry it
    /// too. Called on the leader's tick.
    pub(super) fn push_watermarks(self: &Arc<Self>) {
        let watermark = self.shared.state().skeen.watermark();
        for dst in self.live.groups() {
            if dst == self.group {
                continue;
            }
            let Some(peer) = self.live.client(dst) else {
                continue;
            };
            {
                let mut v = self.vol();
                let due = v.watermarks_sent.get(&dst).is_none_or(|(w, at)| {
                    (watermark > *w && at.elapsed() > WATERMARK_EVERY)
                        || at.elapsed() > WATERMARK_PATIENCE
                });
                if !due {
                    continue;
                }
                v.watermarks_sent.insert(dst, (watermark, Instant::now()));
            }
            let me = self.clone();
            tokio::spawn(async move {
                let req = proto::AnnounceBatch {
                    from_group: me.group.0,
                    to_group: dst.0,
                    watermark,
                    announces: Vec::new(),
                };
                if let Err(e) = send_batch(&peer, req).await {
                    tracing::debug!(group = %me.group, %dst, error = %e, "watermark not sent");
                    // Send it again at the next tick.
                    me.vol().watermarks_sent.remove(&dst);
                }
            });
        }
    }

    async fn on_announce_outcomes(
        &self,
        dst: GroupId,
        batch: &[(McastMessage, u64)],
        outcomes: Vec<proto::AnnounceOutcome>,
    ) {
        use proto::announce_outcome::Outcome;
        for ((msg, local_ts), o) in batch.iter().zip(outcomes) {
            match o.outcome {
                Some(Outcome::LocalTs(ts)) => {
                    self.vol()
                        .collected
                        .entry(msg.id)
                        .or_default()
                        .insert(dst, ts);
                    self.try_finalize(msg, *local_ts).await;
                }
                Some(Outcome::FinalTs(ts)) => {
                    // The destination knows the final timestamp: the max of all local ones.
                    self.proposer.submit(Op::Final { id: msg.id, ts }).await;
                }
                Some(Outcome::Refused(why)) => {
                    // Only a message this group should not have ordered gets here (a
                    // destination cannot order what names a group it does not know).
                    tracing::warn!(group = %self.group, %dst, msg = %msg.id, why,
                        "a destination refused the announce of a message");
                }
                _ => {}
            }
        }
    }
}
