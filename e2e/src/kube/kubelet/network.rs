//! The host side of the node network: one Linux bridge per node with its own /24 (pods get
//! their addresses from it through the node's Docker engine), and the `iptables` rules that let
//! the node bridges route to each other through the host.
//!
//! It owns, by name unique to the run: the subnet claims (files under [`CLAIM_DIR`], so two
//! runs on one machine never pick the same /24), the bridges (`dk<run><node>`), and the
//! ACCEPT rules (inserted into `DOCKER-USER` when the machine's Docker engine made that chain,
//! else `FORWARD`, each tagged with the comment `dssmr-e2e-<run>`), and, for pods to reach the
//! API server at the `kubernetes` Service, one nat PREROUTING DNAT rule per bridge, tagged the
//! same way ([`Network::route_service`]). [`Network::teardown`]
//! removes exactly those, each by its full spec or name; nothing here touches another rule,
//! another bridge, or a sysctl. A run killed before its drop ran (SIGKILL, OOM) leaves its
//! claim files behind, naming its pid, run id, bridge and directory: [`stale_claims`] finds
//! them and [`remove_stale`] removes that run's bridge and tagged rules (the next run calls it
//! before it claims subnets, see `kubelet::sweep_stale_runs`).

use super::run_cmd;
use std::path::{Path, PathBuf};

/// Where subnet claims live (tmpfs: a reboot clears them).
pub const CLAIM_DIR: &str = "/run/dssmr-e2e";

/// The private range node subnets come from: `10.201.<n>.0/24`.
const SUBNET_PREFIX: &str = "10.201";

/// A node's bridge and its /24.
#[derive(Clone, Debug)]
pub struct Bridge {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// The third octet: the subnet is `10.201.<octet>.0/24`.
    pub octet: u8,
    claim: PathBuf,
    created: bool,
}

impl Bridge {
    /// The bridge's own address: the gateway of the node's pods, where the kubelet, the
    /// node's DNS server and the API server's kubelet client meet it.
    pub fn gateway(&self) -> String {
        format!("{SUBNET_PREFIX}.{}.1", self.octet)
    }

    /// The subnet in CIDR notation.
    pub fn cidr(&self) -> String {
        format!("{SUBNET_PREFIX}.{}.0/24", self.octet)
    }
}

/// The bridges and forwarding rules of one run.
#[derive(Debug)]
pub struct Network {
    /// In node order.
    pub bridges: Vec<Bridge>,
    /// Each rule as its table and the arguments after `-I`/`-D`: chain, match and target.
    rules: Vec<(&'static str, Vec<String>)>,
    /// The comment every rule of the run carries.
    tag: String,
}

impl Network {
    /// Creates `nodes` bridges, each on a /24 no route of the machine uses and no other run
    /// claimed, up, with `.1` as its address; then the rules that let every bridge forward to
    /// every bridge (itself included: bridged traffic passes `FORWARD` when `br_netfilter` is
    /// loaded). On error, what was made so far is removed.
    /// `dir` (the run's nodes directory) is written into the claims, for [`stale_claims`].
    pub fn create(run: &str, nodes: usize, dir: &Path) -> anyhow::Result<Network> {
        let mut net = Network {
            bridges: Vec::new(),
            rules: Vec::new(),
            tag: format!("dssmr-e2e-{run}"),
        };
        if let Err(e) = net.build(run, nodes, dir) {
            net.teardown();
            return Err(e);
        }
        Ok(net)
    }

