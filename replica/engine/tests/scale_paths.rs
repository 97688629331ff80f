//! Scale paths other than the one `scale_at_run_time` walks (oracle + kv partitions × 3, on
//! disk, every step through the admin API as the operator takes it):
//! * scaling in and out again (3 → 2 → 3): the removed partition's replicas and data are
//!   gone, and the cluster must go on serving with a partition added afterwards — under the
//!   next number, a removed one being refused;
//! * growing, then draining into a partition added at run time (2 → 4 → 3, the emptiest
//!   partition being the one added last).
//!
//! Transfers and reads of many keys run throughout; no operation fails and the sum of all
//! keys is kept.

mod common;

use common::kvload::{KvLoad, INITIAL};
use common::scaling::{held, retire, until_state, until_status};
use dssmr_api::admin::AdminConnection;
use dssmr_engine::app::kv::Kv;
use dssmr_engine::client::{DestinationPolicy, Mode};
use dssmr_engine::cluster::{engine_apps, LocalCluster};
use dssmr_engine::config::{AppKind, ClusterConfig};
use dssmr_engine::ids::GroupId;
use std::sync::Arc;
use std::time::Duration;

const KEYS: usize = 24;
const LIMIT: Duration = Duration::from_secs(60);

/// An oracle and 2 kv partitions on disk under `dir`, and p3 started and added at run time.
async fn grown_to_three(dir: &std::path::Path) -> (LocalCluster, AdminConnection, GroupId) {
    let mut cluster = common::engine::start(engine_apps(Arc::new(Kv), 2), 2, dir).await;
    let config = ClusterConfig::from_topology("t", Mode::Dssmr, AppKind::Kv, cluster.topology());
    let admin = AdminConnection::new(&config).unwrap();
    let (p3, members) = cluster.add_partition().await.expect("p3 starts");
    admin.add_partition(p3.0, &members).await.expect("add p3");
    (cluster, admin, p3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_in_then_out_again_keeps_the_cluster_serving() {
    dssmr_engine::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, admin, p3) = grown_to_three(dir.path()).await;
    let mut load = KvLoad::start(cluster.topology(), KEYS, 8, 1).await;
    load.progress(50, LIMIT).await;

    // In: p3 drained, removed, its replicas and data gone.
    admin.drain_partition(p3.0).await.expect("drain");
    until_state(&admin, p3.0, "drained", LIMIT).await;
    admin.remove_partition(p3.0).await.expect("remove");
    retire(&mut cluster, &load, p3, LIMIT).await;
    load.progress(50, Duration::from_secs(30)).await;

    // Out again. A user who reuses the number is told the next one (a fresh partition 3
    // would be taken for the old one: the other groups keep channel sequences to and from
    // p3, and before numbers were never reused this wedged the cluster: 42 of 100
    // operations in 30 s, then only timeouts).
    let refused = admin
        .add_partition(p3.0, &["127.0.0.1:9".to_string()])
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
    until_status(&admin, "a variable reaches p4", LIMIT, |s| held(s, 4) > 0).await;
    load.progress(50, Duration::from_secs(30)).await;

    let sum = load.stop_and_sum().await;
    assert_eq!(sum, INITIAL * KEYS as i64);
    assert_eq!(load.failures().0, 0, "failed: {:?}", load.failures());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_moves_variables_into_a_partition_added_at_run_time() {
    dssmr_engine::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, admin, p3) = grown_to_three(dir.path()).await;
    // Random destinations spread the keys over every partition.
    let mut load =
        KvLoad::with_policies(cluster.topology(), KEYS, 8, 1, &[DestinationPolicy::Random]).await;
    until_status(&admin, "the keys spread over p1, p2, p3", LIMIT, |s| {
        [1, 2, 3].iter().all(|p| held(s, *p) >= 2)
    })
    .await;
    load.stop().await;

    // An empty p4, added last, is the emptiest partition: the drain of p3 moves there
    // (before the drainer used the live topology: "p3 not drained within 30s: draining,
    // 10 variables").
    let (p4, members) = cluster.add_partition().await.expect("p4 starts");
    admin.add_partition(p4.0, &members).await.expect("add p4");
    admin.drain_partition(p3.0).await.expect("drain p3");
    until_state(&admin, p3.0, "drained", Duration::from_secs(30)).await;
    let s = admin.status().await.expect("status");
    assert!(held(&s, p4.0) > 0, "p4 took the drained variables: {s:?}");
    let sum = load.stop_and_sum().await;
    assert_eq!(sum, INITIAL * KEYS as i64);
    assert_eq!(load.failures().0, 0, "failed: {:?}", load.failures());
    cluster.shutdown().await;
}
