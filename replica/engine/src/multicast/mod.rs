//! Atomic multicast across groups and the reliable inter-group channel, as deterministic state
//! machines fed by each group's Raft log: [`message`] (what is multicast), [`skeen`] (Skeen's
//! timestamps and delivery order) and [`channel`] (FIFO, exactly-once delivery between
//! groups).
//!
//! Nothing here does I/O: the leader-side exchanges that drive these state machines (announces,
//! channel transmissions) live in [`crate::coordinator`].

pub(crate) mod channel;
pub mod message;
pub mod skeen;

pub use message::{McastMessage, MessageError};
