//! The engine end to end on a small cluster: kv commands under DS-SMR and S-SMR, moves,
//! creates, deletes, missing variables, the S-SMR fallback, and commands run spread.

use dssmr_engine::app::kv::{kv_var, Kv, KvCommand, KvReply};
use dssmr_engine::client::proxy::ProxyStats;
use dssmr_engine::client::{Created, DestinationPolicy, LocationCache, Mode, Proxy, ProxyConfig};
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::ids::VarId;
use std::sync::Arc;

async fn kv_proxy(cluster: &LocalCluster, mode: Mode, retry_threshold: u32) -> Proxy<Kv> {
    let config = ProxyConfig {
        mode,
        retry_threshold,
        ..Default::default()
    };
    Proxy::new(
        Arc::new(Kv),
        config,
        Arc::new(cluster.connections().expect("connections")),
        Arc::new(LocationCache::default()),
        Arc::new(ProxyStats::default()),
    )
    .expect("proxy")
}

async fn exercise(mode: Mode) {
    let cluster = LocalCluster::start(ClusterOptions::engine(Arc::new(Kv), 3, mode))
        .await
        .expect("cluster");
    let p = kv_proxy(&cluster, mode, 5).await;
    for (k, v) in [("a", 10), ("b", 0), ("c", 5), ("d", 7)] {
        assert_eq!(
            p.create(kv_var(k), &v).await.expect("create"),
            Created::Created
        );
    }
    assert_eq!(p.create(kv_var("a"), &1).await.unwrap(), Created::Exists);
    let get = |k: &str| KvCommand::Get { key: k.into() };
    assert_eq!(p.access(&get("a")).await.unwrap(), KvReply::Value(10));
    assert_eq!(
        p.access(&get("zz")).await.unwrap(),
        KvReply::Missing(vec!["zz".into()])
    );
    let t = KvCommand::Transfer {
        from: "a".into(),
        to: "b".into(),
        amount: 4,
    };
    assert_eq!(p.access(&t).await.unwrap(), KvReply::Transfer(true));
    let all = KvCommand::ReadMany {
        keys: vec!["a".into(), "b".into(), "c".into(), "d".into()],
    };
    assert_eq!(
        p.access(&all).await.unwrap(),
        KvReply::Values(vec![6, 4, 5, 7])
    );
    p.delete(kv_var("c")).await.expect("delete");
    assert_eq!(
        p.access(&get("c")).await.unwrap(),
        KvReply::Missing(vec!["c".into()])
    );
    let s = p.stats().snapshot();
    eprintln!("{mode:?}: {s:?}");
    if mode == Mode::Dssmr {
        assert!(s.moves > 0, "multi-key commands moved variables: {s:?}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_on_dssmr() {
    exercise(Mode::Dssmr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_on_ssmr() {
    exercise(Mode::Ssmr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_are_refused_with_invalid_argument() {
    use dssmr_engine::client::ClientError;
    use dssmr_engine::command::{encode, Command, Execution};
    use dssmr_engine::ids::{GroupId, MsgId, ORACLE};
    use dssmr_engine::multicast::McastMessage;
    use std::time::{Duration, Instant};

    dssmr_engine::telemetry::init_for_tests();
    let cluster = LocalCluster::start(ClusterOptions::engine(Arc::new(Kv), 2, Mode::Dssmr))
        .await
        .expect("cluster");
    let deadline = Instant::now() + Duration::from_secs(10);
    let cases: Vec<(GroupId, Vec<u8>, &str)> = vec![
        (GroupId(1), vec![0xff, 0xff, 0xff], "undecodable command"),
        (
            GroupId(1),
            encode(&Command::Access {
                cmd: vec![0xff; 3],
                execution: Execution::Local,
            }),
            "undecodable application command",
        ),
        (
            ORACLE,
            encode(&Command::Access {
                cmd: vec![],
                execution: Execution::Local,
            }),
            "an access goes to partitions only",
        ),
    ];
    for (seq, (g, payload, expect)) in cases.into_iter().enumerate() {
        let msg = McastMessage::new(
            MsgId {
                sender: 77,
                seq: seq as u64,
            },
            vec![g],
            payload,
        );
        let err = cluster
            .client(g)
            .expect("client")
            .submit(&msg, deadline)
            .await
            .expect_err("refused");
        match err {
            ClientError::Rejected { message, .. } => {
                assert!(message.contains(expect), "{message}")
            }
            other => panic!("expected a rejection, got {other}"),
        }
    }
    // The cluster still serves.
    let p = kv_proxy(&cluster, Mode::Dssmr, 5).await;
    assert_eq!(p.create(kv_var("x"), &1).await.unwrap(), Created::Created);
    cluster.shutdown().await;
}

/// The affinity policy runs a command spread over the partitions instead of moving a variable
/// settled where it is: both keys stay put and the transfer takes effect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_runs_commands_spread_instead_of_moving_settled_variables() {
    let cluster = LocalCluster::start(ClusterOptions::engine(Arc::new(Kv), 3, Mode::Dssmr))
        .await
        .expect("cluster");
    let cache = Arc::new(LocationCache::default());
    let stats = Arc::new(ProxyStats::default());
    let p = Proxy::new(
        Arc::new(Kv),
        ProxyConfig {
            destination: DestinationPolicy::Affinity,
            ..Default::default()
        },
        Arc::new(cluster.connections().expect("connections")),
        cache.clone(),
        stats.clone(),
    )
    .expect("proxy");
    let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    for k in &keys {
        assert_eq!(p.create(kv_var(k), &10).await.unwrap(), Created::Created);
    }
    let vars: Vec<VarId> = keys.iter().map(|k| kv_var(k)).collect();
    let at = cache.lookup(&vars).expect("creates fill the cache");
    let (a, pa) = at[0].clone();
    let (b, pb) = at
        .iter()
        .find(|(_, g)| *g != pa)
        .cloned()
        .expect("hash placement spreads 12 keys over 3 partitions");
    // Each key has a neighbourhood (seen twice) in its own partition: both are settled.
    for (v, g, friend) in [(&a, pa, "friend-a"), (&b, pb, "friend-b")] {
        let friend = VarId::new(friend);
        cache.update([(friend.clone(), g)]);
        for _ in 0..2 {
            cache
                .affinity()
                .record(std::slice::from_ref(v), &[v.clone(), friend.clone()]);
        }
    }
    let key = |v: &VarId| v.as_str().to_string();
    let t = KvCommand::Transfer {
        from: key(&a),
        to: key(&b),
        amount: 4,
    };
    assert_eq!(p.access(&t).await.unwrap(), KvReply::Transfer(true));
    let s = stats.snapshot();
    assert_eq!((s.spreads, s.moves), (1, 0), "{s:?}");
    assert_eq!(
        cache.lookup(&[a.clone(), b.clone()]),
        Some(vec![(a.clone(), pa), (b.clone(), pb)])
    );
    let both = KvCommand::ReadMany {
        keys: vec![key(&a), key(&b)],
    };
    assert_eq!(p.access(&both).await.unwrap(), KvReply::Values(vec![6, 14]));
    cluster.shutdown().await;
}

/// Bug (issue 16): a message was validated only by the application of the group it was
/// submitted to, against that group's part of it. A create sent to the oracle and two
/// partitions, submitted at p1, was ordered; the oracle refused it without a decision, and
/// both partitions waited for one for ever, every later command queued behind it. Now every
/// destination refuses such a message, at submission and at delivery, and nothing waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_where_it_does_not_go_is_refused_and_blocks_nothing() {
    use dssmr_engine::command::{encode, Command};
    use dssmr_engine::group::ClientError;
    use dssmr_engine::ids::{GroupId, MsgId, ORACLE};
    use dssmr_engine::multicast::McastMessage;
    use std::time::{Duration, Instant};

    dssmr_engine::telemetry::init_for_tests();
    let cluster = LocalCluster::start(ClusterOptions::engine(Arc::new(Kv), 2, Mode::Dssmr))
        .await
        .expect("cluster");
    let p = kv_proxy(&cluster, Mode::Dssmr, 5).await;
    for k in ["a", "b"] {
        assert_eq!(p.create(kv_var(k), &1).await.unwrap(), Created::Created);
    }
    let (p1, p2) = (GroupId(1), GroupId(2));
    let hostile = [
        (
            "a create to two partitions",
            vec![ORACLE, p1, p2],
            Command::Create {
                var: kv_var("y"),
                value: encode(&1i64),
            },
        ),
        (
            "a create of an undecodable value",
            vec![ORACLE, p1],
            Command::Create {
                var: kv_var("z"),
                value: vec![0xff; 9],
            },
        ),
        (
            "a delete behind the oracle's back",
            vec![p1],
            Command::Delete { var: kv_var("a") },
        ),
    ];
    for (seq, (what, dests, cmd)) in hostile.into_iter().enumerate() {
        for at in dests.clone() {
            let msg = McastMessage::new(
                MsgId {
                    sender: 0xbad,
                    seq: (seq * 10) as u64 + u64::from(at.0),
                },
                dests.clone(),
                encode(&cmd),
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            let client = cluster.client(at).expect("client");
            match client.submit(&msg, deadline).await {
                Err(ClientError::Rejected { message, .. }) => {
                    eprintln!("{what}, submitted at {at}: {message}")
                }
                other => panic!("{what}, submitted at {at}: {other:?}"),
            }
        }
    }
    // Nothing waits in any group: both variables still answer, wherever they are.
    let all = KvCommand::ReadMany {
        keys: vec!["a".into(), "b".into()],
    };
    let read = tokio::time::timeout(Duration::from_secs(20), p.access(&all)).await;
    assert_eq!(
        read.expect("no group is blocked").unwrap(),
        KvReply::Values(vec![1, 1])
    );
    assert_eq!(p.create(kv_var("y"), &2).await.unwrap(), Created::Created);
    cluster.shutdown().await;
}

/// Bug (issue 16): a message asked again after its reply was forgotten was answered like a
/// refusal (FAILED_PRECONDITION, "rejected"), so a history said `fail` for a command that
/// ran. It is now told apart: it took effect, what it returned is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_reply_was_forgotten_is_not_reported_as_refused() {
    use dssmr_engine::command::{encode, Command, Purpose};
    use dssmr_engine::group::ClientError;
    use dssmr_engine::ids::{MsgId, ORACLE};
    use dssmr_engine::multicast::McastMessage;
    use std::time::{Duration, Instant};

    let cluster = LocalCluster::start(ClusterOptions::engine(Arc::new(Kv), 1, Mode::Dssmr))
        .await
        .expect("cluster");
    let consult = encode(&Command::Consult {
        vars: vec![kv_var("a")],
        optional: vec![],
        purpose: Purpose::Access,
    });
    let msg = |seq| McastMessage::new(MsgId { sender: 0xf0, seq }, vec![ORACLE], consult.clone());
    let oracle = cluster.client(ORACLE).expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    // More messages of the same sender than the group keeps replies of.
    for seq in 0..40 {
        oracle.submit(&msg(seq), deadline).await.expect("consult");
    }
    match oracle.submit(&msg(0), deadline).await {
        Err(ClientError::ReplyForgotten { message, .. }) => {
            assert!(message.contains("no longer kept"), "{message}")
        }
        other => panic!("the first consult asked again: {other:?}"),
    }
    cluster.shutdown().await;
}
