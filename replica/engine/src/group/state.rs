//! The replicated state of a group: Skeen multicast, reliable channel, replies to clients and
//! the application.
//!
//! [`GroupState::apply`] is the only way the state changes. It is deterministic and does no
//! I/O; what the runtime must do afterwards is returned in [`Effects`].

use crate::app::{Actions, Application, Keep, RestoreError};
use crate::group::replies::ReplyCache;
use crate::group::types::Op;
use crate::ids::{GroupId, MsgId};
use crate::multicast::channel::ChannelState;
use crate::multicast::skeen::{DeliveryRule, Output, SkeenState};
use serde::{Deserialize, Serialize};

/// What applying entries asks of the runtime.
#[derive(Debug, Default)]
pub struct Effects {
    /// Messages delivered, with their final timestamps.
    pub delivered: Vec<(MsgId, u64)>,
    /// Replies the application gave (wake waiting clients).
    pub replied: Vec<(MsgId, u64, Vec<u8>)>,
    /// Multi-group messages that got a local timestamp (the leader announces them).
    pub assigned: Vec<(MsgId, u64)>,
    /// Destinations with new channel messages to transmit.
    pub channel_dirty: Vec<GroupId>,
}

/// The replicated state of a group.
pub struct GroupState {
    /// Skeen atomic multicast.
    pub skeen: SkeenState,
    /// Reliable channel outboxes and duplicate filters.
    pub channel: ChannelState,
    /// Recent replies to clients, for resubmitted messages.
    pub replies: ReplyCache,
    /// The application fed by deliveries and channel messages.
    pub app: Box<dyn Application>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    skeen: SkeenState,
    channel: ChannelState,
    replies: ReplyCache,
    app: Vec<u8>,
}

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot bytes do not decode.
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] postcard::Error),
    /// The application rejected its part.
    #[error(transparent)]
    App(#[from] RestoreError),
    /// The snapshot belongs to another group.
    #[error("snapshot of group {found} offered to group {expected}")]
    WrongGroup {
        /// The group of this state.
        expected: GroupId,
        /// The group the snapshot was taken from.
        found: GroupId,
    },
}

impl GroupState {
    /// Fresh state of `group` running `app`.
    pub fn new(group: GroupId, app: Box<dyn Application>) -> Self {
        GroupState {
            skeen: SkeenState::new(group),
            channel: ChannelState::default(),
            replies: ReplyCache::default(),
            app,
        }
    }

    /// The group this state belongs to.
    pub fn group(&self) -> GroupId {
        self.skeen.group()
    }

    /// Moves the group's log time to `at_ms` (never back) and ends the client sessions idle
    /// for [`crate::multicast::skeen::SESSION_IDLE_MS`] by it: their floors, replies and
    /// delivered messages no other destination can announce again are forgotten.
    pub fn advance_time(&mut self, at_ms: u64) {
        if self.skeen.advance_time(at_ms) {
            let skeen = &self.skeen;
            self.replies
                .retain_senders(|sender| skeen.has_session(sender));
        }
    }

    /// Applies one logged operation.
    pub fn apply(&mut self, op: Op, fx: &mut Effects) {
        let mut actions = Actions::default();
        match op {
            Op::Start(msg) => {
                let mut out = Vec::new();
                self.skeen.start(msg, &mut out);
                self.handle_outputs(out, &mut actions, fx);
            }
            Op::Learn {
                msg,
                from,
                local_ts,
            } => {
                let mut out = Vec::new();
                self.skeen.learn(msg, from, local_ts, &mut out);
                self.handle_outputs(out, &mut actions, fx);
            }
            Op::Watermark { from, ts } => {
                self.skeen.observe_watermark(from, ts);
            }
            Op::Final { id, ts } => {
                let mut out = Vec::new();
                self.skeen.finalize(id, ts, &mut out);
                self.handle_outputs(out, &mut actions, fx);
            }
            Op::ChannelSend { dst, payload } => actions.send(dst, payload),
            Op::ChannelReceive { from, seq, payload } => {
                if self.channel.accept(from, seq) {
                    self.app.receive(from, &payload, &mut actions);
                }
            }
            Op::ChannelTrim { dst, upto } => self.channel.trim(dst, upto),
        }
        let forgetful = self.skeen.rule() == DeliveryRule::NoDuplicateFilter;
        for (id, ts, reply, keep) in actions.drain_replies() {
            let kept = (keep == Keep::Reply).then(|| reply.clone());
            if !forgetful {
                self.replies
                    .insert(id, ts, kept, self.skeen.floor(id.sender));
            }
            fx.replied.push((id, ts, reply));
        }
        for (dst, payload) in actions.drain_sends() {
            self.channel.push(dst, payload);
            if !fx.channel_dirty.contains(&dst) {
                fx.channel_dirty.push(dst);
            }
        }
    }

    fn handle_outputs(&mut self, out: Vec<Output>, actions: &mut Actions, fx: &mut Effects) {
        for o in out {
            match o {
                Output::Deliver { msg, ts } => {
                    self.app.deliver(&msg, ts, actions);
                    fx.delivered.push((msg.id, ts));
                }
                Output::Assigned { id, local_ts } => fx.assigned.push((id, local_ts)),
            }
        }
    }

    /// Serialises the whole state for a Raft snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        let body = SnapshotBody {
            skeen: self.skeen.clone(),
            channel: self.channel.clone(),
            replies: self.replies.clone(),
            app: self.app.snapshot(),
        };
        postcard::to_allocvec(&body).expect("group state of plain collections always serialises")
    }

    /// Replaces the state with a snapshot taken by [`GroupState::snapshot`].
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let body: SnapshotBody = postcard::from_bytes(bytes)?;
        if body.skeen.group() != self.group() {
            return Err(SnapshotError::WrongGroup {
                expected: self.group(),
                found: body.skeen.group(),
            });
        }
        self.app.restore(&body.app)?;
        let rule = self.skeen.rule();
        self.skeen = body.skeen;
        self.skeen.set_rule(rule);
        self.channel = body.channel;
        self.replies = body.replies;
        Ok(())
    }
}
