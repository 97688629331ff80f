//! The one run loop of the closed-loop benchmarks.
//!
//! A run has a shape ([`RunShape`]: mode, cluster size, clients, warm-up and measured time,
//! DS-SMR policies, seed) and a workload ([`ClosedLoop`]: the app, a setup, and what one
//! client does next). [`run_local`] starts a local cluster (an oracle for DS-SMR,
//! `partitions` × `replicas`) and hands it to [`run_against`], which does the rest on any
//! running cluster:
//!
//! 1. builds `clients` proxies sharing one [`Connections`], one [`LocationCache`] and one
//!    [`ProxyStats`], like the client threads of one process;
//! 2. runs the workload's setup through them ([`ClosedLoop::setup`], timed);
//! 3. spawns one closed-loop client per proxy: each draws a command
//!    ([`ClosedLoop::next_command`]), issues it ([`ClosedLoop::call`]), records it in the
//!    history if there is one ([`crate::recorded`], with the app's JSON encoding) and counts
//!    it ([`Load::tally`]), until told to stop;
//! 4. drives warm-up and measured window ([`drive`]), stops and joins the clients, and hands
//!    the [`RunOutcome`] to the workload to make its record ([`ClosedLoop::record`]).
//!
//! [`run_points`] runs several points one after the other, each with its own progress bar;
//! [`setup_each`] is the loop of a setup (items spread over the proxies).
//! This module owns the order of these steps; it knows no workload and encodes no command.

use crate::load::{drive, join_clients, Load, Measurement};
use crate::recording::{recorded, BenchHistory};
use crate::stats::Latencies;
use crate::{Error, Result};
use dssmr_engine::app::StateMachine;
use dssmr_engine::client::proxy::ProxyStats;
use dssmr_engine::client::{
    Connections, DestinationPolicy, LocationCache, Mode, Proxy, ProxyConfig, ProxyError, Topology,
};
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use dssmr_engine::group::ReadRule;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The paper's name of a mode, for people (`S-SMR`, `DS-SMR`).
pub fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Ssmr => "S-SMR",
        Mode::Dssmr => "DS-SMR",
    }
}

/// A progress bar for a run (hidden unless `visible`), prefixed with `prefix`.
pub fn progress_bar(prefix: &str, visible: bool) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(1)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>7} {bar:32.cyan/blue} {msg}")
            .expect("static progress template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

/// What every closed-loop run has, whatever its workload.
#[derive(Clone, Debug)]
pub struct RunShape {
    /// S-SMR or DS-SMR.
    pub mode: Mode,
    /// Partitions of the local cluster ([`run_local`]; [`run_against`] uses the topology's).
    pub partitions: usize,
    /// Replicas per group of the local cluster.
    pub replicas: usize,
    /// Closed-loop clients, one command in flight each.
    pub clients: usize,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured load before it.
    pub warmup: Duration,
    /// Retries before a DS-SMR command falls back to S-SMR.
    pub retry_threshold: u32,
    /// Where DS-SMR gathers the variables of a multi-partition command.
    pub destination: DestinationPolicy,
    /// Worker threads of each replica's runtime (local cluster).
    pub threads_per_replica: usize,
    /// How the local cluster's leaders answer read-only commands.
    pub reads: ReadRule,
    /// Seed of the command generators.
    pub seed: u64,
    /// The counters the proxies update; given, they are shared (e.g. with a metrics
    /// endpoint), else each run has its own.
    pub stats: Option<Arc<ProxyStats>>,
}

/// DS-SMR on 2 partitions × 3 replicas (one worker thread each), 8 clients, 1 s warm-up +
/// 10 s, the paper's DS-SMR defaults (random destination, retry threshold 5), seed 1, and
/// counters of its own.
impl Default for RunShape {
    fn default() -> Self {
        RunShape {
            mode: Mode::Dssmr,
            partitions: 2,
            replicas: 3,
            clients: 8,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            retry_threshold: ProxyConfig::default().retry_threshold,
            destination: DestinationPolicy::Random,
            threads_per_replica: 1,
            reads: ReadRule::ReadIndex,
            seed: 1,
            stats: None,
        }
    }
}

impl RunShape {
    /// Checks the shape; the error names the field.
    pub fn check(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Settings(m));
        if self.clients < 1 {
            return fail("clients: need at least 1".into());
        }
        if self.partitions < 1 {
            return fail("partitions: need at least 1".into());
        }
        if self.replicas % 2 != 1 {
            return fail(format!(
                "replicas: need an odd number (2f+1), got {}",
                self.replicas
            ));
        }
        if self.duration.is_zero() {
            return fail("duration: must be positive".into());
        }
        Ok(())
    }

    /// The generator seed of client `i` (distinct per client, fixed by [`RunShape::seed`]).
    fn client_rng(&self, i: usize) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// What [`run_against`] measured, for the workload to make its record of.
#[derive(Debug)]
pub struct RunOutcome<S> {
    /// Partitions of the cluster the run loaded.
    pub partitions: usize,
    /// Throughput, latencies, moves, ... of the measured window.
    pub measured: Measurement,
    /// Seconds the setup took.
    pub setup_s: f64,
    /// What the setup returned.
    pub setup: S,
}

/// The history name and arguments of a command of `A` (the app's encoder).
pub(crate) type CommandJson<A> = fn(&<A as StateMachine>::Command) -> (&'static str, Value);

/// The history result of a reply of `A` (the app's encoder).
pub(crate) type ReplyJson<A> = fn(&<A as StateMachine>::Reply) -> Value;

/// A closed-loop workload: its app, its setup and what one client does next.
pub trait ClosedLoop: Sync + 'static {
    /// The replicated application the clients talk to.
    type App: StateMachine;
    /// What the setup leaves for the clients (e.g. the keys, the social graph).
    type Setup: Send + Sync;
    /// One client's command generator.
    type Client: Send + 'static;
    /// The result of one run.
    type Record;
    /// What a command is called in logs (`kv operation`).
    const WHAT: &'static str;
    /// The history name and arguments of a command.
    const COMMAND_JSON: CommandJson<Self::App>;
    /// The history result of a reply.
    const REPLY_JSON: ReplyJson<Self::App>;

    /// The shape of the run.
    fn shape(&self) -> &RunShape;
    /// A short name of the run for people: `mix ×2 DS-SMR`.
    fn label(&self) -> String;
    /// Checks the workload's own settings, then the shape; the error names the field.
    fn check(&self) -> Result<()>;
    /// The application, as the local cluster and the proxies run it.
    fn app(&self) -> Arc<Self::App>;
    /// Prepares the cluster through `proxies` (one per client), recording into `history`.
    fn setup(
        &self,
        proxies: &[Proxy<Self::App>],
        history: Option<&BenchHistory>,
        bar: &ProgressBar,
    ) -> impl Future<Output = Result<Self::Setup>>;
    /// The generator of client `id`, drawing from `rng`.
    fn client(&self, setup: &Self::Setup, id: usize, rng: StdRng) -> Self::Client;
    /// The next command of `client`.
    fn next_command(client: &mut Self::Client) -> <Self::App as StateMachine>::Command;
    /// Issues `cmd` as the workload's clients do (by default, one access).
    fn call<'a>(
        proxy: &'a Proxy<Self::App>,
        cmd: &'a <Self::App as StateMachine>::Command,
    ) -> impl Future<Output = Result<<Self::App as StateMachine>::Reply, ProxyError>> + Send + 'a
    {
        proxy.access(cmd)
    }
    /// The record of a finished run.
    fn record(&self, run: RunOutcome<Self::Setup>) -> Self::Record;
}

