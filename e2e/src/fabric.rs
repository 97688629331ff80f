//! Where the replicas of a test run, and how faults are made there.
//!
//! [`Docker`]: every replica is a container of the `dssmr:e2e` image (`e2e/build-images.sh`)
//! on a private bridge network created for the test, named and addressed like a StatefulSet
//! pod (`POD_NAME=<cluster>-p1-0`, reachable by that DNS name on port 7000); clients run as
//! containers on the same network. Kill is SIGKILL, disconnect is `docker network
//! disconnect`, stop is `docker stop` (SIGTERM, so leaders hand over), pause is SIGSTOP (and
//! SIGCONT) sent to the replica process.
//!
//! [`Processes`]: the fallback without a Docker engine: every replica is a `dssmr replica`
//! process on 127.0.0.1; a disconnect is approximated by SIGSTOP/SIGCONT (the replica falls
//! silent; its peers cannot tell the difference, but it does not see time pass).
//!
//! Both share one work directory: the cluster configs (`<cluster>.yaml`) and whatever clients
//! write there. Dropping a fabric removes everything it started.

use crate::layout::{Layout, ReplicaRef};
use dssmr_engine::ids::group_label;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The operations a fault-injection test needs.
pub trait Fabric {
    /// A line saying where replicas run.
    fn describe(&self) -> String;
    /// Writes the cluster config of `layout` and starts every replica.
    fn launch(&mut self, layout: &Layout) -> anyhow::Result<()>;
    /// SIGKILLs replica `r`.
    fn kill(&mut self, r: &ReplicaRef) -> anyhow::Result<()>;
    /// Stops replica `r` with SIGTERM (a leader hands over first) and waits until it exits.
    fn stop(&mut self, r: &ReplicaRef) -> anyhow::Result<()>;
    /// Starts replica `r` again (same data directory) after a kill or stop.
    fn restart(&mut self, r: &ReplicaRef) -> anyhow::Result<()>;
    /// Cuts `r` off from every other replica and client.
    fn disconnect(&mut self, r: &ReplicaRef) -> anyhow::Result<()>;
    /// Undoes [`Fabric::disconnect`].
    fn reconnect(&mut self, r: &ReplicaRef) -> anyhow::Result<()>;
    /// Pauses replica `r` with SIGSTOP: it keeps its connections and its state but runs no
    /// more, until [`Fabric::resume`]; then it goes on as if no time had passed (a leader
    /// wakes up still believing that it leads).
    fn pause(&mut self, r: &ReplicaRef) -> anyhow::Result<()>;
    /// Undoes [`Fabric::pause`] with SIGCONT.
    fn resume(&mut self, r: &ReplicaRef) -> anyhow::Result<()>;
    /// Stops every replica with SIGTERM and waits until all have exited.
    fn stop_all(&mut self) -> anyhow::Result<()>;
    /// Starts every replica again.
    fn start_all(&mut self) -> anyhow::Result<()>;
    /// `http://host:port` of `r`'s HTTP endpoints, as the test process reaches them.
    fn http(&self, r: &ReplicaRef) -> String;
    /// Every replica started so far.
    fn replicas(&self) -> Vec<ReplicaRef>;
    /// Starts `dssmr ARGS`; `{work}` in an argument is replaced by the work directory as the
    /// client sees it (configs are `{work}/<cluster>.yaml`).
    fn client(&mut self, name: &str, args: &[String]) -> anyhow::Result<ClientRun>;
    /// The work directory on this machine.
    fn work(&self) -> &Path;
}

/// A running client (`dssmr bench ...`).
pub enum ClientRun {
    /// A container.
    Container(String),
    /// A process.
    Process(Child),
}

