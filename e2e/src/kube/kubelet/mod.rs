//! Real kubelet nodes for the Kubernetes e2e: N kubelets (v1.20.2 with dockershim, built by
//! `e2e/k8s/prepare.sh`) registered with a [`ControlPlane`], each driving a Docker engine of its
//! own on a bridge of its own, with cluster DNS and hostPath volumes, so pods really run and
//! become Ready by their own probes.
//!
//! Per node `i` of a run `r` (a short hex id unique on the machine while it runs):
//! - [`network`]: bridge `dk<r><i>` on `10.201.<n>.0/24` (the /24 claimed under
//!   `/run/dssmr-e2e`), and ACCEPT rules between all node bridges tagged `dssmr-e2e-<r>`;
//! - [`engine`]: a `dockerd` with its own config in the node's directory, cgroup parent and
//!   containerd namespace `dssmr-e2e-<r>-n<i>`, in its own mount namespace where `/var/log`
//!   is the node's (so `kubectl logs` works per node); images are copied in from the machine's
//!   engine with `docker save` / `docker load`, the pause image is imported from the pause
//!   binary;
//! - a kubelet in that engine's mount namespace, with its own root dir, dockershim socket,
//!   ports and node IP (the bridge's `.1`), labelled with the node's [`Hardware`] class;
//! - [`dns`]: one dnsmasq on all bridge addresses, fed from the Endpoints;
//! - [`api_route`]: the API server at the `kubernetes` Service address (`10.0.0.1:443`) from
//!   every bridge (a relay per bridge, and DNAT rules), for pods that talk to the API;
//! - [`provisioner`]: hostPath volumes made for claims as they come, deleted when released
//!   (started by [`KubeletNodes::provision_volumes`]).
//!
//! Kernel tunables the kubelet sets on start (`vm.overcommit_memory`, `kernel.panic`, ...)
//! and `net.ipv4.ip_forward` (set to 1 when it is not) are saved before and written back on
//! drop. Drop (also on panic) stops, in order: the provisioner, DNS, the API relay, the kubelets (SIGKILL of
//! their process group), each engine (containers removed, dockerd stopped, leftovers in its
//! mount namespace and cgroups killed), the rules, the bridges, the claims; each by pid or by
//! its run-unique name, never by a broad name. [`leftovers`] lists what of a run is still on
//! the machine, for tests to assert that nothing is. A run killed outright (SIGKILL) loses
//! its kubelets, engines and dnsmasq with it (parent-death signal), but containers, bridges,
//! rules and changed tunables stay: the next run's [`sweep_stale_runs`] removes and restores
//! them.
//!
//! It must not change the machine's own Docker engine, its config or services, or any rule,
//! bridge or process it did not create. It needs root.

pub mod api_route;
pub mod dns;
pub mod engine;
pub mod network;
pub mod provisioner;

use super::{ControlPlane, Hardware, HARDWARE_LABEL};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `kubernetes` Service (the first address of the control plane's service range): pods
/// reach the API server there through [`api_route`].
pub const KUBERNETES_SERVICE: (&str, u16) = ("10.0.0.1", 443);

/// How long one node may take to be Ready (engine, images, kubelet registration).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(120);

/// The kernel tunables kubelet 1.20 sets when `--protect-kernel-defaults` is false
/// (`setupKernelTunables`); restored on drop.
/// `net/ipv4/ip_forward` is set to 1 if it is not (pods on different node bridges reach each
/// other through the host's routing).
const KUBELET_SYSCTLS: [&str; 7] = [
    "net/ipv4/ip_forward",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// What a node is.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The Node's name (`--hostname-override`).
    pub name: String,
    /// Its hardware class ([`HARDWARE_LABEL`]).
    pub hardware: Hardware,
}

/// A child process in its own process group, with its log file; killed on drop.
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
    done: Option<ExitStatus>,
}

