//! Cluster DNS for the kubelet nodes (Debian has no CoreDNS): one `dnsmasq` listening on every
//! node bridge's address (each kubelet's `--cluster-dns` is its own bridge's), answering
//! `cluster.local` names from a hosts file, and a watcher that keeps that file equal to the
//! Endpoints of the cluster's Services.
//!
//! The watcher is a `kubectl get endpoints --all-namespaces --watch --output-watch-events -o json`
//! child read as a JSON stream: on every event it rebuilds the file (written to a temp name and
//! renamed), and when the text changed sends dnsmasq SIGHUP, which rereads it. Records:
//! `<hostname>.<service>.<ns>.svc.cluster.local` for every address that has a hostname
//! (StatefulSet pods under their headless Service), `notReadyAddresses` included (peers must
//! find each other before they are Ready), and `<service>.<ns>.svc.cluster.local` with every
//! address of a headless Service. Nothing is cached (`--cache-size=0`), names outside
//! `cluster.local` get no answer (`--no-resolv`): pods here reach nothing outside anyway.
//!
//! It owns the dnsmasq process and the watcher (thread and kubectl child); [`ClusterDns::stop`]
//! kills both by pid. It reads the machine's own dnsmasq config never (`--conf-file=/dev/null`).

use super::Daemon;
use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The cluster domain the kubelets get (`--cluster-domain`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The running DNS server and its Endpoints watcher.
pub struct ClusterDns {
    dnsmasq: Option<Daemon>,
    stop: Arc<AtomicBool>,
    watch: Arc<Mutex<Option<Child>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    hosts: PathBuf,
}

/// One address of an Endpoints object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Address {
    ip: String,
    hostname: Option<String>,
}

/// (namespace, service) → (headless, addresses).
type Table = BTreeMap<(String, String), (bool, Vec<Address>)>;

impl ClusterDns {
    /// Starts dnsmasq on `listen` (port 53 of each address) and the watcher with the admin
    /// `kubeconfig`; the hosts file lives in `dir`.
    pub fn start(
        dir: &Path,
        listen: &[String],
        kubectl: &Path,
        kubeconfig: &Path,
    ) -> anyhow::Result<ClusterDns> {
        let hosts = dir.join("cluster-hosts");
        std::fs::write(&hosts, "")?;
        let mut cmd = Command::new(super::on_path("dnsmasq").ok_or_else(|| {
            anyhow::anyhow!("dnsmasq not found: run `bash e2e/k8s/prepare.sh` (apt dnsmasq-base)")
        })?);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            "--cache-size=0",
            "--no-negcache",
            "--user=root",
            "--group=root",
            "--log-facility=-",
        ])
        .arg(format!("--local=/{CLUSTER_DOMAIN}/"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
        for a in listen {
            cmd.arg(format!("--listen-address={a}"));
        }
        let mut dnsmasq = Daemon::spawn("dnsmasq", cmd, &dir.join("dnsmasq.log"))?;
        let dnsmasq_pid = dnsmasq.pid();
        // Serving once every address has its UDP socket; an exit (port 53 taken) fails here,
        // with dnsmasq's own words, rather than as pods that cannot find each other.
        crate::wait_for(
            "dnsmasq listening",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                if let Some(status) = dnsmasq.exited() {
                    return Ok(Err(format!(
                        "dnsmasq exited ({status}):\n{}",
                        dnsmasq.tail(10)
                    )));
                }
                let bound = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
                match listen.iter().find(|a| !udp_bound(&bound, a, 53)) {
                    None => Ok(Ok(())),
                    Some(a) => Err(format!("not yet on {a}:53")),
                }
            },
        )?
        .map_err(|e| anyhow::anyhow!(e))?;

        let stop = Arc::new(AtomicBool::new(false));
        let watch: Arc<Mutex<Option<Child>>> = Arc::default();
        let thread = {
            let (stop, watch, hosts) = (stop.clone(), watch.clone(), hosts.clone());
            let (kubectl, kubeconfig) = (kubectl.to_path_buf(), kubeconfig.to_path_buf());
            let log = dir.join("dns-watch.log");
            std::thread::spawn(move || {
                watch_loop(
                    &stop,
                    &watch,
                    &kubectl,
                    &kubeconfig,
                    &hosts,
                    dnsmasq_pid,
                    &log,
                )
            })
        };
        Ok(ClusterDns {
            dnsmasq: Some(dnsmasq),
            stop,
            watch,
            thread: Some(thread),
            hosts,
        })
    }

    /// The current hosts file (for failure reports).
    pub fn hosts(&self) -> String {
        std::fs::read_to_string(&self.hosts).unwrap_or_default()
    }

    /// The pid of dnsmasq, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.dnsmasq.as_ref().map(Daemon::pid)
    }

    /// Stops the watcher (kills its kubectl, joins the thread) and dnsmasq. Idempotent.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(child) = self.watch.lock().map(|mut w| w.take()).unwrap_or(None) {
            kill_child(child);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut d) = self.dnsmasq.take() {
            d.terminate(Duration::from_secs(5));
        }
    }
}

