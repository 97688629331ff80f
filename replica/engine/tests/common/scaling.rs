//! Scale steps as the operator takes them, for the scaling tests: waiting for the oracle to
//! report a partition's state or its variables, and retiring a removed partition once
//! nothing needs it any more (its replicas stopped, their data deleted).

use super::kvload::{until, KvLoad};
use dssmr_api::admin::AdminConnection;
use dssmr_api::proto::ClusterStatus;
use dssmr_engine::cluster::LocalCluster;
use dssmr_engine::ids::GroupId;
use std::time::{Duration, Instant};

/// Variables the oracle's `status` places in partition `p`.
pub fn held(status: &ClusterStatus, p: u32) -> u64 {
    status
        .partitions
        .iter()
        .find(|q| q.partition == p)
        .map_or(0, |q| q.variables)
}

/// Polls the oracle's status until `cond` holds of it, failing with `what` after `limit`.
pub async fn until_status(
    admin: &AdminConnection,
    what: &str,
    limit: Duration,
    cond: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let deadline = Instant::now() + limit;
    loop {
        let s = admin.status().await.expect("status");
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the oracle reports partition `p` in `state`.
pub async fn until_state(admin: &AdminConnection, p: u32, state: &str, limit: Duration) {
    until_status(admin, &format!("p{p} {state}"), limit, |s| {
        s.partitions
            .iter()
            .any(|q| q.partition == p && q.state == state)
    })
    .await;
}

/// Stops and deletes the replicas of the removed partition `p` once no group holds a
/// message naming it, the clients of `load` stopped using it and it answered every call
/// they made (refused: it was removed), as an operator deletes a removed partition's pods.
pub async fn retire(cluster: &mut LocalCluster, load: &KvLoad, p: GroupId, limit: Duration) {
    until("no group waits for the removed partition", limit, || {
        cluster.running().all(|n| {
            let own = n.group() == p;
            n.with_state(|s| s.skeen.pending_with(p) == 0 && (!own || s.app.stats().queued == 0))
        })
    })
    .await;
    until(
        "the clients stop using the removed partition",
        limit,
        || !load.uses(p),
    )
    .await;
    until("the removed partition answered its calls", limit, || {
        cluster
            .running()
            .filter(|n| n.group() == p)
            .all(|n| n.stream_calls().held() == 0)
    })
    .await;
    cluster.destroy_partition(p).await.expect("destroy");
}
