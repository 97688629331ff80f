//! Correctness of the DS-SMR engine under concurrency and faults, checked on recorded
//! histories and final states:
//! (a) kv histories are linearizable (stateright's `LinearizabilityTester`);
//! (b) bank: every atomic read of all accounts sees the same total;
//! (c) Chirper: each timeline holds exactly the posts of the users its owner follows.
//! Clients run concurrently, each with its own location cache (so caches go stale and
//! commands retry), a low retry threshold (so the S-SMR fallback runs), random move
//! destinations (so variables move all the time; every other client of (a) and (c) uses the
//! affinity destination policy instead), while leaders of partitions and of the
//! oracle are crashed and restarted. Each check is also run against a deliberately broken
//! partition rule and must catch it.

mod common;

use common::engine::{
    all_addresses, faults_then_join, start, start_tuned, tuning, wait_quiescent, Fault,
};
use common::{eventually, Progress};
use dssmr_bench::kv::run_kv_op;
use dssmr_bench::{recorded, BenchHistory};
use dssmr_check::history::chirper_timelines::{self, TimelineReport};
use dssmr_check::history::{bank::check_bank, linearizability::check_kv, History};
use dssmr_engine::app::chirper::graph::{GraphSpec, SocialGraph};
use dssmr_engine::app::chirper::json::{command_json, create_json, created_json, reply_json};
use dssmr_engine::app::chirper::{
    user_var, Chirper, ChirperCommand, ChirperReply, User, UserId, TIMELINE_CAP,
};
use dssmr_engine::app::kv::{kv_var, Kv, KvCommand};
use dssmr_engine::client::proxy::{ProxyStats, StatsSnapshot};
use dssmr_engine::client::DestinationPolicy::{self, Random};
use dssmr_engine::client::{Created, LocationCache, Mode, Proxy, ProxyConfig};
use dssmr_engine::cluster::{engine_apps_with_rule, LocalCluster};
use dssmr_engine::command::{encode, Command, Execution};
use dssmr_engine::ids::MsgId;
use dssmr_engine::ids::{GroupId, VarId, ORACLE};
use dssmr_engine::multicast::McastMessage;
use dssmr_engine::node::RaftTuning;
use dssmr_engine::partition::{Partition, PartitionRule};
use openraft::{BasicNode, LogId, RaftMetrics};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

const PARTITIONS: usize = 3;
const TEST_LIMIT: Duration = Duration::from_secs(300);

fn proxy<A: dssmr_engine::app::StateMachine>(
    app: Arc<A>,
    cluster: &LocalCluster,
    stats: &Arc<ProxyStats>,
    retry_threshold: u32,
    destination: DestinationPolicy,
) -> Proxy<A> {
    let cache = Arc::new(LocationCache::default());
    proxy_with_cache(app, cluster, stats, retry_threshold, destination, cache)
}

/// [`proxy`] with the location cache `cache` (a test may make it stale).
fn proxy_with_cache<A: dssmr_engine::app::StateMachine>(
    app: Arc<A>,
    cluster: &LocalCluster,
    stats: &Arc<ProxyStats>,
    retry_threshold: u32,
    destination: DestinationPolicy,
    cache: Arc<LocationCache>,
) -> Proxy<A> {
    let config = ProxyConfig {
        mode: Mode::Dssmr,
        retry_threshold,
        destination,
        timeout: Duration::from_secs(60),
    };
    Proxy::new(
        app,
        config,
        Arc::new(cluster.connections().expect("connections")),
        cache,
        stats.clone(),
    )
    .expect("proxy")
}

/// Client `c`'s destination policy: random and affinity, alternately.
fn policy(c: usize) -> DestinationPolicy {
    if c.is_multiple_of(2) {
        Random
    } else {
        DestinationPolicy::Affinity
    }
}

// ---------------------------------------------------------------------------------------------
// kv

