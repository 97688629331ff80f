//! A replicated group: one openraft cluster of 2f+1 replicas over tonic gRPC.
//!
//! The pieces are separate, as openraft lays them out: [`log_store`] (log and vote, in memory or
//! on disk), [`state_machine`] (applies entries to the replicated [`state`], snapshots),
//! [`network`] (Raft RPCs to peers), [`service`] (the gRPC server side), [`proposer`] (batches
//! operations into entries) and [`node`] (assembles and runs a replica).

pub mod faults;
pub mod handover;
pub mod log_store;
pub mod network;
pub mod node;
pub mod proposer;
pub mod replies;
pub mod service;
pub mod state;
pub mod state_machine;
pub mod types;

pub use faults::Faults;
pub use handover::{hand_over, Handover, HandoverError};
pub use node::{bind_local, GroupNode, RaftTuning, ReplicaSpec, Storage};
