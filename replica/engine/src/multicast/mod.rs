//! Atomic multicast across groups and the reliable inter-group channel.
//!
//! Both are deterministic state machines fed by each group's Raft log ([`skeen`], [`channel`]);
//! the leader-side exchanges that drive them live in [`coordinator`]. [`checker`] verifies the
//! atomic multicast properties on recorded delivery sequences.

pub mod channel;
pub mod coordinator;
pub mod message;
pub mod skeen;

pub use message::{McastMessage, MessageError};
