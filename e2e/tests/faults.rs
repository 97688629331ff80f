//! Fault-injection end-to-end test (issue 5): two DS-SMR clusters, kv and Chirper, each an
//! oracle and 2 partitions × 3 replicas, every replica a `dssmr replica` container (or a
//! 127.0.0.1 process without Docker), under kv and Chirper load from client containers, while
//! the test
//!
//! (a) SIGKILLs the leader of partition 1 and restarts it,
//! (b) SIGKILLs the oracle leader and restarts it,
//! (c) disconnects the leader of partition 2 from the network and reconnects it,
//! (d) stops every replica (SIGTERM) and starts them all again,
//! (e) rolls every group twice, as a StatefulSet rolling update does: in every group at once
//!     the replica with the highest ordinal is stopped with SIGTERM and started again, the
//!     next one once it is ready (`../shared/repro/rolling-restart-oracle/`: a roll once left
//!     two oracle replicas unable to start). Every replica must come back each time.
//!
//! After each fault it measures how long the group takes to make progress again (a leader and
//! newly executed commands) and how long the faulty replica takes to be ready again. The kv
//! history, recorded across all faults, must be linearizable: an acknowledged write that a
//! later read misses (e.g. lost in the restart of everything) fails the check. A real
//! Prometheus scrapes every replica; `rate()` of executed commands and of moves must be
//! non-zero under load.

use dssmr_check::history::linearizability::{check_kv_bounded, DEFAULT_MAX_CONFIGURATIONS};
use dssmr_check::history::read_jsonl;
use dssmr_e2e::fabric::detect;
use dssmr_e2e::layout::{Layout, ReplicaRef};
use dssmr_e2e::probe::leader;
use dssmr_e2e::prometheus::{self, Prometheus};
use dssmr_e2e::recovery::{all_ready, recovery, Recovery};
use dssmr_e2e::{dssmr_binary, wait_for};
use dssmr_engine::ids::{GroupId, ORACLE};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How many times every group is rolled.
const ROLLING_ROUNDS: usize = 2;

/// A fault of one replica: what is done to it, and how it is undone.
#[derive(Clone, Copy)]
enum Fault {
    /// SIGKILL, then start it again.
    Kill,
    /// Cut it off the network, then reconnect it.
    Disconnect,
}

/// One line of the report.
struct Row {
    fault: &'static str,
    cluster: String,
    replica: String,
    recovery: Recovery,
    rejoin: Duration,
}

