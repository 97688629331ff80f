//! How a cluster comes back from a fault, as the fault tests measure it: a group has a leader
//! again and the cluster's partitions execute commands again. Shared by the fixed fault test
//! (`tests/faults.rs`) and the seeded nemesis (`tests/nemesis.rs`).

use crate::fabric::Fabric;
use crate::layout::{Layout, ReplicaRef};
use crate::probe::{self, leader};
use crate::wait_for;
use dssmr_engine::ids::{GroupId, ORACLE};
use std::time::{Duration, Instant};

/// Executed commands a group must add after a fault to count as recovered.
pub const PROGRESS: f64 = 10.0;
/// Longest a group may take to recover from one fault.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(45);

/// Executed commands of group `g`: the largest count any reachable replica (but `skip`)
/// reports.
pub fn executed(
    f: &dyn Fabric,
    layout: &Layout,
    g: GroupId,
    skip: Option<&ReplicaRef>,
) -> Option<f64> {
    layout
        .group(g)
        .iter()
        .filter(|r| Some(*r) != skip)
        .filter_map(|r| probe::metrics(&f.http(r)).ok())
        .map(|m| probe::sum(&m, "dssmr_commands_total", &[("outcome", "executed")]))
        .reduce(f64::max)
}

/// Executed commands of every partition of the cluster (what its clients get done).
pub fn progress(f: &dyn Fabric, layout: &Layout, skip: Option<&ReplicaRef>) -> f64 {
    layout
        .groups()
        .into_iter()
        .filter(|g| *g != ORACLE)
        .filter_map(|g| executed(f, layout, g, skip))
        .sum()
}

/// How a cluster came back from a fault, both from the fault.
#[derive(Clone, Copy, Debug)]
pub struct Recovery {
    /// Until the faulty group had a leader again (other than the faulty replica).
    pub leader: Duration,
    /// Until the cluster's partitions had executed [`PROGRESS`] more commands than when that
    /// leader appeared (the load is served again).
    pub throughput: Duration,
}

/// Waits until group `g` has a leader other than `not`, then until the cluster makes progress.
pub fn recovery(
    f: &dyn Fabric,
    layout: &Layout,
    g: GroupId,
    not: Option<&ReplicaRef>,
    since: Instant,
) -> anyhow::Result<Recovery> {
    let label = dssmr_engine::ids::group_label(g);
    wait_for(
        &format!("{} {label} elects a leader", layout.name),
        RECOVERY_LIMIT,
        Duration::from_millis(50),
        || match leader(f, layout, g, not) {
            Some(_) => Ok(()),
            None => Err("no leader".into()),
        },
    )?;
    let leader = since.elapsed();
    let base = progress(f, layout, not);
    wait_for(
        &format!("{} serves its load again", layout.name),
        RECOVERY_LIMIT,
        Duration::from_millis(50),
        || {
            let now = progress(f, layout, not);
            if now >= base + PROGRESS {
                Ok(())
            } else {
                Err(format!("executed {now}, waiting for {}", base + PROGRESS))
            }
        },
    )?;
    Ok(Recovery {
        leader,
        throughput: since.elapsed(),
    })
}

/// Waits until every replica in `rs` is ready; returns the time from `since`.
pub fn all_ready(f: &dyn Fabric, rs: &[ReplicaRef], since: Instant) -> anyhow::Result<Duration> {
    probe::all_ready(f, rs, Duration::from_secs(90))?;
    Ok(since.elapsed())
}
