//! Chirper (§5.2) under closed-loop load: the workloads of §6.1 on S-SMR or DS-SMR. Used by
//! `dssmr demo` (one workload, both modes) and `dssmr bench chirper` (workloads × partition
//! counts × modes, [`crate::run_points`]); [`ChirperBench`] is a [`ClosedLoop`] workload of the
//! crate's one run loop (`crate::run`, [`crate::ClosedLoop`]).
//!
//! Setup: a seeded [`SocialGraph`] is generated, and on a local cluster ([`crate::run_local`])
//! or a running one ([`crate::run_against`]) every user is created through the client proxies
//! (`setup_each`), concurrently,
//! with its follow edges already in its initial [`User`] value, so loading the graph needs no
//! follow commands. Where a user lands is the app's placement ([`UserPlacement`]: a hash of the
//! id by default, or the interest rule f(uid)), the same under both modes: the oracle applies
//! it under DS-SMR, the static map under S-SMR. A user that already exists is left as it is.
//!
//! Load: the run loop's closed-loop clients, one command in flight each. The workloads are
//! those of §6.1:
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
//! time in µs since the Unix epoch ([`PostClock`]) and a short text.
//!
//! The first `warmup` is not measured; then `duration` is. Results: one [`ChirperRecord`]
//! (throughput, latency percentiles, variables moved, retries and S-SMR fallbacks per second,
//! errors) with a per-second [`Sample`] series from the start of the load.
//!
//! With a [`BenchHistory`], every command is recorded, the creates of the setup included (so a
//! history holds the initial graph): `invoke`, then `ok` with the reply, `fail` when the proxy
//! reports [`ProxyError::Rejected`](dssmr_engine::client::ProxyError::Rejected), or `info` for [`ProxyError::Indeterminate`](dssmr_engine::client::ProxyError::Indeterminate), after which
//! the client carries on under a fresh process id. Process ids come from the
//! [`BenchHistory`], so several runs can share one history. The encoding is the app's
//! ([`dssmr_engine::app::chirper::json`]).
//!
//! This module generates Chirper load; it changes nothing in the engine, encodes no JSON and
//! owns no run loop.

use crate::run::{
    mode_label, setup_command, setup_each, ClosedLoop, CommandJson, ReplyJson, RunOutcome, RunShape,
};
use crate::{recorded, BenchHistory, Error, Measurement, Result};
use dssmr_engine::app::chirper::graph::{GraphSpec, SocialGraph};
use dssmr_engine::app::chirper::json::{command_json, create_json, created_json, reply_json};
use dssmr_engine::app::chirper::{
    user_var, Chirper, ChirperCommand, ChirperReply, User, UserId, UserPlacement,
};
use dssmr_engine::client::{Created, DestinationPolicy, Mode, Proxy};
use dssmr_engine::mode::UnknownName;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
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
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| UnknownName::new("workload", s, "timeline, post, follow or mix"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Timeline,
    Post,
    Follow,
    Unfollow,
}

/// Settings of one Chirper run.
#[derive(Clone, Debug)]
pub struct ChirperBench {
    /// The command mix.
    pub workload: Workload,
    /// The social graph (users, communities, degree, seed).
    pub graph: GraphSpec,
    /// Where users are created (and, under S-SMR, stay).
    pub placement: UserPlacement,
    /// Mode, cluster size, clients, times, DS-SMR policies and the seed of the command
    /// generators (the graph has its own in `graph.seed`).
    pub run: RunShape,
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
            graph: GraphSpec {
                users: 2_000,
                seed: 1,
                ..GraphSpec::default()
            },
            placement: UserPlacement::Hash,
            run: RunShape {
                clients: 256,
                duration: Duration::from_secs(20),
                warmup: Duration::from_secs(15),
                destination: DestinationPolicy::Affinity,
                ..RunShape::default()
            },
        }
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

/// What the setup leaves for the clients: the graph's shape and its follow lists.
#[derive(Debug)]
pub struct Loaded {
    /// Users of the graph.
    users: u64,
    /// Users per interest community.
    community_size: u64,
    /// The probability that a follow stays inside the community.
    intra: f64,
    /// The followees of every user in the generated graph.
    following: Arc<Vec<Vec<UserId>>>,
    /// The clock of post times, started when the setup ends.
    clock: PostClock,
}

/// Post times: µs since the Unix epoch, read from the wall clock once and advanced by a
/// monotonic clock, so timelines order posts by when they were made across runs and across
/// bench processes (whose clocks agree as far as the machines' clocks do).
#[derive(Clone, Copy, Debug)]
pub struct PostClock {
    start: Instant,
    epoch_us: u64,
}

impl PostClock {
    /// Starts now.
    pub fn start() -> Self {
        let epoch_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        PostClock {
            start: Instant::now(),
            epoch_us,
        }
    }

    /// The time of a post made now.
    pub fn now_us(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.epoch_us.saturating_add(elapsed)
    }
}