/// One kv operation drawn from `rng` alone, so that a client's operations are a function of
/// its seed (the interleaving of clients is not: it comes from the run).
fn random_kv_op(rng: &mut StdRng, keys: &[String]) -> KvCommand {
    let key = keys.choose(rng).cloned().expect("keys");
    match rng.random_range(0..100) {
        0..25 => KvCommand::Get { key },
        25..40 => KvCommand::Put {
            key,
            value: rng.random_range(0..200),
        },
        40..55 => KvCommand::Cas {
            key,
            expected: rng.random_range(95..105),
            new: rng.random_range(0..200),
        },
        55..80 => {
            let pair: Vec<&String> = keys.choose_multiple(rng, 2).collect();
            KvCommand::Transfer {
                from: pair[0].clone(),
                to: pair[1].clone(),
                amount: rng.random_range(1..60),
            }
        }
        _ => {
            let n = rng.random_range(2..=keys.len());
            KvCommand::ReadMany {
                keys: keys.choose_multiple(rng, n).cloned().collect(),
            }
        }
    }
}

/// The shape of a kv load: `clients` clients, each of at least `ops` operations (more until
/// the faults are over), a retry threshold, and the seed client `c` draws its operations
/// from (`seed + c`).
#[derive(Clone, Copy)]
struct KvClients {
    clients: usize,
    ops: usize,
    retry_threshold: u32,
    seed: u64,
}

impl KvClients {
    /// 6 clients with a retry threshold of 1, `ops` operations each, seed 0.
    fn of(ops: usize) -> Self {
        KvClients {
            clients: 6,
            ops,
            retry_threshold: 1,
            seed: 0,
        }
    }
}

/// Creates the keys, then runs `clients` clients × `ops` operations made by `gen`. Client 0
/// works with a stale location cache: before each operation it is told that every key is in
/// partition 1, 2, 3, 1, ... in turn, so most of its commands go where their variables are
/// not, are retried and (with a retry threshold of 1) fall back to S-SMR. Retries and
/// fallbacks are thus certain in every run, not left to races between clients (a run once
/// made none, and the test that asserts them failed).
async fn run_kv_clients(
    cluster: &LocalCluster,
    initial: &BTreeMap<String, i64>,
    load: KvClients,
    gen: fn(&mut StdRng, &[String]) -> KvCommand,
    progress: Arc<Progress>,
) -> (History, Arc<ProxyStats>, Vec<tokio::task::JoinHandle<()>>) {
    let KvClients {
        clients,
        ops,
        retry_threshold,
        seed,
    } = load;
    let stats = Arc::new(ProxyStats::default());
    let setup = proxy(Arc::new(Kv), cluster, &stats, retry_threshold, Random);
    for (k, v) in initial {
        assert_eq!(
            setup.create(kv_var(k), v).await.expect("create"),
            Created::Created
        );
    }
    let history = History::in_memory();
    let keys: Vec<String> = initial.keys().cloned().collect();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let cache = Arc::new(LocationCache::default());
        let p = proxy_with_cache(
            Arc::new(Kv),
            cluster,
            &stats,
            retry_threshold,
            policy(c),
            cache.clone(),
        );
        let (h, keys, progress) = (history.clone(), keys.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(c as u64));
            let mut process = c as u64;
            for i in 0..20 * ops {
                if i >= ops && progress.stopped() {
                    break;
                }
                if c == 0 {
                    let stale = GroupId(1 + (i % PARTITIONS) as u32);
                    cache.update(keys.iter().map(|k| (kv_var(k), stale)));
                }
                let op = gen(&mut rng, &keys);
                if !run_kv_op(&p, &h, process, &op).await {
                    process += clients as u64;
                }
                progress.bump();
            }
        }));
    }
    (history, stats, tasks)
}

/// A kv run under way: the cluster (in `_dir`), the recorded history and the clients' stats.
struct KvRun {
    _dir: tempfile::TempDir,
    cluster: LocalCluster,
    history: History,
    stats: Arc<ProxyStats>,
}

