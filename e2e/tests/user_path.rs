//! The user's path, end to end, on real pods: a real control plane (v1.20.2) and three real
//! kubelet nodes (`dssmr_e2e::kube::kubelet`; two labelled as the paper's HP SE1102 replica
//! machines, one as a Dell SC1435 client machine), and on them what a user does:
//!
//! 1. `helm install` of the chart (the real Helm library, `charts/tests/chartcheck.py
//!    install`) with two operator processes: both run as pods from the `dssmr-operator:e2e`
//!    image with the chart's ServiceAccount, reach the API server at the `kubernetes` Service
//!    address, and exactly one of them leads (`dssmr_operator_leader`);
//! 2. `kubectl apply` of `manifests/examples/chirper.yaml` and `manifests/examples/kv.yaml`
//!    (DS-SMR, oracle + 2 partitions × 3 replicas each, persistent volumes): every replica
//!    Ready by its own probes, both clusters Ready in their status;
//! 3. load: the bench Job of `manifests/evaluation/bench-job.yaml` against Chirper (renamed,
//!    shortened and sized for this machine, as its header says to do, plus
//!    `--check-posts`), and a kv load Job recording a history (`dssmr bench kv --history`, on
//!    a hostPath the test reads), both started before any change below;
//! 4. a real Prometheus on the machine finds the replicas through the operator's
//!    `http_sd_configs` endpoint (`/sd/replicas`) and the dashboard's throughput and move-rate
//!    queries return non-zero values; the clusters' status shows throughput too;
//! 5. under that load, kv scales 2 → 4 → 3 → 2 → 3 partitions (so 2 → 4 → 3 and 3 → 2 → 3):
//!    each new partition's pods come up on volumes the harness's dynamic provisioner makes
//!    for their claims, the pods of the other groups keep their UIDs (nothing restarted), and
//!    the kv load started before makes every new partition execute commands; each partition
//!    scaled away is drained (p4 while p3, itself added at run time, is active), removed, and its
//!    pods, StatefulSet and claims deleted; the last partition added is p5 (numbers are
//!    never reused); `kubectl delete pod` of a replica: it comes back on its volume; a
//!    rolling update of the image of both clusters: every pod replaced, one at a time;
//! 6. the loads are stopped with SIGTERM (they end their runs early and write everything): the
//!    kv history is linearizable and the Chirper bench found every acknowledged post in the
//!    timelines;
//! 7. the leading operator pod is deleted: the standby takes the lease and reconciles.
//!
//! Needs root and the artefacts of `e2e/prepare.sh`. Every wait polls a condition under a
//! deadline; the nodes, Prometheus and the control plane stop on drop. Run alone:
//! `bash e2e/prepare.sh && cargo test -p dssmr-e2e --test user_path -- --nocapture`.

use dssmr_check::history::linearizability::{check_kv_bounded, DEFAULT_MAX_CONFIGURATIONS};
use dssmr_check::history::read_jsonl;
use dssmr_e2e::kube::kubelet::{leftovers, KubeletNodes, NodeSpec};
use dssmr_e2e::kube::{pod_is_ready, ControlPlane, Hardware};
use dssmr_e2e::prometheus::{self, Prometheus};
use dssmr_e2e::{probe, wait_for};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NS: &str = "default";
const OPERATOR_NS: &str = "dssmr-system";
const IMAGE: &str = "dssmr:e2e";
/// The same image under another tag: what the rolling update changes to.
const ROLLED: &str = "dssmr:e2e-roll";
const OPERATOR_IMAGE: &str = "dssmr-operator:e2e";
const WAIT: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_millis(500);
/// Load duration of the client Jobs: longer than every step takes; the test stops them with
/// SIGTERM when it is done and fails if one ended before.
const LOAD_S: u64 = 1800;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The steps' times, printed at the end.
struct Steps {
    t0: Instant,
    done: Vec<(String, f64)>,
}

impl Steps {
    fn done(&mut self, what: &str) {
        let t = self.t0.elapsed().as_secs_f64();
        eprintln!("[{t:7.1} s] {what}");
        self.done.push((what.to_string(), t));
    }
}

