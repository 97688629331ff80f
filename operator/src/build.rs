//! build: a [`ValidatedCluster`] → the Kubernetes objects that run it. Pure: no client, no
//! clock; the same input always gives the same objects (tested from YAML without a cluster).
//!
//! Per group (the oracle `<name>-oracle` in DS-SMR, each partition `<name>-p<N>`):
//! a StatefulSet of `dssmr replica` pods, a headless Service giving each pod its DNS name
//! (`<pod>.<group>.<ns>.svc:7000`, published before the pod is ready: peers must find each
//! other to elect a leader), and a PodDisruptionBudget keeping a majority up. One ConfigMap
//! holds the cluster config every replica and client reads. StatefulSets use the `Parallel`
//! pod management policy: a group has no leader until a majority runs, so `OrderedReady`
//! would wait forever for pod 0 to be ready.

use crate::crd::{ClusterMode, HardwareProfile, RolePlacement};
use crate::validate::ValidatedCluster;
use dssmr_api::config::{AppKind, ClusterConfig, GroupConfig};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SecurityContext, Service, ServicePort,
    ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// gRPC port of every replica (peers and clients).
pub const GRPC_PORT: i32 = 7000;
/// HTTP port of every replica (`/metrics`, `/healthz`, `/readyz`).
pub const HTTP_PORT: i32 = 8080;
/// Where the cluster config is mounted.
pub const CONFIG_PATH: &str = "/etc/dssmr/cluster.yaml";
/// Where replica state is kept.
pub const DATA_DIR: &str = "/var/lib/dssmr";
/// Node label of the hardware profiles.
pub const HARDWARE_LABEL: &str = "dssmr.io/hardware";
/// Label naming a pod's group (`oracle`, `p1`, ...).
pub const GROUP_LABEL: &str = "dssmr.io/group";
/// Pod template annotation carrying a hash of the cluster config without its partitions: pods
/// restart (a rolling update) when that changes, never when partitions are added or removed.
pub const CONFIG_HASH_ANNOTATION: &str = "dssmr.io/config-hash";
/// ConfigMap annotation recording the storage the cluster's StatefulSets are built with
/// (`null`: an emptyDir; else the spec's `storage` as JSON), so the validate step can refuse
/// a change of it on a running cluster: the cluster config does not carry it, and a
/// StatefulSet's volume claims cannot change.
pub const STORAGE_ANNOTATION: &str = "dssmr.io/storage";
/// The user the image runs as.
const USER: i64 = 65532;

/// Every object of one cluster, ready to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct KubernetesResources {
    /// The cluster config.
    pub config_map: ConfigMap,
    /// One per group, the oracle first.
    pub stateful_sets: Vec<StatefulSet>,
    /// One headless Service per group.
    pub services: Vec<Service>,
    /// One per group.
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
    /// A PodMonitor (`monitoring.coreos.com/v1`) for every replica, when asked for.
    pub pod_monitor: Option<serde_json::Value>,
}

/// A group of the cluster: its label and replica count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// `oracle` or `p<N>`.
    pub label: String,
    /// Replicas.
    pub replicas: u32,
}

impl Group {
    fn is_oracle(&self) -> bool {
        self.label == "oracle"
    }

    /// The partition number of a partition's group (`p<N>` → N); `None` for the oracle.
    pub fn partition(&self) -> Option<u32> {
        self.label.strip_prefix('p')?.parse().ok()
    }
}

/// The groups of `c`: the oracle (DS-SMR), then the partitions.
pub fn groups(c: &ValidatedCluster) -> Vec<Group> {
    let oracle = (c.spec.mode == ClusterMode::Dssmr).then(|| Group {
        label: "oracle".into(),
        replicas: c.spec.oracle_replicas,
    });
    oracle
        .into_iter()
        .chain(c.partitions.iter().map(|p| Group {
            label: format!("p{p}"),
            replicas: c.spec.replicas_per_partition,
        }))
        .collect()
}

/// Name of the StatefulSet and Service of group `g`.
pub fn group_object_name(c: &ValidatedCluster, g: &Group) -> String {
    format!("{}-{}", c.name, g.label)
}

