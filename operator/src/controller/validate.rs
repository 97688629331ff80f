//! validate (the step): the spec as stored, judged against the [`Deployed`] config the
//! dereference step read, → a [`ValidatedCluster`] the later steps can trust, or a
//! [`ValidateError`] naming every field that makes no sense.
//!
//! Pure: the rules live in [`crate::validate`] (shared with `dssmr-operator render`); this
//! step only types their outcome. It must not report anything itself: the driver hands an
//! invalid spec to [`super::update_status::report_invalid`] (an Event and the conditions),
//! and nothing is applied or deleted because of it.

use crate::crd::DSSMRCluster;
use crate::validate::{self as rules, Deployed, Invalid, ValidatedCluster};
use thiserror::Error;

/// Why a spec cannot be reconciled. Not a failure of the reconcile: it is reported, and the
/// cluster is reconciled again once its spec changes.
#[derive(Debug, Error)]
pub enum ValidateError {
    /// The spec makes no sense; every problem names its field (`; `-separated).
    #[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Each problem, with its field.
        problems: Vec<Invalid>,
    },
}

/// Validates `c`, which runs `deployed` now; `default_image` applies when its spec names none.
pub fn validate(
    c: &DSSMRCluster,
    default_image: &str,
    deployed: &Deployed,
) -> Result<ValidatedCluster, ValidateError> {
    rules::validate_against(c, default_image, deployed)
        .map_err(|problems| ValidateError::Invalid { problems })
}

#[cfg(test)]
mod tests {
    use crate::fixtures::{
        cluster, cluster_json, condition, config_map, not_found, play, Step, NS, STATUS,
    };
    use kube::runtime::controller::Action;

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

    /// `c` refused against `running` (its ConfigMap): an InvalidSpec Event and a Degraded
    /// condition, both naming `field`; nothing applied.
    async fn refused(c: &str, running: &str, field: &'static str) {
        let c = cluster(c);
        let running = cluster(running);
        let answer = cluster_json(&c);
        let action = play(
            c,
            vec![
                Step::new("GET", format!("{NS}/configmaps/demo-config"))
                    .answer(config_map(&running, 2, 2)),
                Step::new("POST", "/apis/events.k8s.io/v1/namespaces/default/events").check(
                    move |b| {
                        assert_eq!(b["reason"], "InvalidSpec");
                        assert_eq!(b["type"], "Warning");
                        assert!(b["note"].as_str().unwrap().contains(field), "{b}");
                    },
                ),
                Step::new("PATCH", format!("{STATUS}?"))
                    .check(move |b| {
                        assert_eq!(
                            condition(b, "Degraded"),
                            ("True".into(), "InvalidSpec".into())
                        );
                        let message = b["status"]["conditions"]
                            .as_array()
                            .and_then(|cs| cs.iter().find(|c| c["type"] == "Degraded"))
                            .map(|c| c["message"].to_string())
                            .unwrap_or_default();
                        assert!(message.contains(field), "{message}");
                    })
                    .answer(answer),
            ],
        )
        .await;
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn a_running_cluster_cannot_change_its_replicas_or_storage() {
        refused(
            "{partitions: 2, replicasPerPartition: 5}",
            "{partitions: 2}",
            "spec.replicasPerPartition",
        )
        .await;
        refused(
            "{partitions: 2, replicasPerPartition: 1}",
            "{partitions: 2}",
            "spec.replicasPerPartition",
        )
        .await;
        refused(
            "{partitions: 2, oracleReplicas: 5}",
            "{partitions: 2}",
            "spec.oracleReplicas",
        )
        .await;
        // The storage recorded on the ConfigMap (the cluster config has none).
        refused(
            "{partitions: 2, storage: {size: 2Gi}}",
            "{partitions: 2, storage: {size: 1Gi}}",
            "spec.storage",
        )
        .await;
        refused(
            "{partitions: 2, storage: {size: 1Gi}}",
            "{partitions: 2}",
            "spec.storage",
        )
        .await;
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
}
