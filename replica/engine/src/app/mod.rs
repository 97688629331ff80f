//! The application interface of a group: what runs when a message is atomically delivered or a
//! message arrives over the reliable inter-group channel.
//!
//! An [`Application`] is part of the replicated state: every replica of a group calls it with the
//! same inputs in the same order, so it must be deterministic, and it must snapshot and restore
//! itself so that Raft can compact the log. The DS-SMR engine plugs in here; [`Recorder`] is the
//! application used by the multicast tests and benchmark.

pub mod chirper;
pub mod kv;
pub mod recorder;
pub mod state_machine;

pub use recorder::Recorder;
pub use state_machine::{StateMachine, Store};

use crate::ids::{GroupId, MsgId};
use crate::multicast::McastMessage;
use std::any::Any;
use thiserror::Error;

/// What an application asks of its group while applying: messages to send over the reliable
/// channel, and replies to the clients of delivered messages.
///
/// Both take effect only after the entry that produced them is applied, and are replicated
/// state: every replica produces the same ones, the leader transmits and answers.
#[derive(Debug, Default)]
pub struct Actions {
    sends: Vec<(GroupId, Vec<u8>)>,
    replies: Vec<(MsgId, u64, Vec<u8>, Keep)>,
}

/// Whether the group keeps a reply for clients that ask again ([`ReplyCache`]).
///
/// [`ReplyCache`]: crate::group::replies::ReplyCache
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// A command that changed (or may have changed) the state: asking again must give this
    /// reply, never a second execution.
    Reply,
    /// A read: answered once; asked again, it runs again.
    NotTheReply,
}

impl Actions {
    /// Queues `payload` for group `dst`; it is sent once the current entry is applied.
    pub fn send(&mut self, dst: GroupId, payload: Vec<u8>) {
        self.sends.push((dst, payload));
    }

    /// Answers the client of message `id` (delivered at final timestamp `ts`) with `reply`.
    pub fn reply(&mut self, id: MsgId, ts: u64, reply: Vec<u8>) {
        self.replies.push((id, ts, reply, Keep::Reply));
    }

    /// Answers the client of read-only message `id` with `reply`, which the group does not
    /// keep ([`Keep::NotTheReply`]).
    pub fn reply_to_read(&mut self, id: MsgId, ts: u64, reply: Vec<u8>) {
        self.replies.push((id, ts, reply, Keep::NotTheReply));
    }

    /// Takes the queued messages.
    pub(crate) fn drain_sends(&mut self) -> impl Iterator<Item = (GroupId, Vec<u8>)> + '_ {
        self.sends.drain(..)
    }

    /// Takes the queued replies.
    pub(crate) fn drain_replies(
        &mut self,
    ) -> impl Iterator<Item = (MsgId, u64, Vec<u8>, Keep)> + '_ {
        self.replies.drain(..)
    }
}

/// Why a group refuses a client's message before ordering it ([`Application::validate`]).
#[derive(Debug, Error)]
pub enum InvalidCommand {
    /// The payload (or a value inside it) does not decode.
    #[error(transparent)]
    Undecodable(#[from] crate::command::CodecError),
    /// The command is sent to a group that never executes that kind of command.
    #[error("{0}")]
    Misdirected(&'static str),
    /// An admin command names a partition the oracle's cluster config does not have.
    #[error(
        "partition {partition} is not in this oracle's cluster config (partitions: {known:?}); \
         restart the oracle with a config that has it"
    )]
    UnknownPartition {
        /// The partition named.
        partition: GroupId,
        /// The partitions the oracle knows.
        known: Vec<GroupId>,
    },
}

/// Why an application snapshot could not be restored.
#[derive(Debug, Error)]
#[error("cannot restore application snapshot: {0}")]
pub struct RestoreError(#[from] pub postcard::Error);

/// A deterministic application replicated by one group.
pub trait Application: Send + Sync + 'static {
    /// Applies an atomically delivered message (final timestamp `ts`). The application must
    /// answer it exactly once with [`Actions::reply`]: now, or later while applying another
    /// delivery or a channel message (a partition waiting for a moved variable, say).
    fn deliver(&mut self, msg: &McastMessage, ts: u64, actions: &mut Actions);

    /// Checks a client's message before it is ordered, so that malformed input is refused
    /// with an error instead of entering the log. Called at the leader that receives the
    /// client's submission; what passes is still handled deterministically when delivered.
    /// Default: everything passes.
    fn validate(&self, _msg: &McastMessage) -> Result<(), InvalidCommand> {
        Ok(())
    }

    /// True when `msg` is of a kind [`Application::query`] may answer (told from the message
    /// alone, before the leader waits for a read index). Default: false.
    fn reads_only(&self, _msg: &McastMessage) -> bool {
        false
    }

    /// Answers `msg` from the current state without ordering it: the encoded reply, as its
    /// delivery would have produced it, when `msg` is a read-only command this group alone
    /// can answer now; `None` when it must be ordered as usual. The leader calls it after a
    /// read index (see [`crate::group::read_index`]); it changes nothing, counters included.
    /// Default: `None`.
    fn query(&self, _msg: &McastMessage) -> Option<Vec<u8>> {
        None
    }

    /// The partitions' lifecycle as this group's replicated state holds it (the oracle and
    /// DS-SMR partitions; see [`crate::lifecycle`]): a new submission naming a removed
    /// partition is refused with it. Default: `None`, nothing is refused for it.
    fn lifecycle(&self) -> Option<&crate::lifecycle::Lifecycle> {
        None
    }

    /// Applies a message received from group `from` over the reliable channel.
    fn receive(&mut self, from: GroupId, payload: &[u8], actions: &mut Actions);

    /// A one-line account of what the application is doing, for diagnostics (e.g. which
    /// command it is waiting on). Default: empty.
    fn describe(&self) -> String {
        String::new()
    }

    /// What the application did so far and holds now, read when metrics are scraped.
    /// Default: nothing to report.
    fn stats(&self) -> crate::stats::AppStats {
        crate::stats::AppStats::default()
    }

    /// Serialises the whole application state.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the application state with a snapshot taken by [`Application::snapshot`].
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;

    /// Gives tests and tools typed access to the application.
    fn as_any(&self) -> &dyn Any;
}
