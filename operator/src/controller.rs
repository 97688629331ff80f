//! The controller: `dereference -> validate -> build -> apply -> update_status` for every
//! `DSSMRCluster`, driven by kube-runtime's `Controller` (which also watches the objects the
//! clusters own, so a deleted StatefulSet is put back).
//!
//! Only [`apply`] and [`update_status`] take a client; [`crate::validate`] and
//! [`crate::build`] are pure. Objects are applied with server-side apply (field manager
//! `dssmr-operator`, forced: the operator owns these fields). A spec that makes no sense is
//! reported in the status conditions and an Event, and nothing is applied or deleted. With
//! `paused: true` nothing is applied either.
//!
//! Not in this version: removing partitions when `partitions` shrinks (it needs a drain
//! through the admin API first); the status says so instead of deleting anything.

use crate::build::{self, KubernetesResources};
use crate::crd::{DSSMRCluster, DSSMRClusterStatus, GroupStatus};
use crate::metrics::{Metrics, ReconcileResult};
use crate::validate::{self, ValidatedCluster};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Field manager of every apply.
pub const MANAGER: &str = "dssmr-operator";

/// Why a reconcile failed (it is retried).
#[derive(Debug, Error)]
pub enum ReconcileError {
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The object has no namespace or name (cannot happen for a namespaced resource).
    #[error("DSSMRCluster without namespace or name")]
    Unnamed,
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The image replicas run when a spec names none.
    pub default_image: String,
    /// Publishes Events.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// The PodDisruptionBudget API the server serves (discovered once).
    pdb_api: tokio::sync::OnceCell<PdbApi>,
}

/// The PodDisruptionBudget API a server serves: `policy/v1` since Kubernetes 1.21,
/// `policy/v1beta1` before (1.20 has only that one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdbApi {
    /// `policy/v1`.
    V1,
    /// `policy/v1beta1`.
    V1beta1,
    /// Neither: PDBs are skipped.
    Unavailable,
}

impl PdbApi {
    /// Asks the server (discovery).
    pub async fn discover(client: &Client) -> PdbApi {
        for (version, api) in [
            ("policy/v1", PdbApi::V1),
            ("policy/v1beta1", PdbApi::V1beta1),
        ] {
            if let Ok(list) = client.list_api_group_resources(version).await {
                if list
                    .resources
                    .iter()
                    .any(|r| r.name == "poddisruptionbudgets")
                {
                    return api;
                }
            }
        }
        PdbApi::Unavailable
    }
}

impl Context {
    /// A context over `client`.
    pub fn new(client: Client, default_image: String) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Context {
            client,
            default_image,
            recorder,
            metrics: Arc::new(Metrics::new()),
            pdb_api: tokio::sync::OnceCell::new(),
        }
    }
}

/// Runs the controller until the process is stopped.
pub async fn run(ctx: Arc<Context>) {
    use futures::StreamExt;
    let clusters: Api<DSSMRCluster> = Api::all(ctx.client.clone());
    Controller::new(clusters, watcher::Config::default())
        .owns(
            Api::<StatefulSet>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<Service>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<ConfigMap>::all(ctx.client.clone()),
            watcher::Config::default(),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!(error = %e, "reconcile failed");
            }
        })
        .await;
}

/// Retries a failed reconcile after a pause.
pub fn error_policy(_c: Arc<DSSMRCluster>, e: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "reconcile error; retrying in 5 s");
    Action::requeue(Duration::from_secs(5))
}

/// One pass over one cluster, timed and counted.
pub async fn reconcile(c: Arc<DSSMRCluster>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let metrics = ctx.metrics.clone();
    let _timer = metrics.reconcile_timer();
    let outcome = reconcile_once(c, ctx).await;
    metrics.count(match &outcome {
        Ok((_, result)) => *result,
        Err(_) => ReconcileResult::Error,
    });
    outcome.map(|(action, _)| action)
}

