//! Scale paths other than the one `scale_at_run_time` walks (oracle + kv partitions × 3, on
//! disk, every step through the admin API as the operator takes it):
//! * scaling in and out again (3 → 2 → 3): the removed partition's replicas and data are
//!   gone, and the cluster must go on serving with a partition added afterwards;
//! * growing, then draining into a partition added at run time (2 → 4 → 3, the emptiest
//!   partition being the one added last).
//!
//! Transfers and reads of many keys run throughout; no operation fails and the sum of all
//! keys is kept.

mod common;

use common::kvload::{KvLoad, INITIAL};
use dssmr_api::admin::AdminConnection;
use dssmr_engine::app::kv::Kv;
use dssmr_engine::client::{DestinationPolicy, Mode};
use dssmr_engine::cluster::{engine_apps, LocalCluster};
use dssmr_engine::config::{AppKind, ClusterConfig};
use dssmr_engine::ids::GroupId;
use std::time::{Duration, Instant};

const KEYS: usize = 24;

/// Waits until the oracle reports partition `p` in `state` (bounded).
async fn until_state(admin: &AdminConnection, p: u32, state: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let s = admin.status().await.expect("status");
        let found = s.partitions.iter().find(|q| q.partition == p).cloned();
        if found.as_ref().is_some_and(|q| q.state == state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "p{p} not {state} within {limit:?}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Drains, removes and destroys partition `p` the way the operator does.
async fn scale_in(cluster: &mut LocalCluster, admin: &AdminConnection, load: &KvLoad, p: u32) {
    admin.drain_partition(p).await.expect("drain");
    until_state(admin, p, "drained", Duration::from_secs(60)).await;
    admin.remove_partition(p).await.expect("remove");
    common::kvload::until(
        "no group waits for the removed partition",
        Duration::from_secs(30),
        || {
            cluster
                .running()
                .all(|n| n.with_state(|s| s.skeen.pending_with(GroupId(p))) == 0)
        },
    )
    .await;
    common::kvload::until(
        "the clients stop using the removed partition",
        Duration::from_secs(30),
        || !load.uses(GroupId(p)),
    )
    .await;
    cluster
        .destroy_partition(GroupId(p))
        .await
        .expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_in_then_out_again_keeps_the_cluster_serving() {
    dssmr_engine::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster =
        common::engine::start(engine_apps(std::sync::Arc::new(Kv), 2), 2, dir.path()).await;
    let config = ClusterConfig::from_topology("t", Mode::Dssmr, AppKind::Kv, cluster.topology());
    let admin = AdminConnection::new(&config).unwrap();
    let (p3, members) = cluster.add_partition().await.expect("p3 starts");
    admin.add_partition(p3.0, &members).await.expect("add p3");

    let mut load = KvLoad::start(cluster.topology(), KEYS, 8, 1).await;
    load.progress(50, Duration::from_secs(60)).await;
    scale_in(&mut cluster, &admin, &load, p3.0).await;
    load.progress(50, Duration::from_secs(30)).await;

    // Out again. A user who reuses the number is told the next one (a fresh partition 3
    // would be taken for the old one: the other groups keep channel sequences to and from
    // p3, and before numbers were never reused this wedged the cluster: 0 operations in 30 s).
    let refused = admin
        .add_partition(p3.0, &members)
        .await
        .expect_err("a removed partition's number is never reused");
    assert!(
        refused.to_string().contains("add partition 4"),
        "the refusal names the next number: {refused}"
    );
    let (p4, members) = cluster.add_partition().await.expect("p4 starts");
    assert_eq!(p4, GroupId(4));
    let added = admin.add_partition(p4.0, &members).await.expect("add p4");
    assert_eq!(added.state, "active", "{added:?}");
    load.progress(100, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = admin.status().await.expect("status");
        let held = s
            .partitions
            .iter()
            .find(|q| q.partition == 4)
            .map_or(0, |q| q.variables);
        if held > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no variable reached p4: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.progress(50, Duration::from_secs(30)).await;

    let sum = load.stop_and_sum().await;
    assert_eq!(sum, INITIAL * KEYS as i64);
    assert_eq!(
        load.failures().0,
        0,
        "failed operations: {:?}",
        load.failures()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_moves_variables_into_a_partition_added_at_run_time() {
    dssmr_engine::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster =
        common::engine::start(engine_apps(std::sync::Arc::new(Kv), 2), 2, dir.path()).await;
    let config = ClusterConfig::from_topology("t", Mode::Dssmr, AppKind::Kv, cluster.topology());
    let admin = AdminConnection::new(&config).unwrap();
    let (p3, members) = cluster.add_partition().await.expect("p3 starts");
    admin.add_partition(p3.0, &members).await.expect("add p3");
    // Random destinations spread the keys over every partition.
    let mut load =
        KvLoad::with_policies(cluster.topology(), KEYS, 8, 1, &[DestinationPolicy::Random]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = admin.status().await.expect("status");
        let held = |p: u32| {
            s.partitions
                .iter()
                .find(|q| q.partition == p)
                .map_or(0, |q| q.variables)
        };
        if [1, 2, 3].iter().all(|p| held(*p) >= 2) {
            break;
        }
        assert!(Instant::now() < deadline, "the keys did not spread: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.stop().await;

    // An empty p4, added last, is the emptiest partition: the drain of p3 moves there.
    let (p4, members) = cluster.add_partition().await.expect("p4 starts");
    admin.add_partition(p4.0, &members).await.expect("add p4");
    admin.drain_partition(p3.0).await.expect("drain p3");
    until_state(&admin, p3.0, "drained", Duration::from_secs(30)).await;
    let s = admin.status().await.expect("status");
    let held = |p: u32| {
        s.partitions
            .iter()
            .find(|q| q.partition == p)
            .map_or(0, |q| q.variables)
    };
    assert!(held(p4.0) > 0, "p4 took the drained variables: {s:?}");
    let sum = load.stop_and_sum().await;
    assert_eq!(sum, INITIAL * KEYS as i64);
    assert_eq!(
        load.failures().0,
        0,
        "failed operations: {:?}",
        load.failures()
    );
    cluster.shutdown().await;
}
