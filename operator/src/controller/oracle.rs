//! oracle: what the controller asks of a DS-SMR cluster's oracle through its admin API
//! ([`crate::replicas::Oracle`]), in two places of the pipeline.
//!
//! - [`ask`], before the plan: the oracle's view of the partitions and the groups' leaders,
//!   as an [`OracleContact`]. Replica access only, and it never fails: an oracle that cannot
//!   be asked is [`OracleContact::Unreachable`], which the plan reads as "no partition is
//!   known to be empty" and the status reports as Degraded.
//! - [`perform`], after the apply: the oracle's part of the [`ScalePlan`]. It takes the
//!   partitions that are out of the config and empty out of the oracle's topology
//!   (`RemovePartition`, so replicas and clients stop using them), asks every replica of
//!   the cluster what it still owes or waits for (`Describe`), and deletes the objects of
//!   those no group needs any more (kube client, see [`delete_partition`]); the others are
//!   [`Performed::waiting`] and asked again next reconcile. It drains the partitions the
//!   spec scaled away and registers the new ones (replica access), each with a Normal
//!   Event. A failed oracle command is a [`CommandFailure`] for the status (retried next
//!   reconcile); a failed delete is an [`OracleError`].
//!
//! Must not delete a partition the plan did not find empty or that a group still needs
//! ([`scale::still_needed`]), nor register one before every
//! group runs the config that has it (the [`Rollout`](super::Rollout) is complete), as
//! [`crate::scale`] lays down.

use super::apply::{Applied, PdbApi};
use super::{events, Context};
use crate::build;
use crate::crd::DSSMRCluster;
use crate::replicas::{self, OracleReport, ReplicaAccess, ReplicaError};
use crate::scale::{self, OracleView, Placement, ScalePlan};
use crate::validate::{Deployed, ValidatedCluster};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use kube::Client;
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// Why the oracle step failed. Oracle commands that fail are no such error: they are
/// [`CommandFailure`]s, reported in the status and retried.
#[derive(Debug, Error)]
pub enum OracleError {
    /// An object of a partition out of the config and empty could not be deleted.
    #[error("delete {kind} {object}: {source}")]
    Delete {
        /// Its kind.
        kind: &'static str,
        /// `namespace/name`.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What the controller knows from the oracle in this reconcile.
pub enum OracleContact {
    /// Not asked: the deployed config has no oracle (a new or an S-SMR cluster), replicas
    /// are not reached ([`ReplicaAccess::Off`]), or no oracle replica is ready.
    Unasked,
    /// The oracle runs but could not be asked.
    Unreachable(ReplicaError),
    /// The oracle answered.
    Answered(OracleAnswer),
}

/// The oracle's answer, with the connection that got it (for the commands of the plan).
pub struct OracleAnswer {
    /// Its admin API.
    pub connection: replicas::Oracle,
    /// Its status.
    pub report: OracleReport,
}

impl OracleContact {
    /// The oracle's status, when it answered.
    pub fn report(&self) -> Option<&OracleReport> {
        match self {
            OracleContact::Answered(a) => Some(&a.report),
            _ => None,
        }
    }

    /// Where each partition stands, when the oracle answered.
    pub fn view(&self) -> Option<&OracleView> {
        self.report().map(|r| &r.view)
    }

    /// Why the oracle could not be asked although it runs.
    pub fn unreachable(&self) -> Option<&ReplicaError> {
        match self {
            OracleContact::Unreachable(e) => Some(e),
            _ => None,
        }
    }
}

/// Asks the oracle of a running DS-SMR cluster (one whose oracle StatefulSet, in `running`,
/// has ready replicas) for its view of the partitions.
pub async fn ask(
    access: &ReplicaAccess,
    v: &ValidatedCluster,
    deployed: &Deployed,
    running: &[StatefulSet],
) -> OracleContact {
    let Some(config) = deployed.config.as_ref().filter(|c| c.oracle.is_some()) else {
        return OracleContact::Unasked;
    };
    if matches!(access, ReplicaAccess::Off) {
        return OracleContact::Unasked;
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
        return OracleContact::Unasked;
    }
    let connection = match replicas::Oracle::new(config, access) {
        Ok(c) => c,
        Err(e) => return OracleContact::Unreachable(e),
    };
    match connection.status().await {
        Ok(report) => OracleContact::Answered(OracleAnswer { connection, report }),
        Err(e) => OracleContact::Unreachable(e),
    }
}

/// An oracle command of a scale plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OracleStep {
    /// `AddPartition`.
    Add,
    /// `DrainPartition`.
    Drain,
    /// `RemovePartition`.
    Remove,
}

impl OracleStep {
    async fn run(self, o: &replicas::Oracle, p: u32) -> Result<Placement, ReplicaError> {
        match self {
            OracleStep::Add => o.add(p).await,
            OracleStep::Drain => o.drain(p).await,
            OracleStep::Remove => o.remove(p).await,
        }
    }

