//! condition: the conditions of a `DSSMRCluster`'s status (Ready, Progressing, Degraded) as
//! typed values, and their one conversion to the Kubernetes `Condition` ([`to_k8s`]).
//!
//! Owns the condition types, their reasons and the rule that a condition keeps its
//! `lastTransitionTime` while its status does not change. It reads the clock for a new
//! transition and nothing else; it must not decide which condition holds (that is
//! [`super::update_status`]) nor write anything.

use crate::crd::DSSMRCluster;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as K8sCondition, Time};

/// Which condition (its `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// Every group has all its replicas ready.
    Ready,
    /// The operator is bringing the cluster to its spec (a rollout, scaling).
    Progressing,
    /// Something keeps the cluster from being as specified.
    Degraded,
}

impl ConditionType {
    /// The `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
        }
    }
}

/// Whether a condition holds (its `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not.
    False,
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

impl ConditionStatus {
    /// The `status` field.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
        }
    }
}

/// Why a condition has its status (the `reason` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `spec.paused` is true: no changes are made.
    Paused,
    /// The spec makes no sense: nothing is applied until it is fixed.
    InvalidSpec,
    /// Every group has all its replicas ready.
    AllGroupsReady,
    /// Some group has replicas that are not ready.
    GroupsNotReady,
    /// Partitions scaled away are drained through the oracle before they are deleted.
    Draining,
    /// The objects of drained partitions are deleted.
    DeletingPartitions,
    /// Every replica is ready, but some group still rolls the current config out.
    RollingOut,
    /// Some replicas are not ready yet.
    WaitingForReplicas,
    /// New partitions are registered with the oracle.
    AddingPartitions,
    /// Nothing is left to do.
    Stable,
    /// Some group has members that answer but no leader.
    NoLeader,
    /// The oracle could not be asked, or one of its commands failed.
    OracleUnreachable,
    /// Every group is as specified.
    AsSpecified,
}

impl Reason {
    /// The `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Paused => "Paused",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::AllGroupsReady => "AllGroupsReady",
            Reason::GroupsNotReady => "GroupsNotReady",
            Reason::Draining => "Draining",
            Reason::DeletingPartitions => "DeletingPartitions",
            Reason::RollingOut => "RollingOut",
            Reason::WaitingForReplicas => "WaitingForReplicas",
            Reason::AddingPartitions => "AddingPartitions",
            Reason::Stable => "Stable",
            Reason::NoLeader => "NoLeader",
            Reason::OracleUnreachable => "OracleUnreachable",
            Reason::AsSpecified => "AsSpecified",
        }
    }
}

/// One condition of a cluster's status, before it gets its transition time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// Which condition.
    pub type_: ConditionType,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// Why.
    pub reason: Reason,
    /// For people.
    pub message: String,
}

impl Condition {
    /// Condition `type_`, holding or not as `status` says.
    pub fn new(
        type_: ConditionType,
        status: impl Into<ConditionStatus>,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_,
            status: status.into(),
            reason,
            message: message.into(),
        }
    }
}

/// `wanted` as the Kubernetes conditions of `c`, keeping the transition time of those whose
/// status did not change.
pub fn to_k8s(c: &DSSMRCluster, wanted: impl IntoIterator<Item = Condition>) -> Vec<K8sCondition> {
    let old = c
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    wanted
        .into_iter()
        .map(|w| {
            let (type_, status) = (w.type_.as_str(), w.status.as_str());
            let since = old
                .iter()
                .find(|o| o.type_ == type_ && o.status == status)
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            K8sCondition {
                type_: type_.into(),
                status: status.into(),
                reason: w.reason.as_str().into(),
                message: w.message,
                last_transition_time: since,
                observed_generation: c.metadata.generation,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DSSMRClusterStatus;
    use crate::fixtures::cluster;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let then = Time("2020-01-01T00:00:00Z".parse().unwrap());
        let mut c = (*cluster("{partitions: 1}")).clone();
        let old = |type_: &str, status: &str| K8sCondition {
            type_: type_.into(),
            status: status.into(),
            reason: "Before".into(),
            message: String::new(),
            last_transition_time: then.clone(),
            observed_generation: Some(1),
        };
        c.status = Some(DSSMRClusterStatus {
            conditions: vec![old("Ready", "True"), old("Degraded", "False")],
            ..Default::default()
        });
        let got = to_k8s(
            &c,
            [
                Condition::new(ConditionType::Ready, true, Reason::AllGroupsReady, "1/1"),
                Condition::new(ConditionType::Degraded, true, Reason::NoLeader, "p1"),
            ],
        );
        assert_eq!(got[0].type_, "Ready");
        assert_eq!(got[0].status, "True");
        assert_eq!(got[0].reason, "AllGroupsReady");
        assert_eq!(got[0].message, "1/1");
        assert_eq!(got[0].last_transition_time, then, "unchanged: kept");
        assert_eq!(got[0].observed_generation, Some(2));
        assert_eq!(got[1].status, "True");
        assert_ne!(got[1].last_transition_time, then, "changed: now");
    }
}
