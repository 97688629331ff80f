//! The `dssmr` command line: the demo, a local cluster, a command-line client, benchmarks and
//! the history checker.
//!
//! Every subcommand validates its flags first (errors start with the flag's name) and then
//! hands off to the library: [`dssmr_bench`] for measurements, [`dssmr_engine::cluster`] for local
//! clusters, [`dssmr_engine::config`] for cluster config files, [`dssmr_engine::client`] for commands and
//! [`dssmr_check::history`] for recorded histories and their checkers.

use clap::{Args, Parser, Subcommand};
use dssmr_bench::chirper::{
    self as chirper_bench, mode_label, ChirperBench, ChirperRecord, Workload,
};
use dssmr_bench::kv::{self as kv_bench, KvBench, KvMix};
use dssmr_bench::mcast::{self, McastBench};
use dssmr_bench::report;
use dssmr_bench::BenchHistory;
use dssmr_check::history::linearizability::{check_kv_bounded, DEFAULT_MAX_CONFIGURATIONS};
use dssmr_check::history::{kv_model, read_jsonl, EventKind, History};
use dssmr_engine::app::chirper::graph::GraphSpec;
use dssmr_engine::app::chirper::{user_var, Chirper, ChirperCommand, User, UserId, UserPlacement};
use dssmr_engine::app::kv::{kv_var, Kv};
use dssmr_engine::client::proxy::ProxyStats;
use dssmr_engine::client::{
    Connections, DestinationPolicy, LocationCache, Mode, Proxy, ProxyConfig, Topology,
};
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::config::{validate_name, AppKind, ChirperSettings, ClusterConfig};
use dssmr_engine::server::ReplicaSettings;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Dynamic Scalable State Machine Replication: a partitioned, replicated service whose state
/// moves between partitions so that commands run in one place.
///
/// Start with `dssmr demo`: it runs the Chirper social network on S-SMR and on DS-SMR on a
/// local cluster and compares them. `dssmr local` keeps a local cluster running and writes its
/// config, and `dssmr client --config FILE ...` sends it commands.
#[derive(Parser)]
#[command(name = "dssmr", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chirper (by default the paper's Mix workload) on S-SMR, then on DS-SMR, each on a fresh local
    /// cluster (oracle + partitions × 3 replicas, gRPC on 127.0.0.1); prints a comparison.
    Demo(DemoArgs),
    /// Run a local cluster in this process, write its config file and serve until Ctrl-C or
    /// SIGTERM.
    Local(LocalArgs),
    /// Run one replica of one group of a cluster, as a Kubernetes StatefulSet pod does: gRPC
    /// for peers and clients, HTTP for /metrics, /healthz and /readyz. Stops on SIGTERM or
    /// Ctrl-C, handing leadership over first if it leads.
    ///
    /// Which replica it is comes from --group and --ordinal, or from POD_NAME
    /// (`<cluster>-oracle-<ordinal>` or `<cluster>-p<N>-<ordinal>`). Example:
    /// `dssmr replica --config cluster.yaml --group p1 --ordinal 0 --data-dir /var/lib/dssmr`.
    Replica(ReplicaArgs),
    /// Send one application command to a running cluster and print the reply as JSON.
    Client(ClientArgs),
    /// Administer a running cluster through its oracle: status (groups, leaders, commit
    /// indexes, variables per partition), add a partition, drain a partition. Prints JSON.
    Admin(AdminArgs),
    /// Measure the system on a local cluster (every replica on 127.0.0.1).
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
    /// Work with recorded histories (`dssmr bench ... --history FILE`).
    History {
        #[command(subcommand)]
        which: HistoryCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Atomic multicast throughput and latency per number of destination groups.
    Mcast(McastArgs),
    /// Chirper workloads (the paper's Table 1): every workload × partition count × mode, each
    /// on a fresh local cluster; prints a table, optionally writes result files and plots
    /// (--out DIR), JSON and a history.
    ///
    /// The defaults measure 4 workloads × 4 partition counts × 2 modes = 32 runs of 5 s
    /// warm-up + 20 s, about a quarter of an hour with set-ups; narrow them for a quick look
    /// (e.g. --workload mix --partitions 2 --duration 5s). --quick makes each run short (1 s
    /// warm-up + 2 s, 300 users, 8 clients) for CI; flags given explicitly still win.
    ///
    /// With --out DIR, the directory receives results.json, results.csv, timeseries.csv,
    /// throughput.png (like the paper's Figure 4), latency.png and moves.png, e.g.
    /// `dssmr bench chirper --quick --workload post,mix --partitions 1,2 --out results`.
    Chirper(BenchChirperArgs),
    /// A mix of kv operations (get, put, cas, transfer, read_many) over a few keys; with
    /// --history, writes a self-contained history that `dssmr history check --app kv` judges.
    Kv(BenchKvArgs),
}

