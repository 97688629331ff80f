//! Atomic multicast when groups are cut off from each other while clients still reach every
//! group, with the client proxy's pattern: a message is submitted at one destination only,
//! and a sender gives up on a message and moves on.
//!
//! The case that once wedged a group for good: group B orders m0 (to A and B) while cut off
//! from A, its sender gives up and sends thousands more messages to A alone; once the cut
//! heals, B's announce of m0 must still get m0 ordered at A (A never saw it), or B waits for
//! A's timestamp for ever and never delivers again.

mod common;

use common::engine::wait_quiescent;
use common::{
    check, delivery_logs, eventually, run_proxy_senders, wait_converged, Progress, ProxyPattern,
};
use dssmr_check::multicast::Multicast;
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::ids::{GroupId, MsgId};
use dssmr_engine::multicast::skeen::Status;
use dssmr_engine::multicast::McastMessage;
use dssmr_engine::node::RaftTuning;
use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TEST_LIMIT: Duration = Duration::from_secs(240);
/// More messages of one sender than any count-based duplicate filter would remember.
const LATER_MESSAGES: u64 = 5000;
/// The sender's messages in flight at a time.
const IN_FLIGHT: u64 = 32;

fn tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        snapshot_every: 1000,
        log_keep: 1000,
    }
}

/// Cuts every replica of `a` off every replica of `b` (clients still reach both).
fn cut_groups(cluster: &LocalCluster, a: GroupId, b: GroupId) {
    let topology = cluster.topology();
    for x in &topology.groups[&a] {
        for y in &topology.groups[&b] {
            cluster.faults().cut(x, y);
        }
    }
}

