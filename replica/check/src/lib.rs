//! dssmr-check: judges what a run recorded, offline.
//!
//! # Layout
//!
//! - [`history`]: Jepsen-style operation histories (the record format and recorder), the kv
//!   model, the linearizability checker and the bank invariant;
//! - [`multicast`]: the atomic multicast properties over recorded delivery sequences.
//!
//! Nothing here talks to a cluster.

pub mod history;
pub mod multicast;
