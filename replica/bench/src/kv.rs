//! `dssmr bench kv`: closed-loop clients run a mix of kv operations over a few keys, on S-SMR
//! or DS-SMR, and every operation can be recorded in a history that a linearizability checker
//! judges afterwards (`dssmr history check --app kv FILE`). [`KvBench`] is a [`ClosedLoop`]
//! workload of the crate's one run loop (`crate::run`, [`crate::ClosedLoop`]).
//!
//! Setup: `keys` keys named `k0`, `k1`, ... ([`key_name`]) are put to [`INITIAL_VALUE`]
//! through client proxies, concurrently. With a history, these puts are recorded like any
//! other operation, each loader under its own process id, so a history file is
//! self-contained: its initial state is the empty map.
//!
//! Load: the run loop's closed-loop clients, one operation in flight each. Operations (the
//! app's own [`KvCommand`]) are drawn by a
//! [`KvMix`] (default: 25 % get, 15 % put, 15 % cas, 25 % transfer, 20 % read_many), keys
//! uniformly:
//!
//! | op          | arguments                                                          |
//! |-------------|--------------------------------------------------------------------|
//! | `get`       | one key                                                            |
//! | `put`       | one key, a value in 0..200                                         |
//! | `cas`       | one key, expected in 95..105 (near the initial 100), new in 0..200 |
//! | `transfer`  | two distinct keys, an amount in 1..60                              |
//! | `read_many` | 2 to 4 distinct keys                                               |
//!
//! A put runs as the kv client runs it ([`execute`]): access; if the key is missing, create
//! it; if the create finds it (someone created it meanwhile), access again, a bounded number
//! of times. Outcomes are recorded as in [`crate::recorded`]: `ok` with the reply in the app's
//! encoding ([`dssmr_engine::app::kv`], decoded by [`dssmr_check::history::kv_model`]), `fail`
//! for [`ProxyError::Rejected`], `info` for [`ProxyError::Indeterminate`], after which the
//! client continues under a fresh process id.
//!
//! This module generates kv load; it changes nothing in the engine, encodes no JSON and owns
//! no run loop.

use crate::run::{
    mode_label, setup_command, setup_each, ClosedLoop, CommandJson, ReplyJson, RunOutcome, RunShape,
};
use crate::{record_outcome, recorded, BenchHistory, Error, Measurement, Result};
use dssmr_check::history::{EventKind, History};
use dssmr_engine::app::kv::{command_json, kv_var, reply_json, Kv, KvCommand, KvReply};
use dssmr_engine::client::{Created, Mode, Proxy, ProxyError};
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

/// The value every key holds after the setup.
pub const INITIAL_VALUE: i64 = 100;

/// How many times a put retries when its key keeps appearing and disappearing.
const PUT_ATTEMPTS: usize = 5;

/// The name of key `i`: `k0`, `k1`, ...
pub fn key_name(i: usize) -> String {
    format!("k{i}")
}

/// Runs one kv operation through the proxy as the kv client does. Every operation but `put`
/// is one access. A `put` on a missing key creates it; if the create finds the key (someone
/// else created it meanwhile), the put is accessed again, at most a few times, after which it
/// is [`ProxyError::Rejected`]: every attempt found the key missing or existing, so none took
/// effect.
pub async fn execute(p: &Proxy<Kv>, cmd: &KvCommand) -> Result<KvReply, ProxyError> {
    let KvCommand::Put { key, value } = cmd else {
        return p.access(cmd).await;
    };
    for _ in 0..PUT_ATTEMPTS {
        match p.access(cmd).await? {
            KvReply::Missing(_) => match p.create(kv_var(key), value).await? {
                Created::Created => return Ok(KvReply::Done),
                Created::Exists => continue,
            },
            reply => return Ok(reply),
        }
    }
    Err(ProxyError::Rejected(format!(
        "put {key}: the key kept appearing and disappearing ({PUT_ATTEMPTS} attempts)"
    )))
}

