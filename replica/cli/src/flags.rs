//! Flags several subcommands share: the checks of `--partitions`, `--replicas` and of list
//! flags, and the Chirper load flags of `dssmr demo` and `dssmr bench chirper`
//! ([`ChirperLoadArgs`], with [`LoadDefaults`]).
//!
//! Errors here start with the flag's name (`--partitions: ...`). This module parses and
//! checks; it runs nothing.

use clap::Args;
use dssmr_bench::chirper::ChirperBench;
use dssmr_bench::RunShape;
use dssmr_engine::app::chirper::graph::GraphSpec;
use dssmr_engine::app::chirper::UserPlacement;
use dssmr_engine::client::{DestinationPolicy, ProxyConfig};
use dssmr_engine::group::ReadRule;
use std::time::Duration;

/// The demo's social graph: strong interest communities (1 % of follow edges leave them).
pub const DEMO_INTRA_COMMUNITY: f64 = 0.99;

/// Most partitions a local cluster may have (every replica shares this machine).
const MAX_LOCAL_PARTITIONS: usize = 8;

/// `--partitions` of a local cluster.
pub fn check_partitions(partitions: usize) -> Result<(), String> {
    if !(1..=MAX_LOCAL_PARTITIONS).contains(&partitions) {
        return Err(format!(
            "--partitions: must be 1..={MAX_LOCAL_PARTITIONS}, got {partitions}"
        ));
    }
    Ok(())
}

/// `--replicas`: 2f+1.
pub fn check_replicas(replicas: usize) -> Result<(), String> {
    if replicas == 0 || replicas.is_multiple_of(2) {
        return Err(format!("--replicas: must be odd (2f+1), got {replicas}"));
    }
    Ok(())
}

/// A comma-separated list flag must name something, and nothing twice.
pub fn distinct<T: PartialEq + std::fmt::Debug>(flag: &str, values: &[T]) -> Result<(), String> {
    if values.is_empty() {
        return Err(format!("{flag}: give at least one value"));
    }
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            return Err(format!("{flag}: {v:?} is given twice"));
        }
    }
    Ok(())
}

/// The load and social graph of a Chirper run: flags shared by `dssmr demo` and
/// `dssmr bench chirper` (same defaults, so the demo is one point of the benchmark). The
/// flags whose default `--quick` changes are optional; [`LoadDefaults`] fills them in.
#[derive(Args)]
pub struct ChirperLoadArgs {
    /// Measured time per run (e.g. 20s, 1m) [default: 20s]
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Unmeasured load per run before the measurement [default: 15s]
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Closed-loop clients, each with one command in flight [default: 256]
    #[arg(long)]
    clients: Option<usize>,
    /// Users of the generated social graph (communities of 100, ~10 followees each)
    /// [default: 2000]
    #[arg(long)]
    users: Option<u64>,
    /// Seed of the social graph and of the clients' command choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probability that a follow edge stays inside the follower's interest community (the
    /// rest go to anyone, popular users first).
    #[arg(long, default_value_t = DEMO_INTRA_COMMUNITY)]
    intra_community: f64,
    /// Where DS-SMR gathers the users of a command that spans partitions: affinity (where
    /// the users they are usually accessed with already are; a user settled elsewhere is not
    /// moved, the command runs spread over the partitions instead), majority (the partition
    /// holding most of them) or random (any partition involved, the paper's choice).
    #[arg(long, default_value = "affinity")]
    destination: DestinationPolicy,
    /// Where users are created, under both modes: hash (a hash of the user id: a static
    /// partitioning that knows nothing of the social graph; DS-SMR has to find the
    /// communities) or interest (the user's community, so S-SMR starts from a partitioning
    /// that already follows the graph).
    #[arg(long, default_value = "hash")]
    placement: UserPlacement,
    /// Retries before a DS-SMR command gives up moving users and runs the S-SMR way.
    #[arg(long, default_value_t = ProxyConfig::default().retry_threshold)]
    retry_threshold: u32,
    /// How partition leaders answer read-only commands (getTimeline) of the local cluster:
    /// index (from their state after a read index: one quorum round for every read waiting)
    /// or log (ordered through the log like every other command, the way before reads left
    /// it).
    #[arg(long, default_value = "index")]
    reads: Reads,
}

/// `--reads`: how partition leaders answer read-only commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Reads {
    /// Off the log, after a read index.
    Index,
    /// Through the log.
    Log,
}

impl From<Reads> for ReadRule {
    fn from(r: Reads) -> Self {
        match r {
            Reads::Index => ReadRule::ReadIndex,
            Reads::Log => ReadRule::Log,
        }
    }
}

/// What a Chirper run uses for the load flags that were not given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadDefaults {
    duration: Duration,
    warmup: Duration,
    clients: usize,
    users: u64,
}

impl LoadDefaults {
    /// The documented defaults (those of [`ChirperBench::default`]).
    pub fn standard() -> Self {
        let d = ChirperBench::default();
        LoadDefaults {
            duration: d.run.duration,
            warmup: d.run.warmup,
            clients: d.run.clients,
            users: d.graph.users,
        }
    }

    /// `dssmr bench chirper --quick`: a short run for CI.
    pub const QUICK: LoadDefaults = LoadDefaults {
        duration: Duration::from_secs(2),
        warmup: Duration::from_secs(1),
        clients: 8,
        users: 300,
    };
}

impl ChirperLoadArgs {
    /// The run these flags describe, on the default workload, mode and partitions; a flag
    /// not given takes its value from `defaults`.
    pub fn base(&self, defaults: LoadDefaults) -> Result<ChirperBench, String> {
        let duration = self.duration.unwrap_or(defaults.duration);
        let warmup = self.warmup.unwrap_or(defaults.warmup);
        let clients = self.clients.unwrap_or(defaults.clients);
        let users = self.users.unwrap_or(defaults.users);
        if duration.is_zero() {
            return Err("--duration: must be positive".into());
        }
        if clients == 0 {
            return Err("--clients: must be at least 1".into());
        }
        if users < 2 {
            return Err(format!("--users: need at least 2, got {users}"));
        }
        if !(0.0..=1.0).contains(&self.intra_community) {
            return Err(format!(
                "--intra-community: must be a probability (0 to 1), got {}",
                self.intra_community
            ));
        }
        let d = ChirperBench::default();
        Ok(ChirperBench {
            graph: GraphSpec {
                users,
                seed: self.seed,
                intra_community: self.intra_community,
                ..d.graph
            },
            placement: self.placement,
            run: RunShape {
                destination: self.destination,
                retry_threshold: self.retry_threshold,
                reads: self.reads.into(),
                clients,
                duration,
                warmup,
                seed: self.seed,
                ..d.run
            },
            ..d
        })
    }
}