/// Starts a local cluster (oracle for DS-SMR, `partitions` × `replicas`), runs `w` on it and
/// shuts it down.
pub async fn run_local<W: ClosedLoop>(
    w: &W,
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
) -> Result<W::Record> {
    w.check()?;
    let shape = w.shape();
    bar.set_message(format!(
        "starting {} partition(s) × {} replicas{}",
        shape.partitions,
        shape.replicas,
        if shape.mode == Mode::Dssmr {
            " + oracle"
        } else {
            ""
        }
    ));
    let cluster = LocalCluster::start(ClusterOptions {
        replicas: shape.replicas,
        threads_per_replica: shape.threads_per_replica,
        read_rule: shape.reads,
        ..ClusterOptions::engine(w.app(), shape.partitions, shape.mode)
    })
    .await
    .map_err(|e| Error::Cluster(e.into()))?;
    let result = run_against(w, cluster.topology(), history, bar).await;
    bar.set_message("shutting down");
    cluster.shutdown().await;
    result
}

/// Runs `w` against the running cluster of `topology` (running `w.shape().mode`): setup,
/// then the closed-loop clients through warm-up and measured window.
pub async fn run_against<W: ClosedLoop>(
    w: &W,
    topology: &Topology,
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
) -> Result<W::Record> {
    w.check()?;
    let shape = w.shape();
    let conns = Arc::new(Connections::new(topology)?);
    let cache = Arc::new(LocationCache::default());
    let stats = shape
        .stats
        .clone()
        .unwrap_or_else(|| Arc::new(ProxyStats::default()));
    let proxy_config = ProxyConfig {
        mode: shape.mode,
        retry_threshold: shape.retry_threshold,
        destination: shape.destination,
        ..ProxyConfig::default()
    };
    let app = w.app();
    let proxies = (0..shape.clients)
        .map(|_| {
            let (conns, cache, stats) = (conns.clone(), cache.clone(), stats.clone());
            Proxy::new(app.clone(), proxy_config.clone(), conns, cache, stats)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let started = Instant::now();
    let setup = w.setup(&proxies, history, bar).await?;
    let setup_s = started.elapsed().as_secs_f64();

    let load = Arc::new(Load::default());
    let tasks: Vec<_> = proxies
        .into_iter()
        .enumerate()
        .map(|(i, proxy)| {
            let client = w.client(&setup, i, shape.client_rng(i));
            tokio::spawn(client_loop::<W>(
                i,
                proxy,
                client,
                load.clone(),
                history.cloned(),
            ))
        })
        .collect();

    let window = drive(shape.warmup, shape.duration, &load, &stats, bar).await;
    let lat = join_clients(&load, bar, tasks).await?;
    Ok(w.record(RunOutcome {
        partitions: conns.partitions().len(),
        measured: window.measure(&load, &lat),
        setup_s,
        setup,
    }))
}

/// The setup's loop: runs `step(proxy, i, process)` for every `i` in `0..count`, spread over
/// `proxies` (one loader per proxy, no more loaders than items), each loader under its own
/// history process (`step` may replace it, e.g. after an `info`); `bar` counts the items under
/// `message`. Stops at the first failed step.
pub(crate) async fn setup_each<A: StateMachine>(
    count: u64,
    proxies: &[Proxy<A>],
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
    message: String,
    step: impl AsyncFn(&Proxy<A>, u64, &mut u64) -> Result<()>,
) -> Result<()> {
    let next = AtomicU64::new(0);
    bar.set_length(count);
    bar.set_position(0);
    bar.set_message(message);
    let loaders = proxies.iter().take(count as usize).map(async |proxy| {
        let mut process = history.map(BenchHistory::fresh_process).unwrap_or_default();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return Ok::<(), Error>(());
            }
            step(proxy, i, &mut process).await?;
            bar.inc(1);
        }
    });
    futures::future::try_join_all(loaders).await?;
    Ok(())
}

