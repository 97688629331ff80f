//! `dssmr bench kv`: closed-loop clients run a mix of kv operations over a few keys, on S-SMR
//! or DS-SMR, and every operation can be recorded in a history that a linearizability checker
//! judges afterwards (`dssmr history check --app kv FILE`).
//!
//! Setup: `keys` keys named `k0`, `k1`, ... ([`key_name`]) are put to [`INITIAL_VALUE`]
//! through client proxies, concurrently. With a history, these puts are recorded like any
//! other operation, each loader under its own process id, so a history file is
//! self-contained: its initial state is the empty map.
//!
//! Load: `clients` closed-loop clients, each a [`Proxy`] with one operation in flight, sharing
//! one [`Connections`], [`LocationCache`] and [`ProxyStats`]. Operations are drawn by a
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
//! of times. Outcomes are recorded as in [`crate::recorded`]: `ok` with the reply in the
//! encoding of [`dssmr_check::history::kv_model`], `fail` for [`ProxyError::Rejected`], `info` for
//! [`ProxyError::Indeterminate`], after which the client continues under a fresh process id.
//!
//! This module generates load and measures; it changes nothing in the engine.

use crate::chirper::mode_label;
use crate::stats::Latencies;
use crate::{drive, join_clients, record_outcome, recorded, BenchHistory, Load, Measurement};
use dssmr_check::history::kv_model::{KvOp, KvRet};
use dssmr_check::history::{EventKind, History};
use dssmr_engine::app::kv::{kv_var, Kv, KvCommand, KvReply};
use dssmr_engine::client::proxy::ProxyStats;
use dssmr_engine::client::{
    Connections, Created, DestinationPolicy, LocationCache, Mode, Proxy, ProxyConfig, ProxyError,
    Topology,
};
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The value every key holds after the setup.
pub const INITIAL_VALUE: i64 = 100;

/// How many times a put retries when its key keeps appearing and disappearing.
const PUT_ATTEMPTS: usize = 5;

/// How many times the setup retries a put whose outcome is unknown.
const SETUP_ATTEMPTS: usize = 5;

/// The name of key `i`: `k0`, `k1`, ...
pub fn key_name(i: usize) -> String {
    format!("k{i}")
}

/// The kv command of a history operation.
pub fn kv_command(op: &KvOp) -> KvCommand {
    match op.clone() {
        KvOp::Get { key } => KvCommand::Get { key },
        KvOp::Put { key, value } => KvCommand::Put { key, value },
        KvOp::Cas { key, expected, new } => KvCommand::Cas { key, expected, new },
        KvOp::Transfer { from, to, amount } => KvCommand::Transfer { from, to, amount },
        KvOp::ReadMany { keys } => KvCommand::ReadMany { keys },
    }
}

/// The history result of a kv reply.
pub fn kv_ret(reply: KvReply) -> KvRet {
    match reply {
        KvReply::Value(v) => KvRet::Value(v),
        KvReply::Done => KvRet::Done,
        KvReply::Cas(swapped) => KvRet::Swapped(swapped),
        KvReply::Transfer(moved) => KvRet::Transferred(moved),
        KvReply::Values(values) => KvRet::Values(values),
        KvReply::Missing(keys) => KvRet::Missing(keys),
    }
}

/// Runs one kv operation through the proxy as the kv client does. Every operation but `put`
/// is one access. A `put` on a missing key creates it; if the create finds the key (someone
/// else created it meanwhile), the put is accessed again, at most a few times, after which it
/// is [`ProxyError::Rejected`]: every attempt found the key missing or existing, so none took
/// effect.
pub async fn execute(p: &Proxy<Kv>, op: &KvOp) -> Result<KvRet, ProxyError> {
    let cmd = kv_command(op);
    let KvOp::Put { key, value } = op else {
        return p.access(&cmd).await.map(kv_ret);
    };
    for _ in 0..PUT_ATTEMPTS {
        match p.access(&cmd).await? {
            KvReply::Missing(_) => match p.create(kv_var(key), value).await? {
                Created::Created => return Ok(KvRet::Done),
                Created::Exists => continue,
            },
            reply => return Ok(kv_ret(reply)),
        }
    }
    Err(ProxyError::Rejected(format!(
        "put {key}: the key kept appearing and disappearing ({PUT_ATTEMPTS} attempts)"
    )))
}

