//! The benchmark commands of the `dssmr` binary end to end, on short runs: `bench chirper`
//! writes one JSON record per workload × partitions × mode and a history file in the
//! documented event schema (process ids distinct across runs), and with `--quick --out DIR`
//! result files (JSON, CSV, per-second CSV) that agree with each other, and PNG plots;
//! `bench kv` writes a self-contained history that `history check --app kv` accepts, and
//! rejects once a read in it is corrupted. No timing is asserted.

use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dssmr");
/// How long one invocation of the binary may take before the test gives up on it.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `dssmr <args>` to completion (killed after [`LIMIT`]), with stdout and stderr captured.
fn dssmr(args: &[&str]) -> Output {
    dssmr_within(args, LIMIT)
}

/// Runs `dssmr <args>` to completion (killed after `limit`), with stdout and stderr captured.
fn dssmr_within(args: &[&str], limit: Duration) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn dssmr");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dssmr {args:?} did not finish within {limit:?}:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: std::fs::read(&out).expect("read stdout"),
        stderr: std::fs::read(&err).expect("read stderr"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `dssmr <args>` and expects success.
fn dssmr_ok(args: &[&str]) -> Output {
    dssmr_ok_within(args, LIMIT)
}

/// Runs `dssmr <args>` (killed after `limit`) and expects success.
fn dssmr_ok_within(args: &[&str], limit: Duration) -> Output {
    let out = dssmr_within(args, limit);
    assert!(
        out.status.success(),
        "dssmr {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// One event of a history file, checked against the documented schema: exactly the fields
/// `process`, `type`, `f`, `args`, `result`, `time_ns`.
struct Event {
    process: u64,
    kind: String,
    f: String,
    args: Value,
    result: Value,
    time_ns: u64,
}

fn parse_event(n: usize, line: &str) -> Event {
    let value: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("line {n} is not JSON ({e}): {line}"));
    let object: &Map<String, Value> = value
        .as_object()
        .unwrap_or_else(|| panic!("line {n} is not an object: {line}"));
    let fields: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["process", "type", "f", "args", "result", "time_ns"]),
        "line {n}: {line}"
    );
    let event = Event {
        process: object["process"].as_u64().expect("process is a u64"),
        kind: object["type"].as_str().expect("type is a string").into(),
        f: object["f"].as_str().expect("f is a string").into(),
        args: object["args"].clone(),
        result: object["result"].clone(),
        time_ns: object["time_ns"].as_u64().expect("time_ns is a u64"),
    };
    assert!(
        ["invoke", "ok", "fail", "info"].contains(&event.kind.as_str()),
        "line {n}: {line}"
    );
    event
}

