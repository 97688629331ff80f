//! `dssmr bench mcast`: atomic multicast throughput and latency per destination count. This
//! module validates the flags into [`McastBench`], runs it and prints.

use crate::flags::check_replicas;
use crate::output::JsonOutput;
use clap::Args;
use dssmr_bench::mcast::{self, McastBench};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct McastArgs {
    /// Destination group counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    groups: Vec<usize>,
    /// Groups in the cluster (default: as many as the destination count of each point).
    #[arg(long)]
    total_groups: Option<usize>,
    /// Replicas per group (2f+1).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Closed-loop senders, each with one message in flight.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Measured time per destination count (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before each measurement.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Persist replicas under this directory (default: in memory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the records as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Random seed for destination choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    /// Worker threads of each replica's async runtime (every replica runs on its own).
    #[arg(long, default_value_t = 1)]
    threads_per_replica: usize,
    /// Client connections per replica, shared by the senders (HTTP/2 multiplexing).
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

impl McastArgs {
    fn validate(&self) -> Result<McastBench, String> {
        if self.groups.is_empty() || self.groups.contains(&0) {
            return Err("--groups: every destination count must be at least 1".into());
        }
        check_replicas(self.replicas)?;
        if self.clients == 0 {
            return Err("--clients: must be at least 1".into());
        }
        if let Some(t) = self.total_groups {
            if let Some(k) = self.groups.iter().find(|k| **k > t) {
                return Err(format!(
                    "--total-groups: {t} is fewer than destination count {k}"
                ));
            }
        }
        if self.duration.is_zero() {
            return Err("--duration: must be positive".into());
        }
        Ok(McastBench {
            dest_groups: self.groups.clone(),
            total_groups: self.total_groups,
            replicas: self.replicas,
            clients: self.clients,
            duration: self.duration,
            warmup: self.warmup,
            payload: self.payload,
            data_root: self.data_dir.clone(),
            progress: !self.quiet,
            seed: self.seed,
            threads_per_replica: self.threads_per_replica,
            connections: self.connections,
        })
    }
}

pub async fn run(args: McastArgs) -> anyhow::Result<()> {
    let cfg = args.validate().map_err(anyhow::Error::msg)?;
    let json = JsonOutput::open(args.json.as_deref())?;
    let records = mcast::run(&cfg).await?;
    print!("{}", mcast::table(&records));
    if let Some(json) = json {
        json.write(&records)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::bench::BenchCommand;
    use crate::tests::{parse, refused};
    use crate::Command;

    fn mcast_args(extra: &[&str]) -> McastArgs {
        let mut argv = vec!["bench", "mcast"];
        argv.extend_from_slice(extra);
        match parse(&argv) {
            Command::Bench {
                which: BenchCommand::Mcast(a),
            } => a,
            _ => panic!("not bench mcast"),
        }
    }

    #[test]
    fn bench_arguments_are_validated_with_the_field_named() {
        let cfg = mcast_args(&["--groups", "1,2", "--duration", "3s"])
            .validate()
            .expect("valid");
        assert_eq!(cfg.dest_groups, vec![1, 2]);
        assert_eq!(cfg.duration, Duration::from_secs(3));
        let err = mcast_args(&["--replicas", "4"]).validate().unwrap_err();
        assert!(err.starts_with("--replicas"), "{err}");
        let err = mcast_args(&["--groups", "0"]).validate().unwrap_err();
        assert!(err.starts_with("--groups"), "{err}");
        let err = mcast_args(&["--groups", "4", "--total-groups", "2"])
            .validate()
            .unwrap_err();
        assert!(err.starts_with("--total-groups"), "{err}");
        assert!(refused(&["bench", "mcast", "--duration", "soon"]).is_some());
    }
}
