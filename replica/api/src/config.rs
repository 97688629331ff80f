//! The cluster configuration file: one YAML schema for a local cluster (`dssmr local` writes it,
//! `dssmr client` reads it) and for the Kubernetes operator's ConfigMap.
//!
//! ```yaml
//! name: demo                 # 1-63 of [a-z0-9-], starting and ending alphanumeric
//! mode: dssmr                # dssmr | ssmr
//! app: chirper               # kv | chirper
//! chirper:                   # only with app chirper; optional
//!   communitySize: 100       # users per interest community (default 100)
//!   placement: interest      # interest | hash: where users are created (default interest)
//! retryThreshold: 5          # retries before a command falls back to S-SMR (default 5)
//! destination: random        # random | majority | affinity (default random)
//! oracle:                    # group 0; required for dssmr, absent for ssmr
//!   members: [127.0.0.1:7000, 127.0.0.1:7001, 127.0.0.1:7002]
//! partitions:                # partition i (0-based) is group i+1
//!   - members: [127.0.0.1:7010, 127.0.0.1:7011, 127.0.0.1:7012]
//!   - members: [127.0.0.1:7020, 127.0.0.1:7021, 127.0.0.1:7022]
//! initialPartitions: 2       # optional: partitions 1..=N take new variables from the start
//! ```
//!
//! `initialPartitions` is fixed for the life of a cluster: the oracle's initial state (which
//! partitions new variables may be placed in) is built from it, and every oracle replica that
//! replays its log from the start must build the same one. Partitions added later (the
//! operator scaling out) join the placement through the admin API's `AddPartition`, an oracle
//! command ordered like any other. Without the key every partition of the file takes new
//! variables from the start (a cluster that never changes its partitions).
//!
//! Keys are camelCase and unknown keys are errors. [`ClusterConfig::validate`] checks what the
//! YAML types cannot, and every error names the offending field the way it is spelled in the
//! file (`partitions[1].members: need an odd number of replicas (2f+1), got 2`).
//!
//! This module parses, validates and renders configs and derives the [`Topology`] from them
//! (the engine derives its client proxy's settings from them too); it starts nothing and talks to no cluster. Its only I/O is
//! reading and (atomically) writing the file.

use crate::ids::{GroupId, ORACLE};
use crate::mode::{DestinationPolicy, Mode, UnknownName, DEFAULT_RETRY_THRESHOLD};
use crate::topology::Topology;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use thiserror::Error;

/// Why a config could not be loaded, validated or written.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read cluster config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a config: bad YAML, a wrong type, a missing or unknown key.
    #[error("cluster config {origin}: {source}")]
    Parse {
        /// Where the text came from (a path, or `<text>`).
        origin: String,
        /// What serde_yaml found (it names the key and the line).
        #[source]
        source: serde_yaml::Error,
    },
    /// The config parses but a field has a value the cluster cannot run with.
    #[error("cluster config {origin}: {field}: {reason}")]
    Invalid {
        /// Where the text came from (a path, or `<text>`).
        origin: String,
        /// The field, spelled as in the file (`partitions[1].members`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be written.
    #[error("cannot write cluster config {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The field an [`ConfigError::Invalid`] error is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The application a cluster replicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// The key-value store ([`crate::app::kv`]).
    Kv,
    /// The Chirper social network ([`crate::app::chirper`]).
    Chirper,
}

impl AppKind {
    /// The name used in configs and on command lines.
    pub fn name(self) -> &'static str {
        match self {
            AppKind::Kv => "kv",
            AppKind::Chirper => "chirper",
        }
    }
}

impl fmt::Display for AppKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AppKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "kv" => Ok(AppKind::Kv),
            "chirper" => Ok(AppKind::Chirper),
            _ => Err(UnknownName::new("app", s, "kv or chirper")),
        }
    }
}

/// The community size of Chirper when the config does not say (users per interest community).
pub const DEFAULT_COMMUNITY_SIZE: u64 = 100;

/// Where a user is placed when it is created (S-SMR keeps it there for good).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserPlacement {
    /// The paper's f(uid): the user's interest community, round-robin over the partitions.
    /// A static partitioning that already knows the social graph.
    #[default]
    Interest,
    /// A stable hash of the user id: knows nothing of the social graph.
    Hash,
}

impl UserPlacement {
    /// The name used on command lines and in results.
    pub fn name(self) -> &'static str {
        match self {
            UserPlacement::Interest => "interest",
            UserPlacement::Hash => "hash",
        }
    }
}