/// Reads a history file and checks the producer contract: times never go back, a process
/// runs one operation at a time, every completion repeats the `f` and `args` of its
/// process's open invocation, `ok` carries a result, invocations carry none, a process is
/// never used again after an `info`, and nothing is left open at the end.
fn read_history(path: &Path) -> Vec<Event> {
    let body = std::fs::read_to_string(path).expect("read history");
    let events: Vec<Event> = body
        .lines()
        .enumerate()
        .map(|(i, line)| parse_event(i + 1, line))
        .collect();
    let mut open: HashMap<u64, usize> = HashMap::new();
    let mut retired = BTreeSet::new();
    let mut last_time = 0;
    for (i, e) in events.iter().enumerate() {
        let n = i + 1;
        assert!(e.time_ns >= last_time, "line {n}: time goes back");
        last_time = e.time_ns;
        assert!(!retired.contains(&e.process), "line {n}: process reused");
        if e.kind == "invoke" {
            assert!(e.result.is_null(), "line {n}: an invocation has no result");
            let previous = open.insert(e.process, i);
            assert!(previous.is_none(), "line {n}: process already busy");
            continue;
        }
        let invoke = open
            .remove(&e.process)
            .unwrap_or_else(|| panic!("line {n}: completion without an invocation"));
        let invoke = &events[invoke];
        assert_eq!((&e.f, &e.args), (&invoke.f, &invoke.args), "line {n}");
        match e.kind.as_str() {
            "ok" => assert!(!e.result.is_null(), "line {n}: ok without a result"),
            "info" => {
                retired.insert(e.process);
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "operations left open: {open:?}");
    events
}

#[test]
fn bench_chirper_writes_records_and_a_history_of_every_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("chirper.json");
    let history = dir.path().join("chirper.jsonl");
    let (json_arg, history_arg) = (json.to_str().unwrap(), history.to_str().unwrap());
    let out = dssmr_ok(&[
        "bench",
        "chirper",
        "--workload",
        "mix,post",
        "--partitions",
        "2",
        "--mode",
        "ssmr,dssmr",
        "--duration",
        "2s",
        "--warmup",
        "1s",
        "--clients",
        "8",
        "--users",
        "200",
        "--json",
        json_arg,
        "--history",
        history_arg,
        "--quiet",
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("commands/s"), "a table: {stdout}");

    let records: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read json")).expect("json");
    assert_eq!(records.len(), 4, "{records:#?}");
    let mut points = BTreeSet::new();
    for r in &records {
        for field in [
            "throughput_cps",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "moves_per_s",
            "retries_per_s",
            "duration_s",
        ] {
            let v = r[field].as_f64();
            assert!(v.is_some_and(|v| v >= 0.0), "{field} in {r}");
        }
        assert!(r["fallbacks"].is_u64(), "{r}");
        assert!(r["throughput_cps"].as_f64() > Some(0.0), "{r}");
        assert_eq!(r["partitions"], 2, "{r}");
        points.insert((
            r["workload"].as_str().expect("workload").to_string(),
            r["mode"].as_str().expect("mode").to_string(),
        ));
    }
    let expected: BTreeSet<(String, String)> = ["mix", "post"]
        .iter()
        .flat_map(|w| ["ssmr", "dssmr"].map(|m| (w.to_string(), m.to_string())))
        .collect();
    assert_eq!(points, expected);

    let events = read_history(&history);
    let kinds: BTreeSet<&str> = events.iter().map(|e| e.f.as_str()).collect();
    assert!(
        kinds.contains("create_user") && kinds.contains("post"),
        "{kinds:?}"
    );
    assert!(
        kinds.contains("get_timeline"),
        "the mix reads timelines: {kinds:?}"
    );
    // Each run starts by creating user 0 (the loaders take users in order); the processes of
    // different runs never overlap.
    let mut runs: Vec<BTreeSet<u64>> = Vec::new();
    for e in &events {
        if e.kind == "invoke" && e.f == "create_user" && e.args["user"] == 0 {
            runs.push(BTreeSet::new());
        }
        runs.last_mut()
            .expect("a run starts with the create of user 0")
            .insert(e.process);
    }
    assert_eq!(runs.len(), 4, "one setup per run");
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            assert!(a.is_disjoint(b), "process ids are distinct across runs");
        }
    }
    let created = events
        .iter()
        .filter(|e| e.kind == "ok" && e.f == "create_user")
        .count();
    assert_eq!(created, 4 * 200, "every user of every run is created");
}

/// The fields of a `results.json` record and of a `results.csv` row checked here, with whether
/// each is a number (else a string).
const RESULT_FIELDS: [(&str, Kind); 14] = [
    ("workload", Kind::Text),
    ("partitions", Kind::Count),
    ("mode", Kind::Text),
    ("placement", Kind::Text),
    ("destination", Kind::Text),
    ("spreads_per_s", Kind::Real),
    ("throughput_cps", Kind::Real),
    ("p50_ms", Kind::Real),
    ("p95_ms", Kind::Real),
    ("p99_ms", Kind::Real),
    ("moves_per_s", Kind::Real),
    ("retries_per_s", Kind::Real),
    ("fallbacks", Kind::Count),
    ("duration_s", Kind::Real),
];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    Count,
    Real,
}

/// The PNG plots `--out` writes, each [`dssmr_bench::report::FIGURE_SIZE`].
const PLOTS: [&str; 3] = ["throughput.png", "latency.png", "moves.png"];

/// Reads a CSV file with the csv crate: its header and its rows as maps from column to cell.
fn read_csv(path: &Path) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut reader = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let header: Vec<String> = reader
        .headers()
        .expect("a header")
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|row| {
            let row = row.expect("a well-formed row");
            header
                .iter()
                .cloned()
                .zip(row.iter().map(str::to_string))
                .collect()
        })
        .collect();
    (header, rows)
}