impl ClientRun {
    /// Sends it SIGTERM (a `dssmr bench` then ends its run early and still writes its
    /// results, history and checks); [`ClientRun::wait`] for it afterwards.
    pub fn terminate(&self) -> anyhow::Result<()> {
        match self {
            ClientRun::Container(name) => {
                docker(&["kill", "--signal", "TERM", name])?;
            }
            ClientRun::Process(child) => {
                // SAFETY: kill(2) with the pid of our own child process.
                let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                anyhow::ensure!(rc == 0, "SIGTERM: {}", std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Waits until it exits (killing it after `timeout`): success and its output.
    pub fn wait(self, timeout: Duration) -> anyhow::Result<(bool, String)> {
        match self {
            ClientRun::Container(name) => {
                let deadline = Instant::now() + timeout;
                loop {
                    let state = docker(&["inspect", "-f", "{{.State.Running}}", &name])?;
                    if state.trim() == "false" {
                        break;
                    }
                    if Instant::now() > deadline {
                        let _ = docker(&["kill", &name]);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &name])?;
                let logs = Command::new("docker").args(["logs", &name]).output()?;
                let mut text = String::from_utf8_lossy(&logs.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&logs.stderr));
                Ok((code.trim() == "0", text))
            }
            ClientRun::Process(mut child) => {
                let deadline = Instant::now() + timeout;
                while child.try_wait()?.is_none() {
                    if Instant::now() > deadline {
                        let _ = child.kill();
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                let out = child.wait_with_output()?;
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                Ok((out.status.success(), text))
            }
        }
    }
}

/// Picks the fabric: Docker when an engine answers (`DSSMR_E2E_FABRIC=processes` forces
/// processes), else processes on 127.0.0.1, saying so loudly on stderr.
pub fn detect(dssmr_binary: &Path) -> anyhow::Result<Box<dyn Fabric>> {
    let forced = std::env::var("DSSMR_E2E_FABRIC").unwrap_or_default();
    let engine = forced != "processes"
        && Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if engine {
        let image = std::env::var("DSSMR_E2E_IMAGE").unwrap_or_else(|_| "dssmr:e2e".into());
        return Ok(Box::new(Docker::new(&image)?));
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! NO DOCKER ENGINE{}: the e2e runs replicas as PROCESSES on 127.0.0.1.\n\
         !!! Network disconnects are approximated by SIGSTOP/SIGCONT.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
        if forced == "processes" {
            " (DSSMR_E2E_FABRIC=processes)"
        } else {
            ""
        }
    );
    Ok(Box::new(Processes::new(dssmr_binary)?))
}

/// Runs `docker ARGS`; its stdout, or an error with its stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out: Output = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A work directory every container user may write into.
fn work_dir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix("dssmr-e2e-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    Ok(dir)
}

/// Writes the config of `layout` as `<name>.yaml` in `work`, readable by every user.
fn write_config(
    work: &Path,
    layout: &Layout,
    address: impl Fn(&ReplicaRef) -> String,
) -> anyhow::Result<()> {
    let config = layout.config(address);
    config.validate()?;
    std::fs::write(work.join(format!("{}.yaml", layout.name)), config.to_yaml())?;
    Ok(())
}

/// Replicas as containers on a private Docker network.
pub struct Docker {
    image: String,
    network: String,
    /// First three octets of the network's /24.
    subnet: String,
    prefix: String,
    work: tempfile::TempDir,
    /// Replica → (container, IP).
    replicas: BTreeMap<ReplicaRef, (String, String)>,
    clients: Vec<String>,
    next_ip: u8,
}

/// The gRPC port of a replica container.
const GRPC_PORT: u16 = 7000;
/// The HTTP port of a replica container.
const HTTP_PORT: u16 = 8080;

impl Docker {
    /// Creates the test's network (a /24 not used by another network).
    pub fn new(image: &str) -> anyhow::Result<Docker> {
        docker(&["image", "inspect", "--format", "{{.Id}}", image]).map_err(|_| {
            anyhow::anyhow!(
                "Docker image {image} is missing: build it with e2e/build-images.sh \
                 (or set DSSMR_E2E_IMAGE)"
            )
        })?;
        let pid = std::process::id();
        let network = format!("dssmr-e2e-{pid}");
        let mut subnet = None;
        for i in 0..20u32 {
            let candidate = format!("10.213.{}", (pid + i * 7) % 250 + 1);
            let created = docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &format!("{candidate}.0/24"),
                &network,
            ]);
            if created.is_ok() {
                subnet = Some(candidate);
                break;
            }
        }
        let subnet = subnet.ok_or_else(|| anyhow::anyhow!("no free /24 for the test network"))?;
        Ok(Docker {
            image: image.to_string(),
            network,
            subnet,
            prefix: format!("e2e{pid}-"),
            work: work_dir()?,
            replicas: BTreeMap::new(),
            clients: Vec::new(),
            next_ip: 10,
        })
    }

    fn container(&self, r: &ReplicaRef) -> anyhow::Result<&(String, String)> {
        self.replicas
            .get(r)
            .ok_or_else(|| anyhow::anyhow!("no replica {r}"))
    }

    fn ip(&mut self) -> String {
        let ip = format!("{}.{}", self.subnet, self.next_ip);
        self.next_ip += 1;
        ip
    }
}

impl Fabric for Docker {
    fn describe(&self) -> String {
        format!(
            "Docker containers of image {} on private network {} ({}.0/24)",
            self.image, self.network, self.subnet
        )
    }

    fn launch(&mut self, layout: &Layout) -> anyhow::Result<()> {
        write_config(self.work.path(), layout, |r| {
            format!("{}:{GRPC_PORT}", r.pod_name())
        })?;
        for r in layout.replicas() {
            let pod = r.pod_name();
            let name = format!("{}{pod}", self.prefix);
            let ip = self.ip();
            let mount = format!("{}:/work", self.work.path().display());
            let config = format!("/work/{}.yaml", layout.name);
            let http = format!("0.0.0.0:{HTTP_PORT}");
            docker(&[
                "run",
                "-d",
                "--name",
                &name,
                "--hostname",
                &pod,
                "--network",
                &self.network,
                "--ip",
                &ip,
                "--network-alias",
                &pod,
                "-e",
                &format!("POD_NAME={pod}"),
                "-v",
                &mount,
                &self.image,
                "replica",
                "--config",
                &config,
                "--data-dir",
                "/var/lib/dssmr",
                "--http-addr",
                &http,
            ])?;
            self.replicas.insert(r, (name, ip));
        }
        Ok(())
    }

    fn kill(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        let (name, _) = self.container(r)?.clone();
        docker(&["kill", "--signal", "KILL", &name])?;
        docker(&["wait", &name])?;
        Ok(())
    }

    fn stop(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        let (name, _) = self.container(r)?.clone();
        docker(&["stop", "--time", "20", &name])?;
        Ok(())
    }

    fn restart(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        let (name, _) = self.container(r)?.clone();
        docker(&["start", &name])?;
        Ok(())
    }

    fn disconnect(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        let (name, _) = self.container(r)?.clone();
        docker(&["network", "disconnect", &self.network, &name])?;
        Ok(())
    }

    fn reconnect(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        let (name, ip) = self.container(r)?.clone();
        let pod = r.pod_name();
        docker(&[
            "network",
            "connect",
            "--ip",
            &ip,
            "--alias",
            &pod,
            &self.network,
            &name,
        ])?;
        Ok(())
    }

    fn pause(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        let (name, _) = self.container(r)?.clone();
        docker(&["kill", "--signal", "STOP", &name])?;
        Ok(())
    }

    fn resume(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        let (name, _) = self.container(r)?.clone();
        docker(&["kill", "--signal", "CONT", &name])?;
        Ok(())
    }

    fn stop_all(&mut self) -> anyhow::Result<()> {
        let mut args = vec!["stop", "--time", "20"];
        args.extend(self.replicas.values().map(|(n, _)| n.as_str()));
        docker(&args)?;
        Ok(())
    }

    fn start_all(&mut self) -> anyhow::Result<()> {
        let mut args = vec!["start"];
        args.extend(self.replicas.values().map(|(n, _)| n.as_str()));
        docker(&args)?;
        Ok(())
    }

    fn http(&self, r: &ReplicaRef) -> String {
        let ip = self
            .replicas
            .get(r)
            .map(|(_, ip)| ip.as_str())
            .unwrap_or("");
        format!("http://{ip}:{HTTP_PORT}")
    }

    fn replicas(&self) -> Vec<ReplicaRef> {
        self.replicas.keys().cloned().collect()
    }

    fn client(&mut self, name: &str, args: &[String]) -> anyhow::Result<ClientRun> {
        let container = format!("{}{name}", self.prefix);
        let ip = self.ip();
        let mount = format!("{}:/work", self.work.path().display());
        let mut argv: Vec<String> = [
            "run",
            "-d",
            "--name",
            &container,
            "--network",
            &self.network,
            "--ip",
            &ip,
            "-v",
            &mount,
            &self.image,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(args.iter().map(|a| a.replace("{work}", "/work")));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        docker(&argv)?;
        self.clients.push(container.clone());
        Ok(ClientRun::Container(container))
    }

    fn work(&self) -> &Path {
        self.work.path()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if std::env::var_os("DSSMR_E2E_KEEP").is_some() {
            eprintln!(
                "DSSMR_E2E_KEEP: leaving containers and network {}",
                self.network
            );
            return;
        }
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(self.replicas.values().map(|(n, _)| n.as_str()));
        args.extend(self.clients.iter().map(String::as_str));
        if args.len() > 3 {
            if let Err(e) = docker(&args) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Err(e) = docker(&["network", "rm", &self.network]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Replicas as processes on 127.0.0.1.
pub struct Processes {
    binary: PathBuf,
    work: tempfile::TempDir,
    replicas: BTreeMap<ReplicaRef, Proc>,
}

struct Proc {
    config: PathBuf,
    http_port: u16,
    child: Option<Child>,
}

impl Processes {
    /// Replicas will run `binary` (the `dssmr` executable).
    pub fn new(binary: &Path) -> anyhow::Result<Processes> {
        anyhow::ensure!(
            binary.exists(),
            "no dssmr binary at {} (build it: cargo build --bin dssmr)",
            binary.display()
        );
        Ok(Processes {
            binary: binary.to_path_buf(),
            work: work_dir()?,
            replicas: BTreeMap::new(),
        })
    }

    fn spawn(&self, r: &ReplicaRef, p: &Proc) -> anyhow::Result<Child> {
        let logs = self.work.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{r}.log")))?;
        Ok(Command::new(&self.binary)
            .arg("replica")
            .arg("--config")
            .arg(&p.config)
            .args(["--group", &group_label(r.group)])
            .args(["--ordinal", &r.ordinal.to_string()])
            .arg("--data-dir")
            .arg(self.work.path().join("data").join(r.pod_name()))
            .args(["--http-addr", &format!("127.0.0.1:{}", p.http_port)])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?)
    }

    fn proc(&mut self, r: &ReplicaRef) -> anyhow::Result<&mut Proc> {
        self.replicas
            .get_mut(r)
            .ok_or_else(|| anyhow::anyhow!("no replica {r}"))
    }

    /// Waits until `r` exits (SIGKILL after 20 s).
    fn reap(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        let p = self.proc(r)?;
        if let Some(mut c) = p.child.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    c.kill()?;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The stderr of replica `r` so far.
    pub fn log(&self, r: &ReplicaRef) -> String {
        std::fs::read_to_string(self.work.path().join("logs").join(format!("{r}.log")))
            .unwrap_or_default()
    }

    fn signal(&mut self, r: &ReplicaRef, sig: i32) -> anyhow::Result<()> {
        let p = self.proc(r)?;
        let child = p
            .child
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("replica {r} is not running"))?;
        // SAFETY: kill(2) with the pid of our own child process.
        let rc = unsafe { libc::kill(child.id() as i32, sig) };
        anyhow::ensure!(
            rc == 0,
            "kill({sig}) of {r}: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }
}

impl Fabric for Processes {
    fn describe(&self) -> String {
        format!("processes of {} on 127.0.0.1", self.binary.display())
    }

    fn launch(&mut self, layout: &Layout) -> anyhow::Result<()> {
        let mut ports = BTreeMap::new();
        for r in layout.replicas() {
            ports.insert(r, crate::prometheus::free_port()?);
        }
        write_config(self.work.path(), layout, |r| {
            format!("127.0.0.1:{}", ports[r])
        })?;
        let config = self.work.path().join(format!("{}.yaml", layout.name));
        for r in layout.replicas() {
            let mut p = Proc {
                config: config.clone(),
                http_port: crate::prometheus::free_port()?,
                child: None,
            };
            p.child = Some(self.spawn(&r, &p)?);
            self.replicas.insert(r, p);
        }
        Ok(())
    }

    fn kill(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        let p = self.proc(r)?;
        if let Some(mut c) = p.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    fn restart(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        let p = self
            .replicas
            .remove(r)
            .ok_or_else(|| anyhow::anyhow!("no replica {r}"))?;
        let mut p = p;
        if p.child.is_none() {
            p.child = Some(self.spawn(r, &p)?);
        }
        self.replicas.insert(r.clone(), p);
        Ok(())
    }

    fn disconnect(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        self.signal(r, libc::SIGSTOP)
    }

    fn reconnect(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        self.signal(r, libc::SIGCONT)
    }

    fn pause(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        self.signal(r, libc::SIGSTOP)
    }

    fn resume(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        self.signal(r, libc::SIGCONT)
    }

    fn stop(&mut self, r: &ReplicaRef) -> anyhow::Result<()> {
        self.signal(r, libc::SIGTERM)?;
        self.reap(r)
    }

    fn stop_all(&mut self) -> anyhow::Result<()> {
        let all: Vec<ReplicaRef> = self.replicas.keys().cloned().collect();
        for r in &all {
            self.signal(r, libc::SIGTERM)?;
        }
        for r in &all {
            self.reap(r)?;
        }
        Ok(())
    }

    fn start_all(&mut self) -> anyhow::Result<()> {
        let all: Vec<ReplicaRef> = self.replicas.keys().cloned().collect();
        for r in &all {
            self.restart(r)?;
        }
        Ok(())
    }

    fn http(&self, r: &ReplicaRef) -> String {
        let port = self.replicas.get(r).map(|p| p.http_port).unwrap_or(0);
        format!("http://127.0.0.1:{port}")
    }

    fn replicas(&self) -> Vec<ReplicaRef> {
        self.replicas.keys().cloned().collect()
    }

    fn client(&mut self, _name: &str, args: &[String]) -> anyhow::Result<ClientRun> {
        let work = self.work.path().display().to_string();
        let child = Command::new(&self.binary)
            .args(args.iter().map(|a| a.replace("{work}", &work)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(ClientRun::Process(child))
    }

    fn work(&self) -> &Path {
        self.work.path()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for p in self.replicas.values_mut() {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