async fn reconcile_once(
    c: Arc<DSSMRCluster>,
    ctx: Arc<Context>,
) -> Result<(Action, ReconcileResult), ReconcileError> {
    let ns = c.namespace().ok_or(ReconcileError::Unnamed)?;
    let generation = c.metadata.generation;
    if c.spec.paused {
        let status = DSSMRClusterStatus {
            observed_generation: generation,
            conditions: conditions(
                &c,
                [
                    (
                        "Ready",
                        false,
                        "Paused",
                        "spec.paused is true: no changes are made",
                    ),
                    ("Progressing", false, "Paused", "spec.paused is true"),
                    ("Degraded", false, "Paused", "spec.paused is true"),
                ],
            ),
            ..c.status.clone().unwrap_or_default()
        };
        update_status(&ctx.client, &c, &ns, status).await?;
        return Ok((Action::await_change(), ReconcileResult::Paused));
    }
    let valid = match validate::validate(&c, &ctx.default_image) {
        Ok(v) => v,
        Err(problems) => {
            let message = problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            let _ = ctx
                .recorder
                .publish(
                    &Event {
                        type_: EventType::Warning,
                        reason: "InvalidSpec".into(),
                        note: Some(message.clone()),
                        action: "Validate".into(),
                        secondary: None,
                    },
                    &c.object_ref(&()),
                )
                .await;
            let status = DSSMRClusterStatus {
                observed_generation: generation,
                conditions: conditions(
                    &c,
                    [
                        ("Ready", false, "InvalidSpec", message.as_str()),
                        (
                            "Progressing",
                            false,
                            "InvalidSpec",
                            "nothing is applied until the spec is fixed",
                        ),
                        ("Degraded", true, "InvalidSpec", message.as_str()),
                    ],
                ),
                ..c.status.clone().unwrap_or_default()
            };
            update_status(&ctx.client, &c, &ns, status).await?;
            return Ok((Action::await_change(), ReconcileResult::Invalid));
        }
    };
    let resources = build::build(&valid);
    let pdb_api = *ctx
        .pdb_api
        .get_or_init(|| PdbApi::discover(&ctx.client))
        .await;
    apply(&ctx.client, &ns, &resources, pdb_api).await?;
    let status = observe(&ctx.client, &c, &valid).await?;
    let ready = status.groups.iter().all(|g| g.ready_replicas >= g.replicas);
    update_status(&ctx.client, &c, &ns, status).await?;
    let action = if ready {
        Action::requeue(Duration::from_secs(30))
    } else {
        Action::requeue(Duration::from_secs(5))
    };
    Ok((action, ReconcileResult::Ok))
}

/// Server-side applies every object of `r`, PDBs through `pdb_api`.
pub async fn apply(
    client: &Client,
    ns: &str,
    r: &KubernetesResources,
    pdb_api: PdbApi,
) -> Result<(), ReconcileError> {
    apply_one(client, ns, &r.config_map).await?;
    for s in &r.services {
        apply_one(client, ns, s).await?;
    }
    for s in &r.stateful_sets {
        apply_one(client, ns, s).await?;
    }
    for p in &r.pod_disruption_budgets {
        match pdb_api {
            PdbApi::V1 => apply_one::<PodDisruptionBudget>(client, ns, p).await?,
            PdbApi::V1beta1 => apply_pdb_v1beta1(client, ns, p).await?,
            PdbApi::Unavailable => {
                tracing::warn!("the API server serves no PodDisruptionBudget API; skipped")
            }
        }
    }
    Ok(())
}

/// Applies `pdb` as `policy/v1beta1` (same fields as v1 for what the operator sets).
async fn apply_pdb_v1beta1(
    client: &Client,
    ns: &str,
    pdb: &PodDisruptionBudget,
) -> Result<(), ReconcileError> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let name = pdb.metadata.name.clone().unwrap_or_default();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget"),
        "poddisruptionbudgets",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let mut value = serde_json::to_value(pdb).expect("objects always serialise");
    if let Some(m) = value.as_object_mut() {
        m.insert("apiVersion".into(), "policy/v1beta1".into());
        m.insert("kind".into(), "PodDisruptionBudget".into());
    }
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|source| ReconcileError::Api {
        what: format!("apply PodDisruptionBudget (policy/v1beta1) {ns}/{name}"),
        source,
    })?;
    Ok(())
}

