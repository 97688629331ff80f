//! Test fixtures: DSSMRClusters from YAML and a mock API server that plays an expected
//! sequence of requests (method, path) and answers each, so a reconcile test fails fast when
//! the controller makes a call it should not, or misses one; and the requests and answers
//! that the reconcile tests of several steps share (paths, discovery, the applies).

use crate::controller::Context;
use crate::crd::DSSMRCluster;
use dssmr_api::config::ClusterConfig;
use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Path of the core API in the namespace of the fixtures.
pub const NS: &str = "/api/v1/namespaces/default";
/// Path of the apps API in the namespace of the fixtures.
pub const APPS: &str = "/apis/apps/v1/namespaces/default";
/// Path of the policy/v1 PodDisruptionBudgets in the namespace of the fixtures.
pub const PDBS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
/// Path of the status subresource of the fixtures' cluster `demo`.
pub const STATUS: &str = "/apis/dssmr.io/v1alpha1/namespaces/default/dssmrclusters/demo/status";

/// A cluster from a YAML spec, as the API server would hand it to the controller.
pub fn cluster(spec_yaml: &str) -> Arc<DSSMRCluster> {
    let text = format!(
        "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\n\
         metadata: {{name: demo, namespace: default, uid: uid-1, generation: 2}}\nspec: {spec_yaml}\n"
    );
    Arc::new(serde_yaml::from_str(&text).expect("fixture YAML"))
}

/// One expected request and how to answer it.
pub struct Step {
    /// HTTP method.
    pub method: &'static str,
    /// The path must start with this (query strings vary).
    pub path: String,
    /// Checks on the request body (JSON), panicking with a message when wrong.
    pub check: Box<dyn Fn(&Value) + Send>,
    /// The answer; `None`: echo the request body.
    pub answer: Option<Value>,
    /// HTTP status of the answer.
    pub status: u16,
}

impl Step {
    /// Expects `method path`, echoes the body.
    pub fn new(method: &'static str, path: impl Into<String>) -> Self {
        Step {
            method,
            path: path.into(),
            check: Box::new(|_| {}),
            answer: None,
            status: 200,
        }
    }

    /// Answers with HTTP status `code`.
    pub fn status(mut self, code: u16) -> Self {
        self.status = code;
        self
    }

    /// Adds a check of the request body.
    pub fn check(mut self, f: impl Fn(&Value) + Send + 'static) -> Self {
        self.check = Box::new(f);
        self
    }

    /// Answers with `v` instead of the echo.
    pub fn answer(mut self, v: Value) -> Self {
        self.answer = Some(v);
        self
    }
}

/// A context whose client talks to a mock server playing `steps`; the returned task ends
/// when every step was played (and fails the test otherwise).
pub fn mock(steps: Vec<Step>) -> (Arc<Context>, tokio::task::JoinHandle<()>) {
    mock_with(steps, crate::replicas::ReplicaAccess::Off)
}

/// [`mock`] with replicas reached through `access`.
pub fn mock_with(
    steps: Vec<Step>,
    access: crate::replicas::ReplicaAccess,
) -> (Arc<Context>, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Arc::new(Context::new(client, "dssmr:test".into()).with_replica_access(access));
    let task = tokio::spawn(async move {
        for (i, step) in steps.into_iter().enumerate() {
            let (req, send) = handle.next_request().await.unwrap_or_else(|| {
                panic!(
                    "step {i}: the controller made no request (expected {} {})",
                    step.method, step.path
                )
            });
            let method = req.method().to_string();
            let path = req.uri().to_string();
            assert_eq!(method, step.method, "step {i}: {method} {path}");
            assert!(
                path.starts_with(&step.path),
                "step {i}: expected {} {}, got {method} {path}",
                step.method,
                step.path
            );
            let bytes = req.into_body().collect_bytes().await.expect("request body");
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("JSON request body")
            };
            (step.check)(&body);
            let answer = step.answer.unwrap_or(body);
            send.send_response(
                Response::builder()
                    .status(step.status)
                    .body(Body::from(serde_json::to_vec(&answer).expect("JSON")))
                    .expect("response"),
            );
        }
    });
    (ctx, task)
}

/// A StatefulSet list with `ready` ready replicas in each of `names`.
pub fn stateful_sets(names: &[&str], ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSetList",
        "metadata": {},
        "items": names.iter().map(|n| json!({
            "metadata": {"name": n, "namespace": "default"},
            "spec": {"selector": {}, "serviceName": n, "template": {}},
            "status": {"replicas": ready, "readyReplicas": ready},
        })).collect::<Vec<_>>(),
    })
}