    fn name(self) -> &'static str {
        match self {
            OracleStep::Add => "add",
            OracleStep::Drain => "drain",
            OracleStep::Remove => "remove",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            OracleStep::Add => "AddedPartition",
            OracleStep::Drain => "DrainingPartition",
            OracleStep::Remove => "RemovedPartition",
        }
    }

    fn note(self, p: u32) -> String {
        match self {
            OracleStep::Add => format!("p{p}: the oracle places new variables there too"),
            OracleStep::Drain => {
                format!("p{p}: no new variables go there; moving its variables out")
            }
            OracleStep::Remove => format!("p{p}: out of the topology replicas and clients use"),
        }
    }
}

/// An oracle command that failed (reported in the Degraded condition; the next reconcile
/// plans it again).
#[derive(Debug)]
pub struct CommandFailure {
    /// The command.
    pub step: OracleStep,
    /// Its partition.
    pub partition: u32,
    /// What went wrong.
    pub error: ReplicaError,
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} p{}: {}",
            self.step.name(),
            self.partition,
            self.error
        )
    }
}

/// What [`perform`] left undone, for the status.
#[derive(Debug, Default)]
pub struct Performed {
    /// Oracle commands that failed.
    pub failures: Vec<CommandFailure>,
    /// Partitions out of the oracle's topology whose objects are kept because some group
    /// still needs them, with why ([`scale::still_needed`]).
    pub waiting: BTreeMap<u32, Vec<String>>,
}

/// How often, and how far apart, the groups are asked again for a leader that applied what
/// its group had committed at the first ask (an apply lag is milliseconds; a group without
/// a leader makes the reconcile wait for the next one instead).
const CATCH_UP_ASKS: usize = 10;
const CATCH_UP_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Performs the oracle's part of `plan` for cluster `c`: takes the empty partitions out of
/// the oracle's topology and deletes the objects of those no group needs any more, then
/// drains, then (once the rollout of `applied` is complete) registers. Without an answer
/// from the oracle nothing is done.
pub async fn perform(
    ctx: &Context,
    c: &DSSMRCluster,
    v: &ValidatedCluster,
    plan: &ScalePlan,
    applied: &Applied,
    oracle: &OracleContact,
) -> Result<Performed, OracleError> {
    let mut performed = Performed::default();
    let OracleContact::Answered(answer) = oracle else {
        return Ok(performed);
    };
    let mut removed = Vec::new();
    for p in &plan.delete {
        // Out of the oracle's topology first: replicas and clients stop using it.
        match answer.connection.remove(*p).await {
            Ok(_) => removed.push(*p),
            Err(error) => performed.failures.push(CommandFailure {
                step: OracleStep::Remove,
                partition: *p,
                error,
            }),
        }
    }
    if !removed.is_empty() {
        // Then gone only once nothing in the cluster names it any more.
        let asked = groups_to_ask(v, plan);
        let mut reports = answer.connection.describe(&asked).await;
        // Each group's state must hold what it had committed by now: ask again (briefly)
        // until its leader applied that far, and while what the removal itself sent (the
        // oracle's decision to the removed partition) is being acknowledged.
        let marks = scale::commit_marks(&reports);
        for _ in 0..CATCH_UP_ASKS {
            let settled = reports.iter().all(|r| r.caught_up(&marks))
                && removed
                    .iter()
                    .all(|p| scale::still_needed(*p, &reports, &marks).is_empty());
            if settled {
                break;
            }
            tokio::time::sleep(CATCH_UP_PAUSE).await;
            reports = answer.connection.describe(&asked).await;
        }
        for p in removed {
            let needed = scale::still_needed(p, &reports, &marks);
            if !needed.is_empty() {
                tracing::debug!(partition = p, ?needed, "kept: still needed");
                performed.waiting.insert(p, needed);
                continue;
            }
            delete_partition(&ctx.client, v, p, applied.pdb_api).await?;
            let note = format!(
                "p{p} holds no variable, is out of the config and no group needs it: deleted"
            );
            events::scale(ctx, c, "DeletedPartition", &note).await;
        }
    }
    let mut steps = vec![(OracleStep::Drain, &plan.drain)];
    if applied.rollout.complete {
        steps.push((OracleStep::Add, &plan.add));
    }
    for (step, partitions) in steps {
        for p in partitions {
            match step.run(&answer.connection, *p).await {
                Ok(_) => events::scale(ctx, c, step.reason(), &step.note(*p)).await,
                Err(error) => performed.failures.push(CommandFailure {
                    step,
                    partition: *p,
                    error,
                }),
            }
        }
    }
    Ok(performed)
}

