//! Tests of `dssmr bench chirper`'s flags: the points they describe and the errors that
//! name them.

use super::*;
use crate::cmd::bench::BenchCommand;
use crate::cmd::demo::tests::demo_args;
use crate::tests::{parse, refused};
use crate::Command;
use dssmr_engine::client::DestinationPolicy;
use std::time::Duration;

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
        .map(|p| (p.workload, p.run.partitions, p.run.mode))
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
        && p.run.duration == Duration::from_secs(2)
        && p.run.destination == DestinationPolicy::Random));
    // The demo is one point of the benchmark: same defaults.
    let demo = demo_args(&[]).validate().unwrap();
    let bench = bench_chirper_args(&["--workload", "mix", "--partitions", "2"])
        .validate()
        .unwrap();
    for (d, b) in demo.iter().zip(&bench) {
        assert_eq!(
            (
                d.workload,
                d.run.partitions,
                d.run.mode,
                d.run.clients,
                &d.graph
            ),
            (
                b.workload,
                b.run.partitions,
                b.run.mode,
                b.run.clients,
                &b.graph
            )
        );
        assert_eq!(
            (d.run.duration, d.run.warmup),
            (b.run.duration, b.run.warmup)
        );
        assert_eq!(d.run.destination, b.run.destination);
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
        let mut argv = vec!["bench", "chirper"];
        argv.extend_from_slice(bad);
        let err = refused(&argv).expect("refused");
        assert!(err.contains(bad[0]), "{bad:?}: {err}");
    }
}

#[test]
fn bench_chirper_quick_shortens_only_the_flags_not_given() {
    let secs = Duration::from_secs;
    let settings = |argv: &[&str]| {
        let points = bench_chirper_args(argv).validate().expect("valid");
        assert!(!points.is_empty());
        let p = &points[0];
        (p.run.warmup, p.run.duration, p.graph.users, p.run.clients)
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
    assert!(refused(&["demo", "--quick"]).is_some());
}