impl std::str::FromStr for UserPlacement {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "interest" => Ok(UserPlacement::Interest),
            "hash" => Ok(UserPlacement::Hash),
            _ => Err(UnknownName::new("placement", s, "interest or hash")),
        }
    }
}

/// Settings of the Chirper app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChirperSettings {
    /// Users per interest community; a community's users are placed together.
    #[serde(default = "default_community_size")]
    pub community_size: u64,
    /// Where users are created: `interest` (their community's partition) or `hash`.
    #[serde(default)]
    pub placement: UserPlacement,
}

impl Default for ChirperSettings {
    fn default() -> Self {
        ChirperSettings {
            community_size: DEFAULT_COMMUNITY_SIZE,
            placement: UserPlacement::Interest,
        }
    }
}

fn default_community_size() -> u64 {
    DEFAULT_COMMUNITY_SIZE
}

/// One replicated group: its members, in ordinal order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupConfig {
    /// A partition's number (its group id): absent, one more than the partition listed
    /// before it (the first: 1). Numbers grow down the list; a cluster that removed a
    /// partition never uses its number again, so its config may skip numbers. Not allowed
    /// on the oracle (group 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// `host:port` of each replica; index = ordinal. 2f+1 of them.
    pub members: Vec<String>,
}

/// A cluster config, as in the file. [`ClusterConfig::load`] and [`ClusterConfig::from_yaml`]
/// return only configs that passed [`ClusterConfig::validate`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// Cluster name (a DNS-1123 label: it names Kubernetes objects).
    pub name: String,
    /// S-SMR or DS-SMR.
    pub mode: Mode,
    /// The replicated application.
    pub app: AppKind,
    /// Chirper settings (only with `app: chirper`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chirper: Option<ChirperSettings>,
    /// Retries before a command falls back to S-SMR (DS-SMR only).
    #[serde(default = "default_retry_threshold")]
    pub retry_threshold: u32,
    /// Where a multi-partition command gathers its variables (DS-SMR only).
    #[serde(default = "default_destination")]
    pub destination: DestinationPolicy,
    /// The oracle (group 0): required with `mode: dssmr`, absent with `mode: ssmr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle: Option<GroupConfig>,
    /// The partitions, in the order of their numbers ([`GroupConfig::partition`]; without
    /// numbers, the `i`-th (0-based) is partition `i + 1`).
    pub partitions: Vec<GroupConfig>,
    /// Partitions `1..=N` take new variables from the cluster's start (default: all).
    /// It may exceed the partitions listed (a cluster scaled in keeps its first value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_partitions: Option<u32>,
}

fn default_retry_threshold() -> u32 {
    DEFAULT_RETRY_THRESHOLD
}

fn default_destination() -> DestinationPolicy {
    DestinationPolicy::default()
}

/// Most replicas a group may have (a Raft group this large is a mistake, not a plan).
const MAX_REPLICAS: usize = 15;

impl ClusterConfig {
    /// The config of a running cluster: groups from `topology` (group 0 is the oracle), the
    /// app's settings at their defaults.
    pub fn from_topology(name: &str, mode: Mode, app: AppKind, topology: &Topology) -> Self {
        let group = |addrs: &Vec<String>| GroupConfig {
            partition: None,
            members: addrs.clone(),
        };
        ClusterConfig {
            name: name.to_string(),
            mode,
            app,
            chirper: (app == AppKind::Chirper).then(ChirperSettings::default),
            retry_threshold: default_retry_threshold(),
            destination: default_destination(),
            oracle: topology.groups.get(&ORACLE).map(group),
            partitions: numbered(
                topology
                    .groups
                    .iter()
                    .filter(|(g, _)| **g != ORACLE)
                    .map(|(g, a)| (g.0, group(a))),
            ),
            initial_partitions: None,
        }
    }

    /// Reads, parses and validates the config at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a config from YAML text.
    pub fn from_yaml(text: &str) -> Result<Self> {
        Self::parse(text, "<text>")
    }

