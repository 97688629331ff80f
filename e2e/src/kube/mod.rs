//! A real Kubernetes control plane for the operator e2e: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler (v1.20.2, built from Debian's source package by
//! `e2e/k8s/prepare.sh`) as child processes on 127.0.0.1, and the helpers a test needs
//! without a kubelet: Nodes labelled like the paper's hardware, pods marked Ready through the
//! status subresource, force deletion, `kubectl` with an admin kubeconfig.
//!
//! It owns a temp dir (certificates and keys made with the machine's `openssl`, kubeconfigs,
//! etcd data, one log per component) and the processes, each in its own process group; on
//! drop every group is killed and reaped, and when the thread is panicking the tail of each
//! log is printed. Readiness is polled (etcd `/health`, `/readyz`, the scheduler's `/healthz`,
//! the `default` ServiceAccount), never slept for, and every wait and every `kubectl` call has
//! a deadline. It must not touch anything outside its temp dir and 127.0.0.1.
//!
//! Missing binaries are an error naming `e2e/k8s/prepare.sh`; tests fail on it, loudly.
//!
//! Real kubelet nodes (pods that run, probes, DNS, volumes) are in [`kubelet`]; the rest of
//! this module and `nodes.rs` serve the tests that stand in for a kubelet.

pub mod kubelet;
mod nodes;
mod pki;

use crate::prometheus::free_port;
use crate::wait_for;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Kubernetes version `e2e/k8s/prepare.sh` builds.
pub const VERSION: &str = "v1.20.2";

/// How long one `kubectl` call may take before it is killed.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the whole control plane may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Node label carrying the hardware class (the operator's hardware profiles select on it).
pub const HARDWARE_LABEL: &str = "dssmr.io/hardware";

/// The paper's two node classes (DS-SMR tech report, §6: the evaluation cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hardware {
    /// Replica nodes: HP SE1102, 2× Xeon L5420 quad-core 2.5 GHz (8 CPUs), 8 GiB.
    HpSe1102,
    /// Client nodes: Dell SC1435, 2× Opteron 2212 dual-core 2.0 GHz (4 CPUs), 4 GiB.
    DellSc1435,
}

impl Hardware {
    /// The value of [`HARDWARE_LABEL`].
    pub fn label(self) -> &'static str {
        match self {
            Hardware::HpSe1102 => "hp-se1102",
            Hardware::DellSc1435 => "dell-sc1435",
        }
    }

    /// CPUs of one node.
    pub fn cpus(self) -> u32 {
        match self {
            Hardware::HpSe1102 => 8,
            Hardware::DellSc1435 => 4,
        }
    }

    /// Memory of one node in GiB.
    pub fn memory_gib(self) -> u32 {
        match self {
            Hardware::HpSe1102 => 8,
            Hardware::DellSc1435 => 4,
        }
    }

    /// The processors, for the node's description.
    pub fn processors(self) -> &'static str {
        match self {
            Hardware::HpSe1102 => "2x Intel Xeon L5420 quad-core 2.5 GHz",
            Hardware::DellSc1435 => "2x AMD Opteron 2212 dual-core 2.0 GHz",
        }
    }
}

/// Where the control-plane binaries are: `$DSSMR_K8S_BIN`, else `$DSSMR_CACHE/k8s/bin`
/// (default cache `/var/cache/dssmr`), as `e2e/k8s/prepare.sh` leaves them.
pub fn bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("DSSMR_K8S_BIN") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("DSSMR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/dssmr"));
    cache.join("k8s").join("bin")
}

/// The executables the control plane needs, or an error naming what is missing and the
/// script that provides it.
pub fn binaries() -> anyhow::Result<Binaries> {
    let dir = bin_dir();
    let find = |name: &str| -> Option<PathBuf> {
        let p = dir.join(name);
        p.is_file().then_some(p)
    };
    let on_path = |name: &str| -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    let mut missing = Vec::new();
    let mut need = |name: &str, found: Option<PathBuf>| -> PathBuf {
        found.unwrap_or_else(|| {
            missing.push(name.to_string());
            PathBuf::new()
        })
    };
    let b = Binaries {
        etcd: need("etcd", on_path("etcd")),
        apiserver: need("kube-apiserver", find("kube-apiserver")),
        controller_manager: need("kube-controller-manager", find("kube-controller-manager")),
        scheduler: need("kube-scheduler", find("kube-scheduler")),
        kubectl: need("kubectl", on_path("kubectl")),
        openssl: need("openssl", on_path("openssl")),
    };
    if !missing.is_empty() {
        anyhow::bail!(
            "\n\n*** The Kubernetes e2e needs a real control plane, and {} {} missing \
             (looked in {} and $PATH).\n*** Run `bash e2e/k8s/prepare.sh` (as root) once on \
             this machine: it installs etcd and builds kube-apiserver, kube-controller-manager \
             and kube-scheduler {VERSION} into that cache.\n",
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            dir.display()
        );
    }
    Ok(b)
}

