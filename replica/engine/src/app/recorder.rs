//! An application that records what its group delivers: the order of atomically delivered
//! messages and the messages received over the reliable channel. Tests check the recorded
//! sequences; the multicast benchmark uses it with recording turned off.

use super::{Actions, Application, RestoreError};
use crate::ids::{GroupId, MsgId};
use crate::multicast::McastMessage;
use serde::{Deserialize, Serialize};
use std::any::Any;

/// Whether a [`Recorder`] keeps every delivery or only counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recording {
    /// Keep the full sequences (tests).
    Full,
    /// Only count (benchmarks).
    CountOnly,
}

/// Records atomic deliveries and channel receptions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recorder {
    recording: Recording,
    delivered: Vec<(MsgId, u64)>,
    received: Vec<(GroupId, Vec<u8>)>,
    delivered_count: u64,
    received_count: u64,
}

impl Recorder {
    /// A recorder that keeps everything or only counts.
    pub fn new(recording: Recording) -> Self {
        Recorder {
            recording,
            delivered: Vec::new(),
            received: Vec::new(),
            delivered_count: 0,
            received_count: 0,
        }
    }

    /// Delivered message ids with their final timestamps, in delivery order.
    pub fn delivered(&self) -> &[(MsgId, u64)] {
        &self.delivered
    }

    /// Channel messages received, in order, with their source group.
    pub fn received(&self) -> &[(GroupId, Vec<u8>)] {
        &self.received
    }

    /// Number of delivered messages.
    pub fn delivered_count(&self) -> u64 {
        self.delivered_count
    }

    /// Number of channel messages received.
    pub fn received_count(&self) -> u64 {
        self.received_count
    }
}

impl Application for Recorder {
    fn deliver(&mut self, msg: &McastMessage, ts: u64, actions: &mut Actions) {
        actions.reply(msg.id, ts, Vec::new());
        self.delivered_count += 1;
        if self.recording == Recording::Full {
            self.delivered.push((msg.id, ts));
        }
    }

    fn receive(&mut self, from: GroupId, payload: &[u8], _actions: &mut Actions) {
        self.received_count += 1;
        if self.recording == Recording::Full {
            self.received.push((from, payload.to_vec()));
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a recorder of plain vectors always serialises")
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        *self = postcard::from_bytes(snapshot)?;
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
