//! Harness of the end-to-end tests: whole dssmr clusters of real replica processes, each
//! `dssmr replica --config FILE` exactly as a Kubernetes pod runs it, under faults.
//!
//! * [`layout`]: which replicas a cluster has, their names and the cluster config file.
//! * [`fabric`]: where replicas run and how faults are made. [`fabric::Docker`] runs each
//!   replica as a container of the `dssmr:e2e` image on a private Docker network of its own
//!   (kill = SIGKILL, disconnect = `docker network disconnect`); [`fabric::Processes`] runs
//!   them as processes on 127.0.0.1 when no Docker engine is present (disconnect = SIGSTOP).
//! * [`probe`]: reads `/metrics` and `/readyz` of replicas.
//! * [`prometheus`]: a real Prometheus server (Debian's package) scraping every replica.
//! * [`recovery`]: waiting until a cluster has come back from a fault, and measuring it.
//!
//! Everything started here is stopped when its handle drops, also when a test fails.

pub mod fabric;
pub mod kube;
pub mod layout;
pub mod probe;
pub mod prometheus;
pub mod recovery;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The `dssmr` binary the fallback fabric and the process tests run: `$DSSMR_BIN`, else the
/// one cargo built next to the running test executable (`target/<profile>/dssmr`).
pub fn dssmr_binary() -> PathBuf {
    workspace_binary("dssmr", "DSSMR_BIN")
}

/// The binary `name` of this workspace: `$env_var` when set, else the one cargo built next to
/// the running test executable (`target/<profile>/<name>`).
pub fn workspace_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .expect("target directory")
}

/// Polls `check` every `every` until it returns `Some`, or fails after `timeout` with the
/// last reason `check` gave.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(why) if Instant::now() >= deadline => {
                anyhow::bail!("{what}: not within {timeout:?} (last: {why})")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}