impl ClosedLoop for ChirperBench {
    type App = Chirper;
    type Setup = Loaded;
    type Client = Generator;
    type Record = ChirperRecord;
    const WHAT: &'static str = "chirper command";
    const COMMAND_JSON: CommandJson<Chirper> = command_json;
    const REPLY_JSON: ReplyJson<Chirper> = reply_json;

    fn shape(&self) -> &RunShape {
        &self.run
    }

    /// `mix ×2 DS-SMR`.
    fn label(&self) -> String {
        format!(
            "{} ×{} {}",
            self.workload,
            self.run.partitions,
            mode_label(self.run.mode)
        )
    }

    fn check(&self) -> Result<()> {
        if self.graph.users < 2 {
            return Err(Error::Settings(format!(
                "users: need at least 2, got {}",
                self.graph.users
            )));
        }
        self.run.check()
    }

    fn app(&self) -> Arc<Chirper> {
        Arc::new(Chirper::new(self.graph.community_size).with_placement(self.placement))
    }

    /// Generates the graph and creates its users.
    async fn setup(
        &self,
        proxies: &[Proxy<Chirper>],
        history: Option<&BenchHistory>,
        bar: &ProgressBar,
    ) -> Result<Loaded> {
        let graph = SocialGraph::generate(&self.graph);
        load_users(&graph, proxies, history, bar).await?;
        let following = (0..graph.users)
            .map(|u| graph.following_of(u).collect())
            .collect();
        Ok(Loaded {
            users: graph.users,
            community_size: graph.community_size.max(1),
            intra: if self.graph.intra_community >= 0.0 {
                self.graph.intra_community.min(1.0)
            } else {
                0.0
            },
            following: Arc::new(following),
            clock: PostClock::start(),
        })
    }

    fn client(&self, setup: &Loaded, id: usize, rng: StdRng) -> Generator {
        Generator {
            workload: self.workload,
            rng,
            users: setup.users,
            community_size: setup.community_size,
            intra: setup.intra,
            following: setup.following.clone(),
            clock: setup.clock,
            client: id,
            posts: 0,
        }
    }

    fn next_command(client: &mut Generator) -> ChirperCommand {
        client.next_command()
    }

    fn record(&self, run: RunOutcome<Loaded>) -> ChirperRecord {
        ChirperRecord {
            workload: self.workload,
            mode: self.run.mode,
            partitions: run.partitions,
            clients: self.run.clients,
            users: run.setup.users,
            placement: self.placement,
            destination: self.run.destination,
            measured: run.measured,
            setup_s: run.setup_s,
        }
    }
}

/// Creates every user of `graph` with its edges, `proxies.len()` at a time, each loader under
/// its own history process ([`setup_each`]).
async fn load_users(
    graph: &SocialGraph,
    proxies: &[Proxy<Chirper>],
    history: Option<&BenchHistory>,
    bar: &ProgressBar,
) -> Result<()> {
    let followers = graph.followers_index();
    let message = format!("creating {} users", graph.users);
    setup_each(
        graph.users,
        proxies,
        history,
        bar,
        message,
        async |proxy, u, process| {
            let user = User {
                followers: followers[u as usize].iter().copied().collect(),
                following: graph.following_of(u).collect::<BTreeSet<_>>(),
                ..User::new(u)
            };
            create_user(proxy, &user, history, process).await.map(drop)
        },
    )
    .await
}

/// Creates `user`; an indeterminate outcome is retried ([`setup_command`]: a second create
/// finds the user and changes nothing).
async fn create_user(
    proxy: &Proxy<Chirper>,
    user: &User,
    history: Option<&BenchHistory>,
    process: &mut u64,
) -> Result<Created> {
    let encode = |c: &Created| created_json(*c == Created::Created);
    let step = || format!("creating user {}", user.id);
    setup_command(step, async || {
        let create = proxy.create(user_var(user.id), user);
        recorded(history, process, || create_json(user), create, encode).await
    })
    .await
}

