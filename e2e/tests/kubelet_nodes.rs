//! Pods that really run: a real control plane (v1.20.2) and two real kubelet nodes
//! (`dssmr_e2e::kube::kubelet`: a kubelet and a Docker engine each, on bridges the test makes,
//! labelled `dssmr.io/hardware=hp-se1102`), and a tiny real dssmr cluster on them: what the
//! operator renders for a one-partition kv store on S-SMR with three replicas and persistent
//! volumes (`dssmr_operator::render`), applied with `kubectl`.
//!
//! - the three replica pods become Ready by their own readiness probe (`/readyz`, which needs
//!   the Raft group to have a leader, so the replicas found each other by their DNS names);
//!   nothing patches a status;
//! - the real scheduler binds them by the hardware label, over both nodes;
//! - from a pod, `dssmr client` reaches the group through cluster DNS and a write commits;
//! - a pod reaches the API server at the `kubernetes` Service address;
//! - `kubectl logs` works for the pods of both nodes;
//! - `kubectl delete pod` of a replica: the StatefulSet makes it again, on the same claim and
//!   volume, it is Ready again, and the write is still there;
//! - when the nodes drop, nothing of the run is left on the machine (bridges, rules, cgroups,
//!   processes).
//!
//! Needs root and the artefacts of `e2e/prepare.sh` (kubelet, pause, dnsmasq, the `dssmr:e2e`
//! image). Every wait polls a condition under a deadline. Run alone:
//! `bash e2e/prepare.sh && cargo test -p dssmr-e2e --test kubelet_nodes -- --nocapture`
//! (about 55 s warm on 2 cores; it prints the time of each step).

use dssmr_e2e::kube::kubelet::{leftovers, KubeletNodes, NodeSpec, KUBERNETES_SERVICE};
use dssmr_e2e::kube::{pod_is_ready, run_bounded, ControlPlane, Hardware, HARDWARE_LABEL, VERSION};
use dssmr_e2e::wait_for;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const NS: &str = "default";
const IMAGE: &str = "dssmr:e2e";
const SET: &str = "kv-p1";
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);
const CONFIG: &str = "/etc/dssmr/cluster.yaml";

/// The DSSMRCluster the operator's renderer turns into the objects this test applies.
fn cluster_yaml() -> String {
    format!(
        "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata:\n  name: kv\n  \
         namespace: {NS}\nspec:\n  partitions: 1\n  replicasPerPartition: 3\n  mode: ssmr\n  \
         app: kv\n  image: {IMAGE}\n  storage:\n    size: 64Mi\n  placement:\n    \
         partitions:\n      nodeSelector:\n        {HARDWARE_LABEL}: {}\n",
        Hardware::HpSe1102.label()
    )
}

/// The pods of the StatefulSet that are Ready (condition Ready=True), by name.
fn ready_pods(cp: &ControlPlane) -> Result<Vec<Value>, String> {
    let pods = cp
        .get_json(&["pods", "-n", NS, "-l", "statefulset.kubernetes.io/pod-name"])
        .map_err(|e| e.to_string())?;
    let all: Vec<Value> = pods["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{SET}-")))
        })
        .collect();
    Ok(all.into_iter().filter(pod_is_ready).collect())
}

/// Waits until the 3 pods are Ready; returns them.
fn wait_all_ready(cp: &ControlPlane, nodes: &KubeletNodes, what: &str) -> Vec<Value> {
    let started = Instant::now();
    let pods = wait_for(what, WAIT, POLL, || {
        let ready = ready_pods(cp)?;
        (ready.len() == 3)
            .then_some(ready.clone())
            .ok_or(format!("{} Ready", ready.len()))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}\n{}",
            cp.kubectl(&["get", "pods,pvc,pv", "-o", "wide"])
                .unwrap_or_default(),
            cp.kubectl(&["describe", "pods"]).unwrap_or_default(),
            nodes.containers()
        )
    });
    eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    pods
}

/// `dssmr client` in pod `pod`, through `kubectl exec` (the image has no shell).
fn client(cp: &ControlPlane, pod: &str, op: &[&str]) -> anyhow::Result<String> {
    let mut args = vec![
        "exec",
        "-n",
        NS,
        pod,
        "-c",
        "replica",
        "--",
        "dssmr",
        "client",
        "--config",
        CONFIG,
        "--timeout",
        "20s",
        "kv",
    ];
    args.extend_from_slice(op);
    cp.kubectl(&args)
}