fn items(v: Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

/// The last `lines` lines of every operator pod's log (for failure reports).
fn operator_logs(cp: &ControlPlane, lines: usize) -> String {
    cp.kubectl(&[
        "logs",
        "-n",
        OPERATOR_NS,
        "-l",
        "app.kubernetes.io/name=dssmr-operator",
        &format!("--tail={lines}"),
    ])
    .unwrap_or_default()
}

/// Pods of `ns` matching `selector`.
fn pods(cp: &ControlPlane, ns: &str, selector: &str) -> Result<Vec<Value>, String> {
    cp.get_json(&["pods", "-n", ns, "-l", selector])
        .map(items)
        .map_err(|e| e.to_string())
}

/// Waits until exactly `n` pods match `selector`, all Ready (and `also` holds for each).
fn wait_pods(
    cp: &ControlPlane,
    nodes: &KubeletNodes,
    ns: &str,
    selector: &str,
    n: usize,
    what: &str,
    also: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    wait_for(what, WAIT, POLL, || {
        let all = pods(cp, ns, selector)?;
        let ready = all.iter().filter(|p| pod_is_ready(p) && also(p)).count();
        (all.len() == n && ready == n)
            .then(|| all.clone())
            .ok_or(format!("{ready} of {} ready, want {n}", all.len()))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}\n{}\n{}",
            cp.kubectl(&["get", "pods,pvc,sts,dssmr", "-A", "-o", "wide"])
                .unwrap_or_default(),
            cp.kubectl(&["describe", "pods", "-n", ns, "-l", selector])
                .unwrap_or_default(),
            nodes.containers(),
            operator_logs(cp, 40),
        )
    })
}

