//! `dssmr bench chirper`: Chirper workloads × partition counts × modes (the paper's Table 1),
//! each on a fresh local cluster or all against a running one (`--cluster`), with a table,
//! result files and plots (`--out`), JSON and a history. This module validates the flags into
//! [`ChirperBench`] points, runs them with [`dssmr_bench::run_points`] and prints.

use crate::flags::{check_partitions, distinct, ChirperLoadArgs, LoadDefaults};
use crate::output::{summary, RunOutputArgs};
use clap::Args;
use dssmr_bench::chirper::{self as chirper_bench, ChirperBench, ChirperRecord, Workload};
use dssmr_bench::{report, run_points, RunShape};
use dssmr_check::history::read_jsonl;
use dssmr_engine::app::chirper::graph::GraphSpec;
use dssmr_engine::client::Mode;
use dssmr_engine::config::{AppKind, ClusterConfig};
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(
    mut_arg("cluster", |a| a
        .help("Load a running cluster (its config file) instead of starting local ones: one run \
               per workload, in the cluster's mode and on its partitions (--mode and \
               --partitions are not allowed then). The cluster must run app chirper")
        .conflicts_with_all(["mode", "partitions"])),
    mut_arg("json", |a| a.help("Write one record per run (workload × partitions × mode, with \
        per-second series) as a JSON array to this file")),
    mut_arg("history", |a| a.help("Record every command of every run (the setup's user \
        creates included) to this JSONL file: one event per invocation and per completion; \
        process ids are distinct across runs")),
    mut_arg("quiet", |a| a.help("Hide the progress bars")),
)]
pub struct BenchChirperArgs {
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
    /// After the runs, read the timeline of every follower of a poster from the cluster and
    /// check that every acknowledged post reached them (or was pushed out by later posts);
    /// fails naming a lost post. Needs --cluster; follow pairs the load changed are left out.
    #[arg(long, requires = "cluster")]
    check_posts: bool,
    #[command(flatten)]
    run: RunOutputArgs,
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
                        run: RunShape {
                            partitions: *partitions,
                            mode: *mode,
                            ..base.run.clone()
                        },
                        ..base.clone()
                    });
                }
            }
        }
        Ok(points)
    }

    /// The points to run against the cluster of `config`: one per workload, in the cluster's
    /// mode, partitions, community size and placement.
    fn against(&self, points: Vec<ChirperBench>, config: &ClusterConfig) -> Vec<ChirperBench> {
        let chirper = config.chirper.clone().unwrap_or_default();
        points
            .into_iter()
            .filter(|p| p.run.mode == self.mode[0] && p.run.partitions == self.partitions[0])
            .map(|p| ChirperBench {
                graph: GraphSpec {
                    community_size: chirper.community_size,
                    ..p.graph
                },
                placement: chirper.placement,
                run: RunShape {
                    mode: config.mode,
                    partitions: config.partitions.len(),
                    replicas: config.partitions[0].members.len(),
                    ..p.run
                },
                ..p
            })
            .collect()
    }

    /// Says what will run.
    fn describe(&self, points: &[ChirperBench]) {
        let first = &points[0];
        println!(
            "Chirper: {} run(s) of {:?} warm-up + {:?} measured, {}; \
             {} clients, {} users ({:.0} % of follows in-community), DS-SMR destination {}",
            match self.run.cluster_path() {
                Some(_) => self.workload.len(),
                None => points.len(),
            },
            first.run.warmup,
            first.run.duration,
            match self.run.cluster_path() {
                Some(path) => format!("against the cluster of {}", path.display()),
                None => "each on a fresh local cluster".to_string(),
            },
            first.run.clients,
            first.graph.users,
            first.graph.intra_community * 100.0,
            first.run.destination.name()
        );
    }
}

pub async fn run(args: BenchChirperArgs) -> anyhow::Result<()> {
    let points = args.validate().map_err(anyhow::Error::msg)?;
    let json = args.run.json_output()?;
    if let Some(dir) = &args.out {
        // Fail before minutes of load, not after.
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("--out: cannot create {}: {e}", dir.display()))?;
    }
    let history = match args.run.open_history()? {
        None if args.check_posts => Some(chirper_bench::post_check_history()),
        h => h,
    };
    args.describe(&points);
    let mut finished = Vec::new();
    let stats = args.run.client_stats().await?;
    let mut points = points;
    for p in &mut points {
        p.run.stats = stats.clone();
    }
    let target = args.run.running_cluster(AppKind::Chirper)?;
    if let Some(config) = &target {
        points = args.against(points, config);
    }
    let topology = target.as_ref().map(|c| c.topology());
    let records = run_points(
        &points,
        topology.as_ref(),
        history.as_ref(),
        args.run.progress(),
        |r: &ChirperRecord| {
            let m = &r.measured;
            let line = summary(r.label(), m.throughput_cps, m.p50_ms, m.moves_per_s);
            println!("{line}");
            finished.push(r.clone());
        },
    )
    .await;
    // Whatever the runs recorded is kept, also when one of them failed.
    args.run.close_history(history.as_ref())?;
    let records = match records {
        Ok(records) => records,
        Err(e) => {
            if let (Some(dir), false) = (&args.out, finished.is_empty()) {
                if let Err(w) = write_report(dir, &finished) {
                    eprintln!("error: {}", crate::error_chain(&w));
                }
            }
            return Err(e.into());
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
    if let (true, Some(config), Some(topology), Some(history)) =
        (args.check_posts, &target, &topology, &history)
    {
        let chirper = config.chirper.clone().unwrap_or_default();
        // A --history file is streamed, not kept in memory: judge what it holds.
        let events = match args.run.history_path() {
            Some(path) => {
                read_jsonl(path).map_err(|e| anyhow::Error::new(e).context("--history"))?
            }
            None => history.history().take_events(),
        };
        let r = chirper_bench::check_posts(
            topology,
            config.mode,
            chirper.community_size,
            chirper.placement,
            &events,
        )
        .await
        .map_err(|e| anyhow::Error::new(e).context("--check-posts"))?;
        println!(
            "post check: {} acknowledged posts, {} deliveries to followers: {} in the \
             timelines, {} pushed out by later posts, none lost ({} follow pairs changed by \
             the load left out)",
            r.acknowledged, r.deliveries, r.found, r.pushed_out, r.unstable_pairs
        );
    }
    Ok(())
}

/// Writes the `--out` files of `records` into `dir` and says where they went.
fn write_report(dir: &Path, records: &[ChirperRecord]) -> anyhow::Result<()> {
    let files =
        report::write_all(dir, records).map_err(|e| anyhow::Error::new(e).context("--out"))?;
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

#[cfg(test)]
#[path = "chirper_test.rs"]
mod tests;