impl Daemon {
    /// Spawns `cmd` (stdin null, stdout and stderr to `log`) in a new process group, with
    /// SIGKILL as its parent-death signal (nothing outlives a test process that aborts).
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Daemon> {
        let out = std::fs::File::create(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        // SAFETY: prctl(2) only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))?;
        Ok(Daemon {
            name,
            child,
            log: log.to_path_buf(),
            done: None,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.done.is_none() {
            self.done = self.child.try_wait().ok().flatten();
        }
        self.done
    }

    /// The last `lines` of its log.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let mut out = format!("----- {} ({}) -----\n", self.name, self.log.display());
        for l in &all[all.len().saturating_sub(lines)..] {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// SIGTERM to its group, up to `grace` for it to exit, then SIGKILL to the group; reaped.
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_none() {
            self.signal_group(libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// SIGKILL to its group; reaped.
    pub fn kill(&mut self) {
        self.signal_group(libc::SIGKILL);
        if self.done.is_none() {
            self.done = self.child.wait().ok();
        }
    }

    fn signal_group(&self, sig: i32) {
        // SAFETY: kill(2) of the process group created for our own child.
        unsafe {
            libc::kill(-(self.child.id() as i32), sig);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One kubelet node.
struct Node {
    spec: NodeSpec,
    dir: PathBuf,
    engine: engine::Engine,
    kubelet: Option<Daemon>,
}

/// Running kubelet nodes of a control plane; everything stops when it drops (before the
/// control plane: it borrows it).
pub struct KubeletNodes<'a> {
    cp: &'a ControlPlane,
    run: String,
    dir: PathBuf,
    // Drop order is the field order of `stop`, not declaration order; see `Drop`.
    dns: Option<dns::ClusterDns>,
    relay: Option<api_route::ApiRelay>,
    nodes: Vec<Node>,
    network: Option<network::Network>,
    sysctls: Vec<(PathBuf, String)>,
    provisioner: Option<provisioner::Provisioner>,
}

impl<'a> KubeletNodes<'a> {
    /// Starts one node per spec, copies `images` (tags of the machine's own Docker engine,
    /// e.g. `dssmr:e2e`) into each, and waits until every Node is Ready.
    pub fn start(
        cp: &'a ControlPlane,
        specs: &[NodeSpec],
        images: &[&str],
    ) -> anyhow::Result<KubeletNodes<'a>> {
        let started = Instant::now();
        let bins = super::binaries()?;
        let kubelet_bin = super::bin_dir().join("kubelet");
        let pause_bin = super::bin_dir().join("pause");
        for p in [&kubelet_bin, &pause_bin] {
            anyhow::ensure!(
                p.is_file(),
                "{} is missing: run `bash e2e/k8s/prepare.sh` (as root) once on this machine",
                p.display()
            );
        }
        sweep_stale_runs();
        let run = run_id();
        let dir = cp.dir().join(format!("nodes-{run}"));
        std::fs::create_dir_all(&dir)?;
        let sysctls = save_sysctls(&run)?;
        let mut nodes = KubeletNodes {
            cp,
            run: run.clone(),
            dir: dir.clone(),
            dns: None,
            relay: None,
            nodes: Vec::new(),
            network: None,
            sysctls,
            provisioner: None,
        };
        let forward = Path::new("/proc/sys/net/ipv4/ip_forward");
        if std::fs::read_to_string(forward)?.trim() != "1" {
            std::fs::write(forward, "1")?;
        }
        let network = network::Network::create(&run, specs.len(), &dir)?;
        let bridges = network.bridges.clone();
        nodes.network = Some(network);
        let gateways: Vec<String> = bridges.iter().map(|b| b.gateway()).collect();

        // The API server at the `kubernetes` Service address, from every bridge.
        let api: std::net::SocketAddr = cp
            .server()
            .trim_start_matches("https://")
            .parse()
            .map_err(|e| anyhow::anyhow!("API server address {}: {e}", cp.server()))?;
        let (relay, ports) = api_route::ApiRelay::start(&gateways, api)?;
        nodes.relay = Some(relay);
        if let Some(net) = nodes.network.as_mut() {
            net.route_service(KUBERNETES_SERVICE.0, KUBERNETES_SERVICE.1, &ports)?;
        }

        nodes.dns = Some(dns::ClusterDns::start(
            &dir,
            &gateways,
            &bins.kubectl,
            cp.kubeconfig(),
        )?);

        // Images: saved once from the machine's engine, loaded into each node's.
        let mut tars = Vec::new();
        for (i, image) in images.iter().enumerate() {
            let tar = dir.join(format!("image-{i}.tar"));
            engine::save_image(image, &tar)?;
            tars.push(tar);
        }
        let pause_tar = engine::pause_tar(&pause_bin, &dir)?;

        let pki = cp.dir().join("pki");
        for (i, (spec, bridge)) in specs.iter().zip(&bridges).enumerate() {
            let node_dir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let scope = format!("dssmr-e2e-{run}-n{i}");
            let engine = engine::Engine::start(&node_dir, &scope, &bridge.name, NODE_TIMEOUT)?;
            let mut node = Node {
                spec: spec.clone(),
                dir: node_dir.clone(),
                engine,
                kubelet: None,
            };
            node.engine.import_pause(&pause_tar)?;
            for tar in &tars {
                node.engine.load(tar)?;
            }
            // The node's identity: system:node:<name> in system:nodes (the Node authorizer).
            let user = format!("node-{}", spec.name);
            cp.sign(
                &pki,
                &user,
                &format!("/O=system:nodes/CN=system:node:{}", spec.name),
                None,
            )?;
            let kubeconfig = node_dir.join("kubelet.kubeconfig");
            cp.write_kubeconfig(&kubeconfig, &user)?;
            let dockerd_pid = node
                .engine
                .pid()
                .ok_or_else(|| anyhow::anyhow!("dockerd of {} is not running", spec.name))?;
            node.kubelet = Some(start_kubelet(
                &kubelet_bin,
                &node,
                &kubeconfig,
                &bridge.gateway(),
                dockerd_pid,
            )?);
            nodes.nodes.push(node);
        }
        for i in 0..nodes.nodes.len() {
            nodes.wait_node_ready(i, started + NODE_TIMEOUT)?;
        }
        eprintln!(
            "kube: {} kubelet node(s) Ready in {:.1} s (run {run}: bridges {}, dir {})",
            nodes.nodes.len(),
            started.elapsed().as_secs_f64(),
            bridges
                .iter()
                .map(|b| format!("{} {}", b.name, b.cidr()))
                .collect::<Vec<_>>()
                .join(", "),
            dir.display()
        );
        Ok(nodes)
    }

    /// The run id: every bridge, rule, cgroup and namespace of this run carries it.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// The node names, in order.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.spec.name.clone()).collect()
    }

    /// Starts the dynamic provisioner of hostPath volumes ([`provisioner`]): from now on
    /// claims of the default class get a volume made for them, under the run's directory,
    /// and volumes whose claims are gone are deleted.
    pub fn provision_volumes(&mut self) -> anyhow::Result<()> {
        if self.provisioner.is_none() {
            self.provisioner = Some(provisioner::Provisioner::start(
                self.cp.admin_kubectl(),
                &self.run,
                &self.dir,
            )?);
        }
        Ok(())
    }

    /// (volumes made, volumes deleted) by the provisioner so far.
    pub fn volumes_provisioned(&self) -> (usize, usize) {
        self.provisioner
            .as_ref()
            .map_or((0, 0), |p| (p.provisioned(), p.reclaimed()))
    }

    /// The first running container of pod `ns/pod` that also carries `label` (dockershim's
    /// labels), in the engine of any node: that engine and the container's id.
    fn find_container(
        &self,
        ns: &str,
        pod: &str,
        label: &str,
    ) -> anyhow::Result<Option<(&engine::Engine, String)>> {
        for n in &self.nodes {
            let ids = n.engine.docker(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=io.kubernetes.pod.name={pod}"),
                "--filter",
                &format!("label=io.kubernetes.pod.namespace={ns}"),
                "--filter",
                &format!("label={label}"),
            ])?;
            if let Some(id) = ids.split_whitespace().next() {
                return Ok(Some((&n.engine, id.to_string())));
            }
        }
        Ok(None)
    }

    /// The pid of a process in the network namespace of pod `ns/pod` (its sandbox), found
    /// through the labels dockershim puts on containers, in the engine of any node.
    pub fn pod_netns_pid(&self, ns: &str, pod: &str) -> anyhow::Result<u32> {
        let Some((engine, id)) =
            self.find_container(ns, pod, "io.kubernetes.docker.type=podsandbox")?
        else {
            anyhow::bail!("no running sandbox of pod {ns}/{pod} on any node")
        };
        let pid = engine.docker(&["inspect", "-f", "{{.State.Pid}}", &id])?;
        Ok(pid.trim().parse()?)
    }

    /// Sends `signal` (e.g. `TERM`) to container `container` of pod `ns/pod` through the
    /// engine of its node, as a process inside it would get it, without deleting the pod (its
    /// logs and exit code stay for `kubectl`).
    pub fn signal_container(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        signal: &str,
    ) -> anyhow::Result<()> {
        let label = format!("io.kubernetes.container.name={container}");
        let Some((engine, id)) = self.find_container(ns, pod, &label)? else {
            anyhow::bail!("no running container {container} of pod {ns}/{pod} on any node")
        };
        engine.docker(&["kill", "--signal", signal, &id])?;
        Ok(())
    }

    /// `docker ps` of every node's engine (for failure reports).
    pub fn containers(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("----- containers of {} -----\n", n.spec.name));
            out.push_str(
                &n.engine
                    .docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
                    .unwrap_or_else(|e| e.to_string()),
            );
        }
        out
    }

    /// The last lines of every kubelet's and engine's log, and the DNS hosts file.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            if let Some(k) = &n.kubelet {
                out.push_str(&k.tail(lines));
            }
            out.push_str(&n.engine.tail(lines));
        }
        if let Some(d) = &self.dns {
            out.push_str("----- cluster DNS hosts -----\n");
            out.push_str(&d.hosts());
        }
        out
    }

