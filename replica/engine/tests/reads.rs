//! Reads off the log: a partition leader answers read-only commands from its state after a
//! read index (`dssmr_engine::group::read_index`), and the histories stay linearizable when
//! the leader that answers them has been cut off from its group while clients still reach
//! it, the case a leader that trusts itself gets wrong. The same scenario against the
//! deliberately broken rule (`ReadRule::Unconfirmed`: answer at once) must be caught by the
//! linearizability checker. Leader crashes under a read-heavy load are covered by
//! `engine_correctness.rs`, whose kv and bank loads read through the same path.

mod common;

use common::engine::tuning;
use dssmr_bench::kv::run_kv_op;
use dssmr_check::history::{linearizability::check_kv, History};
use dssmr_engine::app::kv::{kv_var, Kv, KvCommand};
use dssmr_engine::client::proxy::{Connections, ProxyStats};
use dssmr_engine::client::{Created, DestinationPolicy, LocationCache, Mode, Proxy, ProxyConfig};
use dssmr_engine::cluster::{engine_apps, ClusterOptions, LocalCluster};
use dssmr_engine::group::ReadRule;
use dssmr_engine::ids::GroupId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const P1: GroupId = GroupId(1);
const KEY: &str = "k";

/// A client whose calls follow the cluster's fault table as sent from `name`, giving up on
/// a command after `timeout`.
fn client(cluster: &LocalCluster, name: &str, timeout: Duration) -> Proxy<Kv> {
    let conns = Connections::with_faults(cluster.topology(), cluster.faults().clone(), name)
        .expect("connections");
    Proxy::new(
        Arc::new(Kv),
        ProxyConfig {
            mode: Mode::Dssmr,
            retry_threshold: 3,
            destination: DestinationPolicy::Random,
            timeout,
        },
        Arc::new(conns),
        Arc::new(LocationCache::default()),
        Arc::new(ProxyStats::default()),
    )
    .expect("proxy")
}

