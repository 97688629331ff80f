//! `dssmr demo`: one Chirper workload under S-SMR, then under DS-SMR, each on a fresh local
//! cluster, and a comparison. The runs are points of `dssmr bench chirper` (same flags and
//! defaults, [`ChirperLoadArgs`]); this module only prints around them.

use crate::flags::{check_partitions, ChirperLoadArgs, LoadDefaults};
use crate::output::{summary, JsonOutput};
use clap::Args;
use dssmr_bench::chirper::{self as chirper_bench, ChirperBench, Workload};
use dssmr_bench::{mode_label, run_points, RunShape};
use dssmr_engine::client::Mode;
use std::path::PathBuf;

#[derive(Args)]
pub struct DemoArgs {
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
    pub fn validate(&self) -> Result<Vec<ChirperBench>, String> {
        check_partitions(self.partitions)?;
        let base = self.load.base(LoadDefaults::standard())?;
        Ok([Mode::Ssmr, Mode::Dssmr]
            .into_iter()
            .map(|mode| ChirperBench {
                workload: self.workload,
                run: RunShape {
                    mode,
                    partitions: self.partitions,
                    ..base.run.clone()
                },
                ..base.clone()
            })
            .collect())
    }
}

/// Says what the demo runs.
fn describe(first: &ChirperBench) {
    let (g, run) = (&first.graph, &first.run);
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
        run.partitions, run.replicas, run.replicas
    );
    println!(
        "  load: {} closed-loop clients, {:?} warm-up + {:?} measured per mode; users created \
         by {} placement; DS-SMR destination policy {}",
        run.clients,
        run.warmup,
        run.duration,
        first.placement.name(),
        run.destination.name()
    );
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let runs = args.validate().map_err(anyhow::Error::msg)?;
    let json = JsonOutput::open(args.json.as_deref())?;
    describe(&runs[0]);
    let records = run_points(&runs, None, None, !args.quiet, |r| {
        let m = &r.measured;
        let label = mode_label(r.mode);
        println!(
            "{}",
            summary(label, m.throughput_cps, m.p50_ms, m.moves_per_s)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flags::DEMO_INTRA_COMMUNITY;
    use crate::tests::{parse, refused};
    use crate::Command;
    use dssmr_engine::app::chirper::UserPlacement;
    use dssmr_engine::client::DestinationPolicy;
    use std::time::Duration;

    pub(crate) fn demo_args(extra: &[&str]) -> DemoArgs {
        let mut argv = vec!["demo"];
        argv.extend_from_slice(extra);
        match parse(&argv) {
            Command::Demo(a) => a,
            _ => panic!("not demo"),
        }
    }

    #[test]
    fn demo_defaults_run_ssmr_then_dssmr_on_the_same_graph() {
        let runs = demo_args(&[]).validate().expect("valid");
        assert_eq!(
            runs.iter().map(|r| r.run.mode).collect::<Vec<_>>(),
            vec![Mode::Ssmr, Mode::Dssmr]
        );
        let r = &runs[0];
        assert_eq!(r.workload, Workload::Mix);
        assert_eq!(
            (r.run.partitions, r.run.clients, r.graph.users),
            (2, 256, 2000)
        );
        assert_eq!(r.run.duration, Duration::from_secs(20));
        assert_eq!(r.run.warmup, Duration::from_secs(15));
        assert_eq!(runs[1].graph, r.graph);
        assert_eq!(r.graph.intra_community, DEMO_INTRA_COMMUNITY);
        assert_eq!(r.run.destination, DestinationPolicy::Affinity);
        assert_eq!(r.placement, UserPlacement::Hash);
        let runs = demo_args(&["--partitions", "4", "--workload", "post", "--seed", "9"])
            .validate()
            .unwrap();
        assert_eq!(runs[1].run.partitions, 4);
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
        assert!(refused(&["demo", "--workload", "tweets"]).is_some());
    }
}