    fn wait_node_ready(&mut self, i: usize, deadline: Instant) -> anyhow::Result<()> {
        let name = self.nodes[i].spec.name.clone();
        loop {
            if let Some(k) = self.nodes[i].kubelet.as_mut() {
                if let Some(status) = k.exited() {
                    anyhow::bail!("kubelet of {name} exited ({status}):\n{}", k.tail(40));
                }
            }
            let ready = self
                .cp
                .get_json(&["node", &name])
                .ok()
                .and_then(|n| {
                    n["status"]["conditions"]
                        .as_array()?
                        .iter()
                        .find(|c| c["type"] == "Ready")
                        .map(|c| c["status"] == "True")
                })
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "Node {name} not Ready within {NODE_TIMEOUT:?}:\n{}",
                    self.log_tails(40)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops everything of the run (see the module doc), in order. Idempotent.
    pub fn stop(&mut self) {
        self.provisioner = None;
        if let Some(mut d) = self.dns.take() {
            d.stop();
        }
        if let Some(mut r) = self.relay.take() {
            r.stop();
        }
        for n in &mut self.nodes {
            if let Some(mut k) = n.kubelet.take() {
                k.kill();
            }
        }
        for n in &mut self.nodes {
            n.engine.stop();
        }
        self.nodes.clear();
        if let Some(mut net) = self.network.take() {
            net.teardown();
        }
        restore_sysctls(&self.sysctls);
        self.sysctls.clear();
        let _ = std::fs::remove_file(sysctl_file(&self.run));
    }
}

impl Drop for KubeletNodes<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kube: node logs (last lines):\n{}", self.log_tails(20));
        }
        self.stop();
    }
}