/// Every group of `v` and every partition `plan` deletes, with their member addresses as
/// the config names them (group 0: the oracle).
fn groups_to_ask(v: &ValidatedCluster, plan: &ScalePlan) -> Vec<(u32, Vec<String>)> {
    let mut partitions: Vec<u32> = v.partitions.iter().chain(&plan.delete).copied().collect();
    partitions.sort_unstable();
    partitions.dedup();
    let all = ValidatedCluster {
        partitions,
        ..v.clone()
    };
    build::groups(&all)
        .iter()
        .map(|g| (g.partition().unwrap_or(0), build::member_addresses(&all, g)))
        .collect()
}

/// Deletes the StatefulSet, Service, PodDisruptionBudget and volume claims of partition `p`
/// (an object already gone is no error).
pub async fn delete_partition(
    client: &Client,
    v: &ValidatedCluster,
    p: u32,
    pdb_api: PdbApi,
) -> Result<(), OracleError> {
    let ns = v.namespace.as_str();
    let name = format!("{}-p{p}", v.name);
    let failed = |kind: &'static str, name: &str| {
        let object = format!("{ns}/{name}");
        move |source| OracleError::Delete {
            kind,
            object,
            source,
        }
    };
    let gone = |r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    };
    let params = DeleteParams::background();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    gone(sets.delete(&name, &params).await.map(|_| ())).map_err(failed("StatefulSet", &name))?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    gone(services.delete(&name, &params).await.map(|_| ())).map_err(failed("Service", &name))?;
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
            .map_err(failed("PodDisruptionBudget", &name))?;
    }
    if v.spec.storage.is_some() {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        for r in 0..v.spec.replicas_per_partition {
            let claim = format!("data-{name}-{r}");
            gone(claims.delete(&claim, &params).await.map(|_| ()))
                .map_err(failed("PersistentVolumeClaim", &claim))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::controller::reconcile;
    use crate::crd::DSSMRCluster;
    use crate::fixtures::{
        apply_steps, cluster, cluster_json, condition, config_map, deleted, mock_with, policy_v1,
        rolled_out, timeout_after_1s, Step, APPS, NS, PDBS, STATUS,
    };
    use crate::replicas::{self, ReplicaAccess};
    use crate::scale;
    use crate::validate::Deployed;
    use dssmr_api::config::ClusterConfig;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    /// Scaling through a real oracle: a DS-SMR kv cluster (oracle + 3 partitions × 3
    /// replicas on 127.0.0.1) created with 2 partitions and grown to 3 in its config. The
    /// controller registers p3 with the oracle once every group runs that config; then the
    /// spec goes back to 2, and the controller drains p3 (keeping it in the config) and,
    /// once the oracle reports it empty, takes it out of the config and deletes its objects.
    /// Every value survives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scaling_out_and_in_goes_through_the_oracle() {
        use dssmr_engine::app::kv::{kv_var, Kv, KvCommand, KvReply};
        use dssmr_engine::client::proxy::ProxyStats;
        use dssmr_engine::client::{Connections, LocationCache, Mode, Proxy, ProxyConfig};
        use dssmr_engine::cluster::{ClusterOptions, LocalCluster};
        use dssmr_engine::ids::{GroupId, ORACLE};
        use dssmr_engine::oracle::Oracle as OracleApp;
        use dssmr_engine::partition::Partition;

        dssmr_engine::telemetry::init_for_tests();
        let known: Vec<GroupId> = (1..=3).map(GroupId).collect();
        // On disk, as with the volumes the operator claims: p3's replicas are stopped and
        // started again below, and a partition whose every replica lost its state could not
        // take part in its own removal.
        let data = tempfile::tempdir().expect("tempdir");
        // p4 runs from the start, idle, known to no config: the pods of the partition the
        // operator makes when the cluster scales out again (step 5).
        let mut local = LocalCluster::start(ClusterOptions {
            groups: 4,
            oracle: true,
            data_root: Some(data.path().to_path_buf()),
            apps: Some(Arc::new(
                move |g| -> Box<dyn dssmr_engine::app::Application> {
                    if g == ORACLE {
                        Box::new(OracleApp::with_initial(
                            Arc::new(Kv),
                            known.clone(),
                            vec![GroupId(1), GroupId(2)],
                        ))
                    } else {
                        Box::new(Partition::new(g, Arc::new(Kv), &[GroupId(1), GroupId(2)]))
                    }
                },
            )),
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
            storage: None,
        };
        let oracle = replicas::Oracle::new(grown.config.as_ref().unwrap(), &access).unwrap();
        let state = |p: u32| {
            let oracle = &oracle;
            async move { oracle.status().await.expect("status").view.get(p) }
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
        // 3. Scale in, once p3 is empty but its replicas are down: out of the config, but not
        //    removed (every partition takes part in the removal, and p3 has no leader), and
        //    its objects stay.
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
        steps.push(
            Step::new("PATCH", format!("{STATUS}?"))
                .check(|b| {
                    assert_eq!(condition(b, "Progressing").1, "DeletingPartitions", "{b}");
                    let message = b["status"]["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
                        .and_then(|c| c["message"].as_str())
                        .unwrap_or_default();
                    assert_eq!(message, "deleting p3", "{b}");
                    let degraded = b["status"]["conditions"]
                        .as_array()
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "Degraded"))
                        .and_then(|c| c["message"].as_str())
                        .unwrap_or_default();
                    assert!(
                        degraded.contains("remove p3") && degraded.contains("p3 has no leader"),
                        "the removal waits for p3's replicas: {b}"
                    );
                })
                .answer(cluster_json(&two)),
        );
        // 4. p3 back: nothing needs it, its objects are deleted.
        let shrunk = Deployed {
            config: Some(
                ClusterConfig::from_yaml(
                    config_map(&two, 2, 2)["data"]["cluster.yaml"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap(),
            ),
            storage: None,
        };
        steps.extend([
            Step::new("GET", format!("{NS}/configmaps/demo-config")).answer(config_map(&two, 2, 2)),
            Step::new("GET", format!("{APPS}/statefulsets?"))
                .answer(rolled_out(&two, &shrunk, 3, 3)),
        ]);
        steps.extend(apply_steps(&["oracle", "p1", "p2"], |config| {
            assert_eq!(config.partitions.len(), 2);
        }));
        steps.extend([
            Step::new("DELETE", format!("{APPS}/statefulsets/demo-p3")).answer(deleted()),
            Step::new("DELETE", format!("{NS}/services/demo-p3")).answer(deleted()),
            Step::new("DELETE", format!("{PDBS}/demo-p3")).answer(deleted()),
            event("DeletedPartition"),
            status_step(&two, "DeletingPartitions"),
        ]);
        // 5. Scale out again, 2 -> 3: p3's number is never used again; the new partition is
        //    p4 (the oracle's next number), listed with its number in the config, and added
        //    once its StatefulSet runs.
        steps.extend([
            Step::new("GET", format!("{NS}/configmaps/demo-config")).answer(config_map(&two, 2, 2)),
            Step::new("GET", format!("{APPS}/statefulsets?"))
                .answer(rolled_out(&two, &shrunk, 2, 3)),
        ]);
        steps.extend(apply_steps(&["oracle", "p1", "p2", "p4"], |config| {
            assert_eq!(
                config.partition_numbers(),
                [GroupId(1), GroupId(2), GroupId(4)]
            );
            assert_eq!(config.partitions[2].partition, Some(4));
        }));
        steps.push(status_step(&three, "WaitingForReplicas"));
        let regrown = Deployed {
            config: Some(
                ClusterConfig::from_yaml(
                    config_map(&three, [1, 2, 4], 2)["data"]["cluster.yaml"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap(),
            ),
            storage: None,
        };
        steps.extend([
            Step::new("GET", format!("{NS}/configmaps/demo-config")).answer(config_map(
                &three,
                [1, 2, 4],
                2,
            )),
            Step::new("GET", format!("{APPS}/statefulsets?")).answer(rolled_out(
                &three,
                &regrown,
                [1, 2, 4],
                3,
            )),
        ]);
        steps.extend(apply_steps(&["oracle", "p1", "p2", "p4"], |config| {
            assert_eq!(config.partitions.len(), 3);
        }));
        // The recorder counts a second AddedPartition Event into the first one.
        steps.push(Step::new(
            "PATCH",
            "/apis/events.k8s.io/v1/namespaces/default/events/",
        ));
        steps.push(status_step(&three, "AddingPartitions"));
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
        for r in 0..3 {
            local.crash(GroupId(3), r).await;
        }
        within(reconcile(two.clone(), ctx.clone()))
            .await
            .expect("in time")
            .expect("reconcile 3");
        for r in 0..3 {
            local.restart(GroupId(3), r).await.expect("p3 restarts");
        }
        local
            .wait_for_leaders(Duration::from_secs(20))
            .await
            .expect("p3 leads again");
        // Its leader holds everything it committed (else it cannot tell what p3 still owes).
        let leader = local.leader_of(GroupId(3)).expect("p3 leads");
        let raft = local
            .node(GroupId(3), leader)
            .expect("running")
            .raft()
            .clone();
        let last = raft.metrics().borrow().last_log_index;
        raft.wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(last, "p3's leader applied its log")
            .await
            .expect("p3 caught up");
        within(reconcile(two.clone(), ctx.clone()))
            .await
            .expect("in time")
            .expect("reconcile 4");
        for pass in ["reconcile 5a", "reconcile 5b"] {
            within(reconcile(three.clone(), ctx.clone()))
                .await
                .expect("in time")
                .expect(pass);
        }
        timeout_after_1s(server).await.expect("every step played");
        assert_eq!(state(4).await, Some(scale::Placement::Active));
        // New variables go to p4 too (p1, p2 and p4 take them at random).
        for i in KEYS..3 * KEYS {
            proxy
                .create(kv_var(&format!("k{i}")), &i)
                .await
                .expect("create after p4 was added");
        }
        let held = oracle.status().await.unwrap();
        assert!(held.variables.get(&4).is_some_and(|n| *n > 0), "{held:?}");

        // Every value is still there, none in p3.
        for i in 0..3 * KEYS {
            let got = proxy
                .access(&KvCommand::Get {
                    key: format!("k{i}"),
                })
                .await
                .expect("get");
            assert_eq!(got, KvReply::Value(i), "k{i}");
        }
        // Removed from the cluster before its objects went, for good: its number is never
        // handed out again.
        let after = oracle.status().await.unwrap();
        assert_eq!(after.view.get(3), Some(scale::Placement::Removed));
        local.shutdown().await;
    }
}
