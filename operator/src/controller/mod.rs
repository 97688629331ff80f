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
//! Scaling is planned by [`crate::scale`] from the deployed config (dereference), the
//! StatefulSets that exist and the oracle's view of the partitions (its admin API, see
//! [`crate::replicas`]): new partitions enter the config at once and are registered with the
//! oracle once every group runs that config; partitions scaled away are drained through the
//! oracle and deleted only once it reports them empty. The status carries per group its
//! readiness and leader, and the cluster's throughput and move rate, computed from the
//! replicas' `/metrics` between two reconciles.

use crate::build::{self, KubernetesResources};
use crate::crd::{DSSMRCluster, DSSMRClusterStatus, GroupStatus};
use crate::metrics::{Metrics, ReconcileResult};
use crate::replicas::{self, Counters, OracleReport, ReplicaAccess};
use crate::scale::{self, ScalePlan};
use crate::validate::{self, Deployed, ValidatedCluster};
use dssmr::config::ClusterConfig;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    /// How replicas (admin API, `/metrics`) are reached.
    pub replicas: ReplicaAccess,
    /// The counters of each cluster (`namespace/name`) at its last scrape.
    counters: Mutex<HashMap<String, Counters>>,
    /// The PodDisruptionBudget API the server serves (discovered once).
    pdb_api: tokio::sync::OnceCell<PdbApi>,
    /// Whether the server serves PodMonitors (discovered once).
    pod_monitors: tokio::sync::OnceCell<bool>,
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
    Controller::new(api::<DSSMRCluster>(client, ns), watcher::Config::default())
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
    let deployed = dereference(&ctx.client, &c, &ns).await?;
    let mut valid = match validate::validate_against(&c, &ctx.default_image, &deployed) {
        Ok(v) => v,
        Err(problems) => {
            let message = problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            publish(
                &ctx,
                &c,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                &message,
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
    let running = list_stateful_sets(&ctx.client, &valid).await?;
    let oracle = ask_oracle(&ctx, &valid, &deployed, &running).await;
    let running_partitions: Vec<u32> = running
        .iter()
        .filter_map(|s| build::partition_of(&valid, s.metadata.name.as_deref()?))
        .collect();
    let plan = scale::plan(
        valid.spec.partitions,
        deployed.partitions(),
        &running_partitions,
        oracle.report.as_ref().map(|r| &r.view),
    );
    valid.partitions = plan.partitions;
    let resources = build::build(&valid);
    let pdb_api = *ctx
        .pdb_api
        .get_or_init(|| PdbApi::discover(&ctx.client))
        .await;
    apply(&ctx.client, &ns, &resources, pdb_api).await?;
    if let Some(monitor) = &resources.pod_monitor {
        let served = *ctx
            .pod_monitors
            .get_or_init(|| pod_monitors_served(&ctx.client))
            .await;
        if served {
            apply_pod_monitor(&ctx.client, &ns, monitor).await?;
        } else {
            let note = "spec.monitoring.podMonitor: the API server serves no \
                        monitoring.coreos.com/v1 PodMonitor (Prometheus Operator); skipped";
            publish(
                &ctx,
                &c,
                EventType::Warning,
                "MonitoringSkipped",
                "Apply",
                note,
            )
            .await;
        }
    }
    for p in &plan.delete {
        delete_partition(&ctx.client, &valid, *p, pdb_api).await?;
        let note = format!("p{p} holds no variable and is out of the config: deleted");
        scale_event(&ctx, &c, "DeletedPartition", &note).await;
    }
    let rollout = Rollout::of(&valid, &resources, &running);
    let mut oracle_errors = oracle.error.clone().into_iter().collect::<Vec<_>>();
    if let Some(o) = &oracle.connection {
        let mut steps = vec![(OracleStep::Drain, &plan.drain)];
        if rollout.complete {
            steps.push((OracleStep::Add, &plan.add));
        }
        for (step, partitions) in steps {
            for p in partitions {
                match step.run(o, *p).await {
                    Ok(_) => scale_event(&ctx, &c, step.reason(), &step.note(*p)).await,
                    Err(e) => oracle_errors.push(format!("{} p{p}: {e}", step.name())),
                }
            }
        }
    }
    let rates = if rollout.all_ready {
        rates(&ctx, &valid, &resources).await
    } else {
        None
    };
    let status = status(&c, &plan, &rollout, &oracle, &oracle_errors, rates);
    let settled = rollout.complete && plan.add.is_empty() && plan.leaving.is_empty();
    update_status(&ctx.client, &c, &ns, status).await?;
    let action = if settled {
        Action::requeue(Duration::from_secs(15))
    } else {
        Action::requeue(Duration::from_secs(5))
    };
    Ok((action, ReconcileResult::Ok))
}

/// An oracle command of a scale plan.
#[derive(Clone, Copy, Debug)]
enum OracleStep {
    /// `AddPartition`.
    Add,
    /// `DrainPartition`.
    Drain,
}

impl OracleStep {
    async fn run(
        self,
        o: &replicas::Oracle,
        p: u32,
    ) -> Result<scale::Placement, replicas::ReplicaError> {
        match self {
            OracleStep::Add => o.add(p).await,
            OracleStep::Drain => o.drain(p).await,
        }
    }

    fn name(self) -> &'static str {
        match self {
            OracleStep::Add => "add",
            OracleStep::Drain => "drain",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            OracleStep::Add => "AddedPartition",
            OracleStep::Drain => "DrainingPartition",
        }
    }

    fn note(self, p: u32) -> String {
        match self {
            OracleStep::Add => format!("p{p}: the oracle places new variables there too"),
            OracleStep::Drain => {
                format!("p{p}: no new variables go there; moving its variables out")
            }
        }
    }
}

/// Publishes a Normal Event of scaling about `c`.
async fn scale_event(ctx: &Context, c: &DSSMRCluster, reason: &str, note: &str) {
    publish(ctx, c, EventType::Normal, reason, "Scale", note).await
}

/// Publishes an Event about `c` (best effort: a lost Event loses no state).
async fn publish(
    ctx: &Context,
    c: &DSSMRCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &c.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an event");
    }
}

