//! A persistent replica killed and restarted recovers its log.
//!
//! One group of three replicas with disk storage (snapshots every 50 entries) takes 200
//! single-group multicasts; then
//! * (a) a follower is crashed, 100 more messages are delivered without it, the leader snapshots
//!   and purges its log (so the follower can only catch up through a snapshot), and the
//!   restarted follower must end up with exactly the leader's delivery sequence;
//! * (b) every replica purges its log up to its snapshot and takes a few more messages, then all
//!   three are crashed at once: the on-disk log must hold the entries after the purge point, and
//!   after restarting every replica recovers (from snapshot + log) exactly the delivery sequence
//!   it had before the crash — same ids, same timestamps, same order — and new multicasts still
//!   complete.

use dssmr_engine::app::Recorder;
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::group::log_store::LogStore;
use dssmr_engine::group::types::{Entry, Op};
use dssmr_engine::ids::{GroupId, MsgId};
use dssmr_engine::multicast::McastMessage;
use dssmr_engine::node::{GroupNode, RaftTuning};
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, EntryPayload, RaftLogReader, RaftMetrics};
use std::path::Path;
use std::time::{Duration, Instant};

const TEST_LIMIT: Duration = Duration::from_secs(240);
/// Bound of every condition the test waits for.
const WAIT: Duration = Duration::from_secs(60);
const G1: GroupId = GroupId(1);
const SENDER: u64 = 0xd15c;

type Delivered = Vec<(MsgId, u64)>;

fn tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        snapshot_every: 50,
        log_keep: 1000,
    }
}

fn delivered(node: &GroupNode) -> Delivered {
    node.with_app(|app| {
        app.as_any()
            .downcast_ref::<Recorder>()
            .expect("the cluster runs Recorder")
            .delivered()
            .to_vec()
    })
}

fn metrics(node: &GroupNode) -> RaftMetrics<u64, BasicNode> {
    node.raft().metrics().borrow().clone()
}

fn node(cluster: &LocalCluster, r: usize) -> &GroupNode {
    cluster
        .node(G1, r)
        .unwrap_or_else(|| panic!("g1/r{r} is running"))
}

fn leader(cluster: &LocalCluster) -> usize {
    cluster.leader_of(G1).expect("group 1 has a leader")
}

/// Waits until `cond` holds, re-checking whenever the Raft metrics of any running replica
/// change (and at least every 50 ms); false if it still fails after `timeout`.
async fn wait_until(
    cluster: &LocalCluster,
    timeout: Duration,
    mut cond: impl FnMut(&LocalCluster) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond(cluster) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        let mut watches: Vec<_> = cluster.running().map(|n| n.raft().metrics()).collect();
        if watches.is_empty() {
            // Nothing runs, so nothing can change.
            return false;
        }
        let changed =
            futures::future::select_all(watches.iter_mut().map(|rx| Box::pin(rx.changed())));
        let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
    }
}

/// [`wait_until`] that fails the test, naming `what`, when the deadline passes.
async fn wait_for(cluster: &LocalCluster, what: &str, cond: impl FnMut(&LocalCluster) -> bool) {
    assert!(
        wait_until(cluster, WAIT, cond).await,
        "timed out after {WAIT:?} waiting until {what}"
    );
}

/// Multicasts messages `seqs` to group 1, one after the other; returns (id, final ts) in order.
async fn send(cluster: &LocalCluster, seqs: std::ops::Range<u64>) -> Delivered {
    let client = cluster.client(G1).expect("client");
    let mut acked = Vec::new();
    for seq in seqs {
        let id = MsgId {
            sender: SENDER,
            seq,
        };
        let msg = McastMessage::new(id, vec![G1], seq.to_le_bytes().to_vec());
        let ts = client
            .multicast(&msg, Instant::now() + Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("multicast {seq} failed: {e}"));
        acked.push((id, ts));
    }
    acked
}

