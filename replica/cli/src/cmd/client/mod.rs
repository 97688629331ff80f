//! `dssmr client`: one application command against a running cluster, the reply printed as
//! JSON (the app's encoding, as in histories). This module loads the config, checks that the
//! cluster runs the app the command is for and builds the proxy; [`kv`] and [`chirper`]
//! parse the app's verbs and run them.

mod chirper;
mod kv;

use clap::{Args, Subcommand};
use dssmr_engine::client::proxy::ProxyStats;
use dssmr_engine::client::{Connections, LocationCache, Proxy, ProxyConfig};
use dssmr_engine::config::{AppKind, ClusterConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ClientArgs {
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
        op: kv::KvRequest,
    },
    /// Commands of the Chirper social network (users are numbers).
    Chirper {
        #[command(subcommand)]
        op: chirper::ChirperOp,
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

/// A proxy for `app` on the cluster of `config`.
fn proxy<A: dssmr_engine::app::StateMachine>(
    config: &ClusterConfig,
    app: A,
    timeout: Duration,
) -> anyhow::Result<Proxy<A>> {
    let proxy_config = ProxyConfig {
        timeout,
        ..ProxyConfig::for_cluster(config)
    };
    Ok(Proxy::new(
        Arc::new(app),
        proxy_config,
        Arc::new(Connections::new(&config.topology())?),
        Arc::new(LocationCache::default()),
        Arc::new(ProxyStats::default()),
    )?)
}

pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
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
        ClientApp::Kv { op } => {
            kv::run(proxy(&config, dssmr_engine::app::kv::Kv, args.timeout)?, op).await?
        }
        ClientApp::Chirper { op } => {
            let app = dssmr_engine::app::chirper::Chirper::for_cluster(&config);
            chirper::run(proxy(&config, app, args.timeout)?, op).await?
        }
    };
    println!("{}", serde_json::to_string(&reply)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{parse, refused};
    use crate::Command;
    use dssmr_engine::app::kv::KvCommand;

    #[test]
    fn client_commands_parse() {
        match parse(&["client", "--config", "c.yaml", "kv", "cas", "a", "-1", "-2"]) {
            Command::Client(ClientArgs {
                app:
                    ClientApp::Kv {
                        op: kv::KvRequest::Command(KvCommand::Cas { key, expected, new }),
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
            assert!(refused(bad).is_some(), "{bad:?}");
        }
    }
}
