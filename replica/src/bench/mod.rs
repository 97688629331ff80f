//! Benchmarks: closed-loop load generators and their result files.
//!
//! [`mcast`] measures atomic multicast throughput and latency per destination count;
//! [`chirper`] runs the Chirper workloads of the paper (§6.1) on S-SMR or DS-SMR (`dssmr demo`).

pub mod chirper;
pub mod mcast;
pub mod stats;