/// What of run `run` is still on the machine: bridges, iptables rules, cgroups, its claim and
/// saved-tunables files, and processes whose command line names the run (see
/// `run_processes`).
pub fn leftovers(run: &str, nodes: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..nodes {
        let bridge = format!("dk{run}{i}");
        if network::link_exists(&bridge) {
            out.push(format!("bridge {bridge}"));
        }
        for d in engine::cgroup_dirs(&format!("dssmr-e2e-{run}-n{i}")) {
            out.push(format!("cgroup {}", d.display()));
        }
    }
    out.extend(
        network::Network::rules_left(run)
            .into_iter()
            .map(|r| format!("iptables {r}")),
    );
    for e in std::fs::read_dir(network::CLAIM_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if e.path() == sysctl_file(run) || text.split_whitespace().nth(1) == Some(run) {
            out.push(format!("file {}", e.path().display()));
        }
    }
    for pid in run_processes(run) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        out.push(format!("process {pid} {}", cmdline.trim()));
    }
    out
}

/// Where run `run` keeps the values of [`KUBELET_SYSCTLS`] from before its kubelets started.
fn sysctl_file(run: &str) -> PathBuf {
    Path::new(network::CLAIM_DIR).join(format!("sysctls-{run}"))
}

/// The values of [`KUBELET_SYSCTLS`] before any kubelet of the harness ran: those another run
/// saved (live or dead: its kubelets may have changed the current ones), else the current
/// ones; saved in [`sysctl_file`] for `run` too (a sweep restores them if the run is killed).
fn save_sysctls(run: &str) -> anyhow::Result<Vec<(PathBuf, String)>> {
    std::fs::create_dir_all(network::CLAIM_DIR)?;
    let saved = std::fs::read_dir(network::CLAIM_DIR)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sysctls-"))
        .find_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| parse_sysctls(&text))
        .filter(|v| v.len() == KUBELET_SYSCTLS.len());
    let values = saved.unwrap_or_else(|| {
        KUBELET_SYSCTLS
            .iter()
            .map(|k| PathBuf::from("/proc/sys").join(k))
            .filter_map(|p| {
                let v = std::fs::read_to_string(&p).ok()?.trim().to_string();
                Some((p, v))
            })
            .collect()
    });
    let text: String = values
        .iter()
        .map(|(p, v)| format!("{} {v}\n", p.display()))
        .collect();
    std::fs::write(sysctl_file(run), text)?;
    Ok(values)
}

