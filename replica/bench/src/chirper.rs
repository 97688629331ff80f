//! Chirper (§5.2) under closed-loop load: the workloads of §6.1 on S-SMR or DS-SMR. Used by
//! `dssmr demo` (one workload, both modes) and `dssmr bench chirper` (workloads × partition
//! counts × modes, [`run_points`]).
//!
//! Setup: a seeded [`SocialGraph`] is generated, a local cluster started ([`run`]) or a running
//! one used ([`run_against`]), and every user created through client proxies, concurrently,
//! with its follow edges already in its initial [`User`] value, so loading the graph needs no
//! follow commands. Where a user lands is the app's placement ([`UserPlacement`]: a hash of the
//! id by default, or the interest rule f(uid)), the same under both modes: the oracle applies
//! it under DS-SMR, the static map under S-SMR. A user that already exists is left as it is.
//!
//! Load: `clients` closed-loop clients, each a [`Proxy`] with one command in flight, sharing
//! one [`Connections`], one [`LocationCache`] and one [`ProxyStats`] like the client threads of
//! one process. The workloads are those of §6.1:
//!
//! | workload   | commands                                                          |
//! |------------|-------------------------------------------------------------------|
//! | `timeline` | getTimeline                                                       |
//! | `post`     | post                                                              |
//! | `follow`   | 50 % follow, 50 % unfollow                                        |
//! | `mix`      | 85 % getTimeline, 7.5 % post, 3.75 % follow, 3.75 % unfollow      |
//!
//! The acting user is drawn uniformly. A follow target is drawn like the graph's edges: from
//! the user's own community with the graph's intra-community probability, else from everybody
//! (uniformly in either set). An unfollow names one of the user's followees in the generated
//! graph; if the edge is gone by then the reply is simply `Unfollowed(false)`. Posts carry a
//! monotonic µs clock and a short text.
//!
//! The first `warmup` is not measured; then `duration` is. Results: one [`ChirperRecord`]
//! (throughput, latency percentiles, variables moved, retries and S-SMR fallbacks per second,
//! errors) with a per-second [`Sample`] series from the start of the load.
//!
//! With a [`BenchHistory`], every command is recorded, the creates of the setup included (so a
//! history holds the initial graph): `invoke`, then `ok` with the reply, `fail` when the proxy
//! reports [`ProxyError::Rejected`], or `info` for [`ProxyError::Indeterminate`], after which
//! the client carries on under a fresh process id. Process ids come from the
//! [`BenchHistory`], so several runs can share one history. The encoding ([`command_json`],
//! [`reply_json`], [`create_json`]):
//!
//! | `f`            | `args`                               | `result`                          |
//! |----------------|--------------------------------------|-----------------------------------|
//! | `create_user`  | `{"user":1,"following":[2],"followers":[3]}` | `{"created":bool}`        |
//! | `post`         | `{"user":1,"text":"..","time":7}`    | `{"posted":{"seq":0}}`            |
//! | `follow`       | `{"follower":1,"followee":2}`        | `{"followed":bool}`               |
//! | `unfollow`     | `{"follower":1,"followee":2}`        | `{"unfollowed":bool}`             |
//! | `get_timeline` | `{"user":1}`                         | `{"timeline":[{"time","author","seq","text"}..]}` |
//!
//! and any command may return `{"missing":[user ids]}`.
//!
//! This module generates load and measures; it changes nothing in the engine.

use crate::stats::Latencies;
use crate::{drive, join_clients, recorded, BenchHistory, Load, Measurement};
use dssmr_engine::app::chirper::graph::{GraphSpec, SocialGraph};
use dssmr_engine::app::chirper::{
    user_var, Chirper, ChirperCommand, ChirperReply, User, UserId, UserPlacement,
};
use dssmr_engine::client::proxy::ProxyStats;
use dssmr_engine::client::{
    Connections, Created, DestinationPolicy, LocationCache, Mode, Proxy, ProxyConfig, ProxyError,
    Topology,
};
use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::Sample;

/// A command mix of §6.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Only getTimeline (single-partition: the ideal case for S-SMR).
    Timeline,
    /// Only post (the poster and all its followers: the worst case for S-SMR).
    Post,
    /// 50 % follow, 50 % unfollow (two users each).
    Follow,
    /// 85 % getTimeline, 7.5 % post, 3.75 % follow, 3.75 % unfollow.
    Mix,
}

