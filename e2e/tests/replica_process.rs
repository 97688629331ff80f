//! `dssmr replica` as real processes on 127.0.0.1 (always, with or without Docker): a DS-SMR kv
//! cluster (oracle + 1 partition × 3) with data directories.
//!
//! - bad flags and configs stop the process with a message naming the flag or field;
//! - every replica becomes ready; `/metrics` passes `promtool check metrics` and carries the
//!   metric names of DESIGN.md §3; `/healthz` answers; the operator's scrape (its status
//!   throughput and move rate) reads the executed commands from them;
//! - SIGTERM of the partition leader hands leadership over (it says so, another replica leads
//!   at once) and loses nothing;
//! - a replica killed with SIGKILL restarts from its data directory and becomes ready;
//! - every replica killed with SIGKILL and started again: every acknowledged write is there.

use dssmr_e2e::fabric::{Fabric, Processes};
use dssmr_e2e::layout::{Layout, ReplicaRef};
use dssmr_e2e::{dssmr_binary, probe, wait_for};
use dssmr_engine::config::AppKind;
use dssmr_engine::ids::{GroupId, ORACLE};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `dssmr ARGS` to completion: success, stdout, stderr.
fn dssmr(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(dssmr_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run dssmr");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn client(config: &Path, args: &[&str]) -> String {
    let config = config.display().to_string();
    let mut argv = vec!["client", "--config", &config, "--timeout", "20s", "kv"];
    argv.extend_from_slice(args);
    let (ok, out, err) = dssmr(&argv);
    assert!(ok, "dssmr {argv:?} failed: {err}");
    out.trim().to_string()
}

fn all_ready(f: &Processes, rs: &[ReplicaRef]) -> anyhow::Result<()> {
    probe::all_ready(f, rs, Duration::from_secs(60))
}

#[test]
fn bad_flags_and_configs_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: t\nmode: dssmr\napp: kv\noracle: {members: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3]}\n\
         partitions:\n  - members: [127.0.0.1:4, 127.0.0.1:5]\n",
    )
    .unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "name: t\nmode: dssmr\napp: kv\noracle: {members: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3]}\n\
         partitions:\n  - members: [127.0.0.1:4, 127.0.0.1:5, 127.0.0.1:6]\n",
    )
    .unwrap();
    let bad = bad.display().to_string();
    let good = good.display().to_string();
    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "replica",
                "--config",
                &bad,
                "--group",
                "p1",
                "--ordinal",
                "0",
            ],
            "partitions[0].members",
        ),
        (
            &[
                "replica",
                "--config",
                "/nonexistent.yaml",
                "--group",
                "p1",
                "--ordinal",
                "0",
            ],
            "--config",
        ),
        (
            &[
                "replica",
                "--config",
                &good,
                "--group",
                "p2",
                "--ordinal",
                "0",
            ],
            "--group",
        ),
        (
            &[
                "replica",
                "--config",
                &good,
                "--group",
                "p1",
                "--ordinal",
                "3",
            ],
            "--ordinal",
        ),
        (&["replica", "--config", &good, "--ordinal", "0"], "--group"),
        (
            &[
                "replica",
                "--config",
                &good,
                "--group",
                "p1",
                "--ordinal",
                "0",
                "--http-addr",
                "nowhere",
            ],
            "--http-addr",
        ),
    ];
    for (args, field) in cases {
        let (ok, _, err) = dssmr(args);
        assert!(!ok, "dssmr {args:?} should fail");
        assert!(
            err.contains(field),
            "dssmr {args:?}: {field} not named in: {err}"
        );
    }
    // POD_NAME that is not a pod of the cluster.
    let out = Command::new(dssmr_binary())
        .args(["replica", "--config", &good])
        .env("POD_NAME", "web-0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("POD_NAME"));
}