/// Runs `op` with [`execute`] and records it in `h` as an operation of `process`. Returns
/// false when the outcome is unknown (`info`): the caller must retire `process`.
pub async fn run_kv_op(p: &Proxy<Kv>, h: &History, process: u64, op: &KvCommand) -> bool {
    let (f, args) = command_json(op);
    h.invoke(process, f, args.clone());
    let outcome = execute(p, op).await;
    record_outcome(h, process, f, args, &outcome, reply_json) != EventKind::Info
}

/// The weights of the operations a client draws (a weight of 0 leaves the operation out).
///
/// Written `get=25,put=15,cas=15,transfer=25,read_many=20` on command lines; operations not
/// named there weigh 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvMix {
    /// Weight of `get`.
    pub get: u32,
    /// Weight of `put`.
    pub put: u32,
    /// Weight of `cas`.
    pub cas: u32,
    /// Weight of `transfer`.
    pub transfer: u32,
    /// Weight of `read_many`.
    pub read_many: u32,
}

impl Default for KvMix {
    /// 25 % get, 15 % put, 15 % cas, 25 % transfer, 20 % read_many.
    fn default() -> Self {
        KvMix {
            get: 25,
            put: 15,
            cas: 15,
            transfer: 25,
            read_many: 20,
        }
    }
}