/// Whether two numbers written by different encoders are the same measurement.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn bench_chirper_quick_writes_result_files_and_plots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("results").join("quick");
    let out_arg = out_dir.to_str().unwrap();
    // 8 short runs, each on a fresh cluster.
    let out = dssmr_ok_within(
        &[
            "bench",
            "chirper",
            "--quick",
            "--workload",
            "post,mix",
            "--partitions",
            "1,2",
            "--mode",
            "ssmr,dssmr",
            "--out",
            out_arg,
            "--quiet",
        ],
        Duration::from_secs(600),
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("1s warm-up + 2s measured") && stdout.contains("8 clients, 300 users"),
        "--quick settings: {stdout}"
    );
    assert!(
        stdout.contains(out_arg),
        "says where the files went: {stdout}"
    );
    for file in ["results.json", "results.csv", "timeseries.csv"]
        .into_iter()
        .chain(PLOTS)
    {
        assert!(out_dir.join(file).is_file(), "{file} is written");
    }

    // results.json: one record per workload × partitions × mode, with typed fields.
    let body = std::fs::read_to_string(out_dir.join("results.json")).expect("read json");
    let records: Vec<Value> = serde_json::from_str(&body).expect("results.json is JSON");
    assert_eq!(records.len(), 2 * 2 * 2, "{records:#?}");
    let mut points = BTreeSet::new();
    let mut runs: HashMap<(String, u64, String), &Value> = HashMap::new();
    for r in &records {
        for (field, kind) in RESULT_FIELDS {
            let v = &r[field];
            let ok = match kind {
                Kind::Text => v.is_string(),
                Kind::Count => v.is_u64(),
                Kind::Real => v.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0),
            };
            assert!(ok, "{field} should be {kind:?} in {r}");
        }
        assert!(r["series"].is_array(), "the series is kept: {r}");
        let key = (
            r["workload"].as_str().unwrap().to_string(),
            r["partitions"].as_u64().unwrap(),
            r["mode"].as_str().unwrap().to_string(),
        );
        points.insert(key.clone());
        runs.insert(key, r);
    }
    let mut expected = BTreeSet::new();
    for workload in ["post", "mix"] {
        for partitions in [1, 2] {
            for mode in ["ssmr", "dssmr"] {
                expected.insert((workload.to_string(), partitions, mode.to_string()));
            }
        }
    }
    assert_eq!(points, expected);

    // results.csv: the same records, one row each.
    let (header, rows) = read_csv(&out_dir.join("results.csv"));
    for (field, _) in RESULT_FIELDS {
        assert!(header.iter().any(|h| h == field), "{field} in {header:?}");
    }
    assert_eq!(rows.len(), records.len());
    let mut seen = BTreeSet::new();
    for row in &rows {
        let partitions: u64 = row["partitions"].parse().expect("partitions is a count");
        let key = (row["workload"].clone(), partitions, row["mode"].clone());
        let record = runs
            .get(&key)
            .unwrap_or_else(|| panic!("csv row {row:?} has no JSON record"));
        assert!(seen.insert(key), "one row per run: {row:?}");
        for (field, kind) in RESULT_FIELDS {
            let cell = &row[field];
            match kind {
                Kind::Text => assert_eq!(Some(cell.as_str()), record[field].as_str(), "{field}"),
                Kind::Count => {
                    let n: u64 = cell.parse().unwrap_or_else(|e| panic!("{field}: {e}"));
                    assert_eq!(Some(n), record[field].as_u64(), "{field}");
                }
                Kind::Real => {
                    let x: f64 = cell.parse().unwrap_or_else(|e| panic!("{field}: {e}"));
                    let json = record[field].as_f64().unwrap();
                    assert!(same(x, json), "{field}: csv {x} vs json {json}");
                }
            }
        }
    }

    // timeseries.csv: every second of every run, in time order within a run.
    let (header, rows) = read_csv(&out_dir.join("timeseries.csv"));
    let columns = [
        "workload",
        "partitions",
        "mode",
        "t_s",
        "measured",
        "throughput_cps",
        "moves_per_s",
        "retries_per_s",
    ];
    for column in columns {
        assert!(header.iter().any(|h| h == column), "{column} in {header:?}");
    }
    let mut times: HashMap<(String, u64, String), Vec<f64>> = HashMap::new();
    for row in &rows {
        let key = (
            row["workload"].clone(),
            row["partitions"].parse().expect("partitions"),
            row["mode"].clone(),
        );
        assert!(
            ["true", "false"].contains(&row["measured"].as_str()),
            "{row:?}"
        );
        for column in ["throughput_cps", "moves_per_s", "retries_per_s"] {
            let v: f64 = row[column].parse().expect("a number");
            assert!(v >= 0.0, "{column} in {row:?}");
        }
        times
            .entry(key)
            .or_default()
            .push(row["t_s"].parse().expect("t_s"));
    }
    assert_eq!(
        times.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "rows for every run"
    );
    for (run, ts) in &times {
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{run:?}: {ts:?}");
        let series = runs[run]["series"].as_array().unwrap();
        assert_eq!(ts.len(), series.len(), "{run:?}: one row per sample");
    }

    // The plots are PNG images of the documented size.
    for plot in PLOTS {
        let path = out_dir.join(plot);
        let bytes = std::fs::read(&path).expect("read plot");
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{plot} is a PNG");
        let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .unwrap_or_else(|e| panic!("{plot} decodes: {e}"));
        assert_eq!(
            (image.width(), image.height()),
            dssmr_bench::report::FIGURE_SIZE,
            "{plot}"
        );
    }
}

