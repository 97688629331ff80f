//! Shared harness of the engine tests: clusters on disk with fast elections, a nemesis paced
//! by client progress (leader crashes, isolated leaders, groups cut off each other), and
//! waiting until every partition is quiescent.

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
        log_keep: 1000,
    }
}

/// An oracle and `partitions` partitions × 3 replicas on disk under `dir`.
pub async fn start(apps: AppFactory, partitions: usize, dir: &Path) -> LocalCluster {
    start_tuned(apps, partitions, dir, tuning()).await
}

/// [`start`] with the Raft settings `tuning`.
pub async fn start_tuned(
    apps: AppFactory,
    partitions: usize,
    dir: &Path,
    tuning: RaftTuning,
) -> LocalCluster {
    LocalCluster::start(ClusterOptions {
        groups: partitions,
        oracle: true,
        apps: Some(apps),
        data_root: Some(dir.to_path_buf()),
        tuning,
        ..Default::default()
    })
    .await
    .expect("cluster starts")
}

/// One fault of a nemesis plan.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Crash the group's leader, wait for a new one, restart the old one from its disk.
    CrashLeader(GroupId),
    /// Cut the group's leader off every other replica (its own group's included) for a while,
    /// then heal: a new leader is elected meanwhile, clients still reach the old one.
    IsolateLeader(GroupId),
    /// Cut two groups off each other for a while (clients still reach both), then heal.
    CutGroups(GroupId, GroupId),
    /// Hand the group's leadership over (TimeoutNow), as a leader stopping gracefully does.
    HandOver(GroupId),
}

impl Fault {
    /// A plan of `n` faults over `groups`, each kind and group drawn from `seed`: the same
    /// seed gives the same plan.
    pub fn random_plan(seed: u64, groups: &[GroupId], n: usize) -> Vec<Fault> {
        use rand::seq::IndexedRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let g = *groups.choose(&mut rng).expect("groups");
                match rng.random_range(0..4) {
                    0 => Fault::CrashLeader(g),
                    1 => Fault::IsolateLeader(g),
                    2 => {
                        let others: Vec<GroupId> =
                            groups.iter().copied().filter(|o| *o != g).collect();
                        Fault::CutGroups(g, *others.choose(&mut rng).expect("two groups"))
                    }
                    _ => Fault::HandOver(g),
                }
            })
            .collect()
    }
}

/// How long an isolation or a cut lasts at most (less once clients made `step` progress).
const CUT_FOR: Duration = Duration::from_secs(3);

fn addresses(cluster: &LocalCluster, g: GroupId) -> Vec<String> {
    cluster.topology().groups[&g].clone()
}

/// The address of every replica of every group.
pub fn all_addresses(cluster: &LocalCluster) -> Vec<String> {
    cluster
        .topology()
        .groups
        .values()
        .flatten()
        .cloned()
        .collect()
}

/// Carries out `plan` in turn, each fault once clients made `step` more commands of progress.
/// Returns what happened, one line per fault carried out (a fault that could not be, such as
/// a crash of a group without a leader, leaves a line saying so, without "fault:").
pub async fn inject(
    cluster: &mut LocalCluster,
    progress: &Progress,
    plan: &[Fault],
    step: u64,
) -> Vec<String> {
    let mut log = Vec::new();
    let t0 = Instant::now();
    for fault in plan {
        if !progress.advance(step, Duration::from_secs(60)).await {
            log.push(format!("clients made no progress before {fault:?}"));
            break;
        }
        if cluster
            .wait_for_leaders(Duration::from_secs(30))
            .await
            .is_err()
        {
            log.push(format!("no leader everywhere before {fault:?}"));
            continue;
        }
        let at = t0.elapsed();
        match *fault {
            Fault::CrashLeader(g) => {
                let Some(leader) = cluster.leader_of(g) else {
                    log.push(format!("{g} had no leader to crash"));
                    continue;
                };
                cluster.crash(g, leader).await;
                cluster
                    .wait_for_leaders(Duration::from_secs(30))
                    .await
                    .expect("a new leader is elected");
                let resumed = progress.advance(step, Duration::from_secs(60)).await;
                if !resumed {
                    eprintln!(
                        "no progress after crashing {g}/r{leader}:\n{}",
                        describe(cluster)
                    );
                }
                cluster.restart(g, leader).await.expect("restart");
                log.push(format!(
                    "fault: crashed leader {g}/r{leader} at {at:?}, restarted it \
                     (progress after the crash: {resumed})"
                ));
            }
            Fault::IsolateLeader(g) => {
                let Some(leader) = cluster.leader_of(g) else {
                    log.push(format!("{g} had no leader to isolate"));
                    continue;
                };
                let addr = addresses(cluster, g)[leader].clone();
                let all = all_addresses(cluster);
                cluster
                    .faults()
                    .isolate(&addr, all.iter().map(String::as_str));
                // Held until another replica of the group leads (bounded by CUT_FOR).
                let deadline = Instant::now() + CUT_FOR;
                let deposed = loop {
                    let other = (0..cluster.replicas())
                        .any(|r| r != leader && cluster.node(g, r).is_some_and(|n| n.is_leader()));
                    if other || Instant::now() > deadline {
                        break other;
                    }
                    let _ = progress.advance(1, Duration::from_millis(50)).await;
                };
                let resumed = progress.advance(step, CUT_FOR).await;
                cluster.faults().heal();
                log.push(format!(
                    "fault: isolated leader {g}/r{leader} at {at:?}, healed \
                     (another replica led meanwhile: {deposed}; progress: {resumed})"
                ));
            }
            Fault::HandOver(g) => {
                match cluster
                    .hand_over(g, Duration::from_secs(5))
                    .await
                    .expect("restart")
                {
                    None => {
                        log.push(format!("{g} had no leader to hand over"));
                        continue;
                    }
                    Some((leader, handed)) => {
                        let resumed = progress.advance(step, Duration::from_secs(60)).await;
                        log.push(format!(
                            "fault: {g}/r{leader} handed over at {at:?} (taken over: {handed}), \
                             restarted (progress after: {resumed})"
                        ));
                    }
                }
            }
            Fault::CutGroups(a, b) => {
                for x in addresses(cluster, a) {
                    for y in addresses(cluster, b) {
                        cluster.faults().cut(&x, &y);
                    }
                }
                let resumed = progress.advance(step, CUT_FOR).await;
                cluster.faults().heal();
                log.push(format!(
                    "fault: cut {a} off {b} at {at:?}, healed (progress meanwhile: {resumed})"
                ));
            }
        }
    }
    log
}

/// While the clients run, carries out the faults of `plan` (when `faults`), then stops the
/// clients and waits for them. Fails unless every fault of the plan happened.
pub async fn faults_then_join(
    cluster: &mut LocalCluster,
    progress: &Progress,
    faults: bool,
    plan: &[Fault],
    step: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    if faults {
        let log = inject(cluster, progress, plan, step).await;
        eprintln!("faults: {log:#?}");
        let happened = log.iter().filter(|l| l.starts_with("fault:")).count();
        assert_eq!(
            happened,
            plan.len(),
            "only {happened} of the {} planned faults happened: {log:#?}",
            plan.len()
        );
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
