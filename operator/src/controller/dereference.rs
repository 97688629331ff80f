//! dereference: what a cluster runs now, read from the API server: the cluster config in its
//! ConfigMap ([`Deployed`], before validation: the validate step judges the spec against it)
//! and the cluster's StatefulSets (after validation: they are selected by the validated name,
//! and an invalid spec lists nothing).
//!
//! The ConfigMap also carries the storage the StatefulSets were built with (annotation
//! [`STORAGE_ANNOTATION`], which the build step writes): the cluster config has no storage,
//! and the validate step must know it to refuse a change.
//!
//! Takes the kube client and only reads (GET, LIST). Must not write anything, nor judge what
//! it reads: a ConfigMap that holds no valid cluster config counts as none (logged; the apply
//! step overwrites it), and so does an unreadable storage annotation.

use crate::build::STORAGE_ANNOTATION;
use crate::crd::DSSMRCluster;
use crate::validate::{Deployed, DeployedStorage, ValidatedCluster};
use dssmr_api::config::ClusterConfig;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use thiserror::Error;

/// Why the dereference step could not read what runs.
#[derive(Debug, Error)]
pub enum DereferenceError {
    /// The cluster's ConfigMap could not be read (a missing one is no error: a new cluster).
    #[error("get ConfigMap {object}: {source}")]
    ConfigMap {
        /// `namespace/name` of the ConfigMap.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The cluster's StatefulSets could not be listed.
    #[error("list StatefulSets {selector}: {source}")]
    StatefulSets {
        /// The label selector of the list.
        selector: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// The cluster config the replicas of `c` run now (its ConfigMap).
pub async fn deployed(
    client: &Client,
    c: &DSSMRCluster,
    ns: &str,
) -> Result<Deployed, DereferenceError> {
    let name = format!("{}-config", c.name_any());
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let map = maps
        .get_opt(&name)
        .await
        .map_err(|source| DereferenceError::ConfigMap {
            object: format!("{ns}/{name}"),
            source,
        })?;
    let storage = map
        .as_ref()
        .and_then(|m| m.metadata.annotations.as_ref())
        .and_then(|a| a.get(STORAGE_ANNOTATION))
        .and_then(|json| match serde_json::from_str(json) {
            Ok(storage) => Some(DeployedStorage(storage)),
            Err(e) => {
                tracing::warn!(error = %e, "ConfigMap {ns}/{name}: unreadable {STORAGE_ANNOTATION}");
                None
            }
        });
    let text = map
        .and_then(|m| m.data)
        .and_then(|mut d| d.remove("cluster.yaml"));
    let config = match text.map(|t| ClusterConfig::from_yaml(&t)) {
        Some(Ok(config)) => Some(config),
        Some(Err(e)) => {
            // The operator wrote it; whatever changed it is overwritten by this reconcile.
            tracing::warn!(error = %e, "ConfigMap {ns}/{name} holds no valid cluster config");
            None
        }
        None => None,
    };
    // Storage is judged only together with the config it was applied with.
    let storage = storage.filter(|_| config.is_some());
    Ok(Deployed { config, storage })
}

/// The StatefulSets of cluster `v` that exist.
pub async fn stateful_sets(
    client: &Client,
    v: &ValidatedCluster,
) -> Result<Vec<StatefulSet>, DereferenceError> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &v.namespace);
    let selector = format!("app.kubernetes.io/instance={}", v.name);
    let listed = sets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| DereferenceError::StatefulSets { selector, source })?;
    Ok(listed.items)
}
