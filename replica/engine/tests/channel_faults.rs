//! The reliable inter-group channel under leader changes: group 1 sends a numbered stream of
//! messages to group 2 while the leaders of both groups are crashed and restarted (disk
//! storage). Every replica of group 2 must receive each message exactly once, in the order
//! group 1 logged them, and every send group 1 acknowledged must arrive. A second test sends
//! bursts of concurrent messages, so that many transmission batches are in flight at once
//! (the channel is pipelined), and crashes the receiver's leader while group 1 still has a
//! backlog for it. A third loses the trim group 1's leader proposed for an acknowledgement (a
//! leader change overwrites it) and checks that the outbox is trimmed all the same.

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
                log_keep: 1000,
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

/// The raft metrics of replica `r` of `g`: (last log index, last applied index).
fn log_of(cluster: &LocalCluster, g: GroupId, r: usize) -> (u64, u64) {
    cluster.node(g, r).map_or((0, 0), |n| {
        let m = n.raft().metrics();
        let m = m.borrow();
        (
            m.last_log_index.unwrap_or(0),
            m.last_applied.map_or(0, |l| l.index),
        )
    })
}

/// Waits until `cond` holds, failing with `what` after `limit`.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        // Replicas run on their own runtimes and notify nothing here: look again shortly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Unacknowledged messages in group 1's outbox to group 2, as replica `r` applied it.
fn owed(cluster: &LocalCluster, r: usize) -> usize {
    cluster.node(G1, r).map_or(usize::MAX, |n| {
        n.with_state(|s| s.channel.outbox(G2).map_or(0, |ob| ob.len()))
    })
}

/// Group 1's leader transmits, group 2 acknowledges, the leader proposes the trim, and the
/// trim is lost: the leader was cut off from its group, whose new leader overwrote it. Then
/// the old leader leads again, with nothing more to send. It must propose the trim again:
/// otherwise the replicated outbox keeps acknowledged messages for good (owed, as `Describe`
/// counts them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_lost_in_a_leader_change_is_proposed_again() {
    dssmr_engine::telemetry::init_for_tests();
    const K: u32 = 20;
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut cluster = LocalCluster::start(ClusterOptions {
            groups: 2,
            replicas: 3,
            tuning: RaftTuning {
                heartbeat_ms: 50,
                election_min_ms: 300,
                election_max_ms: 600,
                snapshot_every: 10_000,
                log_keep: 1000,
            },
            ..Default::default()
        })
        .await
        .expect("cluster starts");
        cluster
            .wait_for_leaders(Duration::from_secs(30))
            .await
            .expect("leaders");
        let faults = cluster.faults().clone();
        let g1 = cluster.topology().groups[&G1].clone();
        let g2 = cluster.topology().groups[&G2].clone();
        let l = cluster.leader_of(G1).expect("group 1 has a leader");
        let others: Vec<usize> = (0..3).filter(|r| *r != l).collect();
        let cut_from_g2 = |r: usize| {
            for b in &g2 {
                faults.cut(&g1[r], b);
            }
        };

        // 1. Group 1's leader cannot reach group 2: the messages are logged, not transmitted.
        cut_from_g2(l);
        let node = cluster.node(G1, l).expect("running");
        let ids: Vec<u32> = (0..K).collect();
        for id in &ids {
            node.channel_send(G2, id.to_le_bytes().to_vec())
                .await
                .expect("logged by group 1");
        }
        assert_eq!(owed(&cluster, l), K as usize);

        // 2. It is cut off from its group (and its followers from group 2), then reaches
        //    group 2 again: it transmits, group 2 acknowledges, the trim cannot commit.
        let (appended, _) = log_of(&cluster, G1, l);
        faults.heal();
        faults.isolate(&g1[l], g1.iter().map(String::as_str));
        others.iter().for_each(|r| cut_from_g2(*r));
        await_received(&cluster, &ids).await;
        until(
            "the old leader proposes the trim",
            Duration::from_secs(10),
            || log_of(&cluster, G1, l).0 > appended,
        )
        .await;

        // 3. Its followers elect one of them; healed, the old leader follows it and its
        //    uncommitted trim is overwritten.
        let mut x = None;
        until("a follower is elected", Duration::from_secs(30), || {
            x = others
                .iter()
                .copied()
                .find(|r| cluster.node(G1, *r).is_some_and(|n| n.is_leader()));
            x.is_some()
        })
        .await;
        let x = x.expect("elected");
        let y = others.iter().copied().find(|r| *r != x).expect("third");
        faults.heal();
        others.iter().for_each(|r| cut_from_g2(*r));
        let (x_log, _) = log_of(&cluster, G1, x);
        until(
            "the old leader applies the new leader's log",
            Duration::from_secs(30),
            || log_of(&cluster, G1, l).1 >= x_log,
        )
        .await;
        assert_eq!(owed(&cluster, l), K as usize, "the trim was lost");

        // 4. The old leader leads again: the new one is cut off, the third restarts empty
        //    (it can vote, not win).
        faults.isolate(&g1[x], g1.iter().map(String::as_str));
        cluster.crash(G1, y).await;
        cluster.restart(G1, y).await.expect("restart");
        until(
            "the old leader leads again",
            Duration::from_secs(30),
            || cluster.node(G1, l).is_some_and(|n| n.is_leader()),
        )
        .await;
        faults.heal();

        // 5. Nothing more is sent: the acknowledged messages must be trimmed all the same.
        let deadline = Instant::now() + Duration::from_secs(15);
        while owed(&cluster, l) > 0 {
            assert!(
                Instant::now() < deadline,
                "group 1's outbox still holds {} messages group 2 acknowledged",
                owed(&cluster, l)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
}