/// How many times a setup command is tried while its outcome stays unknown.
pub(crate) const SETUP_ATTEMPTS: usize = 5;

/// Runs one command of a setup (`step` names it for errors) by `call`, again while its outcome
/// is unknown, at most [`SETUP_ATTEMPTS`] times: a setup command must be idempotent (a create
/// finds its variable, a put writes the same value again).
pub(crate) async fn setup_command<T>(
    step: impl Fn() -> String,
    mut call: impl AsyncFnMut() -> Result<T, ProxyError>,
) -> Result<T> {
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(reply) => return Ok(reply),
            Err(ProxyError::Indeterminate(e)) if attempt < SETUP_ATTEMPTS => {
                tracing::debug!(step = %step(), error = %e, "setup command indeterminate; retrying");
                attempt += 1;
            }
            Err(ProxyError::Indeterminate(source)) => {
                return Err(Error::Unanswered {
                    step: step(),
                    attempts: SETUP_ATTEMPTS,
                    source,
                })
            }
            Err(source) => {
                return Err(Error::Setup {
                    step: step(),
                    source,
                })
            }
        }
    }
}

/// One closed-loop client: issues commands until told to stop. Returns the latencies of the
/// commands that completed in the measured window; fails only on a configuration error.
async fn client_loop<W: ClosedLoop>(
    id: usize,
    proxy: Proxy<W::App>,
    mut client: W::Client,
    load: Arc<Load>,
    history: Option<BenchHistory>,
) -> Result<Latencies, ProxyError> {
    let mut lat = Latencies::default();
    let history = history.as_ref();
    let mut process = history.map(BenchHistory::fresh_process).unwrap_or_default();
    while load.running() {
        let cmd = W::next_command(&mut client);
        let start = Instant::now();
        let outcome = recorded(
            history,
            &mut process,
            || W::COMMAND_JSON(&cmd),
            W::call(&proxy, &cmd),
            W::REPLY_JSON,
        )
        .await;
        load.tally(&outcome, start.elapsed(), &mut lat, id, W::WHAT)?;
    }
    Ok(lat)
}

/// Runs every point, one after the other, with its own progress bar (hidden unless
/// `progress`), all recording into `history`: each on a fresh local cluster ([`run_local`]),
/// or with `cluster` against that running cluster ([`run_against`]). `report` sees each
/// record as soon as its run is done. Stops at the first failed run.
pub async fn run_points<W: ClosedLoop>(
    points: &[W],
    cluster: Option<&Topology>,
    history: Option<&BenchHistory>,
    progress: bool,
    mut report: impl FnMut(&W::Record),
) -> Result<Vec<W::Record>> {
    let mut records = Vec::with_capacity(points.len());
    for (i, point) in points.iter().enumerate() {
        let prefix = format!("[{}/{}] {}", i + 1, points.len(), point.label());
        let bar = progress_bar(&prefix, progress);
        let record = match cluster {
            None => run_local(point, history, &bar).await,
            Some(topology) => run_against(point, topology, history, &bar).await,
        };
        bar.finish_and_clear();
        let record = record.map_err(|e| Error::Run {
            label: point.label(),
            source: Box::new(e),
        })?;
        report(&record);
        records.push(record);
    }
    Ok(records)
}
