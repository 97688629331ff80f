//! A seeded nemesis over real replica processes (issue 16, point 13): two DS-SMR clusters, kv
//! and Chirper, each an oracle and 2 partitions × 3 replicas, every replica a `dssmr replica`
//! container (or a 127.0.0.1 process without Docker), under kv and Chirper loads that move
//! variables and fall back to S-SMR (random destinations, a retry threshold of 1), while a
//! nemesis drawn from a seed strikes, one or two groups at a time:
//!
//! - **kill**: SIGKILL, restarted later from its data directory;
//! - **stop**: SIGTERM (a leader hands over first), restarted later;
//! - **disconnect**: cut off the network (Docker; SIGSTOP without Docker), reconnected later;
//! - **pause**: SIGSTOP, SIGCONT later: the replica keeps its connections, runs nothing, and
//!   wakes up as if no time had passed (a leader still believing that it leads).
//!
//! Each strike hits the leader of a group or one of its replicas by ordinal (drawn from the
//! seed); a strike on a leader lasts until the group elected another, then a drawn while
//! longer. After each step the test waits until the struck groups have a leader, the cluster
//! executes commands again and the struck replicas are ready. At the end the loads are ended
//! (SIGTERM) and judged: the kv history must be linearizable, every Chirper timeline reply
//! correct (`chirper_timelines`), and the Chirper bench's own post check (every acknowledged
//! post in its followers' timelines) must pass; moves and fallbacks must have happened.
//!
//! `DSSMR_NEMESIS_SEED=N` replays a plan (`random` draws one; the seed is printed either way),
//! `DSSMR_NEMESIS_STEPS=N` sets its length (default 8).

use dssmr_check::history::chirper_timelines::check_timelines;
use dssmr_check::history::linearizability::{check_kv_bounded, DEFAULT_MAX_CONFIGURATIONS};
use dssmr_check::history::{read_jsonl, EventKind};
use dssmr_e2e::fabric::{detect, ClientRun, Fabric};
use dssmr_e2e::layout::{Layout, ReplicaRef};
use dssmr_e2e::probe::{self, leader};
use dssmr_e2e::recovery::{all_ready, progress, recovery, RECOVERY_LIMIT};
use dssmr_e2e::{dssmr_binary, wait_for};
use dssmr_engine::ids::{group_label, GroupId, ORACLE};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a strike does to a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strike {
    Kill,
    Stop,
    Disconnect,
    Pause,
}

/// Which replica of a group a strike hits.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Leader,
    Ordinal(usize),
}

/// One strike of a step: on group `group` of cluster `cluster` (an index into the clusters).
#[derive(Clone, Copy, Debug)]
struct Hit {
    cluster: usize,
    group: GroupId,
    victim: Victim,
    strike: Strike,
    /// How long it lasts beyond the group's new leader (or from the strike, for a follower).
    extra: Duration,
}

/// A step of the plan: one or two hits on distinct groups, struck together.
type Step = Vec<Hit>;

/// A tiny deterministic generator (splitmix64): the plan is a function of the seed alone.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The plan of `steps` steps over `clusters`, drawn from `seed`.
fn plan(seed: u64, clusters: &[Layout], steps: usize) -> Vec<Step> {
    let mut rng = SplitMix(seed);
    let strikes = [
        Strike::Kill,
        Strike::Stop,
        Strike::Disconnect,
        Strike::Pause,
    ];
    (0..steps)
        .map(|_| {
            let n = 1 + rng.below(2) as usize;
            let mut step: Step = Vec::new();
            while step.len() < n {
                let cluster = rng.below(clusters.len() as u64) as usize;
                let groups = clusters[cluster].groups();
                let group = groups[rng.below(groups.len() as u64) as usize];
                let victim = if rng.below(3) < 2 {
                    Victim::Leader
                } else {
                    Victim::Ordinal(rng.below(clusters[cluster].replicas as u64) as usize)
                };
                let strike = strikes[rng.below(strikes.len() as u64) as usize];
                let extra = Duration::from_millis(rng.below(2500));
                if step
                    .iter()
                    .all(|h| (h.cluster, h.group) != (cluster, group))
                {
                    step.push(Hit {
                        cluster,
                        group,
                        victim,
                        strike,
                        extra,
                    });
                }
            }
            step
        })
        .collect()
}