/// `name → uid` of `pods`.
fn uids(pods: &[Value]) -> BTreeMap<String, String> {
    pods.iter()
        .map(|p| {
            (
                name(p),
                p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The pods of cluster `c` outside group `except`.
/// Scaling the kv cluster under its running load, step by step, as a user patches it.
struct KvScaling<'a> {
    cp: &'a ControlPlane,
    nodes: &'a KubeletNodes<'a>,
    prom: &'a Prometheus,
}

impl KvScaling<'_> {
    /// `name → uid` of kv's pods outside `groups`.
    fn pods_except(&self, groups: &[&str]) -> BTreeMap<String, String> {
        let selector = match groups {
            [] => "app.kubernetes.io/instance=kv".to_string(),
            _ => format!(
                "app.kubernetes.io/instance=kv,dssmr.io/group notin ({})",
                groups.join(",")
            ),
        };
        uids(&pods(self.cp, NS, &selector).expect("pods"))
    }

    /// The pods of kv's `group`.
    fn group(&self, group: &str) -> Vec<Value> {
        pods(
            self.cp,
            NS,
            &format!("app.kubernetes.io/instance=kv,dssmr.io/group={group}"),
        )
        .expect("pods")
    }

    /// `partitions: to`; the `new` groups' pods come up Ready, kv is Ready, the pods in
    /// `before` are the same pods (nothing restarted) and the running load executes
    /// commands in every new partition.
    fn scale_out(&self, to: u32, new: &[&str], before: &BTreeMap<String, String>) {
        patch_cluster(self.cp, "kv", json!({"partitions": to}));
        for g in new {
            wait_pods(
                self.cp,
                self.nodes,
                NS,
                &format!("app.kubernetes.io/instance=kv,dssmr.io/group={g}"),
                3,
                &format!("the 3 pods of kv-{g} Ready"),
                |_| true,
            );
        }
        self.settled(to, new, before, "scaling out");
        for g in new {
            let q = format!(
                "sum(dssmr_commands_total{{cluster=\"kv\",group=\"{g}\",outcome=\"executed\"}})"
            );
            wait_for(
                &format!("the running kv load reaches {g}"),
                WAIT,
                POLL,
                || {
                    let v = self.prom.query(&q)?;
                    (v.iter().any(|x| *x > 0.0))
                        .then_some(())
                        .ok_or(format!("{q} = {v:?}"))
                },
            )
            .expect("new partition used");
        }
        assert!(
            running(self.cp, "kv-load"),
            "the kv load stopped during the scale-out to {to}"
        );
    }

    /// `partitions: to`; `leaving` is drained and its pods, StatefulSet and claims go, kv is
    /// Ready, and the pods in `before` are the same pods.
    fn scale_in(&self, to: u32, leaving: &str, before: &BTreeMap<String, String>) {
        patch_cluster(self.cp, "kv", json!({"partitions": to}));
        let selector = format!("app.kubernetes.io/instance=kv,dssmr.io/group={leaving}");
        wait_for(&format!("kv-{leaving} removed"), WAIT, POLL, || {
            let left = self.group(leaving);
            let sts = self
                .cp
                .get_json(&["sts", "-n", NS, "-l", &selector])
                .map(items)
                .map_err(|e| e.to_string())?;
            let claims = self
                .cp
                .get_json(&["pvc", "-n", NS])
                .map(items)
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|c| name(c).contains(&format!("-kv-{leaving}-")))
                .count();
            let status = self
                .cp
                .get_json(&["dssmr", "-n", NS, "kv"])
                .map(|o| o["status"]["conditions"].to_string())
                .unwrap_or_else(|e| e.to_string());
            (left.is_empty() && sts.is_empty() && claims == 0)
                .then_some(())
                .ok_or(format!(
                    "{} pods, {} sets, {claims} claims; conditions {status}",
                    left.len(),
                    sts.len()
                ))
        })
        .unwrap_or_else(|e| panic!("{leaving} removed: {e}\n{}", operator_logs(self.cp, 60)));
        self.settled(to, &[leaving], before, "scaling in");
    }

    /// After a scale `step` to `to` partitions: kv is Ready with them, the pods in `before`
    /// (all but those of `changed`) are the same pods, and the kv load still runs.
    fn settled(&self, to: u32, changed: &[&str], before: &BTreeMap<String, String>, step: &str) {
        let groups = format!("{}/{}", to + 1, to + 1);
        let what = format!("kv Ready with {to} partitions");
        wait_cluster(self.cp, "kv", &groups, &what);
        assert_eq!(
            &self.pods_except(changed),
            before,
            "{step} to {to} restarted pods of the other groups"
        );
        assert!(
            running(self.cp, "kv-load"),
            "the kv load stopped {step} to {to}"
        );
    }
}

fn status_of(cp: &ControlPlane, c: &str) -> Value {
    cp.get_json(&["dssmr", "-n", NS, c]).unwrap_or(Value::Null)["status"].clone()
}

/// Waits until cluster `c` is Ready with `ready` groups (e.g. `4/4`) for its latest spec.
fn wait_cluster(cp: &ControlPlane, c: &str, ready: &str, what: &str) {
    wait_for(what, WAIT, POLL, || {
        let obj = cp
            .get_json(&["dssmr", "-n", NS, c])
            .map_err(|e| e.to_string())?;
        let s = &obj["status"];
        let is_ready = s["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let current = s["observedGeneration"] == obj["metadata"]["generation"];
        (is_ready && current && s["ready"] == ready)
            .then_some(())
            .ok_or(format!("status {s}"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", operator_logs(cp, 60)));
}

fn patch_cluster(cp: &ControlPlane, c: &str, spec: Value) {
    cp.kubectl(&[
        "patch",
        "dssmr",
        "-n",
        NS,
        c,
        "--type",
        "merge",
        "-p",
        &json!({ "spec": spec }).to_string(),
    ])
    .unwrap_or_else(|e| panic!("patch {c}: {e}"));
}

/// The operator pods' `(name, ip, leading)`.
fn operators(cp: &ControlPlane) -> Result<Vec<(String, String, bool)>, String> {
    let ps = pods(cp, OPERATOR_NS, "app.kubernetes.io/name=dssmr-operator")?;
    ps.iter()
        .filter(|p| pod_is_ready(p))
        .map(|p| {
            let ip = p["status"]["podIP"].as_str().unwrap_or("").to_string();
            let m = probe::metrics(&format!("http://{ip}:8080"))?;
            Ok((
                name(p),
                ip,
                probe::sum(&m, "dssmr_operator_leader", &[]) == 1.0,
            ))
        })
        .collect()
}

/// Waits until `n` operator pods are Ready and exactly one leads; returns them.
fn wait_one_leader(cp: &ControlPlane, n: usize, what: &str) -> Vec<(String, String, bool)> {
    wait_for(what, WAIT, POLL, || {
        let ops = operators(cp)?;
        let leaders = ops.iter().filter(|o| o.2).count();
        (ops.len() == n && leaders == 1)
            .then(|| ops.clone())
            .ok_or(format!("{ops:?}"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", operator_logs(cp, 60)))
}

/// The bench Job of `manifests/evaluation/bench-job.yaml` for cluster `chirper`, adjusted the
/// way its header says (cluster renamed) and sized for this machine: one workload (mix), a
/// short warm-up, a long run that the test ends with SIGTERM, 8 clients, 3000 users, small
/// requests; plus `--check-posts`.
fn chirper_bench_job() -> Value {
    let text = std::fs::read_to_string(repo_root().join("manifests/evaluation/bench-job.yaml"))
        .expect("bench-job.yaml")
        .replace("paper-dssmr-8", "chirper");
    let mut job: Value = serde_yaml::from_str(&text).expect("bench-job.yaml is YAML");
    let c = &mut job["spec"]["template"]["spec"]["containers"][0];
    c["image"] = json!(IMAGE);
    let args: Vec<String> = serde_json::from_value(c["args"].clone()).expect("args");
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let value = match a.as_str() {
            "--workload" => Some("mix".to_string()),
            "--warmup" => Some("2s".to_string()),
            "--duration" => Some(format!("{LOAD_S}s")),
            "--clients" => Some("8".to_string()),
            _ => None,
        };
        out.push(a);
        if let Some(v) = value {
            it.next();
            out.push(v);
        }
    }
    // Enough users that a timeline's followees post fewer than it holds over the whole run,
    // so nearly every acknowledged post is judged.
    out.extend(["--users", "3000", "--check-posts"].map(String::from));
    c["args"] = json!(out);
    c["resources"] =
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}});
    job
}

/// A kv load Job on the client node: `dssmr bench kv` with a history on the hostPath `dir`,
/// destinations chosen at random (the paper's policy), so a partition added while it runs
/// gets keys. 64 keys: with a handful, multi-key operations soon gather every key in one
/// partition (DS-SMR converges) and nothing moves any more, to a new partition or elsewhere.
fn kv_load_job(dir: &Path) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "kv-load", "labels": {"app.kubernetes.io/name": "dssmr-bench", "app.kubernetes.io/instance": "kv"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "dssmr-bench", "app.kubernetes.io/instance": "kv"}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"dssmr.io/hardware": Hardware::DellSc1435.label()},
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532},
                    "containers": [{
                        "name": "bench",
                        "image": IMAGE,
                        "args": ["bench", "kv", "--cluster", "/etc/dssmr/cluster.yaml",
                                 "--clients", "4", "--keys", "64", "--destination", "random",
                                 "--warmup", "1s", "--duration", format!("{LOAD_S}s"),
                                 "--history", "/results/kv.jsonl", "--metrics-addr", "0.0.0.0:9100",
                                 "--quiet"],
                        "ports": [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}],
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/dssmr", "readOnly": true},
                            {"name": "results", "mountPath": "/results"},
                        ],
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "kv-config", "items": [{"key": "cluster.yaml", "path": "cluster.yaml"}]}},
                        {"name": "results", "hostPath": {"path": dir, "type": "Directory"}},
                    ],
                }
            }
        }
    })
}