/// Waits until every running replica of `g` holds `id` in `want` state.
async fn wait_status(
    cluster: &LocalCluster,
    g: GroupId,
    id: MsgId,
    want: fn(Status) -> bool,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let all = cluster
            .running()
            .filter(|n| n.group() == g)
            .all(|n| n.with_state(|s| want(s.skeen.status(id))));
        if all {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        let mut rx = match cluster.running().find(|n| n.group() == g) {
            Some(n) => n.raft().metrics(),
            None => return false,
        };
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_cut_off_while_its_peers_move_on_is_never_left_behind() {
    dssmr_engine::telemetry::init_for_tests();
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = LocalCluster::start(ClusterOptions {
            groups: 2,
            replicas: 3,
            tuning: tuning(),
            ..Default::default()
        })
        .await
        .expect("cluster starts");
        let groups = cluster.groups();
        let (a, b) = (groups[0], groups[1]);
        let (client_a, client_b) = (
            cluster.client(a).expect("client"),
            cluster.client(b).expect("client"),
        );
        let sender = 0x5eed;
        let mut sent = Vec::new();

        // m0, to A and B, submitted at B alone while B cannot reach A: B orders it and waits.
        cut_groups(&cluster, a, b);
        let m0 = McastMessage::new(MsgId { sender, seq: 0 }, vec![a, b], b"m0".to_vec());
        let gave_up = client_b
            .multicast(&m0, Instant::now() + Duration::from_millis(1500))
            .await;
        assert!(gave_up.is_err(), "m0 cannot be delivered across the cut");
        assert!(
            wait_status(&cluster, b, m0.id, |s| matches!(s, Status::Tentative(_)), Duration::from_secs(10)).await,
            "B holds m0 tentative"
        );
        sent.push(Multicast {
            id: m0.id,
            dests: vec![a.0, b.0],
            acknowledged: false,
        });

        // The sender gives up on m0 and sends thousands of messages to A alone, a window at
        // a time, each saying that everything below the window is done with.
        for window in (1..=LATER_MESSAGES).step_by(IN_FLIGHT as usize) {
            let msgs: Vec<McastMessage> = (window..(window + IN_FLIGHT).min(LATER_MESSAGES + 1))
                .map(|seq| {
                    McastMessage::new(MsgId { sender, seq }, vec![a], vec![1; 8])
                        .with_done_below(window)
                })
                .collect();
            let results: Vec<_> = stream::iter(msgs.iter())
                .map(|m| client_a.multicast(m, Instant::now() + Duration::from_secs(20)))
                .buffer_unordered(IN_FLIGHT as usize)
                .collect()
                .await;
            for (m, r) in msgs.iter().zip(&results) {
                assert!(r.is_ok(), "message {} to A alone: {r:?}", m.id);
            }
            sent.extend(msgs.iter().map(|m| Multicast {
                id: m.id,
                dests: vec![a.0],
                acknowledged: true,
            }));
        }

        // The cut heals: B's announce of m0 reaches A, which must order it.
        cluster.faults().heal();
        let after = McastMessage::new(
            MsgId {
                sender,
                seq: LATER_MESSAGES + 1,
            },
            vec![b],
            b"after".to_vec(),
        )
        .with_done_below(LATER_MESSAGES + 1);
        let delivered = client_b
            .multicast(&after, Instant::now() + Duration::from_secs(30))
            .await;
        assert!(
            delivered.is_ok(),
            "B delivers nothing after the cut healed (left waiting for A's timestamp of m0): {delivered:?}"
        );
        sent.push(Multicast {
            id: after.id,
            dests: vec![b.0],
            acknowledged: true,
        });
        for g in [a, b] {
            assert!(
                wait_status(&cluster, g, m0.id, |s| matches!(s, Status::Delivered(_) | Status::Forgotten), Duration::from_secs(20)).await,
                "m0 delivered at every replica of {g}"
            );
        }
        // m0 counts as acknowledged now: every destination delivered it.
        sent[0].acknowledged = true;
        assert!(wait_converged(&cluster, &sent, Duration::from_secs(30)).await);
        let report = check(&sent, &delivery_logs(&cluster))
            .unwrap_or_else(|v| panic!("violations:\n{v}"));
        eprintln!(
            "checked {} messages, {} replicas, {} deliveries",
            report.messages, report.replicas, report.deliveries
        );
        // Bounded state: what the groups remember of delivered messages and what the leaders
        // keep of messages they exchanged timestamps for shrinks once all is delivered
        // (watermarks travel every 0.5 s, leader bookkeeping is swept every 5 s).
        let bounded = eventually(Duration::from_secs(20), || {
            cluster.running().all(|n| {
                n.multicast_bookkeeping() == 0 && n.with_state(|s| s.skeen.remembered()) < 64
            })
        })
        .await;
        let left: Vec<(GroupId, usize, usize)> = cluster
            .running()
            .map(|n| {
                let remembered = n.with_state(|s| s.skeen.remembered());
                (n.group(), n.multicast_bookkeeping(), remembered)
            })
            .collect();
        assert!(
            bounded,
            "(group, leader bookkeeping, delivered messages remembered) per replica: {left:?}"
        );
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
}

/// Several faults at once, round after round, each round waiting for the senders to make
/// progress first: two groups cut off from each other (clients still reach both) while the
/// leader of a third group crashes; then the cut heals and the leader restarts. Returns what
/// happened, one line per fault.
async fn inject_faults_at_once(
    cluster: &mut LocalCluster,
    progress: &Progress,
    rounds: usize,
    seed: u64,
) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let groups = cluster.groups();
    let mut log = Vec::new();
    for round in 0..rounds {
        if !progress.advance(200, Duration::from_secs(60)).await {
            log.push(format!("round {round}: no progress; faults stop"));
            break;
        }
        let picked: Vec<GroupId> = groups.choose_multiple(&mut rng, 3).copied().collect();
        let (a, b, c) = (picked[0], picked[1], picked[2]);
        cut_groups(cluster, a, b);
        log.push(format!("round {round}: cut {a} off {b}"));
        let crashed = cluster.leader_of(c);
        if let Some(leader) = crashed {
            cluster.crash(c, leader).await;
            log.push(format!("round {round}: crashed leader {c}/r{leader}"));
        }
        // The others go on meanwhile.
        let _ = progress.advance(300, Duration::from_secs(30)).await;
        cluster.faults().heal();
        if let Some(leader) = crashed {
            cluster.restart(c, leader).await.expect("restart");
        }
        cluster
            .wait_for_leaders(Duration::from_secs(30))
            .await
            .expect("every group has a leader again");
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_pattern_survives_groups_cut_off_from_each_other_and_crashes_at_once() {
    dssmr_engine::telemetry::init_for_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = 16;
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
        let senders = tokio::spawn(run_proxy_senders(
            cluster.topology().clone(),
            ProxyPattern {
                senders: 3,
                // More than any count-based duplicate filter remembers per sender.
                per_sender: 4500,
                window: 16,
                max_dests: 3,
                patience: Duration::from_secs(2),
                seed,
            },
            progress.clone(),
        ));
        let faults = inject_faults_at_once(&mut cluster, &progress, 4, seed).await;
        let sent = senders.await.expect("senders");
        eprintln!("faults (seed {seed}):\n  {}", faults.join("\n  "));
        let injected = faults
            .iter()
            .filter(|f| f.contains("cut") || f.contains("crashed"))
            .count();
        assert!(injected >= 6, "too few faults happened: {faults:?}");
        let acked = sent.iter().filter(|m| m.acknowledged).count();
        let multi = sent.iter().filter(|m| m.dests.len() > 1).count();
        eprintln!(
            "{} messages sent ({multi} to several groups), {acked} acknowledged where submitted",
            sent.len()
        );
        assert!(
            wait_quiescent(&cluster, Duration::from_secs(60)).await,
            "some group holds a message pending for good"
        );
        // Every message ordered anywhere was delivered at all its destinations: the checker
        // applies validity to those too.
        let logs = delivery_logs(&cluster);
        let delivered: std::collections::HashSet<MsgId> = logs
            .iter()
            .flat_map(|l| l.delivered.iter().copied())
            .collect();
        let sent: Vec<Multicast<MsgId>> = sent
            .into_iter()
            .map(|m| Multicast {
                acknowledged: m.acknowledged || delivered.contains(&m.id),
                ..m
            })
            .collect();
        assert!(wait_converged(&cluster, &sent, Duration::from_secs(30)).await);
        let report = check(&sent, &delivery_logs(&cluster))
            .unwrap_or_else(|v| panic!("violations (seed {seed}):\n{v}"));
        eprintln!(
            "checked {} messages, {} replicas, {} deliveries",
            report.messages, report.replicas, report.deliveries
        );
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
}
