//! Benchmarks: closed-loop load generators and their result files.
//!
//! [`mcast`] measures atomic multicast throughput and latency per destination count.

pub mod mcast;
pub mod stats;
