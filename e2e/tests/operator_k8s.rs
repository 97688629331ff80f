//! The operator against a REAL Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler v1.20.2 from `e2e/k8s/prepare.sh`; harness in
//! `dssmr_e2e::kube`), with Nodes labelled as the paper's hardware (HP SE1102 replica nodes,
//! Dell SC1435 client nodes) and `dssmr-operator run` as a process:
//!
//! - the CRD and the operator's RBAC are installed (through the Helm chart when it renders,
//!   the operator then runs with the chart's ServiceAccount token; else `crds/` and admin);
//! - the API server rejects CRs the schema forbids (`partitions: 0`, `mode: bogus`);
//! - a schema-valid but senseless CR (`replicasPerPartition: 2`) gets Degraded/InvalidSpec
//!   and no StatefulSet;
//! - a 2-partition cluster with `hardwareProfile: paper` gets StatefulSets (oracle + per
//!   partition), headless Services, PodDisruptionBudgets (`policy/v1beta1` on 1.20) and the
//!   ConfigMap, all owned by the DSSMRCluster; the real StatefulSet controller creates the
//!   pods and the real scheduler binds every one to an hp-se1102 node, none to dell-sc1435;
//!   pods marked Ready make the cluster Ready;
//! - idle, the operator reconciles at most [`IDLE_BOUND_PER_MINUTE`] times a minute (its
//!   periodic resync, never on its own status writes), read from its
//!   `dssmr_operator_reconciles_total` over [`IDLE_WINDOW`], both untouched and while the
//!   test writes a new throughput into its status at every poll (as the operator's own
//!   status write under load changes it at every pass);
//! - `replicasPerPartition` 3 → 5 on the running cluster (accepted by this API server, which
//!   ignores the CRD's CEL rules) is refused by the operator: Degraded/InvalidSpec naming
//!   `spec.replicasPerPartition`, a Warning Event, StatefulSets unchanged; set back to 3 it
//!   is reconciled again;
//! - raising `spec.partitions` adds a StatefulSet (placed the same way);
//! - deleting the DSSMRCluster lets the real garbage collector remove everything it owned.
//!
//! Every wait polls with a deadline; the control plane and the operator stop on drop.

use dssmr_e2e::kube::{ControlPlane, Hardware, HARDWARE_LABEL};
use dssmr_e2e::wait_for;
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NS: &str = "default";
/// Label every object of a cluster carries (the operator's selector for its StatefulSets).
const INSTANCE: &str = "app.kubernetes.io/instance";
const WAIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(250);
/// How long an idle cluster is watched for reconciles (once untouched, once with its status
/// changing all the time, as under load).
const IDLE_WINDOW: Duration = Duration::from_secs(20);
/// Reconciles per minute an idle operator may make: its resync of each cluster (the `paper`
/// cluster every 15 s when settled, every 5 s while something is left to do: at most 12;
/// `even` is invalid and waits for a change) and a few for owned objects, with room to spare.
/// A reconcile triggered by its own status write loops at hundreds per minute.
const IDLE_BOUND_PER_MINUTE: f64 = 20.0;