impl Workload {
    /// Every workload, in the paper's order.
    pub const ALL: [Workload; 4] = [
        Workload::Timeline,
        Workload::Post,
        Workload::Follow,
        Workload::Mix,
    ];

    /// The name used on command lines and in results.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Timeline => "timeline",
            Workload::Post => "post",
            Workload::Follow => "follow",
            Workload::Mix => "mix",
        }
    }

    /// The command mix, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Workload::Timeline => "getTimeline only",
            Workload::Post => "post only",
            Workload::Follow => "50 % follow, 50 % unfollow",
            Workload::Mix => "85 % getTimeline, 7.5 % post, 3.75 % follow, 3.75 % unfollow",
        }
    }

    /// Draws the kind of the next command.
    fn pick(self, rng: &mut StdRng) -> Op {
        match self {
            Workload::Timeline => Op::Timeline,
            Workload::Post => Op::Post,
            Workload::Follow => {
                if rng.random_bool(0.5) {
                    Op::Follow
                } else {
                    Op::Unfollow
                }
            }
            Workload::Mix => {
                let x: f64 = rng.random();
                if x < 0.85 {
                    Op::Timeline
                } else if x < 0.925 {
                    Op::Post
                } else if x < 0.9625 {
                    Op::Follow
                } else {
                    Op::Unfollow
                }
            }
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| {
                format!("unknown workload {s:?} (expected timeline, post, follow or mix)")
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Timeline,
    Post,
    Follow,
    Unfollow,
}

/// The paper's name of a mode, for people (`S-SMR`, `DS-SMR`).
pub fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Ssmr => "S-SMR",
        Mode::Dssmr => "DS-SMR",
    }
}

/// Settings of one Chirper run.
#[derive(Clone, Debug)]
pub struct ChirperBench {
    /// The command mix.
    pub workload: Workload,
    /// S-SMR or DS-SMR.
    pub mode: Mode,
    /// Partitions of the local cluster ([`run`]; [`run_against`] uses the topology's).
    pub partitions: usize,
    /// Replicas per group of the local cluster.
    pub replicas: usize,
    /// The social graph (users, communities, degree, seed).
    pub graph: GraphSpec,
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
    /// Where users are created (and, under S-SMR, stay).
    pub placement: UserPlacement,
    /// Worker threads of each replica's runtime (local cluster).
    pub threads_per_replica: usize,
    /// Seed of the command generators (the graph has its own in `graph.seed`).
    pub seed: u64,
    /// The counters the proxies update; given, they are shared (e.g. with a metrics
    /// endpoint), else each run has its own.
    pub stats: Option<Arc<ProxyStats>>,
}

/// Mix on 2 partitions × 3 replicas, 2 000 users on the generator's default graph (communities
/// of 100, ~10 followees, 90 % inside the community) created by a hash of their id (a static
/// partitioning that knows nothing of the graph), 256 clients, 15 s warm-up + 20 s, the affinity
/// destination policy and the paper's retry threshold (5). `dssmr demo` and `dssmr bench
/// chirper` tighten the communities (99 %).
impl Default for ChirperBench {
    fn default() -> Self {
        ChirperBench {
            workload: Workload::Mix,
            mode: Mode::Dssmr,
            partitions: 2,
            replicas: 3,
            graph: GraphSpec {
                users: 2_000,
                seed: 1,
                ..GraphSpec::default()
            },
            clients: 256,
            duration: Duration::from_secs(20),
            warmup: Duration::from_secs(15),
            retry_threshold: ProxyConfig::default().retry_threshold,
            destination: DestinationPolicy::Affinity,
            placement: UserPlacement::Hash,
            threads_per_replica: 1,
            seed: 1,
            stats: None,
        }
    }
}

impl ChirperBench {
    /// Checks the settings; the error names the field.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.graph.users >= 2,
            "users: need at least 2, got {}",
            self.graph.users
        );
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

    /// A short name of the point for people: `mix ×2 DS-SMR`.
    pub fn label(&self) -> String {
        format!(
            "{} ×{} {}",
            self.workload,
            self.partitions,
            mode_label(self.mode)
        )
    }
}

