//! Who a `dssmr replica` process is: [`ReplicaSettings`] (flags and environment) resolved
//! against the cluster config into the engine's [`ReplicaPlan`]. Every error names the flag,
//! environment variable or config field at fault; nothing here starts anything.

use dssmr_engine::config::ClusterConfig;
use dssmr_engine::ids::{group_label, ORACLE};
use dssmr_engine::node::Storage;
use dssmr_engine::server::ReplicaPlan;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What the command line and environment say about the replica to run.
#[derive(Clone, Debug, Default)]
pub struct ReplicaSettings {
    /// The cluster config file.
    pub config: PathBuf,
    /// `--group` (oracle, p<N> or N).
    pub group: Option<String>,
    /// `--ordinal`.
    pub ordinal: Option<usize>,
    /// `POD_NAME` (a StatefulSet pod's name gives group and ordinal).
    pub pod_name: Option<String>,
    /// `--data-dir`: state survives restarts; `None` keeps it in memory.
    pub data_dir: Option<PathBuf>,
    /// `--listen`: the gRPC listen address, if not derived from the member address.
    pub listen: Option<String>,
    /// `--http-addr`: where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: String,
    /// `--handover-timeout`: how long a stopping leader tries to hand over.
    pub handover_timeout: Duration,
}

impl ReplicaSettings {
    /// Loads the config and resolves the replica; errors name the flag or field at fault.
    pub fn resolve(&self) -> anyhow::Result<ReplicaPlan> {
        let config =
            ClusterConfig::load(&self.config).map_err(|e| anyhow::anyhow!("--config: {e}"))?;
        let (group, ordinal) = super::identity::resolve(
            &config.name,
            self.group.as_deref(),
            self.ordinal,
            self.pod_name.as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        let topology = config.topology();
        let field = match config.partition(group) {
            _ if group == ORACLE => "oracle".to_string(),
            Some((i, _)) => format!("partitions[{i}]"),
            None => "partitions".to_string(),
        };
        let members = topology.groups.get(&group).ok_or_else(|| {
            anyhow::anyhow!(
                "--group: the cluster config {} has no {} ({field}: not present; mode {:?}, \
                 partitions {})",
                self.config.display(),
                group_label(group),
                config.mode,
                config
                    .partition_numbers()
                    .into_iter()
                    .map(group_label)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
        let member_addr = members.get(ordinal).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "--ordinal: {} has {} replicas ({field}.members), no ordinal {ordinal}",
                group_label(group),
                members.len()
            )
        })?;
        let listen = match &self.listen {
            Some(l) => l.clone(),
            None => default_listen(&member_addr)
                .map_err(|e| anyhow::anyhow!("{field}.members[{ordinal}]: {e}; give --listen"))?,
        };
        let http_addr: SocketAddr = self.http_addr.parse().map_err(|e| {
            anyhow::anyhow!("--http-addr: {:?} is not an IP:port ({e})", self.http_addr)
        })?;
        if self.handover_timeout.is_zero() {
            anyhow::bail!("--handover-timeout: must be positive");
        }
        let storage = match &self.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("--data-dir: cannot create {}: {e}", dir.display())
                })?;
                Storage::Disk(dir.clone())
            }
            None => Storage::Memory,
        };
        Ok(ReplicaPlan {
            config,
            group,
            ordinal,
            member_addr,
            listen,
            http_addr,
            storage,
            handover_timeout: self.handover_timeout,
        })
    }
}

/// Where a replica whose peers dial `member` listens: the address itself when its host is an
/// IP, else every interface on its port (a DNS name cannot be bound).
fn default_listen(member: &str) -> Result<String, String> {
    if member.parse::<SocketAddr>().is_ok() {
        return Ok(member.to_string());
    }
    let (_, port) = member
        .rsplit_once(':')
        .ok_or_else(|| format!("{member:?} has no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{member:?} has no valid port"))?;
    Ok(format!("0.0.0.0:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_follow_the_member_address() {
        assert_eq!(default_listen("127.0.0.1:7000").unwrap(), "127.0.0.1:7000");
        assert_eq!(
            default_listen("demo-p1-0.demo-p1.default.svc:7000").unwrap(),
            "0.0.0.0:7000"
        );
        assert!(default_listen("host").is_err());
        assert!(default_listen("host:x").is_err());
    }
}