/// Draws the commands of one client.
#[derive(Debug)]
pub struct Generator {
    workload: Workload,
    rng: StdRng,
    users: u64,
    community_size: u64,
    intra: f64,
    following: Arc<Vec<Vec<UserId>>>,
    clock: PostClock,
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
                    time: self.clock.now_us(),
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

/// The history `--check-posts` records when no history file is asked for: in memory, and only
/// the operations the post check reads ([`chirper_posts::OPERATIONS`]), so that a long run's
/// memory does not grow with every timeline it reads.
///
/// [`chirper_posts::OPERATIONS`]: dssmr_check::history::chirper_posts::OPERATIONS
pub fn post_check_history() -> BenchHistory {
    use dssmr_check::history::{chirper_posts, History};
    BenchHistory::new(History::in_memory_of(chirper_posts::OPERATIONS))
}

/// Reads the final timeline of every follower of a poster in `events` (the history of the
/// runs, setup included) from the running
/// cluster of `topology` (run in `mode`, a Chirper with `community_size` and `placement`) and
/// checks that every acknowledged post is there ([`dssmr_check::history::chirper_posts`]).
/// Call it after the load has stopped. Reads whose outcome stays unknown are retried like setup
/// commands.
pub async fn check_posts(
    topology: &dssmr_engine::client::Topology,
    mode: Mode,
    community_size: u64,
    placement: UserPlacement,
    events: &[dssmr_check::history::Event],
) -> Result<dssmr_check::history::chirper_posts::PostReport> {
    use dssmr_check::history::chirper_posts;
    use dssmr_engine::client::proxy::ProxyStats;
    use dssmr_engine::client::{Connections, LocationCache, ProxyConfig};
    let bad = |e: chirper_posts::PostCheckError| Error::Check(e.to_string());
    let users = chirper_posts::followers_to_read(events).map_err(bad)?;
    let app = Arc::new(Chirper::new(community_size).with_placement(placement));
    let config = ProxyConfig {
        mode,
        ..ProxyConfig::default()
    };
    let proxy = Proxy::new(
        app,
        config,
        Arc::new(Connections::new(topology)?),
        Arc::new(LocationCache::default()),
        Arc::new(ProxyStats::default()),
    )?;
    let mut timelines = std::collections::BTreeMap::new();
    for user in users {
        let cmd = ChirperCommand::GetTimeline { user };
        let reply = setup_command(
            || format!("reading the timeline of user {user}"),
            async || proxy.access(&cmd).await,
        )
        .await?;
        match reply {
            ChirperReply::Timeline(posts) => {
                timelines.insert(user, posts);
            }
            other => {
                return Err(Error::UnexpectedReply {
                    step: format!("reading the timeline of user {user}"),
                    reply: format!("{other:?}"),
                })
            }
        }
    }
    chirper_posts::check_posts(events, &timelines).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::run_local;
    use dssmr_check::history::EventKind;
    use rand::SeedableRng;
    use serde_json::json;
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
            clock: PostClock::start(),
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
            run: RunShape {
                clients: 4,
                warmup: Duration::from_millis(200),
                duration: Duration::from_secs(1),
                // Random destinations keep users moving through the measured window.
                destination: DestinationPolicy::Random,
                ..ChirperBench::default().run
            },
            ..ChirperBench::default()
        };
        let history = BenchHistory::new(dssmr_check::history::History::in_memory());
        let record = run_local(&cfg, Some(&history), &ProgressBar::hidden())
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

    /// Every getTimeline reply of a Mix run (moves, retries and fallbacks included) is one a
    /// correct Chirper could have given when it was read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_timeline_read_of_a_mix_run_is_correct() {
        dssmr_engine::telemetry::init_for_tests();
        let cfg = ChirperBench {
            workload: Workload::Mix,
            graph: GraphSpec {
                users: 60,
                community_size: 5,
                avg_follows: 4,
                intra_community: 0.5,
                seed: 9,
            },
            run: RunShape {
                clients: 4,
                warmup: Duration::from_millis(200),
                duration: Duration::from_secs(2),
                destination: DestinationPolicy::Random,
                ..ChirperBench::default().run
            },
            ..ChirperBench::default()
        };
        let history = BenchHistory::new(dssmr_check::history::History::in_memory());
        run_local(&cfg, Some(&history), &ProgressBar::hidden())
            .await
            .expect("run");
        let events = history.history().events();
        let report = dssmr_check::history::chirper_timelines::check_timelines(&events)
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("timeline replies checked: {report:?}");
        assert!(report.replies > 100 && report.posts > 0, "{report:?}");
    }

    /// The history kept for the post check alone holds no timeline reads (a Mix run is 85 %
    /// of them, each reply up to 100 posts), but every operation the check reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_post_check_history_leaves_timelines_out() {
        dssmr_engine::telemetry::init_for_tests();
        let cfg = ChirperBench {
            workload: Workload::Mix,
            graph: GraphSpec {
                users: 40,
                ..ChirperBench::default().graph
            },
            run: RunShape {
                clients: 4,
                warmup: Duration::from_millis(100),
                duration: Duration::from_millis(600),
                ..ChirperBench::default().run
            },
            ..ChirperBench::default()
        };
        let history = post_check_history();
        let record = run_local(&cfg, Some(&history), &ProgressBar::hidden())
            .await
            .expect("run");
        assert!(record.measured.commands > 0, "{record:?}");
        let events = history.history().take_events();
        let count = |f: &str| events.iter().filter(|e| e.f == f).count();
        assert_eq!(count("get_timeline"), 0, "timeline reads kept");
        assert!(
            count("create_user") >= 80 && count("post") > 0,
            "{events:?}"
        );
        assert!(history.history().events().is_empty(), "taken, not copied");
    }

    #[test]
    fn bad_settings_name_the_field() {
        let mut cfg = ChirperBench::default();
        cfg.graph.users = 1;
        assert!(cfg.check().unwrap_err().to_string().starts_with("users:"));
        let mut cfg = ChirperBench::default();
        cfg.run.clients = 0;
        assert!(cfg.check().unwrap_err().to_string().starts_with("clients:"));
    }
}
