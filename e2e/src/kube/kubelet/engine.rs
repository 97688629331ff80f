//! One node's Docker engine: a `dockerd` of its own (own `--config-file`, data root, exec root,
//! pidfile, unix socket, containerd namespace and cgroup parent, all named for the run and the
//! node), on the node's bridge, with a runc wrapper as its default runtime, in a mount
//! namespace of its own where `/var/log` is a directory of the node (the node's kubelet joins
//! that namespace, so `/var/log/pods` is private to the node and the kubelet's volume mounts are
//! seen by its engine).
//!
//! It owns the dockerd process (its own process group) and what that engine makes. It never
//! talks to the machine's own engine except to read an image (`docker save`), and never
//! changes that engine's config or service. [`Engine::stop`] removes every container, stops
//! dockerd (SIGTERM, then SIGKILL of its group), then kills what is left in the node's mount
//! namespace and cgroups (containerd shims, fuse-overlayfs), found by the namespace's inode and
//! the run's cgroup name, and removes those cgroups.

use super::{run_cmd_in, Daemon};
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The tag of the pod sandbox image each engine gets (built from `pause.c`, `FROM scratch`).
pub const PAUSE_IMAGE: &str = "dssmr-e2e/pause:3.2";

/// The runc wrapper: this machine class cannot lower `oom_score_adj` (no CAP_SYS_RESOURCE), and
/// dockershim asks for -998 for every sandbox; runc then fails ("can't get final child's PID
/// from pipe"). Negative scores in the bundle's config.json (and an exec's process.json) become
/// 0 before the real runc runs.
const RUNC_WRAPPER: &str = r#"#!/bin/sh
# dssmr e2e: clamp a negative process.oomScoreAdj to 0, then run the real runc.
prev=
for a in "$@"; do
  case "$prev" in
    --bundle|-b) f="$a/config.json"; [ -f "$f" ] && sed -i -E 's/"oomScoreAdj":[[:space:]]*-[0-9]+/"oomScoreAdj":0/' "$f" ;;
    --process|-p) [ -f "$a" ] && sed -i -E 's/"oomScoreAdj":[[:space:]]*-[0-9]+/"oomScoreAdj":0/' "$a" ;;
  esac
  case "$a" in
    --bundle=*) f="${a#--bundle=}/config.json"; [ -f "$f" ] && sed -i -E 's/"oomScoreAdj":[[:space:]]*-[0-9]+/"oomScoreAdj":0/' "$f" ;;
  esac
  prev="$a"
done
exec @RUNC@ "$@"
"#;

/// A running engine.
pub struct Engine {
    /// `unix://...` of its API socket.
    pub host: String,
    /// The name every run-scoped object of this engine carries (`dssmr-e2e-<run>-<node>`).
    pub scope: String,
    daemon: Option<Daemon>,
    /// `mnt:[inode]` of the node's mount namespace.
    mount_ns: String,
}