    fn parse(text: &str, origin: &str) -> Result<Self> {
        let config: ClusterConfig =
            serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
                origin: origin.to_string(),
                source,
            })?;
        config
            .check()
            .map_err(|Invalid { field, reason }| ConfigError::Invalid {
                origin: origin.to_string(),
                field,
                reason,
            })?;
        Ok(config)
    }

    /// Checks what the YAML types cannot express.
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|Invalid { field, reason }| ConfigError::Invalid {
                origin: "<value>".into(),
                field,
                reason,
            })
    }

    fn check(&self) -> Result<(), Invalid> {
        check_name(&self.name)?;
        match (&self.chirper, self.app) {
            (Some(_), AppKind::Kv) => {
                return Err(Invalid::new("chirper", "only allowed with app: chirper"))
            }
            (Some(c), AppKind::Chirper) if c.community_size == 0 => {
                return Err(Invalid::new("chirper.communitySize", "must be at least 1"))
            }
            _ => {}
        }
        if self.retry_threshold == 0 {
            return Err(Invalid::new(
                "retryThreshold",
                "must be at least 1 (0 would send every command down the S-SMR fallback)",
            ));
        }
        match (self.mode, &self.oracle) {
            (Mode::Dssmr, None) => {
                return Err(Invalid::new(
                    "oracle",
                    "mode dssmr needs an oracle group (oracle: {members: [...]})",
                ))
            }
            (Mode::Ssmr, Some(_)) => {
                return Err(Invalid::new(
                    "oracle",
                    "mode ssmr runs no oracle; remove this section",
                ))
            }
            _ => {}
        }
        if self.partitions.is_empty() {
            return Err(Invalid::new("partitions", "need at least one partition"));
        }
        if self.oracle.as_ref().is_some_and(|o| o.partition.is_some()) {
            return Err(Invalid::new(
                "oracle.partition",
                "the oracle is group 0, not a partition; remove this field",
            ));
        }
        let mut last = 0u32;
        for (i, p) in self.partitions.iter().enumerate() {
            let n = p.partition.unwrap_or(last.saturating_add(1));
            if n <= last {
                return Err(Invalid::new(
                    &format!("partitions[{i}].partition"),
                    format!(
                        "{n} does not follow {}: partitions are listed in the order of \
                         their numbers, each number once, from 1",
                        if last == 0 {
                            "0".to_string()
                        } else {
                            format!("partition {last}")
                        }
                    ),
                ));
            }
            last = n;
        }
        if self.initial_partitions == Some(0) {
            return Err(Invalid::new(
                "initialPartitions",
                "must be at least 1 (new variables need a partition to go to)",
            ));
        }
        // Every address once in the whole cluster: two replicas cannot share a port.
        let mut seen: HashMap<&str, String> = HashMap::new();
        let groups = self.oracle.iter().map(|o| ("oracle".to_string(), o)).chain(
            self.partitions
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("partitions[{i}]"), p)),
        );
        for (path, group) in groups {
            let field = format!("{path}.members");
            let n = group.members.len();
            if n == 0 || n.is_multiple_of(2) {
                return Err(Invalid::new(
                    &field,
                    format!("need an odd number of replicas (2f+1), got {n}"),
                ));
            }
            if n > MAX_REPLICAS {
                return Err(Invalid::new(
                    &field,
                    format!("at most {MAX_REPLICAS} replicas, got {n}"),
                ));
            }
            for (r, addr) in group.members.iter().enumerate() {
                let here = format!("{field}[{r}]");
                check_address(addr).map_err(|e| Invalid::new(&here, e.to_string()))?;
                if let Some(first) = seen.insert(addr, here.clone()) {
                    return Err(Invalid::new(
                        &here,
                        format!("address {addr} is also {first}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Renders the config as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a config is plain data and always renders")
    }

    /// Writes the config to `path` atomically: a reader sees either no file or all of it.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let failed = |source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, self.to_yaml()).map_err(failed)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            failed(e)
        })
    }

    /// Member addresses of every group: the oracle as group 0, partition `i` as group `i + 1`.
    pub fn topology(&self) -> Topology {
        let mut topology = Topology {
            cluster: self.name.clone(),
            ..Topology::default()
        };
        if let Some(o) = &self.oracle {
            topology.groups.insert(ORACLE, o.members.clone());
        }
        for (g, p) in self.numbered_partitions() {
            topology.groups.insert(g, p.members.clone());
        }
        topology
    }

    /// Each partition with its number ([`GroupConfig::partition`]), in order.
    pub fn numbered_partitions(&self) -> impl Iterator<Item = (GroupId, &GroupConfig)> {
        self.partitions.iter().scan(0u32, |last, p| {
            *last = p.partition.unwrap_or(last.saturating_add(1));
            Some((GroupId(*last), p))
        })
    }

    /// The partition numbers, in order.
    pub fn partition_numbers(&self) -> Vec<GroupId> {
        self.numbered_partitions().map(|(g, _)| g).collect()
    }

    /// The config entry of partition `p`, with its index in [`Self::partitions`].
    pub fn partition(&self, p: GroupId) -> Option<(usize, &GroupConfig)> {
        self.numbered_partitions()
            .enumerate()
            .find(|(_, (g, _))| *g == p)
            .map(|(i, (_, c))| (i, c))
    }

    /// The partitions new variables may be placed in when the cluster starts: groups
    /// `1..=initialPartitions`, or every partition of the config.
    pub fn initial_placement(&self) -> Vec<GroupId> {
        let n = self
            .initial_partitions
            .unwrap_or(self.partitions.len() as u32);
        (1..=n).map(GroupId).collect()
    }

    /// The Chirper settings this config describes (the defaults when it names none).
    pub fn chirper_settings(&self) -> ChirperSettings {
        self.chirper.clone().unwrap_or_default()
    }
}