/// Runs `op` with [`execute`] and records it in `h` as an operation of `process`. Returns
/// false when the outcome is unknown (`info`): the caller must retire `process`.
pub async fn run_kv_op(p: &Proxy<Kv>, h: &History, process: u64, op: &KvOp) -> bool {
    let (f, args) = op.encode();
    h.invoke(process, f, args.clone());
    let outcome = execute(p, op).await;
    record_outcome(h, process, f, args, &outcome, KvRet::encode) != EventKind::Info
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
    /// The operation names, in the order of the fields.
    pub const NAMES: [&'static str; 5] = ["get", "put", "cas", "transfer", "read_many"];

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

impl FromStr for KvMix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
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
                .ok_or_else(|| format!("{part:?} is not op=weight"))?;
            let name = name.trim();
            if seen.contains(&name) {
                return Err(format!("{name} is given twice"));
            }
            seen.push(name);
            let slot = mix.weight_mut(name).ok_or_else(|| {
                format!(
                    "unknown operation {name:?} (expected {})",
                    Self::NAMES.join(", ")
                )
            })?;
            *slot = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight of {name} must be a whole number, got {weight:?}"))?;
        }
        if mix.total() == 0 {
            return Err("give at least one operation a positive weight".into());
        }
        Ok(mix)
    }
}

/// Settings of one kv run.
#[derive(Clone, Debug)]
pub struct KvBench {
    /// S-SMR or DS-SMR.
    pub mode: Mode,
    /// Partitions of the local cluster ([`run`]; [`run_against`] uses the topology's).
    pub partitions: usize,
    /// Replicas per group of the local cluster.
    pub replicas: usize,
    /// Keys, named by [`key_name`].
    pub keys: usize,
    /// The operation mix.
    pub mix: KvMix,
    /// Closed-loop clients, one operation in flight each.
    pub clients: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured load before it.
    pub warmup: Duration,
    /// Retries before a DS-SMR command falls back to S-SMR.
    pub retry_threshold: u32,
    /// Where DS-SMR gathers the keys of a multi-key operation.
    pub destination: DestinationPolicy,
    /// Worker threads of each replica's runtime (local cluster).
    pub threads_per_replica: usize,
    /// Seed of the operation generators.
    pub seed: u64,
    /// The counters the proxies update; given, they are shared (e.g. with a metrics
    /// endpoint), else each run has its own.
    pub stats: Option<Arc<ProxyStats>>,
}

/// DS-SMR on 2 partitions × 3 replicas, 16 keys, the default mix, 8 clients (few enough for
/// the linearizability checker to judge the history), 1 s warm-up + 10 s, the paper's
/// defaults for DS-SMR (random destination, retry threshold 5).
impl Default for KvBench {
    fn default() -> Self {
        KvBench {
            mode: Mode::Dssmr,
            partitions: 2,
            replicas: 3,
            keys: 16,
            mix: KvMix::default(),
            clients: 8,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            retry_threshold: ProxyConfig::default().retry_threshold,
            destination: DestinationPolicy::Random,
            threads_per_replica: 1,
            seed: 1,
            stats: None,
        }
    }
}