/// Starts a cluster whose partitions follow `rule`, runs `load` (operations of `gen` over
/// `initial`) while `plan` strikes (nothing when empty), each fault after `step` more
/// operations, and waits until the clients are done.
async fn kv_run(
    rule: PartitionRule,
    initial: &BTreeMap<String, i64>,
    load: KvClients,
    gen: fn(&mut StdRng, &[String]) -> KvCommand,
    plan: &[Fault],
    step: u64,
) -> KvRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = start(
        engine_apps_with_rule(Arc::new(Kv), PARTITIONS, rule),
        PARTITIONS,
        dir.path(),
    )
    .await;
    let progress = Arc::new(Progress::default());
    let (history, stats, tasks) =
        run_kv_clients(&cluster, initial, load, gen, progress.clone()).await;
    let faults = !plan.is_empty();
    faults_then_join(&mut cluster, &progress, faults, plan, step, tasks).await;
    KvRun {
        _dir: dir,
        cluster,
        history,
        stats,
    }
}

async fn kv_linearizability(
    rule: PartitionRule,
    faults: bool,
) -> (Result<(), String>, StatsSnapshot) {
    let initial: BTreeMap<String, i64> = (0..4).map(|i| (format!("k{i}"), 100)).collect();
    let plan = [
        Fault::CrashLeader(GroupId(1)),
        Fault::CutGroups(ORACLE, GroupId(2)),
        Fault::IsolateLeader(GroupId(2)),
        Fault::CrashLeader(ORACLE),
    ];
    let plan = if faults { &plan[..] } else { &[] };
    let run = kv_run(rule, &initial, KvClients::of(50), random_kv_op, plan, 100).await;
    let events = run.history.events();
    let s = run.stats.snapshot();
    eprintln!("kv ({rule:?}): {} events, {s:?}", events.len());
    run.cluster.shutdown().await;
    (check_kv(&events, &initial).map_err(|e| e.to_string()), s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_histories_are_linearizable_despite_moves_fallbacks_and_crashes() {
    let (verdict, s) =
        tokio::time::timeout(TEST_LIMIT, kv_linearizability(PartitionRule::Correct, true))
            .await
            .expect("test finishes in time");
    verdict.expect("linearizable");
    assert!(s.moves > 0, "variables moved: {s:?}");
    assert!(s.retries > 0, "commands retried: {s:?}");
    assert!(s.fallbacks > 0, "the S-SMR fallback ran: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizability_check_catches_a_partition_that_skips_the_locality_check() {
    let (verdict, _) = tokio::time::timeout(
        TEST_LIMIT,
        kv_linearizability(PartitionRule::SkipLocalityCheck, false),
    )
    .await
    .expect("test finishes in time");
    let err = verdict.expect_err("a broken partition yields a non-linearizable history");
    eprintln!("caught: {err}");
    assert!(
        err.contains("not linearizable"),
        "the broken partition must be caught as a linearizability violation, not as: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_by_a_snapshot_that_carries_unfinished_work() {
    dssmr_engine::telemetry::init_for_tests();
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().expect("tempdir");
        // Snapshots every 40 entries, 5 entries kept behind them: a follower 120 entries
        // behind can only catch up by installing a snapshot.
        let tuned = RaftTuning {
            snapshot_every: 40,
            log_keep: 5,
            ..tuning()
        };
        let cluster = start_tuned(
            engine_apps_with_rule(Arc::new(Kv), PARTITIONS, PartitionRule::Correct),
            PARTITIONS,
            dir.path(),
            tuned,
        )
        .await;
        let initial: BTreeMap<String, i64> = (0..6).map(|i| (format!("k{i}"), 100)).collect();
        let progress = Arc::new(Progress::default());
        let (history, stats, tasks) = run_kv_clients(
            &cluster,
            &initial,
            KvClients::of(60),
            random_kv_op,
            progress.clone(),
        )
        .await;
        let (p1, p2) = (GroupId(1), GroupId(2));
        cluster
            .wait_for_leaders(Duration::from_secs(30))
            .await
            .expect("leaders");
        let leader = cluster.leader_of(p1).expect("p1 leads");
        let follower = (leader + 1) % cluster.replicas();
        let addrs = |g: GroupId| cluster.topology().groups[&g].clone();
        let lagging = addrs(p1)[follower].clone();
        let everyone = all_addresses(&cluster);
        // The follower falls behind; P1 and P2 cannot reach each other, so moves and
        // exchanges between them stay unfinished (tentative messages, unacknowledged channel
        // messages) while P1's log grows past the snapshots.
        cluster
            .faults()
            .isolate(&lagging, everyone.iter().map(String::as_str));
        for x in addrs(p1) {
            for y in addrs(p2) {
                cluster.faults().cut(&x, &y);
            }
        }
        // P1's log keeps growing while its queue is blocked: a filler submits writes of a
        // variable that does not exist (ordered, then answered `retry` once delivered: no
        // effect on the keys of the history), each given up on after a moment.
        let filler_client = Arc::new(cluster.client(p1).expect("client"));
        let filler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let filler = {
            let (client, stop) = (filler_client.clone(), filler_stop.clone());
            tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Relaxed) {
                    let round: Vec<McastMessage> = (seq..seq + 8)
                        .map(|s| {
                            let put = KvCommand::Put {
                                key: "filler".into(),
                                value: s as i64,
                            };
                            let cmd = Command::Access {
                                cmd: encode(&put),
                                execution: Execution::Local,
                            };
                            McastMessage::new(
                                MsgId {
                                    sender: 0xf1,
                                    seq: s,
                                },
                                vec![p1],
                                encode(&cmd),
                            )
                            .with_done_below(seq)
                        })
                        .collect();
                    seq += 8;
                    let deadline = std::time::Instant::now() + Duration::from_millis(300);
                    futures::future::join_all(round.iter().map(|m| client.multicast(m, deadline)))
                        .await;
                }
            })
        };
        // Work certain to stay unfinished while the cut lasts (the clients' commands add more
        // when they span P1 and P2, but a busy machine may schedule none in time): a command
        // to P1 and P2, submitted at P1, whose timestamp exchange with P2 cannot happen. It
        // touches only a variable that does not exist.
        {
            let put = KvCommand::Put {
                key: "filler".into(),
                value: -1,
            };
            let cmd = Command::Access {
                cmd: encode(&put),
                execution: Execution::Exchange,
            };
            let id = MsgId {
                sender: 0xf2,
                seq: 0,
            };
            let spanning = McastMessage::new(id, vec![p1, p2], encode(&cmd)).with_done_below(0);
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            let _ = filler_client.multicast(&spanning, deadline).await;
        }
        let behind = |n: u64| {
            let lead = cluster.node(p1, leader).map_or(0, |n| {
                n.raft()
                    .metrics()
                    .borrow()
                    .last_applied
                    .map_or(0, |l| l.index)
            });
            let lag = cluster.node(p1, follower).map_or(0, |n| {
                n.raft()
                    .metrics()
                    .borrow()
                    .last_applied
                    .map_or(0, |l| l.index)
            });
            lead >= lag + n
        };
        // Work that cannot finish while P1 and P2 are cut off each other: messages to P2
        // pending in P1, or channel messages to P2 not acknowledged.
        let unfinished = || {
            cluster.node(p1, leader).is_some_and(|n| {
                n.with_state(|s| {
                    s.skeen.pending_with(p2) > 0
                        || s.channel.outboxes().any(|(g, o)| g == p2 && !o.is_empty())
                })
            })
        };
        let leader_index = |f: fn(&RaftMetrics<u64, BasicNode>) -> Option<LogId<u64>>| {
            cluster
                .node(p1, leader)
                .and_then(|n| f(&n.raft().metrics().borrow()))
                .map_or(0, |l| l.index)
        };
        assert!(
            eventually(Duration::from_secs(90), || behind(120) && unfinished()).await,
            "P1's log did not run 120 entries ahead of its isolated follower with work unfinished"
        );
        // A snapshot taken from now on carries that work.
        let stuck_at = leader_index(|m| m.last_applied);
        assert!(
            eventually(Duration::from_secs(60), || leader_index(|m| m.snapshot)
                >= stuck_at)
            .await,
            "P1's leader took no snapshot after index {stuck_at}"
        );
        // The follower comes back while P1 and P2 are still cut off each other.
        cluster.faults().mend(&lagging);
        let installs = cluster.node(p1, follower).expect("follower runs").shared();
        assert!(
            eventually(Duration::from_secs(30), || installs
                .installs()
                .count
                .load(Relaxed)
                > 0)
            .await,
            "the follower caught up without installing a snapshot"
        );
        let with_pending = installs.installs().with_pending.load(Relaxed);
        filler_stop.store(true, Relaxed);
        filler.await.expect("filler");
        cluster.faults().heal();
        progress.stop();
        for t in tasks {
            t.await.expect("client");
        }
        assert!(
            wait_quiescent(&cluster, Duration::from_secs(60)).await,
            "the cluster settles"
        );
        eprintln!(
            "snapshots installed by the follower: {} ({with_pending} with unfinished work); {:?}",
            installs.installs().count.load(Relaxed),
            stats.snapshot()
        );
        assert!(
            with_pending > 0,
            "no installed snapshot carried unfinished work"
        );
        let events = history.events();
        check_kv(&events, &initial).expect("linearizable");
        cluster.shutdown().await;
    })
    .await
    .expect("test finishes in time");
}