async fn apply_one<K>(client: &Client, ns: &str, obj: &K) -> Result<(), ReconcileError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut value = serde_json::to_value(obj).expect("objects always serialise");
    if let Some(m) = value.as_object_mut() {
        m.insert("apiVersion".into(), K::api_version(&()).into());
        m.insert("kind".into(), K::kind(&()).into());
    }
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|source| ReconcileError::Api {
        what: format!("apply {} {ns}/{name}", K::kind(&())),
        source,
    })?;
    Ok(())
}

/// Reads the StatefulSets of `v` and summarises their readiness.
pub async fn observe(
    client: &Client,
    c: &DSSMRCluster,
    v: &ValidatedCluster,
) -> Result<DSSMRClusterStatus, ReconcileError> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &v.namespace);
    let selector = format!("app.kubernetes.io/instance={}", v.name);
    let listed = sets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| ReconcileError::Api {
            what: format!("list StatefulSets {selector}"),
            source,
        })?;
    let groups: Vec<GroupStatus> = build::groups(v)
        .iter()
        .map(|g| {
            let name = build::group_object_name(v, g);
            let ready = listed
                .items
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            GroupStatus {
                name: g.label.clone(),
                ready_replicas: ready.max(0) as u32,
                replicas: g.replicas,
                leader: None,
            }
        })
        .collect();
    let wanted = build::groups(v).len();
    let extra = listed
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .filter(|n| {
            !build::groups(v)
                .iter()
                .any(|g| build::group_object_name(v, g) == *n)
        })
        .collect::<Vec<_>>();
    let ready_groups = groups
        .iter()
        .filter(|g| g.ready_replicas >= g.replicas)
        .count();
    let all_ready = ready_groups == wanted;
    let progressing = format!("{ready_groups}/{wanted} groups ready");
    let degraded_msg = if extra.is_empty() {
        "all groups are in the spec".to_string()
    } else {
        format!(
            "StatefulSets {extra:?} are no longer in the spec; removing partitions (drain, then \
             delete) is not implemented yet, so they are kept"
        )
    };
    Ok(DSSMRClusterStatus {
        observed_generation: c.metadata.generation,
        conditions: conditions(
            c,
            [
                (
                    "Ready",
                    all_ready,
                    if all_ready {
                        "AllGroupsReady"
                    } else {
                        "GroupsNotReady"
                    },
                    progressing.as_str(),
                ),
                (
                    "Progressing",
                    !all_ready,
                    if all_ready {
                        "Stable"
                    } else {
                        "WaitingForReplicas"
                    },
                    progressing.as_str(),
                ),
                (
                    "Degraded",
                    !extra.is_empty(),
                    if extra.is_empty() {
                        "AsSpecified"
                    } else {
                        "ScaleDownPending"
                    },
                    degraded_msg.as_str(),
                ),
            ],
        ),
        ready: Some(format!("{ready_groups}/{wanted}")),
        groups,
        throughput: c.status.as_ref().and_then(|s| s.throughput),
        move_rate: c.status.as_ref().and_then(|s| s.move_rate),
    })
}

/// Conditions from `(type, status, reason, message)`, keeping the transition time of those
/// whose status did not change.
pub fn conditions<const N: usize>(
    c: &DSSMRCluster,
    wanted: [(&str, bool, &str, &str); N],
) -> Vec<Condition> {
    let old = c
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    wanted
        .into_iter()
        .map(|(type_, status, reason, message)| {
            let status = if status { "True" } else { "False" }.to_string();
            let since = old
                .iter()
                .find(|o| o.type_ == type_ && o.status == status)
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: type_.into(),
                status,
                reason: reason.into(),
                message: message.into(),
                last_transition_time: since,
                observed_generation: c.metadata.generation,
            }
        })
        .collect()
}