impl KvBench {
    /// Checks the settings; the error names the field.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.keys >= 1, "keys: need at least 1");
        anyhow::ensure!(
            self.keys >= 2 || !self.mix.needs_two_keys(),
            "keys: transfer and read_many need at least 2 keys, got {}",
            self.keys
        );
        anyhow::ensure!(self.mix.total() > 0, "mix: every weight is 0");
        anyhow::ensure!(self.clients >= 1, "clients: need at least 1");
        anyhow::ensure!(self.partitions >= 1, "partitions: need at least 1");
        anyhow::ensure!(
            self.replicas % 2 == 1,
            "replicas: need an odd number (2f+1), got {}",
            self.replicas
        );
        anyhow::ensure!(!self.duration.is_zero(), "duration: must be positive");
        Ok(())
    }

    /// A short name of the run for people: `kv ×2 DS-SMR`.
    pub fn label(&self) -> String {
        format!("kv ×{} {}", self.partitions, mode_label(self.mode))
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

/// Starts a local cluster (oracle for DS-SMR, `partitions` × `replicas`), runs the mix on it
/// and shuts it down.
pub async fn run(
    cfg: &KvBench,
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
) -> anyhow::Result<KvRecord> {
    cfg.check()?;
    bar.set_message(format!(
        "starting {} partition(s) × {} replicas{}",
        cfg.partitions,
        cfg.replicas,
        if cfg.mode == Mode::Dssmr {
            " + oracle"
        } else {
            ""
        }
    ));
    let cluster = LocalCluster::start(ClusterOptions {
        replicas: cfg.replicas,
        threads_per_replica: cfg.threads_per_replica,
        ..ClusterOptions::engine(Arc::new(Kv), cfg.partitions, cfg.mode)
    })
    .await?;
    let result = run_against(cfg, cluster.topology(), history, bar).await;
    bar.set_message("shutting down");
    cluster.shutdown().await;
    result
}

/// Puts the keys into the running cluster of `topology` (running `cfg.mode`) and runs the mix
/// against it.
pub async fn run_against(
    cfg: &KvBench,
    topology: &Topology,
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
) -> anyhow::Result<KvRecord> {
    cfg.check()?;
    let conns = Arc::new(Connections::new(topology)?);
    let cache = Arc::new(LocationCache::default());
    let stats = cfg
        .stats
        .clone()
        .unwrap_or_else(|| Arc::new(ProxyStats::default()));
    let proxy_config = ProxyConfig {
        mode: cfg.mode,
        retry_threshold: cfg.retry_threshold,
        destination: cfg.destination,
        ..ProxyConfig::default()
    };
    let proxies = (0..cfg.clients)
        .map(|_| {
            Proxy::new(
                Arc::new(Kv),
                proxy_config.clone(),
                conns.clone(),
                cache.clone(),
                stats.clone(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let keys: Arc<Vec<String>> = Arc::new((0..cfg.keys).map(key_name).collect());

    let setup = Instant::now();
    put_keys(&keys, &proxies, history, bar).await?;
    let setup_s = setup.elapsed().as_secs_f64();

    let load = Arc::new(Load::default());
    let tasks: Vec<_> = proxies
        .into_iter()
        .enumerate()
        .map(|(i, proxy)| {
            let generator = Generator {
                rng: StdRng::seed_from_u64(
                    cfg.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ),
                keys: keys.clone(),
                mix: cfg.mix,
            };
            tokio::spawn(client(i, proxy, generator, load.clone(), history.cloned()))
        })
        .collect();

    let window = drive(cfg.warmup, cfg.duration, &load, &stats, bar).await;
    let lat = join_clients(&load, bar, tasks).await?;
    Ok(KvRecord {
        mode: cfg.mode,
        partitions: conns.partitions().len(),
        clients: cfg.clients,
        keys: cfg.keys,
        mix: cfg.mix.to_string(),
        measured: window.measure(&load, &lat),
        setup_s,
    })
}

/// Puts every key to [`INITIAL_VALUE`], `proxies.len()` at a time, each loader under its own
/// history process; a put with an unknown outcome is retried (under a fresh process).
async fn put_keys(
    keys: &[String],
    proxies: &[Proxy<Kv>],
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    bar.set_length(keys.len() as u64);
    bar.set_position(0);
    bar.set_message(format!("putting {} keys", keys.len()));
    let loaders = proxies.iter().take(keys.len()).map(|proxy| async {
        let mut process = history.map(BenchHistory::fresh_process).unwrap_or_default();
        while let Some(key) = keys.get(next.fetch_add(1, Ordering::Relaxed)) {
            let op = KvOp::Put {
                key: key.clone(),
                value: INITIAL_VALUE,
            };
            let mut attempts = 0;
            loop {
                attempts += 1;
                let put = execute(proxy, &op);
                match recorded(history, &mut process, || op.encode(), put, KvRet::encode).await {
                    Ok(KvRet::Done) => break,
                    Ok(other) => anyhow::bail!("setup: put {key} returned {other:?}"),
                    Err(ProxyError::Indeterminate(e)) if attempts < SETUP_ATTEMPTS => {
                        tracing::debug!(%key, error = %e, "setup put indeterminate; retrying");
                    }
                    Err(e) => anyhow::bail!("setup: put {key}: {e}"),
                }
            }
            bar.inc(1);
        }
        Ok(())
    });
    futures::future::try_join_all(loaders).await?;
    Ok(())
}

/// Draws the operations of one client.
struct Generator {
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

    fn next_op(&mut self) -> KvOp {
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
            "get" => KvOp::Get { key: self.key() },
            "put" => KvOp::Put {
                key: self.key(),
                value: self.rng.random_range(0..200),
            },
            "cas" => KvOp::Cas {
                key: self.key(),
                expected: self.rng.random_range(INITIAL_VALUE - 5..INITIAL_VALUE + 5),
                new: self.rng.random_range(0..200),
            },
            "transfer" => {
                let mut pair = self.distinct_keys(2);
                let to = pair.pop().unwrap_or_else(|| self.key());
                let from = pair.pop().unwrap_or_else(|| self.key());
                KvOp::Transfer {
                    from,
                    to,
                    amount: self.rng.random_range(1..60),
                }
            }
            _ => {
                let n = self.rng.random_range(2..=4);
                KvOp::ReadMany {
                    keys: self.distinct_keys(n),
                }
            }
        }
    }
}

/// One closed-loop client: issues operations until told to stop. Returns the latencies of the
/// operations that completed in the measured window; fails only on a configuration error.
async fn client(
    id: usize,
    proxy: Proxy<Kv>,
    mut generator: Generator,
    load: Arc<Load>,
    history: Option<BenchHistory>,
) -> Result<Latencies, ProxyError> {
    let mut lat = Latencies::default();
    let history = history.as_ref();
    let mut process = history.map(BenchHistory::fresh_process).unwrap_or_default();
    while load.running() {
        let op = generator.next_op();
        let start = Instant::now();
        let outcome = recorded(
            history,
            &mut process,
            || op.encode(),
            execute(&proxy, &op),
            KvRet::encode,
        )
        .await;
        load.tally(&outcome, start.elapsed(), &mut lat, id, "kv operation")?;
    }
    Ok(lat)
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
    use dssmr_check::history::linearizability::check_kv;
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

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
            "get=25,put=15,cas=15,transfer=25,read_many=20".parse::<KvMix>(),
            Ok(KvMix::default())
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
            let err = bad.parse::<KvMix>().unwrap_err();
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
                KvOp::Get { key } => assert!(key.starts_with('k')),
                KvOp::Put { value, .. } => assert!((0..200).contains(value)),
                KvOp::Cas { expected, new, .. } => {
                    assert!((95..105).contains(expected) && (0..200).contains(new));
                }
                KvOp::Transfer { from, to, amount } => {
                    assert_ne!(from, to);
                    assert!((1..60).contains(amount));
                }
                KvOp::ReadMany { keys } => {
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
        assert!(
            (0..100).all(|_| matches!(two.next_op(), KvOp::ReadMany { keys } if keys.len() == 2))
        );
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
        let cfg = KvBench {
            clients: 0,
            ..KvBench::default()
        };
        assert!(cfg.check().unwrap_err().to_string().starts_with("clients:"));
    }

    #[test]
    fn replies_map_to_the_history_encoding() {
        let encoded = |r| kv_ret(r).encode();
        assert_eq!(encoded(KvReply::Value(5)), json!({"value": 5}));
        assert_eq!(encoded(KvReply::Done), json!("done"));
        assert_eq!(encoded(KvReply::Cas(true)), json!({"swapped": true}));
        assert_eq!(
            encoded(KvReply::Transfer(false)),
            json!({"transferred": false})
        );
        assert_eq!(
            encoded(KvReply::Values(vec![1, 2])),
            json!({"values": [1, 2]})
        );
        assert_eq!(
            encoded(KvReply::Missing(vec!["k".into()])),
            json!({"missing": ["k"]})
        );
        let op = KvOp::ReadMany {
            keys: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            kv_command(&op),
            KvCommand::ReadMany {
                keys: vec!["a".into(), "b".into()]
            }
        );
    }

    /// A short DS-SMR run on a real local cluster with few keys, so that operations contend
    /// and keys move: the recorded history, setup included, is linearizable from the empty
    /// map.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_run_records_a_self_contained_linearizable_history() {
        dssmr_engine::telemetry::init_for_tests();
        let cfg = KvBench {
            keys: 4,
            clients: 4,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            retry_threshold: 1,
            ..KvBench::default()
        };
        let history = BenchHistory::new(History::in_memory());
        let record = run(&cfg, Some(&history), &ProgressBar::hidden())
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
