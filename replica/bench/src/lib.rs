//! dssmr-bench: closed-loop load generators for the DS-SMR engine, and their result files.
//!
//! # Layout
//!
//! In dependency order (each module uses only those above it):
//!
//! - `stats`: latency histograms;
//! - `error`: the crate's one [`Error`] and its [`Result`] alias;
//! - `recording`: [`BenchHistory`] (one history shared by several runs, with distinct process
//!   ids) and [`recorded`] / [`record_outcome`] (one proxy call as `invoke` and completion);
//! - `load`: [`Load`] (the counters the clients update), [`drive`] (the clock of warm-up and
//!   measured window, samples, progress bar), [`join_clients`], and the [`Measurement`] of a
//!   window;
//! - `run`: the shape of a closed-loop run ([`RunShape`]: mode, partitions, clients, times,
//!   policies) and the one run loop every closed-loop workload uses ([`ClosedLoop`],
//!   [`run_local`], [`run_against`], [`run_points`]): start a local cluster or use a running
//!   one, build the proxies, set up, spawn the clients, drive the window, collect a record;
//! - [`chirper`] and [`kv`]: the closed-loop workloads (`dssmr demo`, `dssmr bench chirper`,
//!   `dssmr bench kv`); each supplies its setup and the step of one client;
//! - [`mcast`]: atomic multicast throughput and latency per destination count (its own loop:
//!   raw group clients, no proxies);
//! - [`report`]: the result files and plots of `dssmr bench chirper --out DIR`.
//!
//! The workloads generate load and measure; nothing here changes the engine, and no error
//! names a command-line flag (the CLI does that).

#![warn(unreachable_pub)]

mod stats;

mod error;
mod recording;

mod load;
mod run;

pub mod chirper;
pub mod kv;
pub mod mcast;

pub mod report;

pub use error::{Error, Result};
pub use load::{
    drive, join_clients, stop_early, stopping_early, Load, Measurement, Sample, Window,
};
pub use recording::{record_outcome, recorded, BenchHistory};
pub use run::{mode_label, progress_bar, run_against, run_local, run_points, ClosedLoop, RunShape};