/// Writes `status` into the status subresource.
pub async fn update_status(
    client: &Client,
    c: &DSSMRCluster,
    ns: &str,
    status: DSSMRClusterStatus,
) -> Result<(), ReconcileError> {
    let name = c.name_any();
    let api: Api<DSSMRCluster> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| ReconcileError::Api {
            what: format!("update status of {ns}/{name}"),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        cluster, cluster_json, condition, mock, stateful_sets, timeout_after_1s, Step,
    };

    const NS: &str = "/api/v1/namespaces/default";
    const APPS: &str = "/apis/apps/v1/namespaces/default";
    const STATUS: &str = "/apis/dssmr.io/v1alpha1/namespaces/default/dssmrclusters/demo/status";

    #[tokio::test]
    async fn a_valid_cluster_is_applied_server_side_and_reported_ready() {
        let c = cluster("{partitions: 1, mode: ssmr}");
        let answer = cluster_json(&c);
        let (ctx, server) = mock(vec![
            Step::new("GET", "/apis/policy/v1").answer(policy_v1()),
            Step::new("PATCH", format!("{NS}/configmaps/demo-config?")).check(|b| {
                assert_eq!(b["kind"], "ConfigMap");
                assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "uid-1");
            }),
            Step::new("PATCH", format!("{NS}/services/demo-p1?")),
            Step::new("PATCH", format!("{APPS}/statefulsets/demo-p1?")).check(|b| {
                assert_eq!(b["spec"]["podManagementPolicy"], "Parallel");
                assert_eq!(
                    b["spec"]["template"]["spec"]["containers"][0]["image"],
                    "dssmr:test"
                );
            }),
            Step::new(
                "PATCH",
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets/demo-p1?",
            ),
            Step::new("GET", format!("{APPS}/statefulsets?"))
                .answer(stateful_sets(&["demo-p1"], 3)),
            Step::new("PATCH", format!("{STATUS}?"))
                .check(|b| {
                    assert_eq!(
                        condition(b, "Ready"),
                        ("True".into(), "AllGroupsReady".into())
                    );
                    assert_eq!(condition(b, "Degraded").0, "False");
                    assert_eq!(b["status"]["ready"], "1/1");
                    assert_eq!(b["status"]["observedGeneration"], 2);
                })
                .answer(answer),
        ]);
        let action = timeout_after_1s(reconcile(c, ctx))
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(Duration::from_secs(30)));
        timeout_after_1s(server).await.expect("every step played");
    }

    #[tokio::test]
    async fn server_side_apply_uses_the_operator_as_forced_field_manager() {
        let c = cluster("{partitions: 1, mode: ssmr}");
        let (ctx, server) = mock(vec![Step::new(
            "PATCH",
            format!("{NS}/configmaps/demo-config?&force=true&fieldManager=dssmr-operator"),
        )
        .answer(serde_json::json!({"status": "Failure", "message": "stop here", "reason": "Conflict", "code": 409}))]);
        let valid = validate::validate(&c, "dssmr:test").unwrap();
        let r = build::build(&valid);
        // The mock answers 200 with a non-ConfigMap body, so the apply fails to decode: only
        // the request line matters here.
        let _ = timeout_after_1s(apply(&ctx.client, "default", &r, PdbApi::V1)).await;
        timeout_after_1s(server)
            .await
            .expect("the apply request was made");
    }

    /// Discovery answer of a server with policy/v1 PDBs.
    fn policy_v1() -> serde_json::Value {
        serde_json::json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "policy/v1",
            "resources": [{"name": "poddisruptionbudgets", "singularName": "", "namespaced": true,
                           "kind": "PodDisruptionBudget", "verbs": ["patch"]}],
        })
    }

    #[tokio::test]
    async fn kubernetes_1_20_gets_its_pdbs_as_policy_v1beta1() {
        let c = cluster("{partitions: 1, mode: ssmr}");
        let answer = cluster_json(&c);
        let (ctx, server) = mock(vec![
            Step::new("GET", "/apis/policy/v1").status(404).answer(serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource",
            })),
            Step::new("GET", "/apis/policy/v1beta1").answer(serde_json::json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "policy/v1beta1",
                "resources": [{"name": "poddisruptionbudgets", "singularName": "", "namespaced": true,
                               "kind": "PodDisruptionBudget", "verbs": ["patch"]}],
            })),
            Step::new("PATCH", format!("{NS}/configmaps/demo-config?")),
            Step::new("PATCH", format!("{NS}/services/demo-p1?")),
            Step::new("PATCH", format!("{APPS}/statefulsets/demo-p1?")),
            Step::new(
                "PATCH",
                "/apis/policy/v1beta1/namespaces/default/poddisruptionbudgets/demo-p1?",
            )
            .check(|b| {
                assert_eq!(b["apiVersion"], "policy/v1beta1");
                assert_eq!(b["spec"]["maxUnavailable"], 1);
            }),
            Step::new("GET", format!("{APPS}/statefulsets?"))
                .answer(stateful_sets(&["demo-p1"], 3)),
            Step::new("PATCH", format!("{STATUS}?")).answer(answer),
        ]);
        timeout_after_1s(reconcile(c, ctx))
            .await
            .expect("reconcile");
        timeout_after_1s(server).await.expect("every step played");
    }

    #[tokio::test]
    async fn a_spec_that_makes_no_sense_is_reported_and_nothing_is_applied() {
        let c = cluster("{partitions: 2, replicasPerPartition: 4}");
        let answer = cluster_json(&c);
        let (ctx, server) = mock(vec![
            Step::new("POST", "/apis/events.k8s.io/v1/namespaces/default/events").check(|b| {
                assert_eq!(b["reason"], "InvalidSpec");
                assert!(b["note"]
                    .as_str()
                    .unwrap()
                    .contains("spec.replicasPerPartition"));
            }),
            Step::new("PATCH", format!("{STATUS}?"))
                .check(|b| {
                    assert_eq!(
                        condition(b, "Degraded"),
                        ("True".into(), "InvalidSpec".into())
                    );
                    assert_eq!(condition(b, "Ready").0, "False");
                })
                .answer(answer),
        ]);
        let action = timeout_after_1s(reconcile(c, ctx))
            .await
            .expect("reconcile");
        assert_eq!(action, Action::await_change());
        timeout_after_1s(server).await.expect("every step played");
    }

    #[tokio::test]
    async fn a_paused_cluster_is_left_alone() {
        let c = cluster("{partitions: 2, paused: true}");
        let answer = cluster_json(&c);
        let (ctx, server) = mock(vec![Step::new("PATCH", format!("{STATUS}?"))
            .check(|b| {
                assert_eq!(
                    condition(b, "Progressing"),
                    ("False".into(), "Paused".into())
                )
            })
            .answer(answer)]);
        let action = timeout_after_1s(reconcile(c, ctx))
            .await
            .expect("reconcile");
        assert_eq!(action, Action::await_change());
        timeout_after_1s(server).await.expect("every step played");
    }

    #[tokio::test]
    async fn groups_not_ready_yet_keep_the_cluster_progressing_and_extra_sets_are_kept() {
        let c = cluster("{partitions: 1}");
        let answer = cluster_json(&c);
        let (ctx, server) = mock(vec![
            Step::new("GET", "/apis/policy/v1").answer(policy_v1()),
            Step::new("PATCH", format!("{NS}/configmaps/demo-config?")),
            Step::new("PATCH", format!("{NS}/services/demo-oracle?")),
            Step::new("PATCH", format!("{NS}/services/demo-p1?")),
            Step::new("PATCH", format!("{APPS}/statefulsets/demo-oracle?")),
            Step::new("PATCH", format!("{APPS}/statefulsets/demo-p1?")),
            Step::new(
                "PATCH",
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets/demo-oracle?",
            ),
            Step::new(
                "PATCH",
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets/demo-p1?",
            ),
            Step::new("GET", format!("{APPS}/statefulsets?"))
                .answer(stateful_sets(&["demo-oracle", "demo-p1", "demo-p2"], 1)),
            Step::new("PATCH", format!("{STATUS}?"))
                .check(|b| {
                    assert_eq!(condition(b, "Ready").0, "False");
                    assert_eq!(
                        condition(b, "Progressing"),
                        ("True".into(), "WaitingForReplicas".into())
                    );
                    assert_eq!(
                        condition(b, "Degraded"),
                        ("True".into(), "ScaleDownPending".into())
                    );
                    assert_eq!(b["status"]["ready"], "0/2");
                })
                .answer(answer),
        ]);
        let action = timeout_after_1s(reconcile(c, ctx))
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(Duration::from_secs(5)));
        timeout_after_1s(server).await.expect("every step played");
    }
}
