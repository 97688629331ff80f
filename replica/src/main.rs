//! The `dssmr` command line: benchmarks today; replica, demo and client as the engine grows.

use clap::{Args, Parser, Subcommand};
use dssmr::bench::mcast::{self, McastBench};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Dynamic Scalable State Machine Replication.
#[derive(Parser)]
#[command(name = "dssmr", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the system on a local cluster (every replica on 127.0.0.1).
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Atomic multicast throughput and latency per number of destination groups.
    Mcast(McastArgs),
}

#[derive(Args)]
struct McastArgs {
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
        if self.replicas == 0 || self.replicas.is_multiple_of(2) {
            return Err(format!(
                "--replicas: must be odd (2f+1), got {}",
                self.replicas
            ));
        }
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

async fn bench_mcast(args: McastArgs) -> anyhow::Result<()> {
    let cfg = args.validate().map_err(anyhow::Error::msg)?;
    let records = mcast::run(&cfg).await?;
    print!("{}", mcast::table(&records));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&records)?)
            .map_err(|e| anyhow::anyhow!("--json: cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    dssmr::telemetry::init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Bench {
                which: BenchCommand::Mcast(args),
            } => bench_mcast(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn mcast_args(extra: &[&str]) -> McastArgs {
        let mut argv = vec!["dssmr", "bench", "mcast"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Bench {
                which: BenchCommand::Mcast(a),
            } => a,
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
        assert!(Cli::try_parse_from(["dssmr", "bench", "mcast", "--duration", "soon"]).is_err());
    }
}
