//! The shape of a test cluster: its replicas, their names (as the operator names pods) and the
//! cluster config every replica and client reads.

use dssmr_engine::client::Mode;
use dssmr_engine::config::{AppKind, ClusterConfig, GroupConfig};
use dssmr_engine::ids::group_label;
use dssmr_engine::ids::{GroupId, ORACLE};

/// One replica of one group of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaRef {
    /// The cluster's name.
    pub cluster: String,
    /// The group.
    pub group: GroupId,
    /// The ordinal in the group.
    pub ordinal: usize,
}

impl ReplicaRef {
    /// The pod name Kubernetes would give it: `<cluster>-oracle-<r>` or `<cluster>-p<N>-<r>`.
    pub fn pod_name(&self) -> String {
        format!(
            "{}-{}-{}",
            self.cluster,
            group_label(self.group),
            self.ordinal
        )
    }
}

impl std::fmt::Display for ReplicaRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pod_name())
    }
}

/// A DS-SMR cluster: an oracle and `partitions` partitions of `replicas` replicas each.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Cluster name.
    pub name: String,
    /// Its application.
    pub app: AppKind,
    /// Partitions.
    pub partitions: usize,
    /// Replicas per group.
    pub replicas: usize,
}

impl Layout {
    /// The two clusters of the fault tests: `kv` and `chirper`, each an oracle and 2
    /// partitions × 3 replicas.
    pub fn kv_and_chirper() -> [Layout; 2] {
        let cluster = |name: &str, app| Layout {
            name: name.into(),
            app,
            partitions: 2,
            replicas: 3,
        };
        [
            cluster("kv", AppKind::Kv),
            cluster("chirper", AppKind::Chirper),
        ]
    }

    /// Every group: the oracle, then the partitions.
    pub fn groups(&self) -> Vec<GroupId> {
        std::iter::once(ORACLE)
            .chain((1..=self.partitions as u32).map(GroupId))
            .collect()
    }

    /// Every replica, group by group.
    pub fn replicas(&self) -> Vec<ReplicaRef> {
        self.groups()
            .into_iter()
            .flat_map(|g| self.group(g))
            .collect()
    }

    /// The replicas of group `g`.
    pub fn group(&self, g: GroupId) -> Vec<ReplicaRef> {
        (0..self.replicas)
            .map(|ordinal| ReplicaRef {
                cluster: self.name.clone(),
                group: g,
                ordinal,
            })
            .collect()
    }

    /// The cluster config, each replica reachable at `address(replica)`.
    pub fn config(&self, address: impl Fn(&ReplicaRef) -> String) -> ClusterConfig {
        let group = |g: GroupId| GroupConfig {
            partition: None,
            members: self.group(g).iter().map(&address).collect(),
        };
        let mut config = ClusterConfig {
            name: self.name.clone(),
            mode: Mode::Dssmr,
            app: self.app,
            chirper: None,
            retry_threshold: 5,
            destination: dssmr_engine::client::DestinationPolicy::Random,
            oracle: Some(group(ORACLE)),
            partitions: (1..=self.partitions as u32)
                .map(|p| group(GroupId(p)))
                .collect(),
            initial_partitions: None,
        };
        if self.app == AppKind::Chirper {
            config.chirper = Some(Default::default());
        }
        config
    }
}
