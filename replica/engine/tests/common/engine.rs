//! Shared harness of the engine tests: clusters on disk with fast elections, leader crashes
//! paced by client progress, and waiting until every partition is quiescent.

use super::Progress;
use dssmr_engine::cluster::{AppFactory, ClusterOptions, LocalCluster};
use dssmr_engine::ids::GroupId;
use dssmr_engine::node::RaftTuning;
use std::path::Path;
use std::time::{Duration, Instant};

/// Fast elections, small snapshots (so snapshots are taken and shipped during the tests).
pub fn tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        snapshot_every: 300,
    }
}

/// An oracle and `partitions` partitions × 3 replicas on disk under `dir`.
pub async fn start(apps: AppFactory, partitions: usize, dir: &Path) -> LocalCluster {
    LocalCluster::start(ClusterOptions {
        groups: partitions,
        oracle: true,
        apps: Some(apps),
        data_root: Some(dir.to_path_buf()),
        tuning: tuning(),
        ..Default::default()
    })
    .await
    .expect("cluster starts")
}

/// Crashes the leader of each group of `plan` in turn, once clients made `step` more
/// commands of progress, and restarts it after `step` more. Returns what it did.
pub async fn crash_leaders(
    cluster: &mut LocalCluster,
    progress: &Progress,
    plan: &[GroupId],
    step: u64,
) -> Vec<String> {
    let mut log = Vec::new();
    let t0 = Instant::now();
    for g in plan {
        if !progress.advance(step, Duration::from_secs(60)).await {
            log.push(format!("clients made no progress before crashing {g}"));
            break;
        }
        let Some(leader) = cluster.leader_of(*g) else {
            log.push(format!("{g} had no leader to crash"));
            continue;
        };
        let crashed_at = t0.elapsed();
        let done_before = progress.done();
        cluster.crash(*g, leader).await;
        cluster
            .wait_for_leaders(Duration::from_secs(30))
            .await
            .expect("a new leader is elected");
        let elected_at = t0.elapsed();
        let resumed = progress.advance(step, Duration::from_secs(60)).await;
        log.push(format!(
            "{g}: crash at {crashed_at:?} (done {done_before}), new leader at {elected_at:?}, \
             {step} more commands by {:?} (done {})",
            t0.elapsed(),
            progress.done()
        ));
        if !resumed {
            eprintln!(
                "no progress after crashing {g}/r{leader}:\n{}",
                describe(cluster)
            );
        }
        cluster.restart(*g, leader).await.expect("restart");
        log.push(format!(
            "crashed leader {g}/r{leader}, restarted it (progress after crash: {resumed})"
        ));
    }
    log
}

/// While the clients run, crashes the leaders of `plan` (when `faults`), then stops the
/// clients and waits for them.
pub async fn faults_then_join(
    cluster: &mut LocalCluster,
    progress: &Progress,
    faults: bool,
    plan: &[GroupId],
    step: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    if faults {
        let log = crash_leaders(cluster, progress, plan, step).await;
        eprintln!("faults: {log:#?}");
    }
    progress.stop();
    for t in tasks {
        t.await.expect("client");
    }
}

/// What every running replica is doing: leadership, multicast, channel and application.
pub fn describe(cluster: &LocalCluster) -> String {
    let mut out = String::new();
    for n in cluster.running() {
        let line = n.with_state(|s| {
            let outboxes: Vec<String> = s
                .channel
                .outboxes()
                .map(|(g, ob)| format!("{g}:{}", ob.len()))
                .collect();
            format!(
                "{}/n{}{}: skeen pending {}, outboxes {:?}, app: {}",
                n.group(),
                n.node_id(),
                if n.is_leader() { " (leader)" } else { "" },
                s.skeen.pending_count(),
                outboxes,
                s.app.describe()
            )
        });
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Waits until every running replica has nothing left to deliver or finish: no message
/// pending in its multicast and every group's replicas at the same applied index.
pub async fn wait_quiescent(cluster: &LocalCluster, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let idle = cluster
            .running()
            .all(|n| n.with_state(|s| s.skeen.pending_count() == 0));
        let mut same = true;
        for g in cluster.groups() {
            let applied: Vec<_> = (0..cluster.replicas())
                .filter_map(|r| cluster.node(g, r))
                .map(|n| n.raft().metrics().borrow().last_applied)
                .collect();
            same &= applied.windows(2).all(|w| w[0] == w[1]);
        }
        if idle && same {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        let mut rx = match cluster.running().next() {
            Some(n) => n.raft().metrics(),
            None => return false,
        };
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
}
