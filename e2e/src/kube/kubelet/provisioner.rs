//! provisioner: dynamic hostPath volumes for the kubelet nodes, as a real cluster's external
//! provisioner gives them, so that any number of scale steps can run (a fixed set of made-up
//! volumes runs out: a removed partition's volumes stay `Released`, the next partition's
//! claims stay `Pending`).
//!
//! It installs the StorageClass [`STORAGE_CLASS`] (the default class, provisioner
//! [`PROVISIONER`], reclaim policy Delete) and then, on a thread of its own, every
//! [`POLL`]: a claim of that class that is `Pending` gets a PersistentVolume made for it
//! (`pvc-<claim uid>`, bound to the claim by its `claimRef`, a hostPath directory under the
//! run's directory owned by the images' user 65532), and a volume it made whose claim is
//! gone (`Released`) is deleted with its directory. The kube-controller-manager's volume
//! controller does the binding and leaves provisioning and deletion of such a class to this
//! (`volume.beta.kubernetes.io/storage-provisioner`, `pv.kubernetes.io/provisioned-by`).
//!
//! What to do is decided by [`plan`], pure, from the claims and volumes listed; the thread
//! only lists and performs. It never touches a volume it did not make, nor a directory
//! outside its own. It stops on drop.

use crate::kube::Kubectl;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The StorageClass of the provisioned volumes (the cluster's default class).
pub const STORAGE_CLASS: &str = "e2e-hostpath";
/// The provisioner's name, in the StorageClass and on the volumes it made.
pub const PROVISIONER: &str = "dssmr.io/e2e-hostpath";
/// How often claims and volumes are listed.
pub const POLL: Duration = Duration::from_millis(500);
/// The user (and group) of the images: the owner of every volume's directory.
const VOLUME_OWNER: u32 = 65532;

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make volume `volume` for the pending claim `namespace/name` (uid `uid`).
    Provision {
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        name: String,
        /// The claim's uid (the volume is bound to this claim, not to a later one of the
        /// same name).
        uid: String,
        /// The size asked for (`spec.resources.requests.storage`).
        size: String,
        /// The claim's access modes.
        access_modes: Value,
        /// The volume's name.
        volume: String,
    },
    /// Delete volume `volume`, which this made and whose claim is gone, and its directory.
    Reclaim {
        /// The volume's name.
        volume: String,
        /// Its hostPath directory.
        path: PathBuf,
    },
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list["items"].as_array().into_iter().flatten()
}

/// What to do, given every claim (`kubectl get pvc -A`) and every volume (`kubectl get pv`):
/// provision the pending claims of [`STORAGE_CLASS`] that no volume is made for yet, and
/// reclaim the volumes [`PROVISIONER`] made that are released or failed.
pub fn plan(claims: &Value, volumes: &Value) -> Vec<Action> {
    let bound_to: Vec<&str> = items(volumes)
        .filter_map(|v| v["spec"]["claimRef"]["uid"].as_str())
        .collect();
    let provision = items(claims)
        .filter(|c| c["spec"]["storageClassName"] == STORAGE_CLASS)
        .filter(|c| c["status"]["phase"] == "Pending")
        .filter(|c| c["spec"]["volumeName"].as_str().unwrap_or("").is_empty())
        .filter_map(|c| {
            let uid = c["metadata"]["uid"].as_str()?;
            if bound_to.contains(&uid) {
                return None;
            }
            Some(Action::Provision {
                namespace: c["metadata"]["namespace"].as_str()?.to_string(),
                name: c["metadata"]["name"].as_str()?.to_string(),
                uid: uid.to_string(),
                size: c["spec"]["resources"]["requests"]["storage"]
                    .as_str()?
                    .to_string(),
                access_modes: c["spec"]["accessModes"].clone(),
                volume: format!("pvc-{uid}"),
            })
        });
    let reclaim = items(volumes)
        .filter(|v| v["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == PROVISIONER)
        .filter(|v| matches!(v["status"]["phase"].as_str(), Some("Released" | "Failed")))
        .filter_map(|v| {
            Some(Action::Reclaim {
                volume: v["metadata"]["name"].as_str()?.to_string(),
                path: PathBuf::from(v["spec"]["hostPath"]["path"].as_str()?),
            })
        });
    provision.chain(reclaim).collect()
}

/// The volume made for a claim, its directory at `path`.
fn volume(action: &Action, path: &Path, run: &str) -> Option<Value> {
    let Action::Provision {
        namespace,
        name,
        uid,
        size,
        access_modes,
        volume,
    } = action
    else {
        return None;
    };
    Some(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume,
            "labels": {"dssmr.io/e2e-run": run},
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": access_modes,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": name,
                "uid": uid,
            },
            "hostPath": {"path": path, "type": "Directory"},
        },
    }))
}