fn parse_sysctls(text: &str) -> Vec<(PathBuf, String)> {
    text.lines()
        .filter_map(|l| {
            let (p, v) = l.split_once(' ')?;
            Some((PathBuf::from(p), v.to_string()))
        })
        .collect()
}

/// Writes back every value that differs.
fn restore_sysctls(values: &[(PathBuf, String)]) {
    for (path, value) in values {
        let now = std::fs::read_to_string(path).unwrap_or_default();
        if now.trim() != value {
            if let Err(e) = std::fs::write(path, value) {
                eprintln!("kube: restoring {}: {e}", path.display());
            }
        }
    }
}

/// Removes what runs killed before their drop ran left on the machine (found through their
/// subnet claims, see [`network::stale_claims`]): their processes that outlived them
/// (containerd shims and containers, found by the run's names in their command lines and
/// cgroups), cgroups, bridges, rules and directories, and the kernel tunables it had saved.
pub fn sweep_stale_runs() {
    for claim in network::stale_claims() {
        eprintln!(
            "kube: removing what run {} (gone) left: processes, cgroups, bridge {}, rules, {}",
            claim.run,
            claim.bridge,
            claim.dir.display()
        );
        for pid in run_processes(&claim.run) {
            // SAFETY: kill(2) of a process whose command line names the dead run.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        engine::remove_run_cgroups(&claim.run);
        network::remove_stale(&claim);
        if let Ok(text) = std::fs::read_to_string(sysctl_file(&claim.run)) {
            restore_sysctls(&parse_sysctls(&text));
            let _ = std::fs::remove_file(sysctl_file(&claim.run));
        }
        // The dead run's control plane dir holds its nodes dir; both were its own.
        let top = claim
            .dir
            .parent()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("dssmr-k8s-"))
            })
            .unwrap_or(&claim.dir);
        if claim
            .dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy() == format!("nodes-{}", claim.run))
        {
            let _ = std::fs::remove_dir_all(top);
        }
    }
}