#[test]
fn replicas_hand_over_on_sigterm_recover_from_sigkill_and_export_metrics() -> anyhow::Result<()> {
    let mut f = Processes::new(&dssmr_binary())?;
    let layout = Layout {
        name: "kv".into(),
        app: AppKind::Kv,
        partitions: 1,
        replicas: 3,
    };
    f.launch(&layout)?;
    let everyone = layout.replicas();
    all_ready(&f, &everyone)?;
    let config = f.work().join("kv.yaml");
    assert_eq!(client(&config, &["put", "a", "1"]), "\"done\"");
    assert_eq!(client(&config, &["put", "b", "2"]), "\"done\"");
    assert_eq!(
        client(&config, &["transfer", "a", "b", "1"]),
        "{\"transferred\":true}"
    );

    // Metrics: the exposition is valid and has the names dashboards use.
    let p1 = GroupId(1);
    for r in &everyone {
        let (code, text) =
            probe::get(&format!("{}/metrics", f.http(r))).map_err(anyhow::Error::msg)?;
        assert_eq!(code, 200);
        promtool_check(&text, &r.to_string())?;
        let m = probe::parse(&text);
        let mut names = vec![
            "dssmr_commands_total",
            "dssmr_command_duration_seconds_count",
            "dssmr_raft_term",
            "dssmr_raft_is_leader",
            "dssmr_raft_applied_index",
            "dssmr_raft_apply_lag",
        ];
        if r.group == ORACLE {
            names.extend(["dssmr_oracle_consults_total", "dssmr_oracle_variables"]);
        } else {
            names.extend([
                "dssmr_variable_moves_total",
                "dssmr_variables",
                "dssmr_retries_total",
            ]);
        }
        for n in names {
            assert!(
                m.keys().any(|k| k == n || k.starts_with(&format!("{n}{{"))),
                "{r}: no {n} in /metrics"
            );
        }
        if r.group == p1 {
            assert_eq!(probe::sum(&m, "dssmr_variables", &[]), 2.0, "{r}");
            assert!(
                probe::sum(
                    &m,
                    "dssmr_commands_total",
                    &[("kind", "access"), ("outcome", "executed")]
                ) >= 1.0
            );
        }
        let (code, _) =
            probe::get(&format!("{}/healthz", f.http(r))).map_err(anyhow::Error::msg)?;
        assert_eq!(code, 200, "{r} /healthz");
    }
    operator_reads_throughput_from_the_replicas(&f, &config, &everyone)?;

    // A load generator exports the client side: cache hits, consults, fallbacks.
    let port = dssmr_e2e::prometheus::free_port()?;
    let config_arg = config.display().to_string();
    let metrics_addr = format!("127.0.0.1:{port}");
    let load = Command::new(dssmr_binary())
        .args([
            "bench",
            "kv",
            "--cluster",
            &config_arg,
            "--clients",
            "2",
            "--keys",
            "4",
        ])
        .args(["--warmup", "1s", "--duration", "4s", "--quiet"])
        .args(["--metrics-addr", &metrics_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let url = format!("http://{metrics_addr}/metrics");
    let text = wait_for(
        "client metrics with cache hits",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let (_, text) = probe::get(&url)?;
            if probe::sum(&probe::parse(&text), "dssmr_client_cache_hits_total", &[]) > 0.0 {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )?;
    for name in [
        "dssmr_ssmr_fallbacks_total",
        "dssmr_client_oracle_consults_total",
    ] {
        assert!(text.contains(name), "no {name} in client metrics:\n{text}");
    }
    promtool_check(&text, "client metrics")?;
    let out = load.wait_with_output()?;
    assert!(
        out.status.success(),
        "bench kv --cluster failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM of the partition leader: it hands over, another replica leads at once.
    let old = probe::leader(&f, &layout, p1, None).expect("p1 has a leader");
    let t = Instant::now();
    f.stop(&old)?;
    let stopped = t.elapsed();
    let log = f.log(&old);
    assert!(
        log.contains("leadership handed to replica"),
        "{old} did not hand over:\n{log}"
    );
    let new =
        probe::leader(&f, &layout, p1, Some(&old)).expect("a new leader right after the handover");
    eprintln!("SIGTERM handover: {old} → {new}, process exited after {stopped:?}");
    assert_eq!(client(&config, &["read", "a", "b"]), "{\"values\":[0,3]}");
    f.restart(&old)?;
    all_ready(&f, std::slice::from_ref(&old))?;

    // SIGKILL of one replica, restart from its data directory.
    let victim = probe::leader(&f, &layout, p1, None).expect("p1 has a leader");
    f.kill(&victim)?;
    assert_eq!(client(&config, &["put", "c", "3"]), "\"done\"");
    f.restart(&victim)?;
    all_ready(&f, std::slice::from_ref(&victim))?;

    // SIGKILL everything, start everything: no acknowledged write is lost.
    for r in &everyone {
        f.kill(r)?;
    }
    f.start_all()?;
    all_ready(&f, &everyone)?;
    assert_eq!(
        client(&config, &["read", "a", "b", "c"]),
        "{\"values\":[0,3,3]}"
    );
    Ok(())
}

/// `promtool check metrics` on `text` (required in CI, skipped elsewhere without promtool).
/// The operator's scrape of a cluster (what its status and `dssmr_operator_cluster_*` gauges
/// come from) against these real replicas: it finds the executed commands, and a command more
/// raises the count by at least one.
fn operator_reads_throughput_from_the_replicas(
    f: &Processes,
    config: &Path,
    everyone: &[ReplicaRef],
) -> anyhow::Result<()> {
    use dssmr_operator::replicas::{scrape, ReplicaAccess};
    let cluster = dssmr_engine::config::ClusterConfig::load(config)?;
    let topology = cluster.topology();
    let map = everyone
        .iter()
        .map(|r| {
            let member = &topology.groups[&r.group][r.ordinal];
            let http = f.http(r).trim_start_matches("http://").to_string();
            (format!("http://{member}"), http)
        })
        .collect();
    let access = ReplicaAccess::Map(map);
    let runtime = tokio::runtime::Runtime::new()?;
    let before = runtime.block_on(scrape(&cluster, &access))?;
    assert!(
        before.executed >= 3.0,
        "the scrape finds the puts and the transfer: {before:?}"
    );
    assert_eq!(client(config, &["put", "c", "3"]), "\"done\"");
    // Counts are replicated state, exported once applied: wait for the next command to show.
    wait_for(
        "the next command in the scraped count",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let now = runtime
                .block_on(scrape(&cluster, &access))
                .map_err(|e| e.to_string())?;
            (now.executed >= before.executed + 1.0)
                .then_some(())
                .ok_or(format!("{now:?}"))
        },
    )
}

fn promtool_check(text: &str, what: &str) -> anyhow::Result<()> {
    let Some(promtool) = which_promtool() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool missing (apt-get install prometheus); CI must have it"
        );
        eprintln!("promtool not installed: {what} not linted");
        return Ok(());
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    assert!(
        out.status.success(),
        "promtool check metrics on {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn which_promtool() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("promtool"))
        .find(|p| p.exists())
}
