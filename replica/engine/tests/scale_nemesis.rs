//! The scaling nemesis: a seeded random sequence of scale steps under a kv load with
//! transfers and reads of many keys, on an in-process cluster with on-disk state, every step
//! taken through the admin API the way the operator takes it:
//! add one or two partitions at once; drain and remove one or two (their replicas stopped and
//! their data deleted); try to re-add a number just removed (refused: numbers are never
//! reused) and add the next one; add an empty partition and drain another into it at once.
//!
//! After each step the load must make progress within [`STEP_PROGRESS`] and no step may take
//! longer than [`STEP_LIMIT`]; no operation may fail or time out (the proxies give up after
//! [`common::kvload::OP_TIMEOUT`], which would show as an `info`); at the end the sum of all
//! keys is kept, no variable sits in a removed partition and the history is linearizable.
//!
//! CI runs a fixed seed; `DSSMR_NEMESIS_SEED=<u64>` and `DSSMR_NEMESIS_STEPS=<n>` run
//! another sequence, e.g. `DSSMR_NEMESIS_SEED=7 DSSMR_NEMESIS_STEPS=60 cargo test -p
//! dssmr-engine --test scale_nemesis -- --nocapture`.

mod common;

use common::kvload::{KvLoad, INITIAL};
use common::scaling::{held, retire, until_state};
use dssmr_api::admin::AdminConnection;
use dssmr_check::history::linearizability::check_kv;
use dssmr_engine::app::kv::Kv;
use dssmr_engine::client::Mode;
use dssmr_engine::cluster::{engine_apps, LocalCluster};
use dssmr_engine::config::{AppKind, ClusterConfig};
use dssmr_engine::ids::GroupId;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The seed CI runs.
const DEFAULT_SEED: u64 = 29;
/// Steps CI runs.
const DEFAULT_STEPS: usize = 20;
/// Keys of the load.
const KEYS: usize = 8;
/// Clients of the load.
const CLIENTS: usize = 6;
/// Most partitions at once (3 replicas each, on 2 cores).
const MAX_PARTITIONS: usize = 4;
/// Operations the load must complete after each step...
const PROGRESS_PER_STEP: u64 = 50;
/// ...within this long.
const STEP_PROGRESS: Duration = Duration::from_secs(30);
/// No step may take longer.
const STEP_LIMIT: Duration = Duration::from_secs(90);

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One scale step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    AddOne,
    AddTwo,
    RemoveOne,
    RemoveTwo,
    ReAddRemoved,
    DrainIntoFresh,
}

struct Nemesis {
    cluster: LocalCluster,
    admin: AdminConnection,
    /// Partitions added and not removed, in order.
    active: Vec<GroupId>,
    /// Partitions removed.
    removed: Vec<GroupId>,
}

impl Nemesis {
    /// The steps possible now.
    fn possible(&self) -> Vec<Step> {
        let n = self.active.len();
        let mut steps = Vec::new();
        if n < MAX_PARTITIONS {
            steps.push(Step::AddOne);
            steps.push(Step::DrainIntoFresh);
        }
        if n + 2 <= MAX_PARTITIONS {
            steps.push(Step::AddTwo);
        }
        if n >= 2 {
            steps.push(Step::RemoveOne);
        }
        if n >= 3 {
            steps.push(Step::RemoveTwo);
        }
        if !self.removed.is_empty() && n < MAX_PARTITIONS {
            steps.push(Step::ReAddRemoved);
        }
        steps
    }

    async fn start_partition(&mut self) -> (GroupId, Vec<String>) {
        let (g, members) = self
            .cluster
            .add_partition()
            .await
            .expect("partition starts");
        assert!(
            !self.removed.contains(&g),
            "{g}: a removed number came back"
        );
        (g, members)
    }

    async fn add(&mut self, count: usize) -> Vec<GroupId> {
        let mut started = Vec::new();
        for _ in 0..count {
            started.push(self.start_partition().await);
        }
        let admin = &self.admin;
        let adds = started
            .iter()
            .map(|(g, members)| async move { admin.add_partition(g.0, members).await });
        for ((g, _), added) in started.iter().zip(futures::future::join_all(adds).await) {
            let added = added.unwrap_or_else(|e| panic!("add {g}: {e}"));
            assert_eq!(added.state, "active", "{added:?}");
            self.active.push(*g);
        }
        started.into_iter().map(|(g, _)| g).collect()
    }

