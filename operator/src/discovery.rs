//! Scrape targets for a Prometheus without Kubernetes service discovery: the operator serves
//! the replicas (and benchmark clients) of every DSSMRCluster it watches in the format of
//! Prometheus' `http_sd_configs` (`/sd/replicas`, `/sd/clients`), one target group per pod
//! with the labels the chart's PodMonitors give (`namespace`, `cluster`, `pod`), so the
//! dashboard's queries work on either.
//!
//! A pod is a target once it runs and has an IP, and for as long as it is not being deleted;
//! its port is the container port named as the kind says (`http` for replicas, `metrics` for
//! clients).

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{json, Value};

/// What a target list is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Replica pods of DSSMRClusters (label `app.kubernetes.io/name=dssmr`), port `http`.
    Replicas,
    /// Benchmark clients (label `app.kubernetes.io/name=dssmr-bench`), port `metrics`.
    Clients,
}

impl Targets {
    fn selector(self) -> &'static str {
        match self {
            Targets::Replicas => {
                "app.kubernetes.io/name=dssmr,app.kubernetes.io/managed-by=dssmr-operator"
            }
            Targets::Clients => "app.kubernetes.io/name=dssmr-bench",
        }
    }

    fn port_name(self) -> &'static str {
        match self {
            Targets::Replicas => "http",
            Targets::Clients => "metrics",
        }
    }
}

/// Lists the pods of `kind` (in `namespace`, or everywhere) as `http_sd` target groups.
pub async fn list(client: &Client, namespace: Option<&str>, kind: Targets) -> kube::Result<Value> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let pods = api
        .list(&ListParams::default().labels(kind.selector()))
        .await?;
    Ok(target_groups(&pods.items, kind))
}

/// The `http_sd` document for `pods`: pods without an IP, not running, being deleted or
/// without the kind's port are left out.
pub fn target_groups(pods: &[Pod], kind: Targets) -> Value {
    let groups: Vec<Value> = pods
        .iter()
        .filter_map(|p| {
            if p.metadata.deletion_timestamp.is_some() {
                return None;
            }
            let status = p.status.as_ref()?;
            if status.phase.as_deref() != Some("Running") {
                return None;
            }
            let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
            let port = p
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|port| port.name.as_deref() == Some(kind.port_name()))?
                .container_port;
            let labels = p.metadata.labels.clone().unwrap_or_default();
            let host = if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            };
            Some(json!({
                "targets": [host],
                "labels": {
                    "namespace": p.metadata.namespace.clone().unwrap_or_default(),
                    "cluster": labels.get("app.kubernetes.io/instance").cloned().unwrap_or_default(),
                    "pod": p.metadata.name.clone().unwrap_or_default(),
                },
            }))
        })
        .collect();
    Value::Array(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, ip: Option<&str>, port: &str, deleting: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "namespace": "ns",
                "labels": {"app.kubernetes.io/instance": "kv", "app.kubernetes.io/name": "dssmr"},
            },
            "spec": {"containers": [{"name": "replica", "ports": [
                {"name": "grpc", "containerPort": 7000},
                {"name": port, "containerPort": 8080},
            ]}]},
            "status": {"phase": phase, "podIP": ip},
        }))
        .unwrap();
        if deleting {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-12-02T00:00:00Z".parse().unwrap(),
                ));
        }
        p
    }

    #[test]
    fn running_pods_with_an_ip_and_the_named_port_become_targets() {
        let pods = [
            pod("kv-p1-0", "Running", Some("10.1.0.5"), "http", false),
            pod("kv-p1-1", "Pending", None, "http", false),
            pod("kv-p1-2", "Running", Some("10.1.0.6"), "http", true),
            pod("kv-p1-3", "Running", Some("10.1.0.7"), "other", false),
            pod("kv-p1-4", "Running", Some("fd00::7"), "http", false),
        ];
        let got = target_groups(&pods, Targets::Replicas);
        assert_eq!(
            got,
            json!([
                {"targets": ["10.1.0.5:8080"], "labels": {"namespace": "ns", "cluster": "kv", "pod": "kv-p1-0"}},
                {"targets": ["[fd00::7]:8080"], "labels": {"namespace": "ns", "cluster": "kv", "pod": "kv-p1-4"}},
            ])
        );
        let clients = target_groups(&pods, Targets::Clients);
        assert_eq!(clients, json!([]));
    }
}