/// The nemesis seed: `DSSMR_NEMESIS_SEED` (a number, or `random`), else `default`.
fn nemesis_seed(default: u64) -> u64 {
    match std::env::var("DSSMR_NEMESIS_SEED").ok().as_deref() {
        Some("random") => rand::rng().random(),
        Some(n) => n
            .parse()
            .expect("DSSMR_NEMESIS_SEED is a number or 'random'"),
        None => default,
    }
}

/// kv clients (moves, retries, S-SMR fallbacks) while a nemesis drawn from `seed` carries out
/// `faults` faults: leader crashes, isolated leaders, groups cut off each other, handovers.
async fn kv_under_nemesis(seed: u64, faults: usize, ops: usize) {
    dssmr_engine::telemetry::init_for_tests();
    // The oracle (group 0) and the partitions, as the cluster will have them.
    let groups: Vec<GroupId> = (0..=PARTITIONS as u32).map(GroupId).collect();
    let plan = Fault::random_plan(seed, &groups, faults);
    eprintln!("nemesis seed {seed} (replay: DSSMR_NEMESIS_SEED={seed}): {plan:?}");
    let initial: BTreeMap<String, i64> = (0..4).map(|i| (format!("k{i}"), 100)).collect();
    let load = KvClients {
        seed,
        ..KvClients::of(ops)
    };
    let run = kv_run(
        PartitionRule::Correct,
        &initial,
        load,
        random_kv_op,
        &plan,
        60,
    )
    .await;
    let events = run.history.events();
    eprintln!(
        "nemesis seed {seed}: {} events, {:?}",
        events.len(),
        run.stats.snapshot()
    );
    run.cluster.shutdown().await;
    if let Err(e) = check_kv(&events, &initial) {
        panic!("nemesis seed {seed} (replay: DSSMR_NEMESIS_SEED={seed}): {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_stays_linearizable_under_a_randomized_nemesis() {
    let seed = nemesis_seed(2026);
    tokio::time::timeout(TEST_LIMIT, kv_under_nemesis(seed, 6, 50))
        .await
        .unwrap_or_else(|_| panic!("nemesis seed {seed}: the test did not finish in time"));
}

/// The long soak: `cargo test --test engine_correctness -- --ignored nemesis_soak`, with
/// `DSSMR_NEMESIS_SEED=random` to explore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long soak, run by hand"]
async fn nemesis_soak() {
    let seed = nemesis_seed(rand::rng().random());
    tokio::time::timeout(Duration::from_secs(1800), kv_under_nemesis(seed, 40, 400))
        .await
        .unwrap_or_else(|_| panic!("nemesis seed {seed}: the soak did not finish in time"));
}

// ---------------------------------------------------------------------------------------------
// bank

fn bank_op(rng: &mut StdRng, accounts: &[String]) -> KvCommand {
    if rng.random_bool(0.6) {
        let pair: Vec<&String> = accounts.choose_multiple(rng, 2).collect();
        KvCommand::Transfer {
            from: pair[0].clone(),
            to: pair[1].clone(),
            amount: rng.random_range(1..40),
        }
    } else {
        let mut keys = accounts.to_vec();
        keys.reverse();
        KvCommand::ReadMany { keys }
    }
}

async fn bank(rule: PartitionRule, faults: bool) -> (Result<usize, String>, StatsSnapshot) {
    let initial: BTreeMap<String, i64> = (0..6).map(|i| (format!("acct{i}"), 100)).collect();
    let total: i64 = initial.values().sum();
    let plan = [
        Fault::CrashLeader(GroupId(2)),
        Fault::IsolateLeader(ORACLE),
        Fault::CutGroups(GroupId(1), GroupId(3)),
        Fault::CrashLeader(GroupId(3)),
    ];
    let plan = if faults { &plan[..] } else { &[] };
    let KvRun {
        _dir,
        cluster,
        history,
        stats,
    } = kv_run(rule, &initial, KvClients::of(60), bank_op, plan, 100).await;
    // A last read after everything settled.
    let p = proxy(Arc::new(Kv), &cluster, &stats, 1, Random);
    let last = run_kv_op(
        &p,
        &history,
        u64::MAX,
        &KvCommand::ReadMany {
            keys: initial.keys().cloned().collect(),
        },
    )
    .await;
    assert!(last, "the final read completes");
    let s = stats.snapshot();
    let accounts: Vec<String> = initial.keys().cloned().collect();
    cluster.shutdown().await;
    (
        check_bank(&history.events(), &accounts, total).map_err(|e| e.to_string()),
        s,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_total_is_invariant_despite_moves_fallbacks_and_crashes() {
    let (verdict, s) = tokio::time::timeout(TEST_LIMIT, bank(PartitionRule::Correct, true))
        .await
        .expect("test finishes in time");
    let reads = verdict.expect("every read sees the same total");
    eprintln!("bank: {reads} full reads checked, {s:?}");
    assert!(reads > 20, "enough full reads were checked: {reads}");
    assert!(s.moves > 0 && s.fallbacks > 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_check_catches_a_move_that_leaves_a_copy_behind() {
    let (verdict, _) = tokio::time::timeout(TEST_LIMIT, bank(PartitionRule::KeepMovedCopy, false))
        .await
        .expect("test finishes in time");
    let err = verdict.expect_err("copies left behind break the invariant");
    eprintln!("caught: {err}");
}

// ---------------------------------------------------------------------------------------------
// Chirper

const USERS: u64 = 30;
/// Posts per client of the Chirper test: all clients together stay below the timeline and
/// post caps, so that "exactly the followed posts" is the invariant (beyond the caps the oldest
/// posts are dropped by design).
const POSTS_PER_CLIENT: u64 = (TIMELINE_CAP as u64 - 1) / 4;
const COMMUNITY: u64 = 10;

/// The users held by each running replica, per group: (group, ordinal) → users.
fn chirper_states(cluster: &LocalCluster) -> BTreeMap<(GroupId, usize), HashMap<VarId, User>> {
    let mut out = BTreeMap::new();
    for g in cluster.groups().into_iter().filter(|g| *g != ORACLE) {
        for r in 0..cluster.replicas() {
            if let Some(n) = cluster.node(g, r) {
                let vars = n.with_app(|app| {
                    app.as_any()
                        .downcast_ref::<Partition<Chirper>>()
                        .map(|p| p.vars().clone())
                        .expect("a Chirper partition")
                });
                out.insert((g, r), vars);
            }
        }
    }
    out
}

/// Checks the final state against the acknowledged posts; returns the number of timelines.
fn check_timelines(
    cluster: &LocalCluster,
    acked_posts: &[(UserId, String)],
) -> Result<usize, String> {
    let states = chirper_states(cluster);
    // Replicas of a partition agree.
    let mut by_group: BTreeMap<GroupId, &HashMap<VarId, User>> = BTreeMap::new();
    for ((g, r), vars) in &states {
        if let Some(first) = by_group.get(g) {
            if *first != vars {
                return Err(format!("replica {r} of {g} disagrees with its group"));
            }
        } else {
            by_group.insert(*g, vars);
        }
    }
    // Every user lives in exactly one partition.
    let mut users: BTreeMap<UserId, &User> = BTreeMap::new();
    for (g, vars) in &by_group {
        for u in vars.values() {
            if users.insert(u.id, u).is_some() {
                return Err(format!(
                    "user {} lives in two partitions (one is {g})",
                    u.id
                ));
            }
        }
    }
    if users.len() as u64 != USERS {
        return Err(format!("{} users exist, expected {USERS}", users.len()));
    }
    // Acknowledged posts are in their author's posts.
    for (author, text) in acked_posts {
        if !users[author].posts.iter().any(|p| &p.text == text) {
            return Err(format!("acknowledged post {text:?} of {author} is lost"));
        }
    }
    for u in users.values() {
        // Follow edges are symmetric.
        for f in &u.following {
            if !users[f].followers.contains(&u.id) {
                return Err(format!(
                    "{} follows {f} but is not among its followers",
                    u.id
                ));
            }
        }
        // The timeline holds exactly the posts of the followed users.
        let expected: BTreeSet<_> = u
            .following
            .iter()
            .flat_map(|f| users[f].posts.iter().cloned())
            .collect();
        let actual: BTreeSet<_> = u.timeline.iter().cloned().collect();
        if expected != actual {
            let missing: Vec<_> = expected.difference(&actual).map(|p| &p.text).collect();
            let extra: Vec<_> = actual.difference(&expected).map(|p| &p.text).collect();
            return Err(format!(
                "timeline of {}: missing {missing:?}, unexpected {extra:?}",
                u.id
            ));
        }
    }
    Ok(users.len())
}

/// The faults of a Chirper run: none, the fixed list, or a plan drawn from a seed.
enum Nemesis {
    None,
    Fixed,
    Seeded { seed: u64, faults: usize },
}

/// The verdicts of a Chirper run: on the final state ([`check_timelines`]) and on every
/// timeline reply of the recorded history ([`chirper_timelines::check_timelines`]).
struct ChirperVerdict {
    state: Result<usize, String>,
    replies: Result<TimelineReport, String>,
    stats: StatsSnapshot,
}

/// Creates the users, then runs 4 clients of posts, follows, unfollows and timeline reads
/// (drawn from `seed`), every call recorded in a history, while `nemesis` strikes.
async fn chirper(rule: PartitionRule, nemesis: Nemesis) -> ChirperVerdict {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = Arc::new(Chirper::new(COMMUNITY));
    let mut cluster = start(
        engine_apps_with_rule(app.clone(), PARTITIONS, rule),
        PARTITIONS,
        dir.path(),
    )
    .await;
    let (plan, seed) = match nemesis {
        Nemesis::None => (None, 0),
        Nemesis::Fixed => (
            Some(vec![
                Fault::CrashLeader(GroupId(3)),
                Fault::CutGroups(GroupId(1), GroupId(2)),
                Fault::IsolateLeader(GroupId(1)),
                Fault::CrashLeader(ORACLE),
            ]),
            0,
        ),
        Nemesis::Seeded { seed, faults } => {
            let plan = Fault::random_plan(seed, &cluster.groups(), faults);
            eprintln!("nemesis seed {seed} (replay: DSSMR_NEMESIS_SEED={seed}): {plan:?}");
            (Some(plan), seed)
        }
    };
    let graph = SocialGraph::generate(&GraphSpec {
        users: USERS,
        community_size: COMMUNITY,
        avg_follows: 4,
        intra_community: 0.7,
        seed: 7,
    });
    let stats = Arc::new(ProxyStats::default());
    let history = BenchHistory::new(History::in_memory());
    let setup = proxy(app.clone(), &cluster, &stats, 2, Random);
    let mut process = history.fresh_process();
    for u in 0..USERS {
        let mut user = User::new(u);
        user.following = graph.following_of(u).collect();
        user.followers = graph.followers_of(u).collect();
        let create = setup.create(user_var(u), &user);
        let encode = |c: &Created| created_json(*c == Created::Created);
        let created = recorded(
            Some(&history),
            &mut process,
            || create_json(&user),
            create,
            encode,
        );
        assert_eq!(created.await.expect("create user"), Created::Created);
    }
    let progress = Arc::new(Progress::default());
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..4u64 {
        let p = proxy(app.clone(), &cluster, &stats, 2, policy(c as usize));
        let (progress, acked, history) = (progress.clone(), acked.clone(), history.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(100 + c));
            let mut process = history.fresh_process();
            let mut posts = 0;
            for i in 0..900 {
                if i >= 45 && progress.stopped() {
                    break;
                }
                let a = rng.random_range(0..USERS);
                let b = rng.random_range(0..USERS);
                let text = format!("c{c}-{i}");
                let cmd = match rng.random_range(0..10) {
                    0..5 if posts < POSTS_PER_CLIENT => ChirperCommand::Post {
                        user: a,
                        text: text.clone(),
                        time: c * 1000 + i,
                    },
                    5..7 => ChirperCommand::Follow {
                        follower: a,
                        followee: b,
                    },
                    7..9 => ChirperCommand::Unfollow {
                        follower: a,
                        followee: b,
                    },
                    _ => ChirperCommand::GetTimeline { user: a },
                };
                if matches!(cmd, ChirperCommand::Post { .. }) {
                    posts += 1;
                }
                let call = p.access(&cmd);
                let reply = recorded(
                    Some(&history),
                    &mut process,
                    || command_json(&cmd),
                    call,
                    reply_json,
                );
                if let Ok(ChirperReply::Posted { .. }) = reply.await {
                    acked.lock().unwrap().push((a, text));
                }
                progress.bump();
            }
        }));
    }
    let step = if matches!(nemesis, Nemesis::Seeded { .. }) {
        40
    } else {
        25
    };
    let plan = plan.unwrap_or_default();
    faults_then_join(
        &mut cluster,
        &progress,
        !plan.is_empty(),
        &plan,
        step,
        tasks,
    )
    .await;
    assert!(
        wait_quiescent(&cluster, Duration::from_secs(60)).await,
        "the cluster settles"
    );
    let acked = acked.lock().unwrap().clone();
    let state = check_timelines(&cluster, &acked);
    let events = history.history().events();
    let replies = chirper_timelines::check_timelines(&events).map_err(|e| e.to_string());
    let stats = stats.snapshot();
    eprintln!(
        "chirper ({rule:?}, seed {seed}): {} posts acknowledged, {} events, timeline replies: \
         {replies:?}, {stats:?}",
        acked.len(),
        events.len()
    );
    cluster.shutdown().await;
    ChirperVerdict {
        state,
        replies,
        stats,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chirper_timelines_hold_exactly_the_followed_posts_despite_crashes() {
    let v = tokio::time::timeout(TEST_LIMIT, chirper(PartitionRule::Correct, Nemesis::Fixed))
        .await
        .expect("test finishes in time");
    v.state.expect("timelines are exact");
    let report = v.replies.expect("every timeline reply is correct");
    assert!(report.replies > 0, "{report:?}");
    assert!(v.stats.moves > 0 && v.stats.retries > 0, "{:?}", v.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chirper_stays_correct_under_a_randomized_nemesis() {
    let seed = nemesis_seed(2027);
    let nemesis = Nemesis::Seeded { seed, faults: 6 };
    let v = tokio::time::timeout(TEST_LIMIT, chirper(PartitionRule::Correct, nemesis))
        .await
        .unwrap_or_else(|_| panic!("nemesis seed {seed}: the test did not finish in time"));
    let replay = format!("nemesis seed {seed} (replay: DSSMR_NEMESIS_SEED={seed})");
    v.state.unwrap_or_else(|e| panic!("{replay}: {e}"));
    let report = v.replies.unwrap_or_else(|e| panic!("{replay}: {e}"));
    assert!(report.replies > 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_check_catches_a_partition_that_skips_the_locality_check() {
    let v = tokio::time::timeout(
        TEST_LIMIT,
        chirper(PartitionRule::SkipLocalityCheck, Nemesis::None),
    )
    .await
    .expect("test finishes in time");
    let err = v
        .state
        .expect_err("posts miss followers in other partitions");
    eprintln!("caught in the final state: {err}");
    let err = v
        .replies
        .expect_err("timeline replies miss acknowledged posts");
    eprintln!("caught in the replies: {err}");
}