impl KvMix {
    /// The operation names, in the order of the fields (the app's command names).
    pub const NAMES: [&'static str; 5] = KvCommand::NAMES;

    fn weights(&self) -> [u32; 5] {
        [self.get, self.put, self.cas, self.transfer, self.read_many]
    }

    fn weight_mut(&mut self, name: &str) -> Option<&mut u32> {
        Some(match name {
            "get" => &mut self.get,
            "put" => &mut self.put,
            "cas" => &mut self.cas,
            "transfer" => &mut self.transfer,
            "read_many" => &mut self.read_many,
            _ => return None,
        })
    }

    /// The sum of the weights.
    pub fn total(&self) -> u64 {
        self.weights().iter().map(|w| u64::from(*w)).sum()
    }

    /// Whether some operation needs two distinct keys.
    pub fn needs_two_keys(&self) -> bool {
        self.transfer > 0 || self.read_many > 0
    }
}

impl fmt::Display for KvMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Self::NAMES
            .iter()
            .zip(self.weights())
            .filter(|(_, w)| *w > 0)
            .map(|(n, w)| format!("{n}={w}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Why a `--mix` text is not a kv operation mix.
#[derive(Debug, thiserror::Error)]
pub enum BadMix {
    /// A part is not `op=weight`.
    #[error("{0:?} is not op=weight")]
    NotOpWeight(String),
    /// An operation is given twice.
    #[error("{0} is given twice")]
    Twice(String),
    /// An operation kv does not have.
    #[error("unknown operation {name:?} (expected {expected})")]
    UnknownOperation {
        /// The name given.
        name: String,
        /// The operations of kv.
        expected: String,
    },
    /// A weight that is not a whole number.
    #[error("weight of {name} must be a whole number, got {weight:?}")]
    Weight {
        /// The operation.
        name: String,
        /// The weight given.
        weight: String,
    },
    /// Every weight is zero.
    #[error("give at least one operation a positive weight")]
    AllZero,
}

impl FromStr for KvMix {
    type Err = BadMix;
    fn from_str(s: &str) -> Result<Self, BadMix> {
        let mut mix = KvMix {
            get: 0,
            put: 0,
            cas: 0,
            transfer: 0,
            read_many: 0,
        };
        let mut seen = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| BadMix::NotOpWeight(part.to_string()))?;
            let name = name.trim();
            if seen.contains(&name) {
                return Err(BadMix::Twice(name.to_string()));
            }
            seen.push(name);
            let slot = mix
                .weight_mut(name)
                .ok_or_else(|| BadMix::UnknownOperation {
                    name: name.to_string(),
                    expected: Self::NAMES.join(", "),
                })?;
            *slot = weight.trim().parse().map_err(|_| BadMix::Weight {
                name: name.to_string(),
                weight: weight.to_string(),
            })?;
        }
        if mix.total() == 0 {
            return Err(BadMix::AllZero);
        }
        Ok(mix)
    }
}

/// Settings of one kv run.
#[derive(Clone, Debug)]
pub struct KvBench {
    /// Keys, named by [`key_name`].
    pub keys: usize,
    /// The operation mix.
    pub mix: KvMix,
    /// Mode, cluster size, clients, times, DS-SMR policies and the seed of the operation
    /// generators.
    pub run: RunShape,
}

/// DS-SMR on 2 partitions × 3 replicas, 16 keys, the default mix, 8 clients (few enough for
/// the linearizability checker to judge the history), 1 s warm-up + 10 s, the paper's
/// defaults for DS-SMR (random destination, retry threshold 5).
impl Default for KvBench {
    fn default() -> Self {
        KvBench {
            keys: 16,
            mix: KvMix::default(),
            run: RunShape::default(),
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KvRecord {
    /// S-SMR or DS-SMR.
    pub mode: Mode,
    /// Partitions of the cluster.
    pub partitions: usize,
    /// Closed-loop clients.
    pub clients: usize,
    /// Keys.
    pub keys: usize,
    /// The operation mix (`get=25,put=15,...`).
    pub mix: String,
    /// Throughput, latencies, moves, retries, fallbacks, errors and the per-second series.
    #[serde(flatten)]
    pub measured: Measurement,
    /// Seconds spent putting the keys.
    pub setup_s: f64,
}

impl ClosedLoop for KvBench {
    type App = Kv;
    type Setup = Arc<Vec<String>>;
    type Client = Generator;
    type Record = KvRecord;
    const WHAT: &'static str = "kv operation";
    const COMMAND_JSON: CommandJson<Kv> = command_json;
    const REPLY_JSON: ReplyJson<Kv> = reply_json;

    fn shape(&self) -> &RunShape {
        &self.run
    }

    /// `kv ×2 DS-SMR`.
    fn label(&self) -> String {
        format!("kv ×{} {}", self.run.partitions, mode_label(self.run.mode))
    }

    fn check(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Settings(m));
        if self.keys < 1 {
            return fail("keys: need at least 1".into());
        }
        if self.keys < 2 && self.mix.needs_two_keys() {
            return fail(format!(
                "keys: transfer and read_many need at least 2 keys, got {}",
                self.keys
            ));
        }
        if self.mix.total() == 0 {
            return fail("mix: every weight is 0".into());
        }
        self.run.check()
    }

    fn app(&self) -> Arc<Kv> {
        Arc::new(Kv)
    }

    /// Puts every key to [`INITIAL_VALUE`].
    async fn setup(
        &self,
        proxies: &[Proxy<Kv>],
        history: Option<&BenchHistory>,
        bar: &ProgressBar,
    ) -> Result<Arc<Vec<String>>> {
        let keys: Vec<String> = (0..self.keys).map(key_name).collect();
        put_keys(&keys, proxies, history, bar).await?;
        Ok(Arc::new(keys))
    }

    fn client(&self, keys: &Arc<Vec<String>>, _id: usize, rng: StdRng) -> Generator {
        Generator {
            rng,
            keys: keys.clone(),
            mix: self.mix,
        }
    }

    fn next_command(client: &mut Generator) -> KvCommand {
        client.next_op()
    }

    fn call<'a>(
        proxy: &'a Proxy<Kv>,
        cmd: &'a KvCommand,
    ) -> impl Future<Output = Result<KvReply, ProxyError>> + Send + 'a {
        execute(proxy, cmd)
    }