/// Pids (not this process) whose command line names run `run`: its nodes directory
/// (`nodes-<run>/`: kubelets, dockerds, fuse-overlayfs, dnsmasq) or its containerd namespaces
/// (`dssmr-e2e-<run>-`: shims).
fn run_processes(run: &str) -> Vec<u32> {
    let markers = [format!("nodes-{run}/"), format!("dssmr-e2e-{run}-")];
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (pid != me && markers.iter().any(|m| cmdline.contains(m.as_str()))).then_some(pid)
        })
        .collect()
}

/// The kubelet of `node`, in the mount namespace of its engine (dockerd `dockerd_pid`).
fn start_kubelet(
    bin: &Path,
    node: &Node,
    kubeconfig: &Path,
    node_ip: &str,
    dockerd_pid: u32,
) -> anyhow::Result<Daemon> {
    let d = |p: &str| node.dir.join(p).display().to_string();
    let (port, healthz) = (super::free_port()?, super::free_port()?);
    let mut cmd = Command::new(bin);
    cmd.current_dir(&node.dir).args([
        format!("--kubeconfig={}", kubeconfig.display()),
        "--container-runtime=docker".into(),
        format!("--docker-endpoint={}", node.engine.host),
        format!(
            "--container-runtime-endpoint=unix://{}",
            d("dockershim.sock")
        ),
        format!(
            "--experimental-dockershim-root-directory={}",
            d("dockershim")
        ),
        format!("--pod-infra-container-image={}", engine::PAUSE_IMAGE),
        format!("--hostname-override={}", node.spec.name),
        format!("--node-ip={node_ip}"),
        format!("--address={node_ip}"),
        format!("--root-dir={}", d("kubelet")),
        "--cgroups-per-qos=false".into(),
        "--enforce-node-allocatable=".into(),
        "--fail-swap-on=false".into(),
        "--cgroup-driver=cgroupfs".into(),
        format!("--cluster-dns={node_ip}"),
        format!("--cluster-domain={}", dns::CLUSTER_DOMAIN),
        format!("--port={port}"),
        format!("--healthz-port={healthz}"),
        "--read-only-port=0".into(),
        "--authorization-mode=AlwaysAllow".into(),
        "--eviction-hard=".into(),
        "--image-gc-high-threshold=100".into(),
        "--image-gc-low-threshold=99".into(),
        // Never add chains to the machine's iptables.
        "--make-iptables-util-chains=false".into(),
        "--oom-score-adj=0".into(),
        format!(
            "--node-labels={HARDWARE_LABEL}={}",
            node.spec.hardware.label()
        ),
        "--logtostderr=true".into(),
        "--v=1".into(),
    ]);
    let ns = std::fs::File::open(format!("/proc/{dockerd_pid}/ns/mnt"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
    // SAFETY: setns(2) only, between fork and exec, with a descriptor that stays open in the
    // parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let log = node.dir.join("kubelet.log");
    let daemon = Daemon::spawn("kubelet", cmd, &log);
    drop(ns);
    daemon
}

/// A short id for names of this run: 5 hex digits of the pid and the clock.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{:05x}",
        (std::process::id() ^ nanos.rotate_left(7)) & 0xf_ffff
    )
}

/// `name` on `$PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs `program ARGS` (30 s bound); stdout, or an error with stderr.
pub(crate) fn run_cmd(program: &str, args: &[&str]) -> anyhow::Result<String> {
    run_cmd_in(program, args, None, Duration::from_secs(30))
}

/// Runs `program ARGS` with `input`, bounded by `timeout`; stdout, or an error with stderr.
pub(crate) fn run_cmd_in(
    program: &str,
    args: &[&str],
    input: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let (ok, out, err) = super::run_bounded(cmd, input, timeout)?;
    anyhow::ensure!(ok, "{program} {}: {}", args.join(" "), err.trim());
    Ok(out)
}