#[test]
fn bench_kv_history_is_checked_outside_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("kv.jsonl");
    let json = dir.path().join("kv.json");
    let (history_arg, json_arg) = (history.to_str().unwrap(), json.to_str().unwrap());
    dssmr_ok(&[
        "bench",
        "kv",
        "--keys",
        "6",
        "--clients",
        "4",
        "--partitions",
        "2",
        "--mode",
        "dssmr",
        "--retry-threshold",
        "1",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--history",
        history_arg,
        "--json",
        json_arg,
        "--quiet",
    ]);
    let records: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read json")).expect("json");
    assert_eq!(records.len(), 1);
    assert_eq!(
        (&records[0]["mode"], &records[0]["keys"]),
        (&Value::from("dssmr"), &Value::from(6))
    );

    // Self-contained: every key is put before anything else touches it.
    let events = read_history(&history);
    let first_put: BTreeSet<String> = events
        .iter()
        .take_while(|e| e.f == "put")
        .filter(|e| e.kind == "ok" && e.args["value"] == 100)
        .map(|e| e.args["key"].as_str().expect("key").to_string())
        .collect();
    assert_eq!(first_put, (0..6).map(|i| format!("k{i}")).collect());

    let out = dssmr_ok(&["history", "check", "--app", "kv", history_arg]);
    let verdict = text(&out.stdout);
    assert!(verdict.contains(": linearizable"), "{verdict}");

    // The first read of the workload, made to return a value no key ever held.
    let body = std::fs::read_to_string(&history).expect("read history");
    let mut lines: Vec<String> = body.lines().map(str::to_string).collect();
    let read = lines
        .iter()
        .position(|l| l.contains(r#""type":"ok","f":"get""#))
        .expect("the history has reads");
    let mut event: Value = serde_json::from_str(&lines[read]).expect("json");
    let value = event["result"]["value"].as_i64().expect("a read value");
    event["result"]["value"] = Value::from(value + 1_000_000);
    lines[read] = event.to_string();
    let corrupted = dir.path().join("corrupted.jsonl");
    std::fs::write(&corrupted, lines.join("\n") + "\n").expect("write");
    let out = dssmr(&[
        "history",
        "check",
        "--app",
        "kv",
        corrupted.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let verdict = text(&out.stdout);
    assert!(verdict.contains("not linearizable"), "{verdict}");
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    for (args, flag) in [
        (
            &["bench", "chirper", "--partitions", "2,9"][..],
            "--partitions",
        ),
        (&["bench", "chirper", "--mode", "ssmr,ssmr"][..], "--mode"),
        (&["bench", "kv", "--keys", "0"][..], "--keys"),
        (&["bench", "kv", "--mix", "get=1,incr=1"][..], "--mix"),
        (
            &["history", "check", "--app", "bank", "h.jsonl"][..],
            "--app",
        ),
        (
            &[
                "history",
                "check",
                "--app",
                "kv",
                "--max-configurations",
                "0",
                "h.jsonl",
            ][..],
            "--max-configurations",
        ),
    ] {
        let out = dssmr(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = text(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}