    fn build(&mut self, run: &str, nodes: usize, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(CLAIM_DIR)?;
        for i in 0..nodes {
            let name = format!("dk{run}{i}");
            let (octet, claim) = claim_subnet(run, &name, dir)?;
            let mut bridge = Bridge {
                name,
                octet,
                claim,
                created: false,
            };
            anyhow::ensure!(
                bridge.name.len() <= 15,
                "bridge name {} too long",
                bridge.name
            );
            let cidr = format!("{}/24", bridge.gateway());
            let result = run_cmd("ip", &["link", "add", &bridge.name, "type", "bridge"]);
            bridge.created = result.is_ok();
            self.bridges.push(bridge.clone());
            result?;
            run_cmd("ip", &["addr", "add", &cidr, "dev", &bridge.name])?;
            run_cmd("ip", &["link", "set", &bridge.name, "up"])?;
        }
        // The machine's Docker engine (if any) puts DOCKER-USER first in FORWARD and drops the
        // rest; without it FORWARD's own policy applies.
        let chain = if run_cmd("iptables", &["-w", "-S", "DOCKER-USER"]).is_ok() {
            "DOCKER-USER"
        } else {
            "FORWARD"
        };
        let names: Vec<String> = self.bridges.iter().map(|b| b.name.clone()).collect();
        for a in &names {
            for b in &names {
                let rule: Vec<String> = [
                    chain,
                    "-i",
                    a,
                    "-o",
                    b,
                    "-m",
                    "comment",
                    "--comment",
                    &self.tag,
                    "-j",
                    "ACCEPT",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                self.insert("filter", rule)?;
            }
        }
        Ok(())
    }

    fn insert(&mut self, table: &'static str, rule: Vec<String>) -> anyhow::Result<()> {
        let mut args = vec!["-w", "-t", table, "-I"];
        args.extend(rule.iter().map(String::as_str));
        run_cmd("iptables", &args)?;
        self.rules.push((table, rule));
        Ok(())
    }

    /// DNATs TCP to `service_ip:service_port` arriving on each bridge to that bridge's
    /// gateway at the port of `ports` (same order as the bridges): how pods reach the API
    /// relay of [`super::api_route`] at the `kubernetes` Service address.
    pub fn route_service(
        &mut self,
        service_ip: &str,
        service_port: u16,
        ports: &[u16],
    ) -> anyhow::Result<()> {
        let targets: Vec<(String, String)> = self
            .bridges
            .iter()
            .zip(ports)
            .map(|(b, p)| (b.name.clone(), format!("{}:{p}", b.gateway())))
            .collect();
        for (bridge, to) in targets {
            let rule: Vec<String> = [
                "PREROUTING",
                "-i",
                &bridge,
                "-d",
                &format!("{service_ip}/32"),
                "-p",
                "tcp",
                "--dport",
                &service_port.to_string(),
                "-m",
                "comment",
                "--comment",
                &self.tag,
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            self.insert("nat", rule)?;
        }
        Ok(())
    }

    /// The rules of this run still in the machine's tables (filter and nat), each as
    /// `-t TABLE -A CHAIN spec...` (for the cleanup check and the sweep).
    pub fn rules_left(tag_run: &str) -> Vec<String> {
        let tag = format!("dssmr-e2e-{tag_run}");
        let mut out = Vec::new();
        for table in ["filter", "nat"] {
            let listed = run_cmd("iptables", &["-w", "-t", table, "-S"]).unwrap_or_default();
            out.extend(
                listed
                    .lines()
                    .filter(|l| l.split_whitespace().any(|w| w == tag))
                    .map(|l| format!("-t {table} {l}")),
            );
        }
        out
    }

    /// Removes the rules (each by its full spec), the bridges (by name) and the subnet
    /// claims. Idempotent; errors are reported on stderr, never fatal.
    pub fn teardown(&mut self) {
        for (table, rule) in self.rules.drain(..).rev() {
            let mut args = vec!["-w", "-t", table, "-D"];
            args.extend(rule.iter().map(String::as_str));
            if let Err(e) = run_cmd("iptables", &args) {
                eprintln!("kube: removing iptables rule {}: {e}", rule.join(" "));
            }
        }
        for b in self.bridges.drain(..).rev() {
            if b.created {
                if let Err(e) = run_cmd("ip", &["link", "delete", &b.name, "type", "bridge"]) {
                    eprintln!("kube: deleting bridge {}: {e}", b.name);
                }
            }
            let _ = std::fs::remove_file(&b.claim);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// True if a link named `name` exists on the machine.
pub fn link_exists(name: &str) -> bool {
    run_cmd("ip", &["link", "show", "dev", name]).is_ok()
}

/// A subnet claim whose run's process is gone (killed before its drop ran).
#[derive(Debug)]
pub struct StaleClaim {
    /// The claim file.
    pub file: PathBuf,
    /// The dead run's id.
    pub run: String,
    /// Its bridge for this subnet.
    pub bridge: String,
    /// Its nodes directory (empty if the claim does not name it).
    pub dir: PathBuf,
}

/// The claims under [`CLAIM_DIR`] whose pid is dead.
pub fn stale_claims() -> Vec<StaleClaim> {
    let Ok(entries) = std::fs::read_dir(CLAIM_DIR) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let fields: Vec<&str> = text.split_whitespace().collect();
            let [pid, run, bridge, ref rest @ ..] = fields[..] else {
                return None;
            };
            let dir = rest.first().copied().unwrap_or_default();
            (!pid_alive(pid)).then(|| StaleClaim {
                file: e.path(),
                run: run.to_string(),
                bridge: bridge.to_string(),
                dir: PathBuf::from(dir),
            })
        })
        .collect()
}

/// Removes a dead run's `bridge` and every rule tagged with its run (each by the spec
/// `iptables -S` prints), then its claim file.
pub fn remove_stale(claim: &StaleClaim) {
    if link_exists(&claim.bridge) {
        let _ = run_cmd("ip", &["link", "delete", &claim.bridge, "type", "bridge"]);
    }
    for rule in Network::rules_left(&claim.run) {
        // `-t TABLE -A CHAIN spec...` → `-t TABLE -D CHAIN spec...`.
        let mut args: Vec<&str> = vec!["-w"];
        args.extend(rule.split_whitespace());
        if args.get(3) == Some(&"-A") {
            args[3] = "-D";
            let _ = run_cmd("iptables", &args);
        }
    }
    let _ = std::fs::remove_file(&claim.file);
}

fn pid_alive(pid: &str) -> bool {
    pid.parse::<u32>()
        .map(|pid| PathBuf::from(format!("/proc/{pid}")).exists())
        .unwrap_or(false)
}

/// Claims a free `10.201.<octet>.0/24` for `bridge` of `run`: not in the machine's routes, and
/// its claim file (`pid run bridge dir`) created exclusively.
fn claim_subnet(run: &str, bridge: &str, dir: &Path) -> anyhow::Result<(u8, PathBuf)> {
    let routes = run_cmd("ip", &["-4", "route", "show"])?;
    for octet in 1..=254u8 {
        let prefix = format!("{SUBNET_PREFIX}.{octet}.");
        if routes.lines().any(|l| l.starts_with(&prefix)) {
            continue;
        }
        let claim = PathBuf::from(CLAIM_DIR).join(format!("subnet-{SUBNET_PREFIX}.{octet}"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
        {
            Ok(mut f) => {
                use std::io::Write;
                writeln!(f, "{} {run} {bridge} {}", std::process::id(), dir.display())?;
                return Ok((octet, claim));
            }
            // Another live run's (stale ones were swept before).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("no free {SUBNET_PREFIX}.x.0/24 left for a node bridge")
}
