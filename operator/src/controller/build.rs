//! build (the step): the objects of the planned cluster ([`crate::build`]) and how far the
//! StatefulSets that exist are from them ([`Rollout`]), together a [`Prepared`]: the only
//! input the apply step takes.
//!
//! Pure: no client, no clock; the same cluster and StatefulSets give the same output. Must
//! not decide the partitions (the plan step did: the validated cluster carries them) nor
//! touch what runs.

use crate::build::{self as objects, KubernetesResources, CONFIG_HASH_ANNOTATION};
use crate::validate::ValidatedCluster;
use k8s_openapi::api::apps::v1::StatefulSet;

/// The objects of a cluster, built and not applied yet.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The objects to apply.
    pub resources: KubernetesResources,
    /// How far the StatefulSets that exist are from running them.
    pub rollout: Rollout,
}

/// Builds the objects of `v` and compares `running` (the StatefulSets listed by the
/// dereference step) with them.
pub fn build(v: &ValidatedCluster, running: &[StatefulSet]) -> Prepared {
    let resources = objects::build(v);
    let rollout = Rollout::of(v, &resources, running);
    Prepared { resources, rollout }
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
        for (g, want) in objects::groups(v).iter().zip(&built.stateful_sets) {
            let name = objects::group_object_name(v, g);
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
                    .and_then(|a| a.get(CONFIG_HASH_ANNOTATION).cloned())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{cluster, rolled_out, stateful_sets};
    use crate::validate::{validate, Deployed};

    fn sets(list: serde_json::Value) -> Vec<StatefulSet> {
        serde_json::from_value::<k8s_openapi::List<StatefulSet>>(list)
            .expect("a StatefulSet list")
            .items
    }

    #[test]
    fn a_rollout_is_complete_once_every_group_runs_the_current_config_ready() {
        let c = cluster("{partitions: 2}");
        let v = validate(&c, "dssmr:test").unwrap();
        let done = build(&v, &sets(rolled_out(&c, &Deployed::default(), 2, 3))).rollout;
        assert!(done.complete && done.all_ready, "{done:?}");
        assert_eq!(done.groups[0], ("oracle".to_string(), 3, 3));
        assert!(done.rolling.is_empty());

        let waiting = build(&v, &sets(rolled_out(&c, &Deployed::default(), 2, 1))).rollout;
        assert!(!waiting.complete && !waiting.all_ready, "{waiting:?}");
        assert_eq!(waiting.rolling, ["oracle", "p1", "p2"]);

        let old = build(&v, &sets(stateful_sets(&["demo-oracle", "demo-p1"], 3))).rollout;
        assert!(
            !old.all_ready && !old.complete,
            "p2 does not exist: {old:?}"
        );
        assert_eq!(old.rolling, ["oracle", "p1"], "another template");

        let none = build(&v, &[]).rollout;
        assert!(!none.complete && none.rolling.is_empty(), "{none:?}");
    }
}