/// dereference: the cluster config the replicas of `c` run now (its ConfigMap).
pub async fn dereference(
    client: &Client,
    c: &DSSMRCluster,
    ns: &str,
) -> Result<Deployed, ReconcileError> {
    let name = format!("{}-config", c.name_any());
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let map = maps
        .get_opt(&name)
        .await
        .map_err(|source| ReconcileError::Api {
            what: format!("get ConfigMap {ns}/{name}"),
            source,
        })?;
    let text = map
        .and_then(|m| m.data)
        .and_then(|mut d| d.remove("cluster.yaml"));
    let config = match text.map(|t| ClusterConfig::from_yaml(&t)) {
        Some(Ok(config)) => Some(config),
        Some(Err(e)) => {
            // The operator wrote it; whatever changed it is overwritten by this reconcile.
            tracing::warn!(error = %e, "ConfigMap {ns}/{name} holds no valid cluster config");
            None
        }
        None => None,
    };
    Ok(Deployed { config })
}

/// The StatefulSets of cluster `v` that exist.
async fn list_stateful_sets(
    client: &Client,
    v: &ValidatedCluster,
) -> Result<Vec<StatefulSet>, ReconcileError> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &v.namespace);
    let selector = format!("app.kubernetes.io/instance={}", v.name);
    let listed = sets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| ReconcileError::Api {
            what: format!("list StatefulSets {selector}"),
            source,
        })?;
    Ok(listed.items)
}

/// What the oracle said, or why it could not be asked.
#[derive(Default)]
pub struct OracleAnswer {
    /// Its admin API, when the cluster has an oracle that runs.
    connection: Option<replicas::Oracle>,
    /// Its status.
    report: Option<OracleReport>,
    /// Why it could not be asked although it runs.
    error: Option<String>,
}