#[test]
fn statefulset_on_kubelet_nodes_serves_resolves_and_survives_pod_deletion() {
    let t0 = Instant::now();
    let cp = ControlPlane::start().expect("control plane");
    let specs: Vec<NodeSpec> = ["node-a", "node-b"]
        .iter()
        .map(|n| NodeSpec {
            name: n.to_string(),
            hardware: Hardware::HpSe1102,
        })
        .collect();
    let mut nodes = KubeletNodes::start(&cp, &specs, &[IMAGE]).expect("kubelet nodes");
    let run = nodes.run_id().to_string();
    let t_nodes = t0.elapsed();

    // The scheduler sees the nodes' labels.
    for n in nodes.names() {
        let node = cp.get_json(&["node", &n]).expect("node");
        assert_eq!(
            node["metadata"]["labels"][HARDWARE_LABEL],
            Hardware::HpSe1102.label(),
            "{n}"
        );
    }

    // The cluster as the operator renders it (PodDisruptionBudget: policy/v1beta1 on 1.20).
    nodes.provision_volumes().expect("volume provisioner");
    let manifests = dssmr_operator::render(&cluster_yaml(), IMAGE)
        .expect("render")
        .replace("apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n");
    cp.kubectl_stdin(&["apply", "-f", "-"], &manifests)
        .expect("kubectl apply");

    let pods = wait_all_ready(&cp, &nodes, "3 replica pods Ready by their own probes");
    assert_eq!(
        nodes.volumes_provisioned(),
        (3, 0),
        "a volume made for each replica's claim"
    );
    let t_ready = t0.elapsed();
    let on: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        on,
        nodes.names().into_iter().collect::<BTreeSet<_>>(),
        "pods spread over both nodes"
    );

    // From pod 0, a client resolves the group's members by their DNS names (some on the
    // other node) and commits a write.
    let put = wait_for("kv put from a pod", WAIT, POLL, || {
        client(&cp, &format!("{SET}-0"), &["put", "7", "42"]).map_err(|e| e.to_string())
    })
    .expect("put");
    assert!(put.contains("done"), "put: {put}");

    // The API server from inside a pod's network namespace, at the `kubernetes` Service
    // address (relay and DNAT of the harness; the certificate names that address).
    let pid = nodes
        .pod_netns_pid(NS, &format!("{SET}-2"))
        .expect("sandbox of pod 2");
    let (host, port) = KUBERNETES_SERVICE;
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("kubectl")
        .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
        .arg(format!("--server=https://{host}:{port}"))
        .args(["get", "--raw", "/version"]);
    let (ok, out, err) = run_bounded(cmd, None, Duration::from_secs(30)).expect("nsenter");
    assert!(
        ok && out.contains(VERSION),
        "API server from a pod at {host}:{port}: {out} {err}"
    );

    // `kubectl logs` of every pod, on both nodes (each kubelet has its own /var/log/pods).
    for p in &pods {
        let name = p["metadata"]["name"].as_str().expect("pod name");
        let logs = cp
            .kubectl(&["logs", "-n", NS, name, "-c", "replica"])
            .unwrap_or_else(|e| panic!("kubectl logs {name}: {e}"));
        eprintln!("kubectl logs {name}: {} bytes", logs.len());
    }

    // Delete a replica pod: it comes back on its claim and volume.
    let victim = format!("{SET}-1");
    let before = cp.get_json(&["pod", "-n", NS, &victim]).expect("pod");
    let (uid, claim) = (
        before["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        before["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
            .expect("the pod has a claim")
            .to_string(),
    );
    let pv = cp.get_json(&["pvc", "-n", NS, &claim]).expect("pvc")["spec"]["volumeName"]
        .as_str()
        .expect("bound claim")
        .to_string();
    let pv_dir = cp.get_json(&["pv", &pv]).expect("pv")["spec"]["hostPath"]["path"]
        .as_str()
        .expect("hostPath volume")
        .to_string();
    let files = || std::fs::read_dir(&pv_dir).map(|d| d.count()).unwrap_or(0);
    assert!(
        files() > 0,
        "the replica wrote nothing to its volume {pv_dir}"
    );
    cp.kubectl(&["delete", "pod", "-n", NS, &victim, "--wait=false"])
        .expect("delete pod");
    let t_delete = Instant::now();
    wait_for("the deleted pod replaced", WAIT, POLL, || {
        let p = cp
            .get_json(&["pod", "-n", NS, &victim])
            .map_err(|e| e.to_string())?;
        (p["metadata"]["uid"].as_str() != Some(&uid))
            .then_some(())
            .ok_or("old pod still there".to_string())
    })
    .expect("replaced");
    eprintln!(
        "the deleted pod replaced (old one terminated gracefully): {:.1} s",
        t_delete.elapsed().as_secs_f64()
    );
    wait_all_ready(&cp, &nodes, "the replaced pod Ready again");
    let after = cp.get_json(&["pvc", "-n", NS, &claim]).expect("pvc");
    assert_eq!(after["spec"]["volumeName"].as_str(), Some(pv.as_str()));
    let got = wait_for("kv get from the replaced pod", WAIT, POLL, || {
        client(&cp, &victim, &["get", "7"]).map_err(|e| e.to_string())
    })
    .expect("get");
    assert!(got.contains("42"), "get after the pod came back: {got}");
    let t_done = t0.elapsed();

    drop(nodes);
    let left = leftovers(&run, specs.len());
    assert!(
        left.is_empty(),
        "left on the machine by run {run}: {left:#?}"
    );
    eprintln!(
        "kubelet e2e: nodes Ready at {:.1} s, pods Ready at {:.1} s, pod deletion done at \
         {:.1} s, cleaned up at {:.1} s",
        t_nodes.as_secs_f64(),
        t_ready.as_secs_f64(),
        t_done.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