/// The pod of Job `job` (one, as backoffLimit is 0).
fn job_pod(cp: &ControlPlane, job: &str) -> Result<Value, String> {
    let ps = pods(cp, NS, &format!("job-name={job}"))?;
    ps.into_iter().next().ok_or(format!("no pod of Job {job}"))
}

/// Whether the Job's pod still runs its container.
fn running(cp: &ControlPlane, job: &str) -> bool {
    job_pod(cp, job).is_ok_and(|p| p["status"]["phase"] == "Running")
}

/// Sends SIGTERM to the Job's container and waits for the Job to succeed; returns its log.
fn stop_load(cp: &ControlPlane, nodes: &KubeletNodes, job: &str) -> String {
    let pod = name(&job_pod(cp, job).expect("load pod"));
    nodes
        .signal_container(NS, &pod, "bench", "TERM")
        .expect("SIGTERM to the load");
    let done = wait_for(&format!("Job {job} done"), WAIT, POLL, || {
        let j = cp
            .get_json(&["job", "-n", NS, job])
            .map_err(|e| e.to_string())?;
        if j["status"]["succeeded"].as_i64() == Some(1) {
            Ok(true)
        } else if j["status"]["failed"].as_i64().unwrap_or(0) > 0 {
            Ok(false)
        } else {
            Err(format!("{}", j["status"]))
        }
    })
    .expect("the load ends");
    let log = cp
        .kubectl(&["logs", "-n", NS, &pod])
        .unwrap_or_else(|e| e.to_string());
    assert!(done, "Job {job} failed:\n{log}");
    log
}