/// The `dssmr-operator` binary: `$DSSMR_OPERATOR_BIN`, else the one cargo built next to
/// the running test executable.
fn operator_binary() -> PathBuf {
    dssmr_e2e::workspace_binary("dssmr-operator", "DSSMR_OPERATOR_BIN")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// `dssmr-operator run` as a process (own process group), killed on drop.
struct Operator {
    child: Child,
    log: PathBuf,
    /// `http://127.0.0.1:<port>`: its `/metrics`.
    metrics: String,
}

impl Operator {
    fn start(cp: &ControlPlane, kubeconfig: &Path) -> Operator {
        let bin = operator_binary();
        assert!(
            bin.is_file(),
            "{} is missing: build it with `cargo build -p dssmr-operator` (`cargo test \
             --workspace` builds it), or set DSSMR_OPERATOR_BIN",
            bin.display()
        );
        let log = cp.dir().join("dssmr-operator.log");
        let out = std::fs::File::create(&log).expect("operator log");
        let port = dssmr_e2e::prometheus::free_port().expect("free port");
        let child = Command::new(&bin)
            .args(["run", "--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--replica-image", "dssmr:e2e"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Operator {
            child,
            log,
            metrics: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Reconciles so far, of any result (`dssmr_operator_reconciles_total`).
    fn reconciles(&self) -> Result<f64, String> {
        let m = dssmr_e2e::probe::metrics(&self.metrics)?;
        Ok(dssmr_e2e::probe::sum(
            &m,
            "dssmr_operator_reconciles_total",
            &[],
        ))
    }

    /// The operator's panic message, if any, then the last lines of its log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        if let Some(at) = lines.iter().position(|l| l.contains("panicked at")) {
            out.push_str(&lines[at..(at + 6).min(lines.len())].join("\n"));
            out.push_str("\n...\n");
        }
        if text.contains("CryptoProvider") {
            out.push_str(
                "HINT: dssmr-operator is built without a rustls crypto provider (kube with \
                 default-features = false and only `rustls-tls`), so it cannot open any HTTPS \
                 connection to an API server. (kube-client builds the rustls connector even for \
                 an http:// server.) Fix in operator/Cargo.toml: add the kube feature \"ring\" \
                 (or \"aws-lc-rs\").\n",
            );
        }
        out.push_str(&lines[lines.len().saturating_sub(40)..].join("\n"));
        out
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("dssmr-operator exited ({status}):\n{}", self.log_tail());
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- dssmr-operator (last lines) -----\n{}",
                self.log_tail()
            );
        }
        // SAFETY: kill(2) of the process group we created for our own child.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// How the operator was installed, and the kubeconfig it runs with.
struct Install {
    how: String,
    kubeconfig: PathBuf,
}

/// Installs the CRD from `crds/` and returns the admin kubeconfig for the operator.
fn install_from_crds(cp: &ControlPlane) -> Install {
    let crd = repo_root().join("crds/dssmr.io_dssmrclusters.yaml");
    // `--validate=false`: 1.20's OpenAPI schema does not know the CRD's CEL rules
    // (`x-kubernetes-validations`, 1.25), so kubectl's client-side validation would refuse
    // it; the API server drops them (it does not evaluate them either).
    cp.kubectl(&[
        "apply",
        "--validate=false",
        "-f",
        &crd.display().to_string(),
    ])
    .expect("apply crds/");
    Install {
        how: "crds/ + admin kubeconfig".into(),
        kubeconfig: cp.kubeconfig().to_path_buf(),
    }
}

/// Installs the operator's CRD, ServiceAccount and RBAC from the Helm chart, rendered by the
/// real Helm library (`charts/tests/chartcheck.py render`: helm-python-sdk, release
/// `dssmr-operator` in `dssmr-system`), and returns a kubeconfig with a token of the chart's
/// ServiceAccount, so the operator runs with exactly the chart's (least-privilege) rights.
/// The chart's Deployment is left out: there is no kubelet to run it; the test runs the same
/// binary as a process instead.
fn install_from_chart(cp: &ControlPlane) -> Install {
    let script = repo_root().join("charts/tests/chartcheck.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg("render").current_dir(repo_root());
    let (ok, manifest, err) =
        dssmr_e2e::kube::run_bounded(cmd, None, Duration::from_secs(120)).expect("run python3");
    assert!(
        ok,
        "rendering the chart with the Helm library failed (install helm-python-sdk with \
         `bash charts/prepare.sh`; DSSMR_E2E_INSTALL=crds skips the chart): {err}"
    );
    // kubectl turns the multi-document manifest into JSON objects (one per document, or one
    // List), without contacting the server.
    // `--validate=false`: the rendering (no server to ask) keeps the CRD's CEL rules, which
    // 1.20's OpenAPI schema does not know (see `install_from_crds`); only parsed here.
    let json = cp
        .kubectl_stdin(
            &[
                "create",
                "--dry-run=client",
                "--validate=false",
                "-o",
                "json",
                "-f",
                "-",
            ],
            &manifest,
        )
        .expect("parse the rendered chart");
    let mut items: Vec<Value> = Vec::new();
    for v in serde_json::Deserializer::from_str(&json).into_iter::<Value>() {
        let v = v.expect("kubectl printed JSON");
        match v["kind"].as_str() {
            Some("List") => items.extend(v["items"].as_array().cloned().unwrap_or_default()),
            _ => items.push(v),
        }
    }
    let kinds: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["kind"].as_str().unwrap_or("?"),
                i["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let sa = items
        .iter()
        .find(|i| i["kind"] == "ServiceAccount")
        .unwrap_or_else(|| panic!("the chart renders no ServiceAccount: {kinds:?}"));
    let sa_name = sa["metadata"]["name"].as_str().unwrap().to_string();
    let sa_ns = sa["metadata"]["namespace"]
        .as_str()
        .unwrap_or(NS)
        .to_string();
    for i in &items {
        let ns = i["metadata"]["namespace"].as_str();
        if let Some(ns) = ns {
            if cp.kubectl(&["get", "namespace", ns]).is_err() {
                cp.kubectl(&["create", "namespace", ns]).unwrap();
            }
        }
    }
    let keep: Vec<Value> = items
        .into_iter()
        .filter(|i| i["kind"] != "Deployment")
        .collect();
    let applied_count = keep.len();
    let applied = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": keep});
    cp.kubectl_stdin(
        &["apply", "--validate=false", "-f", "-"],
        &applied.to_string(),
    )
    .unwrap_or_else(|e| panic!("the API server refused the rendered chart: {e}"));
    let token = cp
        .kubectl(&["create", "token", &sa_name, "-n", &sa_ns, "--duration=2h"])
        .expect("a token of the chart's ServiceAccount (TokenRequest)");
    let kubeconfig = cp.dir().join("operator.kubeconfig");
    cp.token_kubeconfig(&kubeconfig, token.trim()).unwrap();
    Install {
        how: format!(
            "the Helm chart (rendered by helm-python-sdk: {kinds:?}; {applied_count} applied, \
             all but the Deployment) and the token of ServiceAccount {sa_ns}/{sa_name}"
        ),
        kubeconfig,
    }
}

/// Through the chart when `charts/dssmr-operator` exists (unless `DSSMR_E2E_INSTALL=crds`),
/// else `crds/` with the admin kubeconfig.
fn install(cp: &ControlPlane) -> Install {
    let chart = repo_root().join("charts/dssmr-operator/Chart.yaml");
    let forced = std::env::var("DSSMR_E2E_INSTALL").ok();
    if chart.is_file() && forced.as_deref() != Some("crds") {
        install_from_chart(cp)
    } else {
        eprintln!(
            "operator_k8s: NOT installing through the Helm chart ({}): CRD from crds/, operator \
             with the ADMIN kubeconfig (RBAC not exercised)",
            if chart.is_file() {
                "DSSMR_E2E_INSTALL=crds"
            } else {
                "charts/dssmr-operator missing"
            }
        );
        install_from_crds(cp)
    }
}

/// Waits until the DSSMRCluster CRD is Established.
fn wait_crd(cp: &ControlPlane) {
    wait_for("CRD dssmrclusters.dssmr.io Established", WAIT, POLL, || {
        let crd = cp
            .get_json(&["crd", "dssmrclusters.dssmr.io"])
            .map_err(|e| e.to_string())?;
        condition(&crd, "Established")
            .filter(|(s, _)| s == "True")
            .map(|_| ())
            .ok_or_else(|| format!("{}", crd["status"]))
    })
    .unwrap();
}

/// Sets `spec.partitions` of cluster `name` as a user does: `kubectl scale` through the CRD's
/// scale subresource.
fn set_partitions(cp: &ControlPlane, name: &str, partitions: u32) {
    cp.kubectl(&[
        "scale",
        "dssmrcluster",
        "-n",
        NS,
        name,
        &format!("--replicas={partitions}"),
    ])
    .unwrap();
}

/// Merge-patches the spec of cluster `name` with `spec_json`.
fn patch_spec(cp: &ControlPlane, name: &str, spec_json: &str) {
    let patch = format!(r#"{{"spec":{spec_json}}}"#);
    cp.kubectl(&[
        "patch",
        "dssmrcluster",
        "-n",
        NS,
        name,
        "--type=merge",
        "-p",
        &patch,
    ])
    .unwrap();
}

/// Name, generation and spec of each StatefulSet of cluster `name`, sorted by name.
fn stateful_set_specs(cp: &ControlPlane, name: &str) -> Vec<(String, Value, Value)> {
    let mut sets: Vec<(String, Value, Value)> = owned(cp, "statefulsets", name)
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap_or("").to_string(),
                s["metadata"]["generation"].clone(),
                s["spec"].clone(),
            )
        })
        .collect();
    sets.sort_by(|a, b| a.0.cmp(&b.0));
    sets
}

/// The message of condition `type_` of `obj` (empty when it has none).
fn condition_message(obj: &Value, type_: &str) -> String {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["message"].as_str())
        .unwrap_or("")
        .to_string()
}

/// `(status, reason)` of condition `type_` of `obj`.
fn condition(obj: &Value, type_: &str) -> Option<(String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
}

fn cluster(name: &str, spec: &str) -> String {
    format!("apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {{name: {name}, namespace: {NS}}}\nspec: {spec}\n")
}

/// Items of `kubectl get KIND -l app.kubernetes.io/instance=NAME`.
fn owned(cp: &ControlPlane, kind: &str, name: &str) -> Result<Vec<Value>, String> {
    let v = cp
        .get_json(&[kind, "-n", NS, "-l", &format!("{INSTANCE}={name}")])
        .map_err(|e| e.to_string())?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

fn names(items: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = items
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    n.sort();
    n
}

/// Asserts `obj` is controlled by the DSSMRCluster with `uid`.
fn assert_owned_by(obj: &Value, uid: &str) {
    let refs = obj["metadata"]["ownerReferences"]
        .as_array()
        .unwrap_or_else(|| panic!("no ownerReferences on {}", obj["metadata"]["name"]));
    assert!(
        refs.iter().any(|r| r["uid"] == uid
            && r["kind"] == "DSSMRCluster"
            && r["apiVersion"] == "dssmr.io/v1alpha1"
            && r["controller"] == true),
        "{} {} is not owned by the DSSMRCluster {uid}: {refs:?}",
        obj["kind"],
        obj["metadata"]["name"]
    );
}

/// Phase timing, printed as the test goes.
struct Phases(Instant);

impl Phases {
    fn done(&mut self, what: &str) {
        eprintln!(
            "operator_k8s: {what} ({:.1} s)",
            self.0.elapsed().as_secs_f64()
        );
        self.0 = Instant::now();
    }
}

#[test]
fn operator_runs_dssmr_clusters_on_a_real_control_plane() {
    let started = Instant::now();
    let mut phase = Phases(Instant::now());
    let cp = ControlPlane::start().unwrap_or_else(|e| panic!("{e}"));
    phase.done("control plane ready");

    // The paper's cluster: replica nodes and client nodes.
    let hp = ["hp-se1102-1", "hp-se1102-2", "hp-se1102-3", "hp-se1102-4"];
    let dell = ["dell-sc1435-1", "dell-sc1435-2"];
    for n in hp {
        cp.create_node(n, Hardware::HpSe1102).unwrap();
    }
    for n in dell {
        cp.create_node(n, Hardware::DellSc1435).unwrap();
    }
    let class = |node: &str| -> String {
        let n = cp.get_json(&["node", node]).unwrap();
        n["metadata"]["labels"][HARDWARE_LABEL]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    phase.done("nodes created");

    let install = install(&cp);
    wait_crd(&cp);
    eprintln!("operator_k8s: installed through {}", install.how);
    let mut operator = Operator::start(&cp, &install.kubeconfig);
    phase.done("CRD installed, operator started");

    // The API server itself rejects what the schema forbids.
    for (spec, field) in [
        ("{partitions: 0}", "spec.partitions"),
        ("{partitions: 2, mode: bogus}", "spec.mode"),
    ] {
        let err = cp
            .kubectl_stdin(&["create", "-f", "-"], &cluster("bad", spec))
            .expect_err(&format!("the API server accepted spec {spec}"));
        let msg = err.to_string();
        assert!(
            msg.contains(field) && msg.contains("is invalid"),
            "rejection of {spec} does not name {field}: {msg}"
        );
        eprintln!(
            "operator_k8s: {spec} rejected: {}",
            msg.lines().last().unwrap_or("")
        );
    }
    phase.done("schema-invalid CRs rejected by the API server");

    // Schema-valid but senseless: reported, nothing built.
    cp.kubectl_stdin(
        &["create", "-f", "-"],
        &cluster("even", "{partitions: 1, replicasPerPartition: 2}"),
    )
    .unwrap();
    let even = wait_for("cluster `even` Degraded/InvalidSpec", WAIT, POLL, || {
        operator_alive(&mut operator)?;
        let c = cp
            .get_json(&["dssmrcluster", "-n", NS, "even"])
            .map_err(|e| e.to_string())?;
        match condition(&c, "Degraded") {
            Some((s, r)) if s == "True" && r == "InvalidSpec" => Ok(c),
            other => Err(format!("Degraded = {other:?}")),
        }
    })
    .unwrap();
    let message = even["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Degraded"))
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    assert!(
        message.contains("replicasPerPartition"),
        "the InvalidSpec message should name the field: {message}"
    );
    assert!(
        owned(&cp, "statefulsets", "even").unwrap().is_empty(),
        "a senseless spec got StatefulSets"
    );
    phase.done("senseless CR Degraded/InvalidSpec, nothing built");

    // A valid cluster with the paper's hardware profile.
    cp.kubectl_stdin(
        &["create", "-f", "-"],
        &cluster(
            "paper",
            "{partitions: 2, mode: dssmr, app: chirper, placement: {hardwareProfile: paper}}",
        ),
    )
    .unwrap();
    let uid = cp.get_json(&["dssmrcluster", "-n", NS, "paper"]).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let groups = ["paper-oracle", "paper-p1", "paper-p2"];
    let want: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
    let objects = wait_for("objects of `paper`", WAIT, POLL, || {
        operator_alive(&mut operator)?;
        let sets = owned(&cp, "statefulsets", "paper")?;
        let svcs = owned(&cp, "services", "paper")?;
        let pdbs = owned(&cp, "poddisruptionbudgets.v1beta1.policy", "paper")?;
        let cm = cp
            .get_json(&["configmap", "-n", NS, "paper-config"])
            .map_err(|e| e.to_string())?;
        if names(&sets) == want && names(&svcs) == want && names(&pdbs) == want {
            Ok((sets, svcs, pdbs, cm))
        } else {
            Err(format!(
                "sets {:?}, services {:?}, pdbs {:?}",
                names(&sets),
                names(&svcs),
                names(&pdbs)
            ))
        }
    })
    .unwrap();
    let (sets, svcs, pdbs, cm) = objects;
    for o in sets.iter().chain(&svcs).chain(&pdbs).chain([&cm]) {
        assert_owned_by(o, &uid);
    }
    for s in &svcs {
        assert_eq!(
            s["spec"]["clusterIP"], "None",
            "Service is not headless: {s}"
        );
    }
    for p in &pdbs {
        assert_eq!(p["apiVersion"], "policy/v1beta1");
    }
    for s in &sets {
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(
            s["spec"]["template"]["spec"]["nodeSelector"][HARDWARE_LABEL], "hp-se1102",
            "StatefulSet {} does not select the replica nodes",
            s["metadata"]["name"]
        );
    }
    phase.done(
        "StatefulSets, headless Services, PDBs (policy/v1beta1), ConfigMap owned by the cluster",
    );

    // Pods by the real StatefulSet controller, bound by the real scheduler.
    let pods = wait_bound(&cp, "paper", 9);
    for (pod, node) in &pods {
        assert_eq!(
            class(node),
            "hp-se1102",
            "pod {pod} was bound to {node}, not a replica node"
        );
        assert!(
            !dell.contains(&node.as_str()),
            "pod {pod} on client node {node}"
        );
    }
    let mut spread: Vec<&str> = pods.iter().map(|(_, n)| n.as_str()).collect();
    spread.sort();
    spread.dedup();
    eprintln!("operator_k8s: 9 pods bound to {spread:?}");
    // The replicas of one group on different hosts (anti-affinity and spread over
    // kubernetes.io/hostname): a host lost takes at most one replica of a group.
    for group in ["paper-oracle", "paper-p1", "paper-p2"] {
        let mut hosts: Vec<&str> = pods
            .iter()
            .filter(|(pod, _)| pod.rsplit_once('-').is_some_and(|(set, _)| set == group))
            .map(|(_, n)| n.as_str())
            .collect();
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts.len(), 3, "replicas of {group} share hosts: {pods:?}");
    }
    phase.done("9 pods bound to hp-se1102 nodes, none to dell-sc1435, groups spread over hosts");

    // Pods marked Ready (as a kubelet would) make the cluster Ready.
    for (pod, _) in &pods {
        cp.mark_pod_ready(NS, pod).unwrap();
    }
    wait_for("cluster `paper` Ready", WAIT, POLL, || {
        operator_alive(&mut operator)?;
        let c = cp
            .get_json(&["dssmrcluster", "-n", NS, "paper"])
            .map_err(|e| e.to_string())?;
        match condition(&c, "Ready") {
            Some((s, _)) if s == "True" && c["status"]["ready"] == "3/3" => Ok(()),
            other => Err(format!("Ready = {other:?}, status {}", c["status"])),
        }
    })
    .unwrap();
    phase.done("pods marked Ready: cluster Ready 3/3");

    // Idle: nothing changes, so the operator reconciles only on its periodic resync (every
    // 15 s for a settled cluster, 5 s while something is left to do), never on its own
    // status writes (which would make every reconcile trigger the next).
    let rate = idle_reconciles_per_minute(&mut operator, IDLE_WINDOW, || Ok(()));
    phase.done(&format!(
        "idle: {rate:.1} reconciles per minute (bound {IDLE_BOUND_PER_MINUTE})"
    ));
    // Under load the status changes at every pass (the throughput); a status-only change, as
    // the operator's own status write then is, must start no reconcile, or each pass starts
    // the next. The test writes a new throughput into the status every poll.
    let mut tput = 0;
    let rate = idle_reconciles_per_minute(&mut operator, IDLE_WINDOW, || {
        tput += 1;
        cp.kubectl(&[
            "patch",
            "dssmrcluster",
            "-n",
            NS,
            "paper",
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"throughput":{tput}}}}}"#),
        ])
        .map(|_| ())
        .map_err(|e| e.to_string())
    });
    phase.done(&format!(
        "status changed {tput} times: {rate:.1} reconciles per minute (bound \
         {IDLE_BOUND_PER_MINUTE})"
    ));

    // A change the operator cannot carry out (it changes no Raft group's membership), which
    // this API server (1.20) does not refuse (it ignores the CRD's CEL transition rules): the
    // operator refuses it, Degraded/InvalidSpec naming the field and a Warning Event, and
    // touches no StatefulSet; set back, the cluster is reconciled again.
    let sets_before = stateful_set_specs(&cp, "paper");
    patch_spec(&cp, "paper", r#"{"replicasPerPartition":5}"#);
    let refused = wait_for("replicasPerPartition 3 → 5 refused", WAIT, POLL, || {
        operator_alive(&mut operator)?;
        let c = cp
            .get_json(&["dssmrcluster", "-n", NS, "paper"])
            .map_err(|e| e.to_string())?;
        let observed = c["status"]["observedGeneration"] == c["metadata"]["generation"];
        match condition(&c, "Degraded") {
            Some((s, r)) if observed && s == "True" && r == "InvalidSpec" => Ok(c),
            other => Err(format!("Degraded = {other:?}, status {}", c["status"])),
        }
    })
    .unwrap();
    let message = condition_message(&refused, "Degraded");
    assert!(
        message.contains("spec.replicasPerPartition") && message.contains("membership"),
        "the refusal should name the field and why: {message}"
    );
    let event = wait_for("a Warning Event InvalidSpec of `paper`", WAIT, POLL, || {
        let events = cp
            .get_json(&[
                "events",
                "-n",
                NS,
                "--field-selector",
                "involvedObject.name=paper,reason=InvalidSpec",
            ])
            .map_err(|e| e.to_string())?;
        events["items"]
            .as_array()
            .and_then(|es| {
                es.iter().find(|e| {
                    e["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("replicasPerPartition")
                })
            })
            .cloned()
            .ok_or_else(|| format!("events: {}", events["items"]))
    })
    .unwrap();
    assert_eq!(event["type"], "Warning", "{event}");
    assert_eq!(
        stateful_set_specs(&cp, "paper"),
        sets_before,
        "a refused spec changed StatefulSets"
    );
    patch_spec(&cp, "paper", r#"{"replicasPerPartition":3}"#);
    wait_for(
        "replicasPerPartition back to 3: not refused",
        WAIT,
        POLL,
        || {
            operator_alive(&mut operator)?;
            let c = cp
                .get_json(&["dssmrcluster", "-n", NS, "paper"])
                .map_err(|e| e.to_string())?;
            let observed = c["status"]["observedGeneration"] == c["metadata"]["generation"];
            match condition(&c, "Degraded") {
                Some((_, r)) if observed && r != "InvalidSpec" => Ok(()),
                other => Err(format!("Degraded = {other:?}")),
            }
        },
    )
    .unwrap();
    phase.done(
        "replicasPerPartition 3 → 5 refused (Degraded/InvalidSpec, Warning Event, StatefulSets \
         unchanged); back to 3 reconciled",
    );

    // Scale out: a third partition.
    set_partitions(&cp, "paper", 3);
    wait_for("StatefulSet paper-p3", WAIT, POLL, || {
        operator_alive(&mut operator)?;
        let sets = owned(&cp, "statefulsets", "paper")?;
        let n = names(&sets);
        n.contains(&"paper-p3".to_string())
            .then_some(())
            .ok_or(format!("{n:?}"))
    })
    .unwrap();
    let p3 = cp.get_json(&["statefulset", "-n", NS, "paper-p3"]).unwrap();
    assert_owned_by(&p3, &uid);
    for o in [
        "service/paper-p3",
        "poddisruptionbudgets.v1beta1.policy/paper-p3",
    ] {
        wait_for(o, WAIT, POLL, || {
            cp.get_json(&["-n", NS, o]).map_err(|e| e.to_string())
        })
        .map(|v| assert_owned_by(&v, &uid))
        .unwrap();
    }
    let p3_pods = wait_for("pods of paper-p3 bound", WAIT, POLL, || {
        let pods = owned(&cp, "pods", "paper")?;
        let bound: Vec<String> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["dssmr.io/group"] == "p3")
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
            .collect();
        let why = format!("{} of 3 bound; {}", bound.len(), pending_reasons(&pods));
        (bound.len() == 3).then_some(bound).ok_or(why)
    })
    .unwrap();
    for node in &p3_pods {
        assert_eq!(class(node), "hp-se1102", "a p3 pod went to {node}");
    }
    // The scale subresource reads back what runs: 3 partitions, and the partitions' pods.
    wait_for("status.partitions 3", WAIT, POLL, || {
        let c = cp
            .get_json(&["dssmrcluster", "-n", NS, "paper"])
            .map_err(|e| e.to_string())?;
        (c["status"]["partitions"] == 3)
            .then_some(())
            .ok_or(format!("{}", c["status"]))
    })
    .unwrap();
    let c = cp.get_json(&["dssmrcluster", "-n", NS, "paper"]).unwrap();
    let selector = c["status"]["selector"].as_str().expect("status.selector");
    let selected = cp.get_json(&["pods", "-n", NS, "-l", selector]).unwrap();
    let groups: BTreeSet<String> = selected["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["labels"]["dssmr.io/group"].as_str())
        .map(str::to_string)
        .collect();
    assert_eq!(
        groups,
        ["p1", "p2", "p3"].map(String::from).into(),
        "status.selector {selector:?} selects the partitions' pods, not the oracle's"
    );
    assert!(
        c["status"]["image"].as_str().is_some_and(|i| !i.is_empty()),
        "status.image: {}",
        c["status"]
    );
    phase.done(
        "kubectl scale --replicas=3: paper-p3 StatefulSet, Service, PDB; its pods on hp-se1102; \
         status.partitions 3, status.selector picks p1-p3's pods",
    );

    // Scale in without an oracle to ask (the pods' DNS names do not resolve where this
    // operator runs, and no replica runs): p3 may hold variables, so it is kept and reported
    // as draining, never deleted.
    set_partitions(&cp, "paper", 2);
    let generation = wait_for("scale-in reported", WAIT, POLL, || {
        operator_alive(&mut operator)?;
        let c = cp
            .get_json(&["dssmrcluster", "-n", NS, "paper"])
            .map_err(|e| e.to_string())?;
        let observed = c["status"]["observedGeneration"] == c["metadata"]["generation"];
        match condition(&c, "Progressing") {
            Some((s, r)) if observed && s == "True" && r == "Draining" => {
                Ok(c["metadata"]["generation"].clone())
            }
            other => Err(format!("Progressing = {other:?}, status {}", c["status"])),
        }
    })
    .unwrap();
    let sets = owned(&cp, "statefulsets", "paper").unwrap();
    assert!(
        names(&sets).contains(&"paper-p3".to_string()),
        "p3 deleted before the oracle said it is empty (generation {generation})"
    );
    phase.done("partitions 3 → 2 with no oracle to ask: paper-p3 kept, Progressing/Draining");

    // Delete: the real garbage collector removes everything the cluster owned. Pods bound to
    // nodes without kubelet stay Terminating until force-deleted.
    cp.kubectl(&["delete", "dssmrcluster", "-n", NS, "paper", "--wait=false"])
        .unwrap();
    wait_for("garbage collection of `paper`", WAIT, POLL, || {
        let mut left = Vec::new();
        for kind in [
            "statefulsets",
            "services",
            "poddisruptionbudgets.v1beta1.policy",
            "configmaps",
        ] {
            for n in names(&owned(&cp, kind, "paper")?) {
                left.push(format!("{kind}/{n}"));
            }
        }
        for p in owned(&cp, "pods", "paper")? {
            let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
            if p["metadata"]["deletionTimestamp"].is_string() {
                cp.force_delete_pod(NS, &name).map_err(|e| e.to_string())?;
            }
            left.push(format!("pod/{name}"));
        }
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    })
    .unwrap();
    assert!(
        cp.kubectl(&["get", "configmap", "-n", NS, "paper-config"])
            .is_err(),
        "ConfigMap paper-config survived its cluster"
    );
    phase.done("DSSMRCluster deleted: everything garbage-collected");

    operator.assert_running();
    eprintln!(
        "operator_k8s: passed in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        install.how
    );
}

/// Watches the operator's reconcile counter for `window` while no spec changes, doing `each`
/// at every poll; fails as soon as the count exceeds [`IDLE_BOUND_PER_MINUTE`] scaled to the
/// window. Reconciles per minute.
fn idle_reconciles_per_minute(
    op: &mut Operator,
    window: Duration,
    mut each: impl FnMut() -> Result<(), String>,
) -> f64 {
    let bound = IDLE_BOUND_PER_MINUTE * window.as_secs_f64() / 60.0;
    let start = op.reconciles().expect("the operator's /metrics");
    let started = Instant::now();
    let done = wait_for("an idle window", window * 2, POLL, || {
        operator_alive(op)?;
        each()?;
        let n = op.reconciles()? - start;
        let elapsed = started.elapsed();
        assert!(
            n <= bound,
            "{n} reconciles in {:.1} s of an idle cluster: more than {bound} in {window:?} \
             ({IDLE_BOUND_PER_MINUTE} per minute); the operator reconciles on its own status \
             writes",
            elapsed.as_secs_f64()
        );
        (elapsed >= window)
            .then_some(n)
            .ok_or(format!("{n} so far"))
    })
    .unwrap();
    done * 60.0 / started.elapsed().as_secs_f64()
}

fn operator_alive(op: &mut Operator) -> Result<(), String> {
    match op.child.try_wait() {
        Ok(Some(status)) => {
            // Fail at once rather than at the deadline.
            panic!("dssmr-operator exited ({status}):\n{}", op.log_tail())
        }
        _ => Ok(()),
    }
}

/// Why pods are not bound yet (their PodScheduled condition's message).
fn pending_reasons(pods: &[Value]) -> String {
    pods.iter()
        .filter(|p| !p["spec"]["nodeName"].is_string())
        .map(|p| {
            let why = p["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
                .map(|c| c["message"].as_str().unwrap_or("").to_string())
                .unwrap_or_else(|| "not yet considered".into());
            format!("{}: {why}", p["metadata"]["name"].as_str().unwrap_or("?"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Waits until `n` pods of cluster `name` exist and are bound; `(pod, node)`.
fn wait_bound(cp: &ControlPlane, name: &str, n: usize) -> Vec<(String, String)> {
    wait_for(&format!("{n} pods of `{name}` bound"), WAIT, POLL, || {
        let pods = owned(cp, "pods", name)?;
        let bound: Vec<(String, String)> = pods
            .iter()
            .filter_map(|p| {
                Some((
                    p["metadata"]["name"].as_str()?.to_string(),
                    p["spec"]["nodeName"].as_str()?.to_string(),
                ))
            })
            .collect();
        if pods.len() == n && bound.len() == n {
            Ok(bound)
        } else {
            Err(format!(
                "{} pods, {} bound; {}",
                pods.len(),
                bound.len(),
                pending_reasons(&pods)
            ))
        }
    })
    .unwrap()
}
