//! The `DSSMRCluster` custom resource (`dssmr.io/v1alpha1`, short name `dssmr`).
//!
//! What the API server can check itself is in the schema (bounds, enums, required fields),
//! so a bad spec is rejected at `kubectl apply`; what needs several fields at once (an odd
//! replica count, a mode without oracle) is checked by [`crate::validate`] and reported in a
//! status condition. `dssmr-operator crd` writes the generated YAML into `crds/`.

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A DS-SMR (or S-SMR) cluster: an oracle group and `partitions` partition groups, each a
/// StatefulSet of `dssmr replica` pods.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dssmr.io",
    version = "v1alpha1",
    kind = "DSSMRCluster",
    plural = "dssmrclusters",
    shortname = "dssmr",
    namespaced,
    status = "DSSMRClusterStatus",
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".spec.partitions"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Throughput","type":"number","jsonPath":".status.throughput","description":"Commands executed per second"}"#,
    printcolumn = r#"{"name":"Moves","type":"number","jsonPath":".status.moveRate","description":"Variables moved per second"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DSSMRClusterSpec {
    /// Number of partitions (each a Raft group of `replicasPerPartition` replicas).
    #[schemars(range(min = 1, max = 64))]
    pub partitions: u32,
    /// Replicas per partition: 2f+1 tolerates f failures (an odd number).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 15))]
    pub replicas_per_partition: u32,
    /// Replicas of the oracle group (DS-SMR only; an odd number).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 15))]
    pub oracle_replicas: u32,
    /// dssmr (variables move to where commands run) or ssmr (static partitioning).
    #[serde(default)]
    pub mode: ClusterMode,
    /// The replicated application.
    #[serde(default)]
    pub app: AppName,
    /// Container image of the replicas (default: the operator's `--replica-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resources of each replica container (default: the hardware profile's, else none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Persistent storage of each replica (log and snapshots); none: an emptyDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Where the pods of each role run.
    #[serde(default)]
    pub placement: PlacementSpec,
    /// Prometheus Operator objects for the replicas.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    /// Retries before a command falls back to S-SMR.
    #[serde(default = "default_retry_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub retry_threshold: u32,
    /// Stop every change to the cluster's objects (scaling, updates) while true.
    #[serde(default)]
    pub paused: bool,
}

fn default_replicas() -> u32 {
    3
}

fn default_retry_threshold() -> u32 {
    5
}

/// Replication scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// Dynamic Scalable SMR: an oracle, variables move.
    #[default]
    Dssmr,
    /// Scalable SMR: static partitioning, no oracle.
    Ssmr,
}

/// Bundled applications.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppName {
    /// The Chirper social network (the paper's evaluation).
    #[default]
    Chirper,
    /// The key-value store.
    Kv,
}

/// How Prometheus finds the replicas' `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a PodMonitor (`monitoring.coreos.com/v1`, the Prometheus Operator) scraping
    /// every replica; skipped, with an Event, when the API server does not serve that kind.
    #[serde(default)]
    pub pod_monitor: bool,
    /// Labels of the PodMonitor (e.g. the `release` label a Prometheus selects monitors by).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Scrape interval, e.g. `15s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub interval: Option<String>,
}

/// Persistent volume of each replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size, e.g. `1Gi`.
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"))]
    pub size: String,
    /// Storage class (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Placement of the two roles, and an optional hardware profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Node labels and resources of a known hardware setup.
    #[serde(default)]
    pub hardware_profile: HardwareProfile,
    /// Pods of the partition groups.
    #[serde(default)]
    pub partitions: RolePlacement,
    /// Pods of the oracle group.
    #[serde(default)]
    pub oracle: RolePlacement,
}

/// Scheduling constraints of one role's pods (as in a pod spec).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolePlacement {
    /// Nodes must carry these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Node and pod (anti-)affinity, added to the spreading of a group's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Spread constraints, added to the default spreading over hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// Known hardware setups: node labels to select and resource requests that fit them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HardwareProfile {
    /// No profile: only the role placements given.
    #[default]
    None,
    /// The paper's cluster: replicas on HP SE1102 nodes (2× Xeon L5420 2.5 GHz, 8 cores,
    /// 8 GB), labelled `dssmr.io/hardware=hp-se1102`; clients (bench jobs) on Dell SC1435
    /// nodes (2× Opteron 2212 2.0 GHz, 4 cores, 4 GB), labelled
    /// `dssmr.io/hardware=dell-sc1435`. Each replica requests 2 CPUs and 2 GiB, so three
    /// replicas fit one HP node.
    Paper,
}

/// What the operator observed of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DSSMRClusterStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Readiness and leader of each group.
    #[serde(default)]
    pub groups: Vec<GroupStatus>,
    /// Ready groups out of all, e.g. `3/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Commands executed per second (from the replicas' metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    /// Variables moved per second (from the replicas' metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_rate: Option<f64>,
}

/// One group as observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    /// `oracle`, `p1`, `p2`, ...
    pub name: String,
    /// Replicas ready.
    pub ready_replicas: u32,
    /// Replicas wanted.
    pub replicas: u32,
    /// Pod name of the leader, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

/// The CRD as YAML, as `crds/` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = DSSMRCluster::crd();
    format!(
        "# Generated by `dssmr-operator crd`; do not edit.\n{}",
        serde_yaml::to_string(&crd).expect("a CRD always renders")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_dir_is_up_to_date() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crds/dssmr.io_dssmrclusters.yaml"
        );
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == crd_yaml(),
            "crds/ is stale: run `cargo run -p dssmr-operator -- crd` and commit crds/"
        );
    }

    #[test]
    fn schema_bounds_and_enums_are_in_the_crd() {
        let y = crd_yaml();
        for needle in [
            "minimum: 1",
            "maximum: 64",
            "- dssmr",
            "- ssmr",
            "- chirper",
            "- kv",
            "- paper",
            "shortNames:",
            "subresources:",
            "status: {}",
        ] {
            assert!(y.contains(needle), "CRD lacks {needle:?}");
        }
    }

    #[test]
    fn a_minimal_spec_gets_the_defaults() {
        let spec: DSSMRClusterSpec = serde_yaml::from_str("partitions: 2").unwrap();
        assert_eq!(spec.replicas_per_partition, 3);
        assert_eq!(spec.oracle_replicas, 3);
        assert_eq!(spec.mode, ClusterMode::Dssmr);
        assert_eq!(spec.app, AppName::Chirper);
        assert_eq!(spec.retry_threshold, 5);
        assert!(!spec.paused);
    }
}
