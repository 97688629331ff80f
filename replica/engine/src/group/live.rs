//! The topology as a running replica or client proxy knows it: the groups, their members'
//! addresses and a client of each, kept up to date from the oracle at run time.
//!
//! A process starts from its config's topology. In a DS-SMR cluster the oracle's replicated
//! state holds the partitions that exist and the members of those added at run time
//! ([`crate::oracle::PublishedTopology`]); [`LiveTopology::follow`] long-polls an oracle
//! leader's `Topology` RPC (answered after a read index: never a lagging follower's view)
//! and [`LiveTopology::learn`]s every newer version, so a partition
//! added or removed by the operator is used by replicas and clients without a restart. A
//! caller that meets a group it does not know asks at once ([`LiveTopology::refresh`]).
//!
//! What a replica's log applies never depends on this view: only leader-side checks of
//! requests (is a destination part of the cluster?) and where a leader sends its traffic do.
//! The own group and the oracle are never dropped from the view. A partition the oracle
//! removed is *retired*: no new submission may name it, but messages already in flight that
//! do (accepted by a group that had not heard of the removal yet) are still ordered with it,
//! so no group is left waiting for a timestamp it refuses to take.

use crate::group::client::{Answer, ClientError, GroupClient};
use crate::group::faults::Faults;
use crate::ids::{GroupId, ORACLE};
use crate::proto;
use crate::route::Sender;
use crate::topology::Topology;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

/// How long one `Topology` call waits at the oracle for a newer version (below the group
/// client's attempt timeout, so a long-poll is never taken for a dead replica).
pub(crate) const LONG_POLL: Duration = Duration::from_millis(1500);

/// Pause after a failed long-poll (the oracle is electing, or unreachable).
const RETRY: Duration = Duration::from_millis(500);

struct View {
    topology: Topology,
    /// The oracle's version this view reflects (0: the config's only).
    version: u64,
    /// Partitions that take no new variables (being drained).
    draining: BTreeSet<GroupId>,
    /// Partitions removed from the topology, with their members (see the module doc).
    retired: BTreeMap<GroupId, Vec<String>>,
    /// Partitions joining (started, not added yet), with their members: messages may name
    /// them (the command that adds them), new submissions may not.
    joining: BTreeMap<GroupId, Vec<String>>,
    clients: BTreeMap<GroupId, Arc<GroupClient>>,
}

/// The live topology of one process (replica or client proxies).
pub struct LiveTopology {
    from: Sender,
    /// The caller's own group, never dropped (a replica's).
    own: Option<GroupId>,
    faults: Option<(Arc<Faults>, String)>,
    view: RwLock<View>,
}

impl LiveTopology {
    /// The view of `topology` from `from`; `own` is a replica's own group.
    pub fn new(
        topology: &Topology,
        from: Sender,
        own: Option<GroupId>,
    ) -> Result<Arc<Self>, ClientError> {
        Self::build(topology, from, own, None)
    }

    /// As [`LiveTopology::new`], with calls subject to the test fault table as sent from
    /// `self_addr`.
    pub(crate) fn with_faults(
        topology: &Topology,
        from: Sender,
        own: GroupId,
        faults: Arc<Faults>,
        self_addr: String,
    ) -> Result<Arc<Self>, ClientError> {
        Self::build(topology, from, Some(own), Some((faults, self_addr)))
    }

    /// A client's view (as [`LiveTopology::new`] with [`Sender::Client`]) whose calls are
    /// subject to the test fault table as sent from `self_addr`.
    pub(crate) fn client_with_faults(
        topology: &Topology,
        faults: Arc<Faults>,
        self_addr: String,
    ) -> Result<Arc<Self>, ClientError> {
        Self::build(topology, Sender::Client, None, Some((faults, self_addr)))
    }

