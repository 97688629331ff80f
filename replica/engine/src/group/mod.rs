//! A replicated group: the openraft glue of one group of 2f+1 replicas over tonic gRPC.
//!
//! The pieces are separate, as openraft lays them out: [`types`] (the log entry and its
//! response), [`log_store`] (log and vote, in memory or on disk), [`state_machine`] (applies
//! entries to the replicated [`state`], snapshots), [`network`] (Raft RPCs to peers),
//! [`proposer`] (batches operations into entries), [`replies`] (the replicated reply cache),
//! [`read_index`] (the leader's read loop: linearizable reads off the log) and [`client`] (a client of one group: leader finding, redirects, retries); [`live`] is
//! the topology a process knows, with a client of each group, kept up to date from the
//! oracle. [`faults`] is the test fault table links consult.
//!
//! This module knows the multicast and channel state machines only as parts of the
//! replicated state it applies entries to; the leader-side runtime that drives them is
//! [`crate::coordinator`], and a running replica is assembled in [`crate::node`].

pub(crate) mod client;
pub(crate) mod faults;
pub mod live;
pub mod log_store;
pub(crate) mod network;
pub(crate) mod proposer;
pub mod read_index;
pub(crate) mod replies;
pub mod state;
pub mod state_machine;
pub mod types;

pub use client::{ClientError, GroupClient, MemberRpc};
pub use faults::Faults;
pub use live::LiveTopology;
pub use read_index::ReadRule;