#[test]
fn the_users_path_on_kubelet_nodes() {
    let mut steps = Steps {
        t0: Instant::now(),
        done: Vec::new(),
    };
    let tag = std::process::Command::new("docker")
        .args(["tag", IMAGE, ROLLED])
        .status()
        .expect("docker tag");
    assert!(tag.success(), "docker tag {IMAGE} {ROLLED}");
    let cp = ControlPlane::start().expect("control plane");
    let specs = [
        ("node-a", Hardware::HpSe1102),
        ("node-b", Hardware::HpSe1102),
        ("node-c", Hardware::DellSc1435),
    ]
    .map(|(n, hardware)| NodeSpec {
        name: n.to_string(),
        hardware,
    });
    let mut nodes =
        KubeletNodes::start(&cp, &specs, &[IMAGE, ROLLED, OPERATOR_IMAGE]).expect("kubelet nodes");
    let run = nodes.run_id().to_string();
    steps.done("control plane and 3 kubelet nodes Ready");

    // 1. helm install, two operators, one leads.
    let values = cp.dir().join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "replicas: 2\nimage:\n  repository: dssmr-operator\n  tag: e2e\n  pullPolicy: Never\n\
             replicaImage: {IMAGE}\nlogLevel: info,dssmr_operator=debug\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new("python3")
        .arg(repo_root().join("charts/tests/chartcheck.py"))
        .arg("install")
        .arg(cp.kubeconfig())
        .arg(&values)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    let ops = wait_one_leader(&cp, 2, "two operator pods Ready, one leading");
    steps.done("chart installed; 2 operator pods Ready, exactly one leads");

    // 2. The example clusters, on persistent volumes.
    nodes.provision_volumes().expect("volume provisioner");
    for example in ["chirper", "kv"] {
        let path = repo_root().join(format!("manifests/examples/{example}.yaml"));
        cp.kubectl(&["apply", "-n", NS, "-f", &path.to_string_lossy()])
            .unwrap_or_else(|e| panic!("kubectl apply {example}: {e}"));
    }
    for c in ["chirper", "kv"] {
        wait_pods(
            &cp,
            &nodes,
            NS,
            &format!("app.kubernetes.io/instance={c},app.kubernetes.io/name=dssmr"),
            9,
            &format!("the 9 replica pods of {c} Ready"),
            |_| true,
        );
        wait_cluster(&cp, c, "3/3", &format!("{c} Ready"));
    }
    steps.done("chirper and kv: 9 replica pods each Ready by their probes, clusters Ready");

    // 3. Load, started before any change.
    let results = cp.dir().join("results");
    std::fs::create_dir_all(&results).unwrap();
    std::os::unix::fs::chown(&results, Some(65532), Some(65532)).unwrap();
    cp.apply_json(&chirper_bench_job()).expect("bench Job");
    cp.apply_json(&kv_load_job(&results)).expect("kv load Job");
    for job in ["chirper-bench", "kv-load"] {
        wait_for(&format!("{job} running"), WAIT, POLL, || {
            running(&cp, job).then_some(()).ok_or(
                cp.kubectl(&["get", "pods", "-n", NS, "-l", &format!("job-name={job}")])
                    .unwrap_or_default(),
            )
        })
        .expect("load running");
    }
    steps.done("bench Job (Chirper) and kv load Job running");

    // 4. Prometheus through the operator's http_sd endpoint; dashboard queries.
    let prom_bin = prometheus::binary().expect("prometheus is not installed (e2e/prepare.sh)");
    let sd = &ops[0].1;
    let prom = Prometheus::with_scrape_configs(
        &prom_bin,
        &format!(
            "  - job_name: dssmr-replicas\n    http_sd_configs:\n      - url: http://{sd}:8080/sd/replicas\n        refresh_interval: 2s\n\
             \x20 - job_name: dssmr-clients\n    http_sd_configs:\n      - url: http://{sd}:8080/sd/clients\n        refresh_interval: 2s\n"
        ),
    )
    .expect("prometheus");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("charts/dssmr-operator/dashboards/dssmr.json"))
            .unwrap(),
    )
    .unwrap();
    let query = |title: &str| -> String {
        dashboard["panels"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["title"] == title)
            .and_then(|p| p["targets"][0]["expr"].as_str())
            .unwrap_or_else(|| panic!("no panel {title:?}"))
            .replace("$namespace", NS)
            .replace("$cluster", ".*")
            .replace("$__rate_interval", "10s")
    };
    for title in ["Throughput", "Move rate"] {
        let q = query(title);
        wait_for(
            &format!("dashboard query {title:?} non-zero"),
            WAIT,
            POLL,
            || {
                let v = prom.query(&q)?;
                (v.iter().any(|x| *x > 0.0))
                    .then_some(())
                    .ok_or(format!("{q} = {v:?}; targets {:?}", prom.targets_up()))
            },
        )
        .expect("dashboard query");
    }
    for c in ["chirper", "kv"] {
        wait_for(
            &format!("{c}'s status shows throughput"),
            WAIT,
            POLL,
            || {
                let s = status_of(&cp, c);
                (s["throughput"].as_f64().unwrap_or(0.0) > 0.0)
                    .then_some(())
                    .ok_or(format!("{s}"))
            },
        )
        .expect("status throughput");
    }
    steps.done("Prometheus (http_sd from the operator): throughput and move rate non-zero; status shows throughput");

    // 5. Scale kv under the load: 2 -> 4 -> 3 -> 2 -> 3. Partition numbers are never
    //    reused, so the last step makes p5 (p3 and p4 were removed); every new partition's
    //    volumes are provisioned as its claims come, and a removed one's are deleted.
    let kv = KvScaling {
        cp: &cp,
        nodes: &nodes,
        prom: &prom,
    };
    let before = kv.pods_except(&["p3", "p4"]);
    kv.scale_out(4, &["p3", "p4"], &before);
    steps.done(
        "kv 2 -> 4 partitions: p3 and p4 added, other pods untouched, the running load uses both",
    );
    let before = kv.pods_except(&["p4"]);
    kv.scale_in(3, "p4", &before);
    steps.done(
        "kv 4 -> 3: p4 drained while p3 (added at run time) takes variables, removed, other pods untouched",
    );
    let before = kv.pods_except(&["p3"]);
    kv.scale_in(2, "p3", &before);
    steps.done("kv 3 -> 2: p3 drained, removed, other pods untouched");
    let before = kv.pods_except(&["p5"]);
    kv.scale_out(3, &["p5"], &before);
    for gone in ["p3", "p4"] {
        assert!(
            kv.group(gone).is_empty(),
            "a removed partition's number was used again: {gone}"
        );
    }
    let (made, deleted) = nodes.volumes_provisioned();
    assert!(
        made >= 3 * 3 + 3 * 3 + 3 * 3 && deleted >= 2 * 3,
        "volumes made {made}, deleted {deleted}"
    );
    steps.done(&format!(
        "kv 2 -> 3: the new partition is p5, on new volumes ({made} volumes made, {deleted} deleted so far)"
    ));
    let before = kv.pods_except(&[]);

    // 5c. Delete a replica pod: it comes back on its volume.
    let victim = "kv-p1-1";
    let old = before[victim].clone();
    cp.kubectl(&["delete", "pod", "-n", NS, victim, "--wait=false"])
        .expect("delete pod");
    wait_pods(
        &cp,
        &nodes,
        NS,
        "app.kubernetes.io/instance=kv,dssmr.io/group=p1",
        3,
        "the deleted replica back and Ready",
        |p| name(p) != victim || p["metadata"]["uid"].as_str() != Some(&old),
    );
    steps.done("kubectl delete pod kv-p1-1: replaced, Ready on its volume");

    // 5d. Rolling update of the image of both clusters.
    for c in ["chirper", "kv"] {
        patch_cluster(&cp, c, json!({"image": ROLLED}));
    }
    for (c, pods, groups) in [("chirper", 9, "3/3"), ("kv", 12, "4/4")] {
        wait_pods(
            &cp,
            &nodes,
            NS,
            &format!("app.kubernetes.io/instance={c},app.kubernetes.io/name=dssmr"),
            pods,
            &format!("every pod of {c} rolled to {ROLLED} and Ready"),
            |p| p["spec"]["containers"][0]["image"] == ROLLED,
        );
        wait_cluster(
            &cp,
            c,
            groups,
            &format!("{c} Ready after the rolling update"),
        );
    }
    for job in ["chirper-bench", "kv-load"] {
        assert!(
            running(&cp, job),
            "load {job} ended before the last step; raise LOAD_S"
        );
    }
    steps.done("rolling image update of both clusters done, loads still running");

    // 6. Stop the loads; judge what they recorded.
    let kv_log = stop_load(&cp, &nodes, "kv-load");
    let chirper_log = stop_load(&cp, &nodes, "chirper-bench");
    eprintln!("kv load:\n{kv_log}\nChirper bench:\n{chirper_log}");
    let check = chirper_log
        .lines()
        .find(|l| l.starts_with("post check:"))
        .unwrap_or_else(|| panic!("no post check in the bench's log:\n{chirper_log}"));
    let deliveries: u64 = check
        .split(", ")
        .nth(1)
        .and_then(|d| d.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        check.contains("none lost") && deliveries > 0,
        "the Chirper post check judged nothing or failed: {check}"
    );
    let events = read_jsonl(results.join("kv.jsonl")).expect("kv history");
    let ops_count = events
        .iter()
        .filter(|e| e.kind == dssmr_check::history::EventKind::Invoke)
        .count();
    assert!(
        ops_count > 100,
        "the kv history has only {ops_count} operations"
    );
    check_kv_bounded(&events, &BTreeMap::new(), DEFAULT_MAX_CONFIGURATIONS)
        .unwrap_or_else(|e| panic!("the kv history is not linearizable: {e}"));
    steps.done(&format!(
        "loads stopped: kv history of {ops_count} operations linearizable, every acknowledged post in the timelines"
    ));

    // 7. Leader failover.
    let ops = wait_one_leader(&cp, 2, "two operators, one leading");
    let leader = ops.iter().find(|o| o.2).expect("a leader").0.clone();
    cp.kubectl(&["delete", "pod", "-n", OPERATOR_NS, &leader, "--wait=false"])
        .expect("delete the leader");
    let ops = wait_for("another operator leads", WAIT, POLL, || {
        let ops = operators(&cp)?;
        ops.iter()
            .find(|o| o.2 && o.0 != leader)
            .map(|_| ops.clone())
            .ok_or(format!("{ops:?}"))
    })
    .expect("failover");
    // A spec change (pause, then resume) the new leader must observe.
    patch_cluster(&cp, "kv", json!({"paused": true}));
    patch_cluster(&cp, "kv", json!({"paused": false}));
    wait_cluster(&cp, "kv", "4/4", "the new leader reconciles kv");
    steps.done(&format!(
        "leader {leader} deleted: another operator took the lease and reconciles ({ops:?})"
    ));

    drop(prom);
    drop(nodes);
    drop(cp);
    let _ = std::process::Command::new("docker")
        .args(["rmi", ROLLED])
        .output();
    let left = leftovers(&run, specs.len());
    assert!(
        left.is_empty(),
        "left on the machine by run {run}: {left:#?}"
    );
    for (what, t) in &steps.done {
        eprintln!("{t:7.1} s  {what}");
    }
}
