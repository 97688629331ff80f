//! validate: a `DSSMRCluster` as stored → a [`ValidatedCluster`] the build step can trust, or
//! the reasons it makes no sense (reported in a status condition and an Event; nothing is
//! deleted because of them).
//!
//! The schema already bounds each field; this step checks what needs several fields or
//! knowledge the schema cannot carry: odd replica counts (2f+1), a name short enough for
//! every object and pod built from it, and changes a running cluster cannot make (its mode,
//! its app, the partitions of an S-SMR cluster, its replicas per partition, its oracle
//! replicas and its storage: the operator changes no Raft group's membership and no
//! StatefulSet's volume claims), judged against the [`Deployed`] config the dereference
//! step read. The CRD's CEL transition rules refuse the same changes at admission where
//! the API server evaluates them (1.25 and later); this step refuses them on every server.
//! Pure: no client.

use crate::crd::{AppName, ClusterMode, DSSMRCluster, DSSMRClusterSpec, StorageSpec};
use dssmr_api::config::{AppKind, ClusterConfig};
use std::fmt;

/// Longest cluster name: pod names `<name>-p<N>-14` and the StatefulSet's
/// `controller-revision-hash` label (`<statefulset>-<10 chars>`) must stay within 63 for
/// every partition number `N` the cluster may reach. Numbers are never reused, so they grow
/// with every scale-out; at 40 characters even a 10-digit number (any `u32`) fits the label:
/// 40 + `-p` + 10 + `-` + 10 = 63.
pub const MAX_NAME: usize = 40;
/// The image replicas run when neither the spec nor the operator says otherwise.
pub const DEFAULT_IMAGE: &str = "dssmr:latest";

/// Why a cluster name cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BadClusterName {
    /// Not a DNS-1123 label.
    #[error(transparent)]
    Label(#[from] dssmr_api::config::BadName),
    /// Longer than [`MAX_NAME`]: the names of its pods and labels would exceed 63 characters.
    #[error(
        "{name:?} is {} characters; at most {MAX_NAME} (pod and label names built from it must \
         stay within 63)",
        name.len()
    )]
    TooLong {
        /// The name given.
        name: String,
    },
}

/// A cluster name that is a DNS-1123 label of at most [`MAX_NAME`] characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterName(String);

impl ClusterName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<Self, BadClusterName> {
        dssmr_api::config::validate_name(name)?;
        if name.len() > MAX_NAME {
            return Err(BadClusterName::TooLong {
                name: name.to_string(),
            });
        }
        Ok(ClusterName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One problem with a spec: the field (as in YAML) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The field, e.g. `spec.replicasPerPartition`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// A cluster whose spec makes sense.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedCluster {
    /// Its name.
    pub name: ClusterName,
    /// Its namespace.
    pub namespace: String,
    /// Its UID (owner references), when it has one (not in `render`).
    pub uid: Option<String>,
    /// The spec.
    pub spec: DSSMRClusterSpec,
    /// The image replicas run.
    pub image: String,
    /// The partitions, by number, in the cluster config and run as StatefulSets: the
    /// deployed ones (`1..=spec.partitions` for a new cluster) until the controller's scale
    /// plan says which (more than the spec's while partitions scaled away still hold
    /// variables; numbers skip those removed).
    pub partitions: Vec<u32>,
    /// Partitions new variables go to from the cluster's start (the config's
    /// `initialPartitions`): fixed when the cluster is first created.
    pub initial_partitions: u32,
}

/// What a cluster runs now: the cluster config in its ConfigMap (none for a new cluster, or
/// in `render`), and the storage the operator recorded beside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Deployed {
    /// The config the replicas were given (its groups' members: the replicas per group).
    pub config: Option<ClusterConfig>,
    /// The storage the cluster's StatefulSets were built with (the ConfigMap's
    /// [`crate::build::STORAGE_ANNOTATION`]); `None` when not recorded (no ConfigMap, or one
    /// written by an operator that did not record it: the storage is then not judged, and
    /// the next apply records it).
    pub storage: Option<DeployedStorage>,
}

/// The storage of a running cluster's replicas, as recorded when its objects were applied:
/// a volume claim per replica, or none (an emptyDir).
#[derive(Clone, Debug, PartialEq)]
pub struct DeployedStorage(pub Option<StorageSpec>);