    async fn drain_and_remove(&mut self, load: &KvLoad, parts: &[GroupId]) {
        let admin = &self.admin;
        let drains = parts
            .iter()
            .map(|p| async move { admin.drain_partition(p.0).await });
        for (p, drained) in parts.iter().zip(futures::future::join_all(drains).await) {
            drained.unwrap_or_else(|e| panic!("drain {p}: {e}"));
        }
        for p in parts {
            until_state(&self.admin, p.0, "drained", STEP_LIMIT).await;
            self.admin
                .remove_partition(p.0)
                .await
                .unwrap_or_else(|e| panic!("remove {p}: {e}"));
        }
        for p in parts {
            retire(&mut self.cluster, load, *p, STEP_LIMIT).await;
            self.active.retain(|q| q != p);
            self.removed.push(*p);
        }
    }

    async fn run(&mut self, step: Step, load: &KvLoad, rng: &mut StdRng) {
        match step {
            Step::AddOne => {
                self.add(1).await;
            }
            Step::AddTwo => {
                self.add(2).await;
            }
            Step::RemoveOne | Step::RemoveTwo => {
                let k = if step == Step::RemoveOne { 1 } else { 2 };
                let chosen: Vec<GroupId> = self.active.choose_multiple(rng, k).copied().collect();
                self.drain_and_remove(load, &chosen).await;
            }
            Step::ReAddRemoved => {
                let old = *self.removed.choose(rng).expect("a removed partition");
                let refused = self
                    .admin
                    .add_partition(old.0, &["127.0.0.1:9".to_string()])
                    .await
                    .expect_err("a removed number is refused");
                assert!(refused.to_string().contains("never reused"), "{refused}");
                self.add(1).await;
            }
            Step::DrainIntoFresh => {
                let from = *self.active.choose(rng).expect("an active partition");
                self.add(1).await;
                self.drain_and_remove(load, &[from]).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_steps_under_load_keep_every_operation_and_the_sum() {
    dssmr_engine::telemetry::init_for_tests();
    let seed = env("DSSMR_NEMESIS_SEED", DEFAULT_SEED);
    let steps = env("DSSMR_NEMESIS_STEPS", DEFAULT_STEPS);
    eprintln!("scaling nemesis: seed {seed}, {steps} steps");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::engine::start(engine_apps(Arc::new(Kv), 2), 2, dir.path()).await;
    let config = ClusterConfig::from_topology("t", Mode::Dssmr, AppKind::Kv, cluster.topology());
    let admin = AdminConnection::new(&config).unwrap();
    let mut load = KvLoad::start(cluster.topology(), KEYS, CLIENTS, seed).await;
    load.progress(PROGRESS_PER_STEP, STEP_PROGRESS).await;
    let mut nemesis = Nemesis {
        cluster,
        admin,
        active: vec![GroupId(1), GroupId(2)],
        removed: Vec::new(),
    };
    let mut log = Vec::new();
    for i in 0..steps {
        let step = *nemesis.possible().choose(&mut rng).expect("some step");
        let t0 = Instant::now();
        eprintln!("step {i}: {step:?} (active {:?})", nemesis.active);
        nemesis.run(step, &load, &mut rng).await;
        load.progress(PROGRESS_PER_STEP, STEP_PROGRESS).await;
        let took = t0.elapsed();
        log.push(format!(
            "{i}: {step:?} in {took:?} -> active {:?}",
            nemesis.active
        ));
        assert!(took < STEP_LIMIT, "step {i} ({step:?}) took {took:?}");
    }
    eprintln!("steps:\n{}", log.join("\n"));

    let sum = load.stop_and_sum().await;
    assert_eq!(sum, INITIAL * KEYS as i64, "the sum of all keys is kept");
    assert_eq!(
        load.failures().0,
        0,
        "every operation completed: {:?}",
        load.failures()
    );
    let status = nemesis.admin.status().await.expect("status");
    for p in &nemesis.removed {
        assert_eq!(
            held(&status, p.0),
            0,
            "{p} was removed with variables: {status:?}"
        );
    }
    check_kv(&load.history().events(), &load.initial()).expect("the history is linearizable");
    nemesis.cluster.shutdown().await;
}