/// The partition a group object name of `c` stands for (`<name>-p<N>` → N).
pub fn partition_of(c: &ValidatedCluster, object_name: &str) -> Option<u32> {
    object_name
        .strip_prefix(c.name.as_str())?
        .strip_prefix("-p")?
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Name of the cluster's ConfigMap.
pub fn config_map_name(c: &ValidatedCluster) -> String {
    format!("{}-config", c.name)
}

/// Builds every object of `c`.
pub fn build(c: &ValidatedCluster) -> KubernetesResources {
    let groups = groups(c);
    let config = cluster_config(c, &groups);
    let config_yaml = config.to_yaml();
    KubernetesResources {
        config_map: config_map(c, &config_yaml),
        stateful_sets: groups
            .iter()
            .map(|g| stateful_set(c, g, &rolling_hash(&config)))
            .collect(),
        services: groups.iter().map(|g| service(c, g)).collect(),
        pod_disruption_budgets: groups.iter().map(|g| pdb(c, g)).collect(),
        pod_monitor: c.spec.monitoring.pod_monitor.then(|| pod_monitor(c)),
    }
}

/// Name of the cluster's PodMonitor.
pub fn pod_monitor_name(c: &ValidatedCluster) -> String {
    format!("{}-replicas", c.name)
}

/// A PodMonitor scraping `/metrics` on the `http` port of every replica of `c` (the
/// Prometheus Operator's kind; k8s-openapi has no type for it, so it is built as JSON).
fn pod_monitor(c: &ValidatedCluster) -> serde_json::Value {
    let mut metadata = meta(c, pod_monitor_name(c), c.spec.monitoring.labels.clone());
    metadata.labels.get_or_insert_with(BTreeMap::new);
    let mut endpoint = serde_json::json!({"port": "http", "path": "/metrics"});
    if let Some(i) = &c.spec.monitoring.interval {
        endpoint["interval"] = i.clone().into();
    }
    serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {
                "app.kubernetes.io/name": "dssmr",
                "app.kubernetes.io/instance": c.name.as_str(),
            }},
            "podMetricsEndpoints": [endpoint],
        },
    })
}

/// The member addresses of group `g` of `c`, index = ordinal: its pods' DNS names.
pub fn member_addresses(c: &ValidatedCluster, g: &Group) -> Vec<String> {
    let set = group_object_name(c, g);
    (0..g.replicas)
        .map(|r| format!("{set}-{r}.{set}.{}.svc:{GRPC_PORT}", c.namespace))
        .collect()
}

/// The cluster config of `c`: every member by its pod's DNS name.
pub fn cluster_config(c: &ValidatedCluster, groups: &[Group]) -> ClusterConfig {
    let members = |g: &Group| GroupConfig {
        partition: None,
        members: member_addresses(c, g),
    };
    let app = match c.spec.app {
        crate::crd::AppName::Kv => AppKind::Kv,
        crate::crd::AppName::Chirper => AppKind::Chirper,
    };
    let mode = match c.spec.mode {
        ClusterMode::Dssmr => dssmr_api::mode::Mode::Dssmr,
        ClusterMode::Ssmr => dssmr_api::mode::Mode::Ssmr,
    };
    ClusterConfig {
        name: c.name.to_string(),
        mode,
        app,
        chirper: (app == AppKind::Chirper).then(Default::default),
        retry_threshold: c.spec.retry_threshold,
        destination: dssmr_api::mode::DestinationPolicy::default(),
        initial_partitions: (mode == dssmr_api::mode::Mode::Dssmr).then_some(c.initial_partitions),
        oracle: groups.iter().find(|g| g.is_oracle()).map(members),
        partitions: dssmr_api::config::numbered(
            groups
                .iter()
                .filter_map(|g| Some((g.partition()?, members(g)))),
        ),
    }
}

/// Labels of every object of `c`.
pub fn cluster_labels(c: &ValidatedCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "dssmr".into()),
        ("app.kubernetes.io/instance".into(), c.name.to_string()),
        (
            "app.kubernetes.io/managed-by".into(),
            "dssmr-operator".into(),
        ),
    ])
}

/// The label selector (as a string) of the pods of every partition of `c`, not the oracle's:
/// the scale subresource's `status.selector`. Only operators a `LabelSelector` has (`=`,
/// exists, `notin`): clients convert it into one (`!=` made `kubectl scale` fail with "not
/// a valid label selector operator").
pub fn partition_selector(c: &ValidatedCluster) -> String {
    format!(
        "app.kubernetes.io/name=dssmr,app.kubernetes.io/instance={},{GROUP_LABEL},{GROUP_LABEL} notin ({})",
        c.name,
        dssmr_api::ids::group_label(dssmr_api::ids::ORACLE)
    )
}