/// The result of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChirperRecord {
    /// The command mix.
    pub workload: Workload,
    /// S-SMR or DS-SMR.
    pub mode: Mode,
    /// Partitions of the cluster.
    pub partitions: usize,
    /// Closed-loop clients.
    pub clients: usize,
    /// Users in the social graph.
    pub users: u64,
    /// Where users were created.
    pub placement: UserPlacement,
    /// Where DS-SMR gathered the variables of multi-partition commands.
    pub destination: DestinationPolicy,
    /// Throughput, latencies, moves, retries, fallbacks, errors and the per-second series.
    #[serde(flatten)]
    pub measured: Measurement,
    /// Seconds spent creating the users.
    pub setup_s: f64,
}

impl ChirperRecord {
    /// A short name of the run for people: `mix ×2 DS-SMR`.
    pub fn label(&self) -> String {
        format!(
            "{} ×{} {}",
            self.workload,
            self.partitions,
            mode_label(self.mode)
        )
    }
}

/// The history name and arguments of a Chirper command.
pub fn command_json(cmd: &ChirperCommand) -> (&'static str, Value) {
    match cmd {
        ChirperCommand::Post { user, text, time } => {
            ("post", json!({ "user": user, "text": text, "time": time }))
        }
        ChirperCommand::Follow { follower, followee } => (
            "follow",
            json!({ "follower": follower, "followee": followee }),
        ),
        ChirperCommand::Unfollow { follower, followee } => (
            "unfollow",
            json!({ "follower": follower, "followee": followee }),
        ),
        ChirperCommand::GetTimeline { user } => ("get_timeline", json!({ "user": user })),
    }
}

/// The history name and arguments of the create of `user` (with its initial edges).
pub fn create_json(user: &User) -> (&'static str, Value) {
    (
        "create_user",
        json!({ "user": user.id, "following": user.following, "followers": user.followers }),
    )
}

/// The history result of a create.
pub fn created_json(created: &Created) -> Value {
    json!({ "created": *created == Created::Created })
}

/// A Chirper reply as JSON (history results and `dssmr client` output).
pub fn reply_json(reply: &ChirperReply) -> Value {
    match reply {
        ChirperReply::Posted { seq } => json!({ "posted": { "seq": seq } }),
        ChirperReply::Followed(added) => json!({ "followed": added }),
        ChirperReply::Unfollowed(removed) => json!({ "unfollowed": removed }),
        ChirperReply::Timeline(posts) => json!({ "timeline": posts }),
        ChirperReply::Missing(users) => json!({ "missing": users }),
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

/// Runs every point, one after the other, each on a fresh local cluster ([`run`]) with its own
/// progress bar (hidden unless `progress`), all recording into `history`; `report` sees each
/// record as soon as its run is done. Stops at the first failed run.
pub async fn run_points(
    points: &[ChirperBench],
    history: Option<&BenchHistory>,
    progress: bool,
    report: impl FnMut(&ChirperRecord),
) -> anyhow::Result<Vec<ChirperRecord>> {
    run_points_on(points, None, history, progress, report).await
}

/// As [`run_points`], but with `cluster` every point runs against that running cluster
/// ([`run_against`]) instead of a fresh local one.
pub async fn run_points_on(
    points: &[ChirperBench],
    cluster: Option<Topology>,
    history: Option<&BenchHistory>,
    progress: bool,
    mut report: impl FnMut(&ChirperRecord),
) -> anyhow::Result<Vec<ChirperRecord>> {
    let mut records = Vec::with_capacity(points.len());
    for (i, point) in points.iter().enumerate() {
        let prefix = format!("[{}/{}] {}", i + 1, points.len(), point.label());
        let bar = progress_bar(&prefix, progress);
        let record = match &cluster {
            None => run(point, history, &bar).await,
            Some(topology) => {
                let app = Arc::new(
                    Chirper::new(point.graph.community_size).with_placement(point.placement),
                );
                run_against(point, app, topology, history, &bar).await
            }
        };
        bar.finish_and_clear();
        let record = record.map_err(|e| e.context(format!("run {}", point.label())))?;
        report(&record);
        records.push(record);
    }
    Ok(records)
}

/// Starts a local cluster (oracle for DS-SMR, `partitions` × `replicas`), runs the workload on
/// it and shuts it down.
pub async fn run(
    cfg: &ChirperBench,
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
) -> anyhow::Result<ChirperRecord> {
    cfg.check()?;
    let app = Arc::new(Chirper::new(cfg.graph.community_size).with_placement(cfg.placement));
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
        ..ClusterOptions::engine(app.clone(), cfg.partitions, cfg.mode)
    })
    .await?;
    let result = run_against(cfg, app, cluster.topology(), history, bar).await;
    bar.set_message("shutting down");
    cluster.shutdown().await;
    result
}

