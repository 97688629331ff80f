//! The `DSSMRCluster` custom resource (`dssmr.io/v1alpha1`, short name `dssmr`).
//!
//! What the API server can check itself is in the schema (bounds, enums, required fields),
//! so a bad spec is rejected at `kubectl apply`; what needs several fields at once (an odd
//! replica count, a mode without oracle) is checked by [`crate::validate`] and reported in a
//! status condition. `dssmr-operator crd` writes the generated YAML into `crds/`.
//!
//! Changes the operator cannot carry out on a running cluster are refused at admission by
//! CEL transition rules (`x-kubernetes-validations`, evaluated by API servers 1.25 and
//! later; older ones ignore them): `replicasPerPartition`, `oracleReplicas` (DS-SMR) and
//! `storage` (nothing changes a Raft group's membership or a StatefulSet's volume claims),
//! `mode`, `app`, and the `partitions` of an S-SMR cluster. [`crate::validate`] refuses the
//! same changes against the deployed config, for every API server. `partitions` is bounded
//! by the schema's `maximum` (64 at once); partition numbers are never reused and so grow
//! past it, and cluster names are bounded so that the object and pod names of any number
//! fit (see [`crate::validate::MAX_NAME`]).

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
    scale(
        spec_replicas_path = ".spec.partitions",
        status_replicas_path = ".status.partitions",
        label_selector_path = ".status.selector"
    ),
    doc = "A replicated, partitioned service run by dssmr: an oracle group (DS-SMR) and `spec.partitions` partition groups, each a StatefulSet of `dssmr replica` pods that replicate one part of the application's state with Raft. Commands stay linearizable; in DS-SMR mode the variables a command needs move into one partition on the fly. The operator writes the client config into the ConfigMap `<name>-config` and reports readiness, throughput and move rate in `status`.",
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".spec.partitions"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".status.image"}"#,
    printcolumn = r#"{"name":"Throughput","type":"number","jsonPath":".status.throughput","description":"Commands executed per second"}"#,
    printcolumn = r#"{"name":"Moves","type":"number","jsonPath":".status.moveRate","description":"Variables moved per second"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.mode == 'ssmr' || self.oracleReplicas == oldSelf.oracleReplicas",
        "message": "spec.oracleReplicas cannot change on a running DS-SMR cluster: the operator does not change the oracle group's Raft membership (added replicas would never become voters, fewer could lose quorum for good); create a new cluster"
    },
    {
        "rule": "has(self.storage) == has(oldSelf.storage) && (!has(self.storage) || self.storage == oldSelf.storage)",
        "message": "spec.storage cannot change on a running cluster: the volume claims of a StatefulSet are fixed when it is created, and the replicas' logs live on them; create a new cluster"
    },
    {
        "rule": "self.mode == 'dssmr' || self.partitions == oldSelf.partitions",
        "message": "spec.partitions cannot change on a running S-SMR cluster: its variables are placed statically over the partitions it was created with (DS-SMR clusters can scale)"
    }
]))]
pub struct DSSMRClusterSpec {
    /// Number of partitions (each a Raft group of `replicasPerPartition` replicas).
    #[schemars(range(min = 1, max = 64))]
    pub partitions: u32,
    /// Replicas per partition: 2f+1 tolerates f failures (an odd number). Fixed once the
    /// cluster runs.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 15))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.replicasPerPartition cannot change on a running cluster: the operator does not change a partition's Raft membership (added replicas would never become voters, fewer could lose quorum for good); create a new cluster"
    }]))]
    pub replicas_per_partition: u32,
    /// Replicas of the oracle group (DS-SMR only; an odd number). Fixed once the cluster
    /// runs.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 15))]
    pub oracle_replicas: u32,
    /// dssmr (variables move to where commands run) or ssmr (static partitioning). Fixed
    /// once the cluster runs.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.mode cannot change on a running cluster: the oracle's map and the static placement are different state; create a new cluster"
    }]))]
    pub mode: ClusterMode,
    /// The replicated application. Fixed once the cluster runs.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.app cannot change on a running cluster: its replicas hold that app's state, which another app cannot read"
    }]))]
    pub app: AppName,
    /// Container image of the replicas (default: the operator's `--replica-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resources of each replica container (default: the hardware profile's, else none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Persistent storage of each replica (log and snapshots); none: an emptyDir. Fixed once
    /// the cluster runs.
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
    /// Partition groups the cluster runs now (in its config, their StatefulSets made); while
    /// scaling it moves from the old `spec.partitions` to the new one. The replica count of
    /// the scale subresource (`kubectl scale dssmr/NAME --replicas=N` sets `spec.partitions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Label selector of the partitions' pods: the scale subresource's selector (what a
    /// HorizontalPodAutoscaler reads the pods' metrics from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The replicas' container image (`spec.image`, else the operator's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
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

    /// `(rule, message)` of the CEL rules of `schema` (`x-kubernetes-validations`).
    fn rules(schema: &serde_json::Value) -> Vec<(String, String)> {
        schema["x-kubernetes-validations"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        (
                            r["rule"].as_str().unwrap_or("").to_string(),
                            r["message"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn changes_a_running_cluster_cannot_make_are_refused_by_cel_transition_rules() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(DSSMRCluster::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        // Field rules: the field may not change at all.
        for field in ["replicasPerPartition", "mode", "app"] {
            let r = rules(&spec["properties"][field]);
            assert_eq!(r.len(), 1, "{field}: {r:?}");
            assert_eq!(r[0].0, "self == oldSelf", "{field}");
            assert!(
                r[0].1
                    .starts_with(&format!("spec.{field} cannot change on a running cluster")),
                "{field}: {}",
                r[0].1
            );
        }
        let membership = &rules(&spec["properties"]["replicasPerPartition"])[0].1;
        assert!(membership.contains("never become voters"), "{membership}");
        // Spec rules: what depends on another field, or may be absent.
        let r = rules(spec);
        let rule_for = |field: &str| {
            r.iter()
                .find(|(_, m)| m.starts_with(&format!("spec.{field} cannot change")))
                .unwrap_or_else(|| panic!("no rule for spec.{field}: {r:?}"))
                .0
                .clone()
        };
        assert_eq!(
            rule_for("oracleReplicas"),
            "self.mode == 'ssmr' || self.oracleReplicas == oldSelf.oracleReplicas"
        );
        assert_eq!(
            rule_for("storage"),
            "has(self.storage) == has(oldSelf.storage) && (!has(self.storage) || \
             self.storage == oldSelf.storage)"
        );
        assert_eq!(
            rule_for("partitions"),
            "self.mode == 'dssmr' || self.partitions == oldSelf.partitions"
        );
        // Every rule is a transition rule (it names oldSelf): a new cluster may be anything
        // the schema allows.
        assert!(r.iter().all(|(rule, _)| rule.contains("oldSelf")), "{r:?}");
        // The bound of partitions.
        assert_eq!(
            spec["properties"]["partitions"]["maximum"].as_f64(),
            Some(64.0)
        );
    }

    #[test]
    fn kubectl_scale_and_explain_have_what_they_need() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(DSSMRCluster::crd()).unwrap();
        let version = &crd["spec"]["versions"][0];
        assert_eq!(
            version["subresources"]["scale"],
            serde_json::json!({
                "specReplicasPath": ".spec.partitions",
                "statusReplicasPath": ".status.partitions",
                "labelSelectorPath": ".status.selector"
            })
        );
        let schema = &version["schema"]["openAPIV3Schema"];
        let root = schema["description"].as_str().unwrap_or_default();
        assert!(
            root.starts_with("A replicated, partitioned service run by dssmr"),
            "kubectl explain dssmrcluster shows: {root}"
        );
        // Every field of the spec and status says what it is.
        for part in ["spec", "status"] {
            let props = schema["properties"][part]["properties"]
                .as_object()
                .expect("properties");
            for (name, field) in props {
                assert!(
                    field["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{part}.{name} has no description"
                );
            }
        }
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert!(columns.contains(&"Image"), "{columns:?}");
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