impl Drop for ClusterDns {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill_child(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs watches until `stop`; a watch that ends (the API server closes it) is started again
/// after a short pause, so a dead API server does not spin the loop.
fn watch_loop(
    stop: &AtomicBool,
    slot: &Mutex<Option<Child>>,
    kubectl: &Path,
    kubeconfig: &Path,
    hosts: &Path,
    dnsmasq: u32,
    log: &Path,
) {
    let mut written = String::new();
    let mut table = Table::new();
    while !stop.load(Ordering::SeqCst) {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let spawned = Command::new(kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "--request-timeout=0",
                "get",
                "endpoints",
                "--all-namespaces",
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn();
        let Ok(mut child) = spawned else {
            return;
        };
        let Some(stdout) = child.stdout.take() else {
            kill_child(child);
            return;
        };
        if let Ok(mut w) = slot.lock() {
            *w = Some(child);
        }
        // Every watch starts with ADDED for each existing object, which overwrite their
        // entries: the table is kept across watches, so a restarted watch never publishes a
        // half-listed file (an object deleted between two watches stays until the run ends).
        let events = serde_json::Deserializer::from_reader(BufReader::new(stdout))
            .into_iter::<serde_json::Value>();
        for event in events {
            let Ok(event) = event else { break };
            apply_event(&mut table, &event);
            let text = render(&table);
            if text != written && write_atomically(hosts, &text).is_ok() {
                written = text;
                // SAFETY: kill(2) of the dnsmasq process this module started.
                unsafe {
                    libc::kill(dnsmasq as i32, libc::SIGHUP);
                }
            }
        }
        if let Some(child) = slot.lock().map(|mut w| w.take()).unwrap_or(None) {
            kill_child(child);
        }
        if !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Folds one watch event (`{"type": ..., "object": Endpoints}`) into `table`.
fn apply_event(table: &mut Table, event: &serde_json::Value) {
    let obj = &event["object"];
    let meta = &obj["metadata"];
    let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else {
        return;
    };
    let key = (ns.to_string(), name.to_string());
    if event["type"] == "DELETED" {
        table.remove(&key);
        return;
    }
    let headless = meta["labels"]
        .as_object()
        .is_some_and(|l| l.contains_key("service.kubernetes.io/headless"));
    let mut addrs = Vec::new();
    for subset in obj["subsets"].as_array().into_iter().flatten() {
        for field in ["addresses", "notReadyAddresses"] {
            for a in subset[field].as_array().into_iter().flatten() {
                if let Some(ip) = a["ip"].as_str() {
                    addrs.push(Address {
                        ip: ip.to_string(),
                        hostname: a["hostname"].as_str().map(str::to_string),
                    });
                }
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    table.insert(key, (headless, addrs));
}

/// The hosts file for `table` (see the module doc for the records).
fn render(table: &Table) -> String {
    let mut out = String::new();
    for ((ns, svc), (headless, addrs)) in table {
        for a in addrs {
            if let Some(h) = &a.hostname {
                out.push_str(&format!("{} {h}.{svc}.{ns}.svc.{CLUSTER_DOMAIN}\n", a.ip));
            }
            if *headless {
                out.push_str(&format!("{} {svc}.{ns}.svc.{CLUSTER_DOMAIN}\n", a.ip));
            }
        }
    }
    out
}

/// True if `/proc/net/udp` (its text in `table`) has a socket bound to `ip:port`.
fn udp_bound(table: &str, ip: &str, port: u16) -> bool {
    let Ok(addr) = ip.parse::<std::net::Ipv4Addr>() else {
        return false;
    };
    // The kernel prints the address as the hex of its in-memory (big-endian) u32, read as a
    // little-endian number on x86: the octets reversed.
    let o = addr.octets();
    let want = format!(
        "{:02X}{:02X}{:02X}{:02X}:{port:04X}",
        o[3], o[2], o[1], o[0]
    );
    table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_bound_reads_proc_net_udp() {
        let table = "  sl  local_address rem_address   st\n   \
                     1: 0101C90A:0035 00000000:0000 07\n";
        assert!(udp_bound(table, "10.201.1.1", 53));
        assert!(!udp_bound(table, "10.201.2.1", 53));
    }

    #[test]
    fn hosts_have_pod_records_with_not_ready_addresses_and_headless_service_records() {
        let mut table = Table::new();
        let event = serde_json::json!({
            "type": "ADDED",
            "object": {
                "metadata": {"namespace": "default", "name": "kv-p1",
                             "labels": {"service.kubernetes.io/headless": ""}},
                "subsets": [{
                    "addresses": [{"ip": "10.201.1.2", "hostname": "kv-p1-0"}],
                    "notReadyAddresses": [{"ip": "10.201.2.2", "hostname": "kv-p1-1"}],
                }],
            },
        });
        apply_event(&mut table, &event);
        apply_event(
            &mut table,
            &serde_json::json!({"type": "ADDED", "object": {
                "metadata": {"namespace": "default", "name": "kubernetes"},
                "subsets": [{"addresses": [{"ip": "127.0.0.1"}]}]}}),
        );
        assert_eq!(
            render(&table),
            "10.201.1.2 kv-p1-0.kv-p1.default.svc.cluster.local\n\
             10.201.1.2 kv-p1.default.svc.cluster.local\n\
             10.201.2.2 kv-p1-1.kv-p1.default.svc.cluster.local\n\
             10.201.2.2 kv-p1.default.svc.cluster.local\n"
        );
        let mut deleted = event.clone();
        deleted["type"] = "DELETED".into();
        apply_event(&mut table, &deleted);
        assert_eq!(render(&table), "");
    }
}