    fn build(
        topology: &Topology,
        from: Sender,
        own: Option<GroupId>,
        faults: Option<(Arc<Faults>, String)>,
    ) -> Result<Arc<Self>, ClientError> {
        let live = LiveTopology {
            from,
            own,
            faults,
            view: RwLock::new(View {
                topology: Topology {
                    cluster: topology.cluster.clone(),
                    ..Topology::default()
                },
                version: 0,
                draining: BTreeSet::new(),
                retired: BTreeMap::new(),
                joining: BTreeMap::new(),
                clients: BTreeMap::new(),
            }),
        };
        {
            let mut v = live.write();
            for (g, addrs) in &topology.groups {
                live.put(&mut v, *g, addrs.clone())?;
            }
        }
        Ok(Arc::new(live))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets group `g`'s members (a new client when they changed).
    fn put(&self, v: &mut View, g: GroupId, addrs: Vec<String>) -> Result<(), ClientError> {
        if v.topology.groups.get(&g) == Some(&addrs) && v.clients.contains_key(&g) {
            return Ok(());
        }
        let mut client = GroupClient::new(&v.topology.cluster, g, &addrs, self.from)?;
        if let Some((faults, me)) = &self.faults {
            client = client.with_faults(faults.clone(), me.clone());
        }
        v.clients.insert(g, Arc::new(client));
        v.topology.groups.insert(g, addrs);
        Ok(())
    }

    /// The cluster's name.
    pub fn cluster(&self) -> String {
        self.read().topology.cluster.clone()
    }

    /// A copy of the current topology.
    pub fn topology(&self) -> Topology {
        self.read().topology.clone()
    }

    /// The oracle's version this view reflects (0: the config's only).
    pub fn version(&self) -> u64 {
        self.read().version
    }

    /// True when `g` is a group of the cluster, as far as this view knows.
    pub fn contains(&self, g: GroupId) -> bool {
        self.read().topology.contains(g)
    }

    /// True when `g` is a group of the cluster, a joining or a retired one: messages may name
    /// it.
    pub fn known(&self, g: GroupId) -> bool {
        let v = self.read();
        v.topology.contains(g) || v.retired.contains_key(&g) || v.joining.contains_key(&g)
    }

    /// The member addresses of group `g`: a group of the cluster, a joining or a retired one.
    pub fn members(&self, g: GroupId) -> Option<Vec<String>> {
        let v = self.read();
        v.topology
            .groups
            .get(&g)
            .or_else(|| v.joining.get(&g))
            .or_else(|| v.retired.get(&g))
            .cloned()
    }

    /// The client of group `g`.
    pub fn client(&self, g: GroupId) -> Option<Arc<GroupClient>> {
        self.read().clients.get(&g).cloned()
    }

    /// Every group of the cluster, the oracle included, sorted.
    pub fn groups(&self) -> Vec<GroupId> {
        self.read().topology.groups.keys().copied().collect()
    }

    /// Every partition (not the oracle), sorted.
    pub fn partitions(&self) -> Vec<GroupId> {
        let v = self.read();
        v.topology
            .groups
            .keys()
            .copied()
            .filter(|g| *g != ORACLE)
            .collect()
    }

    /// The partitions variables may be moved to or created in: all but those being drained.
    pub fn accepting(&self) -> Vec<GroupId> {
        let v = self.read();
        v.topology
            .groups
            .keys()
            .copied()
            .filter(|g| *g != ORACLE && !v.draining.contains(g))
            .collect()
    }

    /// Takes in the oracle's topology `reply` if it is newer than this view: partitions it
    /// lists are added (with the members it gives, or those already known), partitions it
    /// does not list are dropped (never the own group or the oracle). True when it was newer.
    pub fn learn(&self, reply: &proto::TopologyReply) -> bool {
        let mut v = self.write();
        if reply.version <= v.version {
            return false;
        }
        let mut listed = BTreeSet::new();
        let mut draining = BTreeSet::new();
        let mut joining = BTreeMap::new();
        for p in &reply.partitions {
            let g = GroupId(p.group);
            if g == ORACLE {
                continue;
            }
            if p.joining {
                if Some(g) != self.own && !v.topology.contains(g) {
                    joining.insert(g, p.members.clone());
                }
                continue;
            }
            let members = if p.members.is_empty() {
                match v.topology.groups.get(&g) {
                    Some(m) => m.clone(),
                    // Neither the oracle nor our config knows its members: not reachable.
                    None => continue,
                }
            } else {
                p.members.clone()
            };
            if let Err(e) = self.put(&mut v, g, members) {
                tracing::warn!(group = %g, error = %e, "topology: bad member address");
                continue;
            }
            listed.insert(g);
            v.retired.remove(&g);
            if !p.accepting {
                draining.insert(g);
            }
        }
        let gone: Vec<GroupId> = v
            .topology
            .groups
            .keys()
            .copied()
            .filter(|g| *g != ORACLE && Some(*g) != self.own && !listed.contains(g))
            .collect();
        for g in &gone {
            // Its client stays: in-flight messages naming it are still ordered with it.
            if let Some(members) = v.topology.groups.remove(g) {
                v.retired.insert(*g, members);
            }
        }
        for (g, members) in &joining {
            if v.joining.get(g) != Some(members) {
                let from = self.from;
                let client = GroupClient::new(&v.topology.cluster, *g, members, from);
                match client {
                    Ok(mut client) => {
                        if let Some((faults, me)) = &self.faults {
                            client = client.with_faults(faults.clone(), me.clone());
                        }
                        v.clients.insert(*g, Arc::new(client));
                    }
                    Err(e) => {
                        tracing::warn!(group = %g, error = %e, "topology: bad member address")
                    }
                }
            }
        }
        v.joining = joining;
        v.draining = draining;
        v.version = reply.version;
        tracing::debug!(
            version = reply.version,
            partitions = ?listed,
            dropped = ?gone,
            "topology learned"
        );
        true
    }

    /// Asks an oracle replica for the topology once, waiting up to `wait` for a version
    /// newer than this view's; true when a newer one was learned. Without an oracle (S-SMR)
    /// the topology is the config's and nothing is asked.
    pub async fn refresh(&self, wait: Duration) -> Result<bool, ClientError> {
        let Some(oracle) = self.client(ORACLE) else {
            return Ok(false);
        };
        let req = proto::TopologyRequest {
            known_version: self.version(),
            wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        let reply = oracle
            .call(
                Instant::now() + wait + Duration::from_secs(5),
                |mut rpc| async move {
                    let reply = rpc.topology(req).await?.into_inner();
                    Ok(match reply.not_leader {
                        Some(hint) => Answer::NotLeader(Some(hint)),
                        None => Answer::Done(reply),
                    })
                },
            )
            .await?;
        Ok(self.learn(&reply))
    }

    /// Follows the oracle's topology until this view is dropped (a task of its own; it holds
    /// the view weakly). Does nothing without an oracle.
    pub fn follow(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<LiveTopology> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(live) = weak.upgrade() else {
                    return;
                };
                if live.client(ORACLE).is_none() {
                    return;
                }
                let outcome = live.refresh(LONG_POLL).await;
                drop(live);
                if let Err(e) = outcome {
                    tracing::debug!(error = %e, "topology: oracle not reachable");
                    tokio::time::sleep(RETRY).await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        let mut t = Topology {
            cluster: "c".into(),
            ..Topology::default()
        };
        t.groups.insert(ORACLE, vec!["127.0.0.1:1".into()]);
        t.groups.insert(GroupId(1), vec!["127.0.0.1:2".into()]);
        t.groups.insert(GroupId(2), vec!["127.0.0.1:3".into()]);
        t
    }

    fn reply(version: u64, parts: &[(u32, &[&str], bool)]) -> proto::TopologyReply {
        proto::TopologyReply {
            version,
            not_leader: None,
            next_partition: 0,
            partitions: parts
                .iter()
                .map(|(g, m, accepting)| proto::GroupMembers {
                    group: *g,
                    members: m.iter().map(|s| s.to_string()).collect(),
                    accepting: *accepting,
                    joining: false,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn newer_versions_add_drop_and_drain_partitions() {
        let live = LiveTopology::new(&topology(), Sender::Client, Some(GroupId(2))).unwrap();
        assert_eq!(live.partitions(), [GroupId(1), GroupId(2)]);
        assert!(live.learn(&reply(
            2,
            &[(1, &[], true), (2, &[], false), (3, &["127.0.0.1:4"], true)]
        )));
        assert_eq!(live.partitions(), [GroupId(1), GroupId(2), GroupId(3)]);
        assert_eq!(live.accepting(), [GroupId(1), GroupId(3)]);
        assert!(live.client(GroupId(3)).is_some());
        // Older or equal versions change nothing.
        assert!(!live.learn(&reply(2, &[])));
        assert!(!live.learn(&reply(1, &[])));
        // p1 dropped; p2 is the own group and stays; a partition nobody knows the members of
        // is not taken in.
        assert!(live.learn(&reply(3, &[(3, &[], true), (4, &[], true)])));
        assert_eq!(live.partitions(), [GroupId(2), GroupId(3)]);
        assert!(live.contains(ORACLE));
        assert!(!live.contains(GroupId(1)), "p1 takes no new submission");
        assert!(
            live.known(GroupId(1)),
            "messages in flight may still name p1"
        );
        assert!(live.client(GroupId(1)).is_some());
        assert!(!live.known(GroupId(4)));
    }
}