#[derive(Subcommand)]
enum HistoryCommand {
    /// Check a history file (JSONL, one event per line, as `dssmr bench ... --history`
    /// writes it). Prints the verdict; exit status 0 if the history is linearizable, 1 if it
    /// is not, is malformed, or the search gave up undecided.
    Check(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The application whose sequential model the operations are replayed against (kv: a
    /// map from keys to integers, empty at the start of the history).
    #[arg(long)]
    app: AppKind,
    /// Search configurations the checker may visit (per key, or for the whole history when it
    /// has multi-key operations) before it gives up undecided.
    #[arg(long, default_value_t = DEFAULT_MAX_CONFIGURATIONS)]
    max_configurations: usize,
    /// The history file.
    file: PathBuf,
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

fn check_replicas(replicas: usize) -> Result<(), String> {
    if replicas == 0 || replicas.is_multiple_of(2) {
        return Err(format!("--replicas: must be odd (2f+1), got {replicas}"));
    }
    Ok(())
}

/// The demo's social graph: strong interest communities (1 % of follow edges leave them).
const DEMO_INTRA_COMMUNITY: f64 = 0.99;

/// Most partitions a local cluster may have (every replica shares this machine).
const MAX_LOCAL_PARTITIONS: usize = 8;

fn check_partitions(partitions: usize) -> Result<(), String> {
    if !(1..=MAX_LOCAL_PARTITIONS).contains(&partitions) {
        return Err(format!(
            "--partitions: must be 1..={MAX_LOCAL_PARTITIONS}, got {partitions}"
        ));
    }
    Ok(())
}

/// The load and social graph of a Chirper run: flags shared by `dssmr demo` and
/// `dssmr bench chirper` (same defaults, so the demo is one point of the benchmark). The
/// flags whose default `--quick` changes are optional; [`LoadDefaults`] fills them in.
#[derive(Args)]
struct ChirperLoadArgs {
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
}

/// What a Chirper run uses for the load flags that were not given.
#[derive(Clone, Copy, Debug, PartialEq)]
struct LoadDefaults {
    duration: Duration,
    warmup: Duration,
    clients: usize,
    users: u64,
}

impl LoadDefaults {
    /// The documented defaults (those of [`ChirperBench::default`]).
    fn standard() -> Self {
        let d = ChirperBench::default();
        LoadDefaults {
            duration: d.duration,
            warmup: d.warmup,
            clients: d.clients,
            users: d.graph.users,
        }
    }

    /// `dssmr bench chirper --quick`: a short run for CI.
    const QUICK: LoadDefaults = LoadDefaults {
        duration: Duration::from_secs(2),
        warmup: Duration::from_secs(1),
        clients: 8,
        users: 300,
    };
}

impl ChirperLoadArgs {
    /// The run these flags describe, on the default workload, mode and partitions; a flag
    /// not given takes its value from `defaults`.
    fn base(&self, defaults: LoadDefaults) -> Result<ChirperBench, String> {
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
        Ok(ChirperBench {
            graph: GraphSpec {
                users,
                seed: self.seed,
                intra_community: self.intra_community,
                ..ChirperBench::default().graph
            },
            destination: self.destination,
            placement: self.placement,
            retry_threshold: self.retry_threshold,
            clients,
            duration,
            warmup,
            seed: self.seed,
            ..ChirperBench::default()
        })
    }
}

#[derive(Args)]
struct DemoArgs {
    /// Partitions (1 to 8), each a group of 3 replicas (DS-SMR adds a 3-replica oracle).
    #[arg(long, default_value_t = 2)]
    partitions: usize,
    /// Command mix of the paper's §6.1: mix (85 % timeline, 7.5 % post, 3.75 % follow,
    /// 3.75 % unfollow), timeline, post or follow (50 % follow, 50 % unfollow).
    #[arg(long, default_value = "mix")]
    workload: Workload,
    #[command(flatten)]
    load: ChirperLoadArgs,
    /// Write both records (with per-second series) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Hide the progress bars.
    #[arg(long)]
    quiet: bool,
}

impl DemoArgs {
    /// The two runs (S-SMR, then DS-SMR).
    fn validate(&self) -> Result<Vec<ChirperBench>, String> {
        check_partitions(self.partitions)?;
        let base = ChirperBench {
            workload: self.workload,
            partitions: self.partitions,
            ..self.load.base(LoadDefaults::standard())?
        };
        Ok([Mode::Ssmr, Mode::Dssmr]
            .into_iter()
            .map(|mode| ChirperBench {
                mode,
                ..base.clone()
            })
            .collect())
    }
}

#[derive(Args)]
struct BenchChirperArgs {
    /// Workloads to measure, comma separated: timeline, post, follow (50 % follow, 50 %
    /// unfollow), mix (85 % timeline, 7.5 % post, 3.75 % follow, 3.75 % unfollow).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "timeline,post,follow,mix"
    )]
    workload: Vec<Workload>,
    /// Partition counts to measure (1 to 8 each), comma separated; each partition is a group
    /// of 3 replicas.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    partitions: Vec<usize>,
    /// Replication schemes to measure, comma separated: ssmr, dssmr (adds a 3-replica oracle).
    #[arg(long, value_delimiter = ',', default_value = "ssmr,dssmr")]
    mode: Vec<Mode>,
    #[command(flatten)]
    load: ChirperLoadArgs,
    /// A short run for CI and smoke tests: unless given explicitly, --warmup 1s --duration 2s
    /// --users 300 --clients 8.
    #[arg(long)]
    quick: bool,
    /// Write the result files into this directory (created if missing): results.json (the
    /// records, as --json), results.csv (one row per run), timeseries.csv (one row per second
    /// of every run), throughput.png (commands/s by partitions, one panel per workload, one
    /// line per mode), latency.png (p50 and p99 by partitions) and moves.png (DS-SMR moves/s
    /// and commands/s over time). Written after the runs, also when one of them fails (with
    /// the runs that finished).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Load a running cluster (its config file) instead of starting local ones: one run per
    /// workload, in the cluster's mode and on its partitions (--mode and --partitions are not
    /// allowed then). The cluster must run app chirper.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["mode", "partitions"])]
    cluster: Option<PathBuf>,
    /// Serve the client-side metrics (cache hits and misses, consults, moves, retries, S-SMR
    /// fallbacks) at http://ADDR/metrics while the benchmark runs.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Write one record per run (workload × partitions × mode, with per-second series) as a
    /// JSON array to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Record every command of every run (the setup's user creates included) to this JSONL
    /// file: one event per invocation and per completion; process ids are distinct across
    /// runs.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Hide the progress bars.
    #[arg(long)]
    quiet: bool,
}

impl BenchChirperArgs {
    /// Every run, workload by workload, then partition count, then mode.
    fn validate(&self) -> Result<Vec<ChirperBench>, String> {
        distinct("--workload", &self.workload)?;
        distinct("--partitions", &self.partitions)?;
        distinct("--mode", &self.mode)?;
        for p in &self.partitions {
            check_partitions(*p)?;
        }
        let defaults = if self.quick {
            LoadDefaults::QUICK
        } else {
            LoadDefaults::standard()
        };
        let base = self.load.base(defaults)?;
        let mut points = Vec::new();
        for workload in &self.workload {
            for partitions in &self.partitions {
                for mode in &self.mode {
                    points.push(ChirperBench {
                        workload: *workload,
                        partitions: *partitions,
                        mode: *mode,
                        ..base.clone()
                    });
                }
            }
        }
        Ok(points)
    }
}

/// A comma-separated list flag must name something, and nothing twice.
fn distinct<T: PartialEq + std::fmt::Debug>(flag: &str, values: &[T]) -> Result<(), String> {
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

#[derive(Args)]
struct BenchKvArgs {
    /// Keys, named k0, k1, ...; the setup puts 100 in each (recorded in the history).
    #[arg(long, default_value_t = 16)]
    keys: usize,
    /// Operation weights, comma separated op=weight (ops not named weigh 0): get, put (a
    /// missing key is created), cas, transfer (two keys), read_many (2 to 4 keys).
    #[arg(long, default_value_t = KvMix::default())]
    mix: KvMix,
    /// Partitions (1 to 8), each a group of --replicas replicas.
    #[arg(long, default_value_t = 2)]
    partitions: usize,
    /// Replication scheme: dssmr (with an oracle) or ssmr.
    #[arg(long, default_value = "dssmr")]
    mode: Mode,
    /// Replicas per group (2f+1).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Closed-loop clients, each with one operation in flight. More clients overlap more
    /// operations: beyond about 8, a history with transfer or read_many can be too hard for
    /// `dssmr history check` to decide within its budget.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Measured time (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured load before the measurement (recorded in the history all the same).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Retries before a DS-SMR operation gives up moving keys and runs the S-SMR way.
    #[arg(long, default_value_t = ProxyConfig::default().retry_threshold)]
    retry_threshold: u32,
    /// Where DS-SMR gathers the keys of a multi-key operation: random (the paper's default),
    /// majority or affinity.
    #[arg(long, default_value = "random")]
    destination: DestinationPolicy,
    /// Seed of the clients' operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Load a running cluster (its config file, as `dssmr local --write-config` writes it or
    /// the operator's ConfigMap holds it) instead of starting a local one; --mode,
    /// --partitions and --replicas then come from the config.
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// Serve the client-side metrics (cache hits and misses, consults, moves, retries, S-SMR
    /// fallbacks) at http://ADDR/metrics while the benchmark runs.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Write the record (with per-second series) as a JSON array to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Record every operation, the setup's puts included, to this JSONL file.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

impl BenchKvArgs {
    fn validate(&self) -> Result<KvBench, String> {
        check_partitions(self.partitions)?;
        check_replicas(self.replicas)?;
        if self.keys == 0 {
            return Err("--keys: need at least 1".into());
        }
        if self.keys < 2 && self.mix.needs_two_keys() {
            return Err(format!(
                "--keys: transfer and read_many in --mix need at least 2 keys, got {}",
                self.keys
            ));
        }
        if self.clients == 0 {
            return Err("--clients: must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("--duration: must be positive".into());
        }
        Ok(KvBench {
            mode: self.mode,
            partitions: self.partitions,
            replicas: self.replicas,
            keys: self.keys,
            mix: self.mix,
            clients: self.clients,
            duration: self.duration,
            warmup: self.warmup,
            retry_threshold: self.retry_threshold,
            destination: self.destination,
            seed: self.seed,
            ..KvBench::default()
        })
    }
}

#[derive(Args)]
struct LocalArgs {
    /// The replicated application.
    #[arg(long, default_value = "kv")]
    app: AppKind,
    /// Replication scheme: dssmr (with an oracle) or ssmr.
    #[arg(long, default_value = "dssmr")]
    mode: Mode,
    /// Partitions (1 to 8), each a group of `--replicas` replicas.
    #[arg(long, default_value_t = 2)]
    partitions: usize,
    /// Replicas per group (2f+1).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Write the cluster config here (atomically, once every group has a leader); without
    /// it the config is printed on stdout.
    #[arg(long)]
    write_config: Option<PathBuf>,
    /// Cluster name in the config.
    #[arg(long, default_value = "local")]
    name: String,
    /// Chirper only: users per interest community (they are placed together).
    #[arg(long)]
    community_size: Option<u64>,
}

/// What `dssmr local` starts.
#[derive(Debug)]
struct LocalPlan {
    name: String,
    mode: Mode,
    app: AppKind,
    chirper: Option<ChirperSettings>,
    partitions: usize,
    replicas: usize,
    write_config: Option<PathBuf>,
}

impl LocalPlan {
    /// The config of the cluster once it runs on `topology`.
    fn config(&self, topology: &Topology) -> ClusterConfig {
        ClusterConfig {
            chirper: self.chirper.clone(),
            ..ClusterConfig::from_topology(&self.name, self.mode, self.app, topology)
        }
    }
}

impl LocalArgs {
    fn validate(&self) -> Result<LocalPlan, String> {
        check_partitions(self.partitions)?;
        check_replicas(self.replicas)?;
        validate_name(&self.name).map_err(|e| format!("--name: {e}"))?;
        let chirper = match (self.app, self.community_size) {
            (AppKind::Kv, Some(_)) => {
                return Err("--community-size: only with --app chirper".into())
            }
            (_, Some(0)) => return Err("--community-size: must be at least 1".into()),
            (AppKind::Chirper, size) => Some(ChirperSettings {
                community_size: size.unwrap_or(ChirperSettings::default().community_size),
                ..ChirperSettings::default()
            }),
            (AppKind::Kv, None) => None,
        };
        Ok(LocalPlan {
            name: self.name.clone(),
            mode: self.mode,
            app: self.app,
            chirper,
            partitions: self.partitions,
            replicas: self.replicas,
            write_config: self.write_config.clone(),
        })
    }
}

#[derive(Args)]
struct ReplicaArgs {
    /// The cluster config (YAML; see `dssmr local --help` for the schema).
    #[arg(long, env = "DSSMR_CONFIG")]
    config: PathBuf,
    /// The group: oracle, or a partition as p1, p2, ... (default: from POD_NAME).
    #[arg(long, env = "DSSMR_GROUP")]
    group: Option<String>,
    /// The replica's ordinal in its group, 0-based (default: the POD_NAME suffix).
    #[arg(long, env = "DSSMR_ORDINAL")]
    ordinal: Option<usize>,
    /// Keep log, vote and snapshots here (created if missing); without it state is in memory
    /// and lost when the process stops.
    #[arg(long, env = "DSSMR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (default: the replica's member address if it is an IP:port,
    /// else 0.0.0.0 on its port).
    #[arg(long, env = "DSSMR_LISTEN")]
    listen: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "DSSMR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: String,
    /// How long a stopping leader tries to hand leadership to an up-to-date follower.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    handover_timeout: Duration,
}

impl ReplicaArgs {
    fn settings(&self) -> ReplicaSettings {
        ReplicaSettings {
            config: self.config.clone(),
            group: self.group.clone(),
            ordinal: self.ordinal,
            pod_name: std::env::var("POD_NAME").ok(),
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
            http_addr: self.http_addr.clone(),
            handover_timeout: self.handover_timeout,
        }
    }
}

#[derive(Args)]
struct AdminArgs {
    /// The cluster config (as `dssmr local --write-config` writes it).
    #[arg(long)]
    config: PathBuf,
    #[command(subcommand)]
    op: AdminOpArg,
}

#[derive(Subcommand)]
enum AdminOpArg {
    /// Every group's members (role, term, commit and applied index), its leader, and the
    /// oracle's partitions (state, variables).
    Status,
    /// Let the oracle place new variables in PARTITION (1-based) too.
    AddPartition { partition: u32 },
    /// Stop placing new variables in PARTITION and move all of its variables out.
    DrainPartition {
        partition: u32,
        /// Wait until the partition is empty (at most this long; 0s: do not wait).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
}

#[derive(Args)]
struct ClientArgs {
    /// The cluster config (as `dssmr local --write-config` writes it).
    #[arg(long)]
    config: PathBuf,
    /// How long the command may take, leader changes included.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    app: ClientApp,
}

#[derive(Subcommand)]
enum ClientApp {
    /// Commands of the key-value app (keys hold 64-bit integers).
    Kv {
        #[command(subcommand)]
        op: KvOp,
    },
    /// Commands of the Chirper social network (users are numbers).
    Chirper {
        #[command(subcommand)]
        op: ChirperOp,
    },
}

impl ClientApp {
    fn kind(&self) -> AppKind {
        match self {
            ClientApp::Kv { .. } => AppKind::Kv,
            ClientApp::Chirper { .. } => AppKind::Chirper,
        }
    }
}

#[derive(Subcommand)]
enum KvOp {
    /// Read a key: {"value":N} or {"missing":[K]}.
    Get { key: String },
    /// Write a key, creating it if missing: "done".
    #[command(allow_negative_numbers = true)]
    Put { key: String, value: i64 },
    /// Set KEY to NEW if it holds EXPECTED: {"swapped":bool}.
    #[command(allow_negative_numbers = true)]
    Cas {
        key: String,
        expected: i64,
        new: i64,
    },
    /// Move AMOUNT from one key to another if FROM holds enough: {"transferred":bool}.
    #[command(allow_negative_numbers = true)]
    Transfer {
        from: String,
        to: String,
        amount: i64,
    },
    /// Read several keys atomically: {"values":[..]}.
    Read {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Delete a key (nothing happens if it does not exist): "done".
    Delete { key: String },
}

#[derive(Subcommand)]
enum ChirperOp {
    /// Create a user with no edges: {"created":bool} (false: it existed).
    CreateUser { user: UserId },
    /// USER posts TEXT to its followers' timelines: {"posted":{"seq":N}}.
    Post { user: UserId, text: String },
    /// FOLLOWER starts following FOLLOWEE: {"followed":bool}.
    Follow { follower: UserId, followee: UserId },
    /// FOLLOWER stops following FOLLOWEE: {"unfollowed":bool}.
    Unfollow { follower: UserId, followee: UserId },
    /// The timeline of USER, oldest first: {"timeline":[..]}.
    Timeline { user: UserId },
}

async fn bench_mcast(args: McastArgs) -> anyhow::Result<()> {
    let cfg = args.validate().map_err(anyhow::Error::msg)?;
    let json = args.json.as_deref().map(JsonOutput::create).transpose()?;
    let records = mcast::run(&cfg).await?;
    print!("{}", mcast::table(&records));
    if let Some(json) = json {
        json.write(&records)?;
    }
    Ok(())
}

/// A `--json` file, created before the runs (so a bad path fails before minutes of load)
/// and written after them.
struct JsonOutput {
    path: PathBuf,
}

impl JsonOutput {
    fn create(path: &Path) -> anyhow::Result<Self> {
        std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("--json: cannot write {}: {e}", path.display()))?;
        Ok(JsonOutput {
            path: path.to_path_buf(),
        })
    }

    fn write(&self, records: &impl Serialize) -> anyhow::Result<()> {
        std::fs::write(&self.path, serde_json::to_string_pretty(records)?)
            .map_err(|e| anyhow::anyhow!("--json: cannot write {}: {e}", self.path.display()))
    }
}

/// The `--history` recorder, if asked for (the file is created now).
fn open_history(path: Option<&Path>) -> anyhow::Result<Option<BenchHistory>> {
    path.map(|p| {
        History::streaming_to(p)
            .map(BenchHistory::new)
            .map_err(|e| anyhow::Error::new(e).context("--history"))
    })
    .transpose()
}

/// Flushes the `--history` file and says where it is.
fn close_history(history: Option<&BenchHistory>, path: Option<&Path>) -> anyhow::Result<()> {
    let (Some(history), Some(path)) = (history, path) else {
        return Ok(());
    };
    history
        .flush()
        .map_err(|e| anyhow::Error::new(e).context("--history"))?;
    println!("history written to {}", path.display());
    Ok(())
}

/// What a run's throughput line says.
fn summary(label: impl Display, cps: f64, p50_ms: f64, moves_per_s: f64) -> String {
    format!("{label}: {cps:.0} commands/s, p50 {p50_ms:.1} ms, {moves_per_s:.0} moves/s")
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let runs = args.validate().map_err(anyhow::Error::msg)?;
    let json = args.json.as_deref().map(JsonOutput::create).transpose()?;
    let first = &runs[0];
    let g = &first.graph;
    println!(
        "Chirper, {} workload ({})",
        first.workload,
        first.workload.describe()
    );
    println!(
        "  social graph: {} users in communities of {}, ~{} followees each, {:.0} % of them in \
         the user's community (seed {})",
        g.users,
        g.community_size,
        g.avg_follows,
        g.intra_community * 100.0,
        g.seed
    );
    println!(
        "  cluster: {} partition(s) × {} replicas, gRPC on 127.0.0.1; DS-SMR adds a \
         {}-replica oracle",
        first.partitions, first.replicas, first.replicas
    );
    println!(
        "  load: {} closed-loop clients, {:?} warm-up + {:?} measured per mode; users created \
         by {} placement; DS-SMR destination policy {}",
        first.clients,
        first.warmup,
        first.duration,
        first.placement.name(),
        first.destination.name()
    );
    let records = chirper_bench::run_points(&runs, None, !args.quiet, |r| {
        let m = &r.measured;
        println!(
            "{}",
            summary(
                mode_label(r.mode),
                m.throughput_cps,
                m.p50_ms,
                m.moves_per_s
            )
        );
    })
    .await?;
    println!();
    print!("{}", chirper_bench::table(&records));
    if let Some((_, _, ratio)) = chirper_bench::speedups(&records).first() {
        println!("DS-SMR / S-SMR throughput: {ratio:.2}x");
    }
    println!(
        "(moves/s: users DS-SMR moved between partitions; retries/s: commands that found a \
         user gone and retried; fallbacks: commands run the S-SMR way after too many retries)"
    );
    if let Some(json) = json {
        json.write(&records)?;
    }
    Ok(())
}

async fn bench_chirper(args: BenchChirperArgs) -> anyhow::Result<()> {
    let points = args.validate().map_err(anyhow::Error::msg)?;
    let json = args.json.as_deref().map(JsonOutput::create).transpose()?;
    if let Some(dir) = &args.out {
        // Fail before minutes of load, not after.
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("--out: cannot create {}: {e}", dir.display()))?;
    }
    let history = open_history(args.history.as_deref())?;
    let first = &points[0];
    println!(
        "Chirper: {} run(s) of {:?} warm-up + {:?} measured, {}; \
         {} clients, {} users ({:.0} % of follows in-community), DS-SMR destination {}",
        if args.cluster.is_some() {
            args.workload.len()
        } else {
            points.len()
        },
        first.warmup,
        first.duration,
        match &args.cluster {
            Some(path) => format!("against the cluster of {}", path.display()),
            None => "each on a fresh local cluster".to_string(),
        },
        first.clients,
        first.graph.users,
        first.graph.intra_community * 100.0,
        first.destination.name()
    );
    let mut finished = Vec::new();
    let stats = serve_client_metrics(args.metrics_addr).await?;
    let points: Vec<ChirperBench> = points
        .into_iter()
        .map(|p| ChirperBench {
            stats: stats.clone(),
            ..p
        })
        .collect();
    let target = running_cluster(args.cluster.as_deref(), AppKind::Chirper)?;
    let points: Vec<ChirperBench> = match &target {
        None => points,
        Some(config) => points
            .into_iter()
            // One point per workload: mode and partitions are the cluster's.
            .filter(|p| p.mode == args.mode[0] && p.partitions == args.partitions[0])
            .map(|p| ChirperBench {
                mode: config.mode,
                partitions: config.partitions.len(),
                replicas: config.partitions[0].members.len(),
                graph: GraphSpec {
                    community_size: config.chirper.clone().unwrap_or_default().community_size,
                    ..p.graph
                },
                placement: config.chirper.clone().unwrap_or_default().placement,
                ..p
            })
            .collect(),
    };
    let records = chirper_bench::run_points_on(
        &points,
        target.as_ref().map(|c| c.topology()),
        history.as_ref(),
        !args.quiet,
        |r| {
            let m = &r.measured;
            println!(
                "{}",
                summary(r.label(), m.throughput_cps, m.p50_ms, m.moves_per_s)
            );
            finished.push(r.clone());
        },
    )
    .await;
    // Whatever the runs recorded is kept, also when one of them failed.
    close_history(history.as_ref(), args.history.as_deref())?;
    let records = match records {
        Ok(records) => records,
        Err(e) => {
            if let (Some(dir), false) = (&args.out, finished.is_empty()) {
                if let Err(w) = write_report(dir, &finished) {
                    eprintln!("error: {}", error_chain(&w));
                }
            }
            return Err(e);
        }
    };
    println!();
    print!("{}", chirper_bench::table(&records));
    for (workload, partitions, ratio) in chirper_bench::speedups(&records) {
        println!("{workload} on {partitions} partition(s): DS-SMR / S-SMR throughput {ratio:.2}x");
    }
    if let Some(json) = json {
        json.write(&records)?;
    }
    if let Some(dir) = &args.out {
        write_report(dir, &records)?;
    }
    Ok(())
}

/// Writes the `--out` files of `records` into `dir` and says where they went.
fn write_report(dir: &Path, records: &[ChirperRecord]) -> anyhow::Result<()> {
    let files = report::write_all(dir, records).map_err(|e| e.context("--out"))?;
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    println!(
        "results of {} run(s) written to {}: {}",
        records.len(),
        dir.display(),
        names.join(", ")
    );
    Ok(())
}

async fn bench_kv(args: BenchKvArgs) -> anyhow::Result<()> {
    let mut cfg = args.validate().map_err(anyhow::Error::msg)?;
    cfg.stats = serve_client_metrics(args.metrics_addr).await?;
    let target = running_cluster(args.cluster.as_deref(), AppKind::Kv)?;
    if let Some(config) = &target {
        cfg.mode = config.mode;
        cfg.partitions = config.partitions.len();
        cfg.replicas = config.partitions[0].members.len();
    }
    let json = args.json.as_deref().map(JsonOutput::create).transpose()?;
    let history = open_history(args.history.as_deref())?;
    println!(
        "kv: {} keys, mix {}, {} clients, {:?} warm-up + {:?} measured on {} partition(s) \
         ({}, retry threshold {})",
        cfg.keys,
        cfg.mix,
        cfg.clients,
        cfg.warmup,
        cfg.duration,
        cfg.partitions,
        mode_label(cfg.mode),
        cfg.retry_threshold
    );
    let bar = chirper_bench::progress_bar(&cfg.label(), !args.quiet);
    let record = match &target {
        Some(config) => {
            kv_bench::run_against(&cfg, &config.topology(), history.as_ref(), &bar).await
        }
        None => kv_bench::run(&cfg, history.as_ref(), &bar).await,
    };
    bar.finish_and_clear();
    close_history(history.as_ref(), args.history.as_deref())?;
    let records = vec![record?];
    print!("{}", kv_bench::table(&records));
    if let Some(path) = &args.history {
        println!(
            "check it with: dssmr history check --app kv {}",
            path.display()
        );
    }
    if let Some(json) = json {
        json.write(&records)?;
    }
    Ok(())
}

/// With `--metrics-addr`, shared proxy counters served as Prometheus metrics from now on.
async fn serve_client_metrics(
    addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<Arc<ProxyStats>>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let stats = Arc::new(ProxyStats::default());
    let metrics = Arc::new(dssmr_engine::client::metrics::ClientMetrics::new(
        stats.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-addr: cannot listen on {addr}: {e}"))?;
    let router = dssmr_engine::server::http::metrics_router(Arc::new(move || metrics.render()));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(Some(stats))
}

/// The config of the running cluster `--cluster` names, checked to run `app`.
fn running_cluster(path: Option<&Path>, app: AppKind) -> anyhow::Result<Option<ClusterConfig>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let config = ClusterConfig::load(path).map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
    if config.app != app {
        anyhow::bail!(
            "--cluster: {} runs app {}, not {app}",
            path.display(),
            config.app
        );
    }
    Ok(Some(config))
}

/// `dssmr history check`: the verdict on stdout; success only for a linearizable history.
fn history_check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    if args.app != AppKind::Kv {
        anyhow::bail!("--app: only kv histories can be checked, not {}", args.app);
    }
    if args.max_configurations == 0 {
        anyhow::bail!("--max-configurations: must be at least 1");
    }
    let events = read_jsonl(&args.file)?;
    let count = |kind: EventKind| events.iter().filter(|e| e.kind == kind).count();
    let file = args.file.display();
    match check_kv_bounded(&events, &BTreeMap::new(), args.max_configurations) {
        Ok(()) => {
            println!(
                "{file}: linearizable ({} events, {} operations: {} ok, {} failed, {} with \
                 unknown outcome)",
                events.len(),
                count(EventKind::Invoke),
                count(EventKind::Ok),
                count(EventKind::Fail),
                count(EventKind::Info)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{file}: {}", error_chain(&anyhow::Error::new(e)));
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn local(args: LocalArgs) -> anyhow::Result<()> {
    let plan = args.validate().map_err(anyhow::Error::msg)?;
    // Handlers first: a signal that arrives once the config is visible must stop us cleanly.
    let mut stop = Signals::install()?;
    let options = match plan.app {
        AppKind::Kv => ClusterOptions::engine(Arc::new(Kv), plan.partitions, plan.mode),
        AppKind::Chirper => {
            let size = plan.chirper.as_ref().map(|c| c.community_size);
            let app = Chirper::new(size.unwrap_or_default());
            ClusterOptions::engine(Arc::new(app), plan.partitions, plan.mode)
        }
    };
    let cluster = LocalCluster::start(ClusterOptions {
        replicas: plan.replicas,
        ..options
    })
    .await?;
    let config = plan.config(cluster.topology());
    let served = serve(&plan, &config, &mut stop).await;
    cluster.shutdown().await;
    served
}

/// Publishes the config of the running cluster and waits for a signal.
async fn serve(plan: &LocalPlan, config: &ClusterConfig, stop: &mut Signals) -> anyhow::Result<()> {
    config.validate()?;
    match &plan.write_config {
        Some(path) => {
            config
                .save(path)
                .map_err(|e| anyhow::anyhow!("--write-config: {e}"))?;
            println!("config written to {}", path.display());
        }
        None => print!("{}", config.to_yaml()),
    }
    println!(
        "cluster {:?} ready: {} on {}, {} partition(s) × {} replicas{}; Ctrl-C to stop",
        config.name,
        config.app,
        mode_label(config.mode),
        plan.partitions,
        plan.replicas,
        if config.mode == Mode::Dssmr {
            " + oracle"
        } else {
            ""
        }
    );
    let signal = stop.wait().await;
    eprintln!("{signal}: shutting down");
    Ok(())
}

/// SIGINT and SIGTERM, listened to from installation on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

async fn replica(args: ReplicaArgs) -> anyhow::Result<()> {
    let plan = args.settings().resolve()?;
    let mut stop = Signals::install()?;
    dssmr_engine::server::run(plan, async move { stop.wait().await }).await
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    use dssmr_api::admin::{partition_json, status_json, AdminConnection};
    let config = ClusterConfig::load(&args.config).map_err(|e| anyhow::anyhow!("--config: {e}"))?;
    let conn = AdminConnection::new(&config)?;
    let out = match args.op {
        AdminOpArg::Status => status_json(&conn.status().await?),
        AdminOpArg::AddPartition { partition } => {
            partition_json(&conn.add_partition(partition).await?)
        }
        AdminOpArg::DrainPartition { partition, wait } => {
            let deadline = std::time::Instant::now() + wait;
            let mut status = conn.drain_partition(partition).await?;
            while status.state != "drained" && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(p) = conn
                    .status()
                    .await?
                    .partitions
                    .into_iter()
                    .find(|p| p.partition == partition)
                {
                    status = p;
                }
            }
            if !wait.is_zero() && status.state != "drained" {
                anyhow::bail!(
                    "--wait: partition {partition} still holds {} variables after {wait:?}",
                    status.variables
                );
            }
            partition_json(&status)
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// A proxy for `app` on the cluster of `config`.
fn proxy<A: dssmr_engine::app::StateMachine>(
    config: &ClusterConfig,
    app: A,
    timeout: Duration,
) -> anyhow::Result<Proxy<A>> {
    let proxy_config = ProxyConfig {
        timeout,
        ..ProxyConfig::for_cluster(&config)
    };
    Ok(Proxy::new(
        Arc::new(app),
        proxy_config,
        Arc::new(Connections::new(&config.topology())?),
        Arc::new(LocationCache::default()),
        Arc::new(ProxyStats::default()),
    )?)
}

async fn client(args: ClientArgs) -> anyhow::Result<()> {
    if args.timeout.is_zero() {
        anyhow::bail!("--timeout: must be positive");
    }
    let config = ClusterConfig::load(&args.config)?;
    let wanted = args.app.kind();
    if config.app != wanted {
        anyhow::bail!(
            "this is a {wanted} command, but the cluster of {} runs app {}",
            args.config.display(),
            config.app
        );
    }
    let reply = match args.app {
        ClientApp::Kv { op } => kv_command(proxy(&config, Kv, args.timeout)?, op).await?,
        ClientApp::Chirper { op } => {
            let app = Chirper::for_cluster(&config);
            chirper_command(proxy(&config, app, args.timeout)?, op).await?
        }
    };
    println!("{}", serde_json::to_string(&reply)?);
    Ok(())
}

/// Runs a kv command the way `dssmr bench kv` does (a put creates a missing key) and returns
/// the reply in the history encoding (see `dssmr_check::history::kv_model`).
async fn kv_command(p: Proxy<Kv>, op: KvOp) -> anyhow::Result<Value> {
    let op = match op {
        KvOp::Get { key } => kv_model::KvOp::Get { key },
        KvOp::Put { key, value } => kv_model::KvOp::Put { key, value },
        KvOp::Cas { key, expected, new } => kv_model::KvOp::Cas { key, expected, new },
        KvOp::Transfer { from, to, amount } => kv_model::KvOp::Transfer { from, to, amount },
        KvOp::Read { keys } => kv_model::KvOp::ReadMany { keys },
        KvOp::Delete { key } => {
            p.delete(kv_var(&key)).await?;
            return Ok(json!("done"));
        }
    };
    Ok(kv_bench::execute(&p, &op).await?.encode())
}

async fn chirper_command(p: Proxy<Chirper>, op: ChirperOp) -> anyhow::Result<Value> {
    let cmd = match op {
        ChirperOp::CreateUser { user } => {
            let created = p.create(user_var(user), &User::new(user)).await?;
            return Ok(chirper_bench::created_json(&created));
        }
        ChirperOp::Post { user, text } => ChirperCommand::Post {
            user,
            text,
            time: unix_micros(),
        },
        ChirperOp::Follow { follower, followee } => ChirperCommand::Follow { follower, followee },
        ChirperOp::Unfollow { follower, followee } => {
            ChirperCommand::Unfollow { follower, followee }
        }
        ChirperOp::Timeline { user } => ChirperCommand::GetTimeline { user },
    };
    Ok(chirper_bench::reply_json(&p.access(&cmd).await?))
}

/// Wall-clock µs since the Unix epoch: the post time of a command-line post (timelines of
/// posts from different machines are ordered as well as their clocks agree).
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// mimalloc instead of glibc's malloc: every replica of a local cluster and its clients share
/// one process, and with glibc the second of two benchmark runs in a process was measured
/// ~13 % slower than the first (fragmented arenas; malloc was ~15 % of the CPU profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // Elections at start-up make openraft warn about votes it ignores; in the output of
        // the demo, the benchmarks and a local cluster that is noise (RUST_LOG still
        // overrides).
        Command::Demo(_) | Command::Local(_) | Command::Bench { .. } => {
            dssmr_engine::telemetry::init_for_tests()
        }
        _ => dssmr_engine::telemetry::init(),
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// Runs a subcommand on a multi-threaded runtime.
fn run(command: Command) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let done = |()| ExitCode::SUCCESS;
    runtime.block_on(async {
        match command {
            Command::Demo(args) => demo(args).await.map(done),
            Command::Local(args) => local(args).await.map(done),
            Command::Replica(args) => replica(args).await.map(done),
            Command::Client(args) => client(args).await.map(done),
            Command::Admin(args) => admin(args).await.map(done),
            Command::Bench { which } => match which {
                BenchCommand::Mcast(args) => bench_mcast(args).await.map(done),
                BenchCommand::Chirper(args) => bench_chirper(args).await.map(done),
                BenchCommand::Kv(args) => bench_kv(args).await.map(done),
            },
            Command::History {
                which: HistoryCommand::Check(args),
            } => history_check(args),
        }
    })
}

/// `e` and its causes, joined by `: `, skipping a cause whose text its parent already shows
/// (many errors include their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn parse(argv: &[&str]) -> Command {
        let mut full = vec!["dssmr"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).expect("parses").command
    }

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

    fn demo_args(extra: &[&str]) -> DemoArgs {
        let mut argv = vec!["demo"];
        argv.extend_from_slice(extra);
        match parse(&argv) {
            Command::Demo(a) => a,
            _ => panic!("not demo"),
        }
    }

    fn local_args(extra: &[&str]) -> LocalArgs {
        let mut argv = vec!["local"];
        argv.extend_from_slice(extra);
        match parse(&argv) {
            Command::Local(a) => a,
            _ => panic!("not local"),
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

    #[test]
    fn demo_defaults_run_ssmr_then_dssmr_on_the_same_graph() {
        let runs = demo_args(&[]).validate().expect("valid");
        assert_eq!(
            runs.iter().map(|r| r.mode).collect::<Vec<_>>(),
            vec![Mode::Ssmr, Mode::Dssmr]
        );
        let r = &runs[0];
        assert_eq!(r.workload, Workload::Mix);
        assert_eq!((r.partitions, r.clients, r.graph.users), (2, 256, 2000));
        assert_eq!(r.duration, Duration::from_secs(20));
        assert_eq!(r.warmup, Duration::from_secs(15));
        assert_eq!(runs[1].graph, r.graph);
        assert_eq!(r.graph.intra_community, DEMO_INTRA_COMMUNITY);
        assert_eq!(r.destination, DestinationPolicy::Affinity);
        assert_eq!(r.placement, UserPlacement::Hash);
        let runs = demo_args(&["--partitions", "4", "--workload", "post", "--seed", "9"])
            .validate()
            .unwrap();
        assert_eq!(runs[1].partitions, 4);
        assert_eq!(runs[1].workload, Workload::Post);
        assert_eq!(runs[1].graph.seed, 9);
    }

    #[test]
    fn demo_arguments_are_validated_with_the_field_named() {
        for (argv, flag) in [
            (&["--partitions", "0"][..], "--partitions"),
            (&["--partitions", "9"][..], "--partitions"),
            (&["--duration", "0s"][..], "--duration"),
            (&["--clients", "0"][..], "--clients"),
            (&["--users", "1"][..], "--users"),
            (&["--intra-community", "1.5"][..], "--intra-community"),
        ] {
            let err = demo_args(argv).validate().unwrap_err();
            assert!(err.starts_with(flag), "{argv:?}: {err}");
        }
        assert!(Cli::try_parse_from(["dssmr", "demo", "--workload", "tweets"]).is_err());
    }

    #[test]
    fn local_arguments_are_validated_with_the_field_named() {
        let plan = local_args(&["--app", "chirper", "--mode", "ssmr", "--partitions", "3"])
            .validate()
            .expect("valid");
        assert_eq!(
            (plan.app, plan.mode, plan.partitions),
            (AppKind::Chirper, Mode::Ssmr, 3)
        );
        let plan = local_args(&["--app", "chirper", "--community-size", "7"])
            .validate()
            .unwrap();
        let mut topology = Topology::default();
        for (g, port) in [(0, 1), (1, 2)] {
            let addr = format!("127.0.0.1:{port}");
            topology
                .groups
                .insert(dssmr_engine::ids::GroupId(g), vec![addr]);
        }
        let config = plan.config(&topology);
        config.validate().expect("valid config");
        assert_eq!(Chirper::for_cluster(&config).community_size, 7);
        assert_eq!(config.mode, Mode::Dssmr);
        assert!(config.oracle.is_some());
        assert!(local_args(&[]).validate().unwrap().chirper.is_none());
        for (argv, flag) in [
            (&["--partitions", "0"][..], "--partitions"),
            (&["--replicas", "2"][..], "--replicas"),
            (&["--community-size", "10"][..], "--community-size"),
            (
                &["--app", "chirper", "--community-size", "0"][..],
                "--community-size",
            ),
            (&["--name", "Not A Name"][..], "--name"),
        ] {
            let err = local_args(argv).validate().unwrap_err();
            assert!(err.starts_with(flag), "{argv:?}: {err}");
        }
        assert!(Cli::try_parse_from(["dssmr", "local", "--app", "sql"]).is_err());
        assert!(Cli::try_parse_from(["dssmr", "local", "--mode", "paxos"]).is_err());
    }

    #[test]
    fn client_commands_parse() {
        match parse(&["client", "--config", "c.yaml", "kv", "cas", "a", "-1", "-2"]) {
            Command::Client(ClientArgs {
                app:
                    ClientApp::Kv {
                        op: KvOp::Cas { key, expected, new },
                    },
                ..
            }) => assert_eq!((key.as_str(), expected, new), ("a", -1, -2)),
            _ => panic!("not kv cas"),
        }
        match parse(&[
            "client",
            "--config",
            "c.yaml",
            "chirper",
            "post",
            "3",
            "hello world",
        ]) {
            Command::Client(args) => {
                assert_eq!(args.app.kind(), AppKind::Chirper);
                assert_eq!(args.timeout, Duration::from_secs(10));
            }
            _ => panic!("not client"),
        }
        for bad in [
            &["client", "kv", "get", "a"][..],
            &["client", "--config", "c", "kv", "read"][..],
            &["client", "--config", "c", "kv", "put", "a", "x"][..],
            &["client", "--config", "c", "chirper", "follow", "1"][..],
            &["client", "--config", "c", "chirper", "timeline", "-1"][..],
        ] {
            let mut argv = vec!["dssmr"];
            argv.extend_from_slice(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_chains_do_not_repeat_causes() {
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(io).context("cannot write x");
        assert_eq!(error_chain(&e), "cannot write x: disk on fire");
        let e = dssmr_engine::config::ClusterConfig::load("/nonexistent/c.yaml").unwrap_err();
        let text = error_chain(&anyhow::Error::new(e));
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }

    fn bench_chirper_args(extra: &[&str]) -> BenchChirperArgs {
        let mut argv = vec!["bench", "chirper"];
        argv.extend_from_slice(extra);
        match parse(&argv) {
            Command::Bench {
                which: BenchCommand::Chirper(a),
            } => a,
            _ => panic!("not bench chirper"),
        }
    }

    fn bench_kv_args(extra: &[&str]) -> BenchKvArgs {
        let mut argv = vec!["bench", "kv"];
        argv.extend_from_slice(extra);
        match parse(&argv) {
            Command::Bench {
                which: BenchCommand::Kv(a),
            } => a,
            _ => panic!("not bench kv"),
        }
    }

    #[test]
    fn bench_chirper_runs_every_workload_partitions_and_mode() {
        let points = bench_chirper_args(&[]).validate().expect("valid");
        assert_eq!(points.len(), 4 * 4 * 2, "the paper's table by default");
        let points = bench_chirper_args(&[
            "--workload",
            "mix,post",
            "--partitions",
            "2,4",
            "--mode",
            "ssmr,dssmr",
            "--duration",
            "2s",
            "--users",
            "200",
            "--destination",
            "random",
        ])
        .validate()
        .expect("valid");
        let order: Vec<_> = points
            .iter()
            .map(|p| (p.workload, p.partitions, p.mode))
            .collect();
        assert_eq!(
            order,
            vec![
                (Workload::Mix, 2, Mode::Ssmr),
                (Workload::Mix, 2, Mode::Dssmr),
                (Workload::Mix, 4, Mode::Ssmr),
                (Workload::Mix, 4, Mode::Dssmr),
                (Workload::Post, 2, Mode::Ssmr),
                (Workload::Post, 2, Mode::Dssmr),
                (Workload::Post, 4, Mode::Ssmr),
                (Workload::Post, 4, Mode::Dssmr),
            ]
        );
        assert!(points.iter().all(|p| p.graph.users == 200
            && p.duration == Duration::from_secs(2)
            && p.destination == DestinationPolicy::Random));
        // The demo is one point of the benchmark: same defaults.
        let demo = demo_args(&[]).validate().unwrap();
        let bench = bench_chirper_args(&["--workload", "mix", "--partitions", "2"])
            .validate()
            .unwrap();
        for (d, b) in demo.iter().zip(&bench) {
            assert_eq!(
                (d.workload, d.partitions, d.mode, d.clients, &d.graph),
                (b.workload, b.partitions, b.mode, b.clients, &b.graph)
            );
            assert_eq!((d.duration, d.warmup), (b.duration, b.warmup));
            assert_eq!(d.destination, b.destination);
        }
    }

    #[test]
    fn bench_chirper_arguments_are_validated_with_the_field_named() {
        for (argv, flag) in [
            (&["--partitions", "2,9"][..], "--partitions"),
            (&["--partitions", "2,2"][..], "--partitions"),
            (&["--mode", "dssmr,ds-smr"][..], "--mode"),
            (&["--workload", "mix,mix"][..], "--workload"),
            (&["--duration", "0s"][..], "--duration"),
            (&["--users", "1"][..], "--users"),
            (&["--intra-community", "1.5"][..], "--intra-community"),
        ] {
            let err = bench_chirper_args(argv).validate().unwrap_err();
            assert!(err.starts_with(flag), "{argv:?}: {err}");
        }
        for bad in [
            &["--workload", "mix,tweets"][..],
            &["--mode", "paxos"][..],
            &["--destination", "nearest"][..],
            &["--partitions", "two"][..],
        ] {
            let mut argv = vec!["dssmr", "bench", "chirper"];
            argv.extend_from_slice(bad);
            let err = Cli::try_parse_from(argv).err().expect("refused");
            assert!(err.to_string().contains(bad[0]), "{bad:?}: {err}");
        }
    }

    #[test]
    fn bench_chirper_quick_shortens_only_the_flags_not_given() {
        let secs = Duration::from_secs;
        let settings = |argv: &[&str]| {
            let points = bench_chirper_args(argv).validate().expect("valid");
            assert!(!points.is_empty());
            let p = &points[0];
            (p.warmup, p.duration, p.graph.users, p.clients)
        };
        assert_eq!(settings(&[]), (secs(15), secs(20), 2000, 256));
        assert_eq!(settings(&["--quick"]), (secs(1), secs(2), 300, 8));
        assert_eq!(
            settings(&["--quick", "--duration", "7s", "--users", "50"]),
            (secs(1), secs(7), 50, 8)
        );
        assert_eq!(
            settings(&["--quick", "--warmup", "0s", "--clients", "3"]),
            (secs(0), secs(2), 300, 3)
        );
        let err = bench_chirper_args(&["--quick", "--clients", "0"])
            .validate()
            .unwrap_err();
        assert!(err.starts_with("--clients"), "{err}");
        assert_eq!(
            bench_chirper_args(&["--out", "results"]).out,
            Some(PathBuf::from("results"))
        );
        assert!(Cli::try_parse_from(["dssmr", "demo", "--quick"]).is_err());
    }

    #[test]
    fn bench_kv_arguments_are_validated_with_the_field_named() {
        let cfg = bench_kv_args(&[]).validate().expect("valid");
        assert_eq!((cfg.keys, cfg.mode, cfg.partitions), (16, Mode::Dssmr, 2));
        assert_eq!(cfg.mix, KvMix::default());
        let cfg = bench_kv_args(&[
            "--keys",
            "1",
            "--mix",
            "get=3,put=1",
            "--mode",
            "ssmr",
            "--retry-threshold",
            "1",
        ])
        .validate()
        .expect("valid");
        assert_eq!(
            (cfg.keys, cfg.mix.get, cfg.mix.put, cfg.mix.cas),
            (1, 3, 1, 0)
        );
        assert_eq!((cfg.mode, cfg.retry_threshold), (Mode::Ssmr, 1));
        for (argv, flag) in [
            (&["--keys", "0"][..], "--keys"),
            (&["--keys", "1"][..], "--keys"),
            (&["--partitions", "0"][..], "--partitions"),
            (&["--replicas", "2"][..], "--replicas"),
            (&["--clients", "0"][..], "--clients"),
            (&["--duration", "0s"][..], "--duration"),
        ] {
            let err = bench_kv_args(argv).validate().unwrap_err();
            assert!(err.starts_with(flag), "{argv:?}: {err}");
        }
        let err = Cli::try_parse_from(["dssmr", "bench", "kv", "--mix", "incr=1"])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--mix"), "{err}");
    }

    #[test]
    fn history_check_parses_and_refuses_other_apps() {
        match parse(&["history", "check", "--app", "kv", "h.jsonl"]) {
            Command::History {
                which: HistoryCommand::Check(args),
            } => {
                assert_eq!(args.app, AppKind::Kv);
                assert_eq!(args.file, PathBuf::from("h.jsonl"));
                assert_eq!(args.max_configurations, DEFAULT_MAX_CONFIGURATIONS);
            }
            _ => panic!("not history check"),
        }
        assert!(Cli::try_parse_from(["dssmr", "history", "check", "h.jsonl"]).is_err());
        let args = CheckArgs {
            app: AppKind::Chirper,
            max_configurations: 1,
            file: PathBuf::from("h.jsonl"),
        };
        let err = history_check(args).unwrap_err().to_string();
        assert!(err.starts_with("--app"), "{err}");
    }

    #[test]
    fn history_check_judges_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("h.jsonl");
        let history = History::to_file(&path).expect("history file");
        let put = json!({"key": "k0", "value": 100});
        history.invoke(0, "put", put.clone());
        history.complete(0, EventKind::Ok, "put", put, Some(json!("done")));
        history.invoke(1, "get", json!({"key": "k0"}));
        let read = |value| Some(json!({ "value": value }));
        history.complete(1, EventKind::Ok, "get", json!({"key": "k0"}), read(100));
        history.flush().expect("flush");
        let check = |file: &Path| {
            history_check(CheckArgs {
                app: AppKind::Kv,
                max_configurations: DEFAULT_MAX_CONFIGURATIONS,
                file: file.to_path_buf(),
            })
        };
        assert_eq!(check(&path).expect("checked"), ExitCode::SUCCESS);
        let text = std::fs::read_to_string(&path).expect("read");
        let bad = dir.path().join("bad.jsonl");
        std::fs::write(&bad, text.replace(r#"{"value":100}"#, r#"{"value":7}"#)).unwrap();
        assert_eq!(check(&bad).expect("checked"), ExitCode::FAILURE);
        assert!(check(&dir.path().join("absent.jsonl")).is_err());
    }
}
