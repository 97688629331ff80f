//! `dssmr bench`: the subcommands that measure ([`mcast`], [`chirper`], [`kv`]). Each
//! validates its flags into the settings of [`dssmr_bench`], runs them and prints a table;
//! the closed-loop ones share their run flags ([`crate::output::RunOutputArgs`]).

pub mod chirper;
pub mod kv;
pub mod mcast;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Atomic multicast throughput and latency per number of destination groups.
    Mcast(mcast::McastArgs),
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
    Chirper(chirper::BenchChirperArgs),
    /// A mix of kv operations (get, put, cas, transfer, read_many) over a few keys; with
    /// --history, writes a self-contained history that `dssmr history check --app kv` judges.
    Kv(kv::BenchKvArgs),
}

pub async fn run(which: BenchCommand) -> anyhow::Result<()> {
    // SIGTERM (a bench pod deleted, or its container stopped) or Ctrl-C ends the runs early;
    // what they measured, the history and the checks are still written.
    let mut signals = crate::signals::Signals::install()?;
    tokio::spawn(async move {
        let name = signals.wait().await;
        eprintln!("{name}: ending the runs now (results, history and checks follow)");
        dssmr_bench::stop_early();
    });
    match which {
        BenchCommand::Mcast(args) => mcast::run(args).await,
        BenchCommand::Chirper(args) => chirper::run(args).await,
        BenchCommand::Kv(args) => kv::run(args).await,
    }
}
