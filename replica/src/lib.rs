//! dssmr: Dynamic Scalable State Machine Replication.
//!
//! The engine is layered bottom-up: [`group`] (Raft groups over gRPC), [`multicast`] (genuine
//! atomic multicast and the reliable inter-group channel on top of the group logs), [`app`]
//! (what a group replicates), [`client`] (talking to groups) and [`bench`] (measurements).

pub mod admin;
pub mod app;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod command;
pub mod config;
pub mod group;
pub mod history;
pub mod ids;
pub mod metrics;
pub mod multicast;
pub mod oracle;
pub mod partition;
pub mod server;
pub mod telemetry;

/// Generated gRPC types and services (`proto/dssmr.proto`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("dssmr.v1");
}
