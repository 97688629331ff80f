//! update_status: the status of a cluster after a reconcile (per group its readiness and
//! leader, the Ready, Progressing and Degraded [`Condition`]s, the throughput and move rate)
//! written to the status subresource.
//!
//! [`status`] and [`paused`] are pure: they only read what the other steps found. [`rates`]
//! scrapes the replicas' `/metrics` (replica access) and keeps the counters between two
//! reconciles in the [`Context`]; [`patch`] takes the kube client (a merge patch of the
//! status only), and so does [`report_invalid`] (an Event, then the patch). Must not write
//! the spec or any other object, nor decide anything the status only reports.

use super::condition::{self, Condition, ConditionType, Reason};
use super::oracle::{CommandFailure, OracleContact, Performed};
use super::validate::ValidateError;
use super::{events, Applied, Context, Rollout};
use crate::crd::{DSSMRCluster, DSSMRClusterStatus, GroupStatus};
use crate::replicas;
use crate::scale::ScalePlan;
use crate::validate::ValidatedCluster;
use dssmr_api::config::ClusterConfig;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;
use thiserror::Error;

/// Why the status could not be written.
#[derive(Debug, Error)]
pub enum UpdateStatusError {
    /// The patch of the status subresource failed.
    #[error("update status of {object}: {source}")]
    Patch {
        /// `namespace/name` of the cluster.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Writes `status` into the status subresource of `c`, unless `c` already has that status
/// (nothing to write: an idle cluster's reconcile makes no write at all).
pub async fn patch(
    client: &Client,
    c: &DSSMRCluster,
    ns: &str,
    status: DSSMRClusterStatus,
) -> Result<(), UpdateStatusError> {
    if c.status.as_ref() == Some(&status) {
        tracing::debug!("status unchanged; not written");
        return Ok(());
    }
    let name = c.name_any();
    let api: Api<DSSMRCluster> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| UpdateStatusError::Patch {
            object: format!("{ns}/{name}"),
            source,
        })?;
    Ok(())
}

/// The status of a paused `c`: its last one, Progressing and Degraded saying it is paused,
/// and Ready as it was (pausing changes nothing that runs: a ready cluster stays ready and
/// `kubectl wait --for=condition=Ready` is not disturbed). A cluster paused before it ever
/// had a status is not ready, because it was paused.
pub fn paused(c: &DSSMRCluster) -> DSSMRClusterStatus {
    use ConditionType::*;
    let why = "spec.paused is true";
    let ready = c
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|o| o.type_ == Ready.as_str()))
        .cloned();
    let mut wanted = vec![
        Condition::new(Progressing, false, Reason::Paused, why),
        Condition::new(Degraded, false, Reason::Paused, why),
    ];
    if ready.is_none() {
        let message = "spec.paused is true: nothing is deployed until it is resumed";
        wanted.insert(0, Condition::new(Ready, false, Reason::Paused, message));
    }
    let mut conditions = condition::to_k8s(c, wanted);
    if let Some(ready) = ready {
        conditions.insert(0, ready);
    }
    DSSMRClusterStatus {
        observed_generation: c.metadata.generation,
        conditions,
        ..c.status.clone().unwrap_or_default()
    }
}

/// Reports that the spec of `c` makes no sense: a Warning Event, then the conditions (the
/// rest of its last status kept).
pub async fn report_invalid(
    ctx: &Context,
    c: &DSSMRCluster,
    ns: &str,
    invalid: &ValidateError,
) -> Result<(), UpdateStatusError> {
    use ConditionType::*;
    let message = invalid.to_string();
    let (type_, reason) = (EventType::Warning, "InvalidSpec");
    events::publish(ctx, c, type_, reason, "Validate", &message).await;
    let status = DSSMRClusterStatus {
        observed_generation: c.metadata.generation,
        conditions: condition::to_k8s(
            c,
            [
                Condition::new(Ready, false, Reason::InvalidSpec, message.as_str()),
                Condition::new(
                    Progressing,
                    false,
                    Reason::InvalidSpec,
                    "nothing is applied until the spec is fixed",
                ),
                Condition::new(Degraded, true, Reason::InvalidSpec, message.as_str()),
            ],
        ),
        ..c.status.clone().unwrap_or_default()
    };
    patch(&ctx.client, c, ns, status).await
}