/// Loads the graph into the running cluster of `topology` (running `cfg.mode`) and runs the
/// workload against it.
pub async fn run_against(
    cfg: &ChirperBench,
    app: Arc<Chirper>,
    topology: &Topology,
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
) -> anyhow::Result<ChirperRecord> {
    cfg.check()?;
    let graph = SocialGraph::generate(&cfg.graph);
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
                app.clone(),
                proxy_config.clone(),
                conns.clone(),
                cache.clone(),
                stats.clone(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    let setup = Instant::now();
    load_users(&graph, &proxies, history, bar).await?;
    let setup_s = setup.elapsed().as_secs_f64();

    let following: Arc<Vec<Vec<UserId>>> = Arc::new(
        (0..graph.users)
            .map(|u| graph.following_of(u).collect())
            .collect(),
    );
    let load = Arc::new(Load::default());
    let clock = Instant::now();
    let intra = if cfg.graph.intra_community >= 0.0 {
        cfg.graph.intra_community.min(1.0)
    } else {
        0.0
    };
    let tasks: Vec<_> = proxies
        .into_iter()
        .enumerate()
        .map(|(i, proxy)| {
            let generator = Generator {
                workload: cfg.workload,
                rng: StdRng::seed_from_u64(
                    cfg.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ),
                users: graph.users,
                community_size: graph.community_size.max(1),
                intra,
                following: following.clone(),
                clock,
                client: i,
                posts: 0,
            };
            tokio::spawn(client(proxy, generator, load.clone(), history.cloned()))
        })
        .collect();

    let window = drive(cfg.warmup, cfg.duration, &load, &stats, bar).await;
    let lat = join_clients(&load, bar, tasks).await?;
    Ok(ChirperRecord {
        workload: cfg.workload,
        mode: cfg.mode,
        partitions: conns.partitions().len(),
        clients: cfg.clients,
        users: graph.users,
        placement: cfg.placement,
        destination: cfg.destination,
        measured: window.measure(&load, &lat),
        setup_s,
    })
}

/// Creates every user of `graph` with its edges, `proxies.len()` at a time, each loader under
/// its own history process.
async fn load_users(
    graph: &SocialGraph,
    proxies: &[Proxy<Chirper>],
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let followers = graph.followers_index();
    let next = AtomicU64::new(0);
    bar.set_length(graph.users);
    bar.set_position(0);
    bar.set_message(format!("creating {} users", graph.users));
    let loaders = proxies.iter().map(|proxy| async {
        let mut process = history.map(BenchHistory::fresh_process).unwrap_or_default();
        loop {
            let u = next.fetch_add(1, Ordering::Relaxed);
            if u >= graph.users {
                return Ok::<(), anyhow::Error>(());
            }
            let user = User {
                followers: followers[u as usize].iter().copied().collect(),
                following: graph.following_of(u).collect::<BTreeSet<_>>(),
                ..User::new(u)
            };
            create_user(proxy, &user, history, &mut process).await?;
            bar.inc(1);
        }
    });
    futures::future::try_join_all(loaders).await?;
    Ok(())
}

/// Creates `user`; an indeterminate outcome is retried (a create is idempotent: a second one
/// finds the user and changes nothing).
async fn create_user(
    proxy: &Proxy<Chirper>,
    user: &User,
    history: Option<&BenchHistory>,
    process: &mut u64,
) -> anyhow::Result<Created> {
    const ATTEMPTS: usize = 5;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let create = proxy.create(user_var(user.id), user);
        match recorded(history, process, || create_json(user), create, created_json).await {
            Ok(c) => return Ok(c),
            Err(ProxyError::Indeterminate(e)) => last = Some(e),
            Err(e) => return Err(anyhow::anyhow!("creating user {}: {e}", user.id)),
        }
    }
    Err(anyhow::anyhow!(
        "creating user {}: no answer after {ATTEMPTS} attempts: {}",
        user.id,
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

/// Draws the commands of one client.
struct Generator {
    workload: Workload,
    rng: StdRng,
    users: u64,
    community_size: u64,
    intra: f64,
    following: Arc<Vec<Vec<UserId>>>,
    clock: Instant,
    client: usize,
    posts: u64,
}

impl Generator {
    fn next_command(&mut self) -> ChirperCommand {
        let user = self.rng.random_range(0..self.users);
        match self.workload.pick(&mut self.rng) {
            Op::Timeline => ChirperCommand::GetTimeline { user },
            Op::Post => {
                self.posts += 1;
                ChirperCommand::Post {
                    user,
                    text: format!("c{}#{}", self.client, self.posts),
                    time: u64::try_from(self.clock.elapsed().as_micros()).unwrap_or(u64::MAX),
                }
            }
            Op::Follow => ChirperCommand::Follow {
                follower: user,
                followee: self.follow_target(user),
            },
            Op::Unfollow => {
                let followee = match self.following[user as usize].choose(&mut self.rng) {
                    Some(f) => *f,
                    None => self.follow_target(user),
                };
                ChirperCommand::Unfollow {
                    follower: user,
                    followee,
                }
            }
        }
    }

    /// Someone other than `user`: from its community with probability `intra`, else anyone.
    fn follow_target(&mut self, user: UserId) -> UserId {
        let start = user / self.community_size * self.community_size;
        let end = start.saturating_add(self.community_size).min(self.users);
        let (lo, hi) = if end - start > 1 && self.rng.random_bool(self.intra) {
            (start, end)
        } else {
            (0, self.users)
        };
        // Uniform over [lo, hi) without `user` (which lies in it).
        let x = self.rng.random_range(lo..hi - 1);
        if x >= user {
            x + 1
        } else {
            x
        }
    }
}

/// One closed-loop client: issues commands until told to stop. Returns the latencies of the
/// commands that completed in the measured window; fails only on a configuration error.
async fn client(
    proxy: Proxy<Chirper>,
    mut generator: Generator,
    load: Arc<Load>,
    history: Option<BenchHistory>,
) -> Result<Latencies, ProxyError> {
    let mut lat = Latencies::default();
    let history = history.as_ref();
    let mut process = history.map(BenchHistory::fresh_process).unwrap_or_default();
    while load.running() {
        let cmd = generator.next_command();
        let start = Instant::now();
        let outcome = recorded(
            history,
            &mut process,
            || command_json(&cmd),
            proxy.access(&cmd),
            reply_json,
        )
        .await;
        load.tally(
            &outcome,
            start.elapsed(),
            &mut lat,
            generator.client,
            "chirper command",
        )?;
    }
    Ok(lat)
}

/// DS-SMR throughput over S-SMR throughput for each workload and partition count measured
/// under both modes, in the order of the records.
pub fn speedups(records: &[ChirperRecord]) -> Vec<(Workload, usize, f64)> {
    let mut out: Vec<(Workload, usize, f64)> = Vec::new();
    for d in records.iter().filter(|r| r.mode == Mode::Dssmr) {
        let ssmr = records.iter().find(|s| {
            s.mode == Mode::Ssmr && s.workload == d.workload && s.partitions == d.partitions
        });
        if let Some(s) = ssmr.filter(|s| s.measured.throughput_cps > 0.0) {
            if !out
                .iter()
                .any(|(w, p, _)| *w == d.workload && *p == d.partitions)
            {
                let ratio = d.measured.throughput_cps / s.measured.throughput_cps;
                out.push((d.workload, d.partitions, ratio));
            }
        }
    }
    out
}

/// Renders records as an aligned table.
pub fn table(records: &[ChirperRecord]) -> String {
    let mut s = format!(
        "{:<7} {:>9} {:>5} {:>11} {:>8} {:>8} {:>8} {:>9} {:>10} {:>10} {:>10} {:>7}\n",
        "mode",
        "workload",
        "parts",
        "commands/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "moves/s",
        "retries/s",
        "spreads/s",
        "fallbacks",
        "errors"
    );
    for r in records {
        let m = &r.measured;
        s.push_str(&format!(
            "{:<7} {:>9} {:>5} {:>11.0} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>10.1} {:>10.1} {:>10} {:>7}\n",
            mode_label(r.mode),
            r.workload.name(),
            r.partitions,
            m.throughput_cps,
            m.p50_ms,
            m.p95_ms,
            m.p99_ms,
            m.moves_per_s,
            m.retries_per_s,
            m.spreads_per_s,
            m.fallbacks,
            m.errors
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use dssmr_check::history::EventKind;
    use std::collections::HashMap;

    fn generator(workload: Workload, seed: u64) -> Generator {
        let graph = SocialGraph::generate(&GraphSpec {
            users: 500,
            community_size: 50,
            avg_follows: 6,
            intra_community: 0.9,
            seed: 3,
        });
        Generator {
            workload,
            rng: StdRng::seed_from_u64(seed),
            users: graph.users,
            community_size: graph.community_size,
            intra: 0.9,
            following: Arc::new((0..500).map(|u| graph.following_of(u).collect()).collect()),
            clock: Instant::now(),
            client: 0,
            posts: 0,
        }
    }

    fn kind(c: &ChirperCommand) -> &'static str {
        command_json(c).0
    }

    #[test]
    fn mix_has_the_papers_proportions() {
        let mut g = generator(Workload::Mix, 1);
        let n = 100_000;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for _ in 0..n {
            *counts.entry(kind(&g.next_command())).or_default() += 1;
        }
        let share = |k: &str| counts.get(k).copied().unwrap_or(0) as f64 / n as f64;
        assert!((share("get_timeline") - 0.85).abs() < 0.01, "{counts:?}");
        assert!((share("post") - 0.075).abs() < 0.005, "{counts:?}");
        assert!((share("follow") - 0.0375).abs() < 0.004, "{counts:?}");
        assert!((share("unfollow") - 0.0375).abs() < 0.004, "{counts:?}");
    }

    #[test]
    fn single_kind_workloads() {
        for (w, kinds) in [
            (Workload::Timeline, &["get_timeline"][..]),
            (Workload::Post, &["post"][..]),
            (Workload::Follow, &["follow", "unfollow"][..]),
        ] {
            let mut g = generator(w, 2);
            let seen: BTreeSet<&str> = (0..2_000).map(|_| kind(&g.next_command())).collect();
            assert_eq!(seen, kinds.iter().copied().collect(), "{w}");
        }
    }

    #[test]
    fn follow_targets_mostly_in_community_and_unfollows_name_followees() {
        let mut g = generator(Workload::Follow, 3);
        let (mut follows, mut intra, mut unfollows) = (0, 0, 0);
        for _ in 0..20_000 {
            match g.next_command() {
                ChirperCommand::Follow { follower, followee } => {
                    assert_ne!(follower, followee);
                    assert!(followee < 500);
                    follows += 1;
                    if follower / 50 == followee / 50 {
                        intra += 1;
                    }
                }
                ChirperCommand::Unfollow { follower, followee } => {
                    unfollows += 1;
                    let own = &g.following[follower as usize];
                    assert!(own.is_empty() || own.contains(&followee));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let share = intra as f64 / follows as f64;
        // 0.9 from the community plus 0.1 × 50/500 of the global draws.
        assert!((share - 0.91).abs() < 0.02, "intra share {share}");
        assert!(unfollows > 9_000, "{unfollows}");
    }

    #[test]
    fn post_times_are_monotonic_and_users_uniform() {
        let mut g = generator(Workload::Post, 4);
        let mut last = 0;
        let mut per_user = vec![0usize; 500];
        for _ in 0..50_000 {
            match g.next_command() {
                ChirperCommand::Post { user, time, text } => {
                    assert!(time >= last);
                    assert!(text.len() < 20);
                    last = time;
                    per_user[user as usize] += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            per_user.iter().all(|c| (40..=170).contains(c)),
            "{per_user:?}"
        );
    }

    #[test]
    fn json_encodings() {
        let (f, args) = command_json(&ChirperCommand::Post {
            user: 1,
            text: "hi".into(),
            time: 7,
        });
        assert_eq!(f, "post");
        assert_eq!(args, json!({"user": 1, "text": "hi", "time": 7}));
        assert_eq!(
            command_json(&ChirperCommand::Unfollow {
                follower: 1,
                followee: 2
            }),
            ("unfollow", json!({"follower": 1, "followee": 2}))
        );
        assert_eq!(
            reply_json(&ChirperReply::Posted { seq: 3 }),
            json!({"posted": {"seq": 3}})
        );
        assert_eq!(
            reply_json(&ChirperReply::Missing(vec![4, 9])),
            json!({"missing": [4, 9]})
        );
        let post = dssmr_engine::app::chirper::Post {
            time: 5,
            author: 1,
            seq: 0,
            text: "x".into(),
        };
        assert_eq!(
            reply_json(&ChirperReply::Timeline(vec![post])),
            json!({"timeline": [{"time": 5, "author": 1, "seq": 0, "text": "x"}]})
        );
    }

    #[test]
    fn workload_names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(w.name().parse::<Workload>(), Ok(w));
        }
        assert!("tweets".parse::<Workload>().is_err());
    }

    /// A short DS-SMR post run on a real local cluster, with users spread over communities
    /// of 5 so that posts span partitions: commands complete, users move, and the history
    /// holds every create of the setup and pairs every invocation with one completion.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_run_moves_users_and_records_a_history() {
        dssmr_engine::telemetry::init_for_tests();
        let cfg = ChirperBench {
            workload: Workload::Post,
            graph: GraphSpec {
                users: 60,
                community_size: 5,
                avg_follows: 4,
                intra_community: 0.5,
                seed: 7,
            },
            clients: 4,
            warmup: Duration::from_millis(200),
            duration: Duration::from_secs(1),
            // Random destinations keep users moving through the measured window.
            destination: DestinationPolicy::Random,
            ..ChirperBench::default()
        };
        let history = BenchHistory::new(dssmr_check::history::History::in_memory());
        let record = run(&cfg, Some(&history), &ProgressBar::hidden())
            .await
            .expect("run");
        let m = &record.measured;
        assert!(m.commands > 0, "{record:?}");
        assert!(m.throughput_cps > 0.0 && m.p50_ms > 0.0);
        assert!(m.moves_per_s > 0.0, "posts span partitions: {record:?}");
        assert!(!m.series.is_empty() && m.series.iter().any(|s| s.measured));
        assert_eq!((record.partitions, record.users), (2, 60));

        let events = history.history().events();
        let mut open: HashMap<u64, &str> = HashMap::new();
        let mut created = BTreeSet::new();
        let mut oks = 0;
        for e in &events {
            match e.kind {
                EventKind::Invoke => {
                    assert!(open.insert(e.process, &e.f).is_none(), "{e:?}");
                }
                kind => {
                    assert_eq!(open.remove(&e.process), Some(e.f.as_str()), "{e:?}");
                    match (e.f.as_str(), kind) {
                        ("create_user", EventKind::Ok) => {
                            let result = e.result.as_ref().expect("ok has a result");
                            assert_eq!(result, &json!({"created": true}), "{e:?}");
                            created.insert(e.args["user"].as_u64().expect("user id"));
                        }
                        ("post", EventKind::Ok) => {
                            oks += 1;
                            let result = e.result.as_ref().expect("ok has a result");
                            assert!(result["posted"]["seq"].is_u64(), "{e:?}");
                        }
                        ("post", _) => {}
                        _ => panic!("unexpected event {e:?}"),
                    }
                }
            }
        }
        assert!(open.is_empty(), "every command completed: {open:?}");
        assert_eq!(created, (0..60).collect(), "the setup is recorded");
        assert!(oks as u64 >= m.commands);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let mut cfg = ChirperBench::default();
        cfg.graph.users = 1;
        assert!(cfg.check().unwrap_err().to_string().starts_with("users:"));
        let cfg = ChirperBench {
            clients: 0,
            ..ChirperBench::default()
        };
        assert!(cfg.check().unwrap_err().to_string().starts_with("clients:"));
    }
}
