//! Scaling a running DS-SMR cluster without restarting anything (oracle + 2 kv partitions × 3,
//! on disk): a third partition is started and added through the admin API with its members;
//! the running replicas and the client proxies, all started before it, learn it from the
//! oracle, and the proxies' commands reach it (variables move there). Then it is drained and
//! removed: every replica and proxy drops it, its replicas are stopped, and the load goes on.
//! Transfers between keys run throughout; no operation fails and the sum of all keys is kept.

mod common;

use dssmr_api::admin::AdminConnection;
use dssmr_engine::app::kv::{kv_var, Kv, KvCommand, KvReply};
use dssmr_engine::client::proxy::ProxyStats;
use dssmr_engine::client::{
    Connections, DestinationPolicy, LocationCache, Mode, Proxy, ProxyConfig,
};
use dssmr_engine::cluster::engine_apps;
use dssmr_engine::config::{AppKind, ClusterConfig};
use dssmr_engine::ids::GroupId;
use dssmr_engine::stats::{CommandKind, CommandOutcome};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: usize = 40;
const INITIAL: i64 = 100;
const P3: GroupId = GroupId(3);

fn proxy(conns: &Arc<Connections>, cache: &Arc<LocationCache>) -> Proxy<Kv> {
    Proxy::new(
        Arc::new(Kv),
        ProxyConfig {
            mode: Mode::Dssmr,
            destination: DestinationPolicy::Random,
            ..ProxyConfig::default()
        },
        conns.clone(),
        cache.clone(),
        Arc::new(ProxyStats::default()),
    )
    .expect("proxy")
}

/// Polls `cond` every 50 ms until it holds, failing with `what` after `limit`.
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_added_and_removed_at_run_time_is_used_without_restarts() {
    dssmr_engine::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = common::engine::start(engine_apps(Arc::new(Kv), 2), 2, dir.path()).await;
    let config = ClusterConfig::from_topology("t", Mode::Dssmr, AppKind::Kv, cluster.topology());
    let admin = AdminConnection::new(&config).unwrap();
    let conns = Arc::new(Connections::new(cluster.topology()).unwrap());
    let cache = Arc::new(LocationCache::default());
    let p = proxy(&conns, &cache);
    for i in 0..KEYS {
        p.create(kv_var(&format!("k{i}")), &INITIAL)
            .await
            .expect("create");
    }

    // Clients transfer between random keys throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..3u64)
        .map(|c| {
            let p = proxy(&conns, &cache);
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = c + 1;
                while !stop.load(Ordering::Relaxed) {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let a = (i >> 33) as usize % KEYS;
                    let b = (a + 1 + (i >> 13) as usize % (KEYS - 1)) % KEYS;
                    let cmd = KvCommand::Transfer {
                        from: format!("k{a}"),
                        to: format!("k{b}"),
                        amount: 1,
                    };
                    match p.access(&cmd).await {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(error = %e, "transfer failed");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    let progress = |n: u64| {
        let target = done.load(Ordering::Relaxed) + n;
        let done = done.clone();
        move || done.load(Ordering::Relaxed) >= target
    };
    until("load runs", Duration::from_secs(30), progress(50)).await;

    // Scale out: p3 starts, then the oracle adds it with its members.
    let (g, members) = cluster.add_partition().await.expect("p3 starts");
    assert_eq!(g, P3);
    let added = admin.add_partition(3, &members).await.expect("add p3");
    assert_eq!(added.state, "active", "{added:?}");
    let old: Vec<(GroupId, usize)> = [GroupId(0), GroupId(1), GroupId(2)]
        .into_iter()
        .flat_map(|g| (0..3).map(move |r| (g, r)))
        .collect();
    until(
        "every replica started before p3 knows it",
        Duration::from_secs(20),
        || {
            old.iter().all(|(g, r)| {
                cluster
                    .node(*g, *r)
                    .is_some_and(|n| n.live_topology().contains(P3))
            })
        },
    )
    .await;
    until("the proxies know p3", Duration::from_secs(20), || {
        conns.partitions().contains(&P3)
    })
    .await;
    let executed_at_p3 = |cluster: &dssmr_engine::cluster::LocalCluster| -> u64 {
        (0..3)
            .filter_map(|r| cluster.node(P3, r))
            .map(|n| {
                n.with_app(|a| {
                    a.stats()
                        .commands
                        .get(CommandKind::Access, CommandOutcome::Executed)
                })
            })
            .max()
            .unwrap_or(0)
    };
    until(
        "the proxies started before p3 run commands there",
        Duration::from_secs(60),
        || executed_at_p3(&cluster) >= 20,
    )
    .await;

    // Scale in: drain p3 under load, remove it, stop its replicas.
    admin.drain_partition(3).await.expect("drain p3");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = admin.status().await.expect("status");
        let p3 = s.partitions.iter().find(|p| p.partition == 3).cloned();
        if p3.as_ref().is_some_and(|p| p.state == "drained") {
            break;
        }
        assert!(Instant::now() < deadline, "p3 not drained: {p3:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.remove_partition(3).await.expect("remove p3");
    // Asked again (an operator whose reconcile was cut after the first answer): already done.
    admin
        .remove_partition(3)
        .await
        .expect("removing a removed partition again is not an error");
    until("every replica drops p3", Duration::from_secs(20), || {
        old.iter().all(|(g, r)| {
            cluster
                .node(*g, *r)
                .is_some_and(|n| !n.live_topology().contains(P3))
        })
    })
    .await;
    until("the proxies drop p3", Duration::from_secs(20), || {
        !conns.partitions().contains(&P3)
    })
    .await;
    // p3 stops only once no group holds a message addressed to it any more (one accepted
    // just before the others learned of the removal needs p3's timestamp).
    until("no group waits for p3", Duration::from_secs(30), || {
        cluster
            .running()
            .all(|n| n.with_state(|s| s.skeen.pending_with(P3)) == 0)
    })
    .await;
    for r in 0..3 {
        cluster.crash(P3, r).await;
    }
    until(
        "the load goes on without p3",
        Duration::from_secs(30),
        progress(100),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "operations failed");

    // Every value survived the moves into p3 and out of it.
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    let reply = p
        .access(&KvCommand::ReadMany { keys })
        .await
        .expect("read all");
    let KvReply::Values(values) = reply else {
        panic!("unexpected reply {reply:?}")
    };
    assert_eq!(values.iter().sum::<i64>(), INITIAL * KEYS as i64);
    cluster.shutdown().await;
}
