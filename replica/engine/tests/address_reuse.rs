//! A replica's address taken over by a replica of another group or another cluster, as pod IPs
//! are reused on Kubernetes (`../shared/repro/scale-out-ip-reuse/`): p1's leader keeps sending
//! Raft traffic to the address of a stopped follower, where a newcomer now listens.
//!
//! The newcomer must refuse everything not addressed to it (an error, never a panic, never a
//! state change), and neither side may be disturbed: p1 keeps its leader and term and serves
//! its load; the newcomer group elects its own leader, its log holds nothing of p1, and it
//! serves its own clients.

mod common;

use common::Progress;
use dssmr_engine::app::recorder::{Recorder, Recording};
use dssmr_engine::client::Topology;
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::group::{Faults, GroupClient};
use dssmr_engine::ids::{GroupId, MsgId};
use dssmr_engine::multicast::skeen::DeliveryRule;
use dssmr_engine::multicast::McastMessage;
use dssmr_engine::node::{GroupNode, RaftTuning, ReplicaSpec, Storage};
use std::sync::Arc;
use std::time::{Duration, Instant};

const P1: GroupId = GroupId(1);

/// Who moves onto the stopped follower's address.
#[derive(Clone, Copy, Debug)]
enum Newcomer {
    /// Replica 0 of a new partition p3 of the same cluster (the scale-out of the repro).
    NewPartition,
    /// The replica with the follower's own group and ordinal in another cluster.
    OtherCluster,
}

fn tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        snapshot_every: 100_000,
        log_keep: 1000,
    }
}

/// Multicasts to p1 in a closed loop until `progress` is stopped.
fn load_p1(client: Arc<GroupClient>, progress: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let sender = 0x5eed_0001;
        let mut seq = 0;
        while !progress.stopped() {
            let msg = McastMessage::new(MsgId { sender, seq }, vec![P1], vec![7; 32]);
            let deadline = Instant::now() + Duration::from_secs(20);
            if client.multicast(&msg, deadline).await.is_ok() {
                progress.bump();
            }
            seq += 1;
        }
    })
}

fn fresh_addr() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr").to_string();
    (l, a)
}

async fn reused_address_is_refused(newcomer: Newcomer) {
    dssmr_engine::telemetry::init_for_tests();
    let mut cluster = LocalCluster::start(ClusterOptions {
        groups: 2,
        tuning: tuning(),
        ..Default::default()
    })
    .await
    .expect("cluster");
    let progress = Arc::new(Progress::default());
    let load = load_p1(
        Arc::new(cluster.client(P1).expect("client")),
        progress.clone(),
    );
    assert!(
        progress.advance(50, Duration::from_secs(30)).await,
        "p1 serves"
    );

    let leader = cluster.leader_of(P1).expect("p1 leader");
    let follower = (0..3).find(|r| *r != leader).expect("a follower");
    let term = cluster
        .node(P1, leader)
        .expect("leader")
        .raft()
        .metrics()
        .borrow()
        .current_term;
    let taken = cluster.topology().groups[&P1][follower].clone();
    cluster.crash(P1, follower).await;

    // The newcomer group: one member on the stopped follower's address.
    let (group, ordinal_on_taken, mut topology) = match newcomer {
        Newcomer::NewPartition => (GroupId(3), 0, cluster.topology().clone()),
        Newcomer::OtherCluster => (
            P1,
            follower,
            Topology {
                cluster: format!("{}-other", cluster.topology().cluster),
                ..Topology::default()
            },
        ),
    };
    let mut listeners = Vec::new();
    let mut members = Vec::new();
    for r in 0..3 {
        if r == ordinal_on_taken {
            // The port is free again once the follower's runtime is shut down.
            let l = std::net::TcpListener::bind(&taken).expect("bind the taken address");
            listeners.push(l);
            members.push(taken.clone());
        } else {
            let (l, a) = fresh_addr();
            listeners.push(l);
            members.push(a);
        }
    }
    topology.groups.insert(group, members.clone());
    let mut nodes = Vec::new();
    for (r, l) in listeners.into_iter().enumerate() {
        let spec = ReplicaSpec {
            group,
            ordinal: r,
            topology: topology.clone(),
            storage: Storage::Memory,
            tuning: tuning(),
            app: Box::new(Recorder::new(Recording::Full)),
            faults: Arc::new(Faults::default()),
            listener: Some(l),
            listen: None,
            latency: None,
            delivery_rule: DeliveryRule::Skeen,
            read_rule: Default::default(),
            services: None,
        };
        nodes.push(GroupNode::start(spec).await.expect("newcomer starts"));
    }

    // The newcomer group elects its leader while p1's leader keeps replicating to `taken`.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().any(|n| n.is_leader()) {
        assert!(
            Instant::now() < deadline,
            "the newcomer group elects no leader"
        );
        let mut rx = nodes[0].raft().metrics();
        let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
    }
    // ... and keeps doing so: wait until the newcomer on `taken` has refused a good many of
    // p1's requests (20 heartbeat periods), with p1 serving its load all the while.
    let deadline = Instant::now() + Duration::from_secs(60);
    while nodes[ordinal_on_taken].refusals().misaddressed() < 20 {
        assert!(
            Instant::now() < deadline,
            "p1's leader stopped sending to its old follower's address"
        );
        assert!(
            progress.advance(20, Duration::from_secs(30)).await,
            "p1 keeps serving its load"
        );
    }
    assert!(
        progress.advance(300, Duration::from_secs(60)).await,
        "p1 keeps serving its load"
    );

    // Nobody was disturbed.
    assert_eq!(
        cluster.leader_of(P1),
        Some(leader),
        "p1 lost its leader ({newcomer:?})"
    );
    let now = cluster
        .node(P1, leader)
        .expect("leader")
        .raft()
        .metrics()
        .borrow()
        .current_term;
    assert_eq!(
        now, term,
        "p1's term moved ({newcomer:?}): a newcomer's vote reached it"
    );
    for n in &nodes {
        let m = n.raft().metrics().borrow().clone();
        assert!(
            m.running_state.is_ok(),
            "newcomer {} stopped: {:?}",
            n.node_id(),
            m.running_state
        );
        let addrs: Vec<String> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(_, node)| node.addr.clone())
            .collect();
        assert_eq!(
            addrs,
            members,
            "newcomer {} took a foreign membership",
            n.node_id()
        );
        let foreign = n.with_app(|app| {
            app.as_any()
                .downcast_ref::<Recorder>()
                .map(|rec| rec.delivered().len())
                .unwrap_or(0)
        });
        assert_eq!(
            foreign,
            0,
            "newcomer {} delivered p1's messages",
            n.node_id()
        );
    }

    // The newcomer serves its own clients.
    let client = GroupClient::for_topology(&topology, group).expect("newcomer client");
    let msg = McastMessage::new(
        MsgId {
            sender: 0x5eed_0003,
            seq: 0,
        },
        vec![group],
        vec![1],
    );
    client
        .multicast(&msg, Instant::now() + Duration::from_secs(20))
        .await
        .expect("the newcomer group serves");

    progress.stop();
    let _ = load.await;
    for n in nodes {
        n.crash().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_partitions_replica_on_a_stopped_replicas_address_is_refused() {
    reused_address_is_refused(Newcomer::NewPartition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_replica_on_a_stopped_replicas_address_is_refused() {
    reused_address_is_refused(Newcomer::OtherCluster).await;
}
