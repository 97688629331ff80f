//! The controller: every `DSSMRCluster` is reconciled by the pipeline
//! `dereference -> validate -> plan -> build -> apply -> oracle -> update_status`, one
//! submodule per step, driven by kube-runtime's `Controller` (which also watches the objects
//! the clusters own, so a deleted StatefulSet is put back).
//!
//! What starts a reconcile: a change of a cluster's spec (its `metadata.generation`), labels
//! or annotations ([`triggers`]: never its status, so the operator's own status write does
//! not start the next pass), any change of an object it owns (StatefulSets, Services,
//! ConfigMaps it labelled), and the periodic resync each reconcile asks for (every 15 s for
//! a settled cluster, 5 s while something is left to do, for the rates and the oracle's
//! view). A status equal to the one stored is not written again.
//!
//! What each step may touch:
//!
//! | step | module | touches |
//! |---|---|---|
//! | dereference | [`dereference`] | the kube `Client`: reads the ConfigMap (the deployed config) and lists the cluster's StatefulSets |
//! | validate | [`validate`] | nothing: pure ([`crate::validate`]) |
//! | plan | [`plan`] | nothing: pure ([`crate::scale`]); the oracle's view it plans from is asked just before by [`oracle::ask`], through the replica access |
//! | build | [`build`] | nothing: pure ([`crate::build`]), with the [`Rollout`] |
//! | apply | [`apply`] | the kube `Client`: discovery, server-side apply, an Event |
//! | oracle | [`oracle`] | the replica access (the oracle's admin API) and the kube `Client` (deletes the objects of an empty partition out of the config, Events) |
//! | update status | [`update_status`] | the replica access (`/metrics`, for the rates) and the kube `Client` (the status subresource, Events) |
//!
//! [`events`] publishes Events (best effort) and [`condition`] is the typed status condition;
//! both serve the steps. This driver owns the order of the steps, the [`Context`] they share
//! and the [`ReconcileError`] that wraps theirs; it makes no API call itself.
//!
//! Objects are applied with server-side apply (field manager [`MANAGER`], forced: the
//! operator owns these fields). A spec that makes no sense is reported in the status
//! conditions and an Event, and nothing is applied or deleted. With `paused: true` only the
//! status is written.
//!
//! Scaling is planned by [`crate::scale`] from the deployed config (dereference), the
//! StatefulSets that exist and the oracle's view of the partitions (its admin API, see
//! [`crate::replicas`]): new partitions enter the config at once and are registered with the
//! oracle once every group runs that config; partitions scaled away are drained through the
//! oracle and deleted only once it reports them empty. The status carries per group its
//! readiness and leader, and the cluster's throughput and move rate, computed from the
//! replicas' `/metrics` between two reconciles.

pub mod apply;
pub mod build;
pub mod condition;
pub mod dereference;
pub mod events;
pub mod oracle;
pub mod plan;
pub mod update_status;
pub mod validate;

pub use apply::{Applied, ApplyError, PdbApi};
pub use build::{Prepared, Rollout};
pub use condition::{Condition, ConditionStatus, ConditionType, Reason};
pub use dereference::DereferenceError;
pub use oracle::{OracleAnswer, OracleContact, OracleError};
pub use update_status::UpdateStatusError;
pub use validate::ValidateError;