/// The partitions of a fixture, by number: a count `n` stands for `1..=n`.
pub struct Numbers(Vec<u32>);

impl From<u32> for Numbers {
    fn from(n: u32) -> Self {
        Numbers((1..=n).collect())
    }
}

impl<const N: usize> From<[u32; N]> for Numbers {
    fn from(numbers: [u32; N]) -> Self {
        Numbers(numbers.to_vec())
    }
}

/// The StatefulSets `c` would have with `partitions` and `deployed` in its ConfigMap, every
/// one rolled out with `ready` ready replicas.
pub fn rolled_out(
    c: &DSSMRCluster,
    deployed: &crate::validate::Deployed,
    partitions: impl Into<Numbers>,
    ready: i32,
) -> Value {
    let mut v = crate::validate::validate_against(c, "dssmr:test", deployed).expect("valid");
    v.partitions = partitions.into().0;
    let built = crate::build::build(&v);
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSetList",
        "metadata": {},
        "items": built.stateful_sets.iter().map(|s| {
            let mut s = serde_json::to_value(s).expect("JSON");
            s["metadata"]["generation"] = json!(1);
            s["status"] = json!({
                "replicas": ready, "readyReplicas": ready, "updatedReplicas": ready,
                "currentRevision": "r1", "updateRevision": "r1", "observedGeneration": 1,
            });
            s
        }).collect::<Vec<_>>(),
    })
}

/// The ConfigMap `c` would have with `partitions`, as the API server returns it.
pub fn config_map(c: &DSSMRCluster, partitions: impl Into<Numbers>, initial: u32) -> Value {
    let mut v = crate::validate::validate(c, "dssmr:test").expect("valid");
    v.partitions = partitions.into().0;
    v.initial_partitions = initial;
    let mut map = serde_json::to_value(crate::build::build(&v).config_map).expect("JSON");
    map["apiVersion"] = json!("v1");
    map["kind"] = json!("ConfigMap");
    map
}

/// The API server's answer for an object that does not exist.
pub fn not_found() -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": "not found",
    })
}

/// The API server's answer to a delete.
pub fn deleted() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}})
}

/// An answer to a status patch: the cluster itself.
pub fn cluster_json(c: &DSSMRCluster) -> Value {
    serde_json::to_value(c).expect("JSON")
}

/// One reconcile of `c` against a mock server playing `steps`, failing the test unless it
/// succeeds and every step was played; its requeue action.
pub async fn play(c: Arc<DSSMRCluster>, steps: Vec<Step>) -> kube::runtime::controller::Action {
    let (ctx, server) = mock(steps);
    let action = timeout_after_1s(crate::controller::reconcile(c, ctx))
        .await
        .expect("reconcile");
    timeout_after_1s(server).await.expect("every step played");
    action
}

/// Awaits `f` for at most a second: a missing request fails the test quickly.
pub async fn timeout_after_1s<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(1), f)
        .await
        .expect("timed out after 1 s")
}

/// The condition `type_` of a status patch body: (status, reason).
pub fn condition(body: &Value, type_: &str) -> (String, String) {
    let c = body["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {body}"));
    (
        c["status"].as_str().unwrap_or("").into(),
        c["reason"].as_str().unwrap_or("").into(),
    )
}

/// Discovery answer of a server with policy/v1 PDBs.
pub fn policy_v1() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "policy/v1",
        "resources": [{"name": "poddisruptionbudgets", "singularName": "", "namespaced": true,
                       "kind": "PodDisruptionBudget", "verbs": ["patch"]}],
    })
}

/// The steps of applying `groups` (ConfigMap, Services, StatefulSets, PDBs), the config
/// checked by `check_config`.
pub fn apply_steps(
    groups: &[&str],
    check_config: impl Fn(&ClusterConfig) + Send + 'static,
) -> Vec<Step> {
    let mut steps = vec![
        Step::new("PATCH", format!("{NS}/configmaps/demo-config?")).check(move |b| {
            assert_eq!(b["kind"], "ConfigMap");
            assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "uid-1");
            let text = b["data"]["cluster.yaml"].as_str().expect("cluster.yaml");
            check_config(&ClusterConfig::from_yaml(text).expect("a valid config"));
        }),
    ];
    for g in groups {
        steps.push(Step::new("PATCH", format!("{NS}/services/demo-{g}?")));
    }
    for g in groups {
        steps.push(Step::new("PATCH", format!("{APPS}/statefulsets/demo-{g}?")));
    }
    for g in groups {
        steps.push(Step::new("PATCH", format!("{PDBS}/demo-{g}?")));
    }
    steps
}