/// The running provisioner; stops on drop.
pub struct Provisioner {
    stop: Arc<AtomicBool>,
    provisioned: Arc<AtomicUsize>,
    reclaimed: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Provisioner {
    /// Installs the StorageClass and starts provisioning into directories under `dir`.
    pub fn start(kubectl: Kubectl, run: &str, dir: &Path) -> anyhow::Result<Provisioner> {
        kubectl.apply_json(&json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }))?;
        let dir = dir.join("volumes");
        std::fs::create_dir_all(&dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let provisioned = Arc::new(AtomicUsize::new(0));
        let reclaimed = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, provisioned, reclaimed) =
                (stop.clone(), provisioned.clone(), reclaimed.clone());
            let run = run.to_string();
            std::thread::Builder::new()
                .name("e2e-provisioner".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match pass(&kubectl, &run, &dir) {
                            Ok((p, r)) => {
                                provisioned.fetch_add(p, Ordering::Relaxed);
                                reclaimed.fetch_add(r, Ordering::Relaxed);
                            }
                            Err(e) => eprintln!("provisioner: {e:#}"),
                        }
                        std::thread::sleep(POLL);
                    }
                })?
        };
        Ok(Provisioner {
            stop,
            provisioned,
            reclaimed,
            thread: Some(thread),
        })
    }

    /// Volumes made so far.
    pub fn provisioned(&self) -> usize {
        self.provisioned.load(Ordering::Relaxed)
    }

    /// Volumes deleted so far (their claims gone).
    pub fn reclaimed(&self) -> usize {
        self.reclaimed.load(Ordering::Relaxed)
    }
}

impl Drop for Provisioner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One pass: list, plan, perform. (volumes made, volumes deleted).
fn pass(kubectl: &Kubectl, run: &str, dir: &Path) -> anyhow::Result<(usize, usize)> {
    let claims = kubectl.get_json(&["pvc", "-A"])?;
    let volumes = kubectl.get_json(&["pv"])?;
    let (mut made, mut deleted) = (0, 0);
    for action in plan(&claims, &volumes) {
        match &action {
            Action::Provision { volume: name, .. } => {
                let path = dir.join(name);
                std::fs::create_dir_all(&path)?;
                std::os::unix::fs::chown(&path, Some(VOLUME_OWNER), Some(VOLUME_OWNER))?;
                if let Some(pv) = volume(&action, &path, run) {
                    kubectl.apply_json(&pv)?;
                    made += 1;
                }
            }
            Action::Reclaim { volume, path } => {
                kubectl.run(&["delete", "pv", volume, "--wait=false"], None)?;
                // Only directories this provisioner made.
                if path.parent() == Some(dir) {
                    let _ = std::fs::remove_dir_all(path);
                }
                deleted += 1;
            }
        }
    }
    Ok((made, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, uid: &str, class: &str, phase: &str) -> Value {
        json!({
            "metadata": {"namespace": "default", "name": name, "uid": uid},
            "spec": {
                "storageClassName": class,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "64Mi"}},
            },
            "status": {"phase": phase},
        })
    }

    fn volume_of(name: &str, claim_uid: &str, by: &str, phase: &str) -> Value {
        json!({
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": by}},
            "spec": {"claimRef": {"uid": claim_uid}, "hostPath": {"path": format!("/d/{name}")}},
            "status": {"phase": phase},
        })
    }

    #[test]
    fn pending_claims_of_the_class_get_a_volume_once() {
        let claims = json!({"items": [
            claim("data-kv-p3-0", "u1", STORAGE_CLASS, "Pending"),
            claim("data-kv-p3-1", "u2", STORAGE_CLASS, "Pending"),
            claim("bound", "u3", STORAGE_CLASS, "Bound"),
            claim("other-class", "u4", "fast", "Pending"),
        ]});
        // u2's volume is made but not bound yet: not made twice.
        let volumes = json!({"items": [volume_of("pvc-u2", "u2", PROVISIONER, "Available")]});
        let actions = plan(&claims, &volumes);
        assert_eq!(actions.len(), 1, "{actions:?}");
        let Action::Provision {
            name, uid, size, ..
        } = &actions[0]
        else {
            panic!("{actions:?}")
        };
        assert_eq!(
            (name.as_str(), uid.as_str(), size.as_str()),
            ("data-kv-p3-0", "u1", "64Mi")
        );
        let pv = volume(&actions[0], Path::new("/d/pvc-u1"), "r1").expect("a volume");
        assert_eq!(pv["metadata"]["name"], "pvc-u1");
        assert_eq!(pv["spec"]["claimRef"]["uid"], "u1");
        assert_eq!(pv["spec"]["storageClassName"], STORAGE_CLASS);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    }

    #[test]
    fn released_volumes_it_made_are_reclaimed_and_no_others() {
        let volumes = json!({"items": [
            volume_of("pvc-u1", "u1", PROVISIONER, "Released"),
            volume_of("pvc-u2", "u2", PROVISIONER, "Bound"),
            volume_of("manual", "u3", "someone-else", "Released"),
        ]});
        assert_eq!(
            plan(&json!({"items": []}), &volumes),
            [Action::Reclaim {
                volume: "pvc-u1".into(),
                path: PathBuf::from("/d/pvc-u1"),
            }]
        );
    }
}
