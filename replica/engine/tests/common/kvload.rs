//! A kv load for the scaling tests: closed-loop clients that transfer between random keys,
//! read several keys at once and read single keys, recorded in a history; progress is
//! waited for, never slept for.

use super::Progress;
use dssmr_bench::kv::run_kv_op;
use dssmr_check::history::{EventKind, History};
use dssmr_engine::app::kv::{kv_var, Kv, KvCommand, KvReply};
use dssmr_engine::client::proxy::ProxyStats;
use dssmr_engine::client::{
    Connections, Created, DestinationPolicy, LocationCache, Mode, Proxy, ProxyConfig, Topology,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every key's initial value.
pub const INITIAL: i64 = 100;

/// How long one operation may take before the proxy gives up (a bound the scaling tests
/// state: no operation may wait longer for a scale step).
pub const OP_TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `cond` every 50 ms until it holds, failing with `what` after `limit`.
pub async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running kv load.
pub struct KvLoad {
    keys: Vec<String>,
    history: History,
    progress: Arc<Progress>,
    conns: Arc<Connections>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn proxy(conns: &Arc<Connections>, destination: DestinationPolicy) -> Proxy<Kv> {
    Proxy::new(
        Arc::new(Kv),
        ProxyConfig {
            mode: Mode::Dssmr,
            destination,
            timeout: OP_TIMEOUT,
            ..ProxyConfig::default()
        },
        conns.clone(),
        Arc::new(LocationCache::default()),
        Arc::new(ProxyStats::default()),
    )
    .expect("proxy")
}

fn random_op(rng: &mut StdRng, keys: &[String]) -> KvCommand {
    match rng.random_range(0..100) {
        0..60 => {
            let pair: Vec<&String> = keys.choose_multiple(rng, 2).collect();
            KvCommand::Transfer {
                from: pair[0].clone(),
                to: pair[1].clone(),
                amount: rng.random_range(1..30),
            }
        }
        60..85 => {
            let n = rng.random_range(2..=4.min(keys.len()));
            KvCommand::ReadMany {
                keys: keys.choose_multiple(rng, n).cloned().collect(),
            }
        }
        _ => KvCommand::Get {
            key: keys.choose(rng).cloned().expect("keys"),
        },
    }
}

impl KvLoad {
    /// Creates `keys` keys (`k0`, ...) holding [`INITIAL`] and starts `clients` clients
    /// (random and affinity destinations alternately, each with its own location cache),
    /// seeded with `seed`.
    pub async fn start(topology: &Topology, keys: usize, clients: usize, seed: u64) -> Self {
        let policies = [DestinationPolicy::Random, DestinationPolicy::Affinity];
        Self::with_policies(topology, keys, clients, seed, &policies).await
    }

    /// As [`KvLoad::start`], client `c` choosing destinations by `policies[c % len]`.
    pub async fn with_policies(
        topology: &Topology,
        keys: usize,
        clients: usize,
        seed: u64,
        policies: &[DestinationPolicy],
    ) -> Self {
        let conns = Arc::new(Connections::new(topology).expect("connections"));
        let keys: Vec<String> = (0..keys).map(|i| format!("k{i}")).collect();
        let setup = proxy(&conns, DestinationPolicy::Random);
        for k in &keys {
            assert_eq!(
                setup.create(kv_var(k), &INITIAL).await.expect("create"),
                Created::Created
            );
        }
        let history = History::in_memory();
        let progress = Arc::new(Progress::default());
        let tasks = (0..clients)
            .map(|c| {
                let destination = policies[c % policies.len()];
                let p = proxy(&conns, destination);
                let (h, keys, progress) = (history.clone(), keys.clone(), progress.clone());
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(c as u64));
                    let mut process = c as u64;
                    while !progress.stopped() {
                        let op = random_op(&mut rng, &keys);
                        if !run_kv_op(&p, &h, process, &op).await {
                            process += clients as u64;
                        }
                        progress.bump();
                    }
                })
            })
            .collect();
        KvLoad {
            keys,
            history,
            progress,
            conns,
            tasks,
        }
    }

    /// True while the clients' view of the topology still has `g` (an operator deletes a
    /// removed partition's pods only once running clients stopped using it, or they would
    /// find it unreachable instead of being told it was removed).
    pub fn uses(&self, g: dssmr_engine::ids::GroupId) -> bool {
        self.conns.live().contains(g)
    }

    /// Operations completed so far (whatever their outcome).
    pub fn done(&self) -> u64 {
        self.progress.done()
    }

    /// Operations that did not complete with `ok` so far, with the first few of them.
    pub fn failures(&self) -> (usize, Vec<String>) {
        let failed: Vec<String> = self
            .history
            .events()
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::Fail | EventKind::Info))
            .map(|e| format!("{:?} {} {}", e.kind, e.f, e.args))
            .collect();
        let n = failed.len();
        (n, failed.into_iter().take(5).collect())
    }

    /// Waits until `n` more operations completed, failing after `limit` with what it saw.
    pub async fn progress(&self, n: u64, limit: Duration) {
        let before = self.done();
        if !self.progress.advance(n, limit).await {
            panic!(
                "the load made {} of {n} operations in {limit:?} (failures: {:?})",
                self.done() - before,
                self.failures()
            );
        }
    }

    /// The recorded history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The keys and their initial values.
    pub fn initial(&self) -> BTreeMap<String, i64> {
        self.keys.iter().map(|k| (k.clone(), INITIAL)).collect()
    }

    /// Stops the clients and waits for them.
    pub async fn stop(&mut self) {
        self.progress.stop();
        for t in self.tasks.drain(..) {
            t.await.expect("client");
        }
    }

    /// Stops the clients, waits for them, and reads every key at once (which gathers them
    /// in one partition); returns the sum.
    pub async fn stop_and_sum(&mut self) -> i64 {
        self.stop().await;
        let p = proxy(&self.conns, DestinationPolicy::Random);
        let reply = p
            .access(&KvCommand::ReadMany {
                keys: self.keys.clone(),
            })
            .await
            .expect("read every key");
        let KvReply::Values(values) = reply else {
            panic!("unexpected reply {reply:?}")
        };
        values.iter().sum()
    }
}