/// Waits until `cond` holds, or fails naming `what` after `limit`.
async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// DS-SMR kv on one partition under `rule`. A reader reads the key at p1's leader L (off
/// the log); then L is cut off from its followers and the reader from them too, so the
/// reader still reaches only L. The followers elect a new leader, a writer (cut off from L)
/// writes the key there, and the reader reads it again at L. Returns the checker's verdict
/// on the history and how many reads L answered off the log before the cut.
async fn old_leader_reads(rule: ReadRule) -> (Result<(), String>, u64) {
    let cluster = LocalCluster::start(ClusterOptions {
        groups: 1,
        oracle: true,
        apps: Some(engine_apps(Arc::new(Kv), 1)),
        tuning: tuning(),
        read_rule: rule,
        ..Default::default()
    })
    .await
    .expect("cluster starts");
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let history = History::in_memory();
    let initial = BTreeMap::from([(KEY.to_string(), 0)]);
    let setup = client(&cluster, "setup", Duration::from_secs(20));
    assert_eq!(
        setup.create(kv_var(KEY), &0).await.expect("create"),
        Created::Created
    );
    let get = KvCommand::Get { key: KEY.into() };
    // The reader gives up on a read that gets no answer (a read has no effect either way).
    let reader = client(&cluster, "reader", Duration::from_secs(4));
    for _ in 0..5 {
        assert!(
            run_kv_op(&reader, &history, 1, &get).await,
            "read before the cut"
        );
    }
    let old = cluster.leader_of(P1).expect("p1 leads");
    let served = cluster.node(P1, old).expect("running").reads_served();

    let members = cluster.topology().groups[&P1].clone();
    let faults = cluster.faults().clone();
    let followers: Vec<&str> = (0..members.len())
        .filter(|r| *r != old)
        .map(|r| members[r].as_str())
        .collect();
    faults.isolate(&members[old], followers.iter().copied());
    for f in &followers {
        faults.cut("reader", f);
    }
    faults.cut("writer", &members[old]);
    until("a follower leads p1", Duration::from_secs(20), || {
        (0..members.len()).any(|r| r != old && cluster.node(P1, r).is_some_and(|n| n.is_leader()))
    })
    .await;

    let writer = client(&cluster, "writer", Duration::from_secs(20));
    let put = KvCommand::Put {
        key: KEY.into(),
        value: 7,
    };
    assert!(
        run_kv_op(&writer, &history, 2, &put).await,
        "the write completes"
    );
    // The old leader still believes it leads; what does it answer now?
    run_kv_op(&reader, &history, 3, &get).await;

    faults.heal();
    let events = history.events();
    eprintln!("{rule:?}: {} events: {events:?}", events.len());
    cluster.shutdown().await;
    (
        check_kv(&events, &initial).map_err(|e| e.to_string()),
        served,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_group_answers_no_stale_read() {
    let (verdict, served) = tokio::time::timeout(
        Duration::from_secs(120),
        old_leader_reads(ReadRule::ReadIndex),
    )
    .await
    .expect("test finishes in time");
    assert!(
        served >= 5,
        "reads answered off the log before the cut: {served}"
    );
    verdict.expect("linearizable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizability_check_catches_a_leader_that_reads_without_a_read_index() {
    let (verdict, served) = tokio::time::timeout(
        Duration::from_secs(120),
        old_leader_reads(ReadRule::Unconfirmed),
    )
    .await
    .expect("test finishes in time");
    assert!(
        served >= 5,
        "reads answered off the log before the cut: {served}"
    );
    let err = verdict.expect_err("a stale read makes the history non-linearizable");
    eprintln!("caught: {err}");
}

/// A read ordered through the log (`ReadRule::Log`) is answered once and its reply is not
/// kept in the replicated reply cache: asked again under the same id, the group says so
/// (`ClientError::AskAgain`) instead of answering from a cache, while a write asked again
/// gets its kept reply; a proxy's read still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_through_the_log_is_answered_once_and_its_reply_not_kept() {
    use dssmr_engine::command::{decode, encode, Command, Execution, Reply};
    use dssmr_engine::group::{ClientError, GroupClient};
    use dssmr_engine::ids::MsgId;
    use dssmr_engine::multicast::McastMessage;

    let cluster = LocalCluster::start(ClusterOptions {
        groups: 1,
        oracle: true,
        apps: Some(engine_apps(Arc::new(Kv), 1)),
        tuning: tuning(),
        read_rule: ReadRule::Log,
        ..Default::default()
    })
    .await
    .expect("cluster starts");
    cluster
        .wait_for_leaders(Duration::from_secs(20))
        .await
        .expect("leaders");
    let proxy = client(&cluster, "setup", Duration::from_secs(20));
    proxy.create(kv_var(KEY), &3).await.expect("create");

    let group = GroupClient::for_topology(cluster.topology(), P1).expect("client");
    let deadline = || Instant::now() + Duration::from_secs(20);
    let access = |cmd: &KvCommand| {
        encode(&Command::Access {
            cmd: encode(cmd),
            execution: Execution::Local,
        })
    };
    let get = McastMessage::new(
        MsgId { sender: 77, seq: 1 },
        vec![P1],
        access(&KvCommand::Get { key: KEY.into() }),
    );
    let first = group.submit(&get, deadline()).await.expect("the read");
    assert!(first.ts > 0, "ordered through the log");
    assert!(matches!(
        decode::<Reply>(&first.reply, "reply"),
        Ok(Reply::Done(_))
    ));
    match group.submit(&get, deadline()).await {
        Err(ClientError::AskAgain { message, .. }) => {
            assert!(message.contains("not kept"), "{message}")
        }
        other => panic!("a read asked again: {:?}", other.map(|c| c.ts)),
    }

    let put = McastMessage::new(
        MsgId { sender: 77, seq: 2 },
        vec![P1],
        access(&KvCommand::Put {
            key: KEY.into(),
            value: 4,
        }),
    );
    let once = group.submit(&put, deadline()).await.expect("the write");
    let again = group.submit(&put, deadline()).await.expect("asked again");
    assert_eq!((once.ts, once.reply), (again.ts, again.reply));

    assert_eq!(
        proxy.access(&KvCommand::Get { key: KEY.into() }).await.ok(),
        Some(dssmr_engine::app::kv::KvReply::Value(4))
    );
    cluster.shutdown().await;
}