/// Throughput and move rate of `v` since the previous reconcile that scraped it; `None`
/// until every replica is ready, and at the first scrape.
pub async fn rates(ctx: &Context, v: &ValidatedCluster, applied: &Applied) -> Option<(f64, f64)> {
    if !applied.rollout.all_ready {
        return None;
    }
    let config = applied
        .resources
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

/// The status of `c` (validated as `v`) after this reconcile.
pub fn status(
    c: &DSSMRCluster,
    v: &ValidatedCluster,
    plan: &ScalePlan,
    rollout: &Rollout,
    oracle: &OracleContact,
    performed: &Performed,
    rates: Option<(f64, f64)>,
) -> DSSMRClusterStatus {
    let leaders = oracle.report().map(|r| &r.leaders);
    let no_notes = BTreeMap::new();
    let notes = oracle.report().map_or(&no_notes, |r| &r.notes);
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
    let all_ready = ready_groups == wanted;
    let ready = Condition::new(
        ConditionType::Ready,
        all_ready,
        if all_ready {
            Reason::AllGroupsReady
        } else {
            Reason::GroupsNotReady
        },
        ready_msg.as_str(),
    );
    DSSMRClusterStatus {
        observed_generation: c.metadata.generation,
        conditions: condition::to_k8s(
            c,
            [
                ready,
                progressing(plan, rollout, &performed.waiting, notes, &ready_msg),
                degraded(oracle, &performed.failures),
            ],
        ),
        ready: Some(format!("{ready_groups}/{wanted}")),
        groups,
        throughput: rates.map(|r| round2(r.0)),
        move_rate: rates.map(|r| round2(r.1)),
        partitions: Some(plan.partitions.len() as u32),
        selector: Some(crate::build::partition_selector(v)),
        image: Some(v.image.clone()),
    }
}

/// Progressing: what the operator is doing, the first of draining, deleting (and what
/// the deletion `waiting` for), rolling out and adding partitions; `ready_msg` says how many
/// groups are ready.
fn progressing(
    plan: &ScalePlan,
    rollout: &Rollout,
    waiting: &BTreeMap<u32, Vec<String>>,
    notes: &BTreeMap<u32, String>,
    ready_msg: &str,
) -> Condition {
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
            .map(|(p, n)| {
                let left = match n {
                    Some(n) => format!("p{p}: {n} variables left"),
                    None => format!("p{p}: waiting for the oracle"),
                };
                match notes.get(p) {
                    Some(why) => format!("{left} (not progressing: {why})"),
                    None => left,
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        (
            true,
            Reason::Draining,
            format!("scaling in, draining before deletion: {left}"),
        )
    } else if !plan.delete.is_empty() {
        let why: Vec<String> = waiting.values().flatten().cloned().collect();
        let message = if why.is_empty() {
            format!("deleting {}", list(&plan.delete))
        } else {
            format!(
                "deleting {} once no group needs it: {}",
                list(&plan.delete),
                why.join("; ")
            )
        };
        (true, Reason::DeletingPartitions, message)
    } else if !rollout.complete {
        let reason = if rollout.all_ready {
            Reason::RollingOut
        } else {
            Reason::WaitingForReplicas
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
            Reason::AddingPartitions,
            format!("registering {} with the oracle", list(&plan.add)),
        )
    } else {
        (false, Reason::Stable, ready_msg.to_string())
    };
    Condition::new(ConditionType::Progressing, progressing, reason, message)
}

/// Degraded: groups without a leader first, then the oracle unreachable or a command of it
/// that failed.
fn degraded(oracle: &OracleContact, failures: &[CommandFailure]) -> Condition {
    let leaderless = oracle
        .report()
        .map(|r| r.leaderless.clone())
        .unwrap_or_default();
    let errors: Vec<String> = oracle
        .unreachable()
        .map(|e| e.to_string())
        .into_iter()
        .chain(failures.iter().map(|f| f.to_string()))
        .collect();
    let (degraded, reason, message) = if !leaderless.is_empty() {
        (
            true,
            Reason::NoLeader,
            format!("groups without a leader: {}", leaderless.join(", ")),
        )
    } else if !errors.is_empty() {
        (true, Reason::OracleUnreachable, errors.join("; "))
    } else {
        (
            false,
            Reason::AsSpecified,
            "every group is as specified".to_string(),
        )
    };
    Condition::new(ConditionType::Degraded, degraded, reason, message)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::condition::ConditionStatus;
    use crate::controller::oracle::OracleStep;
    use crate::replicas::ReplicaError;

    #[test]
    fn the_oracle_unreachable_and_its_failed_commands_degrade_the_cluster() {
        let fine = degraded(&OracleContact::Unasked, &[]);
        assert_eq!(
            (fine.status, fine.reason),
            (ConditionStatus::False, Reason::AsSpecified)
        );
        let failed = CommandFailure {
            step: OracleStep::Drain,
            partition: 3,
            error: ReplicaError::Timeout("DrainPartition".into()),
        };
        let down = degraded(
            &OracleContact::Unreachable(ReplicaError::Admin("Status: refused".into())),
            &[failed],
        );
        assert_eq!(
            (down.status, down.reason),
            (ConditionStatus::True, Reason::OracleUnreachable)
        );
        assert_eq!(
            down.message,
            "admin API: Status: refused; drain p3: DrainPartition: no answer within 3s"
        );
    }

    #[test]
    fn pausing_leaves_ready_as_it_was() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8s, Time};
        let mut c = (*crate::fixtures::cluster("{partitions: 2, paused: true}")).clone();
        // Never deployed: not ready, because paused.
        let fresh = paused(&c);
        let ready = |s: &DSSMRClusterStatus| {
            s.conditions
                .iter()
                .find(|k| k.type_ == "Ready")
                .cloned()
                .expect("a Ready condition")
        };
        assert_eq!(
            (ready(&fresh).status.as_str(), ready(&fresh).reason.as_str()),
            ("False", "Paused")
        );
        // Ready before the pause: still ready, with the same reason, message and time.
        let since = Time("2026-01-01T00:00:00Z".parse().unwrap());
        let was = K8s {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "AllReplicasReady".into(),
            message: "3/3 groups ready".into(),
            last_transition_time: since,
            observed_generation: Some(1),
        };
        c.status = Some(DSSMRClusterStatus {
            conditions: vec![was.clone()],
            ..Default::default()
        });
        let status = paused(&c);
        assert_eq!(ready(&status), was);
        let kinds: Vec<(&str, &str)> = status
            .conditions
            .iter()
            .map(|k| (k.type_.as_str(), k.reason.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("Ready", "AllReplicasReady"),
                ("Progressing", "Paused"),
                ("Degraded", "Paused")
            ]
        );
    }

    #[test]
    fn progressing_names_the_first_thing_left_to_do() {
        let done = Rollout {
            complete: true,
            all_ready: true,
            ..Default::default()
        };
        let plan = ScalePlan {
            partitions: vec![1, 2, 3],
            add: vec![3],
            leaving: vec![(4, Some(7)), (5, None)],
            ..Default::default()
        };
        let none = BTreeMap::new();
        let no_notes = BTreeMap::new();
        let p = progressing(&plan, &done, &none, &no_notes, "3/3 groups ready");
        assert_eq!(p.reason, Reason::Draining);
        assert_eq!(
            p.message,
            "scaling in, draining before deletion: p4: 7 variables left; p5: waiting for the oracle"
        );
        // A drain the oracle says cannot progress says why.
        let stuck = BTreeMap::from([(4, "no active partition can take its variables".into())]);
        let p = progressing(&plan, &done, &none, &stuck, "3/3 groups ready");
        assert_eq!(
            p.message,
            "scaling in, draining before deletion: p4: 7 variables left (not progressing: no \
             active partition can take its variables); p5: waiting for the oracle"
        );
        let adding = ScalePlan {
            leaving: vec![],
            ..plan
        };
        let p = progressing(&adding, &done, &none, &no_notes, "3/3 groups ready");
        assert_eq!(
            (p.reason, p.message.as_str()),
            (Reason::AddingPartitions, "registering p3 with the oracle")
        );
        let stable = progressing(
            &ScalePlan::default(),
            &done,
            &none,
            &no_notes,
            "3/3 groups ready",
        );
        let deleting = ScalePlan {
            delete: vec![3],
            ..ScalePlan::default()
        };
        let waiting = BTreeMap::from([(3, vec!["p1-2 waits for p3".to_string()])]);
        let p = progressing(&deleting, &done, &waiting, &no_notes, "3/3 groups ready");
        assert_eq!(
            (p.reason, p.message.as_str()),
            (
                Reason::DeletingPartitions,
                "deleting p3 once no group needs it: p1-2 waits for p3"
            )
        );
        assert_eq!(stable.status, ConditionStatus::False);
        assert_eq!(stable.reason, Reason::Stable);
    }

    #[test]
    fn a_leader_is_named_by_its_pod() {
        assert_eq!(pod_of("demo-p1-2.demo-p1.default.svc:7000"), "demo-p1-2");
        assert_eq!(round2(1.23456), 1.23);
    }
}
