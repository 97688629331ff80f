//! The reliable inter-group channel under leader changes: group 1 sends a numbered stream of
//! messages to group 2 while the leaders of both groups are crashed and restarted (disk
//! storage). Every replica of group 2 must receive each message exactly once, in the order
//! group 1 logged them, and every send group 1 acknowledged must arrive. A second test sends
//! bursts of concurrent messages, so that many transmission batches are in flight at once
//! (the channel is pipelined), and crashes the receiver's leader while group 1 still has a
//! backlog for it.

use dssmr_engine::app::Recorder;
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::ids::GroupId;
use dssmr_engine::node::RaftTuning;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const G1: GroupId = GroupId(1);
const G2: GroupId = GroupId(2);
const MESSAGES: u32 = 300;

fn received(cluster: &LocalCluster, g: GroupId, r: usize) -> Option<Vec<u32>> {
    cluster.node(g, r).map(|n| {
        n.with_app(|app| {
            app.as_any()
                .downcast_ref::<Recorder>()
                .map(|rec| {
                    rec.received()
                        .iter()
                        .map(|(from, p)| {
                            assert_eq!(*from, G1, "only group 1 sends");
                            u32::from_le_bytes(p[..4].try_into().expect("4-byte payload"))
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
    })
}

/// Sends message `seq` through the current leader of group 1, retrying across leader
/// changes. Each attempt carries its own id (`seq * 16 + attempt`), because an attempt that
/// failed may still have been logged. Returns (acknowledged id, every attempted id).
async fn send(cluster: &LocalCluster, seq: u32) -> (Option<u32>, Vec<u32>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempts = Vec::new();
    while Instant::now() < deadline && attempts.len() < 16 {
        if let Some(leader) = cluster.leader_of(G1) {
            let node = cluster.node(G1, leader).expect("leader is running");
            let id = seq * 16 + attempts.len() as u32;
            attempts.push(id);
            if node
                .channel_send(G2, id.to_le_bytes().to_vec())
                .await
                .is_ok()
            {
                return (Some(id), attempts);
            }
        }
        let _ = cluster.wait_for_leaders(Duration::from_secs(10)).await;
    }
    (None, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_delivers_exactly_once_in_order_across_leader_changes() {
    dssmr_engine::telemetry::init_for_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut cluster = LocalCluster::start(ClusterOptions {
            groups: 2,
            replicas: 3,
            data_root: Some(dir.path().to_path_buf()),
            tuning: RaftTuning {
                heartbeat_ms: 50,
                election_min_ms: 300,
                election_max_ms: 600,
                snapshot_every: 100,
            },
            ..Default::default()
        })
        .await
        .expect("cluster starts");

        let mut acknowledged = Vec::new();
        let mut attempted = HashSet::new();
        let mut faults = 0;
        for seq in 0..MESSAGES {
            // Every 60 messages, crash a leader: alternately the sender's and the receiver's.
            if seq > 0 && seq % 60 == 0 {
                let g = if (seq / 60) % 2 == 1 { G1 } else { G2 };
                if let Some(l) = cluster.leader_of(g) {
                    cluster.crash(g, l).await;
                    cluster
                        .wait_for_leaders(Duration::from_secs(30))
                        .await
                        .expect("new leader");
                    cluster.restart(g, l).await.expect("restart");
                    faults += 1;
                }
            }
            let (ack, attempts) = send(&cluster, seq).await;
            attempted.extend(attempts);
            acknowledged.extend(ack);
        }
        assert!(faults >= 3, "only {faults} leader crashes happened");
        assert_eq!(acknowledged.len() as u32, MESSAGES, "every send completes");

        await_received(&cluster, &acknowledged).await;
        let reference = received(&cluster, G2, 0).expect("running");
        for r in 0..3 {
            let got = received(&cluster, G2, r).expect("running");
            assert_eq!(got, reference, "replicas of group 2 disagree");
            let unique: HashSet<u32> = got.iter().copied().collect();
            assert_eq!(unique.len(), got.len(), "replica {r} received a duplicate");
            assert!(
                got.windows(2).all(|w| w[0] < w[1]),
                "replica {r}: not in the order group 1 sent"
            );
            assert!(
                got.iter().all(|id| attempted.contains(id)),
                "replica {r} received something never sent"
            );
            assert!(
                acknowledged.iter().all(|id| unique.contains(id)),
                "replica {r} lost an acknowledged message"
            );
        }
        eprintln!(
            "{} messages sent, {} attempts, {} received, {faults} leader crashes",
            acknowledged.len(),
            attempted.len(),
            reference.len()
        );
        // Group 1's outbox is trimmed once group 2 acknowledged everything.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = cluster.leader_of(G1);
            let empty = leader.is_some_and(|l| {
                cluster
                    .node(G1, l)
                    .is_some_and(|n| n.with_state(|s| s.channel.outboxes().count() == 0))
            });
            if empty {
                break;
            }
            assert!(Instant::now() < deadline, "outbox of group 1 never emptied");
            let mut rx = cluster.node(G1, 0).expect("running").raft().metrics();
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
}

/// Waits until every replica of group 2 received every message in `acknowledged`.
async fn await_received(cluster: &LocalCluster, acknowledged: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = (0..3).all(|r| {
            received(cluster, G2, r).is_some_and(|v| acknowledged.iter().all(|id| v.contains(id)))
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group 2 did not receive everything"
        );
        let mut rx = cluster.node(G2, 0).expect("running").raft().metrics();
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
}

/// One burst: `senders` concurrent senders, each sending `per_sender` messages one after the
/// other. Sender `t`'s message `i` is numbered `burst * 100_000 + t * 1_000 + i`.
async fn burst(
    cluster: &LocalCluster,
    burst: u32,
    senders: u32,
    per_sender: u32,
) -> (Vec<u32>, HashSet<u32>) {
    let runs = (0..senders).map(|t| async move {
        let mut acked = Vec::new();
        let mut attempted = Vec::new();
        for i in 0..per_sender {
            let (ack, attempts) = send(cluster, burst * 100_000 + t * 1_000 + i).await;
            acked.extend(ack);
            attempted.extend(attempts);
        }
        (acked, attempted)
    });
    let mut acknowledged = Vec::new();
    let mut attempted = HashSet::new();
    for (acked, tried) in futures::future::join_all(runs).await {
        acknowledged.extend(acked);
        attempted.extend(tried);
    }
    (acknowledged, attempted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_bursts_arrive_exactly_once_in_order_while_the_receivers_leader_crashes() {
    dssmr_engine::telemetry::init_for_tests();
    const SENDERS: u32 = 64;
    const PER_SENDER: u32 = 40;
    tokio::time::timeout(Duration::from_secs(240), async {
        let mut cluster = LocalCluster::start(ClusterOptions {
            groups: 2,
            replicas: 3,
            ..Default::default()
        })
        .await
        .expect("cluster starts");
        let mut acknowledged = Vec::new();
        let mut attempted = HashSet::new();
        for b in 0..3 {
            let (acked, tried) = burst(&cluster, b, SENDERS, PER_SENDER).await;
            acknowledged.extend(acked);
            attempted.extend(tried);
            if b < 2 {
                // Group 1 may still be transmitting its backlog: the receiver's leader goes.
                let l = cluster.leader_of(G2).expect("group 2 has a leader");
                cluster.crash(G2, l).await;
                cluster
                    .wait_for_leaders(Duration::from_secs(30))
                    .await
                    .expect("new leader");
                cluster.restart(G2, l).await.expect("restart");
            }
        }
        assert_eq!(
            acknowledged.len() as u32,
            3 * SENDERS * PER_SENDER,
            "every send completes"
        );
        await_received(&cluster, &acknowledged).await;
        let reference = received(&cluster, G2, 0).expect("running");
        for r in 0..3 {
            let got = received(&cluster, G2, r).expect("running");
            assert_eq!(got, reference, "replicas of group 2 disagree");
            let unique: HashSet<u32> = got.iter().copied().collect();
            assert_eq!(unique.len(), got.len(), "replica {r} received a duplicate");
            assert!(
                got.iter().all(|id| attempted.contains(id)),
                "replica {r} received something never sent"
            );
        }
        // Each sender's messages were logged by group 1 one after the other: they arrive in
        // that order.
        let mut last: std::collections::HashMap<u32, u32> = Default::default();
        for id in &reference {
            let sender = id / 16 / 1_000;
            let prev = last.insert(sender, *id);
            assert!(
                prev.is_none_or(|p| p < *id),
                "sender {sender}: {id} arrived after {prev:?}"
            );
        }
        eprintln!(
            "{} messages acknowledged, {} received",
            acknowledged.len(),
            reference.len()
        );
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
}