#[test]
fn replicas_survive_faults_under_load_and_prometheus_sees_them() -> anyhow::Result<()> {
    dssmr_engine::telemetry::init_for_tests();
    let load_s: u64 = std::env::var("DSSMR_E2E_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        // The faults take ~110 s on the 2-core CI machine (two rolling restarts of ~30 s
        // each) and up to ~120 s when it is busy: the load outlasts them with room to spare.
        .unwrap_or(150);
    let mut fabric = detect(&dssmr_binary())?;
    eprintln!("e2e fabric: {}", fabric.describe());
    let clusters = Layout::kv_and_chirper();
    for c in &clusters {
        fabric.launch(c)?;
    }
    let started = Instant::now();
    let everyone = fabric.replicas();
    let boot = all_ready(fabric.as_ref(), &everyone, started)?;
    eprintln!(
        "{} replicas ready in {:.1} s",
        everyone.len(),
        boot.as_secs_f64()
    );

    // A real Prometheus scraping every replica.
    let prom = match prometheus::binary() {
        Some(bin) => {
            let targets: Vec<(String, String)> = everyone
                .iter()
                .map(|r| {
                    let http = fabric.http(r);
                    (http.trim_start_matches("http://").to_string(), r.pod_name())
                })
                .collect();
            Some(Prometheus::start(&bin, &targets)?)
        }
        None => None,
    };
    anyhow::ensure!(
        prom.is_some() || std::env::var_os("CI").is_none(),
        "prometheus is not installed (apt-get install prometheus); CI must run it"
    );

    // Load: kv with a recorded history, Chirper's Mix.
    let duration = format!("{load_s}s");
    let kv_load = fabric.client(
        "load-kv",
        &[
            "bench",
            "kv",
            "--cluster",
            "{work}/kv.yaml",
            "--clients",
            "4",
            "--keys",
            "8",
            "--warmup",
            "1s",
            "--duration",
            &duration,
            "--history",
            "{work}/kv.jsonl",
            "--json",
            "{work}/kv.json",
            "--quiet",
        ]
        .map(String::from),
    )?;
    let chirper_load = fabric.client(
        "load-chirper",
        &[
            "bench",
            "chirper",
            "--cluster",
            "{work}/chirper.yaml",
            "--workload",
            "mix",
            "--users",
            "200",
            "--clients",
            "4",
            "--warmup",
            "1s",
            "--duration",
            &duration,
            "--json",
            "{work}/chirper.json",
            "--quiet",
        ]
        .map(String::from),
    )?;
    let load_started = Instant::now();
    for c in &clusters {
        recovery(fabric.as_ref(), c, GroupId(1), None, Instant::now())?;
    }
    eprintln!(
        "load running after {:.1} s",
        load_started.elapsed().as_secs_f64()
    );

    // Prometheus sees the load: rate() of executed commands and of moves.
    if let Some(prom) = &prom {
        for (what, q) in [
            (
                "commands",
                "sum(rate(dssmr_commands_total{outcome=\"executed\"}[10s]))",
            ),
            ("moves", "sum(rate(dssmr_variable_moves_total[10s]))"),
        ] {
            let v = wait_for(
                &format!("Prometheus rate of {what}"),
                Duration::from_secs(40),
                Duration::from_millis(500),
                || match prom.query(q)?.first() {
                    Some(v) if *v > 0.0 => Ok(*v),
                    other => Err(format!("{q} = {other:?}")),
                },
            )?;
            eprintln!("Prometheus: {q} = {v:.1}/s");
        }
        let down: Vec<String> = prom
            .targets_up()
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .filter(|(_, up)| !up)
            .map(|(pod, _)| pod)
            .collect();
        anyhow::ensure!(down.is_empty(), "Prometheus cannot scrape {down:?}");
    }

    let mut rows = Vec::new();
    // (a), (b), (c): fault the leader of a group in every cluster at once, measure each
    // cluster's recovery, then undo the fault and measure how long the replica takes to be
    // ready again.
    for (name, fault, g) in [
        ("kill leader of p1", Fault::Kill, GroupId(1)),
        ("kill oracle leader", Fault::Kill, ORACLE),
        ("disconnect leader of p2", Fault::Disconnect, GroupId(2)),
    ] {
        let mut faulted = Vec::new();
        let t = Instant::now();
        for c in &clusters {
            let l = leader(fabric.as_ref(), c, g, None)
                .ok_or_else(|| anyhow::anyhow!("{}: no leader of {g}", c.name))?;
            match fault {
                Fault::Kill => fabric.kill(&l)?,
                Fault::Disconnect => fabric.disconnect(&l)?,
            }
            faulted.push((c, l));
        }
        eprintln!(
            "{name}: {:?}",
            faulted
                .iter()
                .map(|(_, l)| l.pod_name())
                .collect::<Vec<_>>()
        );
        let mut recovered = Vec::new();
        for (c, l) in &faulted {
            recovered.push(recovery(fabric.as_ref(), c, g, Some(l), t)?);
        }
        for ((c, l), rec) in faulted.into_iter().zip(recovered) {
            let back = Instant::now();
            match fault {
                Fault::Kill => fabric.restart(&l)?,
                Fault::Disconnect => fabric.reconnect(&l)?,
            }
            let rejoin = all_ready(fabric.as_ref(), std::slice::from_ref(&l), back)?;
            rows.push(Row {
                fault: name,
                cluster: c.name.clone(),
                replica: l.pod_name(),
                recovery: rec,
                rejoin,
            });
        }
    }

    // (d) Stop everything (SIGTERM), start everything.
    {
        eprintln!("stopping everything");
        fabric.stop_all()?;
        let t = Instant::now();
        fabric.start_all()?;
        let ready = all_ready(fabric.as_ref(), &everyone, t)?;
        for c in &clusters {
            let mut rec = recovery(fabric.as_ref(), c, ORACLE, None, t)?;
            for g in c.groups() {
                let r = recovery(fabric.as_ref(), c, g, None, t)?;
                rec.leader = rec.leader.max(r.leader);
                rec.throughput = rec.throughput.max(r.throughput);
            }
            rows.push(Row {
                fault: "stop and start everything",
                cluster: c.name.clone(),
                replica: "all".into(),
                recovery: rec,
                rejoin: ready,
            });
        }
    }
    // (e) Rolling restarts.
    for round in 1..=ROLLING_ROUNDS {
        let t = Instant::now();
        let replicas = clusters.iter().map(|c| c.replicas).max().unwrap_or(0);
        for ordinal in (0..replicas).rev() {
            let step: Vec<ReplicaRef> = everyone
                .iter()
                .filter(|r| r.ordinal == ordinal)
                .cloned()
                .collect();
            for r in &step {
                fabric.stop(r)?;
            }
            for r in &step {
                fabric.restart(r)?;
            }
            all_ready(fabric.as_ref(), &step, Instant::now())?;
        }
        let rolled = t.elapsed();
        eprintln!(
            "rolling restart {round}: every replica back in {:.1} s",
            rolled.as_secs_f64()
        );
        for c in &clusters {
            let mut rec = recovery(fabric.as_ref(), c, ORACLE, None, t)?;
            for g in c.groups() {
                let r = recovery(fabric.as_ref(), c, g, None, t)?;
                rec.leader = rec.leader.max(r.leader);
                rec.throughput = rec.throughput.max(r.throughput);
            }
            rows.push(Row {
                fault: if round == 1 {
                    "rolling restart (1st)"
                } else {
                    "rolling restart (2nd)"
                },
                cluster: c.name.clone(),
                replica: "all".into(),
                recovery: rec,
                rejoin: rolled,
            });
        }
    }
    let faults_done = load_started.elapsed();
    anyhow::ensure!(
        faults_done + Duration::from_secs(5) < Duration::from_secs(load_s),
        "the faults took {faults_done:?}, longer than the load ({load_s} s): raise \
         DSSMR_E2E_LOAD_SECONDS so that reads after the last fault are recorded"
    );

    // The loads finish by themselves.
    let limit = Duration::from_secs(load_s + 90);
    let (kv_ok, kv_out) = kv_load.wait(limit)?;
    anyhow::ensure!(kv_ok, "kv load failed:\n{kv_out}");
    let (ch_ok, ch_out) = chirper_load.wait(limit)?;
    anyhow::ensure!(ch_ok, "Chirper load failed:\n{ch_out}");

    // The admin API answers across the network: every group has a leader, every member is
    // reachable, the oracle knows where the keys are.
    let admin = fabric.client(
        "admin-status",
        &["admin", "--config", "{work}/kv.yaml", "status"].map(String::from),
    )?;
    let (ok, out) = admin.wait(Duration::from_secs(60))?;
    anyhow::ensure!(ok, "dssmr admin status failed:\n{out}");
    let json_start = out.find('{').unwrap_or(0);
    let status: serde_json::Value = serde_json::from_str(&out[json_start..])
        .map_err(|e| anyhow::anyhow!("admin status is not JSON ({e}):\n{out}"))?;
    let groups = status["groups"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(groups.len() == 3, "admin status: {status}");
    for g in &groups {
        anyhow::ensure!(
            g["leader"].as_str().is_some_and(|l| !l.is_empty()),
            "no leader: {g}"
        );
        let unreachable = g["members"]
            .as_array()
            .map(|ms| ms.iter().filter(|m| m["role"] == "unreachable").count())
            .unwrap_or(3);
        anyhow::ensure!(unreachable == 0, "unreachable members: {g}");
    }
    let keys: u64 = status["partitions"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["variables"].as_u64()).sum())
        .unwrap_or(0);
    anyhow::ensure!(keys == 8, "the oracle should know the 8 keys: {status}");

    // Nothing acknowledged is lost, nothing is reordered: the kv history is linearizable.
    let events = read_jsonl(fabric.work().join("kv.jsonl"))?;
    let ops = events
        .iter()
        .filter(|e| e.kind == dssmr_check::history::EventKind::Invoke)
        .count();
    check_kv_bounded(&events, &BTreeMap::new(), DEFAULT_MAX_CONFIGURATIONS)
        .map_err(|e| anyhow::anyhow!("kv history is not linearizable: {e}"))?;

    let mut report = String::new();
    writeln!(report, "e2e faults on {}", fabric.describe())?;
    writeln!(
        report,
        "kv history: {ops} operations over {load_s} s, linearizable"
    )?;
    for (name, file) in [("kv", "kv.json"), ("chirper", "chirper.json")] {
        let text = std::fs::read_to_string(fabric.work().join(file))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let r = &v[0];
        writeln!(
            report,
            "{name} load: {:.0} cmd/s, p99 {:.1} ms, {} errors ({} unknown outcome)",
            r["throughput_cps"].as_f64().unwrap_or(0.0),
            r["p99_ms"].as_f64().unwrap_or(0.0),
            r["errors"],
            r["indeterminate"]
        )?;
        anyhow::ensure!(
            r["throughput_cps"].as_f64().unwrap_or(0.0) > 0.0,
            "{name} load made no progress"
        );
    }
    writeln!(
        report,
        "times from the fault (rejoin: from the restart/reconnect until the replica is ready)"
    )?;
    writeln!(
        report,
        "{:<26} {:<8} {:<16} {:>10} {:>14} {:>10}",
        "fault", "cluster", "replica", "leader ms", "throughput ms", "rejoin ms"
    )?;
    for r in &rows {
        writeln!(
            report,
            "{:<26} {:<8} {:<16} {:>10} {:>14} {:>10}",
            r.fault,
            r.cluster,
            r.replica,
            r.recovery.leader.as_millis(),
            r.recovery.throughput.as_millis(),
            r.rejoin.as_millis()
        )?;
    }
    eprint!("{report}");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-faults-report.txt");
    std::fs::write(&out, &report)?;
    drop(prom);
    Ok(())
}