/// Paths of the executables.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// etcd (Debian's `etcd-server`).
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// kube-controller-manager.
    pub controller_manager: PathBuf,
    /// kube-scheduler.
    pub scheduler: PathBuf,
    /// kubectl (preinstalled).
    pub kubectl: PathBuf,
    /// openssl (certificates and keys).
    pub openssl: PathBuf,
}

/// One started component.
struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running control plane; everything stops when it drops.
pub struct ControlPlane {
    bins: Binaries,
    dir: tempfile::TempDir,
    components: std::cell::RefCell<Vec<Component>>,
    kubeconfig: PathBuf,
    server: String,
    ca_cert: PathBuf,
    ca_key: PathBuf,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler on free
    /// 127.0.0.1 ports and waits until the API is ready, the scheduler is healthy and the
    /// `default` ServiceAccount exists (so pods can be created).
    pub fn start() -> anyhow::Result<ControlPlane> {
        let bins = binaries()?;
        let started = Instant::now();
        let dir = tempfile::Builder::new().prefix("dssmr-k8s-").tempdir()?;
        let pki = dir.path().join("pki");
        std::fs::create_dir_all(&pki)?;
        let mut cp = ControlPlane {
            kubeconfig: dir.path().join("admin.kubeconfig"),
            ca_cert: pki.join("ca.crt"),
            ca_key: pki.join("ca.key"),
            server: String::new(),
            bins,
            dir,
            components: Default::default(),
        };
        let deadline = started + START_TIMEOUT;
        let left = || deadline.saturating_duration_since(Instant::now());

        // Certificates: a CA, the API server's serving certificate, one client certificate
        // per identity, and the service-account signing key pair.
        cp.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=dssmr-e2e-ca",
            "-keyout",
            &s(&cp.ca_key),
            "-out",
            &s(&cp.ca_cert),
        ])?;
        let sans = "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,\
                    DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1";
        cp.sign(&pki, "apiserver", "/CN=kube-apiserver", Some(sans))?;
        cp.sign(&pki, "admin", "/O=system:masters/CN=admin", None)?;
        cp.sign(
            &pki,
            "controller-manager",
            "/CN=system:kube-controller-manager",
            None,
        )?;
        cp.sign(&pki, "scheduler", "/CN=system:kube-scheduler", None)?;
        let sa_key = pki.join("sa.key");
        let sa_pub = pki.join("sa.pub");
        cp.openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &s(&sa_key),
        ])?;
        cp.openssl(&["pkey", "-in", &s(&sa_key), "-pubout", "-out", &s(&sa_pub)])?;

        // etcd.
        let (etcd_client, etcd_peer) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd = cp.bins.etcd.clone();
        cp.spawn(
            "etcd",
            &etcd,
            &[
                "--name=e2e".into(),
                format!("--data-dir={}", s(&cp.dir.path().join("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                "--log-level=warn".into(),
            ],
        )?;
        cp.wait("etcd /health", left(), || {
            let (code, body) = crate::probe::get(&format!("{etcd_url}/health"))?;
            (code == 200 && body.contains("true"))
                .then_some(())
                .ok_or(format!("{code} {body}"))
        })?;

        // kube-apiserver.
        let api_port = free_port()?;
        cp.server = format!("https://127.0.0.1:{api_port}");
        let p = |f: &str| s(&pki.join(f));
        let apiserver = cp.bins.apiserver.clone();
        cp.spawn(
            "kube-apiserver",
            &apiserver,
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                "--insecure-port=0".into(),
                format!("--cert-dir={}", s(&cp.dir.path().join("apiserver-certs"))),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                "--api-audiences=https://kubernetes.default.svc.cluster.local".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=Node,RBAC".into(),
                // Without a kubelet nothing would ever lift the not-ready taint this plugin
                // puts on new Nodes.
                "--disable-admission-plugins=TaintNodesByCondition".into(),
                // Endpoints of the `kubernetes` Service cannot be loopback addresses.
                "--endpoint-reconciler-type=none".into(),
                "--enable-priority-and-fairness=false".into(),
                // Logs, exec and port-forward reach a kubelet at its node IP (`kubelet`
                // nodes are named for the test; their names resolve nowhere).
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--profiling=false".into(),
                "--logtostderr=true".into(),
                "--v=1".into(),
            ],
        )?;
        cp.write_kubeconfig(&cp.kubeconfig.clone(), "admin")?;
        cp.wait("kube-apiserver /readyz", left(), || {
            cp.kubectl(&["get", "--raw=/readyz"])
                .map_err(|e| e.to_string())
                .and_then(|out| {
                    (out.trim() == "ok")
                        .then_some(())
                        .ok_or(out.trim().to_string())
                })
        })?;

        // kube-controller-manager and kube-scheduler, each with its own identity.
        let cm_kubeconfig = cp.dir.path().join("controller-manager.kubeconfig");
        cp.write_kubeconfig(&cm_kubeconfig, "controller-manager")?;
        let cm_port = free_port()?;
        let cm = cp.bins.controller_manager.clone();
        cp.spawn(
            "kube-controller-manager",
            &cm,
            &[
                component_args(&cm_kubeconfig, cm_port, &cp.dir.path().join("cm-certs")),
                vec![
                    format!("--service-account-private-key-file={}", p("sa.key")),
                    format!("--root-ca-file={}", p("ca.crt")),
                    "--use-service-account-credentials=true".into(),
                    // No kubelets: the node lifecycle controller would mark every Node Unknown
                    // and taint it after ~45 s.
                    "--controllers=*,-nodelifecycle".into(),
                ],
            ]
            .concat(),
        )?;
        let sched_kubeconfig = cp.dir.path().join("scheduler.kubeconfig");
        cp.write_kubeconfig(&sched_kubeconfig, "scheduler")?;
        let sched_port = free_port()?;
        let sched = cp.bins.scheduler.clone();
        cp.spawn(
            "kube-scheduler",
            &sched,
            &component_args(
                &sched_kubeconfig,
                sched_port,
                &cp.dir.path().join("scheduler-certs"),
            ),
        )?;
        // Their self-signed serving certificates are not checked, and /healthz needs no
        // rights (a dummy token only keeps kubectl from prompting for a password).
        let probe = cp.dir.path().join("probe.kubeconfig");
        std::fs::write(
            &probe,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: p\n  cluster:\n    \
             server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: p\n  \
             user: {token: anonymous-probe}\ncontexts:\n- name: p\n  context: {cluster: p, user: p}\ncurrent-context: p\n",
        )?;
        for (what, port) in [
            ("kube-scheduler /healthz", sched_port),
            ("kube-controller-manager /healthz", cm_port),
        ] {
            let server = format!("--server=https://127.0.0.1:{port}");
            cp.wait(what, left(), || {
                cp.kubectl_with(&probe, &[&server, "get", "--raw=/healthz"], None)
                    .map_err(|e| e.to_string())
                    .and_then(|out| {
                        (out.trim() == "ok")
                            .then_some(())
                            .ok_or(out.trim().to_string())
                    })
            })?;
        }
        // The service-account controllers of kube-controller-manager at work: without the
        // `default` ServiceAccount (and its token) no pod can be created.
        cp.wait("ServiceAccount default/default", left(), || {
            cp.kubectl(&["get", "serviceaccount", "default", "-o", "name"])
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?;
        eprintln!(
            "kube: control plane {VERSION} ready at {} in {:.1} s (dir {})",
            cp.server,
            started.elapsed().as_secs_f64(),
            cp.dir.path().display()
        );
        Ok(cp)
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The admin kubeconfig (user `admin` in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the API server's certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// The temp dir everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a kubeconfig at `path` for a bearer `token` (e.g. a ServiceAccount's).
    pub fn token_kubeconfig(&self, path: &Path, token: &str) -> anyhow::Result<()> {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    \
                 server: {}\n    certificate-authority: {}\nusers:\n- name: token\n  user:\n    \
                 token: {token}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: token, \
                 namespace: default}}\ncurrent-context: e2e\n",
                self.server,
                s(&self.ca_cert)
            ),
        )?;
        Ok(())
    }

    /// Runs `kubectl ARGS` with the admin kubeconfig; stdout, or an error with stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.kubectl_with(&self.kubeconfig, args, None)
    }

    /// Runs `kubectl ARGS` with the admin kubeconfig and `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> anyhow::Result<String> {
        self.kubectl_with(&self.kubeconfig, args, Some(input))
    }

    /// Runs `kubectl ARGS` with `kubeconfig`, bounded by [`KUBECTL_TIMEOUT`].
    pub fn kubectl_with(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        input: Option<&str>,
    ) -> anyhow::Result<String> {
        Kubectl {
            kubectl: self.bins.kubectl.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
        }
        .run(args, input)
    }

    /// kubectl with the admin kubeconfig, for another thread (the control plane itself stays
    /// on the test's).
    pub fn admin_kubectl(&self) -> Kubectl {
        Kubectl {
            kubectl: self.bins.kubectl.clone(),
            kubeconfig: self.kubeconfig.clone(),
        }
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        self.admin_kubectl().get_json(args)
    }

    /// Creates (or replaces) `value` with `kubectl apply -f -` (client-side).
    pub fn apply_json(&self, value: &serde_json::Value) -> anyhow::Result<String> {
        self.admin_kubectl().apply_json(value)
    }

    /// The last lines of every component's log (for failure reports).
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for c in self.components.borrow().iter() {
            let text = std::fs::read_to_string(&c.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("----- {} ({}) -----\n", c.name, c.log.display()));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Polls `check` until it holds, failing early (with the logs) when a component exits.
    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<(), String>,
    ) -> anyhow::Result<()> {
        let mut exited = None;
        let r = wait_for(what, timeout, Duration::from_millis(100), || {
            for c in self.components.borrow_mut().iter_mut() {
                if let Ok(Some(status)) = c.child.try_wait() {
                    exited = Some(format!("{} exited ({status})", c.name));
                    // Stop polling at once; reported below.
                    return Ok(());
                }
            }
            check()
        });
        if let Some(e) = exited {
            anyhow::bail!("{what}: {e}\n{}", self.log_tails(30));
        }
        r.map_err(|e| anyhow::anyhow!("{e}\n{}", self.log_tails(30)))
    }

    fn spawn(&self, name: &'static str, bin: &Path, args: &[String]) -> anyhow::Result<()> {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        // SAFETY: prctl(2) only, between fork and exec: the component gets SIGKILL when the
        // thread that started it ends, so nothing outlives a test that aborts.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name} ({}): {e}", bin.display()))?;
        self.components
            .borrow_mut()
            .push(Component { name, child, log });
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "kube: control plane logs (last lines):\n{}",
                self.log_tails(15)
            );
        }
        // Reverse start order; SIGKILL the whole process group of each, then reap it.
        for c in self.components.get_mut().iter_mut().rev() {
            // SAFETY: kill(2) of the process group we created for our own child.
            unsafe {
                libc::kill(-(c.child.id() as i32), libc::SIGKILL);
            }
            let _ = c.child.wait();
        }
    }
}