impl fmt::Display for DeployedStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("emptyDir volumes (no storage)"),
            Some(s) => {
                write!(f, "volume claims of {}", s.size)?;
                match &s.storage_class_name {
                    Some(class) => write!(f, " of class {class}"),
                    None => f.write_str(" of the default class"),
                }
            }
        }
    }
}

impl Deployed {
    /// The partitions, by number, in the deployed config (none for a new cluster).
    pub fn partitions(&self) -> Vec<u32> {
        self.config.as_ref().map_or_else(Vec::new, |c| {
            c.partition_numbers().into_iter().map(|g| g.0).collect()
        })
    }
}

/// Validates a new `cluster`; `default_image` applies when the spec names none.
pub fn validate(
    cluster: &DSSMRCluster,
    default_image: &str,
) -> Result<ValidatedCluster, Vec<Invalid>> {
    validate_against(cluster, default_image, &Deployed::default())
}

/// Validates `cluster`, which runs `deployed` now.
pub fn validate_against(
    cluster: &DSSMRCluster,
    default_image: &str,
    deployed: &Deployed,
) -> Result<ValidatedCluster, Vec<Invalid>> {
    let mut problems = Vec::new();
    let mut bad = |field: &str, reason: String| {
        problems.push(Invalid {
            field: field.into(),
            reason,
        })
    };
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let name = ClusterName::new(&name)
        .map_err(|e| bad("metadata.name", e.to_string()))
        .ok();
    let spec = &cluster.spec;
    if spec.partitions == 0 {
        bad("spec.partitions", "need at least 1".into());
    }
    if spec.replicas_per_partition.is_multiple_of(2) {
        bad(
            "spec.replicasPerPartition",
            format!(
                "{} is even: a Raft group of 2f+1 replicas tolerates f failures, and an even \
                 count tolerates no more than one replica fewer (use {} or {})",
                spec.replicas_per_partition,
                spec.replicas_per_partition.saturating_sub(1).max(1),
                spec.replicas_per_partition + 1
            ),
        );
    }
    if spec.mode == ClusterMode::Dssmr && spec.oracle_replicas.is_multiple_of(2) {
        bad(
            "spec.oracleReplicas",
            format!(
                "{} is even: the oracle is a Raft group of 2f+1 replicas",
                spec.oracle_replicas
            ),
        );
    }
    if let Some(image) = &spec.image {
        if image.trim().is_empty() || image.contains(char::is_whitespace) {
            bad("spec.image", format!("{image:?} is not an image reference"));
        }
    }
    if let Some(running) = &deployed.config {
        let mode = match running.mode {
            dssmr_api::mode::Mode::Dssmr => ClusterMode::Dssmr,
            dssmr_api::mode::Mode::Ssmr => ClusterMode::Ssmr,
        };
        if mode != spec.mode {
            bad(
                "spec.mode",
                format!(
                    "the cluster runs {} and cannot change its scheme in place (the oracle's \
                     map and the static placement are different state); create a new cluster \
                     instead",
                    running.mode.name()
                ),
            );
        }
        let app = match running.app {
            AppKind::Kv => AppName::Kv,
            AppKind::Chirper => AppName::Chirper,
        };
        if app != spec.app {
            bad(
                "spec.app",
                format!(
                    "the cluster runs {}; its replicas hold that app's state, which another \
                     app cannot read",
                    running.app
                ),
            );
        }
        // Membership: the operator changes no Raft group's voters, so a group keeps the
        // replicas it was created with (every partition has the same count).
        const FIXED: &str = "the operator does not change a Raft group's membership (added \
                             replicas would never become voters, fewer could lose quorum for \
                             good)";
        if let Some(n) = running.partitions.first().map(|g| g.members.len() as u32) {
            if n != spec.replicas_per_partition {
                bad(
                    "spec.replicasPerPartition",
                    format!(
                        "the cluster runs {n} replicas per partition and cannot change that \
                         while it runs: {FIXED}; set it back to {n}, or create a new cluster"
                    ),
                );
            }
        }
        if spec.mode == ClusterMode::Dssmr {
            if let Some(n) = running.oracle.as_ref().map(|g| g.members.len() as u32) {
                if n != spec.oracle_replicas {
                    bad(
                        "spec.oracleReplicas",
                        format!(
                            "the oracle runs {n} replicas and cannot change that while the \
                             cluster runs: {FIXED}; set it back to {n}, or create a new \
                             cluster"
                        ),
                    );
                }
            }
        }
        if let Some(storage) = &deployed.storage {
            if storage.0 != spec.storage {
                bad(
                    "spec.storage",
                    format!(
                        "the cluster's replicas run on {storage}, and a StatefulSet's volume \
                         claims are fixed when it is created (the replicas' logs live on \
                         them); set it back, or create a new cluster"
                    ),
                );
            }
        }
        let running_partitions = running.partitions.len() as u32;
        if mode == ClusterMode::Ssmr
            && spec.mode == ClusterMode::Ssmr
            && spec.partitions != running_partitions
        {
            bad(
                "spec.partitions",
                format!(
                    "mode ssmr places variables statically over the {running_partitions} \
                     partitions the cluster was created with; changing the count would lose \
                     track of them (DS-SMR clusters can scale)"
                ),
            );
        }
    }
    let initial_partitions = match &deployed.config {
        Some(running) => running
            .initial_partitions
            .unwrap_or(running.partitions.len() as u32),
        None => spec.partitions,
    };
    match name {
        Some(name) if problems.is_empty() => Ok(ValidatedCluster {
            partitions: match deployed.partitions() {
                none if none.is_empty() => (1..=spec.partitions).collect(),
                running => running,
            },
            initial_partitions,
            name,
            namespace: cluster
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            uid: cluster.metadata.uid.clone(),
            spec: spec.clone(),
            image: spec
                .image
                .clone()
                .unwrap_or_else(|| default_image.to_string()),
        }),
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> DSSMRCluster {
        serde_yaml::from_str(yaml).expect("test YAML")
    }

    #[test]
    fn a_sound_spec_validates() {
        let c = cluster(
            "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {name: chirper, namespace: db}\n\
             spec: {partitions: 2}",
        );
        let v = validate(&c, DEFAULT_IMAGE).unwrap();
        assert_eq!(v.name.as_str(), "chirper");
        assert_eq!(v.namespace, "db");
        assert_eq!(v.image, DEFAULT_IMAGE);
    }

    #[test]
    fn specs_that_make_no_sense_name_their_fields() {
        let c = cluster(
            "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {name: Bad_Name}\n\
             spec: {partitions: 2, replicasPerPartition: 4, oracleReplicas: 2, image: ' '}",
        );
        let problems = validate(&c, DEFAULT_IMAGE).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.replicasPerPartition",
                "spec.oracleReplicas",
                "spec.image"
            ]
        );
        assert!(problems[1].reason.contains("use 3 or 5"), "{}", problems[1]);
    }

    #[test]
    fn a_running_cluster_keeps_its_mode_app_and_static_partitions() {
        let running = |spec: &str| {
            let c = cluster(&format!(
                "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {{name: r}}\nspec: {spec}"
            ));
            let v = validate(&c, DEFAULT_IMAGE).unwrap();
            Deployed {
                config: Some(crate::build::cluster_config(&v, &crate::build::groups(&v))),
                storage: Some(DeployedStorage(v.spec.storage.clone())),
            }
        };
        let spec = |s: &str| {
            cluster(&format!(
                "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {{name: r}}\nspec: {s}"
            ))
        };
        let fields = |s: &str, deployed: &Deployed| -> Vec<String> {
            validate_against(&spec(s), DEFAULT_IMAGE, deployed)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.field)
                .collect()
        };
        let ssmr = running("{partitions: 2, mode: ssmr, app: kv}");
        assert_eq!(
            fields("{partitions: 4, mode: ssmr, app: kv}", &ssmr),
            ["spec.partitions"]
        );
        assert_eq!(
            fields("{partitions: 2, mode: dssmr, app: chirper}", &ssmr),
            ["spec.mode", "spec.app"]
        );
        // DS-SMR scales; the partitions it started with stay its initial placement.
        let dssmr = running("{partitions: 2}");
        let v = validate_against(&spec("{partitions: 4}"), DEFAULT_IMAGE, &dssmr).unwrap();
        assert_eq!(
            (v.partitions, v.initial_partitions),
            (vec![1, 2], 2),
            "what runs, until the scale plan says more"
        );
        let v = validate(&spec("{partitions: 4}"), DEFAULT_IMAGE).unwrap();
        assert_eq!((v.partitions, v.initial_partitions), (vec![1, 2, 3, 4], 4));
    }

    #[test]
    fn a_running_cluster_keeps_its_replicas_and_storage() {
        let spec = |s: &str| {
            cluster(&format!(
                "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {{name: r}}\nspec: {s}"
            ))
        };
        let running = |s: &str| {
            let v = validate(&spec(s), DEFAULT_IMAGE).unwrap();
            Deployed {
                config: Some(crate::build::cluster_config(&v, &crate::build::groups(&v))),
                storage: Some(DeployedStorage(v.spec.storage.clone())),
            }
        };
        let problems = |s: &str, deployed: &Deployed| -> Vec<Invalid> {
            validate_against(&spec(s), DEFAULT_IMAGE, deployed)
                .err()
                .unwrap_or_default()
        };
        let fields = |s: &str, deployed: &Deployed| -> Vec<String> {
            problems(s, deployed).into_iter().map(|p| p.field).collect()
        };
        let deployed = running("{partitions: 2, storage: {size: 1Gi}}");
        // As it runs, or scaled (DS-SMR): fine.
        assert!(fields("{partitions: 2, storage: {size: 1Gi}}", &deployed).is_empty());
        assert!(fields("{partitions: 3, storage: {size: 1Gi}}", &deployed).is_empty());
        // 3 → 5 and 3 → 1 replicas per partition, 3 → 5 oracle replicas: refused, saying why.
        let up = problems(
            "{partitions: 2, replicasPerPartition: 5, storage: {size: 1Gi}}",
            &deployed,
        );
        assert_eq!(up.len(), 1, "{up:?}");
        assert_eq!(up[0].field, "spec.replicasPerPartition");
        assert!(
            up[0].reason.contains("runs 3 replicas per partition"),
            "{}",
            up[0]
        );
        assert!(up[0].reason.contains("never become voters"), "{}", up[0]);
        assert_eq!(
            fields(
                "{partitions: 2, replicasPerPartition: 1, storage: {size: 1Gi}}",
                &deployed
            ),
            ["spec.replicasPerPartition"]
        );
        let oracle = problems(
            "{partitions: 2, oracleReplicas: 5, storage: {size: 1Gi}}",
            &deployed,
        );
        assert_eq!(oracle.len(), 1, "{oracle:?}");
        assert_eq!(oracle[0].field, "spec.oracleReplicas");
        assert!(
            oracle[0].reason.contains("oracle runs 3 replicas"),
            "{}",
            oracle[0]
        );
        // Storage: another size, another class, none at all; and none → some.
        for changed in [
            "{partitions: 2, storage: {size: 2Gi}}",
            "{partitions: 2, storage: {size: 1Gi, storageClassName: fast}}",
            "{partitions: 2}",
        ] {
            let p = problems(changed, &deployed);
            assert_eq!(p.len(), 1, "{changed}: {p:?}");
            assert_eq!(p[0].field, "spec.storage");
            assert!(
                p[0].reason
                    .contains("volume claims of 1Gi of the default class"),
                "{}",
                p[0]
            );
        }
        let without = running("{partitions: 2}");
        let p = problems("{partitions: 2, storage: {size: 1Gi}}", &without);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].reason.contains("emptyDir"), "{}", p[0]);
        // Storage not recorded (a ConfigMap from an older operator): not judged.
        let unrecorded = Deployed {
            storage: None,
            ..without.clone()
        };
        assert!(fields("{partitions: 2, storage: {size: 1Gi}}", &unrecorded).is_empty());
        // An S-SMR cluster has no oracle: its oracleReplicas means nothing and may change.
        let ssmr = running("{partitions: 2, mode: ssmr}");
        assert!(fields("{partitions: 2, mode: ssmr, oracleReplicas: 5}", &ssmr).is_empty());
        // A new cluster may have any count.
        assert!(validate(
            &spec("{partitions: 2, replicasPerPartition: 5}"),
            DEFAULT_IMAGE
        )
        .is_ok());
    }

    #[test]
    fn ssmr_ignores_the_oracle_count_and_long_names_are_refused() {
        let c = cluster(
            "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {name: s}\n\
             spec: {partitions: 1, mode: ssmr, oracleReplicas: 2}",
        );
        assert!(validate(&c, DEFAULT_IMAGE).is_ok());
        assert!(ClusterName::new(&"a".repeat(MAX_NAME + 1)).is_err());
    }
}
