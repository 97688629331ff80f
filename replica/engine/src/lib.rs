//! dssmr: Dynamic Scalable State Machine Replication — the engine.
//!
//! The engine is layered bottom-up: [`group`] (Raft groups over gRPC), [`multicast`] (genuine
//! atomic multicast and the reliable inter-group channel on top of the group logs), [`app`]
//! (what a group replicates), [`client`] (talking to groups) and [`server`] (a replica).

pub use dssmr_api::{channel, config, ids, mode, proto, telemetry, topology};

pub mod admin;
pub mod app;
pub mod client;
pub mod cluster;
pub mod command;
pub mod coordinator;
pub mod group;
pub mod multicast;
pub mod node;
pub mod oracle;
pub mod partition;
pub mod server;
pub mod stats;