/// Waits until every running replica delivered `n` messages and applied the whole log.
async fn wait_quiescent(cluster: &LocalCluster, n: usize) {
    wait_for(
        cluster,
        &format!("every replica delivered {n} messages"),
        |c| c.running().all(|node| delivered(node).len() >= n),
    )
    .await;
    wait_for(
        cluster,
        "every replica applied the leader's whole log",
        |c| {
            let Some(l) = c.leader_of(G1) else {
                return false;
            };
            let last = metrics(node(c, l)).last_log_index;
            c.running().all(|node| {
                let m = metrics(node);
                m.last_log_index == last && m.last_applied.map(|id| id.index) == last
            })
        },
    )
    .await;
}

/// Has replica `r` snapshot its state and purge its log up to the snapshot; returns the purge
/// index. Retriggers until done, as openraft may skip a trigger while it is busy.
async fn snapshot_and_purge(cluster: &LocalCluster, r: usize) -> u64 {
    let applied = metrics(node(cluster, r))
        .last_applied
        .expect("applied something")
        .index;
    let deadline = Instant::now() + WAIT;
    loop {
        node(cluster, r)
            .raft()
            .trigger()
            .snapshot()
            .await
            .expect("trigger snapshot");
        let snapshot_at = |c: &LocalCluster| metrics(node(c, r)).snapshot.map(|s| s.index);
        if wait_until(cluster, Duration::from_secs(2), |c| {
            snapshot_at(c) >= Some(applied)
        })
        .await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "r{r} built no snapshot up to {applied}"
        );
    }
    let upto = metrics(node(cluster, r)).snapshot.expect("snapshot").index;
    loop {
        node(cluster, r)
            .raft()
            .trigger()
            .purge_log(upto)
            .await
            .expect("trigger purge");
        if wait_until(cluster, Duration::from_secs(2), |c| {
            metrics(node(c, r)).purged.map(|p| p.index) >= Some(upto)
        })
        .await
        {
            return upto;
        }
        assert!(
            Instant::now() < deadline,
            "r{r} did not purge its log up to {upto}"
        );
    }
}

/// Reads the log a (stopped) replica left in `dir`: (last purged index, entries held).
async fn read_disk_log(dir: &Path) -> (Option<u64>, Vec<Entry>) {
    let mut log = LogStore::open(dir).expect("open the on-disk log");
    let state = log.get_log_state().await.expect("log state");
    let entries = log.try_get_log_entries(0..).await.expect("read entries");
    assert_eq!(log.len(), entries.len());
    (state.last_purged_log_id.map(|p| p.index), entries)
}

