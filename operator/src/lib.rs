//! dssmr-operator: runs `DSSMRCluster` resources on Kubernetes.
//!
//! # Layout
//!
//! In dependency order (a module uses only those on its line or above; checked by the
//! engine's `tests/layering.rs`):
//!
//! - [`crd`], [`scale`], [`metrics`]: the resource type and its schema; the way from the
//!   partitions a cluster runs to those its spec asks for (pure); the operator's own metrics;
//! - [`validate`]: spec → [`validate::ValidatedCluster`] or the fields that make no sense
//!   (pure);
//! - [`build`]: validated cluster → the objects that run it (pure);
//! - [`replicas`]: talks to a cluster's replicas (the oracle's admin API, `/metrics`);
//! - [`controller`]: the reconcile, `dereference -> validate -> plan -> build -> apply ->
//!   oracle -> update_status`, a submodule per step: its dereference, apply, oracle and
//!   update_status steps are the only part of the reconcile with a Kubernetes client, and its validate, plan
//!   and build steps call the pure modules above;
//! - [`leader`], [`discovery`]: leader election among operator processes (a Lease); scrape
//!   targets for Prometheus' `http_sd_configs` (the pods, listed).
//!
//! `dssmr-operator render` prints what would be applied ([`render`]).

pub mod build;
pub mod controller;
pub mod crd;
pub mod discovery;
pub mod leader;
pub mod metrics;
pub mod replicas;
pub mod scale;
pub mod validate;

#[cfg(test)]
pub mod fixtures;

use crd::DSSMRCluster;
use thiserror::Error;

/// Why an operator command failed.
#[derive(Debug, Error)]
pub enum Error {
    /// The input is not a DSSMRCluster.
    #[error("not a DSSMRCluster: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// The spec makes no sense; every problem names its field.
    #[error("invalid DSSMRCluster: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<validate::Invalid>),
}

/// Result alias of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The objects the operator would apply for the DSSMRCluster in `yaml`, as a multi-document
/// YAML stream (ConfigMap, then per group Service, StatefulSet, PodDisruptionBudget, then the
/// PodMonitor when asked for).
pub fn render(yaml: &str, default_image: &str) -> Result<String> {
    let cluster: DSSMRCluster = serde_yaml::from_str(yaml)?;
    let valid = validate::validate(&cluster, default_image).map_err(Error::Invalid)?;
    let r = build::build(&valid);
    let mut docs: Vec<String> = Vec::new();
    let mut push = |v: serde_json::Value| {
        docs.push(serde_yaml::to_string(&v).expect("objects always render"));
    };
    push(with_kind(&r.config_map, "v1", "ConfigMap"));
    for ((svc, set), pdb) in r
        .services
        .iter()
        .zip(&r.stateful_sets)
        .zip(&r.pod_disruption_budgets)
    {
        push(with_kind(svc, "v1", "Service"));
        push(with_kind(set, "apps/v1", "StatefulSet"));
        push(with_kind(pdb, "policy/v1", "PodDisruptionBudget"));
    }
    if let Some(m) = &r.pod_monitor {
        push(m.clone());
    }
    Ok(docs.join("---\n"))
}

/// `obj` as JSON with its apiVersion and kind first.
fn with_kind(obj: &impl serde::Serialize, api_version: &str, kind: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(obj).expect("objects always serialise");
    if let Some(m) = v.as_object_mut() {
        m.insert("apiVersion".into(), api_version.into());
        m.insert("kind".into(), kind.into());
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn render_prints_every_object_or_names_the_bad_fields() {
        let out = super::render(
            "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {name: demo}\nspec: {partitions: 2}\n",
            "dssmr:test",
        )
        .unwrap();
        assert_eq!(out.matches("kind: StatefulSet").count(), 3);
        assert_eq!(out.matches("kind: Service\n").count(), 3);
        assert_eq!(out.matches("kind: PodDisruptionBudget").count(), 3);
        assert_eq!(out.matches("kind: ConfigMap").count(), 1);
        assert!(out.contains("image: dssmr:test"));
        let e = super::render(
            "apiVersion: dssmr.io/v1alpha1\nkind: DSSMRCluster\nmetadata: {name: demo}\nspec: {partitions: 2, replicasPerPartition: 2}\n",
            "dssmr:test",
        )
        .unwrap_err();
        assert!(e.to_string().contains("spec.replicasPerPartition"), "{e}");
    }
}
