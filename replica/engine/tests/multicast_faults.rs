//! Atomic multicast under faults: concurrent senders multicast to random destination sets over
//! four groups of three replicas while group leaders crash (and recover from disk) and replicas
//! are cut off the network; the checker then verifies validity, uniform agreement, integrity,
//! acyclic order and prefix order on every replica's delivery sequence.
//!
//! A second test runs the same workload on a deliberately broken delivery rule (deliver
//! multi-group messages before their final timestamp) and expects the checker to object.

mod common;

use common::{check, delivery_logs, run_senders, wait_converged, Progress};
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::ids::GroupId;
use dssmr_engine::multicast::skeen::DeliveryRule;
use dssmr_engine::multicast::McastMessage;
use dssmr_engine::node::RaftTuning;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;

const TEST_LIMIT: Duration = Duration::from_secs(300);

fn tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        // Small, so snapshots are built, persisted and sent to lagging replicas.
        snapshot_every: 300,
        log_keep: 1000,
    }
}

/// Crashes leaders and isolates replicas, one fault per round, each round waiting for the
/// senders to make progress first (so faults land in the middle of the load).
async fn inject_faults(
    cluster: &mut LocalCluster,
    progress: &Progress,
    rounds: usize,
) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(99);
    let groups: Vec<GroupId> = cluster.groups();
    let all_addrs: Vec<String> = cluster
        .topology()
        .groups
        .values()
        .flatten()
        .cloned()
        .collect();
    let mut log = Vec::new();
    for round in 0..rounds {
        if !progress.advance(50, Duration::from_secs(60)).await {
            log.push(format!(
                "round {round}: senders made no progress; stopping faults"
            ));
            break;
        }
        let g = *groups.choose(&mut rng).expect("groups");
        if round % 2 == 0 {
            let Some(leader) = cluster.leader_of(g) else {
                log.push(format!("round {round}: {g} has no leader right now"));
                continue;
            };
            cluster.crash(g, leader).await;
            cluster
                .wait_for_leaders(Duration::from_secs(30))
                .await
                .expect("a new leader is elected");
            let _ = progress.advance(30, Duration::from_secs(60)).await;
            cluster.restart(g, leader).await.expect("restart");
            log.push(format!(
                "round {round}: crashed leader {g}/r{leader}, restarted it"
            ));
        } else {
            let r = rng.random_range(0..cluster.replicas());
            let addr = cluster.topology().groups[&g][r].clone();
            cluster
                .faults()
                .isolate(&addr, all_addrs.iter().map(|s| s.as_str()));
            let _ = progress.advance(50, Duration::from_secs(60)).await;
            cluster.faults().heal();
            log.push(format!("round {round}: isolated {g}/r{r} ({addr}), healed"));
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicast_survives_leader_crashes_and_cut_links() {
    dssmr_engine::telemetry::init_for_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    tokio::time::timeout(TEST_LIMIT, async {
        let mut cluster = LocalCluster::start(ClusterOptions {
            groups: 4,
            replicas: 3,
            data_root: Some(dir.path().to_path_buf()),
            tuning: tuning(),
            ..Default::default()
        })
        .await
        .expect("cluster starts");
        let progress = Arc::new(Progress::default());
        let senders = tokio::spawn(run_senders(
            cluster.topology().clone(),
            8,
            120,
            4,
            7,
            progress.clone(),
        ));
        let faults = inject_faults(&mut cluster, &progress, 6).await;
        let sent = senders.await.expect("senders");
        eprintln!("faults injected:\n  {}", faults.join("\n  "));
        assert!(
            faults
                .iter()
                .filter(|f| f.contains("crashed") || f.contains("isolated"))
                .count()
                >= 4,
            "too few faults were injected: {faults:?}"
        );
        let acked = sent.iter().filter(|m| m.acknowledged).count();
        assert_eq!(
            acked,
            sent.len(),
            "every multicast of a correct sender completes"
        );
        assert!(
            wait_converged(&cluster, &sent, Duration::from_secs(60)).await,
            "replicas did not deliver every acknowledged message"
        );
        let logs = delivery_logs(&cluster);
        assert_eq!(logs.len(), 12, "every replica is up at the end");
        let report = check(&sent, &logs).unwrap_or_else(|v| panic!("violations:\n{v}"));
        eprintln!(
            "checked {} messages, {} replicas, {} deliveries",
            report.messages, report.replicas, report.deliveries
        );
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
}

/// Runs the fault-free workload on a cluster whose groups follow the broken `rule`, and
/// returns the checker's objection (the test fails if it has none).
async fn objection_to(rule: DeliveryRule, seed: u64) -> String {
    dssmr_engine::telemetry::init_for_tests();
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = LocalCluster::start(ClusterOptions {
            groups: 4,
            replicas: 3,
            tuning: tuning(),
            delivery_rule: rule,
            ..Default::default()
        })
        .await
        .expect("cluster starts");
        let progress = Arc::new(Progress::default());
        let sent = run_senders(cluster.topology().clone(), 8, 100, 4, seed, progress).await;
        // A client whose reply got lost submits again: every tenth message, at its first
        // destination (a group must answer it from what it remembers, not order it again).
        for m in sent.iter().step_by(10).filter(|m| m.acknowledged) {
            let g = GroupId(m.dests[0]);
            let dests = m.dests.iter().map(|d| GroupId(*d)).collect();
            let msg = McastMessage::new(m.id, dests, vec![0; 16]);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let _ = cluster
                .client(g)
                .expect("client")
                .multicast(&msg, deadline)
                .await;
        }
        // A broken rule may also keep some replica from delivering everything: compare what
        // was delivered once the load is over.
        let _ = wait_converged(&cluster, &sent, Duration::from_secs(20)).await;
        let logs = delivery_logs(&cluster);
        let err =
            check(&sent, &logs).expect_err(&format!("the broken rule {rule:?} must be caught"));
        eprintln!(
            "checker caught {rule:?}:\n{}",
            err.lines().take(3).collect::<Vec<_>>().join("\n")
        );
        cluster.shutdown().await;
        err
    })
    .await
    .expect("test finished within its time limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_rejects_delivery_before_final_timestamp() {
    let err = objection_to(DeliveryRule::EagerLocal, 11).await;
    assert!(
        err.contains("order"),
        "expected an ordering violation, got:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_rejects_a_clock_that_stays_behind_final_timestamps() {
    let err = objection_to(DeliveryRule::NoClockAdvance, 12).await;
    assert!(
        err.contains("order"),
        "expected an ordering violation, got:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_rejects_ties_broken_by_arrival() {
    let err = objection_to(DeliveryRule::ArrivalTieBreak, 13).await;
    assert!(
        err.contains("order"),
        "expected an ordering violation, got:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_rejects_a_duplicate_filter_that_forgets() {
    let err = objection_to(DeliveryRule::NoDuplicateFilter, 14).await;
    assert!(
        err.contains("integrity") && err.contains("already delivered"),
        "expected a message delivered twice, got:\n{err}"
    );
}