/// Labels selecting the pods of group `g`.
fn selector(c: &ValidatedCluster, g: &Group) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "dssmr".into()),
        ("app.kubernetes.io/instance".into(), c.name.to_string()),
        (GROUP_LABEL.into(), g.label.clone()),
    ])
}

fn meta(c: &ValidatedCluster, name: String, extra: BTreeMap<String, String>) -> ObjectMeta {
    let mut labels = cluster_labels(c);
    labels.extend(extra);
    ObjectMeta {
        name: Some(name),
        namespace: Some(c.namespace.clone()),
        labels: Some(labels),
        owner_references: c.uid.as_ref().map(|uid| {
            vec![OwnerReference {
                api_version: "dssmr.io/v1alpha1".into(),
                kind: "DSSMRCluster".into(),
                name: c.name.to_string(),
                uid: uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]
        }),
        ..Default::default()
    }
}

fn config_map(c: &ValidatedCluster, yaml: &str) -> ConfigMap {
    let storage = serde_json::to_string(&c.spec.storage).expect("storage as JSON");
    ConfigMap {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(STORAGE_ANNOTATION.into(), storage)])),
            ..meta(c, config_map_name(c), BTreeMap::new())
        },
        data: Some(BTreeMap::from([("cluster.yaml".into(), yaml.to_string())])),
        ..Default::default()
    }
}

fn service(c: &ValidatedCluster, g: &Group) -> Service {
    Service {
        metadata: meta(
            c,
            group_object_name(c, g),
            BTreeMap::from([(GROUP_LABEL.into(), g.label.clone())]),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(c, g)),
            ports: Some(vec![
                ServicePort {
                    name: Some("grpc".into()),
                    // Server-side apply keys ports by protocol too; 1.20 has no default.
                    protocol: Some("TCP".into()),
                    port: GRPC_PORT,
                    target_port: Some(IntOrString::String("grpc".into())),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("http".into()),
                    protocol: Some("TCP".into()),
                    port: HTTP_PORT,
                    target_port: Some(IntOrString::String("http".into())),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pdb(c: &ValidatedCluster, g: &Group) -> PodDisruptionBudget {
    // A majority must stay up: at most f = (n-1)/2 voluntary disruptions.
    let max_unavailable = (g.replicas.saturating_sub(1) / 2) as i32;
    PodDisruptionBudget {
        metadata: meta(
            c,
            group_object_name(c, g),
            BTreeMap::from([(GROUP_LABEL.into(), g.label.clone())]),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(c, g)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Resources of a replica: the spec's, else the hardware profile's.
fn resources(c: &ValidatedCluster) -> Option<ResourceRequirements> {
    if let Some(r) = &c.spec.resources {
        return Some(r.clone());
    }
    match c.spec.placement.hardware_profile {
        HardwareProfile::None => None,
        HardwareProfile::Paper => Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("2".into())),
                ("memory".into(), Quantity("2Gi".into())),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), Quantity("2Gi".into()))])),
            ..Default::default()
        }),
    }
}

/// Node labels the replicas need under the hardware profile.
pub fn profile_node_selector(profile: HardwareProfile) -> BTreeMap<String, String> {
    match profile {
        HardwareProfile::None => BTreeMap::new(),
        HardwareProfile::Paper => BTreeMap::from([(HARDWARE_LABEL.into(), "hp-se1102".into())]),
    }
}

