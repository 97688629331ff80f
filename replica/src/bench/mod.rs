//! Benchmarks: closed-loop load generators and result files.