/// Ids of the multicast messages started by `entries`.
fn started(entries: &[Entry]) -> Vec<MsgId> {
    entries
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Normal(req) => Some(&req.ops),
            _ => None,
        })
        .flatten()
        .filter_map(|op| match op {
            Op::Start(m) => Some(m.id),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_replicas_recover_their_log_after_crashes() {
    dssmr_engine::telemetry::init_for_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let began = Instant::now();
    tokio::time::timeout(TEST_LIMIT, async {
        let mut cluster = LocalCluster::start(ClusterOptions {
            groups: 1,
            replicas: 3,
            data_root: Some(dir.path().to_path_buf()),
            tuning: tuning(),
            ..Default::default()
        })
        .await
        .expect("cluster starts");

        // --- 200 messages, delivered identically everywhere; snapshots are taken on the way.
        let mut acked = send(&cluster, 0..200).await;
        wait_quiescent(&cluster, 200).await;
        for r in 0..3 {
            assert_eq!(
                delivered(node(&cluster, r)),
                acked,
                "r{r} delivered what was acked"
            );
        }
        wait_for(&cluster, "every replica took a snapshot", |c| {
            c.running().all(|n| metrics(n).snapshot.is_some())
        })
        .await;

        // --- (a) a follower misses 100 messages and a log purge, then comes back.
        let l = leader(&cluster);
        let f = (l + 1) % 3;
        cluster.crash(G1, f).await;
        acked.extend(send(&cluster, 200..300).await);
        wait_quiescent(&cluster, 300).await;
        // Both running replicas purge, so whichever leads after the restart (a restarted
        // replica may trigger an election) can only catch r{f} up through a snapshot.
        let mut purged = u64::MAX;
        for r in (0..3).filter(|r| *r != f) {
            purged = purged.min(snapshot_and_purge(&cluster, r).await);
        }
        eprintln!("(a) r{l} and the other follower purged up to {purged} while r{f} was down");
        cluster.restart(G1, f).await.expect("restart the follower");
        wait_for(&cluster, &format!("r{f} delivered all 300 messages"), |c| {
            c.node(G1, f).is_some_and(|n| delivered(n).len() >= 300)
        })
        .await;
        let leader_seq = delivered(node(&cluster, leader(&cluster)));
        assert_eq!(leader_seq, acked, "the leader delivered what was acked");
        assert_eq!(
            delivered(node(&cluster, f)),
            leader_seq,
            "the restarted follower has the leader's sequence"
        );
        // The restored state can be visible a moment before openraft publishes the installed
        // snapshot in its metrics: wait for the metric rather than reading it once.
        wait_for(
            &cluster,
            &format!("r{f} caught up past the purge point ({purged}) through a snapshot"),
            |c| {
                c.node(G1, f)
                    .is_some_and(|n| metrics(n).snapshot.is_some_and(|s| s.index >= purged))
            },
        )
        .await;

        // --- (b) every replica purges its log, takes a few more messages, then all crash.
        wait_quiescent(&cluster, 300).await;
        let mut purged_at = Vec::new();
        for r in 0..3 {
            purged_at.push(snapshot_and_purge(&cluster, r).await);
        }
        acked.extend(send(&cluster, 300..320).await);
        wait_quiescent(&cluster, 320).await;
        let before: Vec<Delivered> = (0..3).map(|r| delivered(node(&cluster, r))).collect();
        let last_log: Vec<Option<u64>> = (0..3)
            .map(|r| metrics(node(&cluster, r)).last_log_index)
            .collect();
        for (r, seq) in before.iter().enumerate() {
            assert_eq!(
                seq, &acked,
                "r{r} delivered what was acked before the crash"
            );
        }
        for r in 0..3 {
            cluster.crash(G1, r).await;
        }
        assert_eq!(cluster.running().count(), 0, "every replica is down");

        for r in 0..3 {
            let data = dir.path().join(format!("g1-r{r}"));
            let (disk_purged, entries) = read_disk_log(&data).await;
            assert!(
                disk_purged >= Some(purged_at[r]),
                "r{r}: on-disk purge point {disk_purged:?} is behind {}",
                purged_at[r]
            );
            assert!(!entries.is_empty(), "r{r}: the on-disk log holds entries");
            assert_eq!(
                entries.last().map(|e| e.log_id.index),
                last_log[r],
                "r{r}: the on-disk log ends where the replica's log ended"
            );
            let ids = started(&entries);
            let tail: Vec<MsgId> = acked[300..].iter().map(|(id, _)| *id).collect();
            assert!(
                ids.ends_with(&tail),
                "r{r}: the on-disk log holds the 20 messages sent after the purge"
            );
            assert!(
                data.join("snapshot.bin").exists(),
                "r{r}: a snapshot is on disk"
            );
            eprintln!(
                "(b) r{r}: on disk: purged up to {disk_purged:?}, {} entries up to {:?}",
                entries.len(),
                last_log[r]
            );
        }

        for r in 0..3 {
            cluster.restart(G1, r).await.expect("restart");
        }
        cluster
            .wait_for_leaders(WAIT)
            .await
            .expect("a leader is elected after the restart");
        wait_for(&cluster, "every replica recovered 320 deliveries", |c| {
            c.running().count() == 3 && c.running().all(|n| delivered(n).len() >= 320)
        })
        .await;
        for (r, seq) in before.iter().enumerate() {
            assert_eq!(
                &delivered(node(&cluster, r)),
                seq,
                "r{r} recovered its delivery sequence"
            );
        }

        // --- the recovered group still works.
        acked.extend(send(&cluster, 320..340).await);
        wait_quiescent(&cluster, 340).await;
        for r in 0..3 {
            assert_eq!(
                delivered(node(&cluster, r)),
                acked,
                "r{r} delivered every message, old and new"
            );
        }
        cluster.shutdown().await;
    })
    .await
    .expect("test finished within its time limit");
    eprintln!("persistence test took {:?}", began.elapsed());
}
