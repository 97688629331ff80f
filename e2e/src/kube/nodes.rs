//! What a kubelet would do, done by the test through the API: Nodes labelled like the paper's
//! hardware, pods marked Ready through the status subresource, force deletion. Every call is
//! a bounded `kubectl`; nothing here starts a process of its own.

use super::*;

impl ControlPlane {
    /// Creates Node `name` of class `hw`: labels `kubernetes.io/hostname`, [`HARDWARE_LABEL`]
    /// and os/arch; capacity and allocatable (cpu, memory, 110 pods); condition Ready. The
    /// API server keeps the status given on create; no kubelet ever updates it.
    pub fn create_node(&self, name: &str, hw: Hardware) -> anyhow::Result<()> {
        let resources = serde_json::json!({
            "cpu": hw.cpus().to_string(),
            "memory": format!("{}Gi", hw.memory_gib()),
            "pods": "110",
        });
        let now = now_rfc3339();
        let node = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    HARDWARE_LABEL: hw.label(),
                },
                "annotations": {"dssmr.io/processors": hw.processors()},
            },
            "spec": {},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "E2E",
                    "message": "created by the e2e harness (no kubelet)",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                }],
                "nodeInfo": {
                    "architecture": "amd64", "operatingSystem": "linux",
                    "kubeletVersion": VERSION, "kubeProxyVersion": VERSION,
                    "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                    "osImage": "", "containerRuntimeVersion": "",
                },
            },
        });
        self.kubectl_stdin(&["create", "-f", "-"], &node.to_string())?;
        let created = self.get_json(&["node", name])?;
        anyhow::ensure!(
            created["status"]["allocatable"]["cpu"]
                .as_str()
                .and_then(|c| c.parse::<u32>().ok())
                == Some(hw.cpus()),
            "Node {name} lost its status on create: {}",
            created["status"]
        );
        if let Some(taints) = created["spec"]["taints"].as_array() {
            anyhow::ensure!(taints.is_empty(), "Node {name} got taints: {taints:?}");
        }
        Ok(())
    }

    /// The node pod `ns/name` is bound to, if any.
    pub fn pod_node(&self, ns: &str, name: &str) -> anyhow::Result<Option<String>> {
        let pod = self.get_json(&["pod", "-n", ns, name])?;
        Ok(pod["spec"]["nodeName"].as_str().map(str::to_string))
    }

    /// Marks bound pod `ns/name` Running and Ready through the status subresource, as a
    /// kubelet would (phase, pod IP, conditions, ready container statuses).
    pub fn mark_pod_ready(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        let pod = self.get_json(&["pod", "-n", ns, name])?;
        anyhow::ensure!(
            pod["spec"]["nodeName"].is_string(),
            "pod {ns}/{name} is not bound to a node"
        );
        let now = now_rfc3339();
        let statuses: Vec<serde_json::Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                serde_json::json!({
                    "name": c["name"], "image": c["image"], "imageID": "",
                    "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                })
            })
            .collect();
        let ip = pod_ip(name);
        let cond = |t: &str| {
            serde_json::json!({"type": t, "status": "True", "lastProbeTime": null,
                               "lastTransitionTime": now})
        };
        let patch = serde_json::json!({
            "status": {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now,
                "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady")],
                "containerStatuses": statuses,
            }
        });
        self.kubectl(&[
            "patch",
            "pod",
            "-n",
            ns,
            name,
            "--subresource=status",
            "--type=strategic",
            "-p",
            &patch.to_string(),
        ])?;
        Ok(())
    }

    /// Deletes pod `ns/name` at once (no kubelet would ever confirm a graceful deletion).
    pub fn force_delete_pod(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        self.kubectl(&[
            "delete",
            "pod",
            "-n",
            ns,
            name,
            "--grace-period=0",
            "--force",
            "--ignore-not-found",
            "--wait=false",
        ])?;
        Ok(())
    }
}