/// `name` as a number; for the seed, `random` draws one from the clock.
fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    if v == "random" {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return Some(SplitMix(nanos ^ u64::from(std::process::id())).next());
    }
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name} is a number (or 'random' for the seed): {v}")),
    )
}

/// Strikes replica `r` as `hit` says.
fn strike(fabric: &mut dyn Fabric, hit: &Hit, r: &ReplicaRef) -> anyhow::Result<()> {
    match hit.strike {
        Strike::Kill => fabric.kill(r),
        Strike::Stop => fabric.stop(r),
        Strike::Disconnect => fabric.disconnect(r),
        Strike::Pause => fabric.pause(r),
    }
    .map_err(|e| e.context(format!("{:?} {r}", hit.strike)))
}

/// Undoes the strike of `hit` on `r`.
fn undo(fabric: &mut dyn Fabric, hit: &Hit, r: &ReplicaRef) -> anyhow::Result<()> {
    match hit.strike {
        Strike::Kill | Strike::Stop => fabric.restart(r),
        Strike::Disconnect => fabric.reconnect(r),
        Strike::Pause => fabric.resume(r),
    }
    .map_err(|e| e.context(format!("undoing {:?} of {r}", hit.strike)))
}

/// Runs `dssmr bench kv` with a history against the kv cluster, for long; the test ends it.
fn kv_load(fabric: &mut dyn Fabric) -> anyhow::Result<ClientRun> {
    fabric.client(
        "nemesis-kv",
        &[
            "bench",
            "kv",
            "--cluster",
            "{work}/kv.yaml",
            "--clients",
            "4",
            "--keys",
            "8",
            "--destination",
            "random",
            "--retry-threshold",
            "1",
            "--warmup",
            "0s",
            "--duration",
            "900s",
            "--history",
            "{work}/kv.jsonl",
            "--json",
            "{work}/kv.json",
            "--quiet",
        ]
        .map(String::from),
    )
}

/// Runs `dssmr bench chirper` (Mix, every call recorded, the post check at the end) against
/// the Chirper cluster, for long; the test ends it. Few clients and many users keep the
/// history (every timeline read, up to 100 posts each) small.
fn chirper_load(fabric: &mut dyn Fabric) -> anyhow::Result<ClientRun> {
    fabric.client(
        "nemesis-chirper",
        &[
            "bench",
            "chirper",
            "--cluster",
            "{work}/chirper.yaml",
            "--workload",
            "mix",
            "--users",
            "300",
            "--clients",
            "2",
            "--destination",
            "random",
            "--retry-threshold",
            "1",
            "--warmup",
            "0s",
            "--duration",
            "900s",
            "--history",
            "{work}/chirper.jsonl",
            "--json",
            "{work}/chirper.json",
            "--check-posts",
            "--quiet",
        ]
        .map(String::from),
    )
}

/// Application commands (`access`, not creates or moves) the partitions of `layout` executed,
/// as their most advanced reachable replicas count them.
fn accesses(f: &dyn Fabric, layout: &Layout) -> f64 {
    let labels = [("kind", "access"), ("outcome", "executed")];
    layout
        .groups()
        .into_iter()
        .filter(|g| *g != ORACLE)
        .filter_map(|g| {
            layout
                .group(g)
                .iter()
                .filter_map(|r| probe::metrics(&f.http(r)).ok())
                .map(|m| probe::sum(&m, "dssmr_commands_total", &labels))
                .reduce(f64::max)
        })
        .sum()
}

/// The first record of a bench's `--json` file.
fn record(fabric: &dyn Fabric, file: &str) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(fabric.work().join(file))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v[0].clone())
}