use crate::crd::DSSMRCluster;
use crate::metrics::{Metrics, ReconcileResult};
use crate::replicas::{Counters, ReplicaAccess};
use futures::Stream;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{predicates, reflector, watcher, Predicate, PredicateConfig, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// Field manager of every apply.
pub const MANAGER: &str = "dssmr-operator";

/// Why a reconcile failed (it is retried): the step that failed, with its error as source.
#[derive(Debug, Error)]
pub enum ReconcileError {
    /// The object has no namespace (cannot happen for a namespaced resource).
    #[error("DSSMRCluster without namespace or name")]
    Unnamed,
    /// The dereference step could not read what the cluster runs.
    #[error("dereference: {source}")]
    Dereference {
        /// What could not be read.
        #[from]
        source: DereferenceError,
    },
    /// The apply step could not apply an object.
    #[error("apply: {source}")]
    Apply {
        /// What could not be applied.
        #[from]
        source: ApplyError,
    },
    /// The oracle step could not delete the objects of a drained partition.
    #[error("oracle: {source}")]
    Oracle {
        /// What could not be deleted.
        #[from]
        source: OracleError,
    },
    /// The status could not be written.
    #[error("update_status: {source}")]
    UpdateStatus {
        /// Why the patch failed.
        #[from]
        source: UpdateStatusError,
    },
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
    /// How replicas (admin API, `/metrics`) are reached.
    pub replicas: ReplicaAccess,
    /// The counters of each cluster (`namespace/name`) at its last scrape.
    counters: Mutex<HashMap<String, Counters>>,
    /// The PodDisruptionBudget API the server serves (discovered once).
    pdb_api: tokio::sync::OnceCell<PdbApi>,
    /// Whether the server serves PodMonitors (discovered once).
    pod_monitors: tokio::sync::OnceCell<bool>,
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
            replicas: ReplicaAccess::Dns,
            counters: Mutex::new(HashMap::new()),
            pdb_api: tokio::sync::OnceCell::new(),
            pod_monitors: tokio::sync::OnceCell::new(),
        }
    }

    /// The same context reaching replicas through `access`.
    pub fn with_replica_access(mut self, access: ReplicaAccess) -> Self {
        self.replicas = access;
        self
    }
}

/// Runs the controller until the process is stopped: over every namespace, or only over
/// `namespace` (namespace-scoped RBAC).
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    use futures::StreamExt;
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let client = &ctx.client;
    tracing::info!(
        namespace = ns.unwrap_or("(all)"),
        "reconciling DSSMRClusters"
    );
    // Only the objects the operator made (its label), not every StatefulSet of the cluster.
    let owned = || watcher::Config::default().labels("app.kubernetes.io/managed-by=dssmr-operator");
    let (reader, writer) = reflector::store();
    let clusters = watcher(api::<DSSMRCluster>(client, ns), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(triggers(clusters), reader)
        .owns(api::<StatefulSet>(client, ns), owned())
        .owns(api::<Service>(client, ns), owned())
        .owns(api::<ConfigMap>(client, ns), owned())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::warn!(error = %e, "reconcile failed");
            }
        })
        .await;
}

/// The clusters of `applied` (a watch of `DSSMRCluster`s, every version the API server
/// sends) whose spec, labels or annotations changed since the last one passed on, and each
/// cluster the first time it is seen. A version that differs only in its status (the
/// operator's own status write, or `resourceVersion` and `managedFields` alone) is dropped:
/// reconciling on it would scrape every replica and write the status again, one pass after
/// another. The reflector feeding the controller's store sits before this filter, so a
/// reconcile still reads the latest version.
pub fn triggers<S>(applied: S) -> impl Stream<Item = Result<DSSMRCluster, watcher::Error>>
where
    S: Stream<Item = Result<DSSMRCluster, watcher::Error>>,
{
    let changed = predicates::generation::<DSSMRCluster>
        .combine(predicates::labels)
        .combine(predicates::annotations);
    applied.predicate_filter(changed, PredicateConfig::default())
}

/// Retries a failed reconcile after a pause.
pub fn error_policy(_c: Arc<DSSMRCluster>, e: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "reconcile error; retrying in 5 s");
    Action::requeue(Duration::from_secs(5))
}

/// One pass over one cluster, timed and counted.
#[tracing::instrument(skip_all, fields(
    namespace = c.metadata.namespace.as_deref().unwrap_or(""),
    name = c.metadata.name.as_deref().unwrap_or(""),
))]
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

