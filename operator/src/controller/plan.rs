//! plan: the way from the partitions a cluster runs to those its spec asks for, as a
//! [`ScalePlan`]. Pure: it reads the partitions off the StatefulSets the dereference step
//! listed and the oracle's view [`super::oracle::ask`] got, and leaves the planning itself to
//! [`crate::scale`].
//!
//! Must not ask anything itself, nor perform the plan: the build step builds its partitions,
//! the oracle step drains, registers and deletes.

use super::oracle::OracleContact;
use crate::build::partition_of;
use crate::scale::{self, ScalePlan};
use crate::validate::{Deployed, ValidatedCluster};
use k8s_openapi::api::apps::v1::StatefulSet;

/// The plan of `v`, which runs `deployed` in its config and the partition StatefulSets in
/// `running`, knowing what the oracle said (nothing when it could not be asked).
pub fn plan(
    v: &ValidatedCluster,
    deployed: &Deployed,
    running: &[StatefulSet],
    oracle: &OracleContact,
) -> ScalePlan {
    let running_partitions: Vec<u32> = running
        .iter()
        .filter_map(|s| partition_of(v, s.metadata.name.as_deref()?))
        .collect();
    scale::plan(
        v.spec.partitions,
        &deployed.partitions(),
        &running_partitions,
        oracle.view(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        apply_steps, cluster, cluster_json, condition, config_map, play, policy_v1, stateful_sets,
        Step, APPS, NS, STATUS,
    };
    use kube::runtime::controller::Action;
    use std::time::Duration;

    #[test]
    fn the_running_partitions_are_read_off_the_stateful_set_names() {
        let c = cluster("{partitions: 1}");
        let v = crate::validate::validate(&c, "dssmr:test").unwrap();
        let running: k8s_openapi::List<StatefulSet> = serde_json::from_value(stateful_sets(
            &["demo-oracle", "demo-p1", "demo-p2", "other-p3"],
            1,
        ))
        .unwrap();
        let p = plan(
            &v,
            &Deployed::default(),
            &running.items,
            &OracleContact::Unasked,
        );
        assert_eq!(p.partitions, [1]);
        assert_eq!(
            p.leaving,
            vec![(2, None)],
            "p2 runs, p3 is not this cluster's"
        );
        assert!(p.delete.is_empty() && p.drain.is_empty() && p.add.is_empty());
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
}
