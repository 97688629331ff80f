//! apply: the [`Prepared`] objects → the API server, by server-side apply (field manager
//! [`MANAGER`], forced: the operator owns these fields) → [`Applied`].
//!
//! Takes the kube client: discovery (which PodDisruptionBudget API the server serves, and
//! whether it serves PodMonitors; each asked once per process and kept in the [`Context`]),
//! then the applies in a fixed order (the ConfigMap, the Services, the StatefulSets, the PDBs,
//! the PodMonitor), and a Warning Event when a PodMonitor is asked for but not served. Must
//! not delete anything (the oracle step deletes drained partitions) nor change what it is
//! given.

use super::build::{Prepared, Rollout};
use super::{events, Context, MANAGER};
use crate::build::KubernetesResources;
use crate::crd::DSSMRCluster;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Why the apply step failed.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// An object could not be applied.
    #[error("apply {kind} {object}: {source}")]
    Object {
        /// Its kind (with the API version when it is not the usual one).
        kind: String,
        /// `namespace/name`.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// The objects of a cluster, applied: what the oracle and status steps need of them.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The objects applied.
    pub resources: KubernetesResources,
    /// How far the StatefulSets (as listed before the apply) were from running them.
    pub rollout: Rollout,
    /// The PodDisruptionBudget API they were applied through.
    pub pdb_api: PdbApi,
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

/// Applies every object of `prepared` for cluster `c` in `ns`.
#[tracing::instrument(skip_all, fields(namespace = %ns, name = %c.name_any()))]
pub async fn apply(
    ctx: &Context,
    c: &DSSMRCluster,
    ns: &str,
    prepared: Prepared,
) -> Result<Applied, ApplyError> {
    let Prepared { resources, rollout } = prepared;
    let pdb_api = *ctx
        .pdb_api
        .get_or_init(|| PdbApi::discover(&ctx.client))
        .await;
    apply_objects(&ctx.client, ns, &resources, pdb_api).await?;
    if let Some(monitor) = &resources.pod_monitor {
        let served = *ctx
            .pod_monitors
            .get_or_init(|| pod_monitors_served(&ctx.client))
            .await;
        if served {
            apply_pod_monitor(&ctx.client, ns, monitor).await?;
        } else {
            let note = "spec.monitoring.podMonitor: the API server serves no \
                        monitoring.coreos.com/v1 PodMonitor (Prometheus Operator); skipped";
            events::publish(
                ctx,
                c,
                EventType::Warning,
                "MonitoringSkipped",
                "Apply",
                note,
            )
            .await;
        }
    }
    Ok(Applied {
        resources,
        rollout,
        pdb_api,
    })
}

/// Server-side applies every object of `r` but the PodMonitor, PDBs through `pdb_api`.
pub async fn apply_objects(
    client: &Client,
    ns: &str,
    r: &KubernetesResources,
    pdb_api: PdbApi,
) -> Result<(), ApplyError> {
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

/// Whether the server serves `monitoring.coreos.com/v1` PodMonitors (discovery).
async fn pod_monitors_served(client: &Client) -> bool {
    client
        .list_api_group_resources("monitoring.coreos.com/v1")
        .await
        .is_ok_and(|l| l.resources.iter().any(|r| r.name == "podmonitors"))
}

/// Server-side applies the PodMonitor `monitor` (built as JSON).
async fn apply_pod_monitor(
    client: &Client,
    ns: &str,
    monitor: &serde_json::Value,
) -> Result<(), ApplyError> {
    let name = monitor["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"),
        "podmonitors",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    patch(&api, ns, &name, "PodMonitor", monitor).await
}

/// Applies `pdb` as `policy/v1beta1` (same fields as v1 for what the operator sets).
async fn apply_pdb_v1beta1(
    client: &Client,
    ns: &str,
    pdb: &PodDisruptionBudget,
) -> Result<(), ApplyError> {
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
    let kind = "PodDisruptionBudget (policy/v1beta1)";
    patch(&api, ns, &name, kind, &value).await
}

/// Server-side applies the typed object `obj`.
async fn apply_one<K>(client: &Client, ns: &str, obj: &K) -> Result<(), ApplyError>
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
    patch(&api, ns, &name, &K::kind(&()), &value).await
}

/// The one server-side apply of every object: `value` as `name` through `api`.
async fn patch<K>(
    api: &Api<K>,
    ns: &str,
    name: &str,
    kind: &str,
    value: &serde_json::Value,
) -> Result<(), ApplyError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
    .map_err(|source| ApplyError::Object {
        kind: kind.into(),
        object: format!("{ns}/{name}"),
        source,
    })?;
    tracing::debug!(kind, name, "applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        apply_steps, cluster, cluster_json, condition, mock, not_found, play, policy_v1,
        stateful_sets, timeout_after_1s, Step, APPS, NS, STATUS,
    };
    use kube::runtime::controller::Action;
    use std::time::Duration;

    #[tokio::test]
    async fn server_side_apply_uses_the_operator_as_forced_field_manager() {
        let c = cluster("{partitions: 1, mode: ssmr}");
        let (ctx, server) = mock(vec![Step::new(
            "PATCH",
            format!("{NS}/configmaps/demo-config?&force=true&fieldManager=dssmr-operator"),
        )
        .answer(serde_json::json!({"status": "Failure", "message": "stop here", "reason": "Conflict", "code": 409}))]);
        let valid = crate::validate::validate(&c, "dssmr:test").unwrap();
        let r = crate::build::build(&valid);
        // The mock answers 200 with a non-ConfigMap body, so the apply fails to decode: only
        // the request line matters here.
        let _ = timeout_after_1s(apply_objects(&ctx.client, "default", &r, PdbApi::V1)).await;
        timeout_after_1s(server)
            .await
            .expect("the apply request was made");
    }

    #[tokio::test]
    async fn kubernetes_1_20_gets_its_pdbs_as_policy_v1beta1() {
        let c = cluster("{partitions: 1, mode: ssmr}");
        let answer = cluster_json(&c);
        let action = play(c, vec![
            Step::new("GET", format!("{NS}/configmaps/demo-config"))
                .status(404)
                .answer(not_found()),
            Step::new("GET", format!("{APPS}/statefulsets?")).answer(stateful_sets(&[], 0)),
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
            Step::new("PATCH", format!("{STATUS}?"))
                .check(|b| {
                    assert_eq!(
                        condition(b, "Progressing"),
                        ("True".into(), "WaitingForReplicas".into())
                    );
                })
                .answer(answer),
        ]).await;
        assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    }

    /// The steps of a fresh DS-SMR cluster with 1 partition and a PodMonitor, up to the
    /// discovery of the PodMonitor API, answered with `served`.
    fn pod_monitor_steps(served: bool) -> Vec<Step> {
        let mut steps = vec![
            Step::new("GET", format!("{NS}/configmaps/demo-config"))
                .status(404)
                .answer(not_found()),
            Step::new("GET", format!("{APPS}/statefulsets?")).answer(stateful_sets(&[], 0)),
            Step::new("GET", "/apis/policy/v1").answer(policy_v1()),
        ];
        steps.extend(apply_steps(&["oracle", "p1"], |_| {}));
        let discovery = Step::new("GET", "/apis/monitoring.coreos.com/v1");
        steps.push(if served {
            discovery.answer(serde_json::json!({
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "monitoring.coreos.com/v1",
                "resources": [{"name": "podmonitors", "singularName": "", "namespaced": true,
                               "kind": "PodMonitor", "verbs": ["patch"]}],
            }))
        } else {
            discovery.status(404).answer(not_found())
        });
        steps
    }

    #[tokio::test]
    async fn a_pod_monitor_is_applied_where_the_prometheus_operator_runs() {
        let c = cluster("{partitions: 1, monitoring: {podMonitor: true}}");
        let mut steps = pod_monitor_steps(true);
        steps.push(
            Step::new(
                "PATCH",
                "/apis/monitoring.coreos.com/v1/namespaces/default/podmonitors/demo-replicas?",
            )
            .check(|b| {
                assert_eq!(b["kind"], "PodMonitor");
                assert_eq!(b["spec"]["podMetricsEndpoints"][0]["port"], "http");
            }),
        );
        steps.push(Step::new("PATCH", format!("{STATUS}?")).answer(cluster_json(&c)));
        play(c, steps).await;
    }

    #[tokio::test]
    async fn without_the_prometheus_operator_the_pod_monitor_is_skipped_with_an_event() {
        let c = cluster("{partitions: 1, monitoring: {podMonitor: true}}");
        let mut steps = pod_monitor_steps(false);
        steps.push(
            Step::new("POST", "/apis/events.k8s.io/v1/namespaces/default/events").check(|b| {
                assert_eq!(b["reason"], "MonitoringSkipped");
                assert_eq!(b["type"], "Warning");
            }),
        );
        steps.push(Step::new("PATCH", format!("{STATUS}?")).answer(cluster_json(&c)));
        play(c, steps).await;
    }
}
