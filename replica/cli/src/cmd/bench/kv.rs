//! `dssmr bench kv`: a mix of kv operations on a local cluster or a running one, with a
//! history that `dssmr history check --app kv` judges. This module validates the flags into
//! a [`KvBench`], runs it with [`dssmr_bench::run_local`] or [`dssmr_bench::run_against`] and
//! prints.

use crate::flags::{check_partitions, check_replicas, Reads};
use crate::output::RunOutputArgs;
use clap::Args;
use dssmr_bench::kv::{self as kv_bench, KvBench, KvMix};
use dssmr_bench::{mode_label, progress_bar, run_against, run_local, ClosedLoop, RunShape};
use dssmr_engine::client::{DestinationPolicy, Mode, ProxyConfig};
use dssmr_engine::config::AppKind;
use std::time::Duration;

#[derive(Args)]
pub struct BenchKvArgs {
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
    /// How partition leaders of the local cluster answer get and read_many: index (from
    /// their state after a read index) or log (ordered like every other operation).
    #[arg(long, default_value = "index")]
    reads: Reads,
    #[command(flatten)]
    run: RunOutputArgs,
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
            keys: self.keys,
            mix: self.mix,
            run: RunShape {
                mode: self.mode,
                partitions: self.partitions,
                replicas: self.replicas,
                clients: self.clients,
                duration: self.duration,
                warmup: self.warmup,
                retry_threshold: self.retry_threshold,
                destination: self.destination,
                seed: self.seed,
                reads: self.reads.into(),
                ..KvBench::default().run
            },
        })
    }
}

pub async fn run(args: BenchKvArgs) -> anyhow::Result<()> {
    let mut cfg = args.validate().map_err(anyhow::Error::msg)?;
    cfg.run.stats = args.run.client_stats().await?;
    let target = args.run.running_cluster(AppKind::Kv)?;
    if let Some(config) = &target {
        cfg.run.mode = config.mode;
        cfg.run.partitions = config.partitions.len();
        cfg.run.replicas = config.partitions[0].members.len();
    }
    let json = args.run.json_output()?;
    let history = args.run.open_history()?;
    let run = &cfg.run;
    println!(
        "kv: {} keys, mix {}, {} clients, {:?} warm-up + {:?} measured on {} partition(s) \
         ({}, retry threshold {})",
        cfg.keys,
        cfg.mix,
        run.clients,
        run.warmup,
        run.duration,
        run.partitions,
        mode_label(run.mode),
        run.retry_threshold
    );
    let bar = progress_bar(&cfg.label(), args.run.progress());
    let record = match &target {
        Some(config) => run_against(&cfg, &config.topology(), history.as_ref(), &bar).await,
        None => run_local(&cfg, history.as_ref(), &bar).await,
    };
    bar.finish_and_clear();
    args.run.close_history(history.as_ref())?;
    let records = vec![record?];
    print!("{}", kv_bench::table(&records));
    if let Some(path) = args.run.history_path() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::bench::BenchCommand;
    use crate::tests::{parse, refused};
    use crate::Command;

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
    fn bench_kv_arguments_are_validated_with_the_field_named() {
        let cfg = bench_kv_args(&[]).validate().expect("valid");
        assert_eq!(
            (cfg.keys, cfg.run.mode, cfg.run.partitions),
            (16, Mode::Dssmr, 2)
        );
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
        assert_eq!((cfg.run.mode, cfg.run.retry_threshold), (Mode::Ssmr, 1));
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
        let err = refused(&["bench", "kv", "--mix", "incr=1"]).expect("refused");
        assert!(err.contains("--mix"), "{err}");
    }
}