/// Partitions `(number, group)` in the order of their numbers as a config lists them: the
/// number written only where it does not follow from the one before.
pub fn numbered(partitions: impl IntoIterator<Item = (u32, GroupConfig)>) -> Vec<GroupConfig> {
    let mut last = 0u32;
    partitions
        .into_iter()
        .map(|(n, mut g)| {
            g.partition = (n != last.saturating_add(1)).then_some(n);
            last = n;
            g
        })
        .collect()
}

/// A validation failure before the origin is known.
struct Invalid {
    field: String,
    reason: String,
}

impl Invalid {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// A DNS-1123 label: it becomes part of Kubernetes object names.
fn check_name(name: &str) -> Result<(), Invalid> {
    validate_name(name).map_err(|e| Invalid::new("name", e.to_string()))
}

/// A cluster name that is not a DNS-1123 label.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error(
    "must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit, \
     got {name:?}"
)]
pub struct BadName {
    /// The name given.
    pub name: String,
}

/// Checks a cluster name (a DNS-1123 label: it becomes part of Kubernetes object names).
pub fn validate_name(name: &str) -> Result<(), BadName> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(BadName {
            name: name.to_string(),
        })
    }
}

/// A member address that is not `host:port`.
#[derive(Debug, Error)]
enum BadAddress {
    /// No port, or a host that is neither a name nor an IP.
    #[error("expected host:port, got {0:?}")]
    Shape(String),
    /// The port is not 1..=65535.
    #[error("bad port {port:?} in {addr:?} (expected 1-65535)")]
    Port { port: String, addr: String },
}