fn stateful_set(c: &ValidatedCluster, g: &Group, rolling_hash: &str) -> StatefulSet {
    let name = group_object_name(c, g);
    let role: &RolePlacement = if g.is_oracle() {
        &c.spec.placement.oracle
    } else {
        &c.spec.placement.partitions
    };
    let labels = selector(c, g);
    let mut node_selector = profile_node_selector(c.spec.placement.hardware_profile);
    node_selector.extend(role.node_selector.clone());
    let (affinity, spread) = spread_over_hosts(role, &labels);
    let container = replica_container(c);
    let (volumes, claims) = data_volumes(c);
    let mut pod_labels = cluster_labels(c);
    pod_labels.extend(labels.clone());
    StatefulSet {
        metadata: meta(
            c,
            name.clone(),
            BTreeMap::from([(GROUP_LABEL.into(), g.label.clone())]),
        ),
        spec: Some(StatefulSetSpec {
            replicas: Some(g.replicas as i32),
            service_name: Some(name),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(labels),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.into(),
                        rolling_hash.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: (!node_selector.is_empty()).then_some(node_selector),
                    affinity: Some(affinity),
                    tolerations: (!role.tolerations.is_empty()).then(|| role.tolerations.clone()),
                    topology_spread_constraints: Some(spread),
                    termination_grace_period_seconds: Some(30),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(USER),
                        run_as_group: Some(USER),
                        fs_group: Some(USER),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            volume_claim_templates: claims,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The hash of what replicas must restart for: the config without its partitions. Partitions
/// added or removed reach running replicas from the oracle (`AddPartition` with the members,
/// `RemovePartition`), so scaling restarts nothing; a replica that starts later reads them
/// from the ConfigMap.
fn rolling_hash(config: &ClusterConfig) -> String {
    let mut fixed = config.clone();
    fixed.partitions.clear();
    config_hash(&fixed.to_yaml())
}

/// A stable hash of a text (FNV-1a).
fn config_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Replicas of one group on different hosts: preferred anti-affinity (hard would leave small
/// test clusters unschedulable), plus an even spread over hosts, added to the role's own.
fn spread_over_hosts(
    role: &RolePlacement,
    labels: &BTreeMap<String, String>,
) -> (
    k8s_openapi::api::core::v1::Affinity,
    Vec<TopologySpreadConstraint>,
) {
    let mut affinity = role.affinity.clone().unwrap_or_default();
    let mut anti = affinity.pod_anti_affinity.take().unwrap_or_default();
    anti.preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(WeightedPodAffinityTerm {
            weight: 100,
            pod_affinity_term: PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            },
        });
    affinity.pod_anti_affinity = Some(PodAntiAffinity { ..anti });
    let mut spread = vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(labels.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }];
    spread.extend(role.topology_spread_constraints.clone());

    (affinity, spread)
}

/// The replica container: `dssmr replica` with the mounted config, its ports, probes on
/// `/readyz` and `/healthz`, non-root with a read-only root filesystem.
fn replica_container(c: &ValidatedCluster) -> Container {
    let probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    Container {
        name: "replica".into(),
        image: Some(c.image.clone()),
        args: Some(
            [
                "replica",
                "--config",
                CONFIG_PATH,
                "--data-dir",
                DATA_DIR,
                "--http-addr",
                &format!("0.0.0.0:{HTTP_PORT}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        env: Some(vec![EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                // Server-side apply keys ports by protocol too; 1.20 has no default.
                protocol: Some("TCP".into()),
                container_port: GRPC_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                container_port: HTTP_PORT,
                ..Default::default()
            },
        ]),
        readiness_probe: Some(probe("/readyz", 2)),
        liveness_probe: Some(Probe {
            failure_threshold: Some(6),
            ..probe("/healthz", 5)
        }),
        resources: resources(c),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: "/etc/dssmr".into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// The config volume, and the data directory: a claim per replica when the spec asks for
/// storage, else an emptyDir volume.
fn data_volumes(c: &ValidatedCluster) -> (Vec<Volume>, Option<Vec<PersistentVolumeClaim>>) {
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map_name(c),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let claims = match &c.spec.storage {
        Some(s) => Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: s.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        Quantity(s.size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        None => {
            volumes.push(Volume {
                name: "data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            });
            None
        }
    };
    (volumes, claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DSSMRCluster;
    use crate::validate::{validate, DEFAULT_IMAGE};

    fn built(yaml: &str) -> (ValidatedCluster, KubernetesResources) {
        let c: DSSMRCluster = serde_yaml::from_str(yaml).expect("test YAML");
        let v = validate(&c, DEFAULT_IMAGE).expect("valid");
        let r = build(&v);
        (v, r)
    }

    const PAPER: &str = "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\n\
        metadata: {name: chirper, namespace: eval, uid: 1234-abcd}\n\
        spec:\n  partitions: 2\n  storage: {size: 1Gi}\n  placement: {hardwareProfile: paper}\n";

    #[test]
    fn one_stateful_set_service_and_pdb_per_group_and_the_oracle_first() {
        let (_, r) = built(PAPER);
        let names: Vec<String> = r
            .stateful_sets
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["chirper-oracle", "chirper-p1", "chirper-p2"]);
        assert_eq!(r.services.len(), 3);
        assert_eq!(r.pod_disruption_budgets.len(), 3);
        for s in &r.services {
            let spec = s.spec.as_ref().unwrap();
            assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
            assert_eq!(spec.publish_not_ready_addresses, Some(true));
        }
        for p in &r.pod_disruption_budgets {
            let spec = p.spec.as_ref().unwrap();
            assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        }
        // Owner references on everything.
        let owned = r
            .stateful_sets
            .iter()
            .map(|s| &s.metadata)
            .chain(r.services.iter().map(|s| &s.metadata))
            .chain(std::iter::once(&r.config_map.metadata));
        for m in owned {
            let o = &m.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (o.kind.as_str(), o.uid.as_str()),
                ("DSSMRCluster", "1234-abcd")
            );
            assert_eq!(o.controller, Some(true));
        }
    }

    #[test]
    fn the_config_map_holds_a_valid_cluster_config_with_pod_dns_names() {
        let (_, r) = built(PAPER);
        let yaml = &r.config_map.data.as_ref().unwrap()["cluster.yaml"];
        let config = ClusterConfig::from_yaml(yaml).expect("the replicas accept it");
        assert_eq!(config.partitions.len(), 2);
        assert_eq!(
            config.oracle.unwrap().members[2],
            "chirper-oracle-2.chirper-oracle.eval.svc:7000"
        );
        assert_eq!(
            config.partitions[1].members[0],
            "chirper-p2-0.chirper-p2.eval.svc:7000"
        );
        // The storage, which the config does not carry, recorded beside it.
        let notes = r.config_map.metadata.annotations.as_ref().unwrap();
        assert_eq!(notes[STORAGE_ANNOTATION], r#"{"size":"1Gi"}"#);
        let (_, r) = built(&PAPER.replace("  storage: {size: 1Gi}\n", ""));
        let notes = r.config_map.metadata.annotations.as_ref().unwrap();
        assert_eq!(notes[STORAGE_ANNOTATION], "null");
    }

    #[test]
    fn pods_run_the_replica_as_the_contract_says() {
        let (_, r) = built(PAPER);
        let set = &r.stateful_sets[1];
        let spec = set.spec.as_ref().unwrap();
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.service_name.as_deref(), Some("chirper-p1"));
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(DEFAULT_IMAGE));
        assert_eq!(
            c.args.as_ref().unwrap()[..3],
            ["replica", "--config", CONFIG_PATH]
        );
        assert_eq!(c.env.as_ref().unwrap()[0].name, "POD_NAME");
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(ready.path.as_deref(), Some("/readyz"));
        // The paper's profile: HP nodes, 2 CPUs and 2 GiB each.
        assert_eq!(
            pod.node_selector.as_ref().unwrap()[HARDWARE_LABEL],
            "hp-se1102"
        );
        let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(req["cpu"], Quantity("2".into()));
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_user,
            Some(65532)
        );
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    }

    #[test]
    fn a_pod_monitor_only_when_asked_for_selecting_the_cluster_pods() {
        let (_, r) = built(PAPER);
        assert!(r.pod_monitor.is_none());
        let (_, r) = built(&format!(
            "{PAPER}  monitoring: {{podMonitor: true, labels: {{release: prom}}, interval: 10s}}\n"
        ));
        let m = r.pod_monitor.expect("asked for");
        assert_eq!(m["kind"], "PodMonitor");
        assert_eq!(m["metadata"]["name"], "chirper-replicas");
        assert_eq!(m["metadata"]["labels"]["release"], "prom");
        assert_eq!(m["metadata"]["ownerReferences"][0]["uid"], "1234-abcd");
        assert_eq!(
            m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
            "chirper"
        );
        assert_eq!(m["spec"]["podMetricsEndpoints"][0]["port"], "http");
        assert_eq!(m["spec"]["podMetricsEndpoints"][0]["interval"], "10s");
    }

    #[test]
    fn ssmr_has_no_oracle_and_a_config_change_changes_the_pod_template() {
        let (_, a) = built(
            "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {name: s}\n\
             spec: {partitions: 1, mode: ssmr}",
        );
        assert_eq!(a.stateful_sets.len(), 1);
        let (_, b) = built(
            "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {name: s}\n\
             spec: {partitions: 1, mode: ssmr, retryThreshold: 7}",
        );
        let hash = |r: &KubernetesResources| {
            r.stateful_sets[0]
                .spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()["dssmr.io/config-hash"]
                .clone()
        };
        assert_ne!(hash(&a), hash(&b));
        // Without storage the data directory is an emptyDir.
        let pod = a.stateful_sets[0]
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .clone()
            .unwrap();
        assert!(pod.volumes.unwrap().iter().any(|v| v.empty_dir.is_some()));
    }
}
