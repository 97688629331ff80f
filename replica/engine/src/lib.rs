//! dssmr-engine: Dynamic Scalable State Machine Replication — groups, atomic multicast, the
//! oracle, partitions, the client proxy, the bundled apps and the replica server.
//!
//! # Layout
//!
//! In dependency order: a module uses only the modules on its own line or above it (checked
//! by `tests/layering.rs`, which also fails on any cycle between files).
//!
//! - [`ids`], [`mode`], [`topology`], [`route`], [`config`], [`proto`], [`channel`], [`telemetry`]:
//!   the shared vocabulary, re-exported from `dssmr-api`;
//! - [`lifecycle`], [`command`]: the partitions' lifecycle every group replicates (active,
//!   draining, removed; numbers never reused), DS-SMR commands, replies and prophecies, and
//!   their codec;
//! - [`multicast`]: what is multicast and the deterministic state machines of atomic
//!   multicast (Skeen) and of the reliable inter-group channel; no I/O;
//! - [`stats`]: the kinds and outcomes of executed commands, what an application reports;
//! - [`app`]: the application interface of a group, the state machine API of DS-SMR apps,
//!   and the bundled apps (kv, Chirper, the multicast recorder);
//! - [`oracle`], [`partition`]: the oracle (Algorithm 4) and the partition server proxy
//!   (Algorithms 3 and 1) as applications of their groups; no I/O;
//! - [`group`]: the openraft glue of one group: log store, state machine, network, proposer,
//!   reply cache, and a client of one group;
//! - [`coordinator`]: the leader-side runtime of atomic multicast and the channel;
//! - [`node`]: one running replica (Raft, coordinator, gRPC server), leadership handover;
//! - [`client`]: the DS-SMR client proxy (Algorithm 2), location cache, destination
//!   policies, the client's metrics;
//! - [`admin`]: the admin service and the drainer;
//! - [`server`]: the replica process (config, metrics, HTTP probes);
//! - [`cluster`]: a local cluster in one process (tests, benchmarks, the demo).

#![warn(unreachable_pub)]

pub use dssmr_api::{channel, config, ids, mode, proto, route, telemetry, topology};

pub(crate) mod admin;
pub mod app;
pub mod client;
pub mod cluster;
pub mod command;
pub(crate) mod coordinator;
pub mod group;
pub mod lifecycle;
pub mod multicast;
pub mod node;
pub mod oracle;
pub mod partition;
pub mod server;
pub mod stats;
