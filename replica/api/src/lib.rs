//! dssmr-api: what every part of a dssmr deployment shares and what the operator needs, with no
//! consensus, storage or benchmark code in it.
//!
//! # Layout
//!
//! In dependency order (each module uses only those above it):
//!
//! - [`ids`]: newtypes for groups, Raft nodes, multicast messages and state variables;
//! - [`mode`]: the replication scheme (S-SMR or DS-SMR) and the client proxy's destination
//!   policy;
//! - [`topology`]: which groups a cluster has and their members' addresses;
//! - [`route`]: whom a call between the members of a cluster is for and from (stamped in
//!   its metadata), and the check a replica makes before it lets one in;
//! - [`config`]: the cluster config file (one YAML schema for local clusters and the
//!   operator's ConfigMap);
//! - [`proto`]: the generated gRPC types and services (`proto/dssmr.proto`);
//! - [`channel`]: how a gRPC channel to a replica is opened;
//! - [`admin`]: a client of the replicas' `Admin` service (status, add and drain partitions);
//! - [`telemetry`]: tracing setup for binaries and tests.

pub mod config;
pub mod ids;
pub mod mode;
pub mod route;
pub mod topology;
/// Generated gRPC types and services (`proto/dssmr.proto`).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("dssmr.v1");
}
pub mod admin;
pub mod channel;
pub mod telemetry;
