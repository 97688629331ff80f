//! The group clients a process's proxies share, over a topology followed from the oracle.

use crate::group::client::{ClientError, GroupClient};
use crate::group::faults::Faults;
use crate::group::live::LiveTopology;
use crate::ids::{GroupId, ORACLE};
use crate::route::Sender;
use crate::topology::Topology;
use std::sync::Arc;

/// Group clients of a cluster, shared by the proxies of a process: the config's topology,
/// kept up to date from the oracle while it lives (partitions added or removed at run time
/// are used without a restart; see [`LiveTopology`]).
pub struct Connections {
    live: Arc<LiveTopology>,
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Connections {
    fn drop(&mut self) {
        if let Some(f) = self.follower.take() {
            f.abort();
        }
    }
}

impl Connections {
    /// Clients of every group of `topology` (the oracle is group [`ORACLE`], if present).
    /// Inside a tokio runtime, a DS-SMR cluster's topology is then followed from the oracle.
    pub fn new(topology: &Topology) -> Result<Self, ClientError> {
        let live = LiveTopology::new(topology, Sender::Client, None)?;
        let follower = (topology.contains(ORACLE) && tokio::runtime::Handle::try_current().is_ok())
            .then(|| live.follow());
        Ok(Connections { live, follower })
    }

    /// As [`Connections::new`], with every call subject to the test fault table `faults` as
    /// sent from `self_addr` (a client that a test cuts off from some replicas).
    pub fn with_faults(
        topology: &Topology,
        faults: Arc<Faults>,
        self_addr: &str,
    ) -> Result<Self, ClientError> {
        let live = LiveTopology::client_with_faults(topology, faults, self_addr.to_string())?;
        let follower = (topology.contains(ORACLE) && tokio::runtime::Handle::try_current().is_ok())
            .then(|| live.follow());
        Ok(Connections { live, follower })
    }

    /// The partitions, sorted.
    pub fn partitions(&self) -> Vec<GroupId> {
        self.live.partitions()
    }

    /// The partitions variables may be moved to (all but those being drained), sorted.
    pub fn accepting(&self) -> Vec<GroupId> {
        self.live.accepting()
    }

    /// The topology as the proxies know it now.
    pub fn live(&self) -> &Arc<LiveTopology> {
        &self.live
    }

    /// The client of group `g`; a group not known yet is asked of the oracle first (it may
    /// have been added since). `None`: the cluster has no group `g`.
    pub(crate) async fn client(&self, g: GroupId) -> Option<Arc<GroupClient>> {
        if let Some(c) = self.live.client(g) {
            return Some(c);
        }
        let _ = self.live.refresh(std::time::Duration::ZERO).await;
        self.live.client(g)
    }
}