/// `host:port`, host a name or an IP (IPv6 in brackets), port 1..=65535.
fn check_address(addr: &str) -> Result<(), BadAddress> {
    let bad = || BadAddress::Shape(addr.to_string());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => {
            return Err(BadAddress::Port {
                port: port.to_string(),
                addr: addr.to_string(),
            })
        }
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
name: demo
mode: dssmr
app: chirper
chirper:
  communitySize: 50
  placement: hash
retryThreshold: 3
destination: affinity
oracle:
  members: [127.0.0.1:7000, 127.0.0.1:7001, 127.0.0.1:7002]
partitions:
  - members: [127.0.0.1:7010, 127.0.0.1:7011, 127.0.0.1:7012]
  - members: [dssmr-p2-0.dssmr-p2.default.svc:7000]
";

    fn invalid(yaml: &str) -> (String, String) {
        match ClusterConfig::from_yaml(yaml) {
            Err(e @ ConfigError::Invalid { .. }) => {
                (e.field().unwrap_or_default().to_string(), e.to_string())
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn parse_error(yaml: &str) -> String {
        match ClusterConfig::from_yaml(yaml) {
            Err(e @ ConfigError::Parse { .. }) => e.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn good_config_gives_topology_and_proxy_config() {
        let c = ClusterConfig::from_yaml(GOOD).expect("valid");
        assert_eq!(c.app, AppKind::Chirper);
        assert_eq!(c.chirper_settings().community_size, 50);
        assert_eq!(c.chirper_settings().placement, UserPlacement::Hash);
        let t = c.topology();
        assert_eq!(
            t.groups.keys().copied().collect::<Vec<_>>(),
            vec![ORACLE, GroupId(1), GroupId(2)]
        );
        assert_eq!(t.groups[&GroupId(1)][2], "127.0.0.1:7012");
        assert_eq!(c.mode, Mode::Dssmr);
        assert_eq!(c.retry_threshold, 3);
        assert_eq!(c.destination, DestinationPolicy::Affinity);
    }

    #[test]
    fn defaults_and_round_trip() {
        let c = ClusterConfig::from_yaml(
            "name: kv1\nmode: ssmr\napp: kv\npartitions:\n  - members: ['[::1]:7000']\n",
        )
        .expect("valid");
        assert_eq!(c.retry_threshold, DEFAULT_RETRY_THRESHOLD);
        assert_eq!(c.destination, DestinationPolicy::Random);
        assert_eq!(c.chirper_settings().community_size, DEFAULT_COMMUNITY_SIZE);
        assert_eq!(c.chirper_settings().placement, UserPlacement::Interest);
        let back = ClusterConfig::from_yaml(&c.to_yaml()).expect("round trip");
        assert_eq!(back, c);
        let yaml = ClusterConfig::from_yaml(GOOD).unwrap().to_yaml();
        assert!(yaml.contains("retryThreshold: 3"), "{yaml}");
        assert!(yaml.contains("communitySize: 50"), "{yaml}");
    }

    #[test]
    fn initial_partitions_default_to_all_and_may_not_be_zero() {
        let mut c = ClusterConfig::from_yaml(GOOD).unwrap();
        assert_eq!(c.initial_placement(), [GroupId(1), GroupId(2)]);
        c.initial_partitions = Some(1);
        let back = ClusterConfig::from_yaml(&c.to_yaml()).unwrap();
        assert_eq!(back.initial_placement(), [GroupId(1)]);
        // A cluster scaled in keeps its first value.
        c.initial_partitions = Some(4);
        assert_eq!(c.initial_placement().len(), 4);
        c.initial_partitions = Some(0);
        let e = ClusterConfig::from_yaml(&c.to_yaml())
            .unwrap_err()
            .to_string();
        assert!(e.contains("initialPartitions: must be at least 1"), "{e}");
    }

    #[test]
    fn from_topology_matches_groups() {
        let mut t = Topology::default();
        t.groups.insert(ORACLE, vec!["127.0.0.1:1".into()]);
        t.groups.insert(GroupId(1), vec!["127.0.0.1:2".into()]);
        t.groups.insert(GroupId(2), vec!["127.0.0.1:3".into()]);
        let c = ClusterConfig::from_topology("local", Mode::Dssmr, AppKind::Chirper, &t);
        c.validate().expect("valid");
        assert_eq!(c.partitions.len(), 2);
        assert_eq!(c.topology().groups, t.groups);
        assert!(c.chirper.is_some());
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("name: demo", "name: Demo_1", "name"),
            ("name: demo", "name: ''", "name"),
            (
                "  - members: [dssmr-p2-0.dssmr-p2.default.svc:7000]",
                "  - members: [127.0.0.1:7020, 127.0.0.1:7021]",
                "partitions[1].members",
            ),
            (
                "  - members: [dssmr-p2-0.dssmr-p2.default.svc:7000]",
                "  - members: []",
                "partitions[1].members",
            ),
            (
                "  - members: [dssmr-p2-0.dssmr-p2.default.svc:7000]",
                "  - members: [127.0.0.1]",
                "partitions[1].members[0]",
            ),
            (
                "  - members: [dssmr-p2-0.dssmr-p2.default.svc:7000]",
                "  - members: ['127.0.0.1:0']",
                "partitions[1].members[0]",
            ),
            (
                "  - members: [dssmr-p2-0.dssmr-p2.default.svc:7000]",
                "  - members: ['http://x:1']",
                "partitions[1].members[0]",
            ),
            (
                "  - members: [dssmr-p2-0.dssmr-p2.default.svc:7000]",
                "  - members: [127.0.0.1:7001]",
                "partitions[1].members[0]",
            ),
            ("retryThreshold: 3", "retryThreshold: 0", "retryThreshold"),
            (
                "communitySize: 50",
                "communitySize: 0",
                "chirper.communitySize",
            ),
            ("app: chirper", "app: kv", "chirper"),
            ("mode: dssmr", "mode: ssmr", "oracle"),
        ];
        for (from, to, field) in cases {
            assert!(GOOD.contains(from), "{from}");
            let (got, message) = invalid(&GOOD.replacen(from, to, 1));
            assert_eq!(&got, field, "{to}: {message}");
            assert!(message.contains(&format!("{field}: ")), "{message}");
        }
        let (_, message) = invalid(&GOOD.replacen(
            "  - members: [dssmr-p2-0.dssmr-p2.default.svc:7000]",
            "  - members: [127.0.0.1:7020, 127.0.0.1:7021]",
            1,
        ));
        assert!(
            message
                .ends_with("partitions[1].members: need an odd number of replicas (2f+1), got 2"),
            "{message}"
        );
        let (_, message) = invalid(&GOOD.replacen(
            "  - members: [dssmr-p2-0.dssmr-p2.default.svc:7000]",
            "  - members: [127.0.0.1:7001]",
            1,
        ));
        assert!(message.contains("is also oracle.members[1]"), "{message}");
        let no_oracle = GOOD.replacen("oracle:\n", "", 1).replacen(
            "  members: [127.0.0.1:7000, 127.0.0.1:7001, 127.0.0.1:7002]\n",
            "",
            1,
        );
        assert_eq!(invalid(&no_oracle).0, "oracle");
        let no_partitions = "name: a\nmode: ssmr\napp: kv\npartitions: []\n";
        assert_eq!(invalid(no_partitions).0, "partitions");
    }

    #[test]
    fn partitions_may_skip_numbers_a_removed_partition_had() {
        // p2 and p3 removed, p4 added at run time, p5 after it.
        let yaml = GOOD.replacen(
            "  - members: [dssmr-p2-0.dssmr-p2.default.svc:7000]\n",
            "  - partition: 4\n    members: [127.0.0.1:7040]\n  - members: [127.0.0.1:7050]\n",
            1,
        );
        let c = ClusterConfig::from_yaml(&yaml).expect("valid");
        assert_eq!(c.partition_numbers(), [GroupId(1), GroupId(4), GroupId(5)]);
        assert_eq!(
            c.topology().groups.keys().copied().collect::<Vec<_>>(),
            [ORACLE, GroupId(1), GroupId(4), GroupId(5)]
        );
        assert_eq!(c.partition(GroupId(4)).map(|(i, _)| i), Some(1));
        assert!(c.partition(GroupId(2)).is_none());
        // Written back with the number only where it does not follow.
        let back = ClusterConfig::from_topology("demo", Mode::Dssmr, AppKind::Kv, &c.topology());
        assert_eq!(
            back.partitions
                .iter()
                .map(|p| p.partition)
                .collect::<Vec<_>>(),
            [None, Some(4), None]
        );
        assert_eq!(back.topology().groups, c.topology().groups);
        // Out of order, repeated, zero, or on the oracle: refused, naming the field.
        for (partition, at) in [(1, 1), (0, 1)] {
            let bad = GOOD.replacen(
                "  - members: [dssmr-p2-0",
                &format!("  - partition: {partition}\n    members: [dssmr-p2-0"),
                1,
            );
            let (field, message) = invalid(&bad);
            assert_eq!(field, format!("partitions[{at}].partition"), "{message}");
            assert!(message.contains("does not follow partition 1"), "{message}");
        }
        let bad = GOOD.replacen("oracle:\n", "oracle:\n  partition: 3\n", 1);
        assert_eq!(invalid(&bad).0, "oracle.partition");
    }

    #[test]
    fn structural_errors_name_the_key() {
        let e = parse_error(&GOOD.replacen("retryThreshold", "retryTreshold", 1));
        assert!(e.contains("retryTreshold"), "{e}");
        let e = parse_error(&GOOD.replacen("mode: dssmr", "mode: fast", 1));
        assert!(e.contains("mode") && e.contains("fast"), "{e}");
        let e = parse_error(&GOOD.replacen("app: chirper\n", "", 1));
        assert!(e.contains("app"), "{e}");
        let e = parse_error(&GOOD.replacen("  - members: [d", "  - memberz: [d", 1));
        assert!(e.contains("memberz"), "{e}");
        let e = parse_error(&GOOD.replacen("retryThreshold: 3", "retryThreshold: -1", 1));
        assert!(e.contains("retryThreshold"), "{e}");
        let e = parse_error("- just\n- a list\n");
        assert!(e.starts_with("cluster config <text>:"), "{e}");
    }

    #[test]
    fn load_and_save_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cluster.yaml");
        let c = ClusterConfig::from_yaml(GOOD).unwrap();
        c.save(&path).expect("save");
        assert_eq!(ClusterConfig::load(&path).expect("load"), c);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        let e = ClusterConfig::load(dir.path().join("absent.yaml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        std::fs::write(
            &path,
            GOOD.replacen("retryThreshold: 3", "retryThreshold: 0", 1),
        )
        .unwrap();
        let e = ClusterConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "cluster config {}: retryThreshold: ",
                path.display()
            )),
            "{e}"
        );
    }
}
