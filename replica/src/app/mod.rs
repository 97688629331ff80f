//! The application interface of a group: what runs when a message is atomically delivered or a
//! message arrives over the reliable inter-group channel.
//!
//! An [`Application`] is part of the replicated state: every replica of a group calls it with the
//! same inputs in the same order, so it must be deterministic, and it must snapshot and restore
//! itself so that Raft can compact the log. The DS-SMR engine plugs in here; [`Recorder`] is the
//! application used by the multicast tests and benchmark.

pub mod recorder;

pub use recorder::Recorder;

use crate::ids::GroupId;
use crate::multicast::McastMessage;
use std::any::Any;
use thiserror::Error;

/// Messages an application asks its group to send over the reliable channel while applying.
#[derive(Debug, Default)]
pub struct Sends {
    pending: Vec<(GroupId, Vec<u8>)>,
}

impl Sends {
    /// Queues `payload` for group `dst`; it is sent once the current entry is applied.
    pub fn send(&mut self, dst: GroupId, payload: Vec<u8>) {
        self.pending.push((dst, payload));
    }

    /// Takes the queued messages.
    pub fn drain(&mut self) -> impl Iterator<Item = (GroupId, Vec<u8>)> + '_ {
        self.pending.drain(..)
    }
}

/// Why an application snapshot could not be restored.
#[derive(Debug, Error)]
#[error("cannot restore application snapshot: {0}")]
pub struct RestoreError(#[from] pub postcard::Error);

/// A deterministic application replicated by one group.
pub trait Application: Send + Sync + 'static {
    /// Applies an atomically delivered message (final timestamp `ts`).
    fn deliver(&mut self, msg: &McastMessage, ts: u64, sends: &mut Sends);

    /// Applies a message received from group `from` over the reliable channel.
    fn receive(&mut self, from: GroupId, payload: &[u8], sends: &mut Sends);

    /// Serialises the whole application state.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the application state with a snapshot taken by [`Application::snapshot`].
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError>;

    /// Gives tests and tools typed access to the application.
    fn as_any(&self) -> &dyn Any;
}
