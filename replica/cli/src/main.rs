//! The `dssmr` command line: the demo, a local cluster, a replica, a command-line client,
//! cluster administration, benchmarks and the history checker.
//!
//! Every subcommand validates its flags first (errors start with the flag's name) and then
//! hands off to the library: [`dssmr_bench`] for measurements, [`dssmr_engine::cluster`] for local
//! clusters, [`dssmr_engine::config`] for cluster config files, [`dssmr_engine::client`] for commands and
//! [`dssmr_check::history`] for recorded histories and their checkers. This file only parses,
//! dispatches and turns an error into its message and the exit status.
//!
//! # Layout
//!
//! Shared pieces first, then one file per subcommand:
//!
//! - `flags.rs`: checks of flags several subcommands have (`--partitions`, `--replicas`, lists)
//!   and the Chirper load flags `dssmr demo` and `dssmr bench chirper` share;
//! - `signals.rs`: SIGINT / SIGTERM;
//! - `metrics_server.rs`: the client-side `/metrics` of `--metrics-addr`;
//! - `output.rs`: the `--json` and `--history` files, and the run flags `dssmr bench chirper`
//!   and `dssmr bench kv` share (`--cluster`, `--metrics-addr`, `--json`, `--history`,
//!   `--quiet`);
//! - `cmd/demo.rs`, `cmd/local.rs`, `cmd/admin.rs`, `cmd/history.rs`;
//! - `cmd/replica/`: `mod.rs` (flags, signals, serving), `plan.rs` (flags and the config
//!   resolved into the engine's plan), `identity.rs` (group and ordinal from flags or
//!   POD_NAME);
//! - `cmd/client/`: `mod.rs` (flags, the proxy), `kv.rs` (the kv verbs, parsed into the app's
//!   `KvCommand`), `chirper.rs`;
//! - `cmd/bench/`: `mod.rs` (the subcommands), `mcast.rs`, `chirper.rs`, `kv.rs`.

mod cmd;
mod flags;
mod metrics_server;
mod output;
mod signals;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    Demo(cmd::demo::DemoArgs),
    /// Run a local cluster in this process, write its config file and serve until Ctrl-C or
    /// SIGTERM.
    Local(cmd::local::LocalArgs),
    /// Run one replica of one group of a cluster, as a Kubernetes StatefulSet pod does: gRPC
    /// for peers and clients, HTTP for /metrics, /healthz and /readyz. Stops on SIGTERM or
    /// Ctrl-C, handing leadership over first if it leads.
    ///
    /// Which replica it is comes from --group and --ordinal, or from POD_NAME
    /// (`<cluster>-oracle-<ordinal>` or `<cluster>-p<N>-<ordinal>`). Example:
    /// `dssmr replica --config cluster.yaml --group p1 --ordinal 0 --data-dir /var/lib/dssmr`.
    Replica(cmd::replica::ReplicaArgs),
    /// Send one application command to a running cluster and print the reply as JSON.
    Client(cmd::client::ClientArgs),
    /// Administer a running cluster through its oracle: status (groups, leaders, commit
    /// indexes, variables per partition), add a partition, drain a partition. Prints JSON.
    Admin(cmd::admin::AdminArgs),
    /// Measure the system on a local cluster (every replica on 127.0.0.1).
    Bench {
        #[command(subcommand)]
        which: cmd::bench::BenchCommand,
    },
    /// Work with recorded histories (`dssmr bench ... --history FILE`).
    History {
        #[command(subcommand)]
        which: cmd::history::HistoryCommand,
    },
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
            Command::Demo(args) => cmd::demo::run(args).await.map(done),
            Command::Local(args) => cmd::local::run(args).await.map(done),
            Command::Replica(args) => cmd::replica::run(args).await.map(done),
            Command::Client(args) => cmd::client::run(args).await.map(done),
            Command::Admin(args) => cmd::admin::run(args).await.map(done),
            Command::Bench { which } => cmd::bench::run(which).await.map(done),
            Command::History { which } => cmd::history::run(which),
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

    /// `dssmr <argv>`, parsed (the subcommands' tests start here).
    pub(crate) fn parse(argv: &[&str]) -> Command {
        let mut full = vec!["dssmr"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).expect("parses").command
    }

    /// Whether `dssmr <argv>` is refused, and clap's message.
    pub(crate) fn refused(argv: &[&str]) -> Option<String> {
        let mut full = vec!["dssmr"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).err().map(|e| e.to_string())
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
}