impl Engine {
    /// Writes the engine's config and runc wrapper under `dir`, starts dockerd on `bridge` in a
    /// new mount namespace (with `dir/varlog` on `/var/log`), and waits until its API answers.
    pub fn start(
        dir: &Path,
        scope: &str,
        bridge: &str,
        timeout: Duration,
    ) -> anyhow::Result<Engine> {
        for d in ["data", "exec", "varlog"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let runc = super::on_path("runc").ok_or_else(|| anyhow::anyhow!("runc not found"))?;
        let wrapper = dir.join("runc-wrapper");
        std::fs::write(
            &wrapper,
            RUNC_WRAPPER.replace("@RUNC@", &runc.display().to_string()),
        )?;
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let socket = dir.join("docker.sock");
        let config = serde_json::json!({
            "data-root": dir.join("data"),
            "exec-root": dir.join("exec"),
            "pidfile": dir.join("docker.pid"),
            "hosts": [format!("unix://{}", socket.display())],
            "bridge": bridge,
            "iptables": false,
            "ip-masq": false,
            "ip-forward": false,
            "userland-proxy": false,
            "storage-driver": "fuse-overlayfs",
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
            "cgroup-parent": format!("/{scope}"),
            "containerd-namespace": scope,
            "containerd-plugins-namespace": format!("{scope}-plugins"),
            "runtimes": {"e2e-runc": {"path": wrapper}},
            "default-runtime": "e2e-runc",
            "oom-score-adjust": 0,
            "live-restore": false,
            "log-driver": "json-file",
            "log-level": "warn",
        });
        let config_file = dir.join("daemon.json");
        std::fs::write(&config_file, serde_json::to_string_pretty(&config)?)?;

        let mut cmd = Command::new("dockerd");
        cmd.arg(format!("--config-file={}", config_file.display()));
        let varlog = CString::new(dir.join("varlog").display().to_string())?;
        // SAFETY: only async-signal-safe calls (unshare, mount) between fork and exec: a new
        // mount namespace, private recursively so nothing mounted in it reaches the machine,
        // then the node's own /var/log.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let root = c"/";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                let target = c"/var/log";
                if libc::mount(
                    varlog.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let daemon = Daemon::spawn("dockerd", cmd, &dir.join("dockerd.log"))?;
        let mount_ns = std::fs::read_link(format!("/proc/{}/ns/mnt", daemon.pid()))?
            .display()
            .to_string();
        let mut engine = Engine {
            host: format!("unix://{}", socket.display()),
            scope: scope.to_string(),
            daemon: Some(daemon),
            mount_ns,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = engine.daemon.as_mut() {
                if let Some(status) = d.exited() {
                    anyhow::bail!("dockerd exited ({status}):\n{}", d.tail(30));
                }
            }
            if engine
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .is_ok()
            {
                break;
            }
            if Instant::now() >= deadline {
                let tail = engine
                    .daemon
                    .as_ref()
                    .map(|d| d.tail(30))
                    .unwrap_or_default();
                anyhow::bail!(
                    "dockerd at {} not answering within {timeout:?}:\n{tail}",
                    engine.host
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(engine)
    }

    /// The pid of dockerd (the kubelet joins its mount namespace).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// `docker -H <engine> ARGS`, bounded; stdout.
    pub fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut a = vec!["-H", &self.host];
        a.extend_from_slice(args);
        run_cmd_in("docker", &a, None, Duration::from_secs(60))
    }

    /// Loads the image tar `file` (`docker save`) into this engine.
    pub fn load(&self, file: &Path) -> anyhow::Result<()> {
        self.docker(&["load", "-i", &file.display().to_string()])?;
        Ok(())
    }

    /// Imports `pause` (a static binary) as [`PAUSE_IMAGE`]: one file, `ENTRYPOINT ["/pause"]`,
    /// nothing else (what `FROM scratch` + `COPY` + `ENTRYPOINT` builds).
    pub fn import_pause(&self, tar: &Path) -> anyhow::Result<()> {
        self.docker(&[
            "import",
            "--change",
            r#"ENTRYPOINT ["/pause"]"#,
            &tar.display().to_string(),
            PAUSE_IMAGE,
        ])?;
        Ok(())
    }

    /// The last lines of dockerd's log.
    pub fn tail(&self, lines: usize) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.tail(lines))
            .unwrap_or_default()
    }

    /// Removes every container, stops dockerd, then kills whatever is left in the node's mount
    /// namespace or cgroups and removes the cgroups. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        if daemon.exited().is_none() {
            if let Ok(ids) = self.docker(&["ps", "-aq"]) {
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f", "-v"];
                    args.extend(ids);
                    if let Err(e) = self.docker(&args) {
                        eprintln!("kube: removing containers of {}: {e}", self.scope);
                    }
                }
            }
        }
        daemon.terminate(Duration::from_secs(20));
        // Leftovers: processes of the node's mount namespace (shims, fuse-overlayfs) and of its
        // cgroups (containers).
        for pid in pids_in_mount_ns(&self.mount_ns) {
            // SAFETY: kill(2) of a process in the mount namespace this engine created.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        remove_cgroups(&self.scope);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pids whose mount namespace is `ns` (`mnt:[inode]`), not this process.
fn pids_in_mount_ns(ns: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                .map(|l| l.display().to_string() == ns)
                .unwrap_or(false)
        })
        .collect()
}

/// The cgroup directories (v1: one per controller) named `scope`, deepest first.
pub fn cgroup_dirs(scope: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    for c in controllers.flatten() {
        let top = c.path().join(scope);
        if top.is_dir() {
            let mut stack = vec![top];
            while let Some(d) = stack.pop() {
                if let Ok(children) = std::fs::read_dir(&d) {
                    stack.extend(children.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
                out.push(d);
            }
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Kills the processes of, and removes, every cgroup of engines of run `run` (names
/// `dssmr-e2e-<run>-*`): what a run killed before its drop could leave.
pub(super) fn remove_run_cgroups(run: &str) {
    let prefix = format!("dssmr-e2e-{run}-");
    let mut scopes = std::collections::BTreeSet::new();
    if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in controllers.flatten() {
            for e in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&prefix) {
                    scopes.insert(name);
                }
            }
        }
    }
    for scope in scopes {
        remove_cgroups(&scope);
    }
}

/// Kills every process in the run's cgroups `scope` and removes them, deepest first.
fn remove_cgroups(scope: &str) {
    let dirs = cgroup_dirs(scope);
    for d in &dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) of a process in a cgroup this run's engine created.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    for d in &dirs {
        let deadline = Instant::now() + Duration::from_secs(5);
        // A cgroup can be removed once its killed processes are gone.
        while std::fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `docker save IMAGE -o FILE` from the machine's own engine (read only).
pub fn save_image(image: &str, file: &Path) -> anyhow::Result<()> {
    run_cmd_in(
        "docker",
        &["save", image, "-o", &file.display().to_string()],
        None,
        Duration::from_secs(120),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\n*** The kubelet nodes copy {image} from this machine's Docker engine: build it \
             with `bash e2e/prepare.sh` (or `e2e/build-images.sh e2e`)."
        )
    })?;
    Ok(())
}

/// A tar holding only `/pause` (mode 0755), for [`Engine::import_pause`].
pub fn pause_tar(pause_bin: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("pause-root");
    std::fs::create_dir_all(&root)?;
    std::fs::copy(pause_bin, root.join("pause"))?;
    std::fs::set_permissions(
        root.join("pause"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let tar = dir.join("pause.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("pause")
        .stdin(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "tar of the pause binary failed");
    Ok(tar)
}