/// Asks the oracle of a running DS-SMR cluster (one whose oracle StatefulSet has ready
/// replicas) for its view of the partitions.
async fn ask_oracle(
    ctx: &Context,
    v: &ValidatedCluster,
    deployed: &Deployed,
    running: &[StatefulSet],
) -> OracleAnswer {
    let Some(config) = deployed.config.as_ref().filter(|c| c.oracle.is_some()) else {
        return OracleAnswer::default();
    };
    if matches!(ctx.replicas, ReplicaAccess::Off) {
        return OracleAnswer::default();
    }
    let oracle_name = format!("{}-oracle", v.name);
    let oracle_runs = running.iter().any(|s| {
        s.metadata.name.as_deref() == Some(oracle_name.as_str())
            && s.status
                .as_ref()
                .and_then(|st| st.ready_replicas)
                .unwrap_or(0)
                > 0
    });
    if !oracle_runs {
        return OracleAnswer::default();
    }
    let connection = match replicas::Oracle::new(config, &ctx.replicas) {
        Ok(c) => c,
        Err(e) => {
            return OracleAnswer {
                error: Some(e.to_string()),
                ..Default::default()
            }
        }
    };
    match connection.status().await {
        Ok(report) => OracleAnswer {
            connection: Some(connection),
            report: Some(report),
            error: None,
        },
        Err(e) => OracleAnswer {
            connection: None,
            report: None,
            error: Some(e.to_string()),
        },
    }
}

/// Deletes the StatefulSet, Service, PodDisruptionBudget and volume claims of partition `p`.
async fn delete_partition(
    client: &Client,
    v: &ValidatedCluster,
    p: u32,
    pdb_api: PdbApi,
) -> Result<(), ReconcileError> {
    use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
    let ns = v.namespace.as_str();
    let name = format!("{}-p{p}", v.name);
    let failed = |what: String| move |source| ReconcileError::Api { what, source };
    let gone = |r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    };
    let params = DeleteParams::background();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    gone(sets.delete(&name, &params).await.map(|_| ()))
        .map_err(failed(format!("delete StatefulSet {ns}/{name}")))?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    gone(services.delete(&name, &params).await.map(|_| ()))
        .map_err(failed(format!("delete Service {ns}/{name}")))?;
    let version = match pdb_api {
        PdbApi::V1 => Some("v1"),
        PdbApi::V1beta1 => Some("v1beta1"),
        PdbApi::Unavailable => None,
    };
    if let Some(version) = version {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("policy", version, "PodDisruptionBudget"),
            "poddisruptionbudgets",
        );
        let pdbs: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        gone(pdbs.delete(&name, &params).await.map(|_| ()))
            .map_err(failed(format!("delete PodDisruptionBudget {ns}/{name}")))?;
    }
    if v.spec.storage.is_some() {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        for r in 0..v.spec.replicas_per_partition {
            let claim = format!("data-{name}-{r}");
            gone(claims.delete(&claim, &params).await.map(|_| ()))
                .map_err(failed(format!("delete PersistentVolumeClaim {ns}/{claim}")))?;
        }
    }
    Ok(())
}

/// How far the StatefulSets of a cluster are from running the objects just built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rollout {
    /// Per group: (label, ready replicas, wanted replicas).
    pub groups: Vec<(String, u32, u32)>,
    /// Every group has all its replicas ready.
    pub all_ready: bool,
    /// Every group runs the current pod template (config) on every replica, all ready.
    pub complete: bool,
    /// Groups still rolling the current template out.
    pub rolling: Vec<String>,
}

impl Rollout {
    /// Compares `running` (as listed before the apply) with what `built` asks for.
    pub fn of(v: &ValidatedCluster, built: &KubernetesResources, running: &[StatefulSet]) -> Self {
        let mut r = Rollout {
            all_ready: true,
            complete: true,
            ..Default::default()
        };
        for (g, want) in build::groups(v).iter().zip(&built.stateful_sets) {
            let name = build::group_object_name(v, g);
            let found = running
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name.as_str()));
            let status = found.and_then(|s| s.status.clone()).unwrap_or_default();
            let ready = status.ready_replicas.unwrap_or(0).max(0) as u32;
            let hash = |s: &StatefulSet| {
                s.spec
                    .as_ref()
                    .and_then(|sp| sp.template.metadata.as_ref())
                    .and_then(|m| m.annotations.as_ref())
                    .and_then(|a| a.get(build::CONFIG_HASH_ANNOTATION).cloned())
            };
            let current_template = found.is_some_and(|s| hash(s) == hash(want));
            let observed = found.is_some_and(|s| {
                status.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0)
            });
            let updated = status.updated_replicas.unwrap_or(0).max(0) as u32 >= g.replicas
                && (status.current_revision.is_none()
                    || status.current_revision == status.update_revision);
            if ready < g.replicas {
                r.all_ready = false;
            }
            if !(current_template && observed && updated && ready >= g.replicas) {
                r.complete = false;
                if found.is_some() {
                    r.rolling.push(g.label.clone());
                }
            }
            r.groups.push((g.label.clone(), ready, g.replicas));
        }
        r
    }
}