/// The steps, in order; each step's module says what it touches.
async fn reconcile_once(
    c: Arc<DSSMRCluster>,
    ctx: Arc<Context>,
) -> Result<(Action, ReconcileResult), ReconcileError> {
    let ns = c.namespace().ok_or(ReconcileError::Unnamed)?;
    if c.spec.paused {
        update_status::patch(&ctx.client, &c, &ns, update_status::paused(&c)).await?;
        return Ok((Action::await_change(), ReconcileResult::Paused));
    }
    // dereference: the config the replicas run now (the cluster's ConfigMap).
    let deployed = dereference::deployed(&ctx.client, &c, &ns).await?;
    // validate: the spec against that config; one that makes no sense is reported (an Event,
    // the conditions) and nothing is applied or deleted.
    let mut valid = match validate::validate(&c, &ctx.default_image, &deployed) {
        Ok(valid) => valid,
        Err(invalid) => {
            update_status::report_invalid(&ctx, &c, &ns, &invalid).await?;
            return Ok((Action::await_change(), ReconcileResult::Invalid));
        }
    };
    // plan: from what runs (the StatefulSets that exist, the oracle's view) to the
    // partitions of the spec.
    let running = dereference::stateful_sets(&ctx.client, &valid).await?;
    let oracle = oracle::ask(&ctx.replicas, &valid, &deployed, &running).await;
    let plan = plan::plan(&valid, &deployed, &running, &oracle);
    tracing::debug!(?plan, "planned");
    valid.partitions = plan.partitions.clone();
    // build: the objects of the planned cluster, and how far the StatefulSets are from them.
    let prepared = build::build(&valid, &running);
    // apply: every object, server-side.
    let applied = apply::apply(&ctx, &c, &ns, prepared).await?;
    // oracle: delete what is drained, out of the config and needed by no group, drain what
    // the spec scaled away, register new partitions once every group runs the config.
    let performed = oracle::perform(&ctx, &c, &valid, &plan, &applied, &oracle).await?;
    // update status: groups, leaders, rates and conditions, into the status subresource.
    let rates = update_status::rates(&ctx, &valid, &applied).await;
    let status = update_status::status(
        &c,
        &valid,
        &plan,
        &applied.rollout,
        &oracle,
        &performed,
        rates,
    );
    update_status::patch(&ctx.client, &c, &ns, status).await?;
    let settled = applied.rollout.complete
        && plan.add.is_empty()
        && plan.leaving.is_empty()
        && plan.delete.is_empty();
    tracing::debug!(settled, "reconciled");
    let requeue = if settled { 15 } else { 5 };
    Ok((
        Action::requeue(Duration::from_secs(requeue)),
        ReconcileResult::Ok,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        apply_steps, cluster, cluster_json, condition, not_found, play, policy_v1, rolled_out,
        Step, APPS, NS, STATUS,
    };
    use crate::validate::Deployed;

    #[tokio::test]
    async fn a_valid_cluster_is_applied_server_side_and_reported_ready() {
        let c = cluster("{partitions: 1, mode: ssmr}");
        let answer = cluster_json(&c);
        let mut steps = vec![
            Step::new("GET", format!("{NS}/configmaps/demo-config"))
                .status(404)
                .answer(not_found()),
            Step::new("GET", format!("{APPS}/statefulsets?")).answer(rolled_out(
                &c,
                &Deployed::default(),
                1,
                3,
            )),
            Step::new("GET", "/apis/policy/v1").answer(policy_v1()),
        ];
        steps.extend(apply_steps(&["p1"], |config| {
            assert_eq!(config.partitions.len(), 1);
            assert_eq!(config.initial_partitions, None, "S-SMR has no oracle");
        }));
        steps[5] = Step::new("PATCH", format!("{APPS}/statefulsets/demo-p1?")).check(|b| {
            assert_eq!(b["spec"]["podManagementPolicy"], "Parallel");
            assert_eq!(
                b["spec"]["template"]["spec"]["containers"][0]["image"],
                "dssmr:test"
            );
        });
        steps.push(
            Step::new("PATCH", format!("{STATUS}?"))
                .check(|b| {
                    assert_eq!(
                        condition(b, "Ready"),
                        ("True".into(), "AllGroupsReady".into())
                    );
                    assert_eq!(
                        condition(b, "Progressing"),
                        ("False".into(), "Stable".into())
                    );
                    assert_eq!(condition(b, "Degraded").0, "False");
                    assert_eq!(b["status"]["ready"], "1/1");
                    assert_eq!(b["status"]["observedGeneration"], 2);
                    // The scale subresource's count and selector, and the image column.
                    assert_eq!(b["status"]["partitions"], 1);
                    assert_eq!(
                        b["status"]["selector"],
                        "app.kubernetes.io/name=dssmr,app.kubernetes.io/instance=demo,\
                         dssmr.io/group,dssmr.io/group notin (oracle)"
                    );
                    assert_eq!(b["status"]["image"], "dssmr:test");
                })
                .answer(answer),
        );
        let action = play(c, steps).await;
        assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    }

    /// A version of the fixtures' cluster: `generation`, `resource_version`, a label, an
    /// annotation, and a status with `throughput`.
    fn version(generation: i64, rv: &str, label: &str, note: &str, tput: f64) -> DSSMRCluster {
        let mut c = (*cluster("{partitions: 2}")).clone();
        c.metadata.generation = Some(generation);
        c.metadata.resource_version = Some(rv.into());
        c.metadata.labels = Some([("team".to_string(), label.to_string())].into());
        c.metadata.annotations = Some([("note".to_string(), note.to_string())].into());
        c.status = Some(crate::crd::DSSMRClusterStatus {
            throughput: Some(tput),
            ..Default::default()
        });
        c
    }

    #[tokio::test]
    async fn only_spec_and_metadata_changes_trigger_a_reconcile_never_a_status_write() {
        use futures::StreamExt;
        let mut recreated = version(1, "9", "a", "x", 0.0);
        recreated.metadata.uid = Some("uid-2".into());
        let watched = vec![
            version(1, "1", "a", "x", 0.0),  // first seen
            version(1, "2", "a", "x", 12.5), // the operator's status write
            version(1, "3", "a", "x", 13.0), // and the next one
            version(2, "4", "a", "x", 13.0), // spec changed
            version(2, "5", "b", "x", 13.0), // a label changed
            version(2, "6", "b", "y", 13.0), // an annotation changed
            version(2, "7", "b", "y", 0.0),  // status again
            recreated,                       // deleted and created again: another uid
        ];
        let passed: Vec<String> = tokio::time::timeout(
            Duration::from_secs(1),
            triggers(futures::stream::iter(watched.into_iter().map(Ok))).collect::<Vec<_>>(),
        )
        .await
        .expect("the filter ends with its input")
        .into_iter()
        .map(|c| c.expect("no error").resource_version().unwrap_or_default())
        .collect();
        assert_eq!(passed, ["1", "4", "5", "6", "9"]);
    }

    #[tokio::test]
    async fn an_unchanged_status_is_not_written_again() {
        let mut c = (*cluster("{partitions: 2, paused: true}")).clone();
        c.status = Some(update_status::paused(&c));
        // No request at all: the status the reconcile would write is the one stored.
        let action = play(Arc::new(c), vec![]).await;
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn a_paused_cluster_is_left_alone() {
        let c = cluster("{partitions: 2, paused: true}");
        let answer = cluster_json(&c);
        let action = play(
            c,
            vec![Step::new("PATCH", format!("{STATUS}?"))
                .check(|b| {
                    assert_eq!(
                        condition(b, "Progressing"),
                        ("False".into(), "Paused".into())
                    )
                })
                .answer(answer)],
        )
        .await;
        assert_eq!(action, Action::await_change());
    }
}