    fn record(&self, run: RunOutcome<Arc<Vec<String>>>) -> KvRecord {
        KvRecord {
            mode: self.run.mode,
            partitions: run.partitions,
            clients: self.run.clients,
            keys: self.keys,
            mix: self.mix.to_string(),
            measured: run.measured,
            setup_s: run.setup_s,
        }
    }
}

/// Puts every key to [`INITIAL_VALUE`], `proxies.len()` at a time, each loader under its own
/// history process ([`setup_each`]).
async fn put_keys(
    keys: &[String],
    proxies: &[Proxy<Kv>],
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
) -> Result<()> {
    let message = format!("putting {} keys", keys.len());
    let count = keys.len() as u64;
    setup_each(
        count,
        proxies,
        history,
        bar,
        message,
        async |proxy, i, process| put_key(proxy, &keys[i as usize], history, process).await,
    )
    .await
}

/// Puts `key` to [`INITIAL_VALUE`]; a put with an unknown outcome is retried
/// ([`setup_command`], under a fresh process).
async fn put_key(
    proxy: &Proxy<Kv>,
    key: &str,
    history: Option<&BenchHistory>,
    process: &mut u64,
) -> Result<()> {
    let op = KvCommand::Put {
        key: key.to_string(),
        value: INITIAL_VALUE,
    };
    let step = || format!("setup: put {key}");
    let reply = setup_command(step, async || {
        let put = execute(proxy, &op);
        recorded(history, process, || command_json(&op), put, reply_json).await
    })
    .await?;
    match reply {
        KvReply::Done => Ok(()),
        other => Err(Error::UnexpectedReply {
            step: step(),
            reply: format!("{other:?}"),
        }),
    }
}

/// Draws the operations of one client.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    keys: Arc<Vec<String>>,
    mix: KvMix,
}

impl Generator {
    fn key(&mut self) -> String {
        self.keys
            .choose(&mut self.rng)
            .cloned()
            .unwrap_or_else(|| key_name(0))
    }

    /// `n` distinct keys (fewer if there are not that many), in random order.
    fn distinct_keys(&mut self, n: usize) -> Vec<String> {
        self.keys
            .choose_multiple(&mut self.rng, n)
            .cloned()
            .collect()
    }

    fn next_op(&mut self) -> KvCommand {
        let mut x = self.rng.random_range(0..self.mix.total().max(1));
        let mut pick = 0;
        for (i, w) in self.mix.weights().into_iter().enumerate() {
            if x < u64::from(w) {
                pick = i;
                break;
            }
            x -= u64::from(w);
        }
        match KvMix::NAMES[pick] {
            "get" => KvCommand::Get { key: self.key() },
            "put" => KvCommand::Put {
                key: self.key(),
                value: self.rng.random_range(0..200),
            },
            "cas" => KvCommand::Cas {
                key: self.key(),
                expected: self.rng.random_range(INITIAL_VALUE - 5..INITIAL_VALUE + 5),
                new: self.rng.random_range(0..200),
            },
            "transfer" => {
                let mut pair = self.distinct_keys(2);
                let to = pair.pop().unwrap_or_else(|| self.key());
                let from = pair.pop().unwrap_or_else(|| self.key());
                KvCommand::Transfer {
                    from,
                    to,
                    amount: self.rng.random_range(1..60),
                }
            }
            _ => {
                let n = self.rng.random_range(2..=4);
                KvCommand::ReadMany {
                    keys: self.distinct_keys(n),
                }
            }
        }
    }
}