/// Throughput and move rate of `v` since the previous reconcile that scraped it.
async fn rates(
    ctx: &Context,
    v: &ValidatedCluster,
    built: &KubernetesResources,
) -> Option<(f64, f64)> {
    let config = built
        .config_map
        .data
        .as_ref()
        .and_then(|d| d.get("cluster.yaml"))
        .and_then(|t| ClusterConfig::from_yaml(t).ok())?;
    let key = format!("{}/{}", v.namespace, v.name);
    let now = match replicas::scrape(&config, &ctx.replicas).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, cluster = %key, "scrape failed");
            return None;
        }
    };
    let before = ctx.counters.lock().expect("counters lock").insert(key, now);
    let rates = now.rates_since(&before?)?;
    ctx.metrics
        .set_rates(&v.namespace, v.name.as_str(), rates.0, rates.1);
    Some(rates)
}

/// The status of `c` after this reconcile.
fn status(
    c: &DSSMRCluster,
    plan: &ScalePlan,
    rollout: &Rollout,
    oracle: &OracleAnswer,
    oracle_errors: &[String],
    rates: Option<(f64, f64)>,
) -> DSSMRClusterStatus {
    let leaders = oracle.report.as_ref().map(|r| &r.leaders);
    let groups: Vec<GroupStatus> = rollout
        .groups
        .iter()
        .map(|(label, ready, replicas)| GroupStatus {
            name: label.clone(),
            ready_replicas: *ready,
            replicas: *replicas,
            leader: leaders.and_then(|l| l.get(label)).map(|addr| pod_of(addr)),
        })
        .collect();
    let wanted = groups.len();
    let ready_groups = groups
        .iter()
        .filter(|g| g.ready_replicas >= g.replicas)
        .count();
    let ready_msg = format!("{ready_groups}/{wanted} groups ready");
    let list = |ps: &[u32]| {
        ps.iter()
            .map(|p| format!("p{p}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (progressing, reason, message) = if !plan.leaving.is_empty() {
        let left = plan
            .leaving
            .iter()
            .map(|(p, n)| match n {
                Some(n) => format!("p{p}: {n} variables left"),
                None => format!("p{p}: waiting for the oracle"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        (
            true,
            "Draining",
            format!("scaling in, draining before deletion: {left}"),
        )
    } else if !plan.delete.is_empty() {
        (
            true,
            "DeletingPartitions",
            format!("deleting {}", list(&plan.delete)),
        )
    } else if !rollout.complete {
        let reason = if rollout.all_ready {
            "RollingOut"
        } else {
            "WaitingForReplicas"
        };
        let rolling = if rollout.rolling.is_empty() {
            String::new()
        } else {
            format!(
                "; rolling out the current config: {}",
                rollout.rolling.join(", ")
            )
        };
        (true, reason, format!("{ready_msg}{rolling}"))
    } else if !plan.add.is_empty() {
        (
            true,
            "AddingPartitions",
            format!("registering {} with the oracle", list(&plan.add)),
        )
    } else {
        (false, "Stable", ready_msg.clone())
    };
    let leaderless = oracle
        .report
        .as_ref()
        .map(|r| r.leaderless.clone())
        .unwrap_or_default();
    let (degraded, d_reason, d_message) = if !leaderless.is_empty() {
        (
            true,
            "NoLeader",
            format!("groups without a leader: {}", leaderless.join(", ")),
        )
    } else if !oracle_errors.is_empty() {
        (true, "OracleUnreachable", oracle_errors.join("; "))
    } else {
        (
            false,
            "AsSpecified",
            "every group is as specified".to_string(),
        )
    };
    DSSMRClusterStatus {
        observed_generation: c.metadata.generation,
        conditions: conditions(
            c,
            [
                (
                    "Ready",
                    ready_groups == wanted,
                    if ready_groups == wanted {
                        "AllGroupsReady"
                    } else {
                        "GroupsNotReady"
                    },
                    ready_msg.as_str(),
                ),
                ("Progressing", progressing, reason, message.as_str()),
                ("Degraded", degraded, d_reason, d_message.as_str()),
            ],
        ),
        ready: Some(format!("{ready_groups}/{wanted}")),
        groups,
        throughput: rates.map(|r| round2(r.0)),
        move_rate: rates.map(|r| round2(r.1)),
    }
}

/// `x` rounded to two decimals (status values are for people).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The pod name in a member address (`<pod>.<service>.<ns>.svc:7000` → `<pod>`).
fn pod_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.split('.').next().unwrap_or(host).to_string()
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
) -> Result<(), ReconcileError> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let name = monitor["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"),
        "podmonitors",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(monitor),
    )
    .await
    .map_err(|source| ReconcileError::Api {
        what: format!("apply PodMonitor {ns}/{name}"),
        source,
    })?;
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
        cluster, cluster_json, condition, config_map, deleted, mock, mock_with, not_found, play,
        rolled_out, stateful_sets, timeout_after_1s, Step,
    };

    const NS: &str = "/api/v1/namespaces/default";
    const APPS: &str = "/apis/apps/v1/namespaces/default";
    const PDBS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
    const STATUS: &str = "/apis/dssmr.io/v1alpha1/namespaces/default/dssmrclusters/demo/status";

    /// Discovery answer of a server with policy/v1 PDBs.
    fn policy_v1() -> serde_json::Value {
        serde_json::json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "policy/v1",
            "resources": [{"name": "poddisruptionbudgets", "singularName": "", "namespaced": true,
                           "kind": "PodDisruptionBudget", "verbs": ["patch"]}],
        })
    }

    /// The steps of applying `groups` (ConfigMap, Services, StatefulSets, PDBs), the config
    /// checked by `check_config`.
    fn apply_steps(
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
                })
                .answer(answer),
        );
        let action = play(c, steps).await;
        assert_eq!(action, Action::requeue(Duration::from_secs(15)));
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

    #[tokio::test]
    async fn a_spec_that_makes_no_sense_is_reported_and_nothing_is_applied() {
        let c = cluster("{partitions: 2, replicasPerPartition: 4}");
        let answer = cluster_json(&c);
        let action = play(
            c,
            vec![
                Step::new("GET", format!("{NS}/configmaps/demo-config"))
                    .status(404)
                    .answer(not_found()),
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
            ],
        )
        .await;
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn an_ssmr_cluster_cannot_change_its_partitions() {
        let c = cluster("{partitions: 3, mode: ssmr}");
        let running = cluster("{partitions: 2, mode: ssmr}");
        let answer = cluster_json(&c);
        play(
            c,
            vec![
                Step::new("GET", format!("{NS}/configmaps/demo-config"))
                    .answer(config_map(&running, 2, 2)),
                Step::new("POST", "/apis/events.k8s.io/v1/namespaces/default/events").check(|b| {
                    assert_eq!(b["reason"], "InvalidSpec");
                    assert!(b["note"].as_str().unwrap().contains("spec.partitions"));
                }),
                Step::new("PATCH", format!("{STATUS}?"))
                    .check(|b| {
                        assert_eq!(
                            condition(b, "Degraded"),
                            ("True".into(), "InvalidSpec".into())
                        )
                    })
                    .answer(answer),
            ],
        )
        .await;
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

    #[tokio::test]
    async fn without_the_oracle_a_partition_out_of_the_spec_is_kept() {
        let c = cluster("{partitions: 1}");
        let answer = cluster_json(&c);
        let mut steps = vec![
            Step::new("GET", format!("{NS}/configmaps/demo-config")).answer(config_map(&c, 1, 1)),
            Step::new("GET", format!("{APPS}/statefulsets?"))
                .answer(stateful_sets(&["demo-oracle", "demo-p1", "demo-p2"], 1)),
            Step::new("GET", "/apis/policy/v1").answer(policy_v1()),
        ];
        steps.extend(apply_steps(&["oracle", "p1"], |config| {
            assert_eq!(config.partitions.len(), 1);
            assert_eq!(config.initial_partitions, Some(1));
        }));
        steps.push(
            Step::new("PATCH", format!("{STATUS}?"))
                .check(|b| {
                    assert_eq!(condition(b, "Ready").0, "False");
                    assert_eq!(
                        condition(b, "Progressing"),
                        ("True".into(), "Draining".into())
                    );
                    assert_eq!(b["status"]["ready"], "0/2");
                })
                .answer(answer),
        );
        let action = play(c, steps).await;
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

    /// Scaling through a real oracle: a DS-SMR kv cluster (oracle + 3 partitions × 3
    /// replicas on 127.0.0.1) created with 2 partitions and grown to 3 in its config. The
    /// controller registers p3 with the oracle once every group runs that config; then the
    /// spec goes back to 2, and the controller drains p3 (keeping it in the config) and,
    /// once the oracle reports it empty, takes it out of the config and deletes its objects.
    /// Every value survives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scaling_out_and_in_goes_through_the_oracle() {
        use dssmr::app::kv::{kv_var, Kv, KvCommand, KvReply};
        use dssmr::client::proxy::ProxyStats;
        use dssmr::client::{Connections, LocationCache, Mode, Proxy, ProxyConfig};
        use dssmr::cluster::{ClusterOptions, LocalCluster};
        use dssmr::ids::{GroupId, ORACLE};
        use dssmr::oracle::Oracle as OracleApp;
        use dssmr::partition::Partition;

        dssmr::telemetry::init_for_tests();
        let known: Vec<GroupId> = (1..=3).map(GroupId).collect();
        let local = LocalCluster::start(ClusterOptions {
            groups: 3,
            oracle: true,
            apps: Some(Arc::new(move |g| -> Box<dyn dssmr::app::Application> {
                if g == ORACLE {
                    Box::new(OracleApp::with_initial(
                        Arc::new(Kv),
                        known.clone(),
                        vec![GroupId(1), GroupId(2)],
                    ))
                } else {
                    Box::new(Partition::new(g, Arc::new(Kv)))
                }
            })),
            ..Default::default()
        })
        .await
        .expect("cluster starts");
        // Pod DNS names of the objects the operator builds → the local replicas.
        let mut map = HashMap::new();
        for (g, addrs) in &local.topology().groups {
            let set = if *g == ORACLE {
                "demo-oracle".to_string()
            } else {
                format!("demo-p{}", g.0)
            };
            for (r, a) in addrs.iter().enumerate() {
                map.insert(format!("{set}-{r}.{set}.default.svc:7000"), a.clone());
            }
        }
        let access = ReplicaAccess::Map(map);
        let three = cluster("{partitions: 3, app: kv}");
        let two = cluster("{partitions: 2, app: kv}");
        let grown = Deployed {
            config: Some(
                ClusterConfig::from_yaml(
                    config_map(&three, 3, 2)["data"]["cluster.yaml"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap(),
            ),
        };
        let oracle = replicas::Oracle::new(grown.config.as_ref().unwrap(), &access).unwrap();
        let state = |p: u32| {
            let oracle = &oracle;
            async move { oracle.status().await.expect("status").view.get(&p).copied() }
        };
        assert_eq!(state(3).await, Some(scale::Placement::Inactive(0)));

        let event = |reason: &'static str| {
            Step::new("POST", "/apis/events.k8s.io/v1/namespaces/default/events")
                .check(move |b| assert_eq!(b["reason"], reason))
        };
        let status_step = |c: &DSSMRCluster, reason: &'static str| {
            Step::new("PATCH", format!("{STATUS}?"))
                .check(move |b| assert_eq!(condition(b, "Progressing").1, reason, "{b}"))
                .answer(cluster_json(c))
        };
        // 1. Scale out: the config has p3, every group runs it: p3 is added.
        let mut steps = vec![
            Step::new("GET", format!("{NS}/configmaps/demo-config"))
                .answer(config_map(&three, 3, 2)),
            Step::new("GET", format!("{APPS}/statefulsets?"))
                .answer(rolled_out(&three, &grown, 3, 3)),
            Step::new("GET", "/apis/policy/v1").answer(policy_v1()),
        ];
        steps.extend(apply_steps(&["oracle", "p1", "p2", "p3"], |config| {
            assert_eq!(config.partitions.len(), 3);
            assert_eq!(config.initial_partitions, Some(2), "fixed at creation");
        }));
        steps.push(event("AddedPartition"));
        steps.push(status_step(&three, "AddingPartitions"));
        // 2. Scale in, first pass: p3 holds variables, so it stays and is drained.
        steps.extend([
            Step::new("GET", format!("{NS}/configmaps/demo-config"))
                .answer(config_map(&three, 3, 2)),
            Step::new("GET", format!("{APPS}/statefulsets?"))
                .answer(rolled_out(&two, &grown, 3, 3)),
        ]);
        steps.extend(apply_steps(&["oracle", "p1", "p2", "p3"], |config| {
            assert_eq!(config.partitions.len(), 3, "kept until drained");
        }));
        steps.push(event("DrainingPartition"));
        steps.push(status_step(&two, "Draining"));
        // 3. Scale in, once p3 is empty: out of the config, its objects deleted.
        steps.extend([
            Step::new("GET", format!("{NS}/configmaps/demo-config"))
                .answer(config_map(&three, 3, 2)),
            Step::new("GET", format!("{APPS}/statefulsets?"))
                .answer(rolled_out(&two, &grown, 3, 3)),
        ]);
        steps.extend(apply_steps(&["oracle", "p1", "p2"], |config| {
            assert_eq!(config.partitions.len(), 2);
            assert_eq!(config.initial_partitions, Some(2));
        }));
        steps.extend([
            Step::new("DELETE", format!("{APPS}/statefulsets/demo-p3")).answer(deleted()),
            Step::new("DELETE", format!("{NS}/services/demo-p3")).answer(deleted()),
            Step::new("DELETE", format!("{PDBS}/demo-p3")).answer(deleted()),
            event("DeletedPartition"),
            status_step(&two, "DeletingPartitions"),
        ]);
        let (ctx, server) = mock_with(steps, access);
        let within = |f| tokio::time::timeout(Duration::from_secs(20), f);

        within(reconcile(three.clone(), ctx.clone()))
            .await
            .expect("in time")
            .expect("reconcile 1");
        assert_eq!(state(3).await, Some(scale::Placement::Active));

        // Variables, some of them placed in p3 now.
        let conns = Arc::new(Connections::new(local.topology()).unwrap());
        let proxy = Proxy::new(
            Arc::new(Kv),
            ProxyConfig {
                mode: Mode::Dssmr,
                ..ProxyConfig::default()
            },
            conns,
            Arc::new(LocationCache::default()),
            Arc::new(ProxyStats::default()),
        )
        .unwrap();
        const KEYS: i64 = 30;
        for i in 0..KEYS {
            proxy
                .create(kv_var(&format!("k{i}")), &i)
                .await
                .expect("create");
        }
        let held = oracle.status().await.unwrap();
        assert!(held.variables.get(&3).is_some_and(|n| *n > 0), "{held:?}");

        within(reconcile(two.clone(), ctx.clone()))
            .await
            .expect("in time")
            .expect("reconcile 2");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while state(3).await != Some(scale::Placement::Drained) {
            assert!(
                std::time::Instant::now() < deadline,
                "p3 not drained in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        within(reconcile(two.clone(), ctx.clone()))
            .await
            .expect("in time")
            .expect("reconcile 3");
        timeout_after_1s(server).await.expect("every step played");

        // Every value is still there, none in p3.
        for i in 0..KEYS {
            let got = proxy
                .access(&KvCommand::Get {
                    key: format!("k{i}"),
                })
                .await
                .expect("get");
            assert_eq!(got, KvReply::Value(i), "k{i}");
        }
        let after = oracle.status().await.unwrap();
        assert_eq!(after.view.get(&3), Some(&scale::Placement::Drained));
        local.shutdown().await;
    }
}
