//! `dssmr local`: a whole cluster (an oracle for DS-SMR, partitions × replicas) in this
//! process on 127.0.0.1, its config written once every group has a leader, served until
//! SIGINT or SIGTERM. This module plans and publishes; [`LocalCluster`] runs the replicas.

use crate::flags::{check_partitions, check_replicas};
use crate::signals::Signals;
use clap::Args;
use dssmr_bench::mode_label;
use dssmr_engine::app::chirper::Chirper;
use dssmr_engine::app::kv::Kv;
use dssmr_engine::client::{Mode, Topology};
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::config::{validate_name, AppKind, ChirperSettings, ClusterConfig};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct LocalArgs {
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
pub struct LocalPlan {
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

pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
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
        name: Some(plan.name.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{parse, refused};
    use crate::Command;

    fn local_args(extra: &[&str]) -> LocalArgs {
        let mut argv = vec!["local"];
        argv.extend_from_slice(extra);
        match parse(&argv) {
            Command::Local(a) => a,
            _ => panic!("not local"),
        }
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
        assert!(refused(&["local", "--app", "sql"]).is_some());
        assert!(refused(&["local", "--mode", "paxos"]).is_some());
    }
}