/// A fake but stable pod IP for `pod` (10.244.x.y from a hash of its name).
fn pod_ip(pod: &str) -> String {
    let h = pod
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    format!("10.244.{}.{}", (h >> 8) % 250 + 1, h % 250 + 1)
}

/// Whether pod `p` (as `kubectl get -o json` gives it) is Ready (condition Ready=True) and
/// not being deleted.
pub fn pod_is_ready(p: &serde_json::Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Now as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The kubectl binary with a kubeconfig: what a thread of the harness other than the test's
/// calls the API with.
#[derive(Clone, Debug)]
pub struct Kubectl {
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs `kubectl ARGS` with `input` on stdin, bounded by [`KUBECTL_TIMEOUT`]; stdout, or
    /// an error with stderr.
    pub fn run(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg(format!("--kubeconfig={}", s(&self.kubeconfig)))
            .arg(format!("--request-timeout={}s", KUBECTL_TIMEOUT.as_secs()))
            .args(args);
        let (ok, out, err) = run_bounded(cmd, input, KUBECTL_TIMEOUT)?;
        if ok {
            Ok(out)
        } else {
            anyhow::bail!("kubectl {}: {}", args.join(" "), err.trim())
        }
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        Ok(serde_json::from_str(&self.run(&a, None)?)?)
    }

    /// Creates (or replaces) `value` with `kubectl apply -f -` (client-side).
    pub fn apply_json(&self, value: &serde_json::Value) -> anyhow::Result<String> {
        self.run(&["apply", "-f", "-"], Some(&value.to_string()))
    }
}

/// Runs `cmd` with `input` on stdin; kills it after `timeout`. (success, stdout, stderr).
pub fn run_bounded(
    mut cmd: Command,
    input: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(bool, String, String)> {
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(text.as_bytes())?;
    }
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = r.read_to_string(&mut buf);
            buf
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let err = reader(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{program} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    Ok((status.success(), out, err))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Flags kube-controller-manager and kube-scheduler share: their kubeconfig, no leader
/// election, no insecure port, the secure port on 127.0.0.1 with self-made certificates in
/// `cert_dir`, logs to stderr.
fn component_args(kubeconfig: &Path, secure_port: u16, cert_dir: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", s(kubeconfig)),
        "--leader-elect=false".into(),
        "--port=0".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={secure_port}"),
        format!("--cert-dir={}", s(cert_dir)),
        "--profiling=false".into(),
        "--logtostderr=true".into(),
        "--v=1".into(),
    ]
}