/// Renders records as an aligned table.
pub fn table(records: &[KvRecord]) -> String {
    let mut s = format!(
        "{:<7} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>10} {:>7}\n",
        "mode",
        "parts",
        "keys",
        "ops/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "moves/s",
        "retries/s",
        "fallbacks",
        "errors"
    );
    for r in records {
        let m = &r.measured;
        s.push_str(&format!(
            "{:<7} {:>5} {:>5} {:>8.0} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>10.1} {:>10} {:>7}\n",
            mode_label(r.mode),
            r.partitions,
            r.keys,
            m.throughput_cps,
            m.p50_ms,
            m.p95_ms,
            m.p99_ms,
            m.moves_per_s,
            m.retries_per_s,
            m.fallbacks,
            m.errors
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::run_local;
    use dssmr_check::history::linearizability::check_kv;
    use rand::SeedableRng;
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::time::Duration;

    fn generator(mix: KvMix, keys: usize, seed: u64) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            keys: Arc::new((0..keys).map(key_name).collect()),
            mix,
        }
    }

    #[test]
    fn mix_parses_prints_and_names_what_is_wrong() {
        assert_eq!(
            "get=25,put=15,cas=15,transfer=25,read_many=20"
                .parse::<KvMix>()
                .expect("valid"),
            KvMix::default()
        );
        assert_eq!(
            KvMix::default().to_string(),
            "get=25,put=15,cas=15,transfer=25,read_many=20"
        );
        let only_gets: KvMix = "get=1".parse().expect("valid");
        assert_eq!(only_gets.total(), 1);
        assert!(!only_gets.needs_two_keys());
        assert_eq!(only_gets.to_string(), "get=1");
        for (bad, why) in [
            ("get=1,incr=2", "unknown operation"),
            ("get", "not op=weight"),
            ("get=x", "whole number"),
            ("get=0", "positive weight"),
            ("get=1,get=2", "twice"),
        ] {
            let err = bad.parse::<KvMix>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn generator_follows_the_mix_and_the_argument_ranges() {
        let mut g = generator(KvMix::default(), 8, 1);
        let n = 50_000;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for _ in 0..n {
            let op = g.next_op();
            match &op {
                KvCommand::Get { key } => assert!(key.starts_with('k')),
                KvCommand::Put { value, .. } => assert!((0..200).contains(value)),
                KvCommand::Cas { expected, new, .. } => {
                    assert!((95..105).contains(expected) && (0..200).contains(new));
                }
                KvCommand::Transfer { from, to, amount } => {
                    assert_ne!(from, to);
                    assert!((1..60).contains(amount));
                }
                KvCommand::ReadMany { keys } => {
                    assert!((2..=4).contains(&keys.len()), "{keys:?}");
                    let distinct: BTreeSet<_> = keys.iter().collect();
                    assert_eq!(distinct.len(), keys.len());
                }
            }
            *counts.entry(op.name()).or_default() += 1;
        }
        let share = |k: &str| counts.get(k).copied().unwrap_or(0) as f64 / n as f64;
        for (name, expected) in [
            ("get", 0.25),
            ("put", 0.15),
            ("cas", 0.15),
            ("transfer", 0.25),
            ("read_many", 0.20),
        ] {
            assert!((share(name) - expected).abs() < 0.01, "{name}: {counts:?}");
        }
        let mut two = generator("read_many=1".parse().unwrap(), 2, 2);
        assert!((0..100)
            .all(|_| matches!(two.next_op(), KvCommand::ReadMany { keys } if keys.len() == 2)));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let cfg = KvBench {
            keys: 1,
            ..KvBench::default()
        };
        assert!(cfg.check().unwrap_err().to_string().starts_with("keys:"));
        let cfg = KvBench {
            keys: 1,
            mix: "get=1,put=1".parse().unwrap(),
            ..KvBench::default()
        };
        assert!(cfg.check().is_ok());
        let mut cfg = KvBench::default();
        cfg.run.clients = 0;
        assert!(cfg.check().unwrap_err().to_string().starts_with("clients:"));
    }

    /// A short DS-SMR run on a real local cluster with few keys, so that operations contend
    /// and keys move: the recorded history, setup included, is linearizable from the empty
    /// map.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_run_records_a_self_contained_linearizable_history() {
        dssmr_engine::telemetry::init_for_tests();
        let cfg = KvBench {
            keys: 4,
            run: RunShape {
                clients: 4,
                warmup: Duration::from_millis(200),
                duration: Duration::from_secs(1),
                retry_threshold: 1,
                ..KvBench::default().run
            },
            ..KvBench::default()
        };
        let history = BenchHistory::new(History::in_memory());
        let record = run_local(&cfg, Some(&history), &ProgressBar::hidden())
            .await
            .expect("run");
        let m = &record.measured;
        assert!(m.commands > 0 && m.throughput_cps > 0.0, "{record:?}");
        // Keys move until every multi-key operation finds its keys together (with one shared
        // location cache and no competing placement, they soon all live in one partition).
        assert!(
            m.series.iter().any(|s| s.moves_per_s > 0.0),
            "multi-key operations move keys: {record:?}"
        );
        let events = history.history().events();
        let setup: Vec<_> = events
            .iter()
            .filter(|e| e.kind == EventKind::Ok && e.args["value"] == INITIAL_VALUE)
            .filter(|e| e.f == "put")
            .map(|e| e.args["key"].as_str().unwrap_or_default().to_string())
            .collect();
        for k in 0..4 {
            assert!(setup.contains(&key_name(k)), "k{k} put in the setup");
        }
        check_kv(&events, &BTreeMap::new()).expect("linearizable");
    }
}
