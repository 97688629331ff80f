//! The `dssmr` binary end to end: `dssmr local` serves a cluster and writes its config,
//! `dssmr client` sends it kv and Chirper commands and prints JSON replies, bad configs and
//! mismatched apps are refused with the field named, and SIGTERM stops the cluster cleanly.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dssmr");
/// How long a local cluster may take to come up (elections of every group).
const STARTUP: Duration = Duration::from_secs(30);
/// How long a stopped cluster may take to exit.
const SHUTDOWN: Duration = Duration::from_secs(15);

/// A `dssmr local` process, killed when dropped (also when the test fails).
struct LocalCluster {
    child: Child,
    config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts `dssmr local <args> --write-config FILE` and waits until FILE exists.
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("cluster.yaml");
        let log = dir.path().join("local.log");
        let child = Command::new(BIN)
            .arg("local")
            .args(args)
            .arg("--write-config")
            .arg(&config)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("local.out")).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn dssmr local");
        let mut cluster = LocalCluster {
            child,
            config,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + STARTUP;
        while !cluster.config.exists() {
            if let Some(status) = cluster.child.try_wait().expect("try_wait") {
                panic!(
                    "dssmr local {args:?} exited with {status} before writing its config:\n{}",
                    cluster.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dssmr local {args:?} wrote no config within {STARTUP:?}:\n{}",
                cluster.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and expects a clean exit in time.
    fn stop(mut self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(term.success(), "kill -TERM failed");
        let deadline = Instant::now() + SHUTDOWN;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "dssmr local exited with {status}");
                assert!(
                    self.log_text().contains("SIGTERM: shutting down"),
                    "{}",
                    self.log_text()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dssmr local did not exit within {SHUTDOWN:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_client(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("client")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("run dssmr client")
}

/// Runs a client command that must succeed and returns its JSON reply.
fn reply(config: &Path, args: &[&str]) -> Value {
    let out = run_client(config, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dssmr client {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("dssmr client {args:?} printed no JSON ({e}): {stdout:?}"))
}

/// Runs a client command that must fail and returns its stderr.
fn failure(config: &Path, args: &[&str]) -> String {
    let out = run_client(config, args);
    assert!(
        !out.status.success(),
        "dssmr client {args:?} should have failed but printed {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "exit code of {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn kv_through_the_command_line() {
    let cluster = LocalCluster::start(&["--app", "kv", "--mode", "dssmr", "--partitions", "2"]);
    let c = cluster.config.clone();
    let config = std::fs::read_to_string(&c).expect("config");
    assert!(
        config.contains("app: kv") && config.contains("oracle:"),
        "{config}"
    );

    assert_eq!(reply(&c, &["kv", "put", "a", "10"]), json!("done"));
    assert_eq!(reply(&c, &["kv", "put", "b", "-3"]), json!("done"));
    assert_eq!(reply(&c, &["kv", "put", "b", "0"]), json!("done"));
    assert_eq!(reply(&c, &["kv", "get", "a"]), json!({"value": 10}));
    assert_eq!(
        reply(&c, &["kv", "transfer", "a", "b", "4"]),
        json!({"transferred": true})
    );
    assert_eq!(
        reply(&c, &["kv", "transfer", "a", "b", "100"]),
        json!({"transferred": false})
    );
    assert_eq!(
        reply(&c, &["kv", "read", "a", "b"]),
        json!({"values": [6, 4]})
    );
    assert_eq!(
        reply(&c, &["kv", "cas", "a", "6", "-1"]),
        json!({"swapped": true})
    );
    assert_eq!(
        reply(&c, &["kv", "cas", "a", "6", "7"]),
        json!({"swapped": false})
    );
    assert_eq!(reply(&c, &["kv", "get", "zz"]), json!({"missing": ["zz"]}));
    assert_eq!(
        reply(&c, &["kv", "read", "zz", "a", "yy"]),
        json!({"missing": ["yy", "zz"]})
    );
    assert_eq!(reply(&c, &["kv", "delete", "b"]), json!("done"));
    assert_eq!(reply(&c, &["kv", "get", "b"]), json!({"missing": ["b"]}));
    assert_eq!(reply(&c, &["kv", "delete", "b"]), json!("done"));
    assert_eq!(reply(&c, &["kv", "get", "a"]), json!({"value": -1}));

    let err = failure(&c, &["chirper", "timeline", "1"]);
    assert!(err.contains("runs app kv"), "{err}");

    cluster.stop();
    // Nobody answers any more: a cluster error, reported with exit code 1.
    let err = failure(&c, &["--timeout", "1s", "kv", "get", "a"]);
    assert!(err.starts_with("error:"), "{err}");
}

#[test]
fn chirper_through_the_command_line() {
    // Communities of one user: every user is placed on its own, so follows and posts span
    // partitions and DS-SMR has to move users.
    let cluster = LocalCluster::start(&[
        "--app",
        "chirper",
        "--mode",
        "dssmr",
        "--partitions",
        "2",
        "--community-size",
        "1",
    ]);
    let c = cluster.config.clone();
    for u in ["1", "2", "3"] {
        assert_eq!(
            reply(&c, &["chirper", "create-user", u]),
            json!({"created": true})
        );
    }
    assert_eq!(
        reply(&c, &["chirper", "create-user", "1"]),
        json!({"created": false})
    );
    assert_eq!(
        reply(&c, &["chirper", "follow", "2", "1"]),
        json!({"followed": true})
    );
    assert_eq!(
        reply(&c, &["chirper", "follow", "3", "1"]),
        json!({"followed": true})
    );
    assert_eq!(
        reply(&c, &["chirper", "follow", "3", "1"]),
        json!({"followed": false})
    );
    assert_eq!(
        reply(&c, &["chirper", "post", "1", "hello, world"]),
        json!({"posted": {"seq": 0}})
    );
    for follower in ["2", "3"] {
        let timeline = reply(&c, &["chirper", "timeline", follower]);
        let posts = timeline["timeline"].as_array().expect("a timeline");
        assert_eq!(posts.len(), 1, "{timeline}");
        assert_eq!(posts[0]["author"], json!(1));
        assert_eq!(posts[0]["text"], json!("hello, world"));
        assert_eq!(posts[0]["seq"], json!(0));
    }
    assert_eq!(
        reply(&c, &["chirper", "timeline", "1"]),
        json!({"timeline": []})
    );
    assert_eq!(
        reply(&c, &["chirper", "unfollow", "3", "1"]),
        json!({"unfollowed": true})
    );
    assert_eq!(
        reply(&c, &["chirper", "timeline", "3"]),
        json!({"timeline": []})
    );
    assert_eq!(
        reply(&c, &["chirper", "follow", "9", "1"]),
        json!({"missing": [9]})
    );
    assert_eq!(
        reply(&c, &["chirper", "timeline", "9"]),
        json!({"missing": [9]})
    );
    let err = failure(&c, &["kv", "get", "a"]);
    assert!(err.contains("runs app chirper"), "{err}");
    cluster.stop();
}

#[test]
fn bad_configs_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    let good = "name: t\nmode: dssmr\napp: kv\n\
                oracle: {members: [127.0.0.1:7000]}\n\
                partitions:\n  - members: [127.0.0.1:7001]\n  - members: [127.0.0.1:7002]\n";
    for (bad, expected) in [
        (
            good.replace("[127.0.0.1:7002]", "[127.0.0.1:7002, 127.0.0.1:7003]"),
            "partitions[1].members: need an odd number of replicas (2f+1), got 2",
        ),
        (good.replace("mode: dssmr", "mode: fast"), "mode"),
        (good.replace("app: kv", "app: kv\nretries: 3"), "retries"),
        (
            good.replace("oracle: {members: [127.0.0.1:7000]}\n", ""),
            "oracle: mode dssmr needs an oracle group",
        ),
        (
            good.replace("127.0.0.1:7001", "localhost"),
            "partitions[0].members[0]",
        ),
    ] {
        std::fs::write(&path, &bad).expect("write config");
        let err = failure(&path, &["kv", "get", "a"]);
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
    let err = failure(&dir.path().join("absent.yaml"), &["kv", "get", "a"]);
    assert!(err.contains("cannot read cluster config"), "{err}");
}