#[test]
fn histories_stay_correct_under_a_seeded_nemesis_of_kills_stops_cuts_and_pauses(
) -> anyhow::Result<()> {
    dssmr_engine::telemetry::init_for_tests();
    let seed = env_number("DSSMR_NEMESIS_SEED").unwrap_or(16);
    let steps = env_number("DSSMR_NEMESIS_STEPS").unwrap_or(8) as usize;
    let replay = format!("nemesis seed {seed} (replay: DSSMR_NEMESIS_SEED={seed})");
    let mut fabric = detect(&dssmr_binary())?;
    eprintln!("e2e fabric: {}", fabric.describe());
    let clusters = Layout::kv_and_chirper();
    let plan = plan(seed, &clusters, steps);
    eprintln!("{replay}: {plan:#?}");
    for c in &clusters {
        fabric.launch(c)?;
    }
    let everyone = fabric.replicas();
    let booted = all_ready(fabric.as_ref(), &everyone, Instant::now())?;
    eprintln!("{} replicas ready in {booted:?}", everyone.len());
    let kv = kv_load(fabric.as_mut())?;
    let chirper = chirper_load(fabric.as_mut())?;
    // The loads are past their setup (creates): the partitions execute their commands.
    for c in &clusters {
        wait_for(
            &format!("the {} load starts", c.name),
            Duration::from_secs(180),
            Duration::from_millis(200),
            || match accesses(fabric.as_ref(), c) {
                n if n >= 100.0 => Ok(()),
                n => Err(format!("{n} commands executed")),
            },
        )?;
    }

    let mut log = Vec::new();
    for (i, step) in plan.iter().enumerate() {
        let t = Instant::now();
        // Resolve and strike every hit of the step.
        let mut struck = Vec::new();
        for hit in step {
            let layout = &clusters[hit.cluster];
            let r = match hit.victim {
                Victim::Leader => {
                    leader(fabric.as_ref(), layout, hit.group, None).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{replay}: step {i}: {} of {} has no leader",
                            group_label(hit.group),
                            layout.name
                        )
                    })?
                }
                Victim::Ordinal(o) => ReplicaRef {
                    cluster: layout.name.clone(),
                    group: hit.group,
                    ordinal: o,
                },
            };
            strike(fabric.as_mut(), hit, &r)?;
            struck.push((hit, r));
        }
        // Hold: until each struck group elected another leader (when its leader was hit),
        // then the drawn extra time.
        for (hit, r) in &struck {
            let layout = &clusters[hit.cluster];
            if matches!(hit.victim, Victim::Leader) {
                wait_for(
                    &format!(
                        "{replay}: step {i}: {} {} elects a leader other than {r}",
                        layout.name,
                        group_label(hit.group)
                    ),
                    RECOVERY_LIMIT,
                    Duration::from_millis(50),
                    || {
                        leader(fabric.as_ref(), layout, hit.group, Some(r))
                            .map(|_| ())
                            .ok_or_else(|| "none yet".to_string())
                    },
                )?;
            }
        }
        let longest = struck
            .iter()
            .map(|(h, _)| h.extra)
            .max()
            .unwrap_or_default();
        // The fault's chosen duration, not a wait for a condition.
        std::thread::sleep(longest);
        for (hit, r) in &struck {
            undo(fabric.as_mut(), hit, r)?;
        }
        // The cluster recovers: leaders, progress, the struck replicas ready.
        for (hit, r) in &struck {
            let layout = &clusters[hit.cluster];
            recovery(fabric.as_ref(), layout, hit.group, None, t)
                .map_err(|e| e.context(format!("{replay}: step {i}")))?;
            all_ready(fabric.as_ref(), std::slice::from_ref(r), t)
                .map_err(|e| e.context(format!("{replay}: step {i}: {r} rejoins")))?;
        }
        let line = format!(
            "step {i}: {} back in {:.1} s",
            struck
                .iter()
                .map(|(h, r)| format!("{:?} {r}", h.strike))
                .collect::<Vec<_>>()
                .join(", "),
            t.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        log.push(line);
    }
    anyhow::ensure!(
        log.len() == plan.len(),
        "{replay}: only {} of {} steps carried out",
        log.len(),
        plan.len()
    );

    // Reads after the last fault: both clusters execute more commands, then the loads end.
    for c in &clusters {
        let base = progress(fabric.as_ref(), c, None);
        wait_for(
            &format!("{replay}: {} serves its load after the nemesis", c.name),
            RECOVERY_LIMIT,
            Duration::from_millis(100),
            || {
                let now = progress(fabric.as_ref(), c, None);
                if now >= base + 100.0 {
                    Ok(())
                } else {
                    Err(format!("{now} executed, waiting for {}", base + 100.0))
                }
            },
        )?;
    }
    kv.terminate()?;
    chirper.terminate()?;
    let (kv_ok, kv_out) = kv.wait(Duration::from_secs(120))?;
    anyhow::ensure!(kv_ok, "{replay}: the kv load failed:\n{kv_out}");
    let (ch_ok, ch_out) = chirper.wait(Duration::from_secs(300))?;
    anyhow::ensure!(
        ch_ok,
        "{replay}: the Chirper load (or its post check) failed:\n{ch_out}"
    );
    anyhow::ensure!(
        ch_out.contains("post check:"),
        "{replay}: no post check ran:\n{ch_out}"
    );

    // Moves happened in both loads, and S-SMR fallbacks in at least one: a kv load whose 8
    // keys settle in one partition may make none (seed 16 once made 0 in CI), while Chirper's
    // posts keep revealing followers elsewhere.
    let mut fallbacks = 0;
    for (name, file) in [("kv", "kv.json"), ("Chirper", "chirper.json")] {
        let r = record(fabric.as_ref(), file)?;
        eprintln!(
            "{name} load: {} commands, {:.0}/s, {} errors ({} unknown outcome), {:.1} moves/s, \
             {} fallbacks",
            r["commands"],
            r["throughput_cps"].as_f64().unwrap_or(0.0),
            r["errors"],
            r["indeterminate"],
            r["moves_per_s"].as_f64().unwrap_or(0.0),
            r["fallbacks"]
        );
        let moves = r["moves_per_s"].as_f64().unwrap_or(0.0);
        let commands = r["commands"].as_u64().unwrap_or(0);
        anyhow::ensure!(commands > 0, "{replay}: {name}: no command measured: {r}");
        anyhow::ensure!(moves > 0.0, "{replay}: {name}: no moves: {r}");
        fallbacks += r["fallbacks"].as_u64().unwrap_or(0);
    }
    anyhow::ensure!(fallbacks > 0, "{replay}: no S-SMR fallback in either load");

    // The histories.
    let events = read_jsonl(fabric.work().join("kv.jsonl"))?;
    let count = |kind| events.iter().filter(|e| e.kind == kind).count();
    eprintln!(
        "kv history: {} operations ({} ok, {} fail, {} info)",
        count(EventKind::Invoke),
        count(EventKind::Ok),
        count(EventKind::Fail),
        count(EventKind::Info)
    );
    check_kv_bounded(&events, &BTreeMap::new(), DEFAULT_MAX_CONFIGURATIONS)
        .map_err(|e| anyhow::anyhow!("{replay}: the kv history is not linearizable: {e}"))?;
    let events = read_jsonl(fabric.work().join("chirper.jsonl"))?;
    let report = check_timelines(&events)
        .map_err(|e| anyhow::anyhow!("{replay}: a Chirper timeline reply is wrong: {e}"))?;
    eprintln!("Chirper history: {} events, {report:?}", events.len());
    anyhow::ensure!(report.replies > 0, "{replay}: no timeline reply recorded");
    eprintln!("{replay}: passed\n{}", log.join("\n"));
    Ok(())
}
